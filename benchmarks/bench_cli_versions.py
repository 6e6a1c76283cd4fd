"""``mqttfast bench pub`` / ``sub`` at their defaults (MQTT 5) against the same with ``-V 4``.

Issue 8's goal: the load generator's default protocol costs nothing, +-5%. One private mosquitto
(that of ``bench_clients.py``), runs alternated between the two versions (ABBA), 7 runs each,
median:

* pub: ``mqttfast bench pub -c 10 -I 0 -L N -s 64 -w -t bench/v%i -q Q`` (as fast as possible; the
  rate is the generator's own summary: messages published / seconds publishing);
* sub: ``mqttfast bench sub -c 10 -t bench/s`` while one ``mqttfast bench pub`` feeds N messages;
  the rate is the subscribers' received messages / seconds receiving.

    python benchmarks/bench_cli_versions.py [-n 200000] [--repeats 7] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_clients import Broker  # noqa: E402

MQTTFAST = [sys.executable, "-m", "mqttfast"]


def summary(path: str) -> Dict[str, Any]:
    with open(path) as f:
        doc = json.load(f)
    return doc.get("summary", doc)


def rate_of(s: Dict[str, Any], key: str) -> float:
    if not isinstance(s.get(key), (int, float)):
        raise KeyError(f"no {key} in the summary: {sorted(s)}")
    return float(s[key])


def run_pub(port: int, version: int, n: int, qos: int, tmp: str) -> float:
    out = os.path.join(tmp, f"pub-{version}-{time.monotonic_ns()}.json")
    subprocess.run(MQTTFAST + ["bench", "pub", "-p", str(port), "-V", str(version), "-c", "10",
                               "-i", "0", "-I", "0", "-L", str(n), "-s", "64", "-w", "-q", str(qos),
                               "-F", "0", "-t", "bench/v%i", "--quiet", "--json", out],
                   check=True, timeout=300)
    return rate_of(summary(out), "publish_rate")


def run_sub(port: int, version: int, n: int, tmp: str) -> float:
    out = os.path.join(tmp, f"sub-{version}-{time.monotonic_ns()}.json")
    sub = subprocess.Popen(MQTTFAST + ["bench", "sub", "-p", str(port), "-V", str(version),
                                       "-c", "10", "-i", "0", "-t", "bench/s", "-L", str(n * 10),
                                       "--quiet", "--json", out])
    time.sleep(1.5)  # every subscriber is in before the feed starts
    subprocess.run(MQTTFAST + ["bench", "pub", "-p", str(port), "-V", "4", "-c", "1", "-I", "0",
                               "-L", str(n), "-s", "64", "-t", "bench/s", "--quiet"],
                   check=True, timeout=300)
    sub.wait(300)
    return rate_of(summary(out), "receive_rate")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--messages", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=7,
                    help="runs per version (default 7: one run here is 0.2-0.5 s, and 3 of them "
                         "spread wider than the +-5%% being measured)")
    ap.add_argument("--json", metavar="PATH", help="write every run and the summary here")
    args = ap.parse_args()
    rows: Dict[str, Dict[int, List[float]]] = {"pub qos0": {5: [], 4: []},
                                               "pub qos1": {5: [], 4: []},
                                               "sub qos0": {5: [], 4: []}}
    with tempfile.TemporaryDirectory(prefix="bench_cli_versions-") as tmp:
        broker = Broker(tmp)
        broker.start()
        try:
            for rep in range(args.repeats):
                # ABBA: the version that runs first alternates, so neither gains from its slot
                for version in ((5, 4) if rep % 2 == 0 else (4, 5)):
                    rows["pub qos0"][version].append(run_pub(broker.port, version, args.messages,
                                                             0, tmp))
                    rows["pub qos1"][version].append(run_pub(broker.port, version, args.messages,
                                                             1, tmp))
                    rows["sub qos0"][version].append(run_sub(broker.port, version,
                                                             args.messages // 10, tmp))
                    print(f"  run {rep + 1}, -V {version}: "
                          + ", ".join(f"{k} {v[version][-1]:,.0f}/s" for k, v in rows.items()),
                          file=sys.stderr)
        finally:
            broker.stop()
    print(f"command: python benchmarks/bench_cli_versions.py -n {args.messages} "
          f"--repeats {args.repeats}")
    print(f"{'':10}{'-V 5 (default)':>16}{'-V 4':>12}{'ratio':>8}{'spread 5/4':>14}   "
          "goal: the same rate, +-5%")
    table = []
    for name, by in rows.items():
        m5, m4 = statistics.median(by[5]), statistics.median(by[4])
        s5 = (max(by[5]) - min(by[5])) / m5
        s4 = (max(by[4]) - min(by[4])) / m4
        ratio = m5 / m4
        verdict = "PASS" if ratio >= 0.95 else "FAIL"  # faster than -V 4 is no failure
        table.append({"row": name, "v5": m5, "v4": m4, "ratio": ratio, "spread_v5": s5,
                      "spread_v4": s4, "verdict": verdict, "runs": by})
        print(f"{name:<10}{m5:>16,.0f}{m4:>12,.0f}{ratio:>7.2f}x{s5:>7.0%}/{s4:.0%}   {verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.messages, "repeats": args.repeats, "summary": table}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
