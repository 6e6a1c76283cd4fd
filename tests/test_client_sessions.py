"""Sessions and connection failures against a real mosquitto: persistent sessions (offline delivery,
publishes surviving a broker restart), automatic reconnect with resubscription, keep-alive against a
silent peer, a server that never answers CONNECT, acknowledgement timeouts and re-sends, and the
broker's Server Keep Alive. The silent peers are small TCP servers on 127.0.0.1:0 in the test."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import List, Optional

import pytest

import mqttfast
from client_support import connected_client, granted, Inbox, shutdown, topic, uid, wait_until

FAST = mqttfast.Backoff(initial=0.1, maximum=0.5)


# ----------------------------------------------------------------------------- persistent sessions


@pytest.mark.parametrize("protocol", [4, 5])
def test_persistent_session_receives_while_away(broker, protocol):
    name = topic("away")
    client_id = uid("away")
    extra = {"session_expiry": 300} if protocol == 5 else {}
    sub = mqttfast.Client(client_id=client_id, protocol=protocol, clean_session=False, **extra)
    pub = again = None
    try:
        first = sub.connect(broker.host, broker.port, timeout=10)
        assert granted(sub.subscribe(name, qos=1)) == [1]
        sub.disconnect()

        pub = connected_client(broker.port, protocol=protocol)
        payloads = [b"while-away-%d" % i for i in range(10)]
        assert pub.publish_many(name, payloads, qos=1).wait(5)
        assert pub.publish(name, b"qos0-not-queued", qos=0).wait(5)

        inbox = Inbox()
        again = mqttfast.Client(client_id=client_id, protocol=protocol, clean_session=False,
                                **extra)
        again.on_message = inbox
        event = again.connect(broker.host, broker.port, timeout=10)
        assert event.session_present is True
        assert inbox.wait_for(10, 5), inbox.payloads
        time.sleep(0.2)
        # mosquitto does not queue QoS 0 for offline clients (queue_qos0_messages false).
        assert inbox.payloads == payloads
        assert all(m.qos == 1 for m in inbox.messages)
        assert first.session_present is False  # a new client id has no session yet
    finally:
        shutdown(pub, again, sub)
        # Leave no persistent session behind on the shared broker.
        cleaner = mqttfast.Client(client_id=client_id, protocol=protocol, clean_session=True)
        cleaner.connect(broker.host, broker.port, timeout=10)
        cleaner.disconnect()


def test_persistent_session_same_client_queues_while_disconnected(broker):
    """With clean_session=False, publish() after disconnect() queues instead of raising, and
    connect() again sends it."""
    name = topic("queue")
    inbox = Inbox()
    watcher = client = None
    try:
        watcher = connected_client(broker.port, inbox=inbox)
        assert watcher.subscribe(name, qos=1).wait(5)
        client = connected_client(broker.port, client_id=uid("q"), clean_session=False)
        client.disconnect()
        handles = [client.publish(name, b"later-%d" % i, qos=1) for i in range(5)]
        assert not any(h.done for h in handles)
        client.connect(broker.host, broker.port, timeout=10)
        assert all(h.wait(5) for h in handles)
        assert inbox.wait_for(5, 5)
        assert inbox.payloads == [b"later-%d" % i for i in range(5)]
    finally:
        shutdown(watcher, client)


@pytest.mark.parametrize("protocol, qos", [(4, 1), (5, 1), (4, 2), (5, 2)])
def test_publisher_session_survives_broker_restart(broker_factory, protocol, qos):
    """A persistent publisher with a reconnect policy: what was in flight when the broker went down
    and what was published while it was down all complete once it is back; none is lost.

    The broker is frozen (SIGSTOP) while a batch is written, so that batch is certainly still
    unacknowledged when the broker then shuts down (SIGTERM, which saves its database)."""
    instance = broker_factory(persistence=True, max_queued_messages=0)
    name = topic("restart")
    extra = {"session_expiry": 300} if protocol == 5 else {}
    inbox = Inbox()
    sub = mqttfast.Client(client_id=uid("rsub"), protocol=protocol, clean_session=False,
                          reconnect=FAST, **extra)
    sub.on_message = inbox
    # max_inflight=20: mosquitto's max_inflight_messages (MQTT 5 clients learn it as Receive
    # Maximum; MQTT 3 clients cannot). mosquitto 2.0.11 answers an MQTT 3.1.1 client's 21st
    # unreleased QoS 2 PUBLISH with a plain PUBREC and then drops the message (see
    # test_qos2_mqtt311_beyond_mosquitto_inflight_limit), so a 3.1.1 publisher must stay within it.
    pub = mqttfast.Client(client_id=uid("rpub"), protocol=protocol, clean_session=False,
                          reconnect=FAST, max_inflight=20, **extra)
    lost: List[Optional[BaseException]] = []
    pub.on_disconnect = lost.append
    connects: List[object] = []
    pub.on_connect = connects.append
    try:
        sub.connect(instance.host, instance.port, timeout=10)
        assert granted(sub.subscribe(name, qos=qos)) == [qos]
        pub.connect(instance.host, instance.port, timeout=10)
        acked = [pub.publish(name, b"acked-%04d" % i, qos=qos) for i in range(200)]
        assert all(h.wait(10) for h in acked)

        os.kill(instance.pid, signal.SIGSTOP)
        try:
            inflight = [pub.publish(name, b"inflight-%04d" % i, qos=qos) for i in range(300)]
            assert wait_until(lambda: pub.session.pending_bytes == 0, 5)
            time.sleep(0.1)
            assert not any(h.done for h in inflight)
            os.kill(instance.pid, signal.SIGTERM)
        finally:
            os.kill(instance.pid, signal.SIGCONT)
        instance.stop()
        assert wait_until(lambda: lost and not pub.is_connected, 5), "the drop went unnoticed"
        unacked_at_drop = sum(not h.done for h in inflight)
        assert unacked_at_drop > 0  # the broker went down with these in flight or queued
        assert pub.session.inflight_count > 0

        during = [pub.publish(name, b"during-%04d" % i, qos=qos) for i in range(300)]
        time.sleep(0.3)  # a few failed reconnect attempts against the closed port
        assert not any(h.done for h in during)  # queued in the session, not failed
        instance.start()  # same port, same persistence

        assert all(h.wait(15) for h in inflight + during), (
            unacked_at_drop, sum(h.ok for h in inflight), sum(h.ok for h in during))
        expected = {h.payload for h in acked + inflight + during}
        assert wait_until(lambda: expected <= set(inbox.payloads), 15), (
            len(expected - set(inbox.payloads)))
        assert len(connects) >= 2
        assert connects[-1].session_present is True
        assert set(inbox.payloads) == expected
        # Duplicates only where the broker re-sent a PUBLISH with DUP set. For QoS 1 that is the
        # protocol; for QoS 2 it is mosquitto 2.0.11: a message whose PUBREL it had sent (state
        # "wait for PUBCOMP") comes back from its database as a PUBLISH again (MQTT 3.1.1 4.3.3
        # forbids that), and the client, having released that packet id with PUBCOMP, must take
        # it as a new message. (Exactly-once without a restart: test_round_trip.)
        seen = set()
        for msg in inbox.messages:
            assert msg.payload not in seen or msg.dup, msg.payload
            seen.add(msg.payload)
    finally:
        shutdown(pub, sub)


# ----------------------------------------------------------------------------- automatic reconnect


@pytest.mark.parametrize("protocol", [4, 5])
def test_reconnect_and_resubscribe_after_broker_crash(broker_factory, protocol):
    instance = broker_factory()
    name = topic("crash")
    inbox = Inbox()
    connects: List[object] = []
    drops: List[Optional[BaseException]] = []
    sub = mqttfast.Client(client_id=uid("crash"), protocol=protocol, reconnect=FAST)
    sub.on_message = inbox
    sub.on_connect = connects.append
    sub.on_disconnect = drops.append
    pub = None
    try:
        sub.connect(instance.host, instance.port, timeout=10)
        assert granted(sub.subscribe(name, qos=1)) == [1]
        instance.kill()  # SIGKILL: no session survives (and this is a clean session anyway)
        assert wait_until(lambda: drops, 5)
        assert isinstance(drops[0].error, mqttfast.ConnectionLost)
        instance.restart()  # a new broker on the same port
        assert wait_until(lambda: len(connects) >= 2 and sub.is_connected, 10), connects
        assert connects[-1].session_present is False

        pub = connected_client(instance.port, protocol=protocol)
        # The resubscription is asynchronous: publish until it took effect.
        deadline = time.monotonic() + 10
        while not inbox.messages and time.monotonic() < deadline:
            pub.publish(name, b"probe", qos=1).wait(5)
            inbox.wait_for(1, 0.1)
        assert inbox.messages, "no message after the reconnect: not resubscribed?"
        assert pub.publish(name, b"after", qos=1).wait(5)
        assert wait_until(lambda: b"after" in inbox.payloads, 5)
    finally:
        shutdown(pub, sub)


def test_disconnect_while_reconnecting_returns_promptly(broker_factory):
    """disconnect() while the broker is down and the client waits to retry: returns at once and
    stops retrying."""
    instance = broker_factory()
    # The first retry comes 2 to 4 s after the drop (Backoff's equal jitter).
    client = mqttfast.Client(client_id=uid("give-up"), reconnect=mqttfast.Backoff(4.0, 4.0))
    drops: List[object] = []
    client.on_disconnect = drops.append
    client.connect(instance.host, instance.port, timeout=10)
    instance.kill()
    assert wait_until(lambda: drops, 5)
    started = time.monotonic()
    client.disconnect()
    assert time.monotonic() - started < 1.0
    assert client._conn.phase == mqttfast.loop.CLOSED
    instance.restart()
    time.sleep(4.5)  # past the retry: a disconnected client must not come back
    assert not client.is_connected


def test_reconnect_gives_up_after_max_attempts():
    drops: List[object] = []
    server = _FakeBroker(answer_connect=True, answer_ping=True)
    client = mqttfast.Client(client_id=uid("max"),
                             reconnect=mqttfast.Backoff(0.05, 0.1, max_attempts=2))
    client.on_disconnect = drops.append
    try:
        client.connect("127.0.0.1", server.port, timeout=5)
        server.close()  # stops listening and drops the client: every retry is refused
        assert wait_until(lambda: client._conn.phase == mqttfast.loop.CLOSED, 5)
        assert len(drops) == 3  # the drop, then two failed attempts
    finally:
        client.close()
        server.close()


# ----------------------------------------------------------------------------- silent peers


class _FakeBroker:
    """A TCP server on 127.0.0.1:0 that accepts one client at a time and answers CONNECT with a
    CONNACK (or not) and PINGREQ with PINGRESP (or not). Records what it received."""

    def __init__(self, answer_connect: bool, answer_ping: bool) -> None:
        self.answer_connect = answer_connect
        self.answer_ping = answer_ping
        self.received = bytearray()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.clients: List[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.clients.append(conn)
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        answered = False
        while not self._stop.is_set():
            try:
                data = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            self.received += data
            if not answered and self.answer_connect and data[0] == 0x10:
                v5 = b"MQTT\x05" in data[:16]
                conn.sendall(b"\x20\x03\x00\x00\x00" if v5 else b"\x20\x02\x00\x00")
                answered = True
            if self.answer_ping and b"\xc0\x00" in data:
                conn.sendall(b"\xd0\x00")

    def close(self) -> None:
        self._stop.set()
        for conn in self.clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self.sock.close()
        self.thread.join(2)


def test_keepalive_detects_silent_peer():
    """A peer that answers CONNACK and then nothing: the client pings once it has heard nothing
    for half the keep-alive period and gives up within 1.5x keepalive (MQTT's own limit; the
    session's own is one keep-alive)."""
    server = _FakeBroker(answer_connect=True, answer_ping=False)
    lost = threading.Event()
    errors: List[Optional[BaseException]] = []

    def on_disconnect(event):
        errors.append(event)
        lost.set()

    client = mqttfast.Client(client_id=uid("ka"))
    client.on_disconnect = on_disconnect
    try:
        client.connect("127.0.0.1", server.port, keepalive=2, timeout=5)
        heard = time.monotonic()  # the CONNACK: the last the peer said
        assert lost.wait(6), "the silent peer was not detected"
        elapsed = time.monotonic() - heard
        # keepalive=2: the session gives up one keep-alive after it last heard (~2.0 s): not
        # before the ping's answer was due, and inside MQTT's 1.5x (3 s, + timer slack; a client
        # that gave up one keep-alive after a ping at 0.85x, ~3.7 s, must fail this).
        assert 1.9 <= elapsed <= 3.0 + 0.4, elapsed
        assert b"\xc0\x00" in server.received  # a PINGREQ went out
        assert errors[0].reason_code == 0x8D and not errors[0].by_server
        assert isinstance(errors[0].error, mqttfast.ConnectionLost)
        assert not client.is_connected
    finally:
        client.close()
        server.close()


def test_keepalive_answered_keeps_connection():
    server = _FakeBroker(answer_connect=True, answer_ping=True)
    lost: List[object] = []
    client = mqttfast.Client(client_id=uid("ka2"))
    client.on_disconnect = lost.append
    try:
        client.connect("127.0.0.1", server.port, keepalive=1, timeout=5)
        time.sleep(3.2)
        assert lost == []
        assert client.is_connected
        assert server.received.count(b"\xc0\x00") >= 2
    finally:
        client.close()
        server.close()


def test_keepalive_with_real_broker(broker):
    """Pings against mosquitto keep an idle client connected past 1.5x keepalive (the broker's
    limit) and the session alive."""
    name = topic("idle")
    inbox = Inbox()
    client = None
    try:
        client = connected_client(broker.port, inbox=inbox, keepalive=1)
        assert client.subscribe(name, qos=1).wait(5)
        time.sleep(2.5)
        assert client.is_connected
        assert client.publish(name, b"still here", qos=1).wait(5)
        assert inbox.wait_for(1, 5)
    finally:
        shutdown(client)


def test_no_connack_times_out():
    server = _FakeBroker(answer_connect=False, answer_ping=False)
    client = mqttfast.Client(client_id=uid("mute"), connect_timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(mqttfast.ConnectionLost) as info:
            client.connect("127.0.0.1", server.port)
        elapsed = time.monotonic() - started
        assert 0.8 <= elapsed <= 2.5, elapsed
        assert "connack" in str(info.value).lower()
        assert server.received[:1] == b"\x10"  # the CONNECT did go out
        assert not client.is_connected
    finally:
        client.close()
        server.close()


def test_no_connack_explicit_timeout():
    server = _FakeBroker(answer_connect=False, answer_ping=False)
    client = mqttfast.Client(client_id=uid("mute2"))
    try:
        started = time.monotonic()
        with pytest.raises(mqttfast.ConnectionLost):
            client.connect("127.0.0.1", server.port, timeout=0.5)
        assert time.monotonic() - started < 1.5
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize("protocol", [3, 4])
def test_ack_timeout_resends_with_dup_then_fails(protocol):
    """MQTT 3: an unacknowledged QoS 1 PUBLISH is re-sent with DUP every ack_timeout, up to
    max_retries times, then completes as failed (as the seed's inflight queue does)."""
    server = _FakeBroker(answer_connect=True, answer_ping=True)
    client = mqttfast.Client(client_id=uid("dup"), protocol=protocol, ack_timeout=0.3,
                             max_retries=2)
    completed: List[object] = []
    client.on_publish = completed.append
    try:
        client.connect("127.0.0.1", server.port, timeout=5)
        started = time.monotonic()
        handle = client.publish("a/b", b"never acked", qos=1)
        assert handle.wait(5) is False
        elapsed = time.monotonic() - started
        assert 0.8 <= elapsed <= 3.0, elapsed
        assert "3 attempts" in handle.error
        assert completed == [handle]
        publishes = [b for b in _first_bytes(server.received) if b >> 4 == 3]
        assert publishes == [0x32, 0x3A, 0x3A]  # QoS 1, then twice QoS 1 + DUP
        assert client.is_connected  # a missing acknowledgement is not a dead connection
    finally:
        client.close()
        server.close()


def test_ack_timeout_mqtt5_fails_without_resending():
    """MQTT 5 forbids re-sending on a live connection: the publish fails after ack_timeout."""
    server = _FakeBroker(answer_connect=True, answer_ping=True)
    client = mqttfast.Client(client_id=uid("dup5"), protocol=5, ack_timeout=0.3, max_retries=2)
    try:
        client.connect("127.0.0.1", server.port, timeout=5)
        handle = client.publish("a/b", b"never acked", qos=2)
        assert handle.wait(5) is False
        publishes = [b for b in _first_bytes(server.received) if b >> 4 == 3]
        assert publishes == [0x34]
    finally:
        client.close()
        server.close()


def _first_bytes(stream: bytes) -> List[int]:
    """The first byte of every MQTT packet in ``stream``."""
    firsts, pos = [], 0
    while pos < len(stream):
        firsts.append(stream[pos])
        pos += 1
        length, shift = 0, 0
        while True:
            byte = stream[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        pos += length
    return firsts


def test_server_keep_alive_adopted(broker_factory):
    """MQTT 5: a broker with max_keepalive answers a larger keep-alive with Server Keep Alive,
    which the client then uses for its pings."""
    instance = broker_factory(max_keepalive=10)
    client = None
    try:
        client = connected_client(instance.port, protocol=5, keepalive=60)
        assert client.connack.properties["server_keep_alive"] == 10
        assert client.session.keepalive == 10
        assert client.session.next_deadline() <= client.session.last_sent + 10
    finally:
        shutdown(client)
