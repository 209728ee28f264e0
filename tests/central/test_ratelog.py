"""Log lines a sender controls: escaped, cut, and one per key per interval."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from central.ratelog import RateLimitedLog, escape


@given(st.text(max_size=2000))
def test_an_escaped_value_is_one_printable_line_of_bounded_length(text: str) -> None:
    out = escape(text)
    assert isinstance(out, str) and out.isprintable() and len(out) <= 300 + 40 + 4 * 300


def test_a_flood_is_one_line_per_key_and_says_how_many_were_held(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("test.rate"), every_s=10.0, monotonic=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.rate"):
        for _ in range(1000):
            log.warning(("conflict", "gate-a"), "agent %s sent %s", "gate-a", {"detail": "x\ny"})
        log.warning(("conflict", "gate-b"), "agent %s sent %s", "gate-b", 1)
        now[0] = 11.0
        log.warning(("conflict", "gate-a"), "agent %s sent %s", "gate-a", 2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "\n" not in lines[0] and "\\n" in lines[0]
    assert lines[2].endswith("(and 999 more like it in the last 10 s)")
