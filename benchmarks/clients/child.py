"""One contender in its own interpreter: ``python -m clients.child SPEC_JSON``.

The spec (a JSON object) names a ``role`` (``publish``, ``receive`` or, for the raw tools only,
``subscriber``), a ``client`` (``raw``, ``mqttfast``, ``paho``, ``gmqtt``, ``mqttium``,
``awscrt``, ``zmqtt``) and the run's parameters (``host``, ``port``, ``topic``, ``n``, ``qos``,
``protocol`` (4: MQTT 3.1.1, 5: MQTT 5), ``payload_size``, ``variant``, ``client_id``,
``window`` (``null``: the client's own default), ``timeout``...).

Protocol with the parent, one JSON object a line on stdout::

    {"event": "ready", ...}     connected (and subscribed, for receivers): the parent may start
    {"event": "result", ...}    the measurement: times are ``time.perf_counter()`` values, which
                                on Linux read CLOCK_MONOTONIC and so compare across processes
    {"event": "error", "error": "..."}
    {"event": "unsupported", "reason": "..."}   the client cannot do this scenario (and why)

and on stdin: ``go`` (start publishing), ``stop`` (give up: report what you have); end of input
counts as ``stop``. Nothing is printed per message.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List

perf_counter = time.perf_counter


class Stopped(Exception):
    """The parent said ``stop`` (or went away) before ``go``."""


class Unsupported(Exception):
    """The client cannot do what the spec asks; the message says why (reported, not a crash)."""


class Control:
    """The child's end of the conversation with the parent."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._go = threading.Event()
        self._on_stop: List[Callable[[], Any]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name="bench-control", daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            word = line.strip()
            if word == "go":
                self._go.set()
            elif word == "stop":
                break
        self._stopped()

    def _stopped(self) -> None:
        with self._lock:
            self.stop.set()
            self._go.set()
            callbacks = list(self._on_stop)
        for fn in callbacks:
            try:
                fn()
            except Exception:  # the loop it would wake may be gone already
                pass

    def on_stop(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` (from the control thread) when the parent says stop."""
        with self._lock:
            self._on_stop.append(fn)
            stopped = self.stop.is_set()
        if stopped:
            fn()

    def wait_go(self, timeout: float = 60.0) -> None:
        if not self._go.wait(timeout):
            raise TimeoutError(f"no 'go' from the parent within {timeout} s")
        if self.stop.is_set():
            raise Stopped()

    @staticmethod
    def emit(event: str, **fields: Any) -> None:
        fields["event"] = event
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    def ready(self, **fields: Any) -> None:
        self.emit("ready", pid=os.getpid(), **fields)

    def result(self, **fields: Any) -> None:
        self.emit("result", **fields)


def received(ctl: Control, state: Any, n: int, timed_out: bool, **info: Any) -> None:
    """A receiver's result from its ``[count, t_first, t_last]`` (taken before disconnecting,
    so nothing that arrives during the disconnect counts)."""
    count, t_first, t_last = state
    ctl.result(received=count, t_first=t_first, t_last=t_last, ok=count >= n,
               timed_out=timed_out, **info)


async def until_set(ctl: Control, done: Any, timeout: float, **info: Any) -> bool:
    """An asyncio receiver: say ready, then wait for ``done`` (an ``asyncio.Event`` the counting
    callback sets at the N-th message; the parent's ``stop`` sets it too). True if ``timeout``
    passed first."""
    import asyncio

    loop = asyncio.get_running_loop()
    ctl.on_stop(lambda: loop.call_soon_threadsafe(done.set))
    ctl.ready(**info)
    return await until_done(done, timeout)


async def until_go(ctl: Control, done: Any, timeout: float, **info: Any) -> float:
    """An asyncio backlog runner, its session subscribed and offline: say ready, wait (in a
    thread) for the parent's ``go``, which comes once the broker holds the feed, and return the
    time just after it (``t0``). The parent's ``stop`` sets ``done`` from then on."""
    import asyncio

    loop = asyncio.get_running_loop()
    ctl.on_stop(lambda: loop.call_soon_threadsafe(done.set))
    ctl.ready(**info)
    await loop.run_in_executor(None, ctl.wait_go, timeout)
    return time.perf_counter()


async def until_done(done: Any, timeout: float) -> bool:
    """Wait for ``done`` (an ``asyncio.Event``); True if ``timeout`` passed first."""
    import asyncio

    try:
        await asyncio.wait_for(done.wait(), timeout)
    except asyncio.TimeoutError:
        return True
    return False


SESSION_EXPIRY = 3600  # s: the backlog runs' MQTT 5 sessions outlive the priming connection


def payload_of(size: int) -> bytes:
    """The benchmark payload: ``size`` printable bytes (the same for every client)."""
    return bytes(33 + i % 94 for i in range(size))


def run(spec: Dict[str, Any]) -> int:
    ctl = Control()
    if spec.get("event_loop") == "uvloop":  # bench_aio.py: the asyncio runners on uvloop
        import asyncio

        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    client = spec["client"]
    role = spec["role"]
    try:
        if client == "raw":
            from . import wire as module
        elif client == "mqttfast":
            from . import run_mqttfast as module  # type: ignore[no-redef]
        elif client == "paho":
            from . import run_paho as module  # type: ignore[no-redef]
        elif client == "gmqtt":
            from . import run_gmqtt as module  # type: ignore[no-redef]
        elif client == "mqttium":
            from . import run_mqttium as module  # type: ignore[no-redef]
        elif client == "awscrt":
            from . import run_awscrt as module  # type: ignore[no-redef]
        elif client == "zmqtt":
            from . import run_zmqtt as module  # type: ignore[no-redef]
        elif client == "mqttfast_aio":
            from . import run_mqttfast_aio as module  # type: ignore[no-redef]
        elif client == "aiomqtt":
            from . import run_aiomqtt as module  # type: ignore[no-redef]
        else:
            raise ValueError(f"unknown client {client!r}")
        fn = getattr(module, role, None)
        if fn is None:
            raise ValueError(f"client {client!r} has no role {role!r}")
    except ImportError as e:
        ctl.emit("error", error=f"not installed: {e}")
        return 2
    except Exception as e:
        ctl.emit("error", error=f"{type(e).__name__}: {e}")
        return 2
    try:
        fn(spec, ctl)
    except Stopped:
        ctl.emit("error", error="stopped by the parent before it started")
        return 1
    except Unsupported as e:
        ctl.emit("unsupported", reason=str(e))
        return 0
    except BaseException as e:
        tb = traceback.format_exc(limit=6)
        sys.stderr.write(tb)
        ctl.emit("error", error=f"{type(e).__name__}: {e}", traceback=tb)
        return 1
    return 0


def main() -> int:
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    # Run the importable copy of this module (``clients.child``), not ``__main__``: the runners
    # import their Control and Unsupported from it, and ``except Unsupported`` must be theirs.
    from clients import child
    code = child.run(json.loads(sys.argv[1]))
    sys.stdout.flush()
    # Do not linger in library shutdown code (non-daemon threads, atexit hooks): the result is out.
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
