"""Decoding what agents publish: every hostile message is a counted rejection, never a crash."""

from __future__ import annotations

import logging

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.inbound import TOPIC_CACHE_MAX, Counter, Decoder, Inbound, Rejected, RejectLog
from wire import topics
from wire.messages import AgentState, AgentStatus, Event, EventKind
from wire.topics import Channel

EVT = topics.evt("school-9-gate-1")


def decode(topic: str, payload: bytes, *, received_ts: int, retained: bool = False) -> Inbound | Rejected | None:
    return Decoder().decode(topic, payload, received_ts=received_ts, retained=retained)


def test_an_event_decodes() -> None:
    e = Event(1, "b", EventKind.SCAN, "gate-1", 5, 6, True, fields={"tag": "AB"})
    assert decode(EVT, e.to_payload(), received_ts=9, retained=False) == Inbound(
        "school-9-gate-1", Channel.EVT, e, 9, False)


def test_a_decoder_remembers_valid_topics_only_up_to_its_bound() -> None:
    d = Decoder()
    for n in range(TOPIC_CACHE_MAX + 5):
        d.decode(topics.evt(f"a-{n}"), b"\xc1", received_ts=0)
        d.decode(f"junk/{n}", b"", received_ts=0)
    assert len(d._topics) <= TOPIC_CACHE_MAX
    assert all(t.startswith("gridpatrol/v1/a-") for t in d._topics)


def test_central_own_status_is_ignored() -> None:
    assert decode(topics.CENTRAL_STATUS, b'{"online": true, "ts": 1}', received_ts=0) is None
    assert decode(topics.status("a"), b"", received_ts=0) is None  # a cleared retained status


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "detail"),
    [
        ("other/topic", b"\x80", Counter.BAD_TOPIC, "topic 'other/topic' is not under gridpatrol/v1/"),
        ("gridpatrol/v1/central/evt", b"\x80", Counter.BAD_TOPIC, "only central publishes as 'central'"),
        (topics.ack("a"), b"\x80", Counter.BAD_TOPIC, "agents do not publish on 'ack'"),
        (EVT, b"\x80" * 70_000, Counter.BAD_OVERSIZED, "payload of 70000 bytes exceeds 65536"),
        (EVT, b"\xc1", Counter.BAD_GARBAGE, "payload is not valid msgpack: "),
        (EVT, msgpack.packb({"kind": "explode"}), Counter.BAD_UNKNOWN_KIND, "event: unknown kind 'explode'"),
        (EVT, msgpack.packb({"kind": "scan"}), Counter.BAD_WRONG_TYPES, "scan event: missing key 'tag'"),
        (topics.birth("a"), msgpack.packb({"bdseq": "x"}), Counter.BAD_WRONG_TYPES, "birth: missing key 'inventory'"),
        (topics.status("a"), b"{", Counter.BAD_GARBAGE, "Expecting property name"),
        (topics.status("a"), b"[1]", Counter.BAD_WRONG_TYPES, "status: payload must be a JSON object"),
        (topics.status("a"), b" " * 2000, Counter.BAD_OVERSIZED, "status of 2000 bytes exceeds 1024"),
    ],
)
def test_rejections_name_their_reason(topic: str, payload: bytes, reason: Counter, detail: str) -> None:
    out = decode(topic, payload, received_ts=0)
    assert isinstance(out, Rejected)
    assert (out.reason, out.topic) == (reason, topic)
    assert out.detail.startswith(detail)


def test_a_status_decodes() -> None:
    out = decode(topics.status("a"), AgentStatus(AgentState.OFFLINE, 3, 7).to_payload(), received_ts=1, retained=True)
    assert out == Inbound("a", Channel.STATUS, AgentStatus(AgentState.OFFLINE, 3, 7), 1, True)


_channels = st.sampled_from([str(c) for c in Channel] + ["", "evt/x", "cmd"])
_agents = st.sampled_from(["a", "school-1", "central", "Bad", "", "x" * 70])


@settings(max_examples=400, deadline=None)
@given(_agents, _channels, st.binary(max_size=400))
def test_any_bytes_on_any_topic_never_raise(agent: str, channel: str, payload: bytes) -> None:
    out = decode(f"gridpatrol/v1/{agent}/{channel}", payload, received_ts=0)
    assert out is None or isinstance(out, (Inbound, Rejected))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["eseq", "boot_id", "kind", "source", "ts", "mono_ms", "clock_synced",
                                        "replayed", "tag", "code", "detail", "output", "on", "x"]),
                       st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=80) | st.floats()
                       | st.lists(st.integers(-9, 9), max_size=3)))
def test_any_map_on_evt_never_raises(body: dict[str, object]) -> None:
    out = decode(EVT, msgpack.packb(body), received_ts=0)
    assert isinstance(out, (Inbound, Rejected))


def test_reject_log_holds_back_repeats_and_says_how_many(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RejectLog(logging.getLogger("test.rejects"), every_s=10.0, monotonic=lambda: now[0])
    bad = Rejected(Counter.BAD_GARBAGE, EVT, "payload is empty")
    with caplog.at_level(logging.WARNING, logger="test.rejects"):
        log.log(bad)
        log.log(bad)
        log.log(bad)
        log.log(Rejected(Counter.BAD_TOPIC, "x/y", "not ours"))
        now[0] = 10.0
        log.log(bad)
    assert [r.getMessage() for r in caplog.records] == [
        f"dropped a message on {EVT}: bad_message.garbage: payload is empty",
        "dropped a message on x/y: bad_message.bad_topic: not ours",
        f"dropped a message on {EVT}: bad_message.garbage: payload is empty (2 more like it dropped since the last line)",
    ]


def test_a_rejection_logs_one_line_whatever_the_sender_put_in_the_topic(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    log = RejectLog(logging.getLogger("test.reject"), monotonic=lambda: 0.0)
    with caplog.at_level(logging.WARNING, logger="test.reject"):
        log.log(Rejected(Counter.BAD_TOPIC, "gridpatrol/v1/x\nFAKE: central stopped", "a\r\nb" + "z" * 5000))
    (record,) = caplog.records
    text = record.getMessage()
    assert "\n" not in text and "\r" not in text
    assert "\\nFAKE" in text and len(text) < 1000
