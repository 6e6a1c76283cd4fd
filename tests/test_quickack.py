"""Prompt TCP acknowledgements (``quickack``, ``mqttfast.quickack``): the option is checked at the
call, reaches every read of a TCP connection and only those, and costs no message.

Why it exists (the numbers are in ``benchmarks/``, never here): when the broker fans a burst out
to several subscribers right after they subscribed, it reaches them about twice as fast when each
read tells the kernel to acknowledge at once; a single fast subscriber is better off without it.
"""
from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any, List, Optional

import pytest

import mqttfast
import mqttfast.aio as aio
import mqttfast.aio.client as aio_client_module
import mqttfast.loop as loop_module
from client_support import topic, uid
from conftest import ON_EVERY_LOOP
from mqttfast import quickack
from mqttfast.session import Session

# Where the kernel has no TCP_QUICKACK the option does nothing: there is nothing to see asked.
NEEDS_QUICKACK = pytest.mark.skipif(quickack.TCP_QUICKACK is None,
                                    reason="this platform has no TCP_QUICKACK (Linux only)")


@pytest.mark.parametrize("value", ["yes", 1, 0, None])
def test_quickack_must_be_a_bool(value):
    with pytest.raises(TypeError, match="quickack must be True or False"):
        mqttfast.Client(client_id=uid("qa"), quickack=value)


def test_the_default_is_off():
    assert mqttfast.Client(client_id=uid("qa")).quickack is False


class Spy:
    """Counts ``ack_now`` calls, per socket, and does what the real one does."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: List[Any] = []
        self.refuse = refuse
        self.lock = threading.Lock()

    def __call__(self, sock: socket.socket) -> bool:
        with self.lock:
            self.calls.append(sock)
        if self.refuse:
            return False
        return quickack.ack_now(sock)


class Reads:
    """Counts ``Session.receive`` calls (one per read that brought bytes, over plain TCP) of the
    sessions whose client id starts with ``prefix``."""

    def __init__(self, monkeypatch: Any, prefix: str) -> None:
        self.count = 0
        real = Session.receive

        def counting(session: Session, data: Any, now: float) -> List[Any]:
            if session.client_id.startswith(prefix):
                self.count += 1  # one thread reads for a connection: no lock needed
            return real(session, data, now)

        monkeypatch.setattr(Session, "receive", counting)


def receive(broker: Any, n: int, url: Optional[str] = None, **options: Any) -> List[bytes]:
    """Subscribe a Client made with ``options`` (connected to ``url`` if given), publish ``n`` QoS 0
    messages to it from another Client over TCP, return the payloads it got (in order)."""
    base = topic("quickack")
    got: List[bytes] = []
    done = threading.Event()

    def on_message(m: Any) -> None:
        got.append(m.payload)
        if len(got) == n:
            done.set()

    sub = mqttfast.Client(client_id=uid("qa-sub"), **options)
    sub.on_message = on_message
    pub = mqttfast.Client(client_id=uid("qa-pub"))
    if url is not None:
        sub.connect(url, timeout=10)
    else:
        sub.connect(broker.host, broker.port, timeout=10)
    pub.connect(broker.host, broker.port, timeout=10)
    try:
        sub.subscribe(base, 0).wait(10)
        for i in range(n):
            pub.publish(base, b"m%d" % i)
        assert done.wait(20), f"{len(got)} of {n}"
    finally:
        pub.disconnect()
        sub.disconnect()
    return got


@NEEDS_QUICKACK
def test_quickack_acks_after_every_read(broker, monkeypatch):
    spy = Spy()
    monkeypatch.setattr(loop_module, "ack_now", spy)
    reads = Reads(monkeypatch, "qa-sub")
    got = receive(broker, 2000, quickack=True)
    assert got == [b"m%d" % i for i in range(2000)]
    assert reads.count > 1 and len(spy.calls) == reads.count, (len(spy.calls), reads.count)
    assert len({id(s) for s in spy.calls}) == 1  # the subscriber's socket only
    assert all(isinstance(s, socket.socket) for s in spy.calls)


def test_without_quickack_nothing_is_asked(broker, monkeypatch):
    spy = Spy()
    monkeypatch.setattr(loop_module, "ack_now", spy)
    got = receive(broker, 500)
    assert got == [b"m%d" % i for i in range(500)]
    assert spy.calls == []


@NEEDS_QUICKACK
def test_a_socket_that_refuses_turns_it_off_and_loses_nothing(broker, monkeypatch):
    spy = Spy(refuse=True)
    monkeypatch.setattr(loop_module, "ack_now", spy)
    got = receive(broker, 2000, quickack=True)
    assert got == [b"m%d" % i for i in range(2000)]
    assert len(spy.calls) == 1, "asked again after the socket refused"


@NEEDS_QUICKACK
def test_ack_now_on_a_real_socket_leaves_interactive_mode():
    """The kernel's own view: after ``ack_now`` the socket is in quick-ack mode (getsockopt
    reads 1), whatever it was before."""
    server = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(server.getsockname())
    b, _ = server.accept()
    try:
        a.setsockopt(socket.IPPROTO_TCP, quickack.TCP_QUICKACK, 0)  # interactive: ACKs wait
        assert a.getsockopt(socket.IPPROTO_TCP, quickack.TCP_QUICKACK) == 0
        assert quickack.ack_now(a) is True
        assert a.getsockopt(socket.IPPROTO_TCP, quickack.TCP_QUICKACK) == 1
    finally:
        for s in (a, b, server):
            s.close()


def test_ack_now_on_a_closed_socket_says_no():
    s = socket.socket()
    s.close()
    assert quickack.ack_now(s) is False


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix domain sockets")
def test_unix_socket_is_left_alone(monkeypatch):
    """No TCP, so no acknowledgements to hurry: over a Unix domain socket nothing is asked."""
    from test_transports import UnixBroker

    spy = Spy()
    monkeypatch.setattr(loop_module, "ack_now", spy)
    unix = UnixBroker().start()
    try:
        got = receive(unix.mosquitto, 500, quickack=True, url=unix.url)
    finally:
        unix.stop()
    assert got == [b"m%d" % i for i in range(500)]
    assert spy.calls == []


# ------------------------------------------------------------------------------- mqttfast.aio

@pytest.mark.parametrize("value", ["yes", 1, None])
def test_aio_quickack_must_be_a_bool(value):
    with pytest.raises(TypeError, match="quickack must be True or False"):
        aio.Client(client_id=uid("qa"), quickack=value)


async def aio_receive(broker: Any, n: int, **options: Any) -> List[bytes]:
    base = topic("quickack-aio")
    got: List[bytes] = []
    done = asyncio.Event()

    def on_message(m: Any) -> None:
        got.append(m.payload)
        if len(got) == n:
            done.set()

    sub = aio.Client(client_id=uid("qa-asub"), **options)
    sub.on_message = on_message
    pub = aio.Client(client_id=uid("qa-apub"))
    await asyncio.wait_for(sub.connect(broker.host, broker.port), 10)
    await asyncio.wait_for(pub.connect(broker.host, broker.port), 10)
    try:
        await asyncio.wait_for(sub.subscribe(base, qos=0), 10)
        for i in range(n):
            pub.publish_nowait(base, b"m%d" % i)
        await asyncio.wait_for(done.wait(), 20)
    finally:
        await pub.disconnect()
        await sub.disconnect()
    return got


@NEEDS_QUICKACK
@pytest.mark.asyncio(loop_factories=ON_EVERY_LOOP)
async def test_aio_quickack_acks_after_every_read(broker, monkeypatch):
    spy = Spy()
    monkeypatch.setattr(aio_client_module, "ack_now", spy)
    reads = Reads(monkeypatch, "qa-asub")
    got = await aio_receive(broker, 2000, quickack=True)
    assert got == [b"m%d" % i for i in range(2000)]
    assert reads.count > 1 and len(spy.calls) == reads.count, (len(spy.calls), reads.count)
    assert len({id(s) for s in spy.calls}) == 1  # the subscriber's socket only


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_aio_without_quickack_nothing_is_asked(broker, monkeypatch):
    spy = Spy()
    monkeypatch.setattr(aio_client_module, "ack_now", spy)
    got = await aio_receive(broker, 500)
    assert got == [b"m%d" % i for i in range(500)]
    assert spy.calls == []


@NEEDS_QUICKACK
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_aio_a_socket_that_refuses_turns_it_off(broker, monkeypatch):
    spy = Spy(refuse=True)
    monkeypatch.setattr(aio_client_module, "ack_now", spy)
    got = await aio_receive(broker, 2000, quickack=True)
    assert got == [b"m%d" % i for i in range(2000)]
    assert len(spy.calls) == 1, "asked again after the socket refused"
