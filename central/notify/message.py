"""The words of a notification, in the target's language: pure functions.

What (the alarm's kind and the input), where (the plan's names: the agent and
the units from the district down), when (local time of the district) and a
link to the alarm's page when ``[web] public_url`` is set. Robots show the
title in the phone's notification and the body when opened, so the title
alone must say what and where. Every message, summary and test contains 告警
(zh-CN) or ``Alarm`` (en): a DingTalk robot secured by a keyword needs one.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence
from zoneinfo import ZoneInfo

from central.plan.model import Plan
from central.store.notifications import StepFact

SUMMARY_LINES = 10  # a summary names this many; the dashboard has the rest

_KINDS = {
    "zh-CN": {"panic": "紧急求助", "alarm": "周界告警", "tamper": "防拆告警", "agent-offline": "设备离线",
              "agent-flapping": "设备频繁掉线", "suspicious": "可疑消息"},
    "en": {"panic": "Panic", "alarm": "Intrusion", "tamper": "Tamper", "agent-offline": "Agent offline",
           "agent-flapping": "Agent flapping", "suspicious": "Suspicious message"},
}
_TIERS = {"zh-CN": {"district": "区", "street": "街道", "community": "社区", "grid": "网格"},
          "en": {"district": "district", "street": "street", "community": "community", "grid": "grid"}}
_WORDS = {
    "zh-CN": {"raise": "新告警", "escalate": "已升级至{unit}", "ack": "已由{who}确认", "ack+resolve": "已由{who}确认并解除",
              "resolve": "已解除", "what": "告警", "where": "地点", "device": "设备", "input": "输入", "when": "时间",
              "status": "进展", "link": "查看", "alarm": "告警 #{id}", "unknown": "（计划中没有的设备）",
              "summary": "【告警汇总】{n} 条通知", "summary-more": "……另有 {n} 条，请到值班台查看",
              "summary-head": "通知过于频繁，以下合并为一条：",
              "test-title": "【测试】Gridpatrol 告警通知", "test-body": "这是一条测试消息，发给 {label}。收到即说明通道正常。"},
    "en": {"raise": "raised", "escalate": "escalated to {unit}", "ack": "acknowledged by {who}",
           "ack+resolve": "acknowledged by {who} and resolved", "resolve": "resolved", "what": "Alarm", "where": "Where",
           "device": "Agent", "input": "Input", "when": "When", "status": "Status", "link": "Open", "alarm": "alarm #{id}",
           "unknown": "(an agent the plan does not know)",
           "summary": "[Alarm summary] {n} notifications", "summary-more": "... and {n} more: see the dashboard",
           "summary-head": "Too many notifications at once; these are combined into one:",
           "test-title": "[Test] Gridpatrol Alarm notification", "test-body": "A test message for {label}. If you read this, the channel works."},
}


def _lang(lang: str) -> str:
    return lang if lang in _WORDS else "zh-CN"


def _local(ms: int, tz: ZoneInfo) -> str:
    try:
        return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):
        return "–"


def _unit_name(plan: Plan | None, unit: str | None) -> str:
    if plan is None or unit is None or unit not in plan.unit_by_id:
        return unit or ""
    return plan.unit_by_id[unit].name or unit


def alarm_link(public_url: str | None, alarm_id: int) -> str | None:
    return None if not public_url else f"{public_url.rstrip('/')}/alarms/{alarm_id}"


def render(step: StepFact, *, lang: str, plan: Plan | None, tz: ZoneInfo, public_url: str | None) -> tuple[str, str]:
    """Title and body of the message for one routed step."""
    lang = _lang(lang)
    w = _WORDS[lang]
    kind = _KINDS[lang].get(step.kind, step.kind)
    agent_name = next((a.name for a in plan.agents if a.id == step.agent), "") if plan else ""
    place = agent_name or step.agent
    if step.action == "escalate":
        reached = plan.unit_by_id.get(step.unit) if plan is not None and step.unit is not None else None
        tier = reached.tier if reached is not None else None
        unit = _unit_name(plan, step.unit) + (f" ({_TIERS[lang][str(tier)]})" if tier else "")
        status = w["escalate"].format(unit=unit)
    elif step.action == "ack":
        status = w["ack+resolve" if step.with_resolve else "ack"].format(who=step.acked_by or "?")
    else:
        status = w.get(step.action, step.action)
    title = f"【{kind}】{place} · {status}" if lang == "zh-CN" else f"[{kind}] {place}: {status}"
    lineage = list(reversed(plan.lineage(step.alarm_unit))) if plan and step.alarm_unit else []
    where = " / ".join(_unit_name(plan, u) for u in lineage) or w["unknown"]
    lines = [
        f"{w['what']}: {kind} · {w['input']} {step.source} · {w['alarm'].format(id=step.alarm_id)}",
        f"{w['where']}: {where}",
        f"{w['device']}: {agent_name + ' ' if agent_name else ''}({step.agent})",
        f"{w['when']}: {_local(step.raised_ts, tz)} ({tz.key})",
        f"{w['status']}: {status} {_local(step.ts, tz)[11:]}",
    ]
    link = alarm_link(public_url, step.alarm_id)
    if link:
        lines.append(f"{w['link']}: {link}")
    return title, "\n".join(lines)


def summary(titles: Sequence[str], *, lang: str, public_url: str | None) -> tuple[str, str]:
    """One message in place of many: the first few titles, a count of the rest, the dashboard's address."""
    w = _WORDS[_lang(lang)]
    lines = [w["summary-head"], *(f"- {t}" for t in titles[:SUMMARY_LINES])]
    if len(titles) > SUMMARY_LINES:
        lines.append(w["summary-more"].format(n=len(titles) - SUMMARY_LINES))
    if public_url:
        lines.append(f"{w['link']}: {public_url.rstrip('/')}/")
    return w["summary"].format(n=len(titles)), "\n".join(lines)


def check_message(label: str, *, lang: str) -> tuple[str, str]:
    w = _WORDS[_lang(lang)]
    return w["test-title"], w["test-body"].format(label=label)
