"""Client edge cases from issue 7, written against the target API (/work/shared-api-target.md).

Each test names the defect it covers ("defect N"). Real mosquitto wherever it can show the
defect; the scripted peer (tests/scripted_peer.py) only where no broker can: a CONNACK with a
tiny Maximum Packet Size, a Session Present 0 on a reconnect after an unacknowledged publish, a
connection dropped on a SUBSCRIBE, and proof that nothing at all was sent. Every wait is bounded
and no test takes more than a few seconds.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

import pytest

import mqttfast
from client_support import Inbox, connected_client, shutdown, topic, uid, wait_until
from mqttfast.codec import Publish, Subscribe, Unsubscribe, Will
from scripted_peer import Script

FAST = mqttfast.Backoff(initial=0.05, maximum=0.2)
V5 = {"protocol": 5}




def _delivered(pub: mqttfast.Client, inbox: Inbox, name: str, payload: bytes) -> bool:
    """Publish ``payload`` to ``name`` at QoS 1 and wait for it to reach ``inbox``."""
    if not pub.publish(name, payload, qos=1).wait(5):
        return False
    return wait_until(lambda: any(m.topic == name and m.payload == payload
                                  for m in inbox.messages), 5)


# ----------------------------------------------------------------------------- defect 1


@pytest.mark.parametrize("protocol", [4, 5])
def test_qos0_handles_complete_after_disconnect_then_connect(broker, protocol):
    """Defect 1: QoS 0 completion marks must survive a disconnect() / connect() on the same
    Client: today they count the old connection's bytes and never complete."""
    name = topic("reconnect-qos0")
    inbox = Inbox()
    sub = client = None
    try:
        sub = connected_client(broker.port, inbox=inbox, protocol=protocol)
        assert sub.subscribe(name, qos=0).wait(5)
        client = connected_client(broker.port, protocol=protocol)
        assert client.publish(name, b"first", qos=0).wait(3) is True
        client.disconnect()
        client.connect(broker.host, broker.port, timeout=10)

        assert client.publish(name, b"second", qos=0).wait(3) is True
        assert client.publish_many(name, [b"third", b"fourth"], qos=0).wait(3) is True
        assert inbox.wait_for(4, 5), inbox.payloads
        assert inbox.payloads == [b"first", b"second", b"third", b"fourth"]
    finally:
        shutdown(client, sub)


# ----------------------------------------------------------------------------- defect 2


@pytest.mark.parametrize("protocol", [4, 5])
def test_tuple_of_two_filters_subscribes_both_and_survives_reconnect(broker_factory, protocol):
    """Defect 2: ``subscribe(("a/b", "c/d"))`` is two filters at QoS 0, not ("a/b", qos="c/d"):
    both are subscribed, and after the broker restarts (no persistence: the session is gone) the
    client resubscribes to both; its loop thread does not die on the resubscription."""
    instance = broker_factory()
    first, second = topic("pair-a"), topic("pair-b")
    inbox = Inbox()
    connects: List[Any] = []
    sub = mqttfast.Client(client_id=uid("pair"), protocol=protocol, reconnect=FAST)
    sub.on_message = inbox
    sub.on_connect = connects.append
    pub = None
    try:
        sub.connect(instance.host, instance.port, timeout=10)
        handle = sub.subscribe((first, second))
        assert handle.wait(5)
        assert tuple(handle.reason_codes) == (0, 0)
        pub = connected_client(instance.port, protocol=protocol)
        assert _delivered(pub, inbox, first, b"before-a")
        assert _delivered(pub, inbox, second, b"before-b")
        shutdown(pub)

        instance.restart()
        assert wait_until(lambda: len(connects) >= 2 and sub.is_connected, 6), connects
        assert connects[-1].session_present is False
        pub = connected_client(instance.port, protocol=protocol)
        # The resubscription is asynchronous: publish on both filters until both arrive.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not {first, second} <= set(inbox.topics[2:]):
            for name in (first, second):
                pub.publish(name, b"probe", qos=1).wait(2)
            inbox.wait_for(len(inbox) + 1, 0.2)
        assert {first, second} <= set(inbox.topics[2:]), inbox.topics
        assert sub.is_connected
        assert _delivered(pub, inbox, second, b"after-b")  # the loop thread still serves
    finally:
        shutdown(pub, sub)


# ----------------------------------------------------------------------------- defect 3


@pytest.mark.parametrize("method", ["subscribe", "unsubscribe"])
def test_subscribe_over_broker_maximum_packet_size_raises_and_sends_nothing(scripted_peer, method):
    """Defect 3: like PUBLISH, a SUBSCRIBE / UNSUBSCRIBE over the broker's Maximum Packet Size
    (CONNACK property, 30 bytes here) raises PayloadTooLarge at the call and is never sent."""
    peer = scripted_peer(5, Script(properties={"maximum_packet_size": 30}))
    client = mqttfast.Client(client_id=uid("maxpkt"), **V5)
    try:
        client.connect(peer.host, peer.port, timeout=5)
        call = getattr(client, method)
        with pytest.raises(mqttfast.PayloadTooLarge):
            call("a/" + "x" * 40)
        # A small one still goes out and is acknowledged: the first request sent is this one.
        assert call("a/b").wait(5)
        kind = Subscribe if method == "subscribe" else Unsubscribe
        sent = peer.connections[0].of(kind)
        assert [p.subscriptions[0].topic if kind is Subscribe else p.topics[0]
                for p in sent] == ["a/b"]
    finally:
        shutdown(client)


# ----------------------------------------------------------------------------- defect 4


@pytest.mark.parametrize("protocol", [4, 5])
def test_session_present_0_resends_unacked_publish_as_new(scripted_peer, protocol):
    """Defect 4: reconnecting with clean_session=False, a CONNACK with Session Present 0 means
    the broker has no session: an unacknowledged QoS 1 publish goes out again as a NEW publish
    (DUP 0), not as a DUP re-send of a packet id the broker never knew; it completes when acked."""
    peer = scripted_peer(
        protocol,
        Script(ack_publish=False, close_after=(Publish,)),  # receives it, then drops the client
        Script(session_present=False),                      # no session on the reconnect
    )
    extra: Dict[str, Any] = {"session_expiry": 300} if protocol == 5 else {}
    client = mqttfast.Client(client_id=uid("sp0"), protocol=protocol, clean_session=False,
                             reconnect=FAST, **extra)
    try:
        client.connect(peer.host, peer.port, timeout=5)
        handle = client.publish("sp0/t", b"payload", qos=1)
        assert peer.wait_packet(Publish, connection=0, timeout=5) is not None
        assert peer.wait_connections(2, timeout=5)
        assert handle.wait(5) is True
        again = peer.connections[1].of(Publish)
        assert len(again) == 1, again
        assert (again[0].topic, again[0].payload, again[0].qos) == ("sp0/t", b"payload", 1)
        assert again[0].dup is False, "re-sent as a duplicate into a session the broker lost"
        assert handle.ok and handle.error is None
    finally:
        shutdown(client)


# ----------------------------------------------------------------------------- defect 5


def test_empty_client_id_with_persistent_session_refused_at_the_call(scripted_peer, broker):
    """Defect 5: MQTT 3.1.1 forbids an empty client id with clean_session=False; the client must
    say so itself (ValueError, in the constructor or in connect()), sending nothing."""
    peer = scripted_peer(4)
    client = None
    started = time.monotonic()
    with pytest.raises(ValueError):
        client = mqttfast.Client(client_id="", clean_session=False)
        client.connect(peer.host, peer.port, timeout=2)
    assert time.monotonic() - started < 1.0
    time.sleep(0.2)  # a connection made anyway would have sent its CONNECT by now
    assert not any(c.packets for c in peer.connections), peer.connections[0].packets
    shutdown(client)

    fixed = mqttfast.Client(client_id=uid("persist"), clean_session=False)
    try:
        assert fixed.connect(broker.host, broker.port, timeout=10).session_present is False
    finally:
        shutdown(fixed)
        cleaner = mqttfast.Client(client_id=fixed.client_id, clean_session=True)
        cleaner.connect(broker.host, broker.port, timeout=10)
        cleaner.disconnect()


# ----------------------------------------------------------------------------- defects 6, 7, 8


@pytest.mark.parametrize("qos", [0, 1])
def test_topic_alias_over_broker_maximum_raises(broker, qos):
    """Defect 6: mosquitto announces Topic Alias Maximum 10; a caller's topic_alias 11 raises
    ValueError at the call (today it goes out and the broker drops the connection)."""
    name = topic("alias-max")
    inbox = Inbox()
    sub = client = None
    try:
        sub = connected_client(broker.port, inbox=inbox, **V5)
        assert sub.subscribe(name, qos=1).wait(5)
        client = mqttfast.Client(client_id=uid("alias-max"), **V5)
        event = client.connect(broker.host, broker.port, timeout=10)
        assert event.properties["topic_alias_maximum"] == 10
        with pytest.raises(ValueError):
            client.publish(name, b"x", qos=qos, properties={"topic_alias": 11})
        assert client.publish(name, b"ok", qos=qos, properties={"topic_alias": 10}).wait(5)
        assert inbox.wait_for(1, 5) and inbox.payloads == [b"ok"]
        assert client.is_connected
        assert client.connack is event  # the target API: the last CONNACK, as connect() returned
        assert client.connack.properties["topic_alias_maximum"] == 10
    finally:
        shutdown(client, sub)


def test_caller_topic_alias_mixed_with_automatic_aliases_never_misdelivers(broker):
    """Defect 7: a caller-set topic_alias and the client's automatic aliases share the broker's
    alias table. Alternating publish("A", topic_alias=1) with automatic publishes on B (and an
    "echo" that re-uses a received message's properties, topic_alias included, on another topic)
    must deliver every message on its own topic."""
    base = topic("alias-mix")
    a, b, echo = f"{base}/A", f"{base}/B", f"{base}/echo"
    inbox = Inbox()
    sub = client = None
    try:
        sub = connected_client(broker.port, inbox=inbox, **V5)
        assert sub.subscribe(f"{base}/#", qos=1).wait(5)
        client = connected_client(broker.port, **V5)
        # What a received message's properties can hold (mosquitto sends no aliases to
        # subscribers, so it is written out): the sender's alias, meaningless on our connection.
        received = {"topic_alias": 1, "user_property": [("from", "elsewhere")]}
        sent = []
        handles = []
        for i in range(6):
            for name, props in ((a, {"topic_alias": 1}), (b, None), (echo, received)):
                for qos in (1, 0):
                    payload = b"%s|%d|%d" % (name.encode(), i, qos)
                    handles.append(client.publish(name, payload, qos=qos,
                                                  properties=dict(props) if props else None))
                    sent.append((name, payload))
        assert all(h.wait(5) for h in handles)
        assert inbox.wait_for(len(sent), 5), (len(inbox), len(sent))
        time.sleep(0.1)
        got = [(m.topic, m.payload) for m in inbox.messages]
        wrong = [(t, p) for t, p in got if not p.startswith(t.encode() + b"|")]
        assert not wrong, f"delivered on the wrong topic: {wrong[:5]}"
        assert sorted(got) == sorted(sent)
        assert client.is_connected
    finally:
        shutdown(client, sub)


def test_empty_topic_with_automatic_aliases_raises_invalid_topic(broker):
    """Defect 8: publish("") at QoS 0 while automatic aliases are on raises InvalidTopic at the
    call (today it is sent with a fresh alias and no topic) and the connection stays up."""
    name = topic("empty")
    inbox = Inbox()
    sub = client = None
    try:
        sub = connected_client(broker.port, inbox=inbox, **V5)
        assert sub.subscribe(name, qos=1).wait(5)
        client = connected_client(broker.port, **V5)
        with pytest.raises(mqttfast.InvalidTopic):
            client.publish("", b"nowhere", qos=0)
        assert client.publish(name, b"after", qos=0).wait(5)
        assert client.publish(name, b"after-1", qos=1).wait(5)
        assert inbox.wait_for(2, 5), inbox.payloads
        assert inbox.payloads == [b"after", b"after-1"]
        assert client.is_connected
    finally:
        shutdown(client, sub)


# ----------------------------------------------------------------------------- defect 10


@pytest.mark.parametrize("method, reconnect", [("subscribe", False), ("subscribe", True),
                                               ("unsubscribe", True)])
def test_request_in_flight_fails_at_once_when_the_connection_drops(scripted_peer, method,
                                                                   reconnect):
    """Defect 10: a SUBSCRIBE / UNSUBSCRIBE in flight when the connection drops completes as
    failed at once (done, not ok, error set): wait(5) returns False well before 5 s."""
    kind = Subscribe if method == "subscribe" else Unsubscribe
    peer = scripted_peer(4, Script(close_after=(kind,)), Script())
    client = mqttfast.Client(client_id=uid("drop"), reconnect=FAST if reconnect else False)
    try:
        client.connect(peer.host, peer.port, timeout=5)
        handle = getattr(client, method)("drop/t")
        started = time.monotonic()
        assert handle.wait(5) is False
        assert time.monotonic() - started < 2.0
        assert handle.done is True
        assert handle.ok is False
        assert handle.error is not None
        if reconnect:  # not re-sent by itself on the new connection
            assert peer.wait_connections(2, 5)
            assert wait_until(lambda: client.is_connected, 5)
            time.sleep(0.2)
            assert peer.connections[1].of(kind) == []
    finally:
        shutdown(client)


# ----------------------------------------------------------------------------- defect 11


def test_publish_argument_checks_at_the_call(broker):
    """Defect 11: retain must be a bool, qos the int 0, 1 or 2, and a PUBLISH may not carry a
    subscription_identifier; each raises at the call and the connection stays usable."""
    name = topic("args")
    inbox = Inbox()
    sub = v4 = v5 = None
    try:
        sub = connected_client(broker.port, inbox=inbox, **V5)
        assert sub.subscribe(name, qos=1).wait(5)
        v4 = connected_client(broker.port)
        v5 = connected_client(broker.port, **V5)
        for client in (v4, v5):
            with pytest.raises(TypeError):
                client.publish(name, b"x", retain="yes")
            for qos in ("1", 1.0):
                with pytest.raises(TypeError, match="qos"):
                    client.publish(name, b"x", qos=qos)
            with pytest.raises(ValueError):
                client.publish(name, b"x", qos=3)
        for qos in (0, 1):
            with pytest.raises(ValueError):
                v5.publish(name, b"x", qos=qos, properties={"subscription_identifier": 5})
        assert v4.publish(name, b"v4", qos=1).wait(5)
        assert v5.publish(name, b"v5", qos=1).wait(5)
        assert inbox.wait_for(2, 5), inbox.payloads
        assert sorted(inbox.payloads) == [b"v4", b"v5"]
        assert v4.is_connected and v5.is_connected
    finally:
        shutdown(v4, v5, sub)


# ----------------------------------------------------------------------------- defect 12

# Bad connect() arguments (keyword arguments of connect()).
BAD_CONNECT = {
    "keepalive -1": {"keepalive": -1},
    "keepalive 70000": {"keepalive": 70000},
}

# Bad Client() arguments (the constructor or connect() may refuse them).
BAD_CLIENT: Dict[str, Callable[[], Dict[str, Any]]] = {
    "NUL in client id": lambda: {"client_id": "bad\x00id"},
    "NUL in username": lambda: {"username": "al\x00ice"},
    "client id of 70,000 chars": lambda: {"client_id": "x" * 70_000},
    "will topic with a wildcard": lambda: {"will": Will("will/+/t", b"gone")},
    "will topic with #": lambda: {"will": Will("will/#", b"gone")},
    "password without username (3.1.1)": lambda: {"password": b"secret"},
}


@pytest.mark.parametrize("case", list(BAD_CONNECT))
def test_bad_connect_argument_raises_at_the_call_and_client_stays_usable(broker, case):
    """Defect 12: a keepalive outside 0..65535 raises at connect(), promptly (not "no CONNACK
    within N s" after the loop thread choked on encoding it); the same Client then connects."""
    client = mqttfast.Client(client_id=uid("badconn"), connect_timeout=2)
    try:
        started = time.monotonic()
        with pytest.raises((ValueError, TypeError)):
            client.connect(broker.host, broker.port, timeout=2, **BAD_CONNECT[case])
        assert time.monotonic() - started < 1.0
        client.connect(broker.host, broker.port, keepalive=30, timeout=5)
        assert client.is_connected
        assert client.publish(topic("badconn"), b"x", qos=1).wait(5)
    finally:
        shutdown(client)


@pytest.mark.parametrize("case", list(BAD_CLIENT))
def test_bad_client_argument_raises_at_construction_or_connect(scripted_peer, broker, case):
    """Defect 12: a bad client id, username, Will or password raises ValueError / TypeError in
    Client() or in connect(), promptly, with nothing sent; a new Client with good arguments works."""
    peer = scripted_peer(4)
    client = None
    started = time.monotonic()
    with pytest.raises((ValueError, TypeError)):
        client = mqttfast.Client(connect_timeout=2, **BAD_CLIENT[case]())
        client.connect(peer.host, peer.port, timeout=2)
    assert time.monotonic() - started < 1.0
    time.sleep(0.1)
    assert not any(c.packets for c in peer.connections), "the bad CONNECT was sent"
    shutdown(client)

    good = connected_client(broker.port)
    try:
        assert good.publish(topic("badclient"), b"x", qos=1).wait(5)
    finally:
        shutdown(good)

