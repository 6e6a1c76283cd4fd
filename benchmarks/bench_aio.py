#!/usr/bin/env python
"""The asyncio client (``mqttfast.aio``) against the asyncio peers and the raw ceilings, on the
default event loop and on uvloop.

    python benchmarks/bench_aio.py                     # N = 200,000, median of 3, both loops
    python benchmarks/bench_aio.py --quick             # N = 20,000, one run each: a smoke run
    python benchmarks/bench_aio.py --loop uvloop --only qos0-publish,qos1-publish
    python benchmarks/bench_aio.py --peers gmqtt,mqttium,aiomqtt,zmqtt --json out.json

The machinery is ``bench_clients.py``'s, imported, not copied: its private mosquitto (``Broker``),
its one-process-per-contender runs (``Bench``, ``clients/child.py``), the raw-socket ceilings
(``clients/wire.py``), the confirming subscriber and feeder, the stand-in peer
(``standin_peer.py``) and its rates (see that docstring). What this script adds: the asyncio
contenders (``clients/run_mqttfast_aio.py``, ``clients/run_aiomqtt.py``; gmqtt, mqttium and zmqtt
use bench_clients' runners), the event loop of every child (``event_loop`` in the spec: the
child installs uvloop's policy before the runner's ``asyncio.run``), and references of its own:

* QoS 0 publish: the raw pre-encoded QoS 0 ceiling (target: mqttfast.aio >= 0.95x);
* QoS 1 publish: the raw pipelined QoS 1 ceiling (target >= 0.9x);
* QoS 0 receive: the fastest asyncio peer of the same run and loop (target >= 1.1x);
* QoS 0 backlog drain (bench_clients' ``qos0-backlog``: the broker holds the feed for the
  client's session and only sends while it drains): the fastest asyncio peer that has the role
  (gmqtt, mqttium), the same target;
* broker-free publish and receive: the fastest asyncio peer (target >= 3x).

``mqttfast.aio`` publishes with ``publish_nowait`` and receives with ``on_message``; the
``messages()`` iterator has a row of its own (``mqttfast.aio iter``). zmqtt is left out unless
named in ``--peers``: its awaited publishes take minutes per scenario at N = 200,000.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_clients as bc  # noqa: E402
from bench_clients import Bench, Broker, Scenario, summarize  # noqa: E402

bc.LABELS.update({"mqttfast-aio": "mqttfast.aio", "mqttfast-aio-iter": "mqttfast.aio iter",
                  "aiomqtt": "aiomqtt"})
bc.CHILD.update({"mqttfast-aio": ("mqttfast_aio", "loop"),
                 "mqttfast-aio-iter": ("mqttfast_aio", "iter"), "aiomqtt": ("aiomqtt", "loop")})
LOOPS = ("asyncio", "uvloop")
DEFAULT_PEERS = ["gmqtt", "mqttium", "aiomqtt"]
BEST_PEER = "best-peer"
BACKLOG_PEERS = {"gmqtt", "mqttium"}  # the peers whose runner has the backlog role
# (scenario key, target ratio, what the ratio is against)
TARGETS = {"qos0-publish": (0.95, "raw"), "qos1-publish": (0.9, "raw"),
           "qos0-receive": (1.1, BEST_PEER), "qos0-backlog": (1.1, BEST_PEER),
           "standin-publish": (3.0, BEST_PEER),
           "standin-receive": (3.0, BEST_PEER)}


def scenarios(peers: List[str]) -> List[Scenario]:
    ours, iters = ["mqttfast-aio"], ["mqttfast-aio", "mqttfast-aio-iter"]
    return [
        Scenario("qos0-publish", "qos0 publish", "publish", 0, ["raw"] + ours + peers, "raw",
                 "raw QoS 0 ceiling (pre-encoded frames)"),
        Scenario("qos1-publish", "qos1 publish", "publish", 1, ["raw"] + ours + peers, "raw",
                 "raw QoS 1 ceiling (pipelined, 65535 in flight)"),
        Scenario("qos0-receive", "qos0 receive", "receive", 0, iters + peers, BEST_PEER,
                 "the fastest asyncio peer"),
        Scenario("qos0-backlog", "qos0 backlog", "backlog", 0,
                 iters + [p for p in peers if p in BACKLOG_PEERS], BEST_PEER,
                 "the fastest asyncio peer"),
        Scenario("standin-publish", "free qos0 publish", "standin-publish", 0, ours + peers,
                 BEST_PEER, "the fastest asyncio peer"),
        Scenario("standin-receive", "free qos0 receive", "standin-receive", 0, iters + peers,
                 BEST_PEER, "the fastest asyncio peer"),
    ]


class LoopBench(Bench):
    """``Bench`` whose children run their asyncio code on ``event_loop``."""

    event_loop = "asyncio"

    def spec(self, *args: Any, **extra: Any) -> Dict[str, Any]:
        extra.setdefault("event_loop", self.event_loop)
        return super().spec(*args, **extra)


def reference(sc: Scenario, rows: Dict[str, dict], peers: List[str]) -> Tuple[Optional[float], str]:
    if sc.reference == BEST_PEER:
        rated = [(rows[p]["rate"], p) for p in peers if p in rows and rows[p]["rate"]]
        if not rated:
            return None, "no peer finished"
        rate, who = max(rated)
        return rate, bc.LABELS[who]
    row = rows.get(sc.reference)
    return (row["rate"] if row else None), bc.LABELS[sc.reference]


def render(results: Dict[str, Dict[str, Dict[str, dict]]], plan: List[Scenario],
           peers: List[str], meta: dict) -> Tuple[str, List[dict]]:
    out = [f"command: {meta['command']}",
           f"  N = {meta['n']:,} x {bc.PAYLOAD_SIZE} B per run, median of {meta['repeats']} "
           f"run(s), MQTT 3.1.1 on {bc.HOST}, mosquitto {meta['versions'].get('mosquitto', '?')}, "
           f"{meta['machine']['cpus']} CPUs, load {meta['machine']['load_before']} -> "
           f"{meta['machine'].get('load_after', '?')}", "",
           f"{'scenario':<18} {'loop':<8} {'client':<18} {'msg/s':>11}  {'ratio':<26} "
           f"{'spread':>6}  {'ok runs':>7}"]
    verdicts: List[dict] = []
    notes: List[str] = []
    for loop_name, per_loop in results.items():
        for sc in plan:
            rows = per_loop.get(sc.key)
            if not rows:
                continue
            ref, ref_who = reference(sc, rows, peers)
            for key in sc.entries:
                row = rows.get(key)
                if row is None:
                    continue
                ratio = row["rate"] / ref if row["rate"] and ref else None
                row["ratio"] = ratio
                if key == sc.reference:
                    rtxt = "reference"
                else:
                    rtxt = f"{ratio:.2f}x {ref_who}" if ratio is not None else "-"
                spread = f"{row['spread'] * 100:.0f}%" if row.get("spread") is not None else ""
                out.append(f"{sc.title:<18} {loop_name:<8} {row['label']:<18} "
                           f"{bc.fmt_rate(row):>11}  {rtxt:<26} {spread:>6}  "
                           f"{row['ok_runs']:>3}/{row['runs']:<3}")
                for err in dict.fromkeys(row["errors"]):
                    notes.append(f"  {sc.title} / {loop_name} / {row['label']}: {err}")
            target = TARGETS.get(sc.key)
            ours = rows.get("mqttfast-aio")
            if target and ours is not None:
                got = ours.get("ratio")
                verdict = "n/a" if got is None else ("PASS" if got >= target[0] else "FAIL")
                verdicts.append({"scenario": sc.key, "loop": loop_name, "target": target[0],
                                 "against": ref_who, "measured": got, "verdict": verdict})
    out += ["", "targets (mqttfast.aio, publish_nowait / on_message):"]
    for v in verdicts:
        shown = f"{v['measured']:.2f}x" if v["measured"] is not None else "-"
        out.append(f"  {v['verdict']:<5} {v['scenario']:<16} {v['loop']:<8} >= {v['target']:g}x "
                   f"{v['against']:<24} measured {shown}")
    if notes:
        out += ["", "failures:"] + notes
    return "\n".join(out), verdicts


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 20,000, one run each")
    ap.add_argument("-n", "--messages", type=int, default=None, help="default 200,000")
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (--quick: 1)")
    ap.add_argument("--loop", choices=LOOPS + ("both",), default="both")
    ap.add_argument("--only", metavar="SCENARIOS", help="comma-separated scenario keys")
    ap.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                    help=f"asyncio peers (default {','.join(DEFAULT_PEERS)}; zmqtt also known)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    args.messages = args.messages or (20_000 if args.quick else 200_000)
    args.repeats = args.repeats or (1 if args.quick else 3)
    # What bench_clients.Bench.spec reads: every window at its fastest (65535; QoS 2 unused).
    args.paho_window, args.qos2_window = 20, 1000
    args.mqttium_window = args.mqttfast_window = args.raw_window = 65535
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(peers) - {"gmqtt", "mqttium", "aiomqtt", "zmqtt"}
    if unknown:
        raise SystemExit(f"--peers: unknown {sorted(unknown)}")
    plan = scenarios(peers)
    if args.only:
        keys = {k.strip() for k in args.only.split(",")}
        if keys - {sc.key for sc in plan}:
            raise SystemExit(f"--only: unknown {sorted(keys - {sc.key for sc in plan})}")
        plan = [sc for sc in plan if sc.key in keys]
    loops = list(LOOPS) if args.loop == "both" else [args.loop]
    command = "python benchmarks/bench_aio.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta: Dict[str, Any] = {"command": command.strip(), "n": args.messages,
                            "repeats": args.repeats, "machine": bc.machine_info(),
                            "versions": bc.versions(), "loops": loops, "peers": peers}
    t_start = time.monotonic()
    results: Dict[str, Dict[str, Dict[str, dict]]] = {}
    runs: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_aio-") as tmpdir:
        bench = LoopBench(args, tmpdir)
        broker = Broker(tmpdir)
        if any(sc.kind in ("publish", "receive", "backlog") for sc in plan):
            broker.start()
            bench.broker = broker
            meta["versions"]["mosquitto"] = broker.version
        try:
            for sc in plan:
                for loop_name in loops:
                    bench.event_loop = loop_name
                    per: Dict[str, List[dict]] = {k: [] for k in sc.entries}
                    for rep in range(args.repeats):  # round robin: drifts in load spread evenly
                        for key in sc.entries:
                            r = bench.run(sc, key)
                            r.update(scenario=sc.key, client=key, loop=loop_name, repeat=rep)
                            per[key].append(r)
                            runs.append(r)
                            rate = f"{r['rate']:,.0f} msg/s" if r.get("rate") else "-"
                            status = "ok" if r.get("ok") else f"FAILED: {r.get('error')}"
                            print(f"  [{time.monotonic() - t_start:6.1f}s] {sc.key:<16} "
                                  f"{loop_name:<8} {key:<18} run {rep + 1}/{args.repeats}: "
                                  f"{rate} ({status}){bc.cpu_note(r)}", file=sys.stderr,
                                  flush=True)
                    results.setdefault(loop_name, {})[sc.key] = {
                        k: summarize(sc, k, v, args.messages) for k, v in per.items()}
        finally:
            broker.stop()
    meta["machine"]["load_after"] = bc._load()
    meta["versions"].update(bench.child_info)
    meta["elapsed"] = time.monotonic() - t_start
    table, verdicts = render(results, plan, peers, meta)
    print(table)
    print(f"\n(total {meta['elapsed']:.0f} s; spread = (max - min) / median)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results, "targets": verdicts, "runs": runs}, f,
                      indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
