"""A PUBLISH from the broker with a Topic Alias the client cannot accept, against the scripted peer
(tests/scripted_peer.py): mosquitto never sends one, so only a peer can show what the client does.

MQTT 5.0 section 3.3.2.3.4 and 4.13: a Topic Alias of 0 is not permitted [MQTT-3.3.2-8], the
broker must not send one above the Topic Alias Maximum the client announced in CONNECT
[MQTT-3.3.2-10], and an empty Topic Name is only valid with an alias the client already has a
topic for. The client closes with DISCONNECT 0x94 (Topic Alias invalid), not 0x82 (Protocol
Error) nor 0x81 (Malformed Packet): ``on_disconnect`` gets reason code 0x94 with a reason that
names the alias and a ``TopicAliasInvalid`` as ``error``, and the client (its loop) connects
again afterwards. The same in ``mqttfast.aio``, where ``messages()`` then raises the error.

A Topic Alias of 0 is decoded as it stands by both codec twins: whether an alias is valid is the
session's to judge (it alone knows the maximum and the aliases it has seen), so that all three
cases end the same way.
"""
from __future__ import annotations

import asyncio
from typing import Any, List

import pytest

import mqttfast
from client_support import aio_client_recording_disconnects, shutdown, uid, wait_until
from mqttfast.codec import Connect, Disconnect, Publish, encode_remaining_length
from mqttfast.events import Disconnected
from session_helpers import connected

MAXIMUM = 5  # the Topic Alias Maximum the client announces in these tests


def aliased_publish(topic: bytes, alias: int, payload: bytes = b"x") -> bytes:
    """A QoS 0 MQTT 5 PUBLISH with one property, Topic Alias ``alias`` (0 included, which the
    encoder refuses to write)."""
    body = len(topic).to_bytes(2, "big") + topic + b"\x03\x23" + alias.to_bytes(2, "big") + payload
    return b"\x30" + bytes(encode_remaining_length(len(body))) + body


CASES = [
    (aliased_publish(b"a/b", 0), "topic alias 0 is not permitted"),
    (aliased_publish(b"a/b", MAXIMUM + 1),
     f"topic alias {MAXIMUM + 1} is above the Topic Alias Maximum {MAXIMUM}"),
    (aliased_publish(b"", 3), "unknown topic alias 3 with an empty topic"),
]
IDS = ["alias-0", "above-maximum", "unknown-with-empty-topic"]


# ----------------------------------------------------------------------------- codec, both twins


def test_both_twins_decode_topic_alias_0_as_it_stands(codec):
    wire = aliased_publish(b"a/b", 0)
    assert codec.decode(wire, 5) == codec.Publish("a/b", b"x", 0, properties={"topic_alias": 0})
    assert codec.StreamDecoder(5).feed(wire) == [
        codec.Publish("a/b", b"x", 0, properties={"topic_alias": 0})]
    with pytest.raises(ValueError, match="must not be 0"):  # and neither twin sends one
        codec.encode(codec.Publish("a/b", b"x", 0, properties={"topic_alias": 0}), 5)


# ----------------------------------------------------------------------------- sans-IO


@pytest.mark.parametrize("wire, reason", CASES, ids=IDS)
def test_session_refuses_the_alias_and_abort_queues_disconnect_0x94(wire, reason):
    s, b = connected(5, topic_alias_maximum=MAXIMUM)
    with pytest.raises(mqttfast.TopicAliasInvalid, match=reason) as raised:
        s.receive(wire, 1.0)
    assert isinstance(raised.value, mqttfast.ProtocolError)
    assert not isinstance(raised.value, mqttfast.MalformedPacket)
    event = s.abort(raised.value)
    assert event == Disconnected(0x94, f"topic alias invalid: {raised.value} "
                                       f"(DISCONNECT 0x94 sent)")
    assert b.read() == [Disconnect(0x94, {"reason_string": str(raised.value)})]


def test_session_accepts_a_valid_alias_after_it_was_set():
    s, _ = connected(5, topic_alias_maximum=MAXIMUM)
    messages = s.receive(aliased_publish(b"a/b", MAXIMUM) + aliased_publish(b"", MAXIMUM), 1.0)
    assert [(m.topic, m.properties) for m in messages] == [("a/b", None), ("a/b", None)]


# ----------------------------------------------------------------------------- sync Client


def still_works(client: mqttfast.Client, peer: Any, connection: int) -> None:
    """The client (and its loop) connect again and a QoS 1 publish is acknowledged."""
    client.connect(peer.host, peer.port, timeout=5)
    assert peer.wait_connections(connection + 1)
    assert client.publish("a/b", b"again", qos=1).wait(5)
    assert [p.payload for p in peer.connections[connection].of(Publish)] == [b"again"]


@pytest.mark.parametrize("wire, reason", CASES, ids=IDS)
def test_mqtt5_a_bad_topic_alias_gets_disconnect_0x94(scripted_peer, wire, reason):
    peer = scripted_peer(5)
    ended: List[Any] = []
    client = mqttfast.Client(client_id=uid("alias"), protocol=5, topic_alias_maximum=MAXIMUM)
    client.on_disconnect = ended.append
    try:
        client.connect(peer.host, peer.port, timeout=5)
        connect = peer.connections[0].of(Connect)[0]
        assert connect.properties["topic_alias_maximum"] == MAXIMUM  # announced
        peer.send(wire)
        goodbye = peer.wait_packet(Disconnect, connection=0)
        assert goodbye is not None, peer.connections[0].packets
        assert goodbye.reason_code == 0x94, goodbye
        assert reason in goodbye.properties["reason_string"]
        assert peer.connections[0].ended.wait(5)  # and the client closed the connection
        assert wait_until(lambda: ended, 5)
        event = ended[0]
        assert event.reason_code == 0x94 and not event.by_server
        assert isinstance(event.error, mqttfast.TopicAliasInvalid)
        assert event.reason.startswith("topic alias invalid: ") and reason in event.reason
        assert not client.is_connected
        still_works(client, peer, 1)
    finally:
        shutdown(client)


# ----------------------------------------------------------------------------- mqttfast.aio


@pytest.mark.asyncio
@pytest.mark.parametrize("wire, reason", CASES, ids=IDS)
async def test_aio_mqtt5_a_bad_topic_alias_gets_disconnect_0x94(scripted_peer, wire, reason):
    peer = scripted_peer(5)
    client, ended = aio_client_recording_disconnects("aalias", topic_alias_maximum=MAXIMUM)
    try:
        await asyncio.wait_for(client.connect(peer.host, peer.port), 5)
        peer.send(wire)
        with pytest.raises(mqttfast.TopicAliasInvalid, match=reason):
            async def drain() -> None:
                async for _ in client.messages():
                    pass
            await asyncio.wait_for(drain(), 5)
        assert ended and ended[0].reason_code == 0x94, ended
        assert isinstance(ended[0].error, mqttfast.TopicAliasInvalid)
        assert ended[0].reason.startswith("topic alias invalid: ") and reason in ended[0].reason
        goodbye = await asyncio.get_running_loop().run_in_executor(
            None, lambda: peer.wait_packet(Disconnect, connection=0))
        assert goodbye is not None and goodbye.reason_code == 0x94, goodbye
        assert reason in goodbye.properties["reason_string"]
        await asyncio.wait_for(client.connect(peer.host, peer.port), 5)  # usable again
        assert (await asyncio.wait_for(client.publish("a/b", b"again", qos=1), 5)) is not None
        assert [p.payload for p in peer.connections[1].of(Publish)] == [b"again"]
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), 5)
        except Exception:  # noqa: BLE001 - teardown goes on
            pass
