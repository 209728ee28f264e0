"""``gridpatrol agent --config agent.toml``: run one edge agent until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from agent.config import load_config
from agent.runtime import Agent
from gridpatrol.base.systemd import SystemdNotifier, supervise

_LOGGER = logging.getLogger(__name__)


def run_agent(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # ConfigError: the command line makes it exit 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _LOGGER.info("%s: shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent = Agent(config)
        try:
            agent.start()
            # Ready, then healthy, while every thread goes round: the input loop, the
            # MQTT session, each serial reader and microcontroller link (Agent.heartbeats).
            supervise(stop, agent.heartbeats, notifier=SystemdNotifier(), name=f"agent {config.agent_id}")
        finally:
            agent.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
