"""`gridpatrol cards unknown`: unknown cards seen at checkpoints, with their printed numbers and a plan line."""

from __future__ import annotations

import json
import time
from contextlib import closing
from pathlib import Path

import pytest

from central.enrolment import Sighting, unknown_cards
from central.store import Store, StoredEvent
from tests.central.plan.samples import DESIGN_PLAN, LIN, plan
from tests.support import run_cli

AGENT = "school-9-gate-1"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "central.toml"
    path.write_text(f'timezone = "Asia/Shanghai"\ndata_dir = "{tmp_path / "data"}"\n')
    return path


def write_plan(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def scan(eseq: int, reader: str, tag: str, ts: int, fmt: str | None = None) -> StoredEvent:
    fields = {"tag": tag} if fmt is None else {"tag": tag, "fmt": fmt}
    return StoredEvent(agent=AGENT, eseq=eseq, kind="scan", source=reader, ts=ts, ts_est=ts, ts_estimated=False,
                       received_ts=ts, replayed=False, fields=fields)


def test_unknown_cards_are_listed_with_printed_numbers_and_a_line_to_paste(tmp_path: Path, config: Path) -> None:
    text = DESIGN_PLAN.replace('{ name = "Wu", tag = "67003B51C7" }', '{ name = "Wu", card = "0003887559" }')
    assert run_cli("plan", "import", str(write_plan(tmp_path, text)), "--config", str(config)).returncode == 0
    now = int(time.time() * 1000)
    store = Store(tmp_path / "data" / "central.db")
    with closing(store.connect()) as conn:
        with conn:
            Store.insert_events(conn, [
                scan(1, "gate-1", LIN, now - 9000),  # Lin's card: known
                scan(2, "gate-1", "6F007B3972", now - 8000, "em4100"),
                scan(3, "gate-2", "6F007B3972", now - 7000, "em4100"),
                scan(4, "gate-3", "3B51C7", now - 6000, "wiegand26"),  # Wu's, by the printed number
                scan(5, "desk", "0A0B0C0D", now - 5000, "iso14443a"),  # a reader that is no checkpoint
                scan(6, "gate-3", "04A1B2C3", now - 4000, "iso14443a"),
            ])
    done = run_cli("cards", "unknown", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"tag": "04A1B2C3", "fmt": "iso14443a", "cards": [], "checkpoints": ["cp-library"], "scans": 1,
         "first_ts": now - 4000, "last_ts": now - 4000, "plan_line": '{ name = "NAME", tag = "04A1B2C3" }'},
        {"tag": "6F007B3972", "fmt": "em4100", "cards": ["0008075634", "123,14706"],
         "checkpoints": ["cp-east-gate", "cp-north-fence"], "scans": 2, "first_ts": now - 8000, "last_ts": now - 7000,
         "plan_line": '{ name = "NAME", tag = "6F007B3972", card = "0008075634" }'},
    ]
    table = run_cli("cards", "unknown", "--config", str(config))
    assert table.returncode == 0
    assert table.stdout.splitlines()[2:] == [
        "6F007B3972 (em4100; printed 0008075634 123,14706): 2 scans at cp-east-gate, cp-north-fence",
        '    members = [ { name = "NAME", tag = "6F007B3972", card = "0008075634" } ]',
    ]


def test_a_card_enrolled_by_its_printed_number_is_not_unknown_on_any_reader_type() -> None:
    p = plan(DESIGN_PLAN.replace('{ name = "Wu", tag = "67003B51C7" }', '{ name = "Wu", card = "123,14706" }'))
    seen = [Sighting(AGENT, "gate-1", tag, fmt, 1, 0, 0)
            for tag, fmt in (("6F007B3972", "em4100"), ("007B3972", "wiegand34"), ("7B3972", "wiegand26"))]
    assert unknown_cards(p, seen) == []
