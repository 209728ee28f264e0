"""The codec and message classes meet hostile payloads with a DecodeError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import MAX_PAYLOAD_BYTES, DecodeError, Event, EventKind, pack, topics, unpack
from wire.messages import Ack, AgentState, AgentStatus, Birth, CentralStatus, Command, CommandName, Telemetry


def _event(**over: object) -> Event:
    base = dict(eseq=7, boot_id="b-1", kind=EventKind.SCAN, source="gate-1", ts=1_700_000_000_000, mono_ms=1234,
                clock_synced=True, fields={"tag": "67003B51C6"})
    base.update(over)
    return Event(**base)  # type: ignore[arg-type]


def test_event_round_trip_keeps_kind_fields() -> None:
    e = _event()
    back = Event.from_payload(e.to_payload())
    assert back == e
    assert back.fields["tag"] == "67003B51C6"


def test_content_ignores_replayed() -> None:
    assert _event(replayed=True).content() == _event(replayed=False).content()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "payload is empty"),
        (msgpack.packb([1, 2, 3]), "payload must be a msgpack map, not list"),
        (msgpack.packb({"eseq": 1, "kind": "alarm"})[:-3], "payload is not valid msgpack: Unpack failed: incomplete input"),
        (b"\xc1", "payload is not valid msgpack: "),
        (b"\x80\x00", "payload has trailing bytes after the message"),
        (msgpack.packb({1: 2}), "payload is not valid msgpack: int is not allowed for map key when strict_map_key=True"),
    ],
)
def test_malformed_payloads_are_decode_errors(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        unpack(payload)
    assert str(info.value).startswith(message)


def test_oversized_payload_is_rejected_before_unpacking() -> None:
    with pytest.raises(DecodeError, match=f"payload of {MAX_PAYLOAD_BYTES + 1} bytes exceeds {MAX_PAYLOAD_BYTES} bytes"):
        unpack(b"\x80" + b"\x00" * MAX_PAYLOAD_BYTES)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "explode"}, "event: unknown kind 'explode'"),
        ({"eseq": 0}, "event: 'eseq' = 0 is out of range"),
        ({"eseq": "1"}, "event: 'eseq' must be an integer, not str"),
        ({"eseq": True}, "event: 'eseq' must be an integer, not bool"),
        ({"clock_synced": 1}, "event: 'clock_synced' must be a boolean, not int"),
        ({"source": "x" * 65}, "event: 'source' is longer than 64 characters"),
        ({"tag": "67003b51c6"}, "scan event: 'tag' must be upper-case hex, not '67003b51c6'"),
    ],
)
def test_wrong_event_fields_name_the_key(change: dict[str, object], message: str) -> None:
    body = _event().to_map()
    body.update(change)
    with pytest.raises(DecodeError) as info:
        Event.from_payload(msgpack.packb(body))
    assert str(info.value) == message


def test_missing_key_is_named() -> None:
    body = _event().to_map()
    del body["boot_id"]
    with pytest.raises(DecodeError, match="^event: missing key 'boot_id'$"):
        Event.from_payload(msgpack.packb(body))


def test_unknown_extra_keys_are_ignored_and_small_ones_kept() -> None:
    body = _event(kind=EventKind.TAMPER, fields={}).to_map()
    body.update(state="tamper-cut", future={"nested": [1, 2]})
    e = Event.from_payload(msgpack.packb(body))
    assert dict(e.fields) == {"state": "tamper-cut"}


def test_fault_and_output_fields_are_required() -> None:
    fault = _event(kind=EventKind.FAULT, fields={"code": "port-lost", "detail": ""})
    assert Event.from_payload(fault.to_payload()).fields["code"] == "port-lost"
    body = fault.to_map()
    del body["code"]
    with pytest.raises(DecodeError, match="^fault event: missing key 'code'$"):
        Event.from_payload(msgpack.packb(body))
    out = _event(kind=EventKind.OUTPUT, fields={"output": "siren", "on": "yes"}).to_map()
    with pytest.raises(DecodeError, match="^output event: 'on' must be a boolean, not str$"):
        Event.from_payload(msgpack.packb(out))


def test_birth_round_trip_and_inventory_checks() -> None:
    b = Birth(bdseq=3, boot_id="b", fw="gridpatrol 0.1.0", inventory={"zones": ({"name": "north-fence"},), "buttons": (), "readers": (), "outputs": ()})
    back = Birth.from_payload(b.to_payload())
    assert back.bdseq == 3 and back.names("zones") == ("north-fence",)
    with pytest.raises(DecodeError, match="^birth: inventory 'zones' items must be maps$"):
        Birth.from_payload(msgpack.packb({"bdseq": 1, "boot_id": "b", "fw": "x", "inventory": {"zones": [1]}}))


def test_commands_are_checked_per_name() -> None:
    c = Command(CommandName.OUTPUT, "t1", {"output": "siren", "on": True, "seconds": 5})
    assert Command.from_payload(c.to_payload()) == c
    with pytest.raises(DecodeError, match="^command: unknown cmd 'format-disk'$"):
        Command.from_payload(msgpack.packb({"cmd": "format-disk", "txn": "1"}))
    with pytest.raises(DecodeError, match="^replay command: missing key 'from'$"):
        Command.from_payload(msgpack.packb({"cmd": "replay", "txn": "1"}))


def test_status_json_payloads() -> None:
    s = AgentStatus(AgentState.OFFLINE, 4, 99)
    assert AgentStatus.from_payload(s.to_payload()) == s
    assert CentralStatus.from_payload(b'{"online": true, "ts": 5}') == CentralStatus(True, 5)
    with pytest.raises(DecodeError, match="^status: unknown state 'sleeping'$"):
        AgentStatus.from_payload(b'{"state": "sleeping", "bdseq": 1, "ts": 1}')
    with pytest.raises(DecodeError, match="^central status: payload is not JSON"):
        CentralStatus.from_payload(b"\xff\xfe")


@pytest.mark.parametrize("parse", [AgentStatus.from_payload, CentralStatus.from_payload])
def test_status_json_nested_past_the_recursion_limit_is_a_decode_error(parse) -> None:  # type: ignore[no-untyped-def]
    """Found by bench/fuzz.py: 1 KB of '[' made json.loads raise RecursionError."""
    with pytest.raises(DecodeError, match=r"status: payload nests too deeply$"):
        parse(b"[" * 1024)


def test_a_final_newline_is_not_part_of_a_valid_agent_id_or_tag() -> None:
    """Found by bench/fuzz.py's checks: the patterns' "$" also matched before a final newline."""
    with pytest.raises(DecodeError, match=r"^topic 'gridpatrol/v1/school-9-gate-1\\n/evt' has invalid agent id"):
        topics.parse("gridpatrol/v1/school-9-gate-1\n/evt")
    assert not topics.is_valid_agent_id("school-9-gate-1\n")
    body = {**Event(1, "b", EventKind.SCAN, "gate-1", 1, 2, True, fields={"tag": "67003B51C6"}).to_map(), "tag": "67003B51C6\n"}
    with pytest.raises(DecodeError, match=r"^scan event: 'tag' must be upper-case hex, not '67003B51C6\\n'$"):
        Event.from_payload(msgpack.packb(body))


def test_ack_and_telemetry() -> None:
    assert Ack.from_payload(Ack(12).to_payload()) == Ack(12)
    t = Telemetry(uptime_s=1.5, outbox_depth=3, reconnects=1, clock_synced=False, ts=1, mono_ms=2, cpu_temp_c=48.2, counters={"bad_frames": 2})
    assert Telemetry.from_payload(t.to_payload()) == t


def test_topics_parse_and_reject() -> None:
    assert topics.parse("gridpatrol/v1/school-9-gate-1/cmd/resp") == topics.ParsedTopic("school-9-gate-1", topics.Channel.CMD_RESP)
    assert topics.evt("a-1") == "gridpatrol/v1/a-1/evt"
    for bad, msg in [
        ("gridpatrol/v2/a/evt", "is not under gridpatrol/v1/"),
        ("gridpatrol/v1/a", "has no channel"),
        ("gridpatrol/v1/A_B/evt", "invalid agent id 'A_B'"),
        ("gridpatrol/v1/a/format", "unknown channel 'format'"),
    ]:
        with pytest.raises(DecodeError, match=msg):
            topics.parse(bad)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    for decoder in (Event.from_payload, Birth.from_payload, Command.from_payload, Ack.from_payload, Telemetry.from_payload):
        try:
            decoder(data)
        except DecodeError:
            pass


_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.floats(), st.text(max_size=80), st.binary(max_size=40))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["eseq", "boot_id", "kind", "source", "ts", "mono_ms", "clock_synced", "replayed", "tag", "code", "detail", "output", "on", "x"]), _scalars))
def test_hostile_maps_give_decode_error_or_a_valid_event(body: dict[str, object]) -> None:
    try:
        e = Event.from_payload(pack(body))
    except DecodeError:
        return
    # Whatever was accepted survives a round trip unchanged.
    assert Event.from_payload(e.to_payload()) == e
