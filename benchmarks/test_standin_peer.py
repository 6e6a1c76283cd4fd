"""Tests of the stand-in MQTT peer (``standin_peer.py``), not part of the main suite.

Run: ``python -m pytest -q benchmarks/test_standin_peer.py``. The ``test_measure_*`` tests print
(never assert) the peer's measured ceilings straight to the terminal, with or without ``-s``.

Clients: a raw socket client built on ``mqttfast.codec``, and paho-mqtt.
"""
from __future__ import annotations

import collections
import gc
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, List, Optional

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from standin_peer import StandinPeer, _Server  # noqa: E402

from mqttfast import codec  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TOPIC = "bench/topic"
PAYLOAD = b"p" * 64


# ---------------------------------------------------------------------- helpers

class RawClient:
    """A minimal blocking MQTT client over a socket and ``mqttfast.codec``."""

    def __init__(self, port: int, protocol: int = 4, client_id: str = "raw",
                 timeout: float = 10.0) -> None:
        self.protocol = protocol
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.dec = codec.StreamDecoder(protocol)
        self.pending: collections.deque = collections.deque()
        self.send(codec.Connect(client_id, protocol=protocol, keepalive=60))
        ack = self.next()
        assert isinstance(ack, codec.ConnAck) and ack.reason_code == 0, ack

    def send(self, packet: Any) -> None:
        self.sock.sendall(codec.encode(packet, self.protocol))

    def next(self) -> Any:
        while not self.pending:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("peer closed the connection")
            self.pending.extend(self.dec.feed(data))
        return self.pending.popleft()

    def subscribe(self, topic: str, qos: int = 0, packet_id: int = 1) -> Any:
        self.send(codec.Subscribe(packet_id, [(topic, qos)]))
        ack = self.next()
        assert isinstance(ack, codec.SubAck) and ack.packet_id == packet_id, ack
        return ack

    def ping(self) -> None:
        self.send(codec.PingReq())
        assert isinstance(self.next(), codec.PingResp)

    def disconnect(self) -> None:
        try:
            self.send(codec.Disconnect())
        except OSError:
            pass
        self.sock.close()


def publish_frames(n: int, qos: int = 0, protocol: int = 4, topic: str = TOPIC,
                   payload: bytes = PAYLOAD) -> bytes:
    """``n`` encoded PUBLISHes; for QoS > 0 the packet ids cycle through 1..65535."""
    if not qos:
        return codec.encode_publish(topic, payload, protocol=protocol) * n
    return b"".join(codec.encode_publish(topic, payload, qos, i % 65535 + 1, protocol=protocol)
                    for i in range(n))


def send_chunked(sock: socket.socket, data: bytes, chunk: int = 1 << 20) -> None:
    mv = memoryview(data)
    for i in range(0, len(mv), chunk):
        sock.sendall(mv[i:i + chunk])


def proc_cpu_seconds(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def report(capsys: Any, text: str) -> None:
    with capsys.disabled():
        print("\n" + text, flush=True)


@pytest.fixture
def discard_peer():
    with StandinPeer(mode="discard", max_lifetime=120) as peer:
        yield peer


def paho_client(protocol: str = "v311", client_id: str = "paho") -> Any:
    mqtt = pytest.importorskip("paho.mqtt.client")
    proto = {"v31": mqtt.MQTTv31, "v311": mqtt.MQTTv311, "v5": mqtt.MQTTv5}[protocol]
    kw = {} if proto == mqtt.MQTTv5 else {"clean_session": True}
    return mqtt, mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=proto, **kw)


def paho_connect(mqtt: Any, client: Any, port: int, timeout: float = 10.0) -> None:
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    assert connected.wait(timeout), "paho did not get its CONNACK"


def wait_until(pred, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)


# ---------------------------------------------------------------------- discard: raw client

@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_raw_discard_qos0_counts_exactly(discard_peer, protocol):
    c = RawClient(discard_peer.port, protocol)
    ack = c.subscribe("bench/#", 1)
    assert ack.reason_codes == [1]
    c.ping()
    n = 100_000
    send_chunked(c.sock, publish_frames(n, 0, protocol))
    c.ping()  # a PINGRESP after the burst: every publish before it was read
    st = discard_peer.wait_for(publishes_received=n, timeout=30)
    assert st["publishes_received"] == n
    assert st["pings"] == 2 and st["subscribes"] == 1 and st["connections"] == 1
    assert st["acks_sent"] == 0 and st["errors"] == 0
    c.disconnect()
    wait_until(lambda: discard_peer.stats()["active"] == 0, 10, "connection closed")
    assert discard_peer.stats()["publishes_received"] == n


@pytest.mark.parametrize("protocol,qos", [(4, 1), (5, 1), (4, 2), (5, 2)])
def test_raw_discard_qos1_qos2_all_acked(discard_peer, protocol, qos):
    n = 100_000
    c = RawClient(discard_peer.port, protocol)
    acks: collections.Counter = collections.Counter()
    done = threading.Event()
    errors: List[BaseException] = []
    recs: List[int] = []
    recs_done = threading.Event()

    def reader() -> None:  # acks must be read while sending, or both sides block
        try:
            got = 0
            while got < n:
                pkt = c.next()
                if qos == 2 and isinstance(pkt, codec.PubRec):
                    recs.append(pkt.packet_id)  # answered by the main thread: one writer only
                    if len(recs) == n:
                        recs_done.set()
                    continue
                assert isinstance(pkt, codec.PubAck if qos == 1 else codec.PubComp), pkt
                acks[pkt.packet_id] += 1
                got += 1
        except BaseException as e:  # reported by the main thread
            errors.append(e)
        finally:
            done.set()
            recs_done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    send_chunked(c.sock, publish_frames(n, qos, protocol), chunk=64 << 10)
    if qos == 2:
        assert recs_done.wait(60), "PUBRECs did not all arrive"
        assert not errors, errors
        send_chunked(c.sock, b"".join(codec.encode_ack(6, p, 0, protocol) for p in recs))
    assert done.wait(60), "acks did not all arrive"
    assert not errors, errors
    assert sum(acks.values()) == n
    assert acks == collections.Counter(i % 65535 + 1 for i in range(n))
    st = discard_peer.stats()
    assert st["publishes_received"] == n
    assert st["acks_sent"] == (n if qos == 1 else 2 * n)
    c.disconnect()


def test_raw_discard_no_ack():
    with StandinPeer(mode="discard", ack=False, max_lifetime=60) as peer:
        c = RawClient(peer.port)
        send_chunked(c.sock, publish_frames(10_000, 1))
        c.ping()  # the next thing back is the PINGRESP, no PUBACK before it
        st = peer.wait_for(publishes_received=10_000)
        assert st["acks_sent"] == 0 and st["publishes_received"] == 10_000
        c.disconnect()


def test_raw_discard_mixed_stream_any_chunking(discard_peer):
    """Packets of every kind and size, cut at random: the fast path's runs break everywhere."""
    rng = random.Random(1234)
    c = RawClient(discard_peer.port, 4)
    parts: List[bytes] = []
    expect_acks: List[int] = []
    n_pub = 0
    pid = 0
    for _ in range(3000):
        r = rng.random()
        run = rng.choice([1, 1, 2, 3, 50, 400])
        if r < 0.5:
            payload = b"x" * rng.choice([0, 1, 64, 127, 200, 20_000])
            parts.append(codec.encode_publish(rng.choice(["a", "bench/t", "x" * 300]), payload)
                         * run)
            n_pub += run
        elif r < 0.85:
            qos = rng.choice([1, 1, 2])
            payload = b"y" * rng.choice([0, 10, 64, 130])
            for _ in range(run):
                pid = pid % 65535 + 1
                parts.append(codec.encode_publish("q/" + "t" * rng.choice([1, 1, 200]), payload,
                                                  qos, pid))
                expect_acks.append((4 if qos == 1 else 5, pid))
            n_pub += run
        elif r < 0.997:
            parts.append(codec.encode(codec.PingReq()) * min(run, 3))
            expect_acks.extend([(13, 0)] * min(run, 3))
        else:  # a PUBLISH larger than the peer's 1 MB receive buffer
            pid = pid % 65535 + 1
            parts.append(codec.encode_publish("big", b"z" * 2_500_000, 1, pid))
            expect_acks.append((4, pid))
            n_pub += 1
    stream = b"".join(parts)
    got: List[tuple] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while len(got) < len(expect_acks):
                pkt = c.next()
                got.append((pkt.type, getattr(pkt, "packet_id", 0)))
        finally:
            done.set()

    threading.Thread(target=reader, daemon=True).start()
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 2, 3, 7, 100, 1500, 65536, 1 << 20])
        c.sock.sendall(stream[pos:pos + step])
        pos += step
    assert done.wait(60)
    assert got == expect_acks
    st = discard_peer.wait_for(publishes_received=n_pub)
    assert st["publishes_received"] == n_pub and st["errors"] == 0
    assert st["bytes_received"] >= len(stream)
    c.disconnect()


def test_raw_discard_concurrent_connections(discard_peer):
    clients, per = 32, 10_000
    frames = publish_frames(per)
    errors: List[BaseException] = []

    def run(i: int) -> None:
        try:
            c = RawClient(discard_peer.port, 4, client_id=f"gen{i}")
            send_chunked(c.sock, frames, chunk=16 << 10)
            c.ping()
            c.disconnect()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    st = discard_peer.wait_for(publishes_received=clients * per)
    assert st["publishes_received"] == clients * per
    assert st["connections"] == clients
    wait_until(lambda: discard_peer.stats()["active"] == 0, 10, "all closed")
    conns = discard_peer.stats(per_connection=True)["per_connection"]
    assert sorted(x["client_id"] for x in conns) == sorted(f"gen{i}" for i in range(clients))
    assert all(x["publishes_received"] == per for x in conns)


def test_sequential_runs_and_reset(discard_peer):
    for run in range(3):
        c = RawClient(discard_peer.port, 4)
        send_chunked(c.sock, publish_frames(1000 * (run + 1)))
        c.ping()
        c.disconnect()
        st = discard_peer.wait_for(publishes_received=1000 * (run + 1))
        assert st["publishes_received"] == 1000 * (run + 1) and st["connections"] == 1
        wait_until(lambda: discard_peer.stats()["active"] == 0, 10, "closed")
        discard_peer.reset()
    # a reset in the middle of a connection's life counts only what comes after it
    c = RawClient(discard_peer.port, 4)
    send_chunked(c.sock, publish_frames(500))
    c.ping()
    assert discard_peer.reset()["publishes_received"] == 500
    send_chunked(c.sock, publish_frames(700))
    c.ping()
    assert discard_peer.stats()["publishes_received"] == 700
    c.disconnect()


# ---------------------------------------------------------------------- discard: paho

@pytest.mark.parametrize("protocol", ["v311", "v5"])
def test_paho_discard_qos0(discard_peer, protocol):
    mqtt, client = paho_client(protocol)
    paho_connect(mqtt, client, discard_peer.port)
    n = 100_000
    try:
        for _ in range(n):
            client.publish(TOPIC, PAYLOAD, qos=0)
        st = discard_peer.wait_for(publishes_received=n, timeout=60)
        assert st["publishes_received"] == n
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("protocol,qos", [("v311", 1), ("v5", 1), ("v311", 2)])
def test_paho_discard_qos1_all_acked(discard_peer, protocol, qos):
    mqtt, client = paho_client(protocol)
    client.max_inflight_messages_set(100)
    acked = [0]
    lock = threading.Lock()

    def on_publish(*args: Any) -> None:
        with lock:
            acked[0] += 1

    client.on_publish = on_publish
    paho_connect(mqtt, client, discard_peer.port)
    n = 100_000 if qos == 1 else 20_000
    try:
        infos = []
        for i in range(n):
            # paho scans its in-flight and queued messages on every ack (quadratic): keep
            # the queue empty and the window small, or it crawls
            while i - acked[0] >= 100:
                time.sleep(0.0005)
            infos.append(client.publish(TOPIC, PAYLOAD, qos=qos))
        wait_until(lambda: acked[0] >= n, 120, f"paho acks ({acked[0]}/{n})")
        assert acked[0] == n
        assert all(i.is_published() for i in infos)
        st = discard_peer.stats()
        assert st["publishes_received"] == n
        assert st["acks_sent"] == (n if qos == 1 else 2 * n)
    finally:
        client.disconnect()
        client.loop_stop()


# ---------------------------------------------------------------------- replay

def read_replay(c: RawClient, n: int, qos: int, timeout: float = 60.0) -> List[Any]:
    """Read exactly ``n`` PUBLISHes (acknowledging QoS 1/2), then check nothing else comes."""
    got: List[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)}/{n} PUBLISHes arrived"
        pkt = c.next()
        if isinstance(pkt, codec.PubRel):
            c.sock.sendall(codec.encode_ack(7, pkt.packet_id, 0, c.protocol))
            continue
        assert isinstance(pkt, codec.Publish), pkt
        got.append(pkt)
        if qos == 1:
            c.sock.sendall(codec.encode_ack(4, pkt.packet_id, 0, c.protocol))
        elif qos == 2:
            c.sock.sendall(codec.encode_ack(5, pkt.packet_id, 0, c.protocol))
    if qos == 2:  # the last PUBRELs
        while True:
            c.sock.settimeout(0.3)
            try:
                pkt = c.next()
            except socket.timeout:
                break
            assert isinstance(pkt, codec.PubRel), pkt
            c.sock.sendall(codec.encode_ack(7, pkt.packet_id, 0, c.protocol))
    c.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):  # exactly n: nothing more arrives
        extra = c.next()
        pytest.fail(f"an extra packet arrived: {extra!r}")
    c.sock.settimeout(10)
    return got


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_replay_raw_reader_exactly_n_qos0(protocol):
    n = 100_003
    with StandinPeer(mode="replay", count=n, max_lifetime=60) as peer:
        c = RawClient(peer.port, protocol)
        assert c.subscribe(TOPIC, 0).reason_codes == [0]
        got = read_replay(c, n, 0)
        assert {p.topic for p in got} == {TOPIC}
        assert all(p.payload == got[0].payload and len(p.payload) == 64 and p.qos == 0
                   for p in got)
        c.ping()  # the connection still answers after the replay
        st = peer.stats()
        assert st["publishes_sent"] == n
        c.disconnect()


@pytest.mark.parametrize("protocol,qos,inflight", [(4, 1, 65535), (5, 1, 100), (4, 2, 65535),
                                                   (5, 2, 7)])
def test_replay_raw_reader_qos1_qos2(protocol, qos, inflight):
    n = 70_000 if inflight > 100 else 3_000  # > 65535: the packet ids wrap around
    with StandinPeer(mode="replay", count=n, qos=qos, payload_size=10, max_inflight=inflight,
                     topic="replay/q", max_lifetime=60) as peer:
        c = RawClient(peer.port, protocol)
        assert c.subscribe("replay/#", 2).reason_codes == [2]
        got = read_replay(c, n, qos)
        assert [p.packet_id for p in got] == [i % 65535 + 1 for i in range(n)]
        assert all(p.qos == qos and p.topic == "replay/q" and len(p.payload) == 10 for p in got)
        st = peer.wait_for(acks_received=n)
        assert st["publishes_sent"] == n and st["acks_received"] == n
        if qos == 2:
            assert st["acks_sent"] == n  # PUBRELs
        c.disconnect()


def test_replay_honours_mqtt5_receive_maximum():
    with StandinPeer(mode="replay", count=12, qos=1, max_lifetime=60) as peer:
        c = RawClient.__new__(RawClient)
        c.protocol = 5
        c.sock = socket.create_connection(("127.0.0.1", peer.port), timeout=10)
        c.dec = codec.StreamDecoder(5)
        c.pending = collections.deque()
        c.send(codec.Connect("rm", protocol=5, properties={"receive_maximum": 5}))
        assert isinstance(c.next(), codec.ConnAck)
        c.subscribe(TOPIC, 1)
        for lo in (1, 6, 11):
            batch = [c.next() for _ in range(min(5, 13 - lo))]
            assert [p.packet_id for p in batch] == list(range(lo, lo + len(batch)))
            c.sock.settimeout(0.3)
            with pytest.raises(socket.timeout):  # no more until some are acknowledged
                c.next()
            c.sock.settimeout(10)
            for p in batch:
                c.sock.sendall(codec.encode_ack(4, p.packet_id, 0, 5))
        assert peer.wait_for(acks_received=12)["publishes_sent"] == 12
        c.disconnect()


def test_replay_qos_capped_by_subscription():
    with StandinPeer(mode="replay", count=100, qos=1, max_lifetime=60) as peer:
        c = RawClient(peer.port)
        c.subscribe(TOPIC, 0)
        got = read_replay(c, 100, 0)
        assert all(p.qos == 0 and p.topic == TOPIC for p in got)  # topic from the filter
        c.disconnect()


def test_replay_unbounded_until_client_leaves():
    with StandinPeer(mode="replay", count=None, max_lifetime=60) as peer:
        for _ in range(2):  # sequential connections each get their own replay
            c = RawClient(peer.port)
            c.subscribe("some/+/filter", 0)
            pkt = c.next()
            assert isinstance(pkt, codec.Publish) and pkt.topic == "standin/replay"
            got = 0
            while got < 50 << 20:
                got += len(c.sock.recv(1 << 20))
            c.sock.close()
            wait_until(lambda: peer.stats()["active"] == 0, 10, "peer saw the close")
        st = peer.stats()
        assert st["publishes_sent"] > 2 * (50 << 20) // 100 and st["errors"] == 0
        assert st["connections"] == 2


@pytest.mark.parametrize("protocol,qos", [("v311", 0), ("v5", 0), ("v31", 0), ("v311", 1),
                                          ("v5", 2)])
def test_replay_paho_subscriber_exactly_n(protocol, qos):
    n = 100_000 if qos == 0 else 20_000
    with StandinPeer(mode="replay", count=n, qos=qos, max_lifetime=120) as peer:
        mqtt, client = paho_client(protocol)
        count = [0]
        bad: List[Any] = []
        subscribed = threading.Event()

        def on_message(cl: Any, userdata: Any, msg: Any) -> None:
            count[0] += 1
            if msg.topic != TOPIC or len(msg.payload) != 64 or msg.qos != qos:
                bad.append(msg)

        client.on_message = on_message
        client.on_subscribe = lambda *a: subscribed.set()
        paho_connect(mqtt, client, peer.port)
        try:
            client.subscribe(TOPIC, qos)
            assert subscribed.wait(10)
            wait_until(lambda: count[0] >= n, 120, f"paho got {count[0]}/{n}")
            time.sleep(0.3)
            assert count[0] == n and not bad
            st = peer.wait_for(publishes_sent=n, **({"acks_received": n} if qos else {}))
            assert st["publishes_sent"] == n
        finally:
            client.disconnect()
            client.loop_stop()


# ---------------------------------------------------------------------- process and CLI

def test_cli_prints_port_and_final_stats():
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "standin_peer.py"), "--mode",
                             "discard", "--port", "0", "--max-lifetime", "60"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        c = RawClient(port)
        send_chunked(c.sock, publish_frames(12_345))
        c.ping()
        c.disconnect()
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        final = json.loads(out)
        assert final["publishes_received"] == 12_345 and final["connections"] == 1
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_sigterm_and_control_eof():
    script = os.path.join(HERE, "standin_peer.py")
    proc = subprocess.Popen([sys.executable, script, "--port", "0"], stdout=subprocess.PIPE,
                            text=True)
    int(proc.stdout.readline())
    proc.terminate()
    assert json.loads(proc.communicate(timeout=10)[0])["connections"] == 0
    proc = subprocess.Popen([sys.executable, script, "--control"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    int(proc.stdout.readline())
    proc.stdin.close()  # the parent went away
    assert proc.wait(timeout=10) == 0
    proc.stdout.close()


def test_max_lifetime_bounds_the_process():
    peer = StandinPeer(mode="replay", max_lifetime=1.0)
    peer.start()
    proc = peer._proc
    assert proc is not None
    proc.wait(timeout=10)  # exits by itself
    assert not peer.running
    final = peer.stop()
    assert final is not None and final["uptime"] >= 1.0
    assert peer.stats() == final


def test_peer_handle_lifecycle():
    peer = StandinPeer()
    with pytest.raises(RuntimeError):
        peer.stats()
    port = peer.start()
    assert peer.address == ("127.0.0.1", port) and peer.running
    with pytest.raises(RuntimeError):
        peer.start()
    final = peer.stop()
    assert final is not None and final["connections"] == 0
    assert not peer.running and peer.stats() == final
    with pytest.raises(ValueError):
        StandinPeer(mode="relay")
    with pytest.raises(socket.error):
        socket.create_connection(("127.0.0.1", port), timeout=1).recv(1)


def test_malformed_input_drops_only_that_connection(discard_peer):
    good = RawClient(discard_peer.port)
    bad = socket.create_connection(("127.0.0.1", discard_peer.port), timeout=5)
    bad.sendall(b"\x00\x00" + b"\xff" * 10)
    try:
        assert bad.recv(10) == b""  # closed by the peer
    except ConnectionResetError:
        pass
    bad.close()
    good.ping()
    st = discard_peer.stats()
    assert st["errors"] == 1 and st["active"] == 1
    good.disconnect()


# ---------------------------------------------------------------------- measurements (printed)

def test_measure_discard_ceiling(capsys):
    """How fast the peer discards: a raw client sends pre-encoded 64-byte-payload QoS 0 frames."""
    frame = codec.encode_publish(TOPIC, PAYLOAD)
    per = (1 << 20) // len(frame)
    block = frame * per
    blocks = 1500
    n = per * blocks
    with StandinPeer(mode="discard", max_lifetime=120) as peer:
        c = RawClient(peer.port)
        pid = peer.stats()["pid"]
        cpu0 = proc_cpu_seconds(pid)
        t0 = time.perf_counter()
        for _ in range(blocks):
            c.sock.sendall(block)
        t_sent = time.perf_counter()
        st = peer.wait_for(publishes_received=n, timeout=120, interval=0.002)
        t1 = time.perf_counter()
        cpu1 = proc_cpu_seconds(pid)
        assert st["publishes_received"] == n
        c.disconnect()
    rate = n / (t1 - t0)
    line = (f"[standin discard] {n:,} x {len(frame)} B frames: {rate / 1e6:.1f} M msg/s wall "
            f"({rate * len(frame) / 1e9:.2f} GB/s; client send {n / (t_sent - t0) / 1e6:.1f} M/s)")
    if cpu0 is not None and cpu1 is not None and cpu1 > cpu0:
        line += (f"; peer used {cpu1 - cpu0:.2f} CPU-s = {(cpu1 - cpu0) / (t1 - t0):.0%} of a "
                 f"core -> ceiling ~{n / (cpu1 - cpu0) / 1e6:.0f} M msg/s per core")
    report(capsys, line)
    # QoS 1 with acks: raw client sending, a reader thread counting PUBACKs
    n1 = 1_000_000
    frames = publish_frames(n1, 1)
    with StandinPeer(mode="discard", max_lifetime=120) as peer:
        c = RawClient(peer.port)
        got = [0]

        def reader() -> None:
            dec = codec.StreamDecoder(4)
            buf = bytearray(1 << 20)
            need = 4 * n1  # PUBACKs are 4 bytes each
            have = 0
            while have < need:
                k = c.sock.recv_into(buf)
                if not k:
                    break
                have += k
            got[0] = have // 4
            del dec

        t = threading.Thread(target=reader, daemon=True)
        t0 = time.perf_counter()
        t.start()
        send_chunked(c.sock, frames)
        t.join(120)
        t1 = time.perf_counter()
        assert got[0] == n1
        c.disconnect()
    report(capsys, f"[standin discard] QoS 1, {n1:,} PUBLISHes acked: "
                   f"{n1 / (t1 - t0) / 1e6:.1f} M msg/s")


def test_measure_replay_ceiling(capsys):
    """How fast the peer replays into a raw reader that only counts bytes."""
    n = 20_000_000
    with StandinPeer(mode="replay", count=n, max_lifetime=120) as peer:
        c = RawClient(peer.port)
        pid = peer.stats()["pid"]
        c.send(codec.Subscribe(1, [(TOPIC, 0)]))
        frame_len = len(codec.encode_publish(TOPIC, b"x" * 64))
        need = 5 + n * frame_len  # SUBACK + frames
        buf = bytearray(1 << 20)
        have = 0
        cpu0 = proc_cpu_seconds(pid)
        t0 = time.perf_counter()
        while have < need:
            k = c.sock.recv_into(buf)
            assert k
            have += k
        t1 = time.perf_counter()
        cpu1 = proc_cpu_seconds(pid)
        assert have == need
        assert peer.stats()["publishes_sent"] == n
        c.disconnect()
    rate = n / (t1 - t0)
    line = (f"[standin replay] {n:,} x {frame_len} B frames: {rate / 1e6:.1f} M msg/s "
            f"({rate * frame_len / 1e9:.2f} GB/s)")
    if cpu0 is not None and cpu1 is not None and cpu1 > cpu0:
        line += (f"; peer used {(cpu1 - cpu0) / (t1 - t0):.0%} of a core -> ceiling "
                 f"~{n / (cpu1 - cpu0) / 1e6:.0f} M msg/s per core")
    report(capsys, line)


def test_measure_parse_rates(capsys):
    """The peer's packet counting alone (no sockets), against the codec's StreamDecoder."""
    from standin_peer import _Conn

    frame = codec.encode_publish(TOPIC, PAYLOAD)
    uniform = bytearray(frame * ((1 << 20) // len(frame)))
    rng = random.Random(5)
    variants = [codec.encode_publish(TOPIC, PAYLOAD), codec.encode_publish("b", PAYLOAD),
                codec.encode_publish(TOPIC, PAYLOAD[:50]), codec.encode_publish(TOPIC, b"x" * 300)]
    mixed0 = bytearray(b"".join(rng.choice(variants) for _ in range(13_000)))
    mixed1 = bytearray(b"".join(
        codec.encode_publish(TOPIC, PAYLOAD[:rng.choice([10, 64, 50])], rng.choice([0, 1]), i + 1)
        for i in range(13_000)))
    server = _Server(mode="discard")
    rates = {}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for name, data, reps in (("uniform QoS 0", uniform, 200), ("mixed QoS 0", mixed0, 20),
                                 ("mixed QoS 0/1", mixed1, 20)):
            conn = _Conn(0, None, None)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            for _ in range(reps):
                assert server._parse(conn, data, 0, len(data)) == len(data)
                conn.wbuf.clear()
            rates[name] = conn.publishes_received / (time.perf_counter() - t0)
        dec = codec.StreamDecoder(4)
        t0 = time.perf_counter()
        k = 0
        for _ in range(10):
            k += len(dec.feed(uniform))
        rates["StreamDecoder uniform"] = k / (time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
        server.close()
    report(capsys, "[standin parse] " + ", ".join(
        f"{k}: {v / 1e6:.1f} M pkt/s" for k, v in rates.items())
        + f"  (codec: {codec.IMPLEMENTATION})")
