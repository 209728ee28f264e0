"""MQTT topics of protocol version 1.

Every topic lives under ``gridpatrol/v1/<agent_id>/``, so the agent id alone
names the sender and a broker ACL ``pattern write gridpatrol/v1/%u/#`` confines
each agent to its own subtree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from wire.errors import DecodeError

ROOT = "gridpatrol/v1"
CENTRAL_ID = "central"
AGENT_ID_MAX_LEN = 64
AGENT_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z")  # \Z: "$" would also match before a final newline


class Channel(StrEnum):
    """The last part(s) of a topic below ``gridpatrol/v1/<agent>/``."""

    STATUS = "status"
    BIRTH = "birth"
    EVT = "evt"
    STATE = "state"
    TELE = "tele"
    CMD = "cmd"
    CMD_RESP = "cmd/resp"
    ACK = "ack"
    COMPLETION = "completion"  # central only: completion/<unit>


def is_valid_agent_id(agent_id: str) -> bool:
    """True for ``[a-z0-9-]`` names of at most 64 characters, not ``central``."""
    return (
        isinstance(agent_id, str)
        and len(agent_id) <= AGENT_ID_MAX_LEN
        and AGENT_ID_RE.match(agent_id) is not None
        and agent_id != CENTRAL_ID
    )


def topic(agent_id: str, channel: Channel) -> str:
    return f"{ROOT}/{agent_id}/{channel}"


def status(agent_id: str) -> str:
    return topic(agent_id, Channel.STATUS)


def birth(agent_id: str) -> str:
    return topic(agent_id, Channel.BIRTH)


def evt(agent_id: str) -> str:
    return topic(agent_id, Channel.EVT)


def state(agent_id: str) -> str:
    return topic(agent_id, Channel.STATE)


def tele(agent_id: str) -> str:
    return topic(agent_id, Channel.TELE)


def cmd(agent_id: str) -> str:
    return topic(agent_id, Channel.CMD)


def cmd_resp(agent_id: str) -> str:
    return topic(agent_id, Channel.CMD_RESP)


def ack(agent_id: str) -> str:
    return topic(agent_id, Channel.ACK)


CENTRAL_STATUS = f"{ROOT}/{CENTRAL_ID}/status"


def completion(unit_id: str) -> str:
    """Retained JSON completion of one unit, published by central."""
    return f"{ROOT}/{CENTRAL_ID}/completion/{unit_id}"


# Subscriptions of central: everything agents send.
CENTRAL_SUBSCRIPTIONS = tuple(
    f"{ROOT}/+/{ch}"
    for ch in (Channel.STATUS, Channel.BIRTH, Channel.EVT, Channel.STATE, Channel.TELE, Channel.CMD_RESP)
)


@dataclass(slots=True, frozen=True)
class ParsedTopic:
    agent_id: str
    channel: Channel


def parse(name: str) -> ParsedTopic:
    """Split a topic into agent id and channel; raise DecodeError if it is not ours."""
    prefix = ROOT + "/"
    if not name.startswith(prefix):
        raise DecodeError(f"topic {name!r} is not under {ROOT}/")
    rest = name[len(prefix):]
    agent_id, sep, tail = rest.partition("/")
    if not sep or not tail:
        raise DecodeError(f"topic {name!r} has no channel after the agent id")
    try:
        channel = Channel(tail)
    except ValueError:
        raise DecodeError(f"topic {name!r} has unknown channel {tail!r}") from None
    if agent_id != CENTRAL_ID and not is_valid_agent_id(agent_id):
        raise DecodeError(f"topic {name!r} has invalid agent id {agent_id!r}")
    return ParsedTopic(agent_id, channel)
