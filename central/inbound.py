"""Decoding what agents publish, on paho's thread, before anything is stored.

Each MQTT message becomes an :class:`Inbound` (a typed wire message and who
sent it) or a :class:`Rejected` naming the counter it goes to: garbage,
wrong types, oversized, unknown kind, bad topic. Nothing here raises on
input from the network, and nothing here does I/O but logging.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, NamedTuple

from gridpatrol.base.logsafe import escaped
from wire import topics
from wire.codec import MAX_PAYLOAD_BYTES, unpack
from wire.errors import DecodeError
from wire.messages import AgentStatus, Birth, CommandResponse, Event, EventKind, StateSnapshot, Telemetry
from wire.topics import Channel

STATUS_MAX_BYTES = 1024  # wire's limit for the JSON status payloads
# Topics already parsed: a district has a few hundred agents with six topics
# each. Only valid topics are kept, and the cache is emptied when it reaches
# this size, so random topics from a hostile client cannot grow it.
TOPIC_CACHE_MAX = 10_000
LOG_EVERY_S = 10.0  # one log line per kind of bad message this often, the rest counted


class Counter(StrEnum):
    """Names in central's ``counters`` table."""

    EVENTS_STORED = "events_stored"
    EVENTS_DUPLICATE = "events_duplicate"
    EVENTS_SUSPICIOUS = "events_suspicious"  # a stored eseq sent again with different content
    EVENTS_UNPLANNED = "events_unplanned"
    EVENTS_LOST = "events_lost"  # eseqs the agent answered a replay with as gone
    QUARANTINED = "quarantined"  # messages kept raw: could not be stored, or eseqs the agent never made
    REPLAY_REQUESTS = "replay_requests"
    REPLAYS_DEFERRED = "replays_deferred"  # a replay due but over the total budget: asked later
    REBIRTH_REQUESTS = "rebirth_requests"
    STALE_STATUS = "stale_status"
    LISTENER_ERRORS = "listener_errors"
    QUEUE_OVERFLOW = "queue_overflow"
    STORE_ERRORS = "store_errors"
    BAD_TOPIC = "bad_message.bad_topic"
    BAD_OVERSIZED = "bad_message.oversized"
    BAD_GARBAGE = "bad_message.garbage"
    BAD_UNKNOWN_KIND = "bad_message.unknown_kind"
    BAD_WRONG_TYPES = "bad_message.wrong_types"


class Inbound(NamedTuple):
    """A NamedTuple, not a frozen dataclass: one is built per message on the hot path."""

    agent: str
    channel: Channel
    message: Any  # Event | Birth | AgentStatus | Telemetry | StateSnapshot | CommandResponse
    received_ts: int
    retained: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Counter
    topic: str
    detail: str


_MSGPACK_TYPES: dict[Channel, Callable[[bytes], Any]] = {
    Channel.BIRTH: Birth.from_payload,
    Channel.STATE: StateSnapshot.from_payload,
    Channel.TELE: Telemetry.from_payload,
    Channel.CMD_RESP: CommandResponse.from_payload,
}
_EVENT_KINDS = frozenset(str(k) for k in EventKind)


class Decoder:
    """Decodes messages for one MQTT client (one thread); keeps the topics it has parsed."""

    def __init__(self) -> None:
        self._topics: dict[str, topics.ParsedTopic] = {}

    def decode(self, topic: str, payload: bytes, *, received_ts: int,
               retained: bool = False) -> Inbound | Rejected | None:
        """One MQTT message into a typed message, a rejection with its reason, or None (ignore)."""
        parsed = self._topics.get(topic)
        if parsed is None:
            try:
                parsed = topics.parse(topic)
            except DecodeError as exc:
                return Rejected(Counter.BAD_TOPIC, topic, str(exc))
            if len(self._topics) >= TOPIC_CACHE_MAX:
                self._topics.clear()
            self._topics[topic] = parsed
        return _decode(topic, parsed, payload, received_ts, retained)


def _decode(topic: str, parsed: topics.ParsedTopic, payload: bytes, received_ts: int,
            retained: bool) -> Inbound | Rejected | None:
    if parsed.agent_id == topics.CENTRAL_ID:
        if parsed.channel is Channel.STATUS:
            return None  # our own retained status comes back through gridpatrol/v1/+/status
        return Rejected(Counter.BAD_TOPIC, topic, "only central publishes as 'central'")
    channel = parsed.channel
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejected(Counter.BAD_OVERSIZED, topic, f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        if channel is Channel.STATUS:
            if not payload:
                return None  # someone cleared the retained status: nothing to learn
            if len(payload) > STATUS_MAX_BYTES:
                return Rejected(Counter.BAD_OVERSIZED, topic, f"status of {len(payload)} bytes exceeds {STATUS_MAX_BYTES}")
            json.loads(payload)  # garbage and wrong types are told apart for the counters
            message: Any = _wrong_types(AgentStatus.from_payload, payload)
        elif channel is Channel.EVT:
            message = _event(unpack(payload))
        elif channel in _MSGPACK_TYPES:
            unpack(payload)  # garbage and wrong types are told apart for the counters
            message = _wrong_types(_MSGPACK_TYPES[channel], payload)
        else:
            return Rejected(Counter.BAD_TOPIC, topic, f"agents do not publish on {str(channel)!r}")
    except _WrongTypes as exc:
        return Rejected(exc.reason, topic, str(exc))
    except (DecodeError, ValueError) as exc:  # ValueError: not JSON, not UTF-8
        return Rejected(Counter.BAD_GARBAGE, topic, str(exc) or type(exc).__name__)
    return Inbound(parsed.agent_id, channel, message, received_ts, retained)


class RejectLog:
    """Logs rejections with their topic: one line per reason per ``every_s``, the rest counted in the next line.

    A client flooding garbage must not flood the log too; the counters keep
    the full tally.
    """

    def __init__(self, logger: logging.Logger, *, every_s: float = LOG_EVERY_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._every_s = every_s
        self._monotonic = monotonic
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, item: Rejected) -> None:
        now = self._monotonic()
        last = self._last.get(item.reason)
        if last is not None and now - last < self._every_s:
            self._held[item.reason] = self._held.get(item.reason, 0) + 1
            return
        self._last[item.reason] = now
        held = self._held.pop(item.reason, 0)
        more = f" ({held} more like it dropped since the last line)" if held else ""
        self._logger.warning("dropped a message on %s: %s: %s%s", escaped(item.topic), item.reason, escaped(item.detail),
                             more)


class _WrongTypes(Exception):
    def __init__(self, reason: Counter, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _event(d: dict[str, Any]) -> Event:
    try:
        return Event.from_map(d)
    except DecodeError as exc:
        # An unknown kind is told apart only once the map is refused: a
        # string kind we do not know always is, so valid events skip the test.
        kind = d.get("kind")
        if isinstance(kind, str) and kind not in _EVENT_KINDS:
            raise _WrongTypes(Counter.BAD_UNKNOWN_KIND, f"event: unknown kind {kind[:64]!r}") from None
        raise _WrongTypes(Counter.BAD_WRONG_TYPES, str(exc)) from None


def _wrong_types(parse: Callable[[Any], Any], value: Any) -> Any:
    try:
        return parse(value)
    except DecodeError as exc:
        raise _WrongTypes(Counter.BAD_WRONG_TYPES, str(exc)) from None
