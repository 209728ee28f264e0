"""The agent's disk fills up while alarms, restores and scans keep coming.

The agent's data directory is a tmpfs of its own (16 MiB; mounting needs
root, which CI has). A filler file takes every free block. Then: other kinds
(here the loop's restores) are shed, one ``disk-full`` fault reports it,
alarms and scans are kept and still delivered and acked while the disk stays
full, even across a crash of the agent; once the filler is gone everything
is normal again. Every eseq the agent numbered reaches central once.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from agent.inputs.readers.sim import SimulatedRdm6300
from tests.faults.harness import FaultSite, Numbers, Tapper, Toggler, assert_one_alarm_per_alarm_event, outbox_integrity, settle, stored_rows
from tests.support import Processes, wait_until

pytestmark = pytest.mark.slow

AGENT = "gate-d"
DISK = "16m"
FULL_S = 4.0  # how long the disk stays full before the filler goes (the fault itself)


def _mount(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a {DISK} tmpfs for the agent's disk (needs root): {r.stderr.strip()}")


def _fill(path: Path) -> int:
    """Take every free block of the file system at ``path``; returns the bytes taken."""
    written = 0
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = bytes(64 << 10)
        while True:
            try:
                written += os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    return written
                block = block[: len(block) // 2]  # the last few blocks, smaller and smaller
    finally:
        os.close(fd)


@pytest.fixture
def reader() -> Iterator[SimulatedRdm6300]:
    r = SimulatedRdm6300()
    try:
        yield r
    finally:
        r.close()


@pytest.mark.timeout(150)
def test_disk_full_sheds_others_keeps_alarms_and_scans(make_site, reader: SimulatedRdm6300, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    site: FaultSite = make_site()
    disk = site.root / AGENT
    _mount(disk)
    a = None
    try:
        site.start_central()
        extra = f'[[reader]]\nname = "gate-1"\nport = "{reader.path}"\nprotocol = "rdm6300"\n'
        a = site.add_agent(AGENT, resend_s=2, keepalive_s=5, extra=extra)
        site.start_agent(AGENT)
        toggler = Toggler(a).start()
        tapper = Tapper(reader).start()
        lives: list[int] = []
        try:
            wait_until(lambda: len(stored_rows(site.store_path, AGENT)) >= 20, timeout=20, message="stream at central")
            filled = _fill(disk)
            full_at = time.monotonic()
            # One disk-full fault reaches central, and alarms and scans still do.
            wait_until(lambda: _faults(site) >= 1, timeout=15, interval=0.2, message="the disk-full fault at central")
            mark = _count(site, "alarm"), _count(site, "scan")
            wait_until(lambda: _count(site, "alarm") >= mark[0] + 10 and _count(site, "scan") >= mark[1] + 3,
                       timeout=15, interval=0.2, message="alarms and scans delivered while the disk is full")
            # A crash while the disk is full: what was stored from the reserve survives it.
            # (No card is presented while the agent is down: a reader nobody reads makes no scan.)
            tapper.pause()
            wait_until(lambda: _count(site, "scan") >= len(tapper.tags), timeout=15, interval=0.2,
                       message="every card so far at central")
            toggler.pause()
            assert a.proc is not None
            Processes.kill(a.proc)
            assert outbox_integrity(disk) == "ok"
            site.start_agent(AGENT)
            toggler.resume(restarted=True)
            tapper.resume()
            lives = list(toggler.lives)
            time.sleep(max(0.0, full_at + FULL_S - time.monotonic()))  # the rest of the time the disk stays full
            alarms_full, restores_full = _count(site, "alarm"), _count(site, "restore")
            (disk / "filler").unlink()
            freed = time.monotonic()
            mark = _count(site, "restore")
            wait_until(lambda: _count(site, "restore") >= mark + 5, timeout=20, interval=0.2,
                       message="restores stored again once the disk has room")
        finally:
            toggler.stop()
            tapper.stop()
        wait_until(lambda: _count(site, "scan") >= len(tapper.tags), timeout=15, interval=0.2, message="every tap at central")
        # The last opening driven is confirmed by the debounce after the toggler stopped: wait for it too.
        wait_until(lambda: list(_zone_by_boot(site).values())[-1].count("alarm") >= (toggler.this_life + 1) // 2,
                   timeout=15, interval=0.2,
                   message="every opening of the last life at central")
        settle(site, [AGENT], numbers, since=freed, timeout=60)
        # Alarms: every opening of the loop is one alarm, none doubled; the
        # transition driven just before the kill may not have become an event.
        rows = stored_rows(site.store_path, AGENT)
        boots = list(_zone_by_boot(site).values())
        assert len(boots) == 2
        driven = [*lives, toggler.this_life]
        alarms = [k.count("alarm") for k in boots]
        openings = [(t + 1) // 2 for t in driven]
        assert openings[0] - 1 <= alarms[0] <= openings[0] and alarms[1] == openings[1], (alarms, openings)
        # ... and every stored opening is the loop's one alarm, across the crash and the full disk.
        numbers.details.update(assert_one_alarm_per_alarm_event(site, [AGENT]))
        restores = sum(k.count("restore") for k in boots)
        shed = sum(t // 2 for t in driven) - restores
        assert shed > 0, "no restore was shed: the disk was never full"
        # Scans: every card presented is one scan.
        scans = [r for r in rows if r["kind"] == "scan"]
        assert sorted(json.loads(r["fields"])["tag"] for r in scans) == sorted(tapper.tags)
        assert _faults(site) >= 1
        assert a.proc is not None
        Processes.terminate(a.proc)
        assert outbox_integrity(disk) == "ok"
    finally:
        if a is not None and a.proc is not None:
            Processes.kill(a.proc)  # the mount goes only once nothing holds files on it
        subprocess.run(["umount", "-l", str(disk)], check=False)
    numbers.details.update(
        disk=DISK, filler_bytes=filled, full_s=FULL_S, disk_full_faults=_faults(site),
        alarms_stored=sum(alarms), alarms_stored_while_full=alarms_full, restores_stored_while_full=restores_full,
        restores_shed=shed, scans_presented=len(tapper.tags), scans_stored=len(scans), agent_kills_while_full=1,
        recovery_from="the filler's removal (the stream stops once restores are stored again)",
    )


def _zone_by_boot(site: FaultSite) -> dict[str, list[str]]:
    by_boot: dict[str, list[str]] = {}
    for r in stored_rows(site.store_path, AGENT):
        if r["source"] == "north-fence" and r["kind"] in ("alarm", "restore"):
            by_boot.setdefault(r["boot_id"], []).append(r["kind"])
    return by_boot


def _count(site: FaultSite, kind: str) -> int:
    return sum(1 for r in stored_rows(site.store_path, AGENT) if r["kind"] == kind)


def _faults(site: FaultSite) -> int:
    return sum(1 for r in stored_rows(site.store_path, AGENT)
               if r["kind"] == "fault" and json.loads(r["fields"]).get("code") == "disk-full")
