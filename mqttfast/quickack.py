"""Prompt TCP acknowledgements: ``TCP_QUICKACK`` after every read, for fan-out subscribers.

A client that sends a packet just after receiving one (SUBSCRIBE after CONNACK) puts its socket
in the kernel's interactive mode, where acknowledgements wait to ride on the next reply, and a
subscriber never replies. Measured through mosquitto 2.0 on loopback, on a Linux VM whose TCP
congestion control is BBR (``benchmarks/bench_scale.py --only fan-out``): a burst that follows
the subscriptions of 2, 10 and 100 ``bench sub`` subscribers reached them at 1.5-2.2x the
deliveries a second with an immediate acknowledgement after each read, and mosquitto's CPU per
delivery fell from 3.0 to 1.4 us (without, perf put most of its time inside ``tcp_write_xmit``,
in a stretch with interrupts off that its sampling clock cannot see into). One fast subscriber
is better off without it: there the extra acknowledgements cost the broker more than they save
(0.80-0.90x the messages a second). Hence off by default in the clients; ``mqttfast bench sub``
turns it on when it drives more than one connection.

Linux only; elsewhere (no ``TCP_QUICKACK``) the option does nothing. The kernel forgets the
setting on its own, so it is set again after each read: one system call per read, not per message.
"""
from __future__ import annotations

import socket
from typing import Optional

TCP_QUICKACK: Optional[int] = getattr(socket, "TCP_QUICKACK", None)


def check_quickack(value: object) -> bool:
    """The ``quickack`` option as given, or TypeError: only a bool means what it says."""
    if not isinstance(value, bool):
        raise TypeError(f"quickack must be True or False, not {value!r}")
    return value


def available(sock: Optional[socket.socket]) -> bool:
    """Whether ``sock`` can take the option: a TCP socket on a platform that has it."""
    return (TCP_QUICKACK is not None and sock is not None
            and sock.family in (socket.AF_INET, socket.AF_INET6))


def ack_now(sock: socket.socket) -> bool:
    """Acknowledge what was read at once, and leave interactive mode; False if the socket
    refused (then stop asking)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    return True
