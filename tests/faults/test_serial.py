"""Serial trouble at the edge: a checkpoint reader unplugged and plugged back, a noisy microcontroller link.

The RDM6300 reader's ``port`` is a symlink (as udev's /dev/serial/by-id links
are); unplugging closes its pseudo-terminal, plugging back points the link at
a new one. The microcontroller (the simulated front end, running the real
firmware) gets random noise bursts on its line to the Pi while Wiegand cards
are read: frames hit by noise fail their CRC and are sent again. Either way,
every card presented while a reader was there is one scan at central.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from agent.inputs.readers.sim import SimulatedRdm6300
from agent.inputs.readers.wiegand import decode_wiegand
from firmware_bridge.sim import McuSim, wiegand_frame
from tests.faults.harness import FaultSite, Numbers, seeded_rng, settle, stored_rows
from tests.support import wait_until

pytestmark = pytest.mark.slow

TAPS_PER_PLUG = 6
WIEGAND_CARDS = 20
FACILITY = 42


def _point(link: Path, target: str) -> None:
    """Re-point the symlink atomically, as udev does."""
    temp = link.with_name(link.name + ".new")
    temp.unlink(missing_ok=True)
    temp.symlink_to(target)
    os.replace(temp, link)


def _rows(site: FaultSite, agent: str, kind: str, source: str) -> list[dict]:  # type: ignore[type-arg]
    return [r for r in stored_rows(site.store_path, agent) if r["kind"] == kind and r["source"] == source]


def _tags(rows: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [json.loads(r["fields"])["tag"] for r in rows]


@pytest.fixture
def rdm() -> Iterator[list[SimulatedRdm6300]]:
    made: list[SimulatedRdm6300] = []
    try:
        yield made
    finally:
        for r in made:
            r.close()


def _present(reader: SimulatedRdm6300, tags: list[str], prefix: str, n: int) -> None:
    for _ in range(n):
        tag = f"{prefix}{len(tags):04X}"  # 10 hex digits, as an EM4100 id
        reader.tap(tag, hold_s=0.2)
        tags.append(tag)
        wait_until(lambda: reader._tag is None, timeout=5, message="card lifted")


@pytest.mark.timeout(120)
def test_reader_unplugged_and_plugged_back(make_site, rdm: list[SimulatedRdm6300], numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    site: FaultSite = make_site()
    site.start_central()
    link = site.root / "ttyRFID"
    rdm.append(SimulatedRdm6300())
    _point(link, rdm[0].path)
    extra = f'[[reader]]\nname = "gate-1"\nport = "{link}"\nprotocol = "rdm6300"\n'
    site.add_agent("gate-s", resend_s=2, extra=extra)
    site.start_agent("gate-s")
    tags: list[str] = []
    _present(rdm[0], tags, "AB0000", TAPS_PER_PLUG)
    wait_until(lambda: _tags(_rows(site, "gate-s", "scan", "gate-1")) == tags, timeout=15, interval=0.1, message="scans before the unplug")
    rdm[0].close()  # unplugged
    wait_until(lambda: len(_rows(site, "gate-s", "fault", "gate-1")) >= 1, timeout=10, interval=0.1, message="port-lost at central")
    rdm.append(SimulatedRdm6300())
    _point(link, rdm[1].path)  # plugged back: a new device behind the same link
    plugged = time.monotonic()
    wait_until(lambda: len(_rows(site, "gate-s", "fault", "gate-1")) >= 2, timeout=10, interval=0.1, message="port-back at central")
    back_s = time.monotonic() - plugged
    _present(rdm[1], tags, "AB0000", TAPS_PER_PLUG)
    wait_until(lambda: len(_rows(site, "gate-s", "scan", "gate-1")) >= len(tags), timeout=15, interval=0.1, message="scans after the replug")
    settle(site, ["gate-s"], numbers, since=plugged, timeout=30)
    assert _tags(_rows(site, "gate-s", "scan", "gate-1")) == tags
    codes = [json.loads(r["fields"])["code"] for r in _rows(site, "gate-s", "fault", "gate-1")]
    assert codes == ["port-lost", "port-back"]
    numbers.details.update(cards_presented=len(tags), scans_stored=len(tags), fault_codes=codes,
                           replug_to_port_back_s=round(back_s, 2), recovery_from="the replug")


@pytest.fixture
def mcu(tmp_path: Path) -> Iterator[McuSim]:
    sim = McuSim(link=tmp_path / "ttyMCU").start()
    try:
        yield sim
    finally:
        sim.close()


class Noise:
    """Random bursts of random bytes on the microcontroller's line to the Pi.

    In the background a burst every 0.5 to 3 s, and one just before each card
    (:meth:`burst`), which garbles the next frame the Pi reads: often that
    card's first sending. A burst never ends in the frame delimiter, so it
    always spoils what follows it. Each sending is spoiled only by a burst in
    the 200 ms before it, so six in a row (a frame given up) stay improbable.
    """

    def __init__(self, sim: McuSim) -> None:
        self.sim = sim
        self.rng, self.seed = seeded_rng()
        self.bursts = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="noise", daemon=True)

    def start(self) -> Noise:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def burst(self) -> None:
        data = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(4, 63))) + bytes([self.rng.randrange(1, 256)])
        self.sim.noise(data)
        self.bursts += 1
        self.bytes += len(data)

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(0.5, 3.0)):
            self.burst()


@pytest.mark.timeout(120)
def test_microcontroller_link_full_of_noise(make_site, mcu: McuSim, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    site: FaultSite = make_site()
    site.start_central()
    extra = (f'[[mcu]]\nname = "front-end"\nport = "{mcu.path}"\n\n'
             '[[reader]]\nname = "gate-w"\nprotocol = "wiegand"\nmcu = "front-end"\ninput = 0\n')
    site.add_agent("gate-m", resend_s=2, extra=extra)
    site.start_agent("gate-m")
    wait_until(lambda: any(b["t"] == "sync" for b in mcu.received()), timeout=15, message="the link up (the Pi's sync)")
    before = dict(mcu.counters)
    noise = Noise(mcu).start()
    expected: list[str] = []
    try:
        for card in range(1, WIEGAND_CARDS + 1):
            noise.burst()
            mcu.wiegand_card(0, 26, FACILITY, card)
            expected.append(decode_wiegand(26, wiegand_frame(26, FACILITY, card)))
            time.sleep(0.3)  # a card every 0.3 s: the pace of the test, not a wait for a result
        wait_until(lambda: len(_rows(site, "gate-m", "scan", "gate-w")) >= len(expected), timeout=30, interval=0.1,
                   message="every card at central")
        done = time.monotonic()
    finally:
        noise.stop()
    settle(site, ["gate-m"], numbers, since=done, timeout=30)
    assert sorted(_tags(_rows(site, "gate-m", "scan", "gate-w"))) == sorted(expected)
    after = mcu.counters
    retransmits = after["retransmits"] - before.get("retransmits", 0)
    assert retransmits > 0, "the noise never hit a frame: the scenario proved nothing"
    assert after["gave_up"] == before.get("gave_up", 0), "the firmware gave a frame up: a card would be lost"
    numbers.details.update(cards_presented=len(expected), scans_stored=len(expected), noise_bursts=noise.bursts,
                           noise_bytes=noise.bytes, noise_seed=noise.seed, mcu_retransmits=retransmits,
                           mcu_frames_given_up=after["gave_up"] - before.get("gave_up", 0),
                           recovery_from="the last card's frame sent")
