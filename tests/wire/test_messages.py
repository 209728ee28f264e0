"""Event decoding: the fast path central takes for well-formed maps agrees with the fully checked one."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.wire.strategies import event_maps, exact
from wire import DecodeError, Event
from wire.messages import _event_fast


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_maps())
def test_fast_and_checked_event_decoding_agree(d: dict[Any, Any]) -> None:
    try:
        checked: Event | None = Event._from_map_checked(d)  # noqa: SLF001  # the reference the fast path must match
    except DecodeError:
        checked = None
    fast = _event_fast(d)
    if fast is not None:
        # What the fast path accepts, the checked one accepts too, as the same event.
        assert checked is not None, f"the fast path accepted a map the checked one refuses: {d!r}"
        assert exact(fast) == exact(checked)
    # And from_map, what central's ingest calls, gives the same event or the same refusal.
    try:
        public: Event | None = Event.from_map(d)
    except DecodeError:
        public = None
    assert (public is None) == (checked is None), d
    if public is not None and checked is not None:
        assert exact(public) == exact(checked)


def test_the_fast_path_takes_well_formed_events() -> None:
    """Else the agreement above would hold by the fast path never answering."""
    for kind, extra in [("alarm", {}), ("scan", {"tag": "67003B51C6"}), ("fault", {"code": "c", "detail": ""}),
                        ("output", {"output": "siren", "on": True}), ("tamper", {"state": "tamper-cut"})]:
        d = {"eseq": 1, "boot_id": "b", "kind": kind, "source": "s", "ts": -5, "mono_ms": 0, "clock_synced": False,
             "replayed": True, **extra}
        assert _event_fast(d) is not None, kind


@given(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_a_float_json_cannot_write_never_travels_with_an_event_and_the_event_is_kept(bad: float) -> None:
    """Central writes every event's keys as JSON (store, API, pages, bus): NaN or infinity there made every
    answer showing the event fail. The key is ignored like any other value not the protocol's; an alarm is kept."""
    d = {"eseq": 1, "boot_id": "b", "kind": "alarm", "source": "z", "ts": 0, "mono_ms": 0, "clock_synced": True,
         "replayed": False, "state": bad, "fine": 1.5}
    for decoded in (Event.from_map(d), Event._from_map_checked(d)):
        assert dict(decoded.fields) == {"fine": 1.5}


@given(st.sampled_from(["uptime_s", "cpu_temp_c"]), st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_telemetry_of_numbers_json_cannot_write_is_refused(key: str, bad: Any) -> None:
    """/api/agents and the agents page show them; JSON has no NaN nor infinity."""
    from wire.codec import pack
    from wire.messages import Telemetry

    body = {"uptime_s": 1.0, "outbox_depth": 0, "reconnects": 0, "clock_synced": True, "ts": 0, "mono_ms": 0,
            "cpu_temp_c": 40.0, key: bad}
    try:
        Telemetry.from_payload(pack(body))
    except DecodeError as exc:
        assert key in str(exc)
    else:
        raise AssertionError(f"tele with {key} = {bad} was taken")


@given(st.sampled_from(["inventory", "versions"]), st.integers(17, 1000))
def test_a_birth_nested_deeper_than_an_agent_config_is_refused(where: str, depth: int) -> None:
    """msgpack nests ~1000 deep in a few KB; central stores a birth as JSON, which that depth makes fail."""
    import msgpack

    from wire.messages import Birth

    deep = b"\x91" * depth + msgpack.packb("x")
    value = (b"\x81" + msgpack.packb("zones") + b"\x91\x82" + msgpack.packb("name") + msgpack.packb("z")
             + msgpack.packb("deep") + deep) if where == "inventory" else b"\x81" + msgpack.packb("v") + deep
    body = b"".join(msgpack.packb(x) for x in ("bdseq", 1, "boot_id", "b", "fw", "f"))
    if where == "versions":
        body += msgpack.packb("inventory") + b"\x80"
    payload = (b"\x84" if where == "inventory" else b"\x85") + body + msgpack.packb(where) + value
    try:
        Birth.from_payload(payload)
    except DecodeError as exc:
        assert where in str(exc)
    else:
        raise AssertionError(f"a birth with {where} nested {depth} deep was taken")
