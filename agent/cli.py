"""``gridpatrol agent --config agent.toml``: run one edge agent until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from agent.config import load_config
from agent.runtime import Agent
from gridpatrol.systemd import SystemdNotifier

_LOGGER = logging.getLogger(__name__)

# How often the main thread looks at the agent's health when systemd has no
# watchdog for it (it still logs a stall).
HEALTH_CHECK_S = 5.0


def run_agent(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # ConfigError: the command line makes it exit 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _LOGGER.info("%s: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    notifier = SystemdNotifier()
    try:
        agent = Agent(config)
        try:
            agent.start()
            notifier.ready()
            interval = notifier.watchdog_interval_s or HEALTH_CHECK_S
            stalled = False
            while not stop.wait(interval):
                if agent.healthy():
                    if stalled:
                        _LOGGER.info("agent threads are going round again")
                    stalled = False
                    if notifier.watchdog_interval_s is not None:
                        notifier.watchdog()
                elif not stalled:
                    # No ping: systemd's watchdog restarts us if this lasts.
                    stalled = True
                    _LOGGER.error("an agent thread is stalled: watchdog pings withheld")
            notifier.stopping()
        finally:
            agent.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
