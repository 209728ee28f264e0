"""Logging what a sender controls: escaped, clipped, and a few lines per kind a period."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridpatrol.base.logsafe import LogLimiter, escaped, shown


def test_shown_and_escaped_leave_no_raw_control_character_and_clip() -> None:
    assert shown("a\nb") == "'a\\nb'"
    assert shown("x" * 200, limit=10) == "'xxxxxxxxx...(192 more)"
    assert escaped("unknown cmd 'a'\r\nFAKE") == "unknown cmd 'a'\\r\\nFAKE"
    assert escaped("网格 ok") == "网格 ok"  # printable text stays as it is
    assert escaped("y" * 50, limit=20) == "y" * 20 + "...(30 more)"


def test_a_flood_is_held_back_per_kind_and_the_next_line_says_how_much(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    counters: dict[str, int] = {}
    limiter = LogLimiter(logging.getLogger("t.logsafe"), lines=2, period_s=10.0, clock=lambda: now[0],
                         counters=counters)
    caplog.set_level(logging.INFO, logger="t.logsafe")
    written = [limiter.warning("bad-ack", "bad ack %d", i) for i in range(5)]
    assert written == [True, True, False, False, False]
    assert limiter.info("other", "another kind") is True
    now[0] = 10.0
    assert limiter.warning("bad-ack", "bad ack %d", 5) is True
    assert [r.getMessage() for r in caplog.records] == [
        "bad ack 0", "bad ack 1", "another kind", "bad ack 5 (3 more like it held back in the last 10 s)"]
    assert limiter.held == counters["log_lines_held"] == 3


@given(st.text(max_size=2000))
def test_escaped_text_is_one_printable_line_of_bounded_length(text: str) -> None:
    out = escaped(text)
    assert out.isprintable() and len(out) <= 4 * 120 + len("...() more") + 6


def test_kinds_may_be_per_agent_and_their_number_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    limiter = LogLimiter(logging.getLogger("t.kinds"), lines=1, period_s=10.0, clock=lambda: 0.0, kinds_max=3)
    caplog.set_level(logging.WARNING, logger="t.kinds")
    for agent in ("a", "b", "a", "c", "d", "e"):
        limiter.warning(("conflict", agent), "agent %s", agent)
    assert [r.getMessage() for r in caplog.records] == ["agent a", "agent b", "agent c", "agent d", "agent e"]
    assert len(limiter._windows) == 3  # noqa: SLF001 - the bound is the point
