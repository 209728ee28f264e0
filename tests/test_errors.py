"""One exception root per package, each class also the builtin it resembles (docs/architecture.md)."""

from __future__ import annotations

import pytest

import agent.config
import central.config
from agent import AgentError
from agent.inputs.readers.errors import ReaderError, ReaderFrameError, WiegandError
from agent.outbox import OutboxError
from agent.simsocket import SimCommandError, SimSocketError
from central import CentralError
from central.cli import UsageError
from central.plan.parse import PlanError
from central.store import StoreError
from central.store.alarms import AlarmError
from central.web import UserError, WebError
from firmware_bridge import BridgeError, FrameError
from firmware_bridge.framing import CrcError
from firmware_bridge.link import LinkError
from gridpatrol.base.errors import ConfigError, GridpatrolError
from gridpatrol.pki import PkiError
from wire.errors import DecodeError, EncodeError, WireError


@pytest.mark.parametrize(("exc", "root", "builtin"), [
    (DecodeError, WireError, ValueError),
    (EncodeError, WireError, ValueError),
    (OutboxError, AgentError, OSError),
    (ReaderError, AgentError, Exception),
    (ReaderFrameError, ReaderError, ValueError),
    (WiegandError, ReaderError, ValueError),
    (SimSocketError, AgentError, OSError),
    (SimCommandError, AgentError, ValueError),
    (PlanError, CentralError, ValueError),
    (AlarmError, CentralError, ValueError),
    (UsageError, CentralError, ValueError),
    (StoreError, CentralError, Exception),
    (WebError, CentralError, Exception),
    (UserError, WebError, ValueError),
    (FrameError, BridgeError, ValueError),
    (CrcError, FrameError, ValueError),
    (LinkError, BridgeError, OSError),
    (ConfigError, GridpatrolError, ValueError),
    (PkiError, GridpatrolError, ValueError),
])
def test_each_error_has_its_packages_root_and_its_builtin(exc: type, root: type, builtin: type) -> None:
    assert issubclass(exc, root) and issubclass(exc, builtin)


def test_agent_and_central_share_one_config_error() -> None:
    assert agent.config.ConfigError is central.config.ConfigError is ConfigError
