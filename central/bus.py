"""An in-process notice board between central's threads and its web server.

Ingest, presence and alarms run on threads; the dashboard's live stream runs on
an asyncio loop. Publishers call :meth:`Bus.publish` from any thread and never
block; each subscriber gets every notice through its own callback, which must
itself return at once (an asyncio subscriber hands the notice on with
``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

_LOGGER = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class Notice:
    """``topic`` is one of ``event``, ``alarm``, ``presence``, ``completion``, ``plan``; ``events-skipped``
    (``count`` events not sent live: past the bus bridge's budget, central/app.py); or ``resync``: notices
    were lost on their way here (a group's feed, central/feed.py) and whoever keeps a view reads it again."""

    topic: str
    data: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Notice], None]


class Bus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = ()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

        return unsubscribe

    @property
    def listened(self) -> bool:
        """Whether anyone subscribes now: a publisher may skip building notices nobody would get."""
        return bool(self._subscribers)

    def publish(self, topic: str, data: dict[str, Any] | None = None) -> None:
        notice = Notice(topic, data or {})
        for subscriber in self._subscribers:  # a snapshot: the tuple is replaced, never mutated
            try:
                subscriber(notice)
            except Exception:
                _LOGGER.exception("bus subscriber failed on %s notice", topic)
