"""The patrol plan: model, parsing and validation, and the versioned registry."""

from central.plan.model import AgentEntry, Checkpoint, Member, Order, Plan, Route, Team, Tier, Unit, Window
from central.plan.parse import PlanError, load_plan_file, parse_plan, parse_plan_bytes, plan_to_data
from central.plan.registry import PlanHistory, PlanRegistry, PlanVersion, RegistryError

__all__ = [
    "AgentEntry", "Checkpoint", "Member", "Order", "Plan", "PlanError", "PlanHistory", "PlanRegistry",
    "PlanVersion", "RegistryError", "Route", "Team", "Tier", "Unit", "Window",
    "load_plan_file", "parse_plan", "parse_plan_bytes", "plan_to_data",
]
