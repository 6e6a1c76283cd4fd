#!/usr/bin/env python
"""QoS 1 publishing stays linear: the per-message time of N publishes against that of N/10.

    python benchmarks/bench_linear_qos1.py                  # N = 1,000,000 against 100,000
    python benchmarks/bench_linear_qos1.py --count 20000    # a smoke run (N/10 = 2,000)
    python benchmarks/bench_linear_qos1.py --json out.json

It starts its own mosquitto through tests/broker.py (127.0.0.1, a free port, a log of connections
only, ``max_queued_messages 0`` so the broker drops nothing for a slow subscriber) and stops it at
the end. One mqttfast client subscribes at QoS 0 and counts; another (``max_inflight=65535``)
publishes the reference batch (N/10 messages) and then the N batch with ``publish_many(qos=1)``.
A batch's time runs from the call until every PUBACK came back and the subscriber counted all N.
The figure is the ratio of the two per-message times, measured in the same run: about 1 means
linear; an O(inflight) step per acknowledgement shows as a ratio well above 1. The run fails
(exit status 1) when a message is lost or duplicated, or when the ratio exceeds ``--max-ratio``
(default 3).

This was ``test_million_qos1_publishes_linear`` in tests/test_client_scale.py: a wall-clock check
of a million messages is a benchmark, not a unit test. On a 2-core machine the broker, the
publisher and the subscriber share the cores: compare ratios, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from dataclasses import asdict, dataclass
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

TOPIC = "bench/linear-qos1"


@dataclass(frozen=True)
class Options:
    count: int = 1_000_000
    reference: int = 0  # 0: count // 10
    max_ratio: float = 3.0
    timeout: float = 300.0  # per batch
    json_path: Optional[str] = None

    @property
    def reference_count(self) -> int:
        return self.reference or max(1, self.count // 10)


@dataclass
class Batch:
    messages: int
    seconds: float
    received: int

    @property
    def us_per_message(self) -> float:
        return self.seconds / self.messages * 1e6


class Counter:
    """The subscriber's ``on_message``: counts, checks the first and last payloads of a batch."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.first: Optional[bytes] = None
        self.last: Optional[bytes] = None
        self.done = threading.Event()

    def expect(self, n: int) -> None:
        self.count = 0
        self.target = n
        self.first = self.last = None
        self.done.clear()

    def __call__(self, msg: Any) -> None:
        self.count += 1
        if self.first is None:
            self.first = msg.payload
        if self.count >= self.target:
            self.last = msg.payload
            self.done.set()


def run_batch(pub: mqttfast.Client, counter: Counter, n: int, tag: bytes,
              timeout: float) -> Batch:
    """``n`` QoS 1 publishes; returns once all are acknowledged and received."""
    counter.expect(n)
    started = time.perf_counter()
    handle = pub.publish_many(TOPIC, (b"%s%07d" % (tag, i) for i in range(n)), qos=1)
    if not handle.wait(timeout):
        acked = sum(h.ok for h in handle.handles)
        raise SystemExit(f"{tag.decode()}: {acked} of {n} acknowledged after {timeout:g} s")
    if not all(h.ok for h in handle.handles):
        raise SystemExit(f"{tag.decode()}: some publishes failed")
    if not counter.done.wait(timeout):
        raise SystemExit(f"{tag.decode()}: the subscriber got {counter.count} of {n}")
    elapsed = time.perf_counter() - started
    time.sleep(0.2)  # a duplicate or stray message would show now
    expected = (b"%s%07d" % (tag, 0), b"%s%07d" % (tag, n - 1))
    if counter.count != n or (counter.first, counter.last) != expected:
        raise SystemExit(f"{tag.decode()}: received {counter.count} of {n}, first "
                         f"{counter.first!r}, last {counter.last!r}")
    return Batch(n, elapsed, counter.count)


def measure(options: Options) -> Dict[str, Any]:
    with Mosquitto(log_types=QUIET_LOG, max_queued_messages=0) as broker:
        counter = Counter()
        sub = mqttfast.Client(client_id="bench-linear-sub", max_buffer=64 << 20)
        pub = mqttfast.Client(client_id="bench-linear-pub", max_inflight=65535)
        try:
            sub.on_message = counter
            sub.connect(broker.host, broker.port, timeout=10)
            sub.subscribe(TOPIC, qos=0).wait(10)
            pub.connect(broker.host, broker.port, timeout=10)
            small = run_batch(pub, counter, options.reference_count, b"s", options.timeout)
            large = run_batch(pub, counter, options.count, b"L", options.timeout)
        finally:
            for client in (pub, sub):
                try:
                    client.disconnect(timeout=5)
                except Exception:  # noqa: BLE001 - the figures are what matters
                    pass
    return {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "options": asdict(options),
        "codec": mqttfast.codec.IMPLEMENTATION,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "reference": asdict(small) | {"us_per_message": small.us_per_message},
        "measured": asdict(large) | {"us_per_message": large.us_per_message},
        "ratio": large.us_per_message / small.us_per_message,
    }


def report(result: Dict[str, Any]) -> List[str]:
    small, large = result["reference"], result["measured"]
    ratio = result["ratio"]
    return [
        f"$ {result['command']}",
        f"mqttfast {mqttfast.__version__} (codec {result['codec']}), Python {result['python']}, "
        f"{result['cpus']} CPUs",
        f"{'messages':>10}  {'seconds':>8}  {'us/msg':>8}",
        f"{small['messages']:>10,}  {small['seconds']:>8.2f}  {small['us_per_message']:>8.2f}"
        "  (reference)",
        f"{large['messages']:>10,}  {large['seconds']:>8.2f}  {large['us_per_message']:>8.2f}",
        f"ratio (us/msg at {large['messages']:,} / at {small['messages']:,}): {ratio:.2f} "
        f"({'linear' if ratio <= result['options']['max_ratio'] else 'NOT linear'}: "
        f"limit {result['options']['max_ratio']:g})",
    ]


def parse(argv: Optional[List[str]] = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=Options.count,
                        help="messages in the measured batch (default 1,000,000)")
    parser.add_argument("--reference", type=int, default=0,
                        help="messages in the reference batch (default count / 10)")
    parser.add_argument("--max-ratio", type=float, default=Options.max_ratio,
                        help="fail when the per-message time ratio exceeds this (default 3)")
    parser.add_argument("--timeout", type=float, default=Options.timeout,
                        help="seconds allowed per batch (default 300)")
    parser.add_argument("--json", dest="json_path", help="also write the result here")
    args = parser.parse_args(argv)
    if args.count < 1 or args.reference < 0:
        parser.error("--count must be positive and --reference not negative")
    return Options(args.count, args.reference, args.max_ratio, args.timeout, args.json_path)


def main(argv: Optional[List[str]] = None) -> int:
    options = parse(argv)
    result = measure(options)
    print("\n".join(report(result)))
    if options.json_path:
        with open(options.json_path, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0 if result["ratio"] <= options.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
