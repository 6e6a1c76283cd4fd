#!/usr/bin/env python
"""QoS 0 publishing over WebSocket against plain TCP, through one mosquitto, in the same run.

    python benchmarks/bench_websocket.py                 # 200,000 messages per row, 3 runs
    python benchmarks/bench_websocket.py --count 50000 --runs 3 --size 64 --json out.json

It starts its own mosquitto through tests/broker.py with a plain listener and a websockets one
(127.0.0.1, ``socket_domain ipv4``, a quiet log). Each row is one fresh ``mqttfast.Client``
sending ``count`` QoS 0 messages of ``--size`` bytes with ``publish()``, then one QoS 1 publish
whose PUBACK means the broker read everything before it; the row's figure is messages per second
from the first call to that PUBACK. Nobody subscribes (the broker reads and drops: the client's
path and the broker's read side are what is measured). The rows of a run alternate (TCP, ws,
TCP, ws), and the result is ws over TCP for each run, as the median with the spread (min..max).
Issue 11's goal: >= 0.8x.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TESTS = os.path.join(REPO, "tests")
for path in (REPO, TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)

import mqttfast  # noqa: E402
from broker import Mosquitto, free_port  # noqa: E402  (tests/broker.py)
from client_support import QUIET_LOG  # noqa: E402


def one_row(url: str, count: int, size: int, tag: str) -> float:
    client = mqttfast.Client(client_id=f"bench-ws-{tag}")
    client.connect(url, timeout=10)
    try:
        payload = b"x" * size
        publish = client.publish
        topic = f"bench/ws/{tag}"
        started = time.perf_counter()
        for _ in range(count):
            publish(topic, payload)
        if not client.publish(topic, payload, qos=1).wait(120):
            raise RuntimeError(f"{url}: the final PUBACK did not come")
        return count / (time.perf_counter() - started)
    finally:
        client.disconnect(timeout=5)


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", dest="json_path")
    ns = parser.parse_args(argv)
    ws_port = free_port()
    broker = Mosquitto(log_types=QUIET_LOG, extra_config=[
        f"listener {ws_port} 127.0.0.1", "protocol websockets", "socket_domain ipv4"])
    broker.start()
    rows: List[Dict[str, float]] = []
    try:
        tcp_url = f"mqtt://127.0.0.1:{broker.port}"
        ws_url = f"ws://127.0.0.1:{ws_port}/mqtt"
        one_row(tcp_url, 2000, ns.size, "warm-tcp")
        one_row(ws_url, 2000, ns.size, "warm-ws")
        for run in range(ns.runs):
            tcp = one_row(tcp_url, ns.count, ns.size, f"tcp{run}")
            ws = one_row(ws_url, ns.count, ns.size, f"ws{run}")
            rows.append({"tcp": tcp, "ws": ws, "ratio": ws / tcp})
            print(f"run {run + 1}: TCP {tcp:,.0f} msg/s, WebSocket {ws:,.0f} msg/s, "
                  f"ratio {ws / tcp:.2f}x", flush=True)
    finally:
        broker.stop()
    ratios = [r["ratio"] for r in rows]
    print(f"QoS 0 publish, {ns.count:,} x {ns.size} B: WebSocket / TCP = "
          f"{statistics.median(ratios):.2f}x (spread {min(ratios):.2f}..{max(ratios):.2f}, "
          f"{ns.runs} runs; goal >= 0.8x)")
    if ns.json_path:
        with open(ns.json_path, "w") as f:
            json.dump({"count": ns.count, "size": ns.size, "runs": rows,
                       "median_ratio": statistics.median(ratios)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
