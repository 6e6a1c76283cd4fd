"""Scale against a real mosquitto: 1,000 connections on one Loop in one thread, 200k QoS 1 in order
through a QoS 1 subscriber, and publishing from several threads at once.

The million-publish linear-time check is a benchmark, not a test: benchmarks/bench_linear_qos1.py.

These brokers log only connections (not every packet) so that mosquitto is not the bottleneck.
"""
from __future__ import annotations

import resource
import threading
import time

import pytest

import mqttfast
from client_support import QUIET_LOG, connected_client, granted, Inbox, shutdown, topic, uid


@pytest.fixture
def quiet_broker(broker_factory):
    """A broker that logs no packets and queues without limit (max_queued_messages 0), so a slow
    subscriber loses nothing."""
    return broker_factory(log_types=QUIET_LOG, max_queued_messages=0)


class Counter:
    """Counts received messages (cheap enough for a million) and keeps a sample."""

    def __init__(self) -> None:
        self.count = 0
        self.first = None
        self.last = None
        self.done = threading.Event()
        self.target = 0

    def __call__(self, msg) -> None:
        self.count += 1
        if self.first is None:
            self.first = msg.payload
        if self.count >= self.target:
            self.last = msg.payload
            self.done.set()

    def expect(self, n: int) -> None:
        self.count = 0
        self.first = self.last = None
        self.target = n
        self.done.clear()


# ----------------------------------------------------------------------------- 1,000 connections


@pytest.fixture
def many_files():
    """Raise the soft RLIMIT_NOFILE to the hard limit (the broker started after this inherits
    it) and restore it afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2200:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is too low for 1,000 connections")
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_thousand_connections_on_one_loop(many_files, broker_factory):
    instance = broker_factory(log_types=QUIET_LOG, max_queued_messages=0)
    base = topic("fleet")
    loop = mqttfast.Loop()
    received = Inbox()
    sub = mqttfast.Client(client_id=uid("fleet-sub"), loop=loop)
    sub.on_message = received
    clients = []
    try:
        sub.connect(instance.host, instance.port, timeout=10)  # drives the shared loop itself
        assert granted(sub.subscribe(f"{base}/#", qos=1)) == [1]
        started = time.monotonic()
        for i in range(1000):
            client = mqttfast.Client(client_id=f"fleet-{i}", loop=loop)
            client.connect(instance.host, instance.port, timeout=10)
            clients.append(client)
        assert all(c.is_connected for c in clients)
        assert not any(c._thread for c in clients + [sub])  # no thread per client
        handles = [c.publish(f"{base}/{i}", b"%04d" % i, qos=1) for i, c in enumerate(clients)]
        assert loop.run_until(lambda: all(h.done for h in handles), 30)
        assert all(h.is_published for h in handles)
        assert loop.run_until(lambda: len(received) >= 1000, 30), len(received)
        assert sorted(received.payloads) == [b"%04d" % i for i in range(1000)]
        assert {m.topic for m in received.messages} == {f"{base}/{i}" for i in range(1000)}
        assert time.monotonic() - started < 60
        # Each disconnect() drives the shared loop until its DISCONNECT is out; it must not sit
        # in select() once that is done (it used to take a full second per client).
        started = time.monotonic()
        while clients:
            clients.pop().disconnect(timeout=2)
        assert time.monotonic() - started < 20
        assert loop.connections == {sub._conn}
    finally:
        for client in clients:
            try:
                client.disconnect(timeout=2)
            except Exception:  # noqa: BLE001
                pass
        sub.disconnect(timeout=2)
        loop.close()
    assert not loop.connections


# ----------------------------------------------------------------------------- QoS 1 in order


def test_qos1_subscriber_receives_all_in_order(quiet_broker):
    """200k QoS 1 through a QoS 1 subscriber (which acknowledges each one): in order, no gaps."""
    name = topic("ordered")
    seen = []
    sub = pub = None
    try:
        sub = connected_client(quiet_broker.port)
        sub.on_message = lambda m: seen.append(m.payload)
        assert granted(sub.subscribe(name, qos=1)) == [1]
        pub = connected_client(quiet_broker.port)
        n = 200_000
        assert pub.publish_many(name, (b"%06d" % i for i in range(n)), qos=1).wait(60)
        deadline = time.monotonic() + 60
        while len(seen) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(seen) == n
        assert seen == [b"%06d" % i for i in range(n)]
    finally:
        shutdown(pub, sub)


# ----------------------------------------------------------------------------- threads


def test_publish_from_four_threads(quiet_broker):
    name = topic("threads")
    counter = Counter()
    counter.expect(40_000)
    seen = set()

    def on_message(msg):
        seen.add(msg.payload)
        counter(msg)

    sub = pub = None
    try:
        sub = connected_client(quiet_broker.port)
        sub.on_message = on_message
        assert sub.subscribe(name, qos=1).wait(5)
        pub = connected_client(quiet_broker.port)
        results = {}
        errors = []
        barrier = threading.Barrier(4)

        def worker(t: int) -> None:
            try:
                barrier.wait(5)
                results[t] = [pub.publish(name, b"%d-%05d" % (t, i), qos=1) for i in range(10_000)]
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        handles = [h for t in range(4) for h in results[t]]
        assert len(handles) == 40_000
        assert all(h.wait(30) for h in handles)
        # No two threads got the same id: ids run in order and 40,000 do not wrap past 65,535.
        assert len({h.packet_id for h in handles}) == 40_000
        assert counter.done.wait(30), counter.count
        time.sleep(0.2)
        assert counter.count == 40_000
        assert seen == {b"%d-%05d" % (t, i) for t in range(4) for i in range(10_000)}
    finally:
        shutdown(pub, sub)


def test_publish_qos0_from_four_threads(quiet_broker):
    """QoS 0 from four threads: every byte stream stays whole (no interleaved packets)."""
    name = topic("threads0")
    seen = []
    sub = pub = None
    try:
        sub = connected_client(quiet_broker.port)
        sub.on_message = lambda m: seen.append(m.payload)
        assert sub.subscribe(name, qos=1).wait(5)
        pub = connected_client(quiet_broker.port)
        last = {}

        def worker(t: int) -> None:
            for i in range(10_000):
                last[t] = pub.publish(name, b"%d-%05d" % (t, i) + b"." * (i % 50))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert all(last[t].wait(10) for t in range(4))
        assert pub.publish(name, b"end", qos=1).wait(10)
        deadline = time.monotonic() + 30
        while (not seen or seen[-1] != b"end") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(seen) == 40_001
        for t in range(4):  # per thread, in order
            mine = [p for p in seen if p.startswith(b"%d-" % t)]
            assert [p[:7] for p in mine] == [b"%d-%05d" % (t, i) for i in range(10_000)]
        assert pub.is_connected
    finally:
        shutdown(pub, sub)
