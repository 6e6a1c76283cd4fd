"""``--workers N``: N processes (one per core), each running a ``Runner`` over its share of the
clients, reporting to the parent through a pipe.

The parent splits the clients (contiguous index ranges, so ``-n`` + index keeps client ids
unique), the ``-L`` limit of ``bench pub`` (exactly: the shares add up to it) and the ``--rate``
(in proportion to the clients). Every process uses the same start time ``t0`` (``time.monotonic``
is one clock for the whole machine), so the per-second series line up and are summed by second.

Messages, worker -> parent: ``("tick", snapshot)`` each second, ``("ready", info)`` when all of
its clients connected (or subscribed) or failed, ``("result", dict)`` at the end, ``("error",
text)``. Parent -> worker: ``("go",)`` (``-w``: every worker is ready), ``("stop", reason)``.
The parent prints the merged live line, handles Ctrl-C, and stops ``bench sub -L`` when the
workers' receive counts add up to the limit.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import selectors
import signal
import time
from typing import Any, Callable, Dict, List, Optional

from .errors import BenchError
from .runner import Options, Runner, Share


def split(opts: Options, workers: int) -> List[Share]:
    """Each worker's clients, and its part of the -L limit, --rate and connection rate (the
    flags give totals, whatever the number of processes)."""
    count = opts.count
    conn_rate = opts.conn_rate if opts.conn_rate else (
        1000.0 / opts.interval_ms if opts.interval_ms > 0 else None)
    shares = []
    offset = 0
    given = 0
    for w in range(workers):
        n = count // workers + (1 if w < count % workers else 0)
        limit: Optional[int] = None
        if opts.kind == "pub" and opts.limit:
            limit = opts.limit * (offset + n) // count - given
            given += limit
        elif opts.kind == "sub" and opts.limit and workers == 1:
            limit = opts.limit
        rate = opts.rate * n / count if opts.rate else None
        starts = conn_rate * n / count if conn_rate else None
        shares.append(Share(offset=offset, count=n, limit=limit, rate=rate, conn_rate=starts,
                            worker=w))
        offset += n
    return shares


class _Control:
    """The parent's pipe, registered in the worker's selector: ``on_ready`` reads commands."""

    def __init__(self, runner: Runner, pipe: Any) -> None:
        self.runner = runner
        self.pipe = pipe

    def on_ready(self, mask: int) -> None:
        try:
            while self.pipe.poll():
                message = self.pipe.recv()
                if message[0] == "go":
                    self.runner.go()
                elif message[0] == "stop":
                    self.runner.request_stop(message[1])
        except (EOFError, OSError):
            # The parent is gone: stop, and stop listening.
            try:
                self.runner.loop.selector.unregister(self.pipe.fileno())
            except (KeyError, ValueError, OSError):
                pass
            self.runner.request_stop("parent exited")


def _worker_main(opts: Options, share: Share, pipe: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into ("stop", ...)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        runner = Runner(opts, share, lambda kind, payload: pipe.send((kind, payload)))
        runner.loop.selector.register(pipe.fileno(), selectors.EVENT_READ, _Control(runner, pipe))
        result = runner.run()
        pipe.send(("result", result))
    except BaseException as exc:  # reported by the parent as one line, not a traceback
        try:
            pipe.send(("error", f"worker {share.worker}: {type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        pipe.close()


def run_workers(opts: Options, shares: List[Share], notify: Callable[[str, Any], None],
                interrupted: Callable[[], bool]) -> List[Dict[str, Any]]:
    """Run the shares in processes; ``notify("tick"|"ready", merged)`` reports progress."""
    methods = multiprocessing.get_all_start_methods()
    ctx: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pipes: Dict[int, Any] = {}
    procs = []
    for share in shares:
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(opts, share, child_end), daemon=True,
                           name=f"mqttfast-bench-{share.worker}")
        proc.start()
        child_end.close()
        pipes[share.worker] = parent_end
        procs.append(proc)
    n = len(shares)
    results: Dict[int, Dict[str, Any]] = {}
    errors: List[str] = []
    ticks: Dict[int, Dict[int, Dict[str, Any]]] = {w: {} for w in pipes}
    last: Dict[int, Dict[str, Any]] = {}
    ready: Dict[int, Dict[str, Any]] = {}
    printed = 0
    stop_sent = False

    def broadcast(message: tuple) -> None:
        for w, pipe in pipes.items():
            if w not in results:
                try:
                    pipe.send(message)
                except OSError:
                    pass

    try:
        while len(results) + len(errors) < n:
            waiting = [p for w, p in pipes.items() if w not in results]
            ready_pipes: List[Any] = multiprocessing.connection.wait(waiting, timeout=0.1)
            for pipe in ready_pipes:
                w = next(k for k, v in pipes.items() if v is pipe)
                try:
                    kind, payload = pipe.recv()
                except (EOFError, OSError):
                    if w not in results:
                        errors.append(f"worker {w} exited without a result")
                        results[w] = {}
                    continue
                if kind == "tick":
                    ticks[w][payload["second"]] = payload
                    last[w] = payload
                elif kind == "ready":
                    ready[w] = payload
                    if len(ready) == n:
                        total = {"ok": sum(r["ok"] for r in ready.values()),
                                 "failed": sum(r["failed"] for r in ready.values()),
                                 "clients": sum(r["clients"] for r in ready.values())}
                        notify("ready", total)
                        if opts.wait:
                            broadcast(("go",))
                elif kind == "result":
                    results[w] = payload
                elif kind == "error":
                    errors.append(payload)
                    results[w] = {}
            # The merged live line, once every running worker has reported the next second.
            while True:
                k = printed + 1
                running = [w for w in pipes if w not in results]
                if not running or not all(k in ticks[w] for w in running):
                    break
                found = [ticks[w].pop(k) if w in running else last.get(w) for w in pipes]
                snaps: List[Dict[str, Any]] = [s for s in found if s]
                merged = {key: sum(s[key] for s in snaps) for key in snaps[0]
                          if key not in ("worker", "second", "elapsed")}
                merged["elapsed"] = max(s["elapsed"] for s in snaps)
                notify("tick", merged)
                printed = k
            if not stop_sent:
                reason = None
                if interrupted():
                    reason = "interrupted"
                elif opts.kind == "sub" and opts.limit and \
                        sum(s["received"] for s in last.values()) >= opts.limit:
                    reason = "limit"
                if reason:
                    broadcast(("stop", reason))
                    stop_sent = True
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        raise
    finally:
        deadline = time.monotonic() + 5.0
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        for pipe in pipes.values():
            pipe.close()
    if errors:
        raise BenchError("; ".join(errors))
    return [results[w] for w in sorted(results)]
