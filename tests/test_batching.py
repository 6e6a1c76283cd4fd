"""Reading in batches (``mqttfast.batching``): the sans-IO rule, then both clients against mosquitto.

The rule: a socket low-water mark sized to the incoming rate, a timer that bounds how long a byte
waits. Against the broker: a burst is read in far fewer reads than messages (it was one read for
every one or two messages: each a wake-up that costs mosquitto too), and nothing waits, neither the
burst's tail nor a lone message after it.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, List

import pytest

import mqttfast
import mqttfast.aio as aio
from client_support import topic, uid
from mqttfast import batching
from mqttfast.batching import MAX_LOWAT, ReadBatcher, check_read_delay

HOST = "127.0.0.1"
N = 20_000  # 64-byte messages in a burst


# ================================================================ the rule (sans-IO)

def feed(b: ReadBatcher, nbytes: int, every: float, count: int, t: float) -> List[int]:
    """``count`` reads of ``nbytes``, ``every`` seconds apart from ``t``: the marks asked for."""
    marks = []
    for _ in range(count):
        t += every
        mark = b.read(nbytes, t)
        if mark:
            marks.append(mark)
    return marks


def test_a_fast_flow_gets_half_a_delay_worth_as_its_mark():
    b = ReadBatcher(0.001)
    # 70 bytes every 10 us: 7 MB/s, 7,000 bytes a millisecond.
    assert feed(b, 70, 10e-6, 200, 0.0) == [pytest.approx(3500, abs=5)]
    assert b.lowat == pytest.approx(3500, abs=5) and b.due() == pytest.approx(b.last_read + 0.001)


def test_a_slow_flow_is_read_as_it_comes():
    b = ReadBatcher(0.001)
    # 70 bytes every 100 us: 350 bytes per half millisecond, under MIN_LOWAT.
    assert feed(b, 70, 100e-6, 1000, 0.0) == []
    assert b.lowat == 1 and b.due() is None and b.tail(1.0) == 0


def test_the_mark_is_capped_and_small_changes_make_no_system_call():
    b = ReadBatcher(0.001)
    assert feed(b, 65536, 10e-6, 200, 0.0) == [MAX_LOWAT]
    b = ReadBatcher(0.001)
    t = 0.0
    assert feed(b, 700, 100e-6, 11, t) == [pytest.approx(3500, abs=5)]
    assert feed(b, 800, 100e-6, 30, b.last_read) == []  # 4,000: within 25% of 3,500
    assert feed(b, 1400, 100e-6, 30, b.last_read) == [pytest.approx(7000, abs=10)]


def test_the_timer_drops_the_mark_then_puts_it_back_after_one_read():
    b = ReadBatcher(0.001)
    feed(b, 70, 10e-6, 200, 0.0)
    mark, last = b.lowat, b.last_read
    assert b.tail(last + 0.0005) == 0  # too early: nothing to do
    assert b.tail(last + 0.001) == 1 and b.lowat == 1
    # The read that the drop lets in (small: the broker held its sends for our ACK), and the
    # mark is back at once for the burst that follows.
    assert b.read(81, last + 0.00105) == mark and b.lowat == mark
    assert b.read(8000, last + 0.0011) == 0


def test_two_timers_without_a_full_read_end_the_batching():
    b = ReadBatcher(0.001)
    feed(b, 70, 10e-6, 200, 0.0)
    mark = b.lowat
    t = b.last_read + 0.001
    assert b.tail(t) == 1
    assert b.read(81, t + 1e-5) == mark  # the tail of the flow
    assert b.tail(t + 0.0011) == 1  # nothing since: the flow stopped
    assert b.lowat == 1 and b.due() is None
    assert b.read(70, t + 0.5) == 0 and b.lowat == 1  # a lone message later: read at once


def test_a_read_that_we_answer_ends_the_batching():
    """QoS 1/2: the broker holds its next messages until our acks (mosquitto keeps 20 in flight
    to a subscriber); waiting for more bytes would stall each window until the timer."""
    b = ReadBatcher(0.001)
    feed(b, 70, 10e-6, 200, 0.0)
    assert b.lowat > 1
    assert b.answered(b.last_read) == 1 and b.lowat == 1 and b.due() is None
    t = b.last_read
    for _ in range(1000):  # a fast acknowledged flow: every read answered, never a mark
        t += 10e-6
        assert b.read(70, t) == 0
        assert b.answered(t) == 0


def test_the_delay_is_checked_at_the_call():
    assert check_read_delay(0) == 0.0 and check_read_delay(0.002) == 0.002
    for bad in (-0.001, 1.5, float("nan")):
        with pytest.raises(ValueError):
            check_read_delay(bad)
    for bad in ("1", None, True):
        with pytest.raises(TypeError):
            check_read_delay(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        mqttfast.Client(uid("b"), max_read_delay=-1)
    with pytest.raises(TypeError):
        aio.Client(uid("b"), max_read_delay="fast")  # type: ignore[arg-type]


def test_the_low_water_mark_is_set_on_a_real_socket():
    if not hasattr(socket, "SO_RCVLOWAT"):
        pytest.skip("this platform has no SO_RCVLOWAT")
    with socket.create_server((HOST, 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    try:
        assert batching.batcher_for(a, 0.001, 0.0) is not None
        assert batching.set_lowat(a, 4096)
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 4096
        assert batching.batcher_for(a, 0, 0.0) is None  # max_read_delay=0: off
    finally:
        a.close()
        b.close()
    assert not batching.set_lowat(a, 1)  # closed: refused, not raised


# ================================================================ against mosquitto

def burst(port: int, name: str, n: int) -> None:
    """``n`` QoS 0 messages of 64 bytes, as fast as one connection writes them."""
    with mqttfast.Client(uid("feed")) as pub:
        pub.connect(HOST, port)
        payload = b"x" * 64
        for _ in range(n):
            pub.publish(name, payload)
        pub.publish(name + "/end", b"", qos=1).wait(10)


def marks_recorder(monkeypatch: pytest.MonkeyPatch, module: Any, only: Any = None) -> List[int]:
    """The marks set from now on (``only``: a list that will hold the one socket to watch)."""
    marks: List[int] = []
    real = module.set_lowat

    def recording(sock: Any, lowat: int) -> bool:
        if not only or sock is only[0]:
            marks.append(lowat)
        return real(sock, lowat)

    monkeypatch.setattr(module, "set_lowat", recording)
    return marks


def test_sync_client_reads_a_burst_in_batches_and_nothing_waits(broker, monkeypatch):
    from mqttfast import loop as loop_module
    marks = marks_recorder(monkeypatch, loop_module)
    name = topic("batch")
    got = threading.Event()
    count = [0]
    late: List[float] = []

    def on_message(m: Any) -> None:
        if m.topic == name + "/late":
            late.append(time.monotonic())
            return
        count[0] += 1
        if count[0] == N:
            got.set()

    with mqttfast.Client(uid("bs"), max_read_delay=0.001) as sub:
        sub.on_message = on_message
        sub.connect(HOST, broker.port)
        sub.subscribe(name, 0).wait(5)
        sub.subscribe(name + "/late", 0).wait(5)
        conn = sub._conn
        reads = [0]
        real_read = conn._read

        def counting_read() -> None:
            reads[0] += 1
            real_read()

        conn._read = counting_read  # type: ignore[method-assign]
        burst(broker.port, name, N)
        assert got.wait(20), f"received {count[0]} of {N}"  # the burst's tail did not wait
        assert max(marks) > 1, marks  # the mark went up
        assert reads[0] < N / 20, reads[0]  # one read for every 1-2 messages before
        time.sleep(0.05)  # the flow has stopped: the mark is back at 1
        with mqttfast.Client(uid("bl")) as pub:
            pub.connect(HOST, broker.port)
            sent = time.monotonic()
            pub.publish(name + "/late", b"!", qos=1).wait(5)
            deadline = time.monotonic() + 5
            while not late and time.monotonic() < deadline:
                time.sleep(0.001)
        assert late and late[0] - sent < 0.5  # read at once, not at some timer
        assert marks[-1] == 1


@pytest.mark.asyncio
async def test_aio_client_reads_a_burst_in_batches_and_nothing_waits(broker, monkeypatch):
    from mqttfast.aio import client as aio_client_module
    marks = marks_recorder(monkeypatch, aio_client_module)
    name = topic("abatch")
    sub = aio.Client(uid("abs"), max_messages=N + 10, max_read_delay=0.001)
    try:
        await asyncio.wait_for(sub.connect(HOST, broker.port), 10)
        await sub.subscribe(name)
        reads = [0]
        real = sub._received

        def counting(proto: Any, data: Any) -> None:
            reads[0] += 1
            real(proto, data)

        sub._received = counting  # type: ignore[method-assign]
        await asyncio.get_running_loop().run_in_executor(None, burst, broker.port, name, N)
        received = 0

        async def take(n: int) -> None:
            nonlocal received
            async for _ in sub.messages():
                received += 1
                if received == n:
                    return

        await asyncio.wait_for(take(N), 20)
        assert max(marks) > 1, marks
        assert reads[0] < N / 20, reads[0]
        await asyncio.sleep(0.05)
        sent = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, burst, broker.port, name, 1)
        await asyncio.wait_for(take(N + 1), 5)
        assert time.monotonic() - sent < 1.0
        assert marks[-1] == 1
    finally:
        await asyncio.wait_for(sub.disconnect(), 5)


def test_a_qos1_flow_is_read_as_it_comes(broker_factory, monkeypatch):
    """The CI fault test that found it: 50,000 QoS 1 publishes across broker kills no longer
    settled within 90 s, because the persistent QoS 1 subscriber batched its reads while the
    broker waited for its PUBACKs. An acknowledged flow never raises the mark.

    A broker of its own that queues without limit: with mosquitto's default of 1,000 queued
    QoS 1 messages a client, a publisher faster than the (pure-twin) subscriber made it drop
    the excess ("Outgoing messages are being dropped", CI 2026-12-04: 4,678 of 5,000)."""
    broker = broker_factory(max_queued_messages=0)
    from mqttfast import loop as loop_module
    watched: List[Any] = []  # the subscriber's socket (its publisher may batch its PUBACKs)
    marks = marks_recorder(monkeypatch, loop_module, watched)
    name = topic("batch-q1")
    n = 5_000
    got = threading.Event()
    count = [0]

    def on_message(m: Any) -> None:
        count[0] += 1
        if count[0] == n:
            got.set()

    with mqttfast.Client(uid("bq"), max_read_delay=0.001) as sub:
        sub.on_message = on_message
        sub.connect(HOST, broker.port)
        sub.subscribe(name, 1).wait(5)
        watched.append(sub._conn.sock)
        with mqttfast.Client(uid("bqp")) as pub:
            pub.connect(HOST, broker.port)
            handles = [pub.publish(name, b"y" * 64, qos=1) for _ in range(n)]
            assert handles[-1].wait(20)
        assert got.wait(20), f"received {count[0]} of {n}"
    assert max(marks, default=1) == 1, marks
