"""mqttfast.contrib.locust: Locust itself, headless, a master and two workers, against mosquitto.

Locust monkey-patches the process with gevent when imported, which would change every other
test in this pytest process: everything here runs Locust (and gevent) in subprocesses.
"""
from __future__ import annotations

import csv
import importlib.util
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List


HERE = Path(__file__).parent / "locust_files"
from broker import skip_unless_ci  # noqa: E402

# find_spec, not an import: importing locust monkey-patches this process with gevent.
if importlib.util.find_spec("locust") is None:
    skip_unless_ci("locust is not installed (pip install 'mqttfast[locust]', Python >= 3.11)")
# mosquitto 2.0's default leaves Nagle on: a PUBACK queued behind a small PUBLISH to the same
# client then waits ~40 ms for that client's delayed ACK (seen in these runs); load tests want
# what the broker can do, not that.
NODELAY = ["set_tcp_nodelay true"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats(path: Path) -> Dict[str, Dict[str, str]]:
    with path.open() as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def test_master_and_two_workers(broker_factory, tmp_path: Path) -> None:
    broker = broker_factory(extra_config=NODELAY)
    locust = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile_mqttfast.py")]
    master_port = _free_port()
    env = dict(os.environ, MQTT_PORT=str(broker.port))
    master = subprocess.Popen(
        [*locust, "--headless", "--master", "--master-bind-host", "127.0.0.1",
         "--master-bind-port", str(master_port), "--expect-workers", "2", "-u", "40", "-r", "20",
         "-t", "5s", "--host", "127.0.0.1", "--csv", str(tmp_path / "run"), "--only-summary",
         "--stop-timeout", "2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers: List[subprocess.Popen] = [subprocess.Popen(
        [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)]
    try:
        out, _ = master.communicate(timeout=90)
    finally:
        for proc in (master, *workers):
            if proc.poll() is None:
                proc.kill()
        worker_out = [w.communicate(timeout=30)[0] for w in workers]
    assert "Traceback" not in out + "".join(worker_out), out + "".join(worker_out)
    stats = _stats(tmp_path / "run_stats.csv")
    for name in ("connect", "subscribe:1:locust/pubsub/<n>", "publish:0:locust/pubsub/<n>",
                 "publish:1:locust/pubsub/<n>", "receive:0:locust/pubsub/<n>",
                 "receive:1:locust/pubsub/<n>", "publish:1:locust/paho"):
        assert name in stats, f"no {name!r} in the stats: {sorted(stats)}\n{out}"
        row = stats[name]
        assert row["Type"] == "MQTT"
        assert int(row["Request Count"]) > 0, name
        assert int(row["Failure Count"]) == 0, (name, out)
    assert int(stats["connect"]["Request Count"]) == 40  # every user, on both workers
    assert int(stats["Aggregated"]["Failure Count"]) == 0, out
    # Every QoS 1 message published came back to its publisher (nothing lost on the way).
    sent = int(stats["publish:1:locust/pubsub/<n>"]["Request Count"])
    got = int(stats["receive:1:locust/pubsub/<n>"]["Request Count"])
    assert got >= sent * 0.95, (sent, got)


def test_shared_loop_cooperates_with_gevent(broker_factory) -> None:
    """50 clients on one loop under monkey-patching: a greenlet drives the loop, every message
    arrives, and a ticker greenlet never waits long (the loop's select yields to the hub)."""
    broker = broker_factory(extra_config=NODELAY)
    done = subprocess.run([sys.executable, str(HERE / "gevent_loop_check.py"), str(broker.port)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = re.search(r"received=(\d+) greenlet=(\d+) ticks=(\d+) max_gap=([\d.]+)", done.stdout)
    assert found, done.stdout
    received, greenlet, ticks, max_gap = (int(found[1]), int(found[2]), int(found[3]),
                                          float(found[4]))
    assert received == 1000
    assert greenlet == 1  # the loop is driven by a greenlet, not an OS thread
    assert ticks > 0 and max_gap < 0.5, done.stdout


def test_without_gevent_patching_says_so() -> None:
    code = ("import sys, types; sys.modules['locust'] = types.ModuleType('locust'); "
            "import locust; locust.User = object; "
            "env = types.ModuleType('locust.env'); env.Environment = object; "
            "sys.modules['locust.env'] = env; "
            "from mqttfast.contrib.locust import shared_loop\n"
            "try:\n    shared_loop()\nexcept RuntimeError as e:\n    print('refused:', e)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert "refused: mqttfast.contrib.locust needs gevent's monkey-patching" in done.stdout
