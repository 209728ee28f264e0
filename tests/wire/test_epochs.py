"""The second round's wire fields: ``epoch`` (events, births, acks, replay) and a replay answer's ``last``/``gone``."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.wire.strategies import event_maps, exact
from wire import DecodeError
from wire.messages import GONE_MAX_RANGES, Ack, Birth, Command, CommandName, CommandResponse, Event, EventKind, _event_fast

INT64_MAX = 2**63 - 1
_EPOCHS = st.one_of(st.from_regex(r"\A[A-Za-z0-9_-]{0,64}\Z"), st.sampled_from(["", "x" * 64, "0123456789abcdef"]))
_EPOCH_NEAR = ["", "a", "x" * 64, "x" * 65, "a b", "a\n", "ab\n", "é", "a.b", None, 5, True, b"e", ["e"]]


def _alarm(**extra: Any) -> dict[str, Any]:
    return {"eseq": 1, "boot_id": "b", "kind": "alarm", "source": "z", "ts": 0, "mono_ms": 0, "clock_synced": True,
            "replayed": False, **extra}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_maps(), st.one_of(st.none(), _EPOCHS, st.sampled_from(_EPOCH_NEAR)), st.booleans())
def test_fast_and_checked_event_decoding_agree_on_epochs(d: dict[Any, Any], epoch: Any, present: bool) -> None:
    """The property of test_messages with ``epoch`` absent (older agents), valid, or just wrong."""
    if present:
        d["epoch"] = epoch
    try:
        checked: Event | None = Event._from_map_checked(d)
    except DecodeError:
        checked = None
    fast = _event_fast(d)
    if fast is not None:
        assert checked is not None, f"the fast path accepted a map the checked one refuses: {d!r}"
        assert exact(fast) == exact(checked) and fast.epoch == checked.epoch
    try:
        public: Event | None = Event.from_map(d)
    except DecodeError:
        public = None
    assert (public is None) == (checked is None), d
    if public is not None and checked is not None:
        assert exact(public) == exact(checked) and public.epoch == checked.epoch
        assert "epoch" not in public.fields  # an envelope key, never a free one


@given(_EPOCHS)
def test_an_event_carries_its_epoch_both_ways_and_the_fast_path_takes_it(epoch: str) -> None:
    event = Event(7, "b", EventKind.PANIC, "office-panic", 1, 2, True, epoch=epoch)
    assert Event.from_payload(event.to_payload()) == event
    fast = _event_fast(msgpack.unpackb(event.to_payload()))
    assert fast is not None and fast.epoch == epoch


def test_an_event_without_epoch_is_of_the_epoch_of_older_agents() -> None:
    assert Event.from_map(_alarm()).epoch == ""
    assert _event_fast(_alarm()) is not None


@pytest.mark.parametrize("bad", ["x" * 65, "a b", "a\n", "é", None, 5, b"e"])
def test_a_bad_epoch_refuses_the_event_and_names_the_key(bad: Any) -> None:
    with pytest.raises(DecodeError, match="^event: 'epoch' "):
        Event.from_map(_alarm(epoch=bad))


def test_birth_ack_and_replay_carry_the_epoch_and_default_to_the_empty_one() -> None:
    birth = Birth(bdseq=1, boot_id="b", fw="f", inventory={"zones": ()}, epoch="e-1")
    assert Birth.from_payload(birth.to_payload()).epoch == "e-1"
    assert Birth.from_payload(msgpack.packb({"bdseq": 1, "boot_id": "b", "fw": "f", "inventory": {}})).epoch == ""
    assert Ack.from_payload(Ack(5, "e-1").to_payload()) == Ack(5, "e-1")
    assert Ack.from_payload(msgpack.packb({"eseq": 5})) == Ack(5, "")
    replay = Command(CommandName.REPLAY, "t", {"from": 3, "epoch": "e-1"})
    assert Command.from_payload(replay.to_payload()) == replay
    assert dict(Command.from_payload(msgpack.packb({"cmd": "replay", "txn": "t", "from": 3})).args) == {"from": 3}
    for payload, decoder, message in [
        (msgpack.packb({"eseq": 5, "epoch": "a/b"}), Ack.from_payload,
         "^ack: 'epoch' must be letters, digits, '_' or '-', not 'a/b'$"),
        (msgpack.packb({"eseq": 5, "epoch": 5}), Ack.from_payload, "^ack: 'epoch' must be a string, not int$"),
        (msgpack.packb({"cmd": "replay", "txn": "t", "from": 3, "epoch": "x" * 65}), Command.from_payload,
         "^replay command: 'epoch' is longer than 64 characters$"),
        (msgpack.packb({"bdseq": 1, "boot_id": "b", "fw": "f", "inventory": {}, "epoch": "a\n"}), Birth.from_payload,
         r"^birth: 'epoch' must be letters, digits, '_' or '-', not 'a\\n'$"),
    ]:
        with pytest.raises(DecodeError, match=message):
            decoder(payload)


_RANGES = st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), max_size=GONE_MAX_RANGES).map(
    lambda pairs: _apart(pairs))


def _apart(pairs: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Ascending, apart ranges from any pairs of (gap, length)."""
    ranges = []
    at = 0
    for gap, length in pairs:
        low = at + gap + 2 if ranges else at + gap + 1
        ranges.append((low, low + length))
        at = low + length
    return tuple(ranges)


@given(_RANGES, st.integers(0, 10))
def test_a_replay_answer_round_trips_last_and_gone(gone: tuple[tuple[int, int], ...], above: int) -> None:
    last = (gone[-1][1] if gone else 0) + above
    answer = CommandResponse("t", True, last=last, gone=gone)
    assert CommandResponse.from_payload(answer.to_payload()) == answer


def test_older_answers_without_last_or_gone_stay_valid() -> None:
    assert CommandResponse.from_payload(msgpack.packb({"txn": "t", "ok": True})) == CommandResponse("t", True)
    assert msgpack.unpackb(CommandResponse("t", False, "no").to_payload()) == {"txn": "t", "ok": False, "error": "no"}


@pytest.mark.parametrize(("body", "message"), [
    ({"last": -1}, "'last' = -1 is out of range"),
    ({"last": True}, "'last' must be an integer, not bool"),
    ({"last": 2**63}, "'last' = 9223372036854775808 is out of range"),
    ({"gone": [[1, 2]], "last": 1}, r"'gone' range \[1, 2\] is not within 1..1 with from <= to"),
    ({"gone": [[0, 2]]}, r"'gone' range \[0, 2\] is not within 1..9223372036854775807"),
    ({"gone": [[3, 2]]}, r"'gone' range \[3, 2\] is not within"),
    ({"gone": [[1, INT64_MAX + 1]]}, "'gone' range"),
    ({"gone": [[5, 6], [1, 2]]}, "'gone' ranges must be ascending and apart, not 6 then 1"),
    ({"gone": [[1, 2], [3, 4]]}, "'gone' ranges must be ascending and apart, not 2 then 3"),
    ({"gone": [[1, 2], [2, 4]]}, "'gone' ranges must be ascending and apart"),
    ({"gone": [[1, 2, 3]]}, r"'gone' items must be \[from, to\] pairs of integers, not \[1, 2, 3\]"),
    ({"gone": [[1, True]]}, r"'gone' items must be \[from, to\] pairs"),
    ({"gone": [[1.0, 2]]}, r"'gone' items must be \[from, to\] pairs"),
    ({"gone": [5]}, r"'gone' items must be \[from, to\] pairs"),
    ({"gone": {"1": 2}}, r"'gone' must be a list of \[from, to\] ranges, not dict"),
    ({"gone": [[2 * i + 1, 2 * i + 1] for i in range(GONE_MAX_RANGES + 1)]},
     f"'gone' has {GONE_MAX_RANGES + 1} ranges, more than {GONE_MAX_RANGES}"),
])
def test_a_replay_answer_with_bad_last_or_gone_is_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(DecodeError, match=f"^command response: {message}"):
        CommandResponse.from_payload(msgpack.packb({"txn": "t", "ok": True, **body}))


def test_the_largest_gone_list_fits_in_one_payload() -> None:
    gone = tuple((INT64_MAX - 2 * i - 1, INT64_MAX - 2 * i - 1) for i in reversed(range(GONE_MAX_RANGES)))
    answer = CommandResponse("t" * 64, True, last=INT64_MAX, gone=gone)
    assert CommandResponse.from_payload(answer.to_payload()) == answer


def test_a_huge_bad_range_is_named_briefly() -> None:
    with pytest.raises(DecodeError, match=r"^command response: 'gone' items must be \[from, to\] pairs of integers, "
                                          r"not \['x{46}\.\.\.$"):
        CommandResponse.from_payload(msgpack.packb({"txn": "t", "ok": True, "gone": [["x" * 4000] * 10]}))
