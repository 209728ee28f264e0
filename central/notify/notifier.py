"""The notifier of a running central: routes alarm steps to targets and delivers them.

Off the ingest path entirely: a router thread reads ``alarm_steps`` past its
persisted cursor (central/store/notifications.py) and writes one ``notifications``
row per (step, target) in the transaction that moves the cursor; one sender
thread per target delivers that target's pending rows through Apprise. A
failed send is retried with exponential backoff (the target as a whole
waits: a robot that is down for one message is down for all of them) until it
succeeds or the row is older than the target's ``give_up_s``. Every attempt
is written to the trail of the alarms it carried. A restart resends every
row still pending.

A storm does not become a storm of messages: a target receives at most
``rate_per_min`` messages in any 60 s. When more are waiting than that
allows, they all travel as one summary, which counts as one message.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence
from zoneinfo import ZoneInfo

from central.config import NotifyTarget
from central.notify import message, route
from central.notify.route import Target
from central.plan.model import Plan
from central.plan.registry import PlanHistory
from central.store import Connection, Store
from central.store import notifications as outbox

_LOGGER = logging.getLogger(__name__)

POLL_S = 0.25  # how soon a step is routed after it is committed
RATE_WINDOW_S = 60.0
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0  # a receiver back up is used within this
SEND_TIMEOUT_S = 15.0  # a whole Apprise call, whatever the service's own timeouts
DETAIL_MAX_LEN = 300


@dataclass(slots=True, frozen=True)
class Delivery:
    ok: bool
    detail: str  # "sent", else why not (Apprise's own words)


Send = Callable[[NotifyTarget, str, str], Delivery]


def apprise_send(target: NotifyTarget, title: str, body: str) -> Delivery:
    """One message through Apprise; its log lines give the reason of a failure."""
    ap = _apprise().Apprise()
    if not ap.add(target.url):
        return Delivery(False, f"Apprise cannot read the URL of scheme {target.url.partition(':')[0]!r}")
    result = ap.notify(body=body, title=title, timeout=SEND_TIMEOUT_S, log_level=logging.WARNING)
    if result:
        return Delivery(True, "sent")
    why = "; ".join(e.message for e in result.logs()) or f"Apprise status {getattr(result.status, 'name', result.status)}"
    return Delivery(False, _scrub(why, target.url))


def _apprise() -> Any:
    """Apprise, imported on first use (its plugins take a while to load).

    Its mail plugin loads PGPy, which imports ``imghdr`` (deprecated since
    Python 3.11) when Apprise first looks through its plugins: that warning is
    theirs to fix, not a fault of ours (tests make every warning an error).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise
        import apprise.utils.pgp  # noqa: F401
    return apprise


def _scrub(text: str, url: str) -> str:
    """A reason as the trail may show it: without the URL (it carries a token), short, one line."""
    rest = url.partition("://")[2]
    for secret in (url, rest, rest.partition("/")[2]):
        if len(secret) >= 8:
            text = text.replace(secret, "…")
    return " ".join(text.split())[:DETAIL_MAX_LEN]


class HistorySource(Protocol):
    def history(self) -> PlanHistory: ...


class Notifier:
    """Started and stopped with central; ``route_once`` and ``deliver_once`` for tests that hold the clock."""

    def __init__(self, store: Store, *, targets: Sequence[NotifyTarget], plans: HistorySource, tz: ZoneInfo,
                 public_url: str | None = None, send: Send = apprise_send, clock: Callable[[], float] = time.time,
                 poll_s: float = POLL_S, retry_first_s: float = RETRY_FIRST_S, retry_max_s: float = RETRY_MAX_S) -> None:
        self._store = store
        self.targets = route.targets_of(targets)
        self._plans = plans
        self._tz = tz
        self._public_url = public_url
        self._send = send
        self._clock = clock
        self._poll_s = poll_s
        self._retry_first_s = retry_first_s
        self._retry_max_s = retry_max_s
        self._stop = threading.Event()
        self._wake = {t.key: threading.Event() for t in self.targets}
        self._failures = {t.key: 0 for t in self.targets}
        self._retry_at = {t.key: 0.0 for t in self.targets}
        self._threads: list[threading.Thread] = []
        self._conn = store.connect(check_same_thread=False)  # the router's
        dropped = outbox.drop_unknown_targets(self._conn, [t.key for t in self.targets])
        if dropped:
            _LOGGER.warning("notify: %s pending notifications of targets no longer configured were dropped", dropped)
        if outbox.cursor(self._conn) is None:
            # A first start (or an upgrade): the alarms of the past were answered on the dashboard.
            outbox.record(self._conn, outbox.last_step(self._conn), (), int(self._clock() * 1000))

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._route_loop, name="notify-router", daemon=True)]
        self._threads += [threading.Thread(target=self._send_loop, args=(t,), name=f"notify-{t.key[:6]}", daemon=True)
                          for t in self.targets]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for event in self._wake.values():
            event.set()
        for thread in self._threads:
            thread.join(timeout=SEND_TIMEOUT_S + 5)
        self._threads = []

    def close(self) -> None:
        self.stop()
        self._conn.close()

    # -- routing ---------------------------------------------------------------

    def _plan(self, ts_ms: int) -> Plan | None:
        h = self._plans.history()
        v = h.at(ts_ms) or h.latest
        return v.plan if v else None

    def route_once(self) -> int:
        """Route the steps committed since the last call; how many notifications it made."""
        conn = self._conn
        after = outbox.cursor(conn) or 0
        last = outbox.last_step(conn)  # read before the steps: a step committed in between is not skipped
        if last < after:
            # Rows at the top of alarm_steps were deleted behind the store's back (retention keeps the
            # newest): SQLite will hand their rowids out again, so the cursor must come down to them.
            _LOGGER.warning("notify: alarm_steps ends at %s, below the cursor %s: cursor moved back", last, after)
            outbox.record(conn, last, (), int(self._clock() * 1000))
            return 0
        steps = outbox.steps_after(conn, after, actions=route.ROUTED_ACTIONS)
        if not steps:
            if last > after:  # retrip, restore...: steps nobody is told of still move the cursor
                outbox.record(conn, last, (), int(self._clock() * 1000))
            return 0
        told_now: set[tuple[int, str]] = set()

        def told(alarm_id: int, key: str) -> bool:
            return (alarm_id, key) in told_now or outbox.told_about(conn, alarm_id, key)

        items = []
        for step in steps:
            plan = self._plan(step.ts)
            tz = plan.tz if plan is not None else self._tz
            for t in route.recipients(step, self.targets, plan, told):
                title, body = message.render(step, lang=t.config.lang, plan=plan, tz=tz, public_url=self._public_url)
                items.append(outbox.NewNotification(step.rowid, step.alarm_id, t.key, step.action, title, body))
                if step.action in ("raise", "escalate"):
                    told_now.add((step.alarm_id, t.key))
        outbox.record(conn, steps[-1].rowid, items, int(self._clock() * 1000))
        for key in {i.target for i in items}:
            self._wake[key].set()
        return len(items)

    def _route_loop(self) -> None:
        while not self._stop.is_set():
            try:
                while self.route_once() and not self._stop.is_set():
                    pass
            except Exception:
                _LOGGER.exception("notify: routing alarm steps failed")
            self._stop.wait(self._poll_s)

    # -- delivery --------------------------------------------------------------

    def _send_loop(self, target: Target) -> None:
        conn = self._store.connect(check_same_thread=False)
        wake = self._wake[target.key]
        try:
            while not self._stop.is_set():
                wait_s = self._poll_s * 4
                try:
                    wait_s = self.deliver_once(target, conn) or wait_s
                except Exception:
                    _LOGGER.exception("notify: delivering to %s failed", target.label)
                wake.wait(wait_s)
                wake.clear()
        finally:
            conn.close()

    def deliver_once(self, target: Target, conn: Connection | None = None) -> float | None:
        """Send what is due to ``target``; returns how long to wait before trying again (None: until woken)."""
        conn = conn or self._conn
        now = self._clock()
        if now < self._retry_at[target.key]:
            return self._retry_at[target.key] - now
        now_ms = int(now * 1000)
        waiting = self._expire(conn, target, outbox.pending(conn, target.key), now_ms)
        if not waiting:
            return None
        window = outbox.sent_since(conn, target.key, now_ms - int(RATE_WINDOW_S * 1000))
        free = target.config.rate_per_min - len(window)
        if free <= 0:
            return max(0.05, (window[0] + RATE_WINDOW_S * 1000 - now_ms) / 1000)
        if len(waiting) > free:
            # A storm: everything waiting travels as one summary (it names the first ten), itself one message.
            # Not "singles while the rate allows, then a summary": a sender that wakes late would find
            # several slots free at once and spend them all on singles in the middle of the storm.
            title, body = message.summary([n.title for n in waiting], lang=target.config.lang,
                                          public_url=self._public_url)
            outbox.summarize(conn, target.key, [n.id for n in waiting], title, body, now_ms)
            waiting = outbox.pending(conn, target.key)
        for note in waiting:
            if self._stop.is_set():
                return None
            if not self._deliver(conn, target, note):
                return self._retry_at[target.key] - self._clock()
        return 0.0  # look again at once: more may have come meanwhile

    def _deliver(self, conn: Connection, target: Target, note: outbox.Notification) -> bool:
        try:
            result = self._send(target.config, note.title, note.body)
        except Exception as exc:  # a plugin's bug is one failed attempt, not a dead sender
            result = Delivery(False, f"{type(exc).__name__}: {exc}"[:DETAIL_MAX_LEN])
        now = self._clock()
        outbox.attempted(conn, note, label=target.label, ok=result.ok, detail=result.detail, now_ms=int(now * 1000))
        if result.ok:
            self._failures[target.key] = 0
            _LOGGER.info("notify: %s sent to %s", note.action, target.label)
            return True
        self._failures[target.key] += 1
        delay = min(self._retry_max_s, self._retry_first_s * 2 ** (self._failures[target.key] - 1))
        self._retry_at[target.key] = now + delay
        _LOGGER.warning("notify: sending to %s failed (%s); trying again in %.0f s", target.label, result.detail, delay)
        return False

    def _expire(self, conn: Connection, target: Target, notes: list[outbox.Notification],
                now_ms: int) -> list[outbox.Notification]:
        limit_ms = int(target.config.give_up_s * 1000)
        keep = []
        for note in notes:
            if now_ms - note.created_ts > limit_ms:
                outbox.attempted(conn, note, label=target.label, ok=False, now_ms=now_ms, final_state="failed",
                                 detail=f"given up after {note.attempts} attempts in {target.config.give_up_s:.0f} s")
            else:
                keep.append(note)
        return keep


def send_check(targets: Sequence[NotifyTarget], *, send: Send = apprise_send) -> list[tuple[NotifyTarget, Delivery]]:
    """``gridpatrol notify test``: one test message to every target, in order."""
    out = []
    for t in targets:
        title, body = message.check_message(t.label, lang=t.lang)
        try:
            out.append((t, send(t, title, body)))
        except Exception as exc:
            out.append((t, Delivery(False, f"{type(exc).__name__}: {exc}"[:DETAIL_MAX_LEN])))
    return out
