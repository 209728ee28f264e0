"""A message the store refuses: quarantined, other agents unaffected, its agent's next events stored.

Issue 11: any value that could not be stored failed the whole batch, and the
batch was retried whole, so one poison message held every agent's events.
The fault is injected where the contract says the checks inject them: a
trigger on central's ``events`` table refuses (``RAISE(ABORT)``) every row
whose source is ``poison-loop``, a zone of one real agent. What is not known
in advance cannot be listed; the store's refusal is the only sign.

Shows: while ``gate-x``'s poison event is refused, ``gate-y``'s stream keeps
being stored as before; the poison message is in ``gridpatrol quarantine
--json`` with its agent, topic, eseq and a reason, one ``suspicious`` alarm is
raised for ``gate-x``, and ``gate-x``'s later events are stored (its ack
moves past the quarantined eseq and its outbox drains).
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest

from tests.faults.harness import FaultSite, Numbers, Toggler, assert_one_alarm_per_alarm_event, cli_json, outbox_state, stored_eseqs
from tests.support import wait_until

pytestmark = pytest.mark.slow

POISONED = "gate-x"
OTHER = "gate-y"
POISON_PIN = 5
POISON_SOURCE = "poison-loop"
POISON_ZONE = f'[[zone]]\nname = "{POISON_SOURCE}"\npin = {POISON_PIN}\ncontact = "nc"\ndebounce_ms = 20\n'
POISON_WINDOW_S = 6.0  # both agents stream this long after the poison (three resends of it at resend_s = 2)
# The slowest of another agent's events made meanwhile, from its ts to central's received_ts: live delivery takes
# tens of ms; an event dropped with a refused batch comes back only by a resend (2 s) or a gap replay (1 s + asking).
OTHERS_MAX_DELAY_S = 1.0


def _install_poison(site: FaultSite) -> None:
    """The store refuses every event of POISON_SOURCE, as it would a value it cannot hold."""
    wait_until(lambda: _has_events_table(site), timeout=15, message="central's events table")
    with closing(sqlite3.connect(site.store_path, timeout=10)) as db:
        db.execute(f"CREATE TRIGGER fault_suite_poison BEFORE INSERT ON events WHEN NEW.source = '{POISON_SOURCE}' "
                   "BEGIN SELECT RAISE(ABORT, 'poison injected by the fault suite'); END")
        db.commit()


def _has_events_table(site: FaultSite) -> bool:
    if not site.store_path.exists():
        return False
    with closing(sqlite3.connect(f"file:{site.store_path}?mode=ro", uri=True, timeout=10)) as db:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone() is not None


@pytest.mark.timeout(150)
def test_a_message_the_store_refuses_is_quarantined(make_site, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    site: FaultSite = make_site()
    site.start_central()
    _install_poison(site)
    x = site.add_agent(POISONED, resend_s=2, keepalive_s=5, extra=POISON_ZONE)
    site.add_agent(OTHER, resend_s=2, keepalive_s=5)
    site.start_agent(POISONED)
    site.start_agent(OTHER)
    stream = Toggler(site.agents[OTHER]).start()
    try:
        wait_until(lambda: len(stored_eseqs(site.store_path, OTHER)) >= 20, timeout=20, message="gate-y's stream at central")
        # The poison: gate-x's second loop opens; the agent numbers it like any event.
        made_before = outbox_state(x.directory)[0]
        x.drive(POISON_PIN, "high")
        wait_until(lambda: outbox_state(x.directory)[0] > made_before, timeout=10, message="gate-x numbering the poison event")
        poison_eseq = made_before + 1
        poisoned_ms = int(time.time() * 1000)
        # The poisoned agent goes on: its main loop toggles (the poison loop stays open: its restore would be refused too).
        toggles = Toggler(x).start()
        try:
            time.sleep(POISON_WINDOW_S)  # the stretch over which both agents' delays are judged
        finally:
            toggles.stop()
    finally:
        stream.stop()
    # Everything gate-x made is stored once but the quarantined one: its ack moved past it and its outbox drains.
    def drained() -> bool:
        last, rows = outbox_state(x.directory)
        return rows == 0 and stored_eseqs(site.store_path, POISONED) == [e for e in range(1, last + 1) if e != poison_eseq]

    try:
        wait_until(drained, timeout=30, interval=0.2, message="gate-x stored 1..last but the poison")
    except AssertionError:
        last, rows = outbox_state(x.directory)
        held = stored_eseqs(site.store_path, POISONED)
        raise AssertionError(f"{POISONED} is held up by its own poison message (eseq {poison_eseq}): made {last}, "
                             f"{rows} still in its outbox, central's ack "
                             f"{next(a['acked_eseq'] for a in cli_json(site, 'agents') if a['agent'] == POISONED)}, "
                             f"missing {sorted(set(range(1, last + 1)) - set(held) - {poison_eseq})[:10]}") from None
    wait_until(lambda: stored_eseqs(site.store_path, OTHER) == list(range(1, outbox_state(site.agents[OTHER].directory)[0] + 1))
               and outbox_state(site.agents[OTHER].directory)[1] == 0, timeout=30, interval=0.2,
               message="gate-y stored 1..last once, outbox drained")
    # Other agents unaffected: each event of gate-y made meanwhile was stored as fast as ever, none had to be resent.
    later = [e for e in cli_json(site, "events", "--agent", OTHER) if e["ts"] >= poisoned_ms]
    assert len(later) >= 20, len(later)
    delays = sorted((e["received_ts"] - e["ts"]) / 1000 for e in later)
    resent = [e["eseq"] for e in later if e["replayed"]]
    assert delays[-1] <= OTHERS_MAX_DELAY_S and not resent, (
        f"{OTHER}'s events were held up by {POISONED}'s poison message: slowest {delays[-1]:.2f} s "
        f"(allowed {OTHERS_MAX_DELAY_S} s), resent: {resent[:10]}")
    # The poison is quarantined, raw, with its reason, and staff are told once.
    entries = wait_until(lambda: [q for q in cli_json(site, "quarantine") if q["agent"] == POISONED],
                         timeout=20, interval=0.5, message="the poison message in gridpatrol quarantine --json")
    suspicious = wait_until(lambda: [a for a in cli_json(site, "alarms") if a["agent"] == POISONED
                                     and a["kind"] == "suspicious"],
                            timeout=10, interval=0.5, message="a suspicious alarm for gate-x")
    assert [q.get("eseq") for q in entries] == [poison_eseq], entries
    q = entries[0]
    assert q["topic"] == f"gridpatrol/v1/{POISONED}/evt" and q["reason"], q
    assert len(suspicious) == 1, suspicious
    assert not [e for e in cli_json(site, "events", "--agent", POISONED) if e["source"] == POISON_SOURCE]
    assert not [q for q in cli_json(site, "quarantine") if q["agent"] == OTHER]
    # Whether a refused alarm event still raises its own alarm is central's decision; the rest must match.
    counts = assert_one_alarm_per_alarm_event(site, [POISONED, OTHER], ignore={(POISONED, POISON_SOURCE)})
    numbers.made = outbox_state(x.directory)[0] + outbox_state(site.agents[OTHER].directory)[0]
    numbers.stored = len(stored_eseqs(site.store_path, POISONED)) + len(stored_eseqs(site.store_path, OTHER))
    numbers.details.update(counts)
    numbers.details.update(poison_eseq=poison_eseq, quarantine_reason=q["reason"], other_slowest_s=round(delays[-1], 3),
                           other_p50_s=round(delays[len(delays) // 2], 3),
                           other_transitions=stream.transitions)
