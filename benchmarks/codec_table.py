#!/usr/bin/env python3
"""Prints the codec benchmark as one table: ns per packet for mqttfast's C twin and pure twin, the
Rust-backed ``mqtt5`` package and paho-mqtt, all measured in the same run, with the ratios the
targets are stated in.

    python benchmarks/codec_table.py [--json PATH] [--repeat N] [--min-time SECONDS] [--quick]
                                      [--check]

Timing: every cell is a ``timeit`` loop over one statement (names bound to locals, the garbage
collector off, as timeit does), calibrated so that one repeat lasts about ``--min-time`` seconds;
the repeats go round all cells in turn, and each cell keeps its best. A cell that handles a chunk is
divided by the packets in it. What each contender is asked to do is in ``codec_cases.py``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import timeit
from typing import Any, Dict, List, Optional, Tuple

try:
    import mqttfast  # noqa: F401
except ImportError:
    sys.exit("mqttfast is not importable: run `bash ci/bench.sh`, or `pip install -e .[bench]` "
             "in your venv first")

import codec_cases as cc

COLUMNS = ("c", "python", "mqtt5", "paho")

TARGETS = {
    "encode": {"ratio": 0.30, "ns": 80.0},
    "decode": {"ratio": 0.33, "ns": 120.0},
}


# --------------------------------------------------------------------------- timing

class Timed:
    def __init__(self, case: cc.Case, min_time: float) -> None:
        self.case = case
        names = {f"_g_{k}": v for k, v in case.names.items()}
        setup = "\n".join(f"{k} = _g_{k}" for k in case.names) or "pass"
        self.timer = timeit.Timer(case.stmt, setup, globals=names)
        self.number = self._calibrate(min_time)
        self.best = float("inf")

    def _calibrate(self, min_time: float) -> int:
        number = 1
        while True:
            elapsed = self.timer.timeit(number)
            if elapsed >= min_time / 5:
                return max(1, round(number * min_time / elapsed))
            number *= 2 if elapsed > min_time / 50 else 10

    def run_once(self) -> None:
        self.best = min(self.best, self.timer.timeit(self.number))

    @property
    def ns(self) -> float:
        return self.best / self.number / self.case.per_call * 1e9


def measure(cases: List[cc.Case], min_time: float, repeat: int) -> Dict[str, float]:
    timed = [Timed(case, min_time) for case in cases]
    for _ in range(repeat):
        for t in timed:
            t.run_once()
    return {t.case.id: t.ns for t in timed}


# --------------------------------------------------------------------------- the run

def build(contenders: Dict[str, cc.Contender]) -> Tuple[List[dict], List[cc.Case]]:
    rows: List[dict] = []
    cases: List[cc.Case] = []
    for op, protocol, label, unit in cc.OPERATIONS:
        row = {"op": op, "protocol": protocol, "label": label, "unit": unit,
               "ns": {}, "why_empty": {}, "case": {}}
        for name in COLUMNS:
            case = cc.make_case(op, protocol, contenders[name])
            if isinstance(case, str):
                row["why_empty"][name] = case
                continue
            case.run_check()  # a contender that decodes wrongly is not timed
            row["case"][name] = case
            cases.append(case)
        rows.append(row)
    return rows, cases


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--repeat", type=int, default=5, help="rounds over all cells (default 5)")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="seconds per repeat of one cell (default 0.2)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 rounds of 0.02 s (numbers are rough)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a target is missed or the C twin is not built")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.min_time = 2, 0.02

    started = time.perf_counter()
    contenders = cc.load_contenders()
    rows, cases = build(contenders)
    extra = [c for c in (cc.paho_body_case(p, contenders["paho"]) for p in cc.PROTOCOLS)
             if not isinstance(c, str)]
    for case in extra:
        case.run_check()
    loop = cc.Case("loop", None, "-", "pass", {}, id="empty-loop")
    results = measure([loop, *cases, *extra], args.min_time, args.repeat)
    for row in rows:
        row["ns"] = {name: results[case.id] for name, case in row.pop("case").items()}
    elapsed = time.perf_counter() - started

    meta = describe(contenders, args, argv)
    meta["seconds"] = round(elapsed, 1)
    meta["loop_overhead_ns"] = results["empty-loop"]
    footnote = {f"v{c.protocol}": results[c.id] for c in extra}
    targets = evaluate(rows)
    print(render(rows, meta, targets, footnote, contenders))
    if args.json:
        write_json(args.json, rows, meta, targets, footnote)
    if args.check and (contenders["c"].missing or not all(t["met"] for t in targets)):
        return 1
    return 0


def describe(contenders: Dict[str, cc.Contender], args: argparse.Namespace,
             argv: Optional[List[str]]) -> Dict[str, Any]:
    from mqttfast import codec

    script = os.path.relpath(os.path.abspath(__file__))
    command = " ".join(["python", script, *(sys.argv[1:] if argv is None else argv)])
    c = contenders["c"]
    return {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git_describe(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": f"{platform.system()} {platform.machine()}, {_cpu()}, {os.cpu_count()} CPUs",
        "versions": {n: contenders[n].version or contenders[n].missing for n in COLUMNS},
        "codec_selected": codec.IMPLEMENTATION,
        "c_twin": c.missing or (f"{c.module.__file__}"
                                + (" (STALE: _codec.pyx is newer; rebuild)"
                                   if cc.is_stale(c.module) else "")),
        "repeat": args.repeat,
        "min_time": args.min_time,
        "packet": {"topic": cc.TOPIC, "payload_bytes": len(cc.PAYLOAD), "qos": 0},
    }


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _git_describe() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=here,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


# --------------------------------------------------------------------------- targets

def _cell(rows: List[dict], op: str, protocol: Optional[int], name: str) -> Optional[float]:
    for row in rows:
        if row["op"] == op and row["protocol"] == protocol:
            return row["ns"].get(name)
    return None


def evaluate(rows: List[dict]) -> List[dict]:
    out = []

    def versus_mqtt5(kind: str, op: str, label: str) -> None:
        goal = TARGETS[kind]
        c, ref = _cell(rows, op, 5, "c"), _cell(rows, op, 5, "mqtt5")
        if c is None or ref is None:
            out.append({"target": f"C {kind} <= {goal['ratio']:.2f}x mqtt5 and <= {goal['ns']:.0f} ns",
                        "row": f"{label}, MQTT 5", "measured": "not measured", "met": False})
            return
        ratio = c / ref
        out.append({"target": f"C {kind} <= {goal['ratio']:.2f}x mqtt5 and <= {goal['ns']:.0f} ns",
                    "row": f"{label}, MQTT 5", "ratio": ratio, "ns": c,
                    "measured": f"{ratio:.2f}x, {_fmt(c)} ns",
                    "met": ratio <= goal["ratio"] and c <= goal["ns"]})

    versus_mqtt5("encode", "encode", "encode")
    versus_mqtt5("decode", "decode_one", "decode one")
    versus_mqtt5("decode", "decode_chunk", "64 KiB, one topic")
    versus_mqtt5("decode", "decode_chunk_topics", "64 KiB, new topic each")

    worst: Optional[Tuple[float, str]] = None
    for row in rows:
        if not row["op"].startswith("decode"):
            continue
        py, paho = row["ns"].get("python"), row["ns"].get("paho")
        if py is None or paho is None:
            continue
        label = f"{row['label']}, {cc.PROTOCOL_NAMES[row['protocol']]}"
        if worst is None or py / paho > worst[0]:
            worst = (py / paho, label)
    if worst is None:
        out.append({"target": "pure decode faster than paho", "row": "every decode row",
                    "measured": "not measured", "met": False})
    else:
        out.append({"target": "pure decode faster than paho", "row": f"worst: {worst[1]}",
                    "ratio": worst[0], "measured": f"{worst[0]:.2f}x paho", "met": worst[0] < 1})
    return out


# --------------------------------------------------------------------------- output

def _fmt(ns: Optional[float]) -> str:
    if ns is None:
        return "-"
    if ns < 10:
        return f"{ns:.2f}"
    if ns < 100:
        return f"{ns:.1f}"
    return f"{ns:,.0f}"


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def render(rows: List[dict], meta: Dict[str, Any], targets: List[dict], footnote: Dict[str, float],
           contenders: Dict[str, cc.Contender]) -> str:
    head = ["operation", "protocol", "C twin", "pure twin", "mqtt5", "paho", "C/mqtt5",
            "pure/paho"]
    body = []
    for row in rows:
        ns = row["ns"]
        proto = cc.PROTOCOL_NAMES.get(row["protocol"], "any")
        label = row["label"] + (" (per call)" if row["unit"] == "call" else "")
        body.append([label, proto, *(_fmt(ns.get(n)) for n in COLUMNS),
                     _ratio(ns.get("c"), ns.get("mqtt5")), _ratio(ns.get("python"), ns.get("paho"))])
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells: List[str]) -> str:
        return "  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    v = meta["versions"]
    out = [
        "mqttfast codec benchmark: nanoseconds per packet, lower is better (all cells from one run)",
        f"command:  {meta['command']}",
        f"run:      {meta['date']}, {meta['python']}, {meta['machine']}, git {meta['git'] or '?'}",
        f"versions: mqttfast {v['c'] if not contenders['c'].missing else v['python']}, "
        f"mqtt5 {v['mqtt5']}, paho-mqtt {v['paho']}",
        f"C twin:   {meta['c_twin']}",
        f"packet:   PUBLISH QoS 0, topic {cc.TOPIC!r} (16 B), payload 64 B; 64 KiB chunks hold "
        f"{cc.CHUNK // len(cc.publish_bytes(cc.TOPIC, cc.PAYLOAD, 5))} (MQTT 5) or "
        f"{cc.CHUNK // len(cc.publish_bytes(cc.TOPIC, cc.PAYLOAD, 4))} (3.1.1) packets",
        f"timing:   best of {meta['repeat']} rounds of ~{meta['min_time']} s per cell; the loop "
        f"itself costs {meta['loop_overhead_ns']:.1f} ns per iteration, included",
        "",
        line(head),
        line(["-" * w for w in widths]),
        *(line(r) for r in body),
        "",
    ]
    reasons: Dict[str, None] = {}
    for row in rows:
        for name, why in row["why_empty"].items():
            reasons[f"{contenders[name].title}: {why}"] = None
    if reasons:
        out.append("empty cells:")
        out.extend(f"  {why}" for why in reasons)
    out.append("decode: mqttfast returns a Publish object per packet; mqtt5's read() returns "
               "(PublishPacket, size),")
    out.append("  looped over a memoryview for a chunk; paho is its real receive path "
               "(Client._packet_read) over")
    out.append("  an in-memory socket (no system calls), building an MQTTMessage and calling a "
               "counting on_message.")
    if footnote:
        parts = ", ".join(f"{_fmt(footnote[k])} ns ({'MQTT 5' if k == 'v5' else 'MQTT 3.1.1'})"
                          for k in sorted(footnote, reverse=True))
        out.append(f"  paho's private _packet.decode_publish alone (body already split off, no "
                   f"MQTTMessage): {parts}.")
    out.append("")
    out.append("targets (same run):")
    tw = max(len(t["target"]) for t in targets)
    rw = max(len(t["row"]) for t in targets)
    mw = max(len(t["measured"]) for t in targets)
    last = None
    for t in targets:
        name = t["target"] if t["target"] != last else ""
        last = t["target"]
        out.append(f"  {name.ljust(tw)}  {t['row'].ljust(rw)}  {t['measured'].rjust(mw)}  "
                   f"{'met' if t['met'] else 'MISSED'}")
    out.append(f"({meta['seconds']} s)")
    return "\n".join(out)


def write_json(path: str, rows: List[dict], meta: Dict[str, Any], targets: List[dict],
               footnote: Dict[str, float]) -> None:
    doc = {
        "meta": meta,
        "unit": "ns per packet (per call for remaining length)",
        "rows": [{k: row[k] for k in ("op", "protocol", "label", "unit", "ns", "why_empty")}
                 for row in rows],
        "paho_decode_publish_body_only_ns": footnote,
        "targets": targets,
    }
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
