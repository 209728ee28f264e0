"""The plan registry (central/plan/registry.py): versions, which one governs when, atomic writes."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

import pytest

from central.plan.registry import AtomicJSONStorage, PlanRegistry, RegistryError
from tests.central.plan.samples import DESIGN_PLAN, at, plan


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def effective(day: str, text: str = DESIGN_PLAN) -> str:
    return text.replace('timezone = "Asia/Shanghai"', f'timezone = "Asia/Shanghai"\neffective = "{day}"')


def test_versions_are_numbered_and_read_back(tmp_path: Path) -> None:
    clock = Clock(at(1, 9) / 1000)
    reg = PlanRegistry(tmp_path / "plan.json", clock=clock)
    assert not reg.history() and reg.current() is None and not reg.is_planned("school-9-gate-1")
    v1 = reg.add(plan(), source="/etc/plan.toml")
    clock.t += 60
    v2 = reg.add(plan(DESIGN_PLAN.replace('"school-9-gate-1"', '"school-10-gate-1"')), source="/etc/plan2.toml")
    assert (v1.version, v2.version) == (1, 2)
    assert (v1.imported_ms, v2.imported_ms) == (at(1, 9), at(1, 9, 1))
    again = PlanRegistry(tmp_path / "plan.json").history()
    assert [(v.version, v.source, v.plan) for v in again.versions] == [(1, "/etc/plan.toml", v1.plan), (2, "/etc/plan2.toml", v2.plan)]
    data = json.loads((tmp_path / "plan.json").read_text())
    assert sorted(data) == ["versions"]  # the plan only: events never go here
    assert reg.is_planned("school-10-gate-1") and not reg.is_planned("school-9-gate-1")


def test_before_the_first_version_governs_nothing_does(tmp_path: Path) -> None:
    clock = Clock(at(10, 9) / 1000)
    reg = PlanRegistry(tmp_path / "plan.json", clock=clock)
    v1 = reg.add(plan(effective("2024-05-08")))
    h = reg.history()
    assert h.at(at(7, 23, 59)) is None and h.at(at(8, 0)) is v1
    assert v1.governs_from == "2024-05-08T00:00:00+08:00"
    other = PlanRegistry(tmp_path / "other.json", clock=clock)
    undated = other.add(plan())  # no effective date: from its import
    assert other.history().at(at(10, 8, 59)) is None and other.history().at(at(10, 9)) is undated


def test_a_later_version_governs_from_its_effective_date_or_its_import(tmp_path: Path) -> None:
    clock = Clock(at(1, 9) / 1000)
    reg = PlanRegistry(tmp_path / "plan.json", clock=clock)
    v1 = reg.add(plan())
    clock.t = at(3, 9) / 1000
    v2 = reg.add(plan(effective("2024-05-05")))  # imported on the 3rd, for the 5th
    clock.t = at(6, 1, 30) / 1000
    v3 = reg.add(plan())  # no date: from its import, in the middle of a night
    h = reg.history()
    assert h.at(at(4, 23, 59)) is v1
    assert h.at(at(5, 0)) is v2
    assert v2.governs_from == "2024-05-05T00:00:00+08:00"
    assert h.at(at(6, 1, 29, 59)) is v2
    assert h.at(at(6, 1, 30)) is v3
    assert [v.version for v in h.between(at(4, 0), at(6, 0))] == [1, 2]
    assert [v.version for v in h.between(at(6, 0), at(7, 0))] == [2, 3]


def test_two_versions_with_the_same_start_the_later_import_wins(tmp_path: Path) -> None:
    reg = PlanRegistry(tmp_path / "plan.json", clock=Clock(at(1, 9) / 1000))
    reg.add(plan())
    reg.add(plan(effective("2024-05-05")))
    v3 = reg.add(plan(effective("2024-05-05", DESIGN_PLAN.replace('"Grid 1"', '"Grid One"'))))
    h = reg.history()
    assert h.at(at(5, 12)) is v3
    assert [v.version for v in h.between(at(4, 0), at(8, 0))] == [1, 3]


def test_another_process_import_is_seen_on_the_next_look(tmp_path: Path) -> None:
    reader = PlanRegistry(tmp_path / "plan.json")
    first = reader.history()
    assert reader.history() is first  # unchanged file: no re-read
    PlanRegistry(tmp_path / "plan.json").add(plan())
    second = reader.history()
    assert second is not first and [v.version for v in second.versions] == [1]
    assert reader.history() is second


def test_concurrent_imports_take_different_numbers(tmp_path: Path) -> None:
    p = plan()
    numbers: list[int] = []
    lock = threading.Lock()

    def importer() -> None:
        for _ in range(5):
            v = PlanRegistry(tmp_path / "plan.json").add(p)
            with lock:
                numbers.append(v.version)

    threads = [threading.Thread(target=importer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = [v.version for v in PlanRegistry(tmp_path / "plan.json").history().versions]
    assert versions == list(range(1, 16))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = PlanRegistry(tmp_path / "plan.json")
    reg.add(plan())
    before = (tmp_path / "plan.json").read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the one way to make a real write fail half-way
    with pytest.raises(OSError, match="No space left"):
        reg.add(plan())
    monkeypatch.undo()
    assert (tmp_path / "plan.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "plan.json.lock"]
    assert [v.version for v in PlanRegistry(tmp_path / "plan.json").history().versions] == [1]


def test_storage_writes_whole_json_files(tmp_path: Path) -> None:
    storage = AtomicJSONStorage(tmp_path / "sub" / "x.json")
    assert storage.read() is None
    storage.write({"t": {"1": {"a": "区"}}})
    assert storage.read() == {"t": {"1": {"a": "区"}}}
    assert json.loads((tmp_path / "sub" / "x.json").read_text()) == {"t": {"1": {"a": "区"}}}


@pytest.mark.parametrize("content, problem", [
    (b"{not json", "not a plan registry (invalid JSON"),
    (b"[1, 2]", "not a plan registry (no JSON object at the top)"),
    (b'{"versions": {"1": {"version": 1, "imported_ms": 0, "plan": {"unit": []}}}}', "version 1 is damaged"),
])
def test_a_damaged_registry_names_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(content)
    with pytest.raises(RegistryError) as info:
        PlanRegistry(path).history()
    assert str(info.value).startswith(f"{path}: {problem}")


def test_current_follows_the_clock(tmp_path: Path) -> None:
    clock = Clock(at(1, 9) / 1000)
    reg = PlanRegistry(tmp_path / "plan.json", clock=clock)
    reg.add(plan())
    later = plan(effective("2024-05-05", DESIGN_PLAN.replace('"school-9-gate-1"', '"school-10-gate-1"')))
    reg.add(later)
    assert reg.is_planned("school-9-gate-1")
    clock.t = at(5, 0) / 1000
    assert reg.current() == later
    assert reg.is_planned("school-10-gate-1") and not reg.is_planned("school-9-gate-1")
    assert dt.date(2024, 5, 5) == later.effective
