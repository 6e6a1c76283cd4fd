#!/usr/bin/env python
"""Client against client: mqttfast, paho-mqtt, gmqtt, mqttium, awscrt, zmqtt, raw sockets, mosquitto_sub.

    python benchmarks/bench_clients.py                 # N = 200,000, median of 3 (< 5 minutes)
    python benchmarks/bench_clients.py --quick         # N = 50,000, one run each
    python benchmarks/bench_clients.py --only mqttfast,paho --json out.json
    python benchmarks/bench_clients.py --only qos1-publish

Everything runs on 127.0.0.1. The script starts its own mosquitto (a generated config on a free
port: ``max_queued_messages 10000000`` and ``max_inflight_messages 0``, so the broker never drops
a QoS 0 message for a slow subscriber; its log goes to a temporary file) and stops it at the end.
Every contender runs in its own **subprocess** (a fresh interpreter: one library's threads and GIL
do not touch another's), measures with ``time.perf_counter`` (CLOCK_MONOTONIC on Linux, so the
times of different processes compare) and sends the parent one JSON line (``clients/child.py``).
Payloads are 64 bytes, every run has a timeout, and a client that fails or times out is reported
as such in its row; one that cannot do a scenario says so (``unsupported``, the reason in the
notes). Each measurement is repeated (round robin over the
contenders of a scenario, so slow drifts in machine load spread evenly) and the median is shown.

Contenders (``--only`` takes these client names, or the scenario names below; the scenario's
reference always runs), each driven its fastest fair way (the runner's docstring says how and why):

* ``mqttfast`` / ``mqttfast-many``: tuned, ``max_inflight=65535`` (``--mqttfast-window``), on
  MQTT 5 also ``outgoing_aliases=False``; ``publish()`` in a loop / ``publish_many``.
* ``mqttfast-default``: ``Client(protocol=4)`` or ``Client(protocol=5)`` and nothing else (its
  default window; on MQTT 5 automatic outgoing topic aliases on), ``publish()`` in a loop.
* ``paho`` (``clients/run_paho.py``), ``gmqtt`` (``run_gmqtt.py``), ``mqttium`` 1.2
  (``run_mqttium.py``: ``publish_nowait``, window 65535), ``awscrt`` 0.38 (``run_awscrt.py``: its
  ``mqtt`` client on 3.1.1, its ``mqtt5`` client on MQTT 5, futures from its C event-loop
  thread), ``zmqtt`` 0.2 (``run_zmqtt.py``: awaited publishes, 65,535 coroutines at QoS 1).
* ``raw``: the raw-socket ceilings (``clients/wire.py``) and, in the receive scenarios, the
  raw-socket reader.

Every scenario exists twice: MQTT 3.1.1 (the names below) and MQTT 5 (the same names with
``-v5``: every client and reference on MQTT 5, the raw ceilings with MQTT 5 frames, so each
MQTT 5 row has a ceiling of its own protocol; the confirming subscriber and the feeder stay the
same raw 3.1.1 sockets in both).

Scenarios:

``qos0-publish``, ``qos1-publish``, ``qos2-publish``
    One connection publishes N messages to one topic as fast as the client's API allows:
    mqttfast ``publish()`` in a loop and ``publish_many``; paho ``publish()`` in a loop with
    ``loop_start()``; gmqtt ``publish()`` in an asyncio loop; the raw ceilings (``clients/wire.py``:
    pre-encoded frames in big ``sendall``s; for QoS 1 pipelined with packet ids 1..65535 cycling
    and at most 65,535 unacknowledged, a reader thread counting PUBACKs). A **confirming
    subscriber** (a raw socket in its own process, the same for every client, subscribed at QoS 0
    before the start) counts what the broker delivers. Rate = N / (time from the first publish
    call until the subscriber has all N *and* the publisher has all its acknowledgements (QoS 1:
    PUBACK, QoS 2: PUBCOMP)). At QoS 0 the publisher's own "written" signal is not waited for,
    but a note is printed when it comes much later than the subscriber's last message. "lost" =
    N - messages the subscriber received. References: the raw QoS 0 ceiling, the raw QoS 1 ceiling;
    QoS 2 has no raw ceiling, its ratios are against mqttfast.
``qos0-receive``
    The client under test subscribes (and is subscribed) first; then a feeder (the raw QoS 0
    publisher, in its own process) publishes N messages as fast as it can. Rate = N / (time from
    the feeder's first write until the client's ``on_message`` callback has seen the N-th
    message); the first-to-last-message time is in the JSON. The feeder sends N + 1,000: mosquitto
    writes with Nagle on, so a run's last segment can wait ~40 ms for the reader's delayed ACK; with
    the margin the N-th message is never the last. Reference: ``mosquitto_sub -C N`` (C, output
    to /dev/null), timed from the feeder's first write until the process exits (slightly in the
    clients' favour: it includes mosquitto_sub's disconnect and exit); the raw-socket reader
    (``raw reader``) is timed like the clients.
``qos0-backlog``
    Bulk ingestion catching up: the client under test subscribes at QoS 0 on a session that
    outlives its connection (3.1.1: clean session off; MQTT 5: clean start off and a session
    expiry) and disconnects; the feeder publishes N + 1,000 while it is away (the broker runs
    with ``queue_qos0_messages true``, so it queues them; the feeder's closing PINGREQ is
    answered once the broker has read them all); then the client connects to that session
    again. Rate = N / (time from just before that connect until the N-th ``on_message``). The
    broker only sends here: it neither reads a feed nor routes while the client drains, so on a
    2-core machine the reader, not the broker, sets the rate, which the live ``qos0-receive``
    cannot show (there the broker is at a full core for every reader). Reference:
    ``mosquitto_sub -c -C N``, timed from starting the process to its exit (against it by its
    start-up, a few ms); the raw-socket reader is timed like the clients. mqttfast, gmqtt,
    mqttium and raw have the role.
``standin-publish``, ``standin-receive`` (broker-free)
    The stand-in peer of ``standin_peer.py`` (its own process) replaces the broker. Publish: the
    peer discards and counts; rate = N / (time until the peer has counted all N: the parent
    polls its count every millisecond once the client's publish loop has returned). The client's
    own "all written" signal (mqttfast's last handle, paho's last ``wait_for_publish()``, gmqtt's
    transport buffer empty) is in the JSON (``written_rate``), and a note is printed when it
    lags; "lost" = N - what the peer counted. Receive: the peer replays N pre-encoded PUBLISHes
    after the SUBACK; rate = N / (time from the first to the last ``on_message``). References:
    the targets (1.5 M msg/s for ``publish()`` and receiving, 5 M msg/s for ``publish_many``).

In-flight windows (QoS 1/2), each client with its fastest sound setting:

* mqttfast: its default ``max_inflight=65535``; the raw QoS 1 ceiling: 65,535 too.
* paho: its default, 20 (``--paho-window``). Larger is slower: after every PUBACK paho re-scans
  its outgoing messages from the oldest (``_update_inflight``), O(window) per acknowledgement
  (here, N = 50,000 at QoS 1: window 20 -> 29k msg/s, 1000 -> 13k msg/s). 0 ("unlimited") is
  no way out: paho refuses a publish whose packet id is still outstanding, so the publish loop
  keeps at most 65,535 messages outstanding (see ``run_paho.py``).
* gmqtt: no window of its own; it refuses a publish (``OverflowError``) when its 65,535 ids are
  all in flight, and the benchmark then waits a millisecond.
* mqttium: ``max_outbound_inflight`` and ``max_unacknowledged_messages`` 65,535
  (``--mqttium-window``; its defaults, 20 on MQTT 3.1.1 and 10,000, would measure the window).
* awscrt: at most 60,000 operations outstanding (``--awscrt-window``), kept by the publish loop
  (unbounded, its 3.1.1 client's request queue in C fills and fails the excess with
  ``AWS_ERROR_MQTT_QUEUE_FULL``; its MQTT 5 client also keeps to the broker's Receive Maximum,
  none here). zmqtt: no window; 65,535 coroutines each awaiting one publish at a time keep up to
  65,535 in flight.
* mqttfast-default: whatever ``Client()`` chooses.
* QoS 2: every client's window is capped at ``--qos2-window`` (default 1000; for gmqtt the
  publish loop enforces it). mosquitto's handling of an incoming QoS 2 PUBLISH costs O(messages
  of that client still in flight), so a 65,535 window makes the broker, not the client, the
  bottleneck: here mqttfast went from ~60k msg/s (window 1000) to 1.6k msg/s (65,535), and
  gmqtt, unwindowed, to 2.5k msg/s; against the stand-in peer mqttfast does ~400k msg/s at
  65,535.

On a busy or 2-core machine every figure is noisy: the broker, the client under test and the
subscriber or feeder share the cores. Compare ratios from the same run, not figures across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from clients.child import SESSION_EXPIRY  # noqa: E402  (the backlog sessions' expiry)

HOST = "127.0.0.1"
PAYLOAD_SIZE = 64
perf_counter = time.perf_counter

# ---------------------------------------------------------------------- contenders and scenarios

LABELS = {
    "raw": "raw ceiling",
    "mqttfast": "mqttfast",
    "mqttfast-many": "mqttfast many",
    "mqttfast-default": "mqttfast default",
    "paho": "paho-mqtt",
    "gmqtt": "gmqtt",
    "mqttium": "mqttium",
    "awscrt": "awscrt",
    "zmqtt": "zmqtt",
    "mosquitto_sub": "mosquitto_sub",
}
# key -> (child "client", variant)
CHILD = {
    "raw": ("raw", "loop"),
    "mqttfast": ("mqttfast", "loop"),
    "mqttfast-many": ("mqttfast", "many"),
    "mqttfast-default": ("mqttfast", "default"),
    "paho": ("paho", "loop"),
    "gmqtt": ("gmqtt", "loop"),
    "mqttium": ("mqttium", "loop"),
    "awscrt": ("awscrt", "loop"),
    "zmqtt": ("zmqtt", "loop"),
}
PEERS = ["paho", "gmqtt", "mqttium", "awscrt", "zmqtt"]  # every client speaks 3.1.1 and 5
MQTTFAST = ["mqttfast", "mqttfast-many", "mqttfast-default"]
RECEIVE_MARGIN = 1000  # the feeder sends N + this: the N-th message is never a run's last


class Scenario:
    def __init__(self, key: str, title: str, kind: str, qos: int, entries: List[str],
                 reference: str, ref_label: str, protocol: int = 4) -> None:
        self.key = key
        self.title = title
        self.kind = kind  # "publish", "receive", "backlog", "standin-publish", "standin-receive"
        self.qos = qos
        self.entries = entries
        self.reference = reference  # an entry key, or "target"
        self.ref_label = ref_label
        self.protocol = protocol  # 4: MQTT 3.1.1, 5: MQTT 5 (every client, the references too)


def _scenarios() -> List[Scenario]:
    out = []
    for protocol, sfx, tsfx in ((4, "", ""), (5, "-v5", " v5")):
        raw = f"raw {'MQTT 5 ' if protocol == 5 else ''}"
        out += [
            Scenario(f"qos0-publish{sfx}", f"qos0 publish{tsfx}", "publish", 0,
                     ["raw"] + MQTTFAST + PEERS, "raw", f"{raw}QoS 0 ceiling", protocol),
            Scenario(f"qos1-publish{sfx}", f"qos1 publish{tsfx}", "publish", 1,
                     ["raw"] + MQTTFAST + PEERS, "raw", f"{raw}QoS 1 ceiling", protocol),
            Scenario(f"qos2-publish{sfx}", f"qos2 publish{tsfx}", "publish", 2,
                     MQTTFAST + PEERS, "mqttfast", "mqttfast (no raw QoS 2 ceiling)", protocol),
            Scenario(f"qos0-receive{sfx}", f"qos0 receive{tsfx}", "receive", 0,
                     ["mosquitto_sub", "raw", "mqttfast"] + PEERS, "mosquitto_sub",
                     f"mosquitto_sub -C N{' -V mqttv5' if protocol == 5 else ''}", protocol),
            Scenario(f"qos0-backlog{sfx}", f"qos0 backlog{tsfx}", "backlog", 0,
                     ["mosquitto_sub", "raw", "mqttfast", "gmqtt", "mqttium"], "mosquitto_sub",
                     f"mosquitto_sub -c -C N{' -V mqttv5' if protocol == 5 else ''}", protocol),
            Scenario(f"standin-publish{sfx}", f"free qos0 publish{tsfx}", "standin-publish", 0,
                     MQTTFAST + PEERS, "target",
                     "targets: 4M msg/s (publish()), 5M msg/s (publish_many)", protocol),
            Scenario(f"standin-receive{sfx}", f"free qos0 receive{tsfx}", "standin-receive", 0,
                     ["mqttfast"] + PEERS, "target", "target: 6M msg/s", protocol),
        ]
    return out


SCENARIOS = _scenarios()


def target_rate(scenario: Scenario, key: str) -> Optional[float]:
    """The broker-free rows' reference: a fixed target (publish() 4M/s, publish_many 5M/s,
    receive 6M/s; issue 8's goals, set on a faster machine: benchmarks/bench_broker_free.py
    measures them as ratios against the code of the time, in the same run)."""
    if scenario.kind == "standin-publish":
        return 5e6 if key == "mqttfast-many" else 4e6
    if scenario.kind == "standin-receive":
        return 6e6
    return None


# (description, scenario, entry, kind, value): kind "ratio" (vs the scenario's reference),
# "rate" (absolute msg/s), "vs:<entry>" (vs another entry of the same scenario and run) or
# "twin:<scenario>" (vs the same entry in another scenario of the run: MQTT 5 against 3.1.1).
TARGETS = [
    ("QoS 0 publish, publish() >= 0.95x raw", "qos0-publish", "mqttfast", "ratio", 0.95),
    ("QoS 0 publish, publish_many >= 0.95x raw", "qos0-publish", "mqttfast-many", "ratio", 0.95),
    ("QoS 1 publish, window 65535 >= 0.95x raw QoS 1", "qos1-publish", "mqttfast", "ratio", 0.95),
    ("QoS 1 publish, default Client >= 0.85x raw QoS 1", "qos1-publish", "mqttfast-default",
     "ratio", 0.85),
    ("MQTT 5 QoS 1, default Client >= 0.85x raw MQTT 5 QoS 1", "qos1-publish-v5",
     "mqttfast-default", "ratio", 0.85),
    ("MQTT 5 QoS 0, default Client >= 0.95x its 3.1.1", "qos0-publish-v5", "mqttfast-default",
     "twin:qos0-publish", 0.95),
    ("MQTT 5 QoS 1, default Client >= 0.95x its 3.1.1", "qos1-publish-v5", "mqttfast-default",
     "twin:qos1-publish", 0.95),
    ("raw MQTT 5 QoS 0 frames vs raw 3.1.1 (the broker's step)", "qos0-publish-v5", "raw",
     "twin:qos0-publish", 0.95),
    ("raw MQTT 5 QoS 1 frames vs raw 3.1.1 (the broker's step)", "qos1-publish-v5", "raw",
     "twin:qos1-publish", 0.95),
    ("QoS 0 receive >= 0.95x mosquitto_sub", "qos0-receive", "mqttfast", "ratio", 0.95),
    ("MQTT 5 QoS 0 receive >= 0.95x mosquitto_sub", "qos0-receive-v5", "mqttfast", "ratio", 0.95),
    ("QoS 0 receive >= 1.1x gmqtt", "qos0-receive", "mqttfast", "vs:gmqtt", 1.1),
    ("MQTT 5 QoS 0 receive >= 1.1x gmqtt", "qos0-receive-v5", "mqttfast", "vs:gmqtt", 1.1),
    ("QoS 0 backlog drain >= 0.95x mosquitto_sub", "qos0-backlog", "mqttfast", "ratio", 0.95),
    ("MQTT 5 QoS 0 backlog drain >= 0.95x mosquitto_sub", "qos0-backlog-v5", "mqttfast", "ratio",
     0.95),
    ("QoS 0 backlog drain >= 1.1x gmqtt", "qos0-backlog", "mqttfast", "vs:gmqtt", 1.1),
    ("MQTT 5 QoS 0 backlog drain >= 1.1x gmqtt", "qos0-backlog-v5", "mqttfast", "vs:gmqtt", 1.1),
    ("broker-free publish() >= 4M msg/s", "standin-publish", "mqttfast", "rate", 4e6),
    ("broker-free publish_many >= 5M msg/s", "standin-publish", "mqttfast-many", "rate", 5e6),
    ("broker-free receive >= 6M msg/s", "standin-receive", "mqttfast", "rate", 6e6),
]


# ---------------------------------------------------------------------- processes

def _receiver_rates(out: Dict[str, Any], cres: Dict[str, Any], n: int,
                    t0: Optional[float]) -> Dict[str, Any]:
    """A receiving run's ``rate`` (N / ``t0`` to the N-th message) and first-to-last rate, its
    ``ok`` (all N, timed) and ``error``."""
    if cres.get("t_last") is not None and t0 is not None:
        out["rate"] = n / (cres["t_last"] - t0)
        out["first_to_last_rate"] = n / max(1e-9, cres["t_last"] - cres["t_first"])
    out["ok"] = out["received"] >= n and "rate" in out
    if not out["ok"]:
        out["error"] = cres.get("error") or f"received {out['received']} of {n}"
    return out


class RunFailed(Exception):
    pass


class RunUnsupported(RunFailed):
    """The client said it cannot do the scenario (``unsupported`` event, with the reason)."""


class Child:
    """One contender process (``clients/child.py``): JSON lines out, ``go``/``stop`` in."""

    def __init__(self, spec: Dict[str, Any], tmpdir: str) -> None:
        self.spec = spec
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [REPO, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.err_path = os.path.join(tmpdir, f"{spec['client_id']}.stderr")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clients.child", json.dumps(spec)], cwd=HERE, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True,
            bufsize=1)
        self.lines: "queue.Queue[Optional[dict]]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self.lines.put({"event": "noise", "line": line})
        self.lines.put(None)

    def expect(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                msg = self.lines.get(timeout=max(0.0, left))
            except queue.Empty:
                raise RunFailed(
                    f"timeout: no {event!r} from {self.name} within {timeout:g} s") from None
            if msg is None:
                raise RunFailed(f"{self.name} exited (code {self.proc.wait()}) before {event!r}"
                                f"{self.stderr_tail()}")
            if msg.get("event") == event:
                return msg
            if msg.get("event") == "error":
                raise RunFailed(f"{self.name}: {msg.get('error')}")
            if msg.get("event") == "unsupported":
                raise RunUnsupported(f"unsupported: {msg.get('reason')}")

    @property
    def name(self) -> str:
        return f"{self.spec['client']}/{self.spec['role']}"

    def send(self, word: str) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def stderr_tail(self) -> str:
        try:
            with open(self.err_path, "rb") as f:
                tail = f.read()[-600:].decode(errors="replace").strip()
        except OSError:
            return ""
        return f": {tail}" if tail else ""

    def close(self, grace: float = 5.0) -> None:
        """End of input means stop; kill it if it does not exit in ``grace`` seconds."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._err.close()


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: Optional[int]) -> Optional[float]:
    """User + system CPU seconds of a live process (all its threads), from /proc; None off
    Linux or once it is gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


class CpuMeter:
    """CPU seconds each named process spent between its creation and ``stop()``: where a run's
    time went on a shared machine (the broker at 100% of a core sets the pace; whatever a
    client spends beyond that is taken from it)."""

    def __init__(self, **pids: Optional[int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.before = {k: cpu_seconds(p) for k, p in pids.items()}

    def stop(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"wall": round(time.monotonic() - self.t0, 3)}
        for k, pid in self.pids.items():
            b, a = self.before[k], cpu_seconds(pid)
            out[k] = None if a is None or b is None else round(a - b, 3)
        return out


def cpu_note(run: Dict[str, Any]) -> str:
    """`` [cpu s: broker 1.93, publisher 0.31, subscriber 1.20 of 2.10 wall]`` for a run's
    progress line (empty when it was not measured)."""
    cpu = run.get("cpu") or {}
    used = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v is not None and k != "wall")
    return f" [cpu s: {used} of {cpu['wall']:.2f} wall]" if used else ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Broker:
    """A private mosquitto on 127.0.0.1 (config and log in a temporary directory)."""

    def __init__(self, tmpdir: str) -> None:
        self.tmpdir = tmpdir
        self.log_path = os.path.join(tmpdir, "mosquitto.log")
        self.conf_path = os.path.join(tmpdir, "mosquitto.conf")
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.version = ""

    def start(self) -> int:
        exe = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
        if exe is None:
            raise RuntimeError("mosquitto not found (apt-get install mosquitto)")
        for _attempt in range(5):
            self.port = free_port()
            lines = [
                f"listener {self.port} {HOST}",
                "allow_anonymous true",
                "persistence false",
                "max_queued_messages 10000000",
                "max_inflight_messages 0",
                "queue_qos0_messages true",  # the backlog runs: QoS 0 kept for an offline session
                f"log_dest file {self.log_path}",
                "log_type error", "log_type warning", "log_type notice",
                "log_type information", "log_type subscribe",
                "connection_messages true",
            ]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                lines.append("user root")  # else it drops to "mosquitto", who cannot write the log
            with open(self.conf_path, "w") as f:
                f.write("\n".join(lines) + "\n")
            self.proc = subprocess.Popen([exe, "-c", self.conf_path], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection((HOST, self.port), timeout=0.5).close()
                    self.version = self._read_version()
                    return self.port
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"mosquitto did not start; see {self.log_path}")

    def _read_version(self) -> str:
        m = re.search(r"mosquitto version (\S+)", self.log_text())
        return m.group(1) if m else "?"

    def log_text(self, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def wait_subscribed(self, client_id: str, topic: str, since: int, timeout: float) -> bool:
        """Wait for the broker's "<client id> <qos> <topic>" subscribe log line."""
        pat = re.compile(rf"^\d+: {re.escape(client_id)} \d {re.escape(topic)}$", re.M)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pat.search(self.log_text(since)):
                return True
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


# ---------------------------------------------------------------------- one measurement

class Bench:
    def __init__(self, args: argparse.Namespace, tmpdir: str) -> None:
        self.args = args
        self.n = args.messages
        self.timeout = args.timeout
        self.tmpdir = tmpdir
        self.broker: Optional[Broker] = None
        self.seq = 0
        self.child_info: Dict[str, dict] = {}

    def spec(self, key: str, role: str, port: int, topic: str, qos: int,
             n: Optional[int] = None, protocol: int = 4, **extra: Any) -> Dict[str, Any]:
        self.seq += 1
        client, variant = CHILD.get(key, (key, "loop"))
        window: Optional[int] = {"paho": self.args.paho_window,
                                 "mqttfast": self.args.mqttfast_window,
                                 "mqttium": self.args.mqttium_window,
                                 "raw": self.args.raw_window,
                                 "awscrt": getattr(self.args, "awscrt_window", 60000),
                                 }.get(client, 65535)
        if variant == "default":
            window = None  # the client's own default
        elif qos == 2:
            window = min(window or 65535, self.args.qos2_window)
        spec = {"client": client, "role": role, "variant": variant, "host": HOST, "port": port,
                "topic": topic, "n": self.n if n is None else n, "qos": qos,
                "protocol": protocol,
                "payload_size": PAYLOAD_SIZE, "timeout": self.timeout, "window": window,
                "client_id": f"bench-{key}-{role}-{os.getpid()}-{self.seq}"}
        if client == "mqttfast" and getattr(self.args, "mqttfast_read_delay", None) is not None:
            spec["read_delay"] = self.args.mqttfast_read_delay
        spec.update(extra)
        return spec

    def topic(self, scenario: Scenario) -> str:
        return f"bench/{scenario.key}/{os.getpid()}/{self.seq + 1}"

    def _remember(self, key: str, msg: dict) -> None:
        info = {k: msg[k] for k in ("version", "codec") if k in msg}
        if info:
            self.child_info[CHILD.get(key, (key,))[0]] = info

    def run(self, scenario: Scenario, key: str) -> Dict[str, Any]:
        t_start = time.monotonic()
        children: List[Child] = []
        try:
            if scenario.kind == "publish":
                out = self._broker_publish(scenario, key, children)
            elif scenario.kind == "receive":
                out = (self._mosquitto_sub(scenario, children) if key == "mosquitto_sub"
                       else self._broker_receive(scenario, key, children))
            elif scenario.kind == "backlog":
                out = (self._mosquitto_sub_backlog(scenario, children) if key == "mosquitto_sub"
                       else self._broker_backlog(scenario, key, children))
            elif scenario.kind == "standin-publish":
                out = self._standin_publish(scenario, key, children)
            else:
                out = self._standin_receive(scenario, key, children)
        except RunUnsupported as e:
            out = {"ok": False, "unsupported": True, "error": str(e)}
        except RunFailed as e:
            out = {"ok": False, "error": str(e), "timed_out": str(e).startswith("timeout")}
        except Exception as e:  # a bug here must not sink the table
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        finally:
            for child in children:
                child.close()
        parts = [out.get(k) for k in ("publisher", "subscriber", "client", "feeder")]
        if not out.get("ok") and any(p.get("timed_out") for p in parts if p):
            out["timed_out"] = True
            out["error"] = f"timeout ({self.timeout:g} s): {out.get('error')}"
        out["wall"] = time.monotonic() - t_start
        return out

    def _meter(self, **children: Child) -> CpuMeter:
        broker = self.broker.proc if self.broker is not None else None
        return CpuMeter(broker=broker.pid if broker is not None else None,
                        **{k: c.proc.pid for k, c in children.items()})

    def _broker_publish(self, sc: Scenario, key: str, children: List[Child]) -> Dict[str, Any]:
        n, port = self.n, self.broker.port  # type: ignore[union-attr]
        topic = self.topic(sc)
        sub = Child(self.spec("raw", "subscriber", port, topic, 0), self.tmpdir)
        children.append(sub)
        pub = Child(self.spec(key, "publish", port, topic, sc.qos, protocol=sc.protocol),
                    self.tmpdir)
        children.append(pub)
        self._remember(key, pub.expect("ready", 20))
        sub.expect("ready", 20)
        meter = self._meter(publisher=pub, subscriber=sub)
        pub.send("go")
        pres = pub.expect("result", self.timeout + 15)
        # The subscriber may still be draining the broker's queue; give it a few seconds.
        try:
            sres = sub.expect("result", 10)
        except RunFailed:
            sub.send("stop")
            sres = sub.expect("result", 5)
        received = sres["received"]
        out: Dict[str, Any] = {"publisher": pres, "subscriber": sres, "received": received,
                               "lost": n - received, "cpu": meter.stop()}
        t0 = pres["t0"]
        t_done, t_last = pres.get("t_done"), sres.get("t_last")
        # QoS 0: delivered when the subscriber has them all. QoS 1/2: and all acknowledged.
        ends = [t for t in ((t_last,) if sc.qos == 0 else (t_done, t_last)) if t is not None]
        if ends:
            end = max(ends)
            out["rate"] = min(received, n) / (end - t0) if end > t0 else None
            if t_done:
                out["publisher_rate"] = n / (t_done - t0)
            if sc.qos == 0 and t_done and t_last:
                out["warning"] = _lag_warning("the subscriber", t0, t_last, t_done)
        errors = []
        if not pres.get("ok"):
            errors.append(f"publisher completed {pres.get('completed')} of {n}"
                          + (f" ({pres['error']})" if pres.get("error") else ""))
        if received != n:
            errors.append(f"subscriber received {received} of {n}"
                          + (f" ({sres['error']})" if sres.get("error") else ""))
        out["ok"] = not errors
        if errors:
            out["error"] = "; ".join(errors)
        return out

    def _feeder(self, sc: Scenario, topic: str, children: List[Child]) -> Child:
        # N plus a margin: mosquitto writes with Nagle on, so a run's last segment can wait
        # ~40 ms for the reader's delayed ACK; with a margin the N-th message is never the last.
        feeder = Child(self.spec("raw", "publish", self.broker.port, topic, 0,  # type: ignore
                                 n=self.n + RECEIVE_MARGIN, ping=True), self.tmpdir)
        children.append(feeder)
        return feeder

    def _broker_receive(self, sc: Scenario, key: str, children: List[Child]) -> Dict[str, Any]:
        n, port = self.n, self.broker.port  # type: ignore[union-attr]
        topic = self.topic(sc)
        client = Child(self.spec(key, "receive", port, topic, 0, protocol=sc.protocol),
                       self.tmpdir)
        children.append(client)
        feeder = self._feeder(sc, topic, children)
        self._remember(key, client.expect("ready", 20))
        feeder.expect("ready", 20)
        meter = self._meter(feeder=feeder, client=client)
        feeder.send("go")
        fres = feeder.expect("result", self.timeout + 15)
        try:
            cres = client.expect("result", 15)
        except RunFailed:
            client.send("stop")
            cres = client.expect("result", 5)
        received = cres["received"]
        out: Dict[str, Any] = {"feeder": fres, "client": cres, "received": received,
                               "lost": max(0, n - received), "cpu": meter.stop()}
        return _receiver_rates(out, cres, n, fres["t0"])

    def _mosquitto_sub_args(self, sc: Scenario) -> Tuple[List[str], str, str]:
        """``mosquitto_sub`` for this run (QoS 0, the scenario's protocol), its topic, its id."""
        assert self.broker is not None
        exe = shutil.which("mosquitto_sub")
        if exe is None:
            raise RunFailed("mosquitto_sub not found (apt-get install mosquitto-clients)")
        topic = self.topic(sc)
        self.seq += 1
        cid = f"bench-mosquitto_sub-{os.getpid()}-{self.seq}"
        return ([exe, "-h", HOST, "-p", str(self.broker.port), "-V",
                 "mqttv5" if sc.protocol == 5 else "mqttv311", "-i", cid, "-q", "0",
                 "-t", topic], topic, cid)

    def _mosquitto_sub(self, sc: Scenario, children: List[Child]) -> Dict[str, Any]:
        n, broker = self.n, self.broker
        assert broker is not None
        cmd, topic, cid = self._mosquitto_sub_args(sc)
        feeder = self._feeder(sc, topic, children)
        since = broker.log_size()
        proc = subprocess.Popen(cmd + ["-C", str(n)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            if not broker.wait_subscribed(cid, topic, since, 20):
                raise RunFailed("mosquitto_sub did not subscribe within 20 s")
            feeder.expect("ready", 20)
            # Popen.wait(timeout) polls with sleeps of up to 50 ms; a blocking wait in a thread
            # stamps the exit to within a scheduling delay.
            exited: List[float] = []
            waiter = threading.Thread(target=lambda: (proc.wait(), exited.append(perf_counter())),
                                      daemon=True)
            waiter.start()
            feeder.send("go")
            waiter.join(self.timeout)
            if not exited:
                raise RunFailed(f"timeout: mosquitto_sub did not get {n} messages within "
                                f"{self.timeout:g} s (count unknown)")
            t_end = exited[0]
            fres = feeder.expect("result", 15)
            if proc.returncode != 0:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise RunFailed(f"mosquitto_sub exited with {proc.returncode}: {err[-300:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            if proc.stderr is not None:
                proc.stderr.close()
        self.child_info["mosquitto_sub"] = {"version": broker.version}
        return {"ok": True, "feeder": fres, "received": n, "lost": 0, "t_end": t_end,
                "rate": n / (t_end - fres["t0"])}

    def _fill_backlog(self, sc: Scenario, topic: str, children: List[Child]) -> Dict[str, Any]:
        """Feed N + the margin while the session under test is offline; the feeder's ping
        returns once the broker has read (and so queued) every message."""
        feeder = self._feeder(sc, topic, children)
        feeder.expect("ready", 20)
        feeder.send("go")
        return feeder.expect("result", self.timeout + 15)

    def _broker_backlog(self, sc: Scenario, key: str, children: List[Child]) -> Dict[str, Any]:
        n, port = self.n, self.broker.port  # type: ignore[union-attr]
        topic = self.topic(sc)
        client = Child(self.spec(key, "backlog", port, topic, 0, protocol=sc.protocol),
                       self.tmpdir)
        children.append(client)
        self._remember(key, client.expect("ready", 20))  # subscribed, then disconnected
        fres = self._fill_backlog(sc, topic, children)
        meter = self._meter(client=client)
        client.send("go")
        cres = client.expect("result", self.timeout + 15)
        received = cres["received"]
        out: Dict[str, Any] = {"feeder": fres, "client": cres, "received": received,
                               "lost": max(0, n - received), "cpu": meter.stop()}
        return _receiver_rates(out, cres, n, cres.get("t0"))

    def _mosquitto_sub_backlog(self, sc: Scenario, children: List[Child]) -> Dict[str, Any]:
        n, broker = self.n, self.broker
        assert broker is not None
        cmd, topic, _ = self._mosquitto_sub_args(sc)
        base = cmd + ["-c"] + (["-x", str(SESSION_EXPIRY)] if sc.protocol == 5 else [])  # a lasting session
        # -E: exit once subscribed, leaving the session (and its subscription) at the broker
        prime = subprocess.run(base + ["-E"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               timeout=20)
        if prime.returncode != 0:
            raise RunFailed(f"mosquitto_sub -E exited with {prime.returncode}: "
                            f"{prime.stderr.decode(errors='replace')[-300:]}")
        fres = self._fill_backlog(sc, topic, children)
        t0 = perf_counter()  # includes starting the process: slightly against mosquitto_sub
        proc = subprocess.run(base + ["-C", str(n)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=self.timeout)
        t_end = perf_counter()
        if proc.returncode != 0:
            raise RunFailed(f"mosquitto_sub exited with {proc.returncode}: "
                            f"{proc.stderr.decode(errors='replace')[-300:]}")
        self.child_info["mosquitto_sub"] = {"version": broker.version}
        return {"ok": True, "feeder": fres, "received": n, "lost": 0, "t0": t0, "t_end": t_end,
                "rate": n / (t_end - t0)}

    def _standin_publish(self, sc: Scenario, key: str, children: List[Child]) -> Dict[str, Any]:
        from standin_peer import StandinPeer
        n = self.n
        with StandinPeer(mode="discard", max_lifetime=self.timeout + 60) as peer:
            port = int(peer.port)  # type: ignore[arg-type]
            pub = Child(self.spec(key, "publish", port, "bench/standin", 0,
                                  protocol=sc.protocol), self.tmpdir)
            children.append(pub)
            self._remember(key, pub.expect("ready", 20))
            pub.send("go")
            # Once the client's publish loop has returned, poll the peer's count every
            # millisecond: the end of the run is when it has all N.
            pub.expect("queued", self.timeout + 15)
            try:
                st = peer.wait_for(timeout=self.timeout, interval=0.001, publishes_received=n)
            except TimeoutError:
                st = peer.stats()
            t_seen = perf_counter()
            pres = pub.expect("result", self.timeout + 15)
        received = st["publishes_received"]
        out: Dict[str, Any] = {"publisher": pres, "peer": st, "received": received,
                               "lost": n - received, "t_peer_seen": t_seen}
        out["rate"] = min(received, n) / (t_seen - pres["t0"])
        if pres.get("t_done"):
            out["written_rate"] = n / (pres["t_done"] - pres["t0"])
            out["warning"] = _lag_warning("the peer", pres["t0"], t_seen, pres["t_done"])
        out["ok"] = bool(pres.get("ok")) and received == n
        if not out["ok"]:
            out["error"] = (f"written {pres.get('completed')} of {n}, peer counted {received}"
                            + (f", peer errors: {st.get('last_error')}" if st.get("errors")
                               else ""))
        return out

    def _standin_receive(self, sc: Scenario, key: str, children: List[Child]) -> Dict[str, Any]:
        from standin_peer import StandinPeer
        n = self.n
        topic = "bench/standin"
        with StandinPeer(mode="replay", count=n, topic=topic, payload_size=PAYLOAD_SIZE, qos=0,
                         max_lifetime=self.timeout + 60) as peer:
            port = int(peer.port)  # type: ignore[arg-type]
            client = Child(self.spec(key, "receive", port, topic, 0, protocol=sc.protocol),
                           self.tmpdir)
            children.append(client)
            self._remember(key, client.expect("ready", 20))
            cres = client.expect("result", self.timeout + 15)
            st = peer.stats()
        received = cres["received"]
        out: Dict[str, Any] = {"client": cres, "peer": st, "received": received,
                               "lost": n - received}
        if cres.get("t_last") is not None:
            out["rate"] = n / (cres["t_last"] - cres["t_first"])
        out["ok"] = received == n
        if received != n:
            out["error"] = f"received {received} of {n} (peer sent {st.get('publishes_sent')})"
        return out


def _lag_warning(who: str, t0: float, t_end: float, t_done: float) -> Optional[str]:
    """A note when the client's own completion signal came well after ``who`` had it all."""
    lag = t_done - t_end
    if lag > max(0.05, 0.1 * (t_end - t0)):
        return (f"the client's completion signal (written) came {lag * 1e3:.0f} ms after "
                f"{who} had all messages ({(t_end - t0) * 1e3:.0f} ms into the run)")
    return None


# ---------------------------------------------------------------------- the table

def summarize(scenario: Scenario, key: str, runs: List[dict], n: int) -> dict:
    rates = [r["rate"] for r in runs if r.get("ok") and r.get("rate")]
    losts = [r["lost"] for r in runs if r.get("lost") is not None and not r.get("timed_out")]
    errors = [r["error"] for r in runs if r.get("error")]
    warnings = [r["warning"] for r in runs if r.get("warning")]
    reader = scenario.kind in ("receive", "backlog") and key == "raw"
    label = "raw reader" if reader else LABELS[key]
    row = {"scenario": scenario.key, "client": key, "label": label, "runs": len(runs),
           "ok_runs": len(rates), "rates": [r.get("rate") for r in runs],
           "rate": statistics.median(rates) if rates else None,
           "lost": max(losts, key=abs) if losts else None, "errors": errors,
           "timed_out": sum(1 for r in runs if r.get("timed_out")),
           "unsupported": bool(runs) and all(r.get("unsupported") for r in runs),
           "warnings": warnings}
    if rates and len(rates) > 1:
        row["spread"] = (max(rates) - min(rates)) / row["rate"]
    return row


def reference_rate(scenario: Scenario, rows: Dict[str, dict], key: str) -> Optional[float]:
    if scenario.reference == "target":
        return target_rate(scenario, key)
    ref = rows.get(scenario.reference)
    return ref["rate"] if ref else None


def fmt_rate(row: dict) -> str:
    if row["rate"] is None:
        if row.get("unsupported"):
            return "unsupported"
        if any("not installed" in e for e in row["errors"]):
            return "n/a"
        return "TIMEOUT" if row["timed_out"] else "FAILED"
    return f"{row['rate']:,.0f}"


def render(results: Dict[str, Dict[str, dict]], meta: dict) -> Tuple[str, List[dict]]:
    out = []
    out.append(f"command: {meta['command']}")
    out.append(f"  N = {meta['n']:,} messages of {PAYLOAD_SIZE} B per run, median of "
               f"{meta['repeats']} run(s), MQTT 3.1.1 (v5 rows: MQTT 5) on {HOST}, mosquitto "
               f"{meta['versions'].get('mosquitto', '?')}, {meta['machine']['cpus']} CPUs, "
               f"load {meta['machine']['load_before']}")
    out.append(f"  in-flight windows: mqttfast {meta['windows']['mqttfast']} (mqttfast default: "
               f"its own), raw {meta['windows']['raw']}, paho {meta['windows']['paho']}, "
               f"mqttium {meta['windows']['mqttium']}, zmqtt 65535 coroutines, awscrt "
               f"{meta['windows'].get('awscrt', 65535)} outstanding, gmqtt none (65535 ids); "
               f"QoS 2 capped at {meta['windows']['qos2_cap']}")
    out.append("")
    out.append(f"{'scenario':<20} {'client':<16} {'msg/s':>11}   {'ratio vs reference':<20} "
               f"{'lost':>6}  {'spread':>6}  {'ok runs':>7}")
    notes = []
    for sc in SCENARIOS:
        rows = results.get(sc.key)
        if not rows:
            continue
        for key in sc.entries:
            row = rows.get(key)
            if row is None:
                continue
            ref = reference_rate(sc, rows, key)
            ratio = row["rate"] / ref if row["rate"] and ref else None
            row["ratio"] = ratio
            if sc.reference == "target":
                rtxt = f"{ratio:.2f}x {ref / 1e6:g}M" if ratio is not None and ref else "-"
            elif key == sc.reference:
                rtxt = "1.00 (reference)" if ratio is not None else "-"
            else:
                rtxt = f"{ratio:.2f}x" if ratio is not None else "-"
            lost = "-" if row["lost"] is None else f"{row['lost']:,}"
            spread = f"{row['spread'] * 100:.0f}%" if row.get("spread") is not None else ""
            out.append(f"{sc.title:<20} {row['label']:<16} {fmt_rate(row):>11}   {rtxt:<20} "
                       f"{lost:>6}  {spread:>6}  {row['ok_runs']:>3}/{row['runs']:<3}")
            for err in dict.fromkeys(row["errors"]):
                notes.append(f"  {sc.title} / {row['label']}: {err}")
            if row["warnings"]:
                notes.append(f"  {sc.title} / {row['label']}: {row['warnings'][0]}"
                             + (f" (in {len(row['warnings'])} of {row['runs']} runs)"
                                if row["runs"] > 1 else ""))
    out.append("")
    out.append("references: " + "; ".join(f"{sc.title}: {sc.ref_label}" for sc in SCENARIOS
                                            if sc.key in results))
    out.append("rates: publish = N / (first publish -> the subscriber has all N; QoS 1/2: and "
               "every ack); receive = N / (feeder's first write -> N-th on_message); "
               "backlog = N / (connect to the held session -> N-th on_message); "
               "broker-free publish = N / (first publish -> the peer counted all N); broker-free "
               "receive = N / (first -> N-th on_message). spread = (max - min) / median.")
    targets = []
    out.append("")
    out.append("targets:")
    for desc, skey, key, kind, value in TARGETS:
        row = results.get(skey, {}).get(key)
        if row is None:
            continue
        if kind.startswith(("vs:", "twin:")):
            name = kind.split(":", 1)[1]
            other = (results.get(skey, {}).get(name) if kind.startswith("vs:")
                     else results.get(name, {}).get(key))
            got = (row["rate"] / other["rate"] if other and other.get("rate") and row.get("rate")
                   else None)
        else:
            got = row.get("ratio") if kind == "ratio" else row.get("rate")
        if got is None:
            verdict = "n/a"
            shown = fmt_rate(row)
        else:
            verdict = "PASS" if got >= value else "FAIL"
            shown = f"{got:,.0f} msg/s" if kind == "rate" else f"{got:.2f}x"
        targets.append({"target": desc, "scenario": skey, "client": key, "kind": kind,
                        "value": value, "measured": got, "verdict": verdict})
        out.append(f"  {verdict:<5} {desc:<50} measured {shown}")
    if notes:
        out.append("")
        out.append("failures and warnings:")
        out.extend(notes)
    return "\n".join(out), targets


MD_TITLES = {"publish": "QoS {qos} publish", "receive": "QoS 0 receive, `on_message`",
             "backlog": "QoS 0 backlog drain, `on_message`",
             "standin-publish": "broker-free QoS 0 publish", "standin-receive":
             "broker-free receive + callback"}


def markdown(results: Dict[str, Dict[str, dict]], meta: dict) -> str:
    """The README's table for one run: scenario, client, median msg/s, ratio to the scenario's
    reference of the same run, spread of the runs, with the command above it. Call ``render``
    first: it sets each row's ratio."""
    versions = meta.get("versions", {})
    lines = [f"`{meta['command']}`", "",
             f"({meta['n']:,} x {meta.get('payload_size', PAYLOAD_SIZE)} B, median of "
             f"{meta['repeats']}, mosquitto {versions.get('mosquitto', '?')}, "
             f"{meta['machine']['cpus']} CPUs, CPython {meta['machine']['python']}, "
             f"started {meta.get('started', '?')}, {meta.get('elapsed', 0):.0f} s)", "",
             f"| scenario | client | msg/s | ratio | spread of {meta['repeats']} |",
             "| --- | --- | ---: | ---: | ---: |"]
    for sc in SCENARIOS:
        rows = results.get(sc.key)
        if not rows:
            continue
        title = MD_TITLES[sc.kind].format(qos=sc.qos)
        if sc.kind == "publish" and sc.qos:
            title += ", all acked" if sc.qos == 1 else ", all completed"
        title += " (MQTT 5)" if sc.protocol == 5 else " (3.1.1)"
        for key in sc.entries:
            row = rows.get(key)
            if row is None:
                continue
            ratio = row.get("ratio")
            if key == sc.reference and sc.reference != "target":
                rtxt = "reference"
            elif sc.reference == "target" or ratio is None:
                rtxt = "–"
            else:
                rtxt = f"{ratio:.2f}×"
            spread = f"{row['spread'] * 100:.0f}%" if row.get("spread") is not None else ""
            rate = fmt_rate(row)
            if row["rate"] is not None and row["ok_runs"] < row["runs"]:
                rate += f" ({row['ok_runs']} of {row['runs']} ok)"
            lines.append(f"| {title} | {row['label']} | {rate} | {rtxt} | {spread} |")
    return "\n".join(lines) + "\n"


def rerender(path: str, md_path: Optional[str]) -> int:
    """Print the table of a saved ``--json`` run again (and its Markdown), running nothing."""
    with open(path) as f:
        doc = json.load(f)
    results: Dict[str, Dict[str, dict]] = {}
    for row in doc["summary"]:
        results.setdefault(row["scenario"], {})[row["client"]] = row
    table, _targets = render(results, doc["meta"])
    print(table)
    if md_path:
        with open(md_path, "w") as f:
            f.write(markdown(results, doc["meta"]))
    return 0


# ---------------------------------------------------------------------- main

def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(),
            "implementation": platform.python_implementation(), "cpu": cpu,
            "cpus": os.cpu_count(), "load_before": _load()}


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def versions() -> dict:
    from importlib import metadata
    out: Dict[str, Optional[str]] = {}
    for dist, name in (("paho-mqtt", "paho"), ("gmqtt", "gmqtt"), ("mqttium", "mqttium"),
                       ("awscrt", "awscrt"), ("zmqtt", "zmqtt")):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def select(only: Optional[str]) -> List[Tuple[Scenario, List[str]]]:
    tokens = {t.strip() for t in (only or "").split(",") if t.strip()}
    known = {sc.key for sc in SCENARIOS} | set(LABELS)
    unknown = tokens - known
    if unknown:
        raise SystemExit(f"--only: unknown name(s) {sorted(unknown)}; known: {sorted(known)}")
    scenarios = tokens & {sc.key for sc in SCENARIOS}
    clients = tokens - scenarios
    chosen = []
    for sc in SCENARIOS:
        if scenarios and sc.key not in scenarios:
            continue
        if not clients:  # nothing named, or only scenarios: every client of each
            entries = list(sc.entries)
        else:  # clients named: those, in the named scenarios (or in every one)
            entries = [e for e in sc.entries if e in clients]
            if not entries:
                continue
            if sc.reference in sc.entries and sc.reference not in entries:
                entries.insert(0, sc.reference)
        chosen.append((sc, entries))
    return chosen


def groups(plan: List[Tuple[Scenario, List[str]]],
           interleave: bool) -> List[List[Tuple[Scenario, List[str]]]]:
    """The plan in groups whose runs alternate. Each scenario is its own group, unless
    ``interleave``: then a scenario and its MQTT 5 twin (``key``, ``key-v5``) share one, so a
    slow drift of the machine cannot make a step between the two protocols."""
    if not interleave:
        return [[item] for item in plan]
    by_key = {sc.key: (sc, entries) for sc, entries in plan}
    out: List[List[Tuple[Scenario, List[str]]]] = []
    for sc, entries in plan:
        if sc.key.endswith("-v5") and sc.key[:-3] in by_key:
            continue  # runs in its 3.1.1 twin's group
        group = [(sc, entries)]
        if sc.key + "-v5" in by_key:
            group.append(by_key[sc.key + "-v5"])
        out.append(group)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Scenarios, rates and windows: see the docstring of "
                                        "benchmarks/bench_clients.py.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="N = 50,000 and one run per measurement")
    ap.add_argument("--json", metavar="PATH", help="write every run and the summary here")
    ap.add_argument("--markdown", metavar="PATH",
                    help="also write the table as Markdown (the README's form) here")
    ap.add_argument("--render", metavar="JSON",
                    help="run nothing: print the table (and --markdown) of a saved --json run")
    ap.add_argument("--only", metavar="NAMES",
                    help="comma-separated scenario and/or client names: the named clients in the named "
                         "scenarios (either may be left out; references always run)")
    ap.add_argument("-n", "--messages", type=int, default=None,
                    help="messages per run (default 200,000; --quick 50,000)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="runs per measurement, median shown (default 3; --quick 1)")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds one run may take before it is reported as timed out")
    ap.add_argument("--paho-window", type=int, default=20,
                    help="paho max_inflight_messages_set (default 20, paho's own; see the docstring)")
    ap.add_argument("--qos2-window", type=int, default=1000,
                    help="cap on every client's QoS 2 window (default 1000; see the docstring)")
    ap.add_argument("--mqttium-window", type=int, default=65535,
                    help="mqttium max_outbound_inflight and max_unacknowledged_messages "
                         "(default 65535; its own defaults are 20 and 10,000)")
    ap.add_argument("--mqttfast-window", type=int, default=65535,
                    help="mqttfast max_inflight (default 65535, its own default)")
    ap.add_argument("--awscrt-window", type=int, default=60000,
                    help="awscrt: most operations outstanding (default 60000: its 3.1.1 client "
                         "fails the excess with AWS_ERROR_MQTT_QUEUE_FULL near 65,535)")
    ap.add_argument("--mqttfast-read-delay", type=float, default=None, metavar="S",
                    help="mqttfast's max_read_delay in the receive runs (default: the "
                         "client's own; 0 reads at once, 0.001 batches reads up to 1 ms)")
    ap.add_argument("--interleave-protocols", action="store_true",
                    help="alternate the runs of each scenario and its MQTT 5 twin (-v5), so "
                         "their ratio is measured in the same stretch of time")
    ap.add_argument("--raw-window", type=int, default=65535,
                    help="raw QoS 1 ceiling: most unacknowledged frames (default 65535)")
    args = ap.parse_args(argv)
    if args.render:
        return rerender(args.render, args.markdown)
    if args.messages is None:
        args.messages = 50_000 if args.quick else 200_000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    plan = select(args.only)
    command = "python " + " ".join([os.path.relpath(sys.argv[0], REPO)
                                    if os.path.exists(sys.argv[0]) else sys.argv[0]]
                                   + sys.argv[1:])
    meta: Dict[str, Any] = {"command": command, "argv": sys.argv, "cwd": os.getcwd(),
                            "n": args.messages, "repeats": args.repeats,
                            "timeout": args.timeout,
                            "windows": {"mqttfast": args.mqttfast_window, "raw": args.raw_window,
                                        "mqttium": args.mqttium_window,
                                        "awscrt": args.awscrt_window,
                                        "paho": args.paho_window, "qos2_cap": args.qos2_window},
                            "payload_size": PAYLOAD_SIZE, "machine": machine_info(),
                            "versions": versions(),
                            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    t_start = time.monotonic()
    results: Dict[str, Dict[str, dict]] = {}
    raw_runs: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_clients-") as tmpdir:
        bench = Bench(args, tmpdir)
        broker = None
        if any(sc.kind in ("publish", "receive", "backlog") for sc, _ in plan):
            broker = Broker(tmpdir)
            broker.start()
            bench.broker = broker
            meta["versions"]["mosquitto"] = broker.version
        try:
            for group in groups(plan, args.interleave_protocols):
                per: Dict[str, Dict[str, List[dict]]] = {
                    sc.key: {k: [] for k in entries} for sc, entries in group}
                for rep in range(args.repeats):
                    for sc, entries in group:
                        for key in entries:
                            r = bench.run(sc, key)
                            r.update(scenario=sc.key, client=key, repeat=rep)
                            per[sc.key][key].append(r)
                            raw_runs.append(r)
                            rate = f"{r['rate']:,.0f} msg/s" if r.get("rate") else "-"
                            status = "ok" if r.get("ok") else f"FAILED: {r.get('error')}"
                            print(f"  [{time.monotonic() - t_start:6.1f}s] {sc.key:<16} "
                                  f"{key:<14} run {rep + 1}/{args.repeats}: {rate} ({status})"
                                  f"{cpu_note(r)}", file=sys.stderr, flush=True)
                for sc, _ in group:
                    results[sc.key] = {k: summarize(sc, k, runs, args.messages)
                                       for k, runs in per[sc.key].items()}
        finally:
            if broker is not None:
                if broker.proc is not None and broker.proc.poll() is not None:
                    meta["broker_exit"] = broker.proc.returncode
                meta["broker_log_tail"] = broker.log_text()[-2000:]
                broker.stop()
    meta["machine"]["load_after"] = _load()
    meta["versions"].update({k: v for k, v in bench.child_info.items()})
    meta["elapsed"] = time.monotonic() - t_start
    table, targets = render(results, meta)
    print(table)
    print(f"\n(total {meta['elapsed']:.0f} s)")
    if args.json:
        doc = {"meta": meta, "summary": [row for sc in results.values() for row in sc.values()],
               "targets": targets, "runs": raw_runs}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
