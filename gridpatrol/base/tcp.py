"""TCP_NODELAY on an MQTT client's broker connection, for agent and central.

paho leaves Nagle's algorithm on. With it, a small packet waits while an
earlier one is unacknowledged, and the other side delays its TCP
acknowledgements (up to 40 ms on Linux): an alarm's PUBLISH waited behind the
previous packet's delayed ack. Measured with bench/bench_latency.py: central's
part of an alarm's latency went from a p99 of about 50 ms to about 16 ms, and
the agent's from a p50 of about 32 ms to a few ms.

A leaf module: agent and central both use it and never import each other.
"""

from __future__ import annotations

import socket
from typing import Any


def no_delay(client: Any, userdata: Any, sock: Any) -> None:
    """paho's ``on_socket_open`` callback: switch Nagle off on a TCP socket."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (a Unix socket, say): nothing to do
        pass
