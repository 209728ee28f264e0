"""Notifications through the real alarm book, the real notifier and Apprise, to real local receivers.

Alarms are raised as ingest raises them (the book's ``events_stored``);
messages go out through Apprise's ``json://`` to HTTP servers of the test's own.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator
from zoneinfo import ZoneInfo

import pytest

from central.alarms import AlarmBook
from central.config import NotifyTarget
from central.notify import message, route
from central.notify.notifier import Delivery, Notifier
from central.plan.parse import parse_plan_bytes
from central.plan.registry import PlanRegistry
from central.store import Store, notifications
from central.store.dashboard import StoreReader
from central.store.notifications import StepFact
from tests.central.http_fakes import Receiver
from tests.support import free_port, wait_until
from tests.web.conftest import PLAN

TZ = ZoneInfo("Asia/Shanghai")
GATE = "school-9-gate-1"  # in grid chengzhou-g1, community chengzhou
OTHER_GATE = "school-3-gate-1"  # in grid xinxing-g1


@dataclass
class Desk:
    path: Path
    plans: PlanRegistry
    book: AlarmBook
    _n: itertools.count[int]

    def raise_alarm(self, agent: str = GATE, source: str = "office-panic", kind: str = "panic") -> int:
        now = int(time.time() * 1000)
        self.book.events_stored([SimpleNamespace(agent=agent, source=source, kind=kind, ts_est=now, received_ts=now,
                                                 eseq=next(self._n), epoch="")])
        return max(a.id for a in self.book.alarms(include_all=True) if a.agent == agent and a.source == source)

    def notifier(self, *targets: NotifyTarget, **kw: object) -> Notifier:
        return Notifier(Store(self.path), targets=targets, plans=self.plans, tz=TZ, public_url="https://gp.example", **kw)  # type: ignore[arg-type]

    def trail(self, alarm_id: int) -> list[dict[str, object]]:
        alarm = StoreReader(self.path).alarm(alarm_id)
        assert alarm is not None
        return alarm["trail"]


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    plans = PlanRegistry.for_data_dir(tmp_path)
    plans.add(parse_plan_bytes(PLAN.encode()))
    path = tmp_path / "central.db"
    book = AlarmBook(path, plans=plans)
    try:
        yield Desk(path, plans, book, itertools.count(1))
    finally:
        book.close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    try:
        yield made
    finally:
        for r in made:
            r.stop()


def receiver(receivers: list[Receiver], port: int = 0) -> Receiver:
    r = Receiver(port)
    receivers.append(r)
    return r


# --- who is told: pure ---------------------------------------------------------------


def _step(action: str, unit: str | None, *, kind: str = "panic", with_ack: bool = False) -> StepFact:
    return StepFact(rowid=1, alarm_id=7, ts=0, unit=unit, action=action, agent=GATE, source="office-panic", kind=kind,
                    alarm_unit="chengzhou-g1", raised_ts=0, acked_by="Lin", with_ack=with_ack, with_resolve=False)


def test_a_target_is_told_when_an_alarm_reaches_its_units_tier() -> None:
    plan = parse_plan_bytes(PLAN.encode())
    grid, community, root, other = route.targets_of([
        NotifyTarget(url="json://g", unit="chengzhou-g1"), NotifyTarget(url="json://c", unit="chengzhou"),
        NotifyTarget(url="json://r"), NotifyTarget(url="json://x", unit="xinxing", kinds=frozenset({"alarm"}))])
    everyone = (grid, community, root, other)
    nobody_told = lambda alarm_id, key: False  # noqa: E731
    assert route.recipients(_step("raise", "chengzhou-g1"), everyone, plan, nobody_told) == [grid]
    assert route.recipients(_step("escalate", "chengzhou"), everyone, plan, nobody_told) == [community]
    assert route.recipients(_step("escalate", "fengze"), everyone, plan, nobody_told) == [root]
    # An agent the plan does not know: its alarm has no unit, the root answers for it.
    assert route.recipients(_step("raise", None), everyone, plan, nobody_told) == [root]
    assert route.recipients(_step("raise", "xinxing", kind="panic"), everyone, plan, nobody_told) == []  # kinds
    assert route.recipients(_step("raise", "xinxing", kind="alarm"), everyone, plan, nobody_told) == [other]
    told_grid = lambda alarm_id, key: key == grid.key  # noqa: E731
    assert route.recipients(_step("ack", "chengzhou"), everyone, plan, told_grid) == [grid]
    assert route.recipients(_step("resolve", "chengzhou", with_ack=True), everyone, plan, told_grid) == []
    assert route.recipients(_step("resolve", "chengzhou"), everyone, plan, told_grid) == [grid]


def test_a_message_says_what_where_when_and_links_the_alarm() -> None:
    plan = parse_plan_bytes(PLAN.encode())
    raised = int(dt.datetime(2026, 12, 6, 22, 31, 5, tzinfo=TZ).timestamp() * 1000)
    step = StepFact(rowid=3, alarm_id=12, ts=raised + 120_000, unit="chengzhou", action="escalate", agent=GATE,
                    source="office-panic", kind="panic", alarm_unit="chengzhou-g1", raised_ts=raised, acked_by=None,
                    with_ack=False, with_resolve=False)
    title, body = message.render(step, lang="zh-CN", plan=plan, tz=TZ, public_url="https://gp.example/")
    assert title == "【紧急求助】第九中学东门 · 已升级至城洲社区 (社区)"
    assert body.splitlines() == [
        "告警: 紧急求助 · 输入 office-panic · 告警 #12",
        "地点: 丰泽区 / 泉秀街道 / 城洲社区 / 城洲第一网格",
        "设备: 第九中学东门 (school-9-gate-1)",
        "时间: 2026-12-06 22:31:05 (Asia/Shanghai)",
        "进展: 已升级至城洲社区 (社区) 22:33:05",
        "查看: https://gp.example/alarms/12",
    ]
    title, body = message.render(step, lang="en", plan=plan, tz=TZ, public_url=None)
    assert title == "[Panic] 第九中学东门: escalated to 城洲社区 (community)"
    assert "When: 2026-12-06 22:31:05 (Asia/Shanghai)" in body and "Open:" not in body


# --- delivery --------------------------------------------------------------------------


def test_a_restart_resends_what_was_not_sent_and_the_trail_shows_every_attempt(desk: Desk, receivers: list[Receiver]) -> None:
    port = free_port()
    target = NotifyTarget(url=f"json://127.0.0.1:{port}/alarms", unit="chengzhou-g1", name="grid duty phone")
    first = desk.notifier(target, retry_first_s=0.2, retry_max_s=0.5)
    first.start()
    alarm_id = desk.raise_alarm()
    wait_until(lambda: sum(s["action"] == "notify-failed" for s in desk.trail(alarm_id)) >= 2, timeout=15,
               message="two failed attempts in the trail")
    first.close()  # central stops with the message unsent

    up = receiver(receivers, port).start()
    second = desk.notifier(target)
    second.start()
    try:
        got = wait_until(up.received, timeout=10, message="the message after the restart")
        assert got[0].title == "【紧急求助】第九中学东门 · 新告警"
        wait_until(lambda: any(s["action"] == "notify-sent" for s in desk.trail(alarm_id)), timeout=5)
    finally:
        second.close()
    assert len(up.received()) == 1  # once, not once per start
    notes = [s for s in desk.trail(alarm_id) if str(s["action"]).startswith("notify")]
    assert all(s["target"] == "grid duty phone" for s in notes)
    assert [s["action"] for s in notes][-1] == "notify-sent"
    assert all(s["action"] == "notify-failed" for s in notes[:-1]) and len(notes) >= 3
    assert notes[0]["detail"] == "A Connection error occurred sending JSON notification to 127.0.0.1."


def test_a_message_never_delivered_is_given_up_and_says_so(desk: Desk) -> None:
    target = NotifyTarget(url=f"json://127.0.0.1:{free_port()}/x", unit="chengzhou-g1", give_up_s=1.0)
    notifier = desk.notifier(target, retry_first_s=0.2, retry_max_s=0.4)
    notifier.start()
    try:
        alarm_id = desk.raise_alarm()
        last = wait_until(lambda: [s for s in desk.trail(alarm_id) if str(s.get("detail", "")).startswith("given up")],
                          timeout=10, message="the give-up in the trail")
    finally:
        notifier.close()
    assert re.fullmatch(r"given up after \d+ attempts in 1 s", str(last[0]["detail"]))


def test_acknowledgement_goes_to_those_told_and_a_panics_ack_is_one_message(desk: Desk, receivers: list[Receiver]) -> None:
    grid, community = receiver(receivers).start(), receiver(receivers).start()
    notifier = desk.notifier(NotifyTarget(url=grid.url(), unit="chengzhou-g1"),
                             NotifyTarget(url=community.url(), unit="chengzhou", lang="en"))
    notifier.start()
    try:
        alarm_id = desk.raise_alarm()
        wait_until(grid.received, timeout=5)
        desk.book.acknowledge(alarm_id, "Lin")
        got = wait_until(lambda: len(grid.received()) >= 2 and grid.received(), timeout=5)
        assert got[1].title == "【紧急求助】第九中学东门 · 已由Lin确认并解除"
        assert "https://gp.example/alarms/%d" % alarm_id in got[1].body
    finally:
        notifier.close()
    assert community.received() == []  # never told of it: it never reached the community
    assert len(grid.received()) == 2


def test_a_cursor_above_the_last_step_comes_down_so_no_new_step_is_missed(desk: Desk, receivers: list[Receiver],
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    grid = receiver(receivers).start()
    notifier = desk.notifier(NotifyTarget(url=grid.url(), unit="chengzhou-g1"))
    try:
        with closing(Store(desk.path).connect()) as conn:
            notifications.record(conn, 1000, (), 0)  # as if the top of alarm_steps had been deleted
        assert notifier.route_once() == 0
        assert "below the cursor 1000: cursor moved back" in caplog.text
        desk.raise_alarm()
        assert notifier.route_once() == 1
    finally:
        notifier.close()


def test_a_burst_beyond_the_rate_is_one_summary_and_the_rate_counts_it(desk: Desk) -> None:
    sent: list[tuple[str, str]] = []

    def send(target: NotifyTarget, title: str, body: str) -> Delivery:
        sent.append((title, body))
        return Delivery(True, "sent")

    notifier = desk.notifier(NotifyTarget(url="json://unused", unit="chengzhou-g1", rate_per_min=5), send=send)
    (target,) = notifier.targets
    try:
        for i in range(12):
            desk.raise_alarm(source=f"zone-{i}", kind="alarm")
        assert notifier.route_once() == 12
        assert notifier.deliver_once(target) == 0.0
        assert notifier.deliver_once(target) is None  # nothing left
        (title, body), = sent
        assert title == "【告警汇总】12 条通知"
        assert body.splitlines()[0] == "通知过于频繁，以下合并为一条："
        assert len(body.splitlines()) == 1 + 10 + 2  # ten titles, the rest counted, the dashboard's link
        assert body.splitlines()[-2:] == ["……另有 2 条，请到值班台查看", "查看: https://gp.example/"]
        for i in range(12, 16):
            desk.raise_alarm(source=f"zone-{i}", kind="alarm")
        notifier.route_once()
        notifier.deliver_once(target)
        assert len(sent) == 5  # four single messages: the summary took one of the five
        for i in range(16, 18):
            desk.raise_alarm(source=f"zone-{i}", kind="alarm")
        notifier.route_once()
        wait = notifier.deliver_once(target)
        assert len(sent) == 5 and wait is not None and 59 < wait <= 60  # until the summary leaves the window
        trail = desk.trail(1)
        assert [(s["action"], s["detail"]) for s in trail if s.get("target")] == [("notify-sent", "sent")]
    finally:
        notifier.close()


@pytest.mark.slow
def test_a_hundred_alarms_in_a_minute_are_a_handful_of_messages(desk: Desk, receivers: list[Receiver]) -> None:
    first, second = receiver(receivers).start(), receiver(receivers).start()
    notifier = desk.notifier(NotifyTarget(url=first.url(), unit="chengzhou-g1", rate_per_min=5),
                             NotifyTarget(url=second.url(), unit="chengzhou-g1", rate_per_min=5, lang="en"))
    notifier.start()
    started = time.time()
    try:
        for i in range(100):  # spread over 20 s, as a storm of trips along a fence arrives
            desk.raise_alarm(source=f"zone-{i}", kind="alarm")
            time.sleep(0.2)
        raised_in = time.time() - started

        def carried(r: Receiver) -> int:
            return sum(int(m.group(1)) if (m := re.search(r"(\d+)", x.title)) and "汇总" in x.title or "summary" in x.title
                       else 1 for x in r.received())

        wait_until(lambda: carried(first) == 100 and carried(second) == 100, timeout=75, interval=0.5,
                   message="every alarm carried, one by one or in a summary")
    finally:
        notifier.close()
    assert raised_in < 60
    for r in (first, second):
        got = r.received()
        assert len(got) <= 6, [m.title for m in got]
        # No 60 s holds more than the rate.
        times = [m.at for m in got]
        assert all(sum(1 for u in times if t <= u < t + 59.5) <= 5 for t in times)
    assert any("汇总" in m.title for m in first.received())
    assert any("summary" in m.title for m in second.received())
