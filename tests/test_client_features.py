"""The new public Client API of issue 7 (/work/shared-api-target.md), end to end.

Per-filter message callbacks, manual acknowledgement (against mosquitto's persistent sessions and,
for the order of the acks on the wire, against the scripted peer), MQTT 5 AUTH / ``on_auth``,
``tls_context`` with a hashed CA directory and an encrypted client key, the thread contract (one
thread drives a Loop; no ``wait()`` inside a callback; ``background=False``), ``client.connack``
across an automatic reconnect, and the one ``wait()`` convention every handle shares.

Real mosquitto wherever it can show the behaviour; the scripted peer (tests/scripted_peer.py) only
for what no broker does on demand: PUBLISHes with chosen packet ids and duplicates, an AUTH after
the CONNACK, acknowledgements that never come. Every wait is bounded.
"""
from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from typing import Any, Callable, List

import pytest

import mqttfast
from broker import ci_requested
from client_support import Inbox, connected_client, granted, shutdown, topic, uid, wait_until
from mqttfast.codec import Auth, PubAck, PubComp, Publish, PubRec, Subscribe, encode, encode_ack
from mqttfast.constants import PacketType
from scripted_peer import Script, ScriptedPeer

FAST = mqttfast.Backoff(0.1, 0.5)




def _peer_client(peer: ScriptedPeer, on_message: Any = None, **options: Any) -> mqttfast.Client:
    options.setdefault("client_id", uid("p"))
    client = mqttfast.Client(protocol=peer.protocol, **options)
    client.on_message = on_message
    client.connect(peer.host, peer.port, timeout=5)
    return client


def _publish(topic_name: str, packet_id: int, qos: int, payload: bytes, protocol: int = 4,
             dup: bool = False) -> bytes:
    return encode(Publish(topic_name, payload, qos, packet_id, False, dup), protocol)


def _acks(peer: ScriptedPeer, cls: type, connection: int = 0) -> List[int]:
    return [p.packet_id for p in peer.connections[connection].of(cls)]


# ============================================================================ 1. per-filter callbacks


def test_message_callback_add_routes_by_filter(broker):
    """``+`` and ``#`` filters get their messages; one matching both filters goes to both and not
    to on_message; one matching none goes to on_message."""
    base = topic("route")
    plus, hash_, rest = Inbox(), Inbox(), Inbox()
    sub = pub = None
    try:
        sub = connected_client(broker.port, inbox=rest)
        sub.message_callback_add(f"{base}/+/temp", plus)
        sub.message_callback_add(f"{base}/a/#", hash_)
        assert granted(sub.subscribe(f"{base}/#", qos=1)) == [1]
        pub = connected_client(broker.port)
        sends = [("x/temp", b"plus-only"), ("a/temp", b"both"), ("a/b/c", b"hash-deep"),
                 ("a", b"hash-parent"), ("other", b"none"), ("x/temp/more", b"none-2"),
                 ("end", b"sentinel")]
        for suffix, payload in sends:
            assert pub.publish(f"{base}/{suffix}", payload, qos=1).wait(5)
        # One publisher, one subscription, QoS 1: the sentinel (on_message) arrives last.
        assert wait_until(lambda: b"sentinel" in rest.payloads, 5), rest.payloads
        assert plus.payloads == [b"plus-only", b"both"]
        assert hash_.payloads == [b"both", b"hash-deep", b"hash-parent"]
        assert rest.payloads == [b"none", b"none-2", b"sentinel"]
        assert plus.topics == [f"{base}/x/temp", f"{base}/a/temp"]
    finally:
        shutdown(pub, sub)


def test_leading_wildcard_callbacks_do_not_take_dollar_topics(broker):
    """``#`` and ``+/...`` callback filters do not match a ``$SYS`` topic (MQTT 4.7.2): the
    retained ``$SYS/broker/version`` goes to on_message."""
    every, rest = Inbox(), Inbox()
    client = None
    try:
        client = connected_client(broker.port, inbox=rest)
        client.message_callback_add("#", every)
        client.message_callback_add("+/broker/version", every)
        client.message_callback_add("$SYS/#", rest)  # wins for $SYS: on_message is not used
        assert granted(client.subscribe("$SYS/broker/version", qos=0)) == [0]
        assert rest.wait_for(1, 5)
        time.sleep(0.1)
        assert rest.topics == ["$SYS/broker/version"]
        assert every.messages == []
    finally:
        shutdown(client)


@pytest.mark.parametrize("bad", ["a/#/b", "a/b#", "a+/b", "", "a/\0"])
def test_message_callback_add_invalid_filter_raises(bad):
    client = mqttfast.Client(client_id=uid("bad"))
    with pytest.raises(mqttfast.InvalidTopic):
        client.message_callback_add(bad, lambda m: None)
    client.message_callback_add("ok/+/#", lambda m: None)  # a valid one still goes in


def test_message_callback_remove_stops_delivery(broker):
    base = topic("remove")
    special, rest = Inbox(), Inbox()
    sub = pub = None
    try:
        sub = connected_client(broker.port, inbox=rest)
        sub.message_callback_add(f"{base}/+", special)
        assert granted(sub.subscribe(f"{base}/#", qos=1)) == [1]
        pub = connected_client(broker.port)
        assert pub.publish(f"{base}/one", b"before", qos=1).wait(5)
        assert special.wait_for(1, 5)
        sub.message_callback_remove(f"{base}/+")
        assert pub.publish(f"{base}/one", b"after", qos=1).wait(5)
        assert rest.wait_for(1, 5)
        time.sleep(0.1)
        assert special.payloads == [b"before"]
        assert rest.payloads == [b"after"]
        sub.message_callback_remove("never/added")  # removing an unknown filter is harmless
    finally:
        shutdown(pub, sub)


def test_raising_callback_does_not_kill_the_loop(broker):
    base = topic("raise")
    seen: List[bytes] = []
    rest = Inbox()

    def explode(message: Any) -> None:
        seen.append(message.payload)
        raise ValueError("callback bug")

    sub = pub = None
    try:
        sub = connected_client(broker.port, inbox=rest)
        sub.message_callback_add(f"{base}/bad", explode)
        assert granted(sub.subscribe(f"{base}/#", qos=1)) == [1]
        pub = connected_client(broker.port)
        for i in range(3):
            assert pub.publish(f"{base}/bad", b"b%d" % i, qos=1).wait(5)
        assert pub.publish(f"{base}/good", b"good", qos=1).wait(5)
        assert rest.wait_for(1, 5), seen
        assert seen == [b"b0", b"b1", b"b2"]
        assert rest.payloads == [b"good"]
        assert sub.is_connected
        assert sub.publish(f"{base}/good", b"own", qos=1).wait(5)
        assert rest.wait_for(2, 5)
    finally:
        shutdown(pub, sub)


# ============================================================================ 2. manual_ack


def _persistent(protocol: int) -> dict:
    """Options for a session that outlives the connection, at either protocol level."""
    if protocol == 5:
        return {"protocol": 5, "clean_start": False, "session_expiry": 300}
    return {"protocol": 4, "clean_session": False}


def _receive_ten_ack_five(broker: Any, protocol: int, name: str, cid: str,
                          inbox: Inbox) -> Any:
    """A manual_ack subscriber with a persistent session that got m0..m9 and acked m0..m4."""
    sub = connected_client(broker.port, inbox=inbox, client_id=cid, manual_ack=True,
                           **_persistent(protocol))
    assert granted(sub.subscribe(name, qos=1)) == [1]
    pub = connected_client(broker.port)
    try:
        for i in range(10):
            assert pub.publish(name, b"m%d" % i, qos=1).wait(5)
    finally:
        shutdown(pub)
    assert inbox.wait_for(10, 5), inbox.payloads
    assert inbox.payloads == [b"m%d" % i for i in range(10)]
    assert all(isinstance(m, mqttfast.AckableMessage) for m in inbox.messages)
    assert [m.ack() for m in inbox.messages[:5]] == [True] * 5
    return sub


def _redelivered(broker: Any, protocol: int, name: str, cid: str) -> List[Any]:
    """What a new Client with the same id and a persistent session gets re-sent."""
    redelivered = Inbox()
    again = connected_client(broker.port, inbox=redelivered, client_id=cid,
                             **_persistent(protocol))
    try:
        assert again.connack.session_present is True
        redelivered.wait_for(5, 5)
        time.sleep(0.3)  # and nothing more comes
        return list(redelivered.messages)
    finally:
        again.unsubscribe(name).wait(2)
        shutdown(again)


@pytest.mark.parametrize("protocol", [4, 5])
def test_manual_ack_broker_redelivers_only_unacked(broker, protocol):
    """PUBACK goes out only on ``ack()``: after a drop without DISCONNECT, mosquitto re-sends
    exactly the five messages that were not acknowledged, with DUP set. (The acks are given
    time to reach the socket before the drop: see the next test for an immediate close.)"""
    name, cid, inbox = topic("mack"), uid("mack"), Inbox()
    sub = None
    try:
        sub = _receive_ten_ack_five(broker, protocol, name, cid, inbox)
        assert wait_until(lambda: len(sub.session.out) == 0, 2)
        time.sleep(0.1)
        sub.close()
        messages = _redelivered(broker, protocol, name, cid)
        assert [m.payload for m in messages] == [b"m%d" % i for i in range(5, 10)]
        assert all(m.dup for m in messages)
        assert not any(isinstance(m, mqttfast.AckableMessage) for m in messages)
    finally:
        shutdown(sub)


def test_manual_ack_then_close_at_once_loses_nothing(broker):
    """``ack()`` returned True, then ``close()`` right away: ``close()`` hands the queued
    acknowledgements to the socket and ends it with FIN, so they normally reach the broker; an
    acknowledgement is only "queued" when ``ack()`` returns, though, so the guarantee is
    at-least-once: every unacknowledged message (m5..m9) comes back, in order, and anything
    else that comes back is one of the acknowledged ones, never something new."""
    name, cid, inbox = topic("mackimm"), uid("mimm"), Inbox()
    sub = None
    try:
        sub = _receive_ten_ack_five(broker, 4, name, cid, inbox)
        sub.close()
        payloads = [m.payload for m in _redelivered(broker, 4, name, cid)]
        assert payloads[-5:] == [b"m%d" % i for i in range(5, 10)], payloads
        assert set(payloads[:-5]) <= {b"m%d" % i for i in range(5)}, payloads
    finally:
        shutdown(sub)


def test_without_manual_ack_messages_are_acked_at_once(broker):
    name = topic("automatic")
    cid = uid("auto")
    inbox = Inbox()
    sub = pub = again = None
    try:
        sub = connected_client(broker.port, inbox=inbox, client_id=cid, clean_session=False)
        assert granted(sub.subscribe(name, qos=1)) == [1]
        pub = connected_client(broker.port)
        for i in range(5):
            assert pub.publish(name, b"a%d" % i, qos=1).wait(5)
        assert inbox.wait_for(5, 5)
        assert all(type(m) is mqttfast.Message for m in inbox.messages)
        assert not any(hasattr(m, "ack") for m in inbox.messages)
        assert wait_until(lambda: len(sub.session.out) == 0, 2)
        time.sleep(0.1)
        sub.close()
        redelivered = Inbox()
        again = connected_client(broker.port, inbox=redelivered, client_id=cid,
                                 clean_session=False)
        assert again.connack.session_present is True
        time.sleep(0.5)
        assert redelivered.payloads == []
    finally:
        if again is not None:
            again.unsubscribe(name).wait(2)
        shutdown(again, pub, sub)


def test_manual_ack_qos1_acks_go_out_in_receive_order(scripted_peer):
    peer = scripted_peer(4)
    inbox = Inbox()
    client = None
    try:
        client = _peer_client(peer, inbox, manual_ack=True)
        peer.send(_publish("o/1", 1, 1, b"first") + _publish("o/1", 2, 1, b"second"))
        assert inbox.wait_for(2, 5)
        first, second = inbox.messages
        assert (first.packet_id, second.packet_id) == (1, 2)
        assert isinstance(first, mqttfast.AckableMessage)
        time.sleep(0.3)
        assert _acks(peer, PubAck) == []  # nothing acknowledged by itself

        assert second.ack() is True
        time.sleep(0.3)
        assert _acks(peer, PubAck) == []  # #2 must wait for #1 (MQTT-4.6.0-2)
        assert first.ack() is True
        assert wait_until(lambda: len(_acks(peer, PubAck)) >= 2, 3), _acks(peer, PubAck)
        time.sleep(0.1)
        assert _acks(peer, PubAck) == [1, 2]
    finally:
        shutdown(client)


def test_manual_ack_qos2_pubrec_only_on_ack_and_no_double_delivery(scripted_peer):
    peer = scripted_peer(4)
    inbox = Inbox()
    client = None
    try:
        client = _peer_client(peer, inbox, manual_ack=True)
        peer.send(_publish("o/2", 1, 2, b"first") + _publish("o/2", 2, 2, b"second"))
        assert inbox.wait_for(2, 5)
        first, second = inbox.messages
        # The broker re-sends #1 (DUP) before the application acknowledged it.
        peer.send(_publish("o/2", 1, 2, b"first", dup=True))
        time.sleep(0.3)
        assert inbox.payloads == [b"first", b"second"]  # not delivered twice
        assert _acks(peer, PubRec) == []

        assert second.ack() is True
        time.sleep(0.3)
        assert _acks(peer, PubRec) == []
        assert first.ack() is True
        assert wait_until(lambda: len(_acks(peer, PubRec)) >= 2, 3), _acks(peer, PubRec)
        time.sleep(0.1)
        assert _acks(peer, PubRec) == [1, 2]
        # The rest of the QoS 2 flow still works: PUBREL -> PUBCOMP.
        peer.send(encode_ack(PacketType.PUBREL, 1, 0, 4) + encode_ack(PacketType.PUBREL, 2, 0, 4))
        assert wait_until(lambda: len(_acks(peer, PubComp)) >= 2, 3)
        assert _acks(peer, PubComp) == [1, 2]
        assert inbox.payloads == [b"first", b"second"]
    finally:
        shutdown(client)


def test_manual_ack_of_previous_connection_returns_false(scripted_peer):
    """A message received on a connection that dropped cannot be acknowledged on the next one:
    ``ack()`` is False and nothing is sent (the broker re-sends the message itself)."""
    first_conn = Script(after_connack=_publish("o/3", 7, 1, b"stale"), close_after=(Subscribe,))
    peer = scripted_peer(4, first_conn, Script())
    inbox = Inbox()
    client = None
    try:
        client = _peer_client(peer, inbox, manual_ack=True, clean_session=False,
                              reconnect=FAST)
        assert inbox.wait_for(1, 5)
        stale = inbox.messages[0]
        client.subscribe("o/3", qos=1)  # the peer drops the connection on it
        assert peer.wait_connections(2, 5)
        assert wait_until(lambda: client.is_connected and len(peer.connections) == 2, 5)
        assert stale.ack() is False
        time.sleep(0.3)
        assert _acks(peer, PubAck, 0) == [] and _acks(peer, PubAck, 1) == []
        assert client.is_connected
    finally:
        shutdown(client)


# ============================================================================ 3. AUTH / on_auth


def test_on_auth_and_auth_answer(scripted_peer):
    challenge = {"authentication_method": "X", "authentication_data": b"challenge"}
    peer = scripted_peer(5, Script(after_connack=encode(Auth(0x18, challenge), 5)))
    requests: List[Any] = []
    client = mqttfast.Client(client_id=uid("auth"), protocol=5)

    def on_auth(request: Any) -> None:
        requests.append(request)
        client.auth(0x18, {"authentication_method": "X", "authentication_data": b"response"})

    client.on_auth = on_auth
    try:
        client.connect(peer.host, peer.port, timeout=5)
        assert wait_until(lambda: requests, 5)
        request = requests[0]
        assert isinstance(request, mqttfast.AuthRequest)
        assert request == mqttfast.AuthRequest(0x18, challenge)
        answer = peer.wait_packet(Auth, 0, 5)
        assert answer is not None, peer.connections[0].packets
        assert answer.reason_code == 0x18
        assert answer.properties == {"authentication_method": "X",
                                     "authentication_data": b"response"}
        assert client.is_connected
    finally:
        shutdown(client)


def test_auth_on_protocol_4_raises_value_error(broker):
    client = None
    try:
        client = connected_client(broker.port, protocol=4)
        with pytest.raises(ValueError):
            client.auth(0x18, {"authentication_method": "X"})
        assert client.publish(topic("after-auth"), b"x", qos=1).wait(5)  # still usable
    finally:
        shutdown(client)


# ============================================================================ 4. tls_context


def test_tls_context_ca_path_hashed_directory(tls_broker, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:  # .ci/run installs it: under CI a missing openssl is a failure
        reason = "the openssl command is not installed: cannot compute the subject hash"
        if ci_requested():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    subject_hash = subprocess.run(
        [openssl, "x509", "-hash", "-noout", "-in", str(tls_broker.ca_path)],
        check=True, capture_output=True, text=True, timeout=10).stdout.strip()
    directory = tmp_path / "cas"
    directory.mkdir()
    shutil.copy(tls_broker.ca_path, directory / f"{subject_hash}.0")
    context = mqttfast.tls_context(ca_path=str(directory))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    client = None
    try:
        client = connected_client(tls_broker.port, tls=context)
        assert client.publish(topic("capath"), b"x", qos=1).wait(5)
    finally:
        shutdown(client)
    # The same directory without the hashed name does not verify: the CA really came from there.
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = mqttfast.Client(client_id=uid("nocap"), tls=mqttfast.tls_context(ca_path=str(empty)))
    with pytest.raises(mqttfast.ConnectionLost):
        refused.connect(tls_broker.host, tls_broker.port, timeout=5)
    refused.close()


def _encrypted_key(source: Any, target: Any, password: bytes) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(source.read_bytes(), password=None)
    target.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password)))


def test_tls_context_encrypted_client_key(tls_broker_client_cert, tmp_path):
    key = tmp_path / "client-encrypted.key"
    _encrypted_key(tls_broker_client_cert.client_key_path, key, b"pw")
    assert b"ENCRYPTED" in key.read_bytes()
    context = mqttfast.tls_context(ca_certs=str(tls_broker_client_cert.ca_path),
                                   certfile=str(tls_broker_client_cert.client_cert_path),
                                   keyfile=str(key), password="pw")
    name = topic("enckey")
    inbox = Inbox()
    client = None
    try:
        client = connected_client(tls_broker_client_cert.port, inbox=inbox, tls=context)
        assert granted(client.subscribe(name, qos=1)) == [1]
        assert client.publish(name, b"signed", qos=1).wait(5)
        assert inbox.wait_for(1, 5)
        assert inbox.payloads == [b"signed"]
    finally:
        shutdown(client)


def test_tls_context_wrong_key_password_raises(tls_broker_client_cert, tmp_path):
    key = tmp_path / "client-encrypted.key"
    _encrypted_key(tls_broker_client_cert.client_key_path, key, b"pw")
    with pytest.raises(ssl.SSLError):
        mqttfast.tls_context(ca_certs=str(tls_broker_client_cert.ca_path),
                             certfile=str(tls_broker_client_cert.client_cert_path),
                             keyfile=str(key), password="wrong")
    with pytest.raises(ssl.SSLError):
        mqttfast.tls_context(ca_certs=str(tls_broker_client_cert.ca_path),
                             certfile=str(tls_broker_client_cert.client_cert_path),
                             keyfile=str(key), password=b"wrong")


# ============================================================================ 5. thread contract


def test_second_thread_driving_a_loop_raises():
    loop = mqttfast.Loop()
    running, stop = threading.Event(), threading.Event()
    rounds = [0]

    def drive() -> None:
        while not stop.is_set():
            loop.run_once(0.02)
            rounds[0] += 1
            running.set()

    thread_a = threading.Thread(target=drive, name="driver-a", daemon=True)
    thread_a.start()
    try:
        assert running.wait(5)
        with pytest.raises(RuntimeError):
            loop.run_once(0)
        with pytest.raises(RuntimeError):
            loop.run_until(lambda: False, 0.01)
        before = rounds[0]
        assert wait_until(lambda: rounds[0] > before + 2, 2)  # A is unharmed
    finally:
        stop.set()
        thread_a.join(5)
    assert not thread_a.is_alive()
    try:
        loop.run_once(0)  # A is gone: B may drive it now
        fired: List[int] = []
        loop.call_soon(lambda: fired.append(1))
        loop.run_once(0)
        assert fired == [1]
    finally:
        loop.close()


@pytest.mark.parametrize("background", [True, False])
def test_wait_inside_a_callback_raises_and_client_keeps_working(broker, background):
    name = topic("cbwait")
    caught: List[BaseException] = []
    inbox = Inbox()
    client = None

    def on_message(message: Any) -> None:
        inbox(message)
        if message.payload == b"trigger":
            handle = client.publish(name + "/reply", b"r", qos=1)
            try:
                handle.wait(1)
            except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
                caught.append(exc)

    def settle(predicate: Callable[[], Any]) -> bool:
        if background:
            return wait_until(predicate, 5)
        assert client is not None
        return client.loop_object.run_until(lambda: bool(predicate()), 5)

    try:
        client = connected_client(broker.port, background=background)
        client.on_message = on_message
        assert granted(client.subscribe(name, qos=1)) == [1]
        started = time.monotonic()
        assert client.publish(name, b"trigger", qos=1).wait(5)
        assert settle(lambda: caught)
        assert time.monotonic() - started < 2  # raised, did not block for its timeout
        assert isinstance(caught[0], mqttfast.MQTTError), caught
        assert client.is_connected
        assert client.publish(name, b"later", qos=1).wait(5)
        assert settle(lambda: len(inbox) >= 2)
        assert inbox.payloads == [b"trigger", b"later"]
    finally:
        shutdown(client)


def test_background_false_driven_from_main_thread(broker):
    name = topic("nobg")
    inbox = Inbox()
    threads_before = {t.ident for t in threading.enumerate()}
    client = mqttfast.Client(client_id=uid("nobg"), background=False)
    client.on_message = inbox
    try:
        connack = client.connect(broker.host, broker.port, timeout=5)
        assert isinstance(connack, mqttfast.Connected) and client.is_connected
        assert granted(client.subscribe(name, qos=1)) == [1]
        assert client.publish(name, b"q1", qos=1).wait(5)
        handle = client.publish(name, b"q0", qos=0)
        deadline = time.monotonic() + 5
        while len(inbox) < 2 and time.monotonic() < deadline:
            client.loop(0.05)
        assert handle.wait(1)
        assert inbox.payloads == [b"q1", b"q0"]
        assert {t.ident for t in threading.enumerate()} <= threads_before  # no loop thread
    finally:
        client.disconnect(timeout=2)
    assert not client.is_connected


# ============================================================================ 6. client.connack


@pytest.mark.parametrize("persistence", [True, False])
def test_connack_updated_after_automatic_reconnect(broker_factory, persistence):
    """``client.connack`` is what connect() returned, then the CONNACK of the reconnect, whose
    session_present says whether the restarted broker kept the session."""
    instance = broker_factory(persistence=persistence)
    cid = uid("cack")
    if not persistence:  # make the first CONNACK say "session present" instead
        seed = connected_client(instance.port, client_id=cid, clean_session=False)
        seed.disconnect()
    connects: List[Any] = []
    client = mqttfast.Client(client_id=cid, clean_session=False, reconnect=FAST)
    client.on_connect = connects.append
    try:
        assert client.connack is None
        first = client.connect(instance.host, instance.port, timeout=5)
        assert isinstance(first, mqttfast.Connected)
        assert client.connack == first
        assert first.session_present is (not persistence)
        assert granted(client.subscribe(topic("cack"), qos=1)) == [1]
        instance.restart()
        assert wait_until(lambda: len(connects) >= 2 and client.is_connected, 8), connects
        second = client.connack
        assert isinstance(second, mqttfast.Connected)
        assert second is not first
        assert second == connects[-1]
        assert second.session_present is persistence
        assert client.publish(topic("cack-after"), b"x", qos=1).wait(5)
    finally:
        shutdown(client)


# ============================================================================ 7. handles


def _check_consistent(handle: Any) -> None:
    assert isinstance(handle.done, bool) and isinstance(handle.ok, bool)
    assert handle.error is None or isinstance(handle.error, str)
    if handle.ok:
        assert handle.done and handle.error is None


def _handles(client: mqttfast.Client, name: str) -> List[Any]:
    return [client.publish(name, b"q0", qos=0), client.publish(name, b"q1", qos=1),
            client.publish_many(name, [b"m1", b"m2"], qos=0),
            client.publish_many(name, [b"n1", b"n2"], qos=1),
            client.subscribe(name, qos=1), client.unsubscribe(name)]


def test_handles_share_the_wait_convention(broker):
    client = None
    try:
        client = connected_client(broker.port)
        for handle in _handles(client, topic("handles")):
            _check_consistent(handle)
            result = handle.wait(5)
            assert result is True, handle
            assert handle.done is True and handle.ok is True and handle.error is None
            assert handle.wait(0) is True  # done: any timeout answers at once
    finally:
        shutdown(client)


def test_pending_handles_wait_zero_returns_false_at_once(scripted_peer):
    """A peer that acknowledges nothing: QoS 1, batch, subscribe and unsubscribe handles stay
    pending; ``wait(0)`` says False at once, ``wait(0.2)`` after about 0.2 s."""
    peer = scripted_peer(4, Script(ack_publish=False, ack_subscribe=False, ack_unsubscribe=False))
    client = None
    try:
        client = _peer_client(peer)
        pending = [client.publish("h/1", b"q1", qos=1),
                   client.publish_many("h/1", [b"n1", b"n2"], qos=1),
                   client.subscribe("h/1", qos=1), client.unsubscribe("h/1")]
        for handle in pending:
            started = time.monotonic()
            assert handle.wait(0) is False, handle
            assert time.monotonic() - started < 0.05
            assert handle.done is False and handle.ok is False and handle.error is None
            _check_consistent(handle)
        started = time.monotonic()
        assert pending[0].wait(0.2) is False
        assert 0.15 <= time.monotonic() - started < 1.0
    finally:
        shutdown(client)


def test_pending_qos0_handle_wait_zero_without_a_loop_thread(broker):
    """With ``background=False`` nothing is written until the loop runs: the QoS 0 handles are
    pending; ``wait(0)`` returns False at once, ``wait(5)`` drives the loop and returns True."""
    client = mqttfast.Client(client_id=uid("q0p"), background=False)
    try:
        client.connect(broker.host, broker.port, timeout=5)
        name = topic("q0pending")
        makers = [lambda: client.publish(name, b"x", qos=0),
                  lambda: client.publish_many(name, [b"a", b"b"], qos=0)]
        for make in makers:  # one at a time: a wait() that drives the loop writes them all
            handle = make()
            started = time.monotonic()
            assert handle.wait(0) is False
            assert time.monotonic() - started < 0.05
            assert handle.done is False and handle.ok is False and handle.error is None
            assert handle.wait(5) is True
            assert handle.done and handle.ok and handle.error is None
    finally:
        client.disconnect(timeout=2)


def test_failed_handles_are_done_not_ok_with_error(scripted_peer):
    """Pending subscribe/unsubscribe/QoS 1 handles of a connection that closes for good: done,
    not ok, with an error string; wait() returns False."""
    peer = scripted_peer(4, Script(ack_publish=False, ack_subscribe=False, ack_unsubscribe=False))
    client = _peer_client(peer)
    pending = [client.publish("h/2", b"q1", qos=1), client.subscribe("h/2", qos=1),
               client.unsubscribe("h/2")]
    client.disconnect(timeout=2)
    for handle in pending:
        assert wait_until(lambda h=handle: h.done, 3), handle
        assert handle.wait(1) is False
        assert handle.ok is False and isinstance(handle.error, str) and handle.error
        _check_consistent(handle)
