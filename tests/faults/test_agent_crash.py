"""An agent killed (SIGKILL) at random moments of a burst, five times over.

What the outbox committed before the kill must reach central once, the
restarted agent must number on from there (never reusing an eseq), and the
outbox file must come through every kill intact (PRAGMA integrity_check).
The kill moments are random; the seed is in the numbers, to replay a run.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import (
    FaultSite,
    Numbers,
    Toggler,
    assert_alternating,
    assert_one_alarm_per_alarm_event,
    outbox_integrity,
    outbox_state,
    seeded_rng,
    settle,
    stored_rows,
    zone_events_by_boot,
)
from tests.support import Processes, wait_until

pytestmark = pytest.mark.slow

KILLS = 5
AGENT = "gate-k"


@pytest.mark.timeout(150)
def test_agent_sigkilled_at_random_moments_of_a_burst(make_site, numbers: Numbers) -> None:  # type: ignore[no-untyped-def]
    rng, seed = seeded_rng()
    site: FaultSite = make_site()
    site.start_central()
    a = site.add_agent(AGENT, resend_s=1, keepalive_s=5)
    site.start_agent(AGENT)
    toggler = Toggler(a).start()
    committed_at_kill: list[int] = []
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 2.0))  # a random moment of the burst: the point of the scenario
            toggler.pause()
            assert a.proc is not None
            Processes.kill(a.proc)
            assert outbox_integrity(a.directory) == "ok"
            committed_at_kill.append(outbox_state(a.directory)[0])
            site.start_agent(AGENT)
            toggler.resume(restarted=True)
        restarted = time.monotonic()
        # The last life makes events too, so its numbering can be checked.
        mark = toggler.transitions
        wait_until(lambda: toggler.transitions >= mark + 20, timeout=15, message="the burst going on after the last restart")
    finally:
        toggler.stop()
    settle(site, [AGENT], numbers, since=restarted, timeout=60, togglers=[toggler])
    # Each life of the agent is one boot at central; every transition of it
    # arrived once and in order. The last one driven before a kill may not
    # have lived through the 20 ms debounce (or its commit): it never became
    # an event, so nothing was lost. The last life was waited for in full.
    boots = list(zone_events_by_boot(site, AGENT).values())
    lives = [*toggler.lives, toggler.this_life]
    assert len(boots) == KILLS + 1
    cut = 0
    for i, (kinds, driven) in enumerate(zip(boots, lives)):
        assert_alternating(kinds)
        last_life = i == KILLS
        assert len(kinds) == driven if last_life else driven - 1 <= len(kinds) <= driven, (i, len(kinds), driven)
        cut += driven - len(kinds)
    zone_events = sum(len(k) for k in boots)
    # Numbering went on from what each kill left committed: later boots only above it.
    rows = stored_rows(site.store_path, AGENT)
    boot_order = list(dict.fromkeys(r["boot_id"] for r in rows))
    assert len(boot_order) == KILLS + 1
    for i, committed in enumerate(committed_at_kill):
        before = [r["eseq"] for r in rows if r["boot_id"] in boot_order[: i + 1]]
        after = [r["eseq"] for r in rows if r["boot_id"] in boot_order[i + 1:]]
        assert max(before) == committed and min(after) == committed + 1
    # Five boots of one loop that nobody answered: its openings are retrips of one alarm.
    numbers.details.update(assert_one_alarm_per_alarm_event(site, [AGENT]))
    numbers.details.update(kills=KILLS, seed=seed, committed_at_kills=committed_at_kill,
                           transitions_driven=toggler.transitions, zone_events_stored=zone_events,
                           transitions_cut_by_a_kill=cut, driven_per_life=lives,
                           recovery_from="the last restart of the agent (the burst goes on for 20 more transitions)")
