"""The MQTT wire protocol shared by agents and central: topics, messages, codec.

Pure Python; depends on msgpack only. Nothing here does I/O.
"""

from wire.codec import MAX_PAYLOAD_BYTES, pack, unpack
from wire.errors import DecodeError, EncodeError, WireError
from wire.messages import Ack, AgentState, AgentStatus, Birth, CentralStatus, Command, CommandName, CommandResponse, Event, EventKind, StateSnapshot, Telemetry

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Ack",
    "AgentState",
    "AgentStatus",
    "Birth",
    "CentralStatus",
    "Command",
    "CommandName",
    "CommandResponse",
    "DecodeError",
    "EncodeError",
    "Event",
    "EventKind",
    "StateSnapshot",
    "Telemetry",
    "WireError",
    "pack",
    "unpack",
]
