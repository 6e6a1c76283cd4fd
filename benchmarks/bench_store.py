#!/usr/bin/env python
"""QoS 1 publishing with the durable SQLite store against the memory store, in the same run.

    python benchmarks/bench_store.py                 # 50,000 messages per row, 3 runs
    python benchmarks/bench_store.py --count 10000 --runs 3 --json out.json
    python benchmarks/bench_store.py --count 2000 --synchronous FULL   # an fsync per commit

It starts its own mosquitto through tests/broker.py (127.0.0.1, a free port, a quiet log) and
stops it at the end. Each row is one fresh publisher (``clean_session=False``, a new client id,
a new store file for SQLite) sending ``count`` QoS 1 messages of 64 bytes, timed from the first
call until every PUBACK came back (and, for SQLite, was committed: the last receive commits it):

- ``publish``: one ``publish()`` call per message (the SQLite store commits once per call,
  before it returns: the message is durable when ``publish`` returns);
- ``publish_many``: batches of ``--batch`` messages (one commit per batch).

A commit is one frame appended to the store's log (``--synchronous`` OFF or NORMAL, folded into
the database every ``--log-size`` bytes) or one SQLite transaction with fsync (FULL, EXTRA).

The rows of one run are interleaved (memory, SQLite, memory, SQLite), so both stores see the
same machine; the figure is SQLite's rate over the memory store's for each mode, as the median
of the runs with the spread (min..max). The goal of issue 9 is >= 0.5x.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TESTS = os.path.join(REPO, "tests")
for path in (REPO, TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)

import mqttfast  # noqa: E402
from broker import Mosquitto  # noqa: E402  (tests/broker.py)
from client_support import QUIET_LOG  # noqa: E402

MODES = ("publish", "publish_many")
STORES = ("memory", "sqlite")


@dataclass(frozen=True)
class Options:
    count: int = 50_000
    runs: int = 3
    batch: int = 1000
    timeout: float = 120.0
    synchronous: str = "NORMAL"
    log_size: int = mqttfast.sqlite_store.LOG_SIZE
    json_path: Optional[str] = None


def one_row(port: int, store_name: str, mode: str, options: Options, directory: str,
            tag: str) -> float:
    """Messages per second of one publisher."""
    store: Any = None
    if store_name == "sqlite":
        store = mqttfast.SQLiteStore(os.path.join(directory, f"{tag}.db"),
                                     synchronous=options.synchronous, log_size=options.log_size)
    client = mqttfast.Client(f"bench-store-{tag}", clean_session=False, store=store)
    client.connect("127.0.0.1", port)
    payload = b"x" * 64
    topic = f"bench/store/{tag}"
    try:
        start = time.perf_counter()
        handles: List[Any] = []
        if mode == "publish":
            publish = client.publish
            handles = [publish(topic, payload, 1) for _ in range(options.count)]
        else:
            left = options.count
            while left:
                n = min(options.batch, left)
                handles.extend(client.publish_many(topic, [payload] * n, 1).handles)
                left -= n
        deadline = time.perf_counter() + options.timeout
        for handle in handles:
            if not handle.wait(max(0.0, deadline - time.perf_counter())):
                raise RuntimeError(f"{store_name}/{mode}: not acknowledged: {handle!r}")
        elapsed = time.perf_counter() - start
    finally:
        client.disconnect()
        if store is not None:
            left_rows = len(store.outgoing) + len(store.pending)
            store.close()
            if left_rows:
                raise RuntimeError(f"{left_rows} publishes left in the store")
    return options.count / elapsed


def measure(options: Options) -> Dict[str, Any]:
    directory = tempfile.mkdtemp(prefix="bench-store-")
    broker = Mosquitto(directory=os.path.join(directory, "broker"), log_types=QUIET_LOG,
                       max_inflight_messages=0, max_queued_messages=0).start()
    rates: Dict[str, Dict[str, List[float]]] = {m: {s: [] for s in STORES} for m in MODES}
    try:
        for run in range(options.runs):
            for mode in MODES:
                for store_name in STORES:
                    tag = f"{run}-{mode}-{store_name}-{os.getpid()}"
                    rates[mode][store_name].append(
                        one_row(broker.port, store_name, mode, options, directory, tag))
    finally:
        broker.stop()
    result: Dict[str, Any] = {"options": options.__dict__, "rates": rates, "ratios": {}}
    for mode in MODES:
        ratios = [s / m for s, m in zip(rates[mode]["sqlite"], rates[mode]["memory"], strict=True)]
        result["ratios"][mode] = ratios
    return result


def report(result: Dict[str, Any]) -> List[str]:
    opts = result["options"]
    lines = [f"QoS 1, {opts['count']:,} messages of 64 B per row, {opts['runs']} runs, "
             f"publish_many batches of {opts['batch']}, synchronous={opts['synchronous']}, "
             f"log_size={opts['log_size']:,}"]
    for mode in MODES:
        rates = result["rates"][mode]
        ratios = result["ratios"][mode]
        lines.append(
            f"{mode:13s} memory {statistics.median(rates['memory']):9,.0f} msg/s   "
            f"sqlite {statistics.median(rates['sqlite']):9,.0f} msg/s   "
            f"sqlite/memory {statistics.median(ratios):.2f}x "
            f"(spread {min(ratios):.2f}..{max(ratios):.2f})")
    return lines


def parse(argv: Optional[List[str]] = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=Options.count)
    p.add_argument("--runs", type=int, default=Options.runs)
    p.add_argument("--batch", type=int, default=Options.batch)
    p.add_argument("--timeout", type=float, default=Options.timeout)
    p.add_argument("--synchronous", default=Options.synchronous,
                   choices=("OFF", "NORMAL", "FULL", "EXTRA"))
    p.add_argument("--log-size", type=int, default=Options.log_size)
    p.add_argument("--json", dest="json_path")
    a = p.parse_args(argv)
    return Options(a.count, a.runs, a.batch, a.timeout, a.synchronous, a.log_size, a.json_path)


def main(argv: Optional[List[str]] = None) -> int:
    options = parse(argv)
    result = measure(options)
    for line in report(result):
        print(line)
    if options.json_path:
        with open(options.json_path, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
