#!/usr/bin/env python
"""The load generator at scale: ``mqttfast bench`` against references measured in the same run.

    python benchmarks/bench_scale.py                    # 10,000 clients (about 1-2 minutes)
    python benchmarks/bench_scale.py --quick            # 2,000 clients, fewer messages
    python benchmarks/bench_scale.py --json scale.json --clients 10000 --conn-rate 10000

Everything runs on loopback. The script raises its own open-file limit to the hard limit (the
broker and the tools it starts inherit it), starts its own mosquitto (``max_connections -1``,
``max_queued_messages 10000000`` so QoS 0 fan-out is not dropped, no log, a free port) and stops
it at the end. Each scenario connects from its own loopback source addresses (127.A.B.x, A and B
random per run, one address per 20,000 clients), so that the ephemeral ports of one scenario,
lingering in TIME_WAIT, never slow down the next. Every tool runs in its own process, with a
timeout; the command that produced each figure is in the JSON.

Scenarios:

``connections``
    ``mqttfast bench conn -c N -R RATE`` (N connections in one process, held, then closed) vs a
    bare-socket connector (non-blocking sockets, a pre-encoded CONNECT per client id, counting
    CONNACKs; ``_raw_connect`` below) at the same target rate. Figures: achieved connections per
    second (first start to last CONNACK), connect-time percentiles, and the bench process's
    resident memory (VmRSS from its /proc/self/status, the largest value it sampled). Targets:
    >= 5,000 connections/s, < 200 MB.
``qos0-publish``
    ``mqttfast bench pub -c 100 -I 0`` (100 publishers, as fast as possible, QoS 0, 64-byte
    payloads, M messages in total) vs one saturated mqttfast connection (``Client.publish_many``
    in batches of 1,000) and vs ``bench pub -c 1 -I 0``. A QoS 0 run ends when the broker has
    read everything: the bench sends a PINGREQ behind each connection's last PUBLISH and waits for
    the PINGRESPs, the Client publishes a last QoS 1 message and waits for its PUBACK. Rate = M /
    (first publish to that acknowledgement). Target ratio >= 0.9.
``fan-out``
    Does ``mqttfast bench sub -c N`` (N subscribers of one topic, QoS 0, one process) keep up
    with the broker? The reference gets the same feed from the same broker: N bare sockets in
    one process (``scale_ref.py``: one ``selectors`` loop, a pre-encoded CONNECT + SUBSCRIBE
    each, then only ``recv_into`` and a byte count, deliveries = bytes / the fixed frame size).
    Each run has its own feeder process (payload headers, QoS 0, fenced by a QoS 1 publish) and
    its own topic; deliveries/s = deliveries / (first to last delivery, as the subscriber
    process saw them); counted vs expected (N x messages); CPU% of the broker and of the
    subscriber process from the feed's start to the last delivery. Two feeds:

    * paced: ``--fan-rate`` messages/s for ``--fan-seconds`` s (default 3/s for 5 s: 30,000
      deliveries/s for 10,000 subscribers, which mosquitto sustains on this kind of machine):
      everything must arrive, as fast as it is fed;
    * burst: ``--fan-messages`` as fast as possible: the broker, at ~100% of a core, sets the
      rate. ``--fan-repeats`` runs of each kind (default 3), alternated ABBA; the median run of
      each is shown, with the spread and every run's rate. A last run, bare sockets that sleep
      ``--pause-ms`` after each pass over the ready sockets, shows that the broker's cost per
      delivery depends on how its subscribers read and acknowledge. ``bench sub`` with more
      than one connection acknowledges every read at once (``--quickack``, its default there;
      ``mqttfast/quickack.py``); ``--no-quickack`` here passes it ``--no-quickack`` to compare.

    mqttfast keeps up when it gets >= 0.9x the bare sockets' deliveries/s with nothing missing.
    Then one subscriber: ``mosquitto_sub -C K2`` and ``bench sub -c 1`` each receive K2
    messages from an unpaced feeder; rate = K2 / (feed start to subscriber exit).

On a 2-core machine the broker and the tools share the cores, and mosquitto (one thread) is
the ceiling of most rows: compare ratios within a run, not figures across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

TIMEOUT = 180.0


# ---------------------------------------------------------------------------------- helpers

def raise_nofile() -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_ports() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            low, high = (int(x) for x in handle.read().split())
            return high - low + 1
    except (OSError, ValueError):
        return 28000


class Addresses:
    """Fresh loopback source addresses: 127.A.B.2, 127.A.B.3, ... (A, B random per run)."""

    def __init__(self) -> None:
        self.base = f"127.{random.randint(20, 250)}.{random.randint(1, 250)}"
        self.next = 2

    def take(self, clients: int) -> List[str]:
        per_address = max(1000, int(local_ports() * 0.7))
        count = max(1, -(-clients // per_address))
        out = [f"{self.base}.{self.next + i}" for i in range(count)]
        self.next += count
        return out


class Broker:
    """A mosquitto for this run only: no log, no persistence, no connection cap."""

    def __init__(self, tmpdir: str) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            sys.exit("mosquitto is not installed (apt-get install -y mosquitto mosquitto-clients)")
        self.port = free_port()
        conf = os.path.join(tmpdir, "mosquitto.conf")
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 "max_connections -1", "max_queued_messages 10000000",
                 "max_inflight_messages 0", "log_dest none", "sys_interval 0"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.insert(0, "user root")
        with open(conf, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([exe, "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"mosquitto exited: {self.proc.stderr.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    sys.exit("mosquitto did not start within 10 s")
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """The broker's CPU time so far (user + system, from /proc/PID/stat)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


SUB_OPTIONS: List[str] = []  # more options for every ``bench sub`` (--read-delay, --no-quickack)


def bench_cmd(*args: Any) -> List[str]:
    extra = SUB_OPTIONS if args and args[0] == "sub" else []
    return [sys.executable, "-m", "mqttfast.bench", *[str(a) for a in args], *extra]


def run_json(cmd: List[str], path: str, timeout: float = TIMEOUT) -> Dict[str, Any]:
    """Run a ``bench`` command that writes ``--json path``; its summary (or the error)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0 or not os.path.exists(path):
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-500:]}"}
    with open(path) as handle:
        return json.load(handle)["summary"]


def cpu_seconds(pid: int) -> Optional[float]:
    """CPU time (user + system) of a running process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


Sample = Tuple[float, float, Optional[float]]  # (time.monotonic, broker CPU s, process CPU s)


def wait_exit(proc: subprocess.Popen, timeout: float, broker: Broker,
              samples: List[Sample]) -> Optional[float]:
    """Wait for ``proc``; the monotonic time it was seen gone (None on timeout, then killed).
    Every 50 ms while it runs, ``samples`` gets the broker's and ``proc``'s CPU time."""
    deadline = time.monotonic() + timeout
    next_sample = 0.0
    while proc.poll() is None:
        now = time.monotonic()
        if now > deadline:
            proc.kill()
            proc.wait(5)
            return None
        if now >= next_sample:
            samples.append((now, broker.cpu_seconds(), cpu_seconds(proc.pid)))
            next_sample = now + 0.05
        time.sleep(0.002)
    return time.monotonic()


def cpu_shares(samples: List[Sample], t0: float, t1: float) -> Tuple[float, Optional[float]]:
    """The broker's and the process's CPU time from ``t0`` to ``t1`` over ``t1 - t0``, both
    interpolated between the samples around them (the first sample is at ``t0``)."""

    def at(t: float, column: int) -> Optional[float]:
        points = [(s[0], s[column]) for s in samples if s[column] is not None]
        if not points:
            return None
        before = [p for p in points if p[0] <= t] or points[:1]
        after = [p for p in points if p[0] >= t] or points[-1:]
        (ta, va), (tb, vb) = before[-1], after[0]
        return va if tb <= ta else va + (vb - va) * (t - ta) / (tb - ta)

    span = max(t1 - t0, 1e-9)
    broker = ((at(t1, 1) or 0.0) - (at(t0, 1) or 0.0)) / span
    end, start = at(t1, 2), at(t0, 2)
    return round(broker, 3), (round((end - start) / span, 3)
                              if end is not None and start is not None else None)


def wait_line(proc: subprocess.Popen, text: str, timeout: float) -> bool:
    """Read ``proc``'s stderr until a line contains ``text``."""
    assert proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if sel.select(0.1):
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                return False
            buf += chunk
            if text.encode() in buf:
                return True
            buf = buf[-4096:]
    return False


def drain_stderr(proc: subprocess.Popen) -> None:
    """Keep reading a child's stderr in the background so its live line never blocks it."""
    import threading

    def reader() -> None:
        assert proc.stderr is not None
        for _ in iter(lambda: proc.stderr.read(65536), b""):  # type: ignore[union-attr]
            pass

    threading.Thread(target=reader, daemon=True).start()


# ---------------------------------------------------------------------------------- references

def _raw_connect(port: int, n: int, rate: float, sources: List[str], hold: float) -> None:
    """The bare-socket connector: non-blocking sockets, a pre-encoded CONNECT each, CONNACKs
    counted; prints one JSON line."""
    from mqttfast.codec import encode
    from mqttfast.packets import Connect

    frames = [encode(Connect(f"raw_{os.getpid()}_{i}", 4, True, 300), 4) for i in range(n)]
    sel = selectors.DefaultSelector()
    socks: List[socket.socket] = []
    start_t = [0.0] * n
    lat: List[float] = []
    failed = 0
    started = acks = 0
    t0 = time.monotonic()
    last_ack = ack_99 = t0
    n99 = max(1, -(-n * 99 // 100))
    deadline = t0 + 60
    while acks + failed < n and time.monotonic() < deadline:
        now = time.monotonic()
        due = n if rate <= 0 else min(n, int((now - t0) * rate) + 1)
        while started < due:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind((sources[started % len(sources)], 0))
            sock.connect_ex(("127.0.0.1", port))
            sel.register(sock, selectors.EVENT_WRITE, started)
            start_t[started] = now
            socks.append(sock)
            started += 1
        for key, mask in sel.select(0.001):
            sock = key.fileobj  # type: ignore[assignment]
            i = key.data
            if mask & selectors.EVENT_WRITE:
                try:
                    sock.send(frames[i])
                    sel.modify(sock, selectors.EVENT_READ, i)
                except OSError:
                    failed += 1
                    sel.unregister(sock)
                continue
            try:
                data = sock.recv(64)
            except OSError:
                data = b""
            sel.unregister(sock)
            if data[:1] == b"\x20" and len(data) >= 4 and data[3] == 0:
                acks += 1
                last_ack = time.monotonic()
                lat.append(last_ack - start_t[i])
                if acks == n99:
                    ack_99 = last_ack
            else:
                failed += 1
    span = last_ack - t0
    time.sleep(hold)
    for sock in socks:
        sock.close()
    lat.sort()

    def pct(p: float) -> Optional[float]:
        return round(lat[min(len(lat) - 1, int(len(lat) * p))] * 1000, 3) if lat else None

    print(json.dumps({"connacks": acks, "failed": failed, "seconds": round(span, 3),
                      "rate": acks / span if span > 0 else None,
                      "rate_99": n99 / (ack_99 - t0) if ack_99 > t0 else None, "p50_ms": pct(0.5),
                      "p99_ms": pct(0.99), "max_ms": pct(1.0)}))


def _saturate_one(port: int, n: int, size: int, topic: str) -> None:
    """One saturated mqttfast connection (the Client facade, publish_many in batches of 1,000),
    fenced by a QoS 1 publish; prints one JSON line."""
    from mqttfast import Client

    client = Client(client_id=f"sat_{os.getpid()}", protocol=4)
    client.connect("127.0.0.1", port, keepalive=300)
    payload = b"x" * size
    batch = [payload] * 1000
    t0 = time.perf_counter()
    for _ in range(n // 1000):
        client.publish_many(topic, batch)
    if n % 1000:
        client.publish_many(topic, batch[:n % 1000])
    ok = client.publish(topic, payload, qos=1).wait(120)
    span = time.perf_counter() - t0
    client.disconnect()
    print(json.dumps({"sent": n, "seconds": round(span, 3), "rate": n / span, "fenced": ok}))


def _feeder(port: int, n: int, size: int, topic: str, rate: float) -> None:
    """Connects, says "ready", waits for a line on stdin, then publishes ``n`` QoS 0 messages with
    payload headers (timestamp, sequence), ``rate`` per second (0: as fast as it can), fenced by a
    QoS 1 publish (acknowledged once the broker has handled every message before it)."""
    import random as _random

    from mqttfast import Client
    from mqttfast.bench.templates import PayloadMaker

    client = Client(client_id=f"feed_{os.getpid()}", protocol=4)
    client.connect("127.0.0.1", port, keepalive=300)
    maker = PayloadMaker(size, None, True, _random.getrandbits(32))
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.monotonic()
    for seq in range(1, n + 1):
        if rate > 0:
            wait = t0 + (seq - 1) / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        client.publish(topic, maker.make(1, seq, time.time_ns()))
    last = time.monotonic()
    ok = client.publish(topic + "/fence", b"", qos=1).wait(120)
    fenced = time.monotonic()
    client.disconnect()
    print(json.dumps({"sent": n, "rate": rate or None, "publish_seconds": round(last - t0, 3),
                      "fence_seconds": round(fenced - t0, 3), "fenced": ok}), flush=True)


def fan_frame(topic: str, size: int) -> int:
    """Bytes of every PUBLISH frame a QoS 0 subscriber of ``topic`` gets from ``_feeder``."""
    from mqttfast.bench.templates import PayloadMaker
    from mqttfast.codec import Publish, encode

    payload = PayloadMaker(size, None, True, 0).make(1, 1, 0)
    return len(encode(Publish(topic, payload), 4))


# ---------------------------------------------------------------------------------- scenarios

def scenario_connections(broker: Broker, addrs: Addresses, tmp: str, n: int,
                         rate: float) -> Dict[str, Any]:
    raw_src = addrs.take(n)
    raw_cmd = [sys.executable, __file__, "_raw_connect", str(broker.port), str(n), str(rate),
               ",".join(raw_src), "1"]
    done = subprocess.run(raw_cmd, capture_output=True, text=True, timeout=TIMEOUT)
    raw = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {
        "error": done.stderr.strip()[-500:]}
    time.sleep(1.5)  # let the broker close the raw connections
    path = os.path.join(tmp, "conn.json")
    bench_src = addrs.take(n)
    cmd = bench_cmd("conn", "-p", broker.port, "-V", 4, "-c", n, "-R", rate, "--ifaddr",
                    ",".join(bench_src), "--duration", 1, "--quiet", "--json", path)
    summary = run_json(cmd, path)
    time.sleep(1.5)
    return {"raw": raw, "raw_cmd": " ".join(raw_cmd), "bench": summary,
            "bench_cmd": " ".join(cmd)}


def scenario_publish(broker: Broker, tmp: str, publishers: int, n: int,
                     size: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    one_cmd = [sys.executable, __file__, "_saturate_one", str(broker.port), str(n), str(size),
               "scale/pub/one"]
    done = subprocess.run(one_cmd, capture_output=True, text=True, timeout=TIMEOUT)
    out["client"] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 \
        else {"error": done.stderr.strip()[-500:]}
    out["client_cmd"] = " ".join(one_cmd)
    for key, clients in (("bench_one", 1), ("bench", publishers)):
        path = os.path.join(tmp, f"pub{clients}.json")
        cmd = bench_cmd("pub", "-p", broker.port, "-V", 4, "-c", clients, "-i", 0, "-I", 0,
                        "-w", "-q", 0, "-s", size, "-t", "scale/pub/%i", "-L", n, "--quiet",
                        "--json", path)
        out[key] = run_json(cmd, path)
        out[f"{key}_cmd"] = " ".join(cmd)
    return out


def _feed(broker: Broker, topic: str, n: int, size: int, rate: float = 0) -> List[str]:
    return [sys.executable, __file__, "_feeder", str(broker.port), str(n), str(size), topic,
            f"{rate:g}"]


def _last_json(text: str) -> Optional[Dict[str, Any]]:
    lines = text.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None
    except ValueError:
        return None


def _timed_receive(broker: Broker, sub_cmd: List[str], ready: Optional[str],
                   feed_cmd: List[str], expected: int, timeout: float = TIMEOUT,
                   stdout_path: Optional[str] = None) -> Dict[str, Any]:
    """Start the subscriber(s), then the feeder; once both are ready, say "go" to the feeder and
    wait until the subscriber process has exited (it stops by itself after ``expected``
    messages, or at its own time limit). ``seconds`` and the CPU shares are over go -> exit;
    the subscriber's stdout goes to ``stdout_path``."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    sub = subprocess.Popen(sub_cmd, stdout=out, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, cwd=REPO)
    feed = subprocess.Popen(feed_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        if ready is not None:
            if not wait_line(sub, ready, 60):
                return {"error": "the subscribers never became ready"}
        else:
            time.sleep(0.5)  # mosquitto_sub subscribes within milliseconds
        drain_stderr(sub)
        assert feed.stdin is not None and feed.stdout is not None
        if feed.stdout.readline().strip() != "ready":
            return {"error": f"the feeder failed: {feed.stderr.read()[-300:]}"}  # type: ignore
        t0 = time.monotonic()
        samples: List[Sample] = [(t0, broker.cpu_seconds(), cpu_seconds(sub.pid))]
        feed.stdin.write("go\n")
        feed.stdin.flush()
        gone = wait_exit(sub, timeout, broker, samples)
        if gone is None:
            return {"error": f"the subscriber was still running after {timeout:.0f} s"}
        samples.append((gone, broker.cpu_seconds(), None))
        result: Dict[str, Any] = {"expected": expected, "go": t0, "seconds": round(gone - t0, 3),
                                  "exit_code": sub.returncode, "cpu_samples": samples}
        # until the exit; the fan-out runs narrow this down to the deliveries
        result["broker_cpu"], result["subscriber_cpu"] = cpu_shares(samples, t0, gone)
        try:
            fed, _ = feed.communicate(timeout=30)
            result["feed"] = _last_json(fed)
        except subprocess.TimeoutExpired:
            result["feed"] = {"error": "the feeder did not finish"}
        return result
    finally:
        if stdout_path:
            out.close()  # type: ignore[union-attr]
        for proc in (sub, feed):
            if proc.poll() is None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def _fan_run(broker: Broker, addrs: Addresses, tmp: str, kind: str, topic: str, n: int,
             conn_rate: float, messages: int, feed_rate: float, size: int, limit_s: float,
             pause_ms: float = 0) -> Dict[str, Any]:
    """One fan-out run: ``n`` subscribers of one kind ("bench": ``mqttfast bench sub``, "raw":
    the bare-socket subscriber of scale_ref.py, sleeping ``pause_ms`` between its passes) get
    ``messages`` from one feeder. ``rate``: deliveries / (first to last delivery, as the
    subscriber process saw them); ``counted`` vs ``expected`` (n x messages); ``missing``: lost,
    or not there within ``limit_s`` seconds."""
    expected = n * messages
    feed = _feed(broker, topic, messages, size, feed_rate)
    src = ",".join(addrs.take(n))
    if kind == "raw":
        cmd = [sys.executable, os.path.join(HERE, "scale_ref.py"), "-p", str(broker.port),
               "-c", str(n), "-R", f"{conn_rate:g}", "--ifaddr", src, "-t", topic,
               "--frame", str(fan_frame(topic, size)), "-L", str(expected), "--idle", "3",
               "--timeout", f"{limit_s:g}", "--pause-ms", f"{pause_ms:g}"]
        path = os.path.join(tmp, "raw.out")
        res = _timed_receive(broker, cmd, "clients subscribed", feed, expected, limit_s + 30,
                             stdout_path=path)
        with open(path) as handle:
            mine = _last_json(handle.read()) or {}
        res["subscriber"] = mine
        res["counted"] = mine.get("deliveries")
        res["rate"] = mine.get("receive_rate")
        if mine.get("last_recv") and "go" in res:
            res["deliveries_seconds"] = round(mine["last_recv"] - res["go"], 3)
    else:
        path = os.path.join(tmp, f"fan-{topic.replace('/', '-')}.json")
        cmd = bench_cmd("sub", "-p", broker.port, "-V", 4, "-c", n, "-R", f"{conn_rate:g}",
                        "--ifaddr", src, "-t", topic, "-q", 0, "-L", expected,
                        "--duration", f"{limit_s:g}", "--json", path)
        res = _timed_receive(broker, cmd, "clients subscribed", feed, expected, limit_s + 30)
        summary: Dict[str, Any] = {}
        if os.path.exists(path):
            with open(path) as handle:
                summary = json.load(handle)["summary"]
        res["subscriber"] = summary
        res["counted"] = summary.get("received")
        res["rate"] = summary.get("receive_rate")
        if summary.get("receive_seconds"):  # the first delivery comes within a ms of "go"
            res["deliveries_seconds"] = summary["receive_seconds"]
    samples = res.pop("cpu_samples", None)
    if samples and res.get("deliveries_seconds"):  # CPU while the deliveries arrived
        res["broker_cpu"], res["subscriber_cpu"] = cpu_shares(
            samples, res["go"], res["go"] + res["deliveries_seconds"])
        res["cpu_window"] = "deliveries"
    res.setdefault("expected", expected)
    if res["counted"] is not None:
        res["missing"] = expected - res["counted"]
    res["cmd"] = " ".join(cmd) + "   # fed by: " + " ".join(feed)
    time.sleep(1.5)  # let the broker close the connections
    return res


def median_run(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The run with the median rate (the lower middle of an even count; a run without a rate
    counts as 0); its ``spread`` is (max - min) / median over the runs with a rate."""
    ranked = sorted(runs, key=lambda r: r.get("rate") or 0.0)
    mid = dict(ranked[(len(ranked) - 1) // 2])
    rates = [r["rate"] for r in runs if r.get("rate")]
    if len(rates) > 1 and mid.get("rate"):
        mid["spread"] = (max(rates) - min(rates)) / mid["rate"]
    mid["rates"] = [r.get("rate") for r in runs]
    return mid


def scenario_fanout(broker: Broker, addrs: Addresses, tmp: str, args: argparse.Namespace
                    ) -> Dict[str, Any]:
    n = args.clients
    out: Dict[str, Any] = {}
    runs = 0

    def run(kind: str, messages: int, feed_rate: float, limit: float,
            pause_ms: float = 0) -> Dict[str, Any]:
        nonlocal runs
        runs += 1  # a topic per run, all of the same length: the same bytes for the broker
        return _fan_run(broker, addrs, tmp, kind, f"scale/fan/{runs:02d}", n, args.conn_rate,
                        messages, feed_rate, args.size, limit, pause_ms)

    if args.fan_rate > 0 and args.fan_seconds > 0:
        messages = max(1, round(args.fan_rate * args.fan_seconds))
        paced = out["paced"] = {"messages": messages, "feed_rate": args.fan_rate}
        for kind in ("raw", "bench"):  # receiving for at most 10 s more than the feed lasts
            paced[kind] = run(kind, messages, args.fan_rate, args.fan_seconds + 10)
    if args.fan_messages > 0:
        burst = out["burst"] = {"messages": args.fan_messages, "feed_rate": None}
        runs_of: Dict[str, List[Dict[str, Any]]] = {"raw": [], "bench": []}
        limit = 60.0
        for i in range(max(1, args.fan_repeats)):
            # ABBA: neither kind always runs first (the broker's state drifts between runs)
            for kind in (("raw", "bench") if i % 2 == 0 else ("bench", "raw")):
                runs_of[kind].append(run(kind, args.fan_messages, 0, limit))
                took = runs_of[kind][-1].get("deliveries_seconds")
                if kind == "raw" and took and len(runs_of["raw"]) == 1:
                    limit = min(90.0, max(20.0, 2 * took + 10))
        for kind, done in runs_of.items():  # the table shows each kind's median run
            burst[kind] = median_run(done)
            burst[f"{kind}_runs"] = done
        if args.pause_ms > 0:
            burst["raw_paused"] = run("raw", args.fan_messages, 0, limit, args.pause_ms)
    single = args.single_messages
    mosq = shutil.which("mosquitto_sub")
    if mosq:
        cmd = [mosq, "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv311", "-q", "0",
               "-t", "scale/one-mosq", "-C", str(single), "-W", "60"]
        feed = _feed(broker, "scale/one-mosq", single, args.size)
        res = _timed_receive(broker, cmd, None, feed, single, 90)
        res.pop("cpu_samples", None)
        if "seconds" in res:  # -C: exit 0 once it has them all
            res["counted"] = single if res["exit_code"] == 0 else None
            res["rate"] = single / res["seconds"] if res["exit_code"] == 0 else None
        res["cmd"] = " ".join(cmd) + "   # fed by: " + " ".join(feed)
        out["mosquitto_sub"] = res
    else:
        out["mosquitto_sub"] = {"error": "mosquitto_sub not installed (mosquitto-clients)"}
    path = os.path.join(tmp, "one.json")
    cmd = bench_cmd("sub", "-p", broker.port, "-V", 4, "-c", 1, "-t", "scale/one-bench", "-q", 0,
                    "-L", single, "--duration", 60, "--json", path)
    feed = _feed(broker, "scale/one-bench", single, args.size)
    res = _timed_receive(broker, cmd, "clients subscribed", feed, single, 90)
    res.pop("cpu_samples", None)
    if os.path.exists(path):
        with open(path) as handle:
            res["subscriber"] = json.load(handle)["summary"]
        res["counted"] = res["subscriber"].get("received")
        if res["counted"] == single and "seconds" in res:
            res["rate"] = single / res["seconds"]  # the clock mosquitto_sub gets
    res["cmd"] = " ".join(cmd) + "   # fed by: " + " ".join(feed)
    out["bench_one"] = res
    return out


# ---------------------------------------------------------------------------------- table

def _get(d: Dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def _r(value: Optional[float], unit: str = "/s") -> str:
    return f"{value:,.0f}{unit}" if value else "n/a"


def _n(value: Optional[int]) -> str:
    return f"{value:,}" if value is not None else "n/a"


def _cpus(run: Dict[str, Any]) -> str:
    broker, mine = run.get("broker_cpu"), run.get("subscriber_cpu")
    if broker is None:
        return "n/a"
    return f"{broker * 100:.0f}%, {mine * 100:.0f}%" if mine is not None else f"{broker * 100:.0f}%"


def _per_delivery(run: Dict[str, Any]) -> str:
    """The broker's CPU time per delivery, over the deliveries' window."""
    busy, span, count = run.get("broker_cpu"), run.get("deliveries_seconds"), run.get("counted")
    return f"{busy * span / count * 1e6:.1f} us" if busy and span and count else "n/a"


def _fan_rows(name: str, run: Dict[str, Any]) -> List[Tuple[str, str, str, str, str]]:
    """mqttfast bench sub vs the bare-socket subscribers, same feed: keeps up when it gets
    >= 0.9x their deliveries/s with nothing missing."""
    bench, raw = run.get("bench", {}), run.get("raw", {})
    rate, ref = bench.get("rate"), raw.get("rate")
    ok = rate and ref and rate / ref >= 0.9 and bench.get("missing") == 0
    error = bench.get("error") or raw.get("error")
    rows = [(name, _r(rate) + " deliveries", f"{_r(ref)} bare sockets", _ratio(rate, ref),
             (f"error: {error}" if error else
              f">= 0.9x, none missing: {'ok, keeps up with the broker' if ok else 'MISSED'}"))]
    fed = [_get(r, "feed") or {} for r in (bench, raw)]
    rows.append(("  messages fed",
                 *(f"{_n(f.get('sent'))} in {f['publish_seconds']:.3f} s" if f.get("sent")
                   else "n/a" for f in fed), "", ""))
    gaps = _get(bench, "subscriber", "lost")
    rows.append(("  deliveries counted / expected",
                 f"{_n(bench.get('counted'))} / {_n(bench.get('expected'))}",
                 f"{_n(raw.get('counted'))} / {_n(raw.get('expected'))}", "",
                 f"missing {_n(bench.get('missing'))} / {_n(raw.get('missing'))}"
                 + (f"; sequence gaps (bench) {gaps:,}" if gaps is not None else "")))
    rows.append(("  CPU: broker, subscriber process", _cpus(bench), _cpus(raw), "",
                 f"broker CPU per delivery {_per_delivery(bench)} / {_per_delivery(raw)}"))
    e2e = _get(bench, "subscriber", "e2e_latency_us")
    if e2e:
        rows.append(("  end-to-end latency p50 / p99",
                     f"{e2e['p50'] / 1000:.1f} / {e2e['p99'] / 1000:.1f} ms", "", "", ""))
    spread = [(r.get("rates") or [], r.get("spread")) for r in (bench, raw)]
    if len(spread[0][0]) > 1:
        rows.append((f"  median of {len(spread[0][0])} runs (ABBA)",
                     *(f"spread {sp:.0%}" if sp is not None else "spread n/a" for _, sp in spread),
                     "", "runs: " + " | ".join(", ".join(_r(x, "") for x in rates)
                                              for rates, _ in spread)))
    paused = run.get("raw_paused")
    if paused:
        ms = _get(paused, "subscriber", "pause_ms")
        ref = paused.get("rate")
        rows.append((f"  vs bare sockets pausing {ms:g} ms" if ms else "  vs bare sockets pausing",
                     _r(rate), f"{_r(ref)} bare, paused", _ratio(rate, ref),
                     paused.get("error") or
                     f"counted {_n(paused.get('counted'))} / {_n(paused.get('expected'))}; "
                     f"CPU {_cpus(paused)}; broker per delivery {_per_delivery(paused)}"))
    return rows


def table(results: Dict[str, Any], args: argparse.Namespace) -> str:
    rows = [("scenario", "mqttfast bench", "reference", "ratio", "target / notes")]
    conn = results.get("connections", {})
    if conn:
        bench, raw = conn["bench"], conn["raw"]
        rate = bench.get("connect_rate")
        rows.append((f"{args.clients:,} connections, 1 process", _r(rate),
                     f"{_r(raw.get('rate'))} bare sockets", _ratio(rate, raw.get("rate")),
                     f">= 5,000/s: {'ok' if rate and rate >= 5000 else 'MISSED'}"
                     + (f" ({bench.get('error')})" if bench.get("error") else "")))
        rate99 = bench.get("connect_rate_99")
        rows.append(("  first 99% connected", _r(rate99), f"{_r(raw.get('rate_99'))} bare sockets",
                     _ratio(rate99, raw.get("rate_99")), "(a SYN re-sent after 1 s moves the last)"))
        p50 = _get(bench, "connect_time_us", "p50")
        p99 = _get(bench, "connect_time_us", "p99")
        rows.append(("  connect time p50 / p99",
                     f"{p50 / 1000:.2f} / {p99 / 1000:.2f} ms" if p50 and p99 else "n/a",
                     f"{raw.get('p50_ms')} / {raw.get('p99_ms')} ms", "", ""))
        rss = bench.get("rss_kb")
        rows.append(("  bench RSS (VmRSS)", f"{rss / 1024:.1f} MB" if rss else "n/a", "", "",
                     f"< 200 MB: {'ok' if rss and rss < 200 * 1024 else 'MISSED'}; "
                     f"{bench.get('connected', 0):,} connected, {bench.get('failed', 0):,} failed"))
    pub = results.get("qos0-publish", {})
    if pub:
        rate = _get(pub, "bench", "publish_rate")
        ref = _get(pub, "client", "rate")
        one = _get(pub, "bench_one", "publish_rate")
        rows.append((f"QoS 0 publish, {args.publishers} publishers", _r(rate),
                     f"{_r(ref)} one Client", _ratio(rate, ref),
                     f">= 0.9x: {'ok' if rate and ref and rate / ref >= 0.9 else 'MISSED'}"))
        rows.append(("  (same engine, 1 publisher)", _r(one), f"{_r(ref)} one Client",
                     _ratio(one, ref), ""))
    fan = results.get("fan-out", {})
    if fan.get("paced"):
        run = fan["paced"]
        rows += _fan_rows(f"fan-out to {args.clients:,}: {run['messages']} msgs at "
                          f"{run['feed_rate']:g}/s", run)
    if fan.get("burst"):
        run = fan["burst"]
        rows += _fan_rows(f"fan-out to {args.clients:,}: burst of {run['messages']} msgs", run)
    if fan:
        one, mosq = fan.get("bench_one", {}), fan.get("mosquitto_sub", {})
        rate, ref = one.get("rate"), mosq.get("rate")
        rows.append((f"1 subscriber: burst of {args.single_messages:,} msgs", _r(rate),
                     f"{_r(ref)} mosquitto_sub", _ratio(rate, ref),
                     one.get("error") or mosq.get("error") or
                     f"counted {_n(one.get('counted'))} / {_n(mosq.get('counted'))}"))
        rows.append(("  CPU: broker, subscriber process", _cpus(one), _cpus(mosq), "", ""))
    rows.append(("", "", "", "", f"CPU: share of one core ({os.cpu_count()} cores here) over the "
                 "rate's window: feed start to"))
    rows.append(("", "", "", "", "last delivery (fan-out), to the subscriber's exit (1 subscriber)"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_raw_connect":
        port, n, rate, sources, hold = sys.argv[2:7]
        _raw_connect(int(port), int(n), float(rate), sources.split(","), float(hold))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_feeder":
        port, n, size, topic, rate = sys.argv[2:7]
        _feeder(int(port), int(n), int(size), topic, float(rate))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_saturate_one":
        port, n, size, topic = sys.argv[2:6]
        _saturate_one(int(port), int(n), int(size), topic)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=10_000, help="connections and subscribers")
    ap.add_argument("--conn-rate", type=float, default=10_000, help="target connections/s")
    ap.add_argument("--publishers", type=int, default=100)
    ap.add_argument("--messages", type=int, default=2_000_000, help="QoS 0 publish scenario")
    ap.add_argument("--fan-rate", type=float, default=3.0,
                    help="fan-out, paced feed: messages per second (each goes to every "
                         "subscriber; 0: no paced run)")
    ap.add_argument("--fan-seconds", type=float, default=5.0,
                    help="fan-out, paced feed: seconds of feed")
    ap.add_argument("--fan-messages", type=int, default=50,
                    help="fan-out, burst feed: messages, as fast as possible (0: no burst run)")
    ap.add_argument("--fan-repeats", type=int, default=3,
                    help="fan-out burst: runs of each kind, alternated ABBA; the median is shown "
                         "(default 3; one run of either spreads by up to 1.5x here)")
    ap.add_argument("--pause-ms", type=float, default=1.0,
                    help="fan-out, burst feed: also bare sockets that sleep MS ms between their "
                         "passes (0: not)")
    ap.add_argument("--single-messages", type=int, default=500_000,
                    help="messages for the one-subscriber references")
    ap.add_argument("--size", type=int, default=64, help="payload bytes")
    ap.add_argument("--read-delay", type=float, default=None, metavar="S",
                    help="`mqttfast bench sub --read-delay S` (batched reads; default: its own)")
    ap.add_argument("--no-quickack", action="store_true",
                    help="every bench sub without prompt acknowledgements (its default with "
                         "more than one connection is --quickack)")
    ap.add_argument("--only", help="comma-separated: connections, qos0-publish, fan-out")
    ap.add_argument("--quick", action="store_true", help="2,000 clients, fewer messages")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.read_delay is not None:
        SUB_OPTIONS[:] = ["--read-delay", f"{args.read_delay:g}"]
    if args.no_quickack:
        SUB_OPTIONS.append("--no-quickack")
    if args.quick:
        args.clients, args.messages, args.fan_messages, args.single_messages = \
            2000, 500_000, 20, 100_000
    only = set(args.only.split(",")) if args.only else {"connections", "qos0-publish", "fan-out"}
    limit = raise_nofile()
    if limit < args.clients + 200:
        print(f"the open-file limit is {limit} (hard limit reached): {args.clients} clients need "
              f"{args.clients + 200}; raise it (ulimit -Hn as root) or use --clients",
              file=sys.stderr)
        return 2
    results: Dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "nofile": limit},
        "args": vars(args),
    }
    addrs = Addresses()
    with tempfile.TemporaryDirectory(prefix="bench_scale-") as tmp:
        broker = Broker(tmp)
        try:
            results["broker_port"] = broker.port
            if "connections" in only:
                print(f"connections: {args.clients:,} at {args.conn_rate:,.0f}/s ...", flush=True)
                results["connections"] = scenario_connections(broker, addrs, tmp, args.clients,
                                                              args.conn_rate)
            if "qos0-publish" in only:
                print(f"qos0-publish: {args.messages:,} messages ...", flush=True)
                results["qos0-publish"] = scenario_publish(broker, tmp, args.publishers,
                                                           args.messages, args.size)
            if "fan-out" in only:
                print(f"fan-out: {args.clients:,} subscribers, {args.fan_rate:g} msgs/s for "
                      f"{args.fan_seconds:g} s, then a burst of {args.fan_messages} ...",
                      flush=True)
                results["fan-out"] = scenario_fanout(broker, addrs, tmp, args)
        finally:
            broker.stop()
    print()
    print(table(results, args))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
