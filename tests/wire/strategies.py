"""Hypothesis strategies for wire messages, shared by the wire tests."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from hypothesis import strategies as st

from wire import Event, EventKind

INT64_MAX = 2**63 - 1


class _Level(IntEnum):  # an int that is not exactly an int, as a Mapping other than msgpack's may hold
    HIGH = 5


def _names(max_len: int = 64) -> st.SearchStrategy[str]:
    return st.one_of(st.text(min_size=1, max_size=12), st.just("x" * max_len), st.text(min_size=max_len, max_size=max_len))


_BASE = {
    "eseq": st.one_of(st.integers(1, INT64_MAX), st.sampled_from([1, INT64_MAX])),
    "boot_id": _names(),
    "source": _names(),
    "ts": st.one_of(st.integers(-INT64_MAX, INT64_MAX), st.sampled_from([-INT64_MAX, 0, INT64_MAX])),
    "mono_ms": st.one_of(st.integers(0, INT64_MAX), st.sampled_from([0, INT64_MAX])),
    "clock_synced": st.booleans(),
    "replayed": st.booleans(),
}
_KIND_FIELDS: dict[EventKind, dict[str, st.SearchStrategy[Any]]] = {
    EventKind.SCAN: {"tag": st.one_of(st.from_regex(r"\A[0-9A-F]{2,32}\Z"), st.sampled_from(["AB", "F" * 32]))},
    EventKind.FAULT: {"code": _names(), "detail": st.one_of(st.text(max_size=40), st.just("d" * 512))},
    EventKind.OUTPUT: {"output": _names(), "on": st.booleans()},
}
# Per key, values just past what its check allows, and values of the wrong
# type that compare equal to right ones (True == 1, 1.0 == 1, _Level.HIGH == 5).
_NAMES_NEAR = ["", "n", "x" * 64, "x" * 65, "a\n", 5, b"name", None, EventKind.SCAN]
_BOOLS_NEAR = [True, False, 1, 0, 1.0, None, "true", _Level.HIGH]
_NEAR_MISSES: dict[str, list[Any]] = {
    "eseq": [0, -1, 1, INT64_MAX, INT64_MAX + 1, 2**64, True, 1.0, float("nan"), _Level.HIGH, "1", None],
    "ts": [-INT64_MAX, -INT64_MAX - 1, 0, INT64_MAX, INT64_MAX + 1, True, 0.0, _Level.HIGH, "0", None],
    "mono_ms": [0, -1, INT64_MAX, INT64_MAX + 1, False, 0.0, _Level.HIGH, None],
    "boot_id": _NAMES_NEAR, "source": _NAMES_NEAR, "code": _NAMES_NEAR, "output": _NAMES_NEAR,
    "kind": [*map(str, EventKind), "Scan", "unknown", "", EventKind.SCAN, EventKind.ALARM, b"scan", 1, None],
    "tag": ["A", "AB", "A" * 32, "A" * 33, "67003b51c6", "67003B51C6\n", "67003B51C6 ", "\n67003B51C6", "G1", "", b"AB", 5],
    "detail": ["", "d" * 512, "d" * 513, None, 5, b"d"],
    "clock_synced": _BOOLS_NEAR, "replayed": _BOOLS_NEAR, "on": _BOOLS_NEAR,
}
_EXTRA_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.text(max_size=70),
                          st.sampled_from(["x" * 64, "x" * 65, _Level.HIGH]), st.binary(max_size=4),
                          st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
_ALL_KEYS = sorted(_NEAR_MISSES)


@st.composite
def event_maps(draw: st.DrawFn) -> dict[Any, Any]:
    """A valid event map of any kind, mostly with a value or two replaced by a near miss, a key dropped or added."""
    kind = draw(st.sampled_from(list(EventKind)))
    d: dict[Any, Any] = {key: draw(value) for key, value in _BASE.items()}
    d["kind"] = str(kind)
    d.update({key: draw(value) for key, value in _KIND_FIELDS.get(kind, {}).items()})
    own = sorted(d)
    d.update(draw(st.dictionaries(st.one_of(st.sampled_from(_ALL_KEYS + ["state", "x"]), st.text(max_size=6)),
                                  _EXTRA_VALUES, max_size=2)))
    if draw(st.integers(0, 3)):  # near-valid, three times in four
        # The kind's own keys as often as all the others together: fewer events reach them.
        aimed = own + 3 * sorted(_KIND_FIELDS.get(kind, {}))
        for key in draw(st.lists(st.sampled_from(aimed), min_size=1, max_size=2)):
            d[key] = draw(st.sampled_from(_NEAR_MISSES[key]))
        if not draw(st.integers(0, 3)):
            d.pop(draw(st.sampled_from(own)), None)
    # The keys in the order an agent packs them, or in any order.
    if draw(st.booleans()):
        d = dict(draw(st.permutations(list(d.items()))))
    return d


def exact(event: Event) -> tuple[Any, ...]:
    """Everything about an event, types included: == alone takes True for 1 and misses NaN."""
    def typed(value: Any) -> tuple[str, str]:
        return type(value).__qualname__, repr(value)

    fields = [(key, *typed(value)) for key, value in event.fields.items()]
    return (*(typed(getattr(event, name)) for name in ("eseq", "boot_id", "kind", "source", "ts", "mono_ms",
                                                        "clock_synced", "replayed")),
            type(event.fields).__name__, fields)
