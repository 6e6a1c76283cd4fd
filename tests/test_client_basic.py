"""The Client against a real mosquitto: connecting, QoS 0/1/2 round trips on MQTT 3.1, 3.1.1 and 5.0,
retained messages, wills, caller mistakes, the pull-style iterator and a caller-driven loop.

Publisher and subscriber are both mqttfast clients; every wait has a timeout.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import mqttfast
from client_support import QUIET_LOG, chunks, connected_client, granted, Inbox, shutdown, topic, uid

PROTOCOLS = [3, 4, 5]


def test_connect_accepted(broker):
    client = mqttfast.Client(client_id=uid("ok"))
    try:
        event = client.connect(broker.host, broker.port, timeout=10)
        assert client.is_connected
        assert event.session_present is False  # a clean session never has one
        assert client.connack is event
    finally:
        client.disconnect()
    assert not client.is_connected


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connect_with_context_manager_disconnects(broker, protocol):
    seen = []
    with mqttfast.Client(client_id=uid("cm"), protocol=protocol) as client:
        client.on_connect = seen.append
        client.connect(broker.host, broker.port, timeout=10)
        assert client.is_connected
    assert not client.is_connected
    assert len(seen) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_round_trip(broker, protocol, qos):
    """Twenty distinct messages arrive exactly once, in order, with the exact topic and payload."""
    name = topic(f"rt{protocol}{qos}")
    inbox = Inbox()
    sub = pub = None
    try:
        sub = connected_client(broker.port, inbox=inbox, protocol=protocol)
        assert granted(sub.subscribe(name, qos=2)) == [2]
        pub = connected_client(broker.port, protocol=protocol)
        payloads = [b"\x00\xffbinary-%d" % i for i in range(20)]
        handles = [pub.publish(name, p, qos=qos) for p in payloads]
        assert all(h.wait(10) for h in handles)
        assert inbox.wait_for(20, 10), f"got {len(inbox)} of 20"
        time.sleep(0.2)  # a duplicate would arrive now
        assert inbox.payloads == payloads
        assert inbox.topics == [name] * 20
        assert [m.qos for m in inbox.messages] == [qos] * 20  # min(publish qos, granted 2)
        assert not any(m.retain for m in inbox.messages)
        assert not any(m.dup for m in inbox.messages)
    finally:
        shutdown(pub, sub)


def test_str_payload_and_empty_payload(broker):
    name = topic("str")
    inbox = Inbox()
    sub = pub = None
    try:
        sub = connected_client(broker.port, inbox=inbox)
        assert sub.subscribe(name, qos=1).wait(5)
        pub = connected_client(broker.port)
        assert pub.publish(name, "héllo", qos=1).wait(5)
        assert pub.publish(name, b"", qos=1).wait(5)
        assert inbox.wait_for(2, 5)
        assert inbox.payloads == ["héllo".encode(), b""]
    finally:
        shutdown(pub, sub)


def test_wildcard_subscription_and_unsubscribe(broker):
    base = topic("wild")
    inbox = Inbox()
    sub = pub = None
    try:
        sub = connected_client(broker.port, inbox=inbox)
        assert granted(sub.subscribe([(f"{base}/+/temp", 1), (f"{base}/all/#", 0)])) == [1, 0]
        pub = connected_client(broker.port)
        pub.publish(f"{base}/a/temp", b"1", qos=1).wait(5)
        pub.publish(f"{base}/a/humidity", b"no", qos=1).wait(5)
        pub.publish(f"{base}/all/x/y", b"2", qos=1).wait(5)
        assert inbox.wait_for(2, 5)
        unsubscribed = sub.unsubscribe([f"{base}/+/temp", f"{base}/all/#"])
        unsubscribed.wait(5)
        assert unsubscribed.done
        pub.publish(f"{base}/b/temp", b"late", qos=1).wait(5)
        time.sleep(0.3)
        assert inbox.payloads == [b"1", b"2"]
    finally:
        shutdown(pub, sub)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retained_message(broker, protocol):
    name = topic(f"ret{protocol}")
    pub = first = second = None
    try:
        pub = connected_client(broker.port, protocol=protocol)
        assert pub.publish(name, b"kept", qos=1, retain=True).wait(5)

        inbox = Inbox()
        first = connected_client(broker.port, inbox=inbox, protocol=protocol)
        assert first.subscribe(name, qos=1).wait(5)
        assert inbox.wait_for(1, 5)
        assert inbox.messages[0].payload == b"kept"
        assert inbox.messages[0].retain is True  # delivered because it was retained

        # A live retained publish reaches an existing subscriber without the retain flag
        # (3.1.1 section 3.3.1.3; MQTT 5 with Retain As Published off).
        assert pub.publish(name, b"kept2", qos=1, retain=True).wait(5)
        assert inbox.wait_for(2, 5)
        assert inbox.messages[1].payload == b"kept2"
        assert inbox.messages[1].retain is False

        # An empty retained payload clears it: a new subscriber gets nothing.
        assert pub.publish(name, b"", qos=1, retain=True).wait(5)
        assert inbox.wait_for(3, 5)
        late = Inbox()
        second = connected_client(broker.port, inbox=late, protocol=protocol)
        assert second.subscribe(name, qos=1).wait(5)
        time.sleep(0.3)
        assert late.messages == []
    finally:
        shutdown(pub, first, second)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_will_on_abrupt_close_not_on_disconnect(broker, protocol):
    name = topic(f"will{protocol}")
    inbox = Inbox()
    watcher = dying = polite = None
    try:
        watcher = connected_client(broker.port, inbox=inbox)
        assert watcher.subscribe(f"{name}/#", qos=1).wait(5)

        dying = connected_client(broker.port, protocol=protocol,
                                 will=mqttfast.Will(f"{name}/dying", b"gone", 1, False))
        dying.close()  # no DISCONNECT: the broker publishes the will
        assert inbox.wait_for(1, 5), "will not delivered after close()"
        assert inbox.messages[0].topic == f"{name}/dying"
        assert inbox.messages[0].payload == b"gone"
        assert inbox.messages[0].qos == 1

        polite = connected_client(broker.port, protocol=protocol,
                                  will=mqttfast.Will(f"{name}/polite", b"gone", 1, False))
        polite.disconnect()  # DISCONNECT: the broker drops the will
        time.sleep(0.5)
        assert inbox.topics == [f"{name}/dying"]
    finally:
        shutdown(watcher, dying, polite)


def test_will_retained(broker):
    name = topic("willret")
    dying = late = None
    try:
        dying = connected_client(broker.port, will=mqttfast.Will(name, b"offline", 1, True))
        dying.close()
        time.sleep(0.3)
        inbox = Inbox()
        late = connected_client(broker.port, inbox=inbox)
        assert late.subscribe(name, qos=1).wait(5)
        assert inbox.wait_for(1, 5)
        assert (inbox.messages[0].payload, inbox.messages[0].retain) == (b"offline", True)
    finally:
        if late is not None:
            late.publish(name, b"", retain=True, qos=1).wait(5)
        shutdown(dying, late)


# ----------------------------------------------------------------------------- caller mistakes


def test_publish_before_connect_raises():
    client = mqttfast.Client(client_id=uid("early"))
    with pytest.raises(mqttfast.NotConnected):
        client.publish("a/b", b"x")
    with pytest.raises(mqttfast.NotConnected):
        client.publish("a/b", b"x", qos=1)
    with pytest.raises(mqttfast.NotConnected):
        client.subscribe("a/b")


def test_publish_after_disconnect_clean_session_raises(broker):
    client = connected_client(broker.port)
    client.disconnect()
    for qos in (0, 1, 2):
        with pytest.raises(mqttfast.NotConnected):
            client.publish("a/b", b"x", qos=qos)
    with pytest.raises(mqttfast.NotConnected):
        client.subscribe("a/b")
    with pytest.raises(mqttfast.NotConnected):
        client.unsubscribe("a/b")


@pytest.mark.parametrize("bad", ["a/#", "a/+/b", "#", "+", "", "a\x00b"])
@pytest.mark.parametrize("qos", [0, 1])
def test_invalid_publish_topic_raises(broker, bad, qos):
    client = connected_client(broker.port)
    try:
        with pytest.raises(mqttfast.InvalidTopic):
            client.publish(bad, b"x", qos=qos)
        assert client.publish(topic("fine"), b"x", qos=1).wait(5)  # the connection is intact
    finally:
        shutdown(client)


@pytest.mark.parametrize("qos", [3, -1])
def test_invalid_qos_raises(broker, qos):
    client = connected_client(broker.port)
    try:
        with pytest.raises(ValueError):
            client.publish("a/b", b"x", qos=qos)
        with pytest.raises(ValueError):
            client.subscribe("a/b", qos=qos)
        assert client.publish(topic("fine"), b"x", qos=1).wait(5)
    finally:
        shutdown(client)


def test_invalid_subscription_filter_raises(broker):
    client = connected_client(broker.port)
    try:
        for bad in ["a/#/b", "a#", "a/b+", ""]:
            with pytest.raises(mqttfast.InvalidTopic):
                client.subscribe(bad)
        assert granted(client.subscribe(topic("fine"))) == [0]
    finally:
        shutdown(client)


def test_connect_twice_raises(broker):
    client = connected_client(broker.port)
    try:
        with pytest.raises(mqttfast.MQTTError):
            client.connect(broker.host, broker.port)
    finally:
        shutdown(client)


def test_reconnect_same_client_after_disconnect(broker):
    """A Client can connect again after disconnect() (a new loop thread)."""
    name = topic("again")
    inbox = Inbox()
    client = connected_client(broker.port, inbox=inbox)
    try:
        client.disconnect()
        client.connect(broker.host, broker.port, timeout=10)
        assert client.subscribe(name, qos=1).wait(5)
        assert client.publish(name, b"back", qos=1).wait(5)
        assert inbox.wait_for(1, 5)
    finally:
        shutdown(client)


def test_connection_refused_by_closed_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connecting is refused
        client = mqttfast.Client(client_id=uid("nobody"), connect_timeout=2)
        started = time.monotonic()
        with pytest.raises(mqttfast.ConnectionLost):
            client.connect("127.0.0.1", port)
        assert time.monotonic() - started < 2.5
        client.close()


# ----------------------------------------------------------------------------- handles, callbacks


def test_callbacks(broker):
    name = topic("cb")
    events = {"connect": [], "publish": [], "subscribe": [], "unsubscribe": [], "disconnect": []}
    client = mqttfast.Client(client_id=uid("cb"))
    client.on_connect = events["connect"].append
    client.on_publish = events["publish"].append
    client.on_subscribe = events["subscribe"].append
    client.on_unsubscribe = events["unsubscribe"].append
    client.on_disconnect = events["disconnect"].append
    try:
        client.connect(broker.host, broker.port, timeout=10)
        assert client.subscribe(name, qos=1).wait(5)
        handle = client.publish(name, b"x", qos=1)
        assert handle.wait(5)
        assert handle.is_published
        assert client.unsubscribe(name).wait(5)
    finally:
        client.disconnect()
    assert len(events["connect"]) == 1
    assert events["publish"] == [handle]
    assert events["subscribe"][0].reason_codes == (1,)
    assert events["subscribe"][0].topics == (name,)
    assert events["unsubscribe"][0].topics == (name,)
    assert events["disconnect"] == [mqttfast.Disconnected(0, "disconnected by the client")]


def test_qos0_handle_and_publish_many(broker):
    name = topic("many0")
    inbox = Inbox()
    sub = pub = None
    try:
        sub = connected_client(broker.port, inbox=inbox)
        assert sub.subscribe(name, qos=1).wait(5)
        pub = connected_client(broker.port)
        assert pub.publish(name, b"single").wait(5)
        assert pub.publish_many(name, list(chunks(500)), qos=0).wait(10)
        assert pub.publish_many(name, list(chunks(500, b"q")), qos=1).wait(10)
        assert inbox.wait_for(1001, 10), len(inbox)
        assert inbox.payloads == [b"single"] + list(chunks(500)) + list(chunks(500, b"q"))
    finally:
        shutdown(pub, sub)


def test_publish_and_subscribe_from_callbacks(broker):
    """The usual patterns: subscribe in on_connect, answer in on_message. Calls that would block
    the loop thread (waiting on a handle inside a callback) raise instead of deadlocking."""
    name = topic("echo")
    replies = Inbox()
    errors = []
    client = mqttfast.Client(client_id=uid("echo"))

    def on_connect(event):
        client.subscribe(f"{name}/request", qos=1)

    def on_message(msg):
        if msg.topic.endswith("/request"):
            handle = client.publish(f"{name}/reply", msg.payload.upper(), qos=1)
            try:
                handle.wait(1)
            except mqttfast.MQTTError as exc:
                errors.append(exc)

    client.on_connect = on_connect
    client.on_message = on_message
    other = None
    try:
        client.connect(broker.host, broker.port, timeout=10)
        other = connected_client(broker.port, inbox=replies)
        assert other.subscribe(f"{name}/reply", qos=1).wait(5)
        deadline = time.monotonic() + 5
        while not replies.messages and time.monotonic() < deadline:  # the SUBSCRIBE is async
            other.publish(f"{name}/request", b"ping", qos=1).wait(5)
            replies.wait_for(1, 0.2)
        assert replies.payloads[:1] == [b"PING"]
        assert errors and "callback" in str(errors[0])
    finally:
        shutdown(other, client)


def test_callback_exception_does_not_kill_the_loop(broker):
    name = topic("boom")
    inbox = Inbox()
    client = mqttfast.Client(client_id=uid("boom"))

    def on_message(msg):
        inbox(msg)
        raise RuntimeError("user bug")

    client.on_message = on_message
    pub = None
    try:
        client.connect(broker.host, broker.port, timeout=10)
        assert client.subscribe(name, qos=1).wait(5)
        pub = connected_client(broker.port)
        pub.publish_many(name, [b"1", b"2"], qos=1).wait(5)
        assert inbox.wait_for(2, 5)
        assert client.is_connected
        assert client.publish(name, b"3", qos=1).wait(5)
    finally:
        shutdown(pub, client)


# ----------------------------------------------------------------------------- pull style, caller-driven


def test_messages_iterator(broker):
    name = topic("pull")
    sub = pub = None
    try:
        sub = connected_client(broker.port)
        iterator = sub.messages(timeout=2.0)  # before anything arrives: nothing may be missed
        assert sub.subscribe(name, qos=1).wait(5)
        pub = connected_client(broker.port)
        assert pub.publish_many(name, [b"a", b"b", b"c"], qos=1).wait(5)
        got = []
        started = time.monotonic()
        for msg in iterator:
            got.append(msg.payload)
            if len(got) == 3:
                break
        assert got == [b"a", b"b", b"c"]
        # With nothing more coming, the iterator ends after its timeout.
        assert list(sub.messages(timeout=0.3)) == []
        assert time.monotonic() - started < 5
    finally:
        shutdown(pub, sub)


def test_messages_iterator_ends_on_disconnect(broker):
    sub = connected_client(broker.port)
    result = []

    def drain():
        result.extend(sub.messages(timeout=10))
        result.append("ended")

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    time.sleep(0.2)
    sub.close()
    thread.join(5)
    assert result == ["ended"]


def test_caller_driven_loop(broker):
    """background=False: connect() and wait() drive the loop; loop(timeout) delivers callbacks in
    the caller's thread; no thread is started."""
    name = topic("driven")
    inbox = Inbox()
    threads_before = threading.active_count()
    client = mqttfast.Client(client_id=uid("drv"), background=False)
    client.on_message = inbox
    pub = None
    try:
        client.connect(broker.host, broker.port, timeout=10)
        assert threading.active_count() == threads_before
        assert granted(client.subscribe(name, qos=1)) == [1]
        assert client.publish(name, b"self", qos=1).wait(5)
        pub = connected_client(broker.port)
        pub.publish(name, b"other", qos=2).wait(5)
        deadline = time.monotonic() + 5
        while len(inbox) < 2 and time.monotonic() < deadline:
            client.loop(0.1)
        assert sorted(inbox.payloads) == [b"other", b"self"]
        assert all(m is not None for m in inbox.messages)
        # Pull style without a thread: the iterator runs the loop itself.
        pub.publish(name, b"pulled", qos=1).wait(5)
        got = [m.payload for m in client.messages(timeout=1.0)]
        assert got == [b"pulled"]
    finally:
        shutdown(pub, client)


def test_loop_forever_until_disconnect_in_callback(broker):
    name = topic("forever")
    client = mqttfast.Client(client_id=uid("fe"), background=False)
    got = []

    def on_message(msg):
        got.append(msg.payload)
        if msg.payload == b"stop":
            client.disconnect()

    client.on_message = on_message
    client.connect(broker.host, broker.port, timeout=10)
    assert client.subscribe(name, qos=1).wait(5)
    pub = connected_client(broker.port)
    try:
        pub.publish_many(name, [b"1", b"2", b"stop"], qos=1).wait(5)
        done = threading.Event()

        def guard():  # loop_forever must return by itself; fail the test (not hang) otherwise
            if not done.wait(10):
                client._conn.close(mqttfast.ConnectionLost("test guard"), retry=False)

        threading.Thread(target=guard, daemon=True).start()
        client.loop_forever()
        done.set()
        assert got == [b"1", b"2", b"stop"]
        assert not client.is_connected
    finally:
        shutdown(pub)


def test_qos2_mqtt311_within_mosquitto_inflight_limit(broker):
    """Bulk QoS 2 from an MQTT 3.1.1 client kept within mosquitto's max_inflight_messages (20 by
    default): every message arrives exactly once."""
    name = topic("q2bulk")
    inbox = Inbox()
    sub = pub = None
    try:
        sub = connected_client(broker.port, inbox=inbox, protocol=4)
        assert sub.subscribe(name, qos=2).wait(5)
        pub = connected_client(broker.port, protocol=4, max_inflight=20)
        payloads = list(chunks(1000))
        assert pub.publish_many(name, payloads, qos=2).wait(20)
        assert inbox.wait_for(1000, 20)
        time.sleep(0.2)
        assert inbox.payloads == payloads
    finally:
        shutdown(pub, sub)


def test_qos2_mqtt311_beyond_mosquitto_inflight_limit(broker):
    """Documents a broker hazard, not a client bug: past mosquitto 2.0.11's max_inflight_messages
    (20) unreleased QoS 2 messages from an MQTT 3.1.1 client, the broker answers with a plain
    PUBREC (3.1.1 has no reason code to carry its "quota exceeded"), completes PUBREL/PUBCOMP,
    and never forwards the message. The client sees every publish acknowledged. If this starts
    failing, mosquitto fixed it and the max_inflight advice in the tests can go."""
    name = topic("q2over")
    inbox = Inbox()
    sub = pub = None
    try:
        sub = connected_client(broker.port, inbox=inbox, protocol=4)
        assert sub.subscribe(name, qos=2).wait(5)
        pub = connected_client(broker.port, protocol=4, max_inflight_qos2=30)
        payloads = list(chunks(30))
        assert pub.publish_many(name, payloads, qos=2).wait(10)  # all "acknowledged"
        assert inbox.wait_for(20, 5)
        time.sleep(0.5)
        assert len(inbox) < 30  # but the broker dropped those beyond its window
        assert set(inbox.payloads) <= set(payloads)
    finally:
        shutdown(pub, sub)


@pytest.mark.parametrize("qos", [1, 2])
def test_default_windows_before_mqtt5_lose_nothing(broker, qos):
    """The defaults are fast where that is safe and safe where it is not: a default 3.1.1 client
    keeps 65535 QoS 1 publishes in flight (mosquitto acknowledges QoS 1 at once) but only 20
    QoS 2 ones (the broker's max_inflight_messages): a burst of 300 arrives whole either way."""
    name = topic(f"defwin{qos}")
    inbox = Inbox()
    sub = pub = None
    try:
        sub = connected_client(broker.port, inbox=inbox, protocol=4)
        assert sub.subscribe(name, qos=2).wait(5)
        pub = connected_client(broker.port, protocol=4)
        assert (pub.session.max_inflight, pub.session.max_inflight_qos2) == (65535, 20)
        payloads = list(chunks(300))
        handles = [pub.publish(name, p, qos=qos) for p in payloads]
        if qos == 1:  # (acks come in meanwhile, so in flight may already be below 300)
            assert pub.session.queued_count == 0  # no window of 20 in the way
        else:
            assert pub.session.inflight_count <= 20
        assert all(h.wait(10) for h in handles)
        assert inbox.wait_for(300, 10)
        assert sorted(inbox.payloads) == sorted(payloads)
    finally:
        shutdown(pub, sub)


def test_qos0_handles_wait_for_a_frozen_broker_to_take_their_bytes(broker_factory):
    """A QoS 0 handle is done only once its bytes are in the socket. With the broker frozen
    (SIGSTOP, its socket open), publishing fills the kernel's socket buffers (a few MB on
    loopback), after which the newest handle stays not done while the first ones are done;
    once the broker thaws, the newest handle is done too, and every handle is ok."""
    instance = broker_factory(log_types=QUIET_LOG)
    name = topic("q0frozen")
    payload = b"x" * 1024
    per_round = 1024  # 1 MiB of payload per round
    limit = 64 * 1024 * 1024  # far more than loopback's socket buffers hold
    pub = None
    handles = []
    try:
        pub = connected_client(instance.port, max_buffer=256 * 1024 * 1024, block_when_full=False)
        pid = instance.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            while True:
                for _ in range(per_round):
                    handles.append(pub.publish(name, payload))
                if not handles[-1].wait(0.5):
                    break  # the kernel took no more: the rest waits in the client
                queued = len(handles) * len(payload)
                assert queued < limit and time.monotonic() - started < 10, (
                    f"all {len(handles)} QoS 0 handles ({queued >> 20} MiB) done while the "
                    f"broker is frozen")
            assert all(h.done and h.ok for h in handles[:10])  # written before the buffers filled
            assert not handles[-1].wait(0.2)
            assert not handles[-1].done
        finally:
            os.kill(pid, signal.SIGCONT)
        assert handles[-1].wait(10)
        assert all(h.done and h.ok for h in handles)
    finally:
        shutdown(pub)
