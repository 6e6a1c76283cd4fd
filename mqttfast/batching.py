"""Reading in batches: a socket low-water mark (``SO_RCVLOWAT``) sized to the incoming rate.

mosquitto sends every message with a send() of its own. A reader that is faster than the broker
wakes up for each one, and each wake-up costs the broker too (the kernel work of waking a
sleeping reader runs in the sender's context). Measured on loopback, 200,000 QoS 0 messages
of 64 B to one reader: woken for every segment, 164,000 reads and 2.0 s of broker CPU; with a
16 KiB low-water mark, 1,500 reads, 1.6 s, and 1.3-1.4x the messages a second.

Only where nothing is owed back: a read that makes the client answer (QoS 1/2 acknowledgements)
turns batching off, since the broker may hold its next messages until the answer comes.

So when bytes arrive faster than ``MIN_LOWAT`` per half ``delay``, the reader asks the kernel not
to wake it before about half a ``delay``'s worth of them wait (the recent rate x ``delay`` / 2, at
most ``MAX_LOWAT``), and a timer bounds the wait: when nothing was read for ``delay`` the mark drops
back to 1 (lowering it wakes the reader if anything waits). Slower traffic never waits.

Sans-IO: ``ReadBatcher`` decides; the loops set the socket option and run the timer.
"""
from __future__ import annotations

import socket
from typing import Any, Optional

DEFAULT_READ_DELAY = 0.0  # the clients' max_read_delay: off unless asked (see the README)
MAX_READ_DELAY = 1.0  # s: the longest max_read_delay accepted
ANSWERED_HOLD = 100  # delays without batching after a read we answered
MIN_LOWAT = 1024  # below this per delay, batching saves too little to be worth the wait
MAX_LOWAT = 64 * 1024  # well under one read's buffer (RECV_SIZE)
_SO_RCVLOWAT: Optional[int] = getattr(socket, "SO_RCVLOWAT", None)


class ReadBatcher:
    """The low-water mark of one connection's socket: ``read()`` after every read, ``tail()``
    from the timer at ``due()``. Both return the mark to set now, or 0 to leave it."""

    __slots__ = ("delay", "lowat", "last_read", "_start", "_bytes", "_resume", "_idle",
                 "_answered_until")

    def __init__(self, delay: float, now: float = 0.0) -> None:
        self.delay = delay
        self.lowat = 1  # what the socket has now
        self.last_read = now
        self._start = now  # the rate is measured over windows of at least ``delay``
        self._bytes = 0
        self._resume = 0  # the mark the timer dropped, to put back after the read it lets in
        self._idle = False  # no full read since the timer last fired
        self._answered_until = now  # no batching before: we answered the broker lately

    def read(self, nbytes: int, now: float) -> int:
        self.last_read = now
        resume = self._resume
        if resume:
            # The read the timer's drop let in; then the mark goes back at once. Not reading
            # delays our ACKs, and mosquitto (Nagle on) holds its small sends until the ACK:
            # so the flow pauses for the timer and resumes after this read, with what the
            # broker gathered meanwhile (which is what makes its sends cheaper).
            self._resume = 0
            self.lowat = resume
            return resume
        if nbytes >= self.lowat > 1:
            self._idle = False
        if now < self._answered_until:  # an acknowledged flow: reads that end mid-packet too
            self._start, self._bytes = now, 0
            return 0
        self._bytes += nbytes
        elapsed = now - self._start
        if elapsed < self.delay:
            return 0
        # Half a delay's worth at the recent rate: reads come about every delay / 2 while the
        # flow lasts, and the timer (a delay after the last read) when it pauses or stops.
        want = int(self._bytes * self.delay / (2 * elapsed))
        self._start, self._bytes = now, 0
        want = 1 if want < MIN_LOWAT else min(want, MAX_LOWAT)
        lowat = self.lowat
        if want == lowat or (want > 1 and lowat > 1 and 4 * abs(want - lowat) < lowat):
            return 0  # a change under 25%: not worth a system call
        self.lowat = want
        self._idle = False
        return want

    def answered(self, now: float) -> int:
        """The last read made us answer (PUBACK, PUBREC, ...): the broker may be waiting for
        that answer before it sends more (its in-flight window: mosquitto's is 20 messages), so
        waiting for more bytes would stall the flow until the timer. Read as it comes: the mark
        goes to 1 (returns 1 when it was above) and the rate window restarts, so a flow of
        acknowledged messages never batches."""
        self._start, self._bytes = now, 0
        self._resume = 0
        self._idle = False
        self._answered_until = now + ANSWERED_HOLD * self.delay
        if self.lowat > 1:
            self.lowat = 1
            return 1
        return 0

    def due(self) -> Optional[float]:
        """When the timer must look at the mark (None: it is 1, nothing can wait)."""
        return self.last_read + self.delay if self.lowat > 1 else None

    def tail(self, now: float) -> int:
        """The timer: 1 when nothing was read for ``delay`` (drop the mark to 1 now), else 0.
        Twice in a row without a full read in between, the flow has stopped: the mark stays
        at 1 until the rate says otherwise."""
        if self.lowat > 1 and now - self.last_read >= self.delay * 0.999:
            if not self._idle:
                self._resume = self.lowat
            self._idle = True
            self.lowat = 1
            self._start, self._bytes = now, 0
            return 1
        return 0


def check_read_delay(delay: float) -> float:
    """A client's ``max_read_delay``: seconds, >= 0 and at most 1 (a bad one raises)."""
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise TypeError(f"max_read_delay must be a number of seconds, not {type(delay).__name__}")
    if not 0 <= delay <= MAX_READ_DELAY:  # also refuses NaN
        raise ValueError(f"max_read_delay must be between 0 and {MAX_READ_DELAY:g} second, "
                         f"not {delay!r}")
    return float(delay)


def set_lowat(sock: Any, lowat: int) -> bool:
    """Set ``SO_RCVLOWAT``; False where the platform refuses it (then do not batch)."""
    if _SO_RCVLOWAT is None or sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, lowat)
    except (OSError, ValueError, AttributeError):
        return False
    return True


def batcher_for(sock: Any, delay: float, now: float) -> Optional[ReadBatcher]:
    """A batcher for a TCP socket that takes the option (None: read every segment at once).
    Setting the mark to 1, its default, is the probe."""
    if delay <= 0 or not set_lowat(sock, 1):
        return None
    return ReadBatcher(delay, now)


__all__ = ["DEFAULT_READ_DELAY", "MAX_LOWAT", "MAX_READ_DELAY", "MIN_LOWAT", "ReadBatcher", "batcher_for",
           "check_read_delay", "set_lowat"]
