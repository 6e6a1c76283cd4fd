"""Oversized and malformed packets from the broker (issue 9, resource limits), against the
scripted peer (tests/scripted_peer.py): mosquitto never sends a packet over the size a client
announced, nor a malformed one, so only a peer can show what the client does then.

- MQTT 5: a packet over the client's ``max_packet_size`` is refused from its fixed header alone
  (none of its body is waited for or kept); the client sends DISCONNECT 0x95 (Packet too large)
  and closes [MQTT-3.1.2-25, 4.13]; a malformed packet gets 0x81, a protocol error 0x82. The
  application sees the same reason code in ``on_disconnect`` and the codec's exception as
  ``error`` (``connect()`` raises it when it came with the CONNACK).
- MQTT 3.1.1 has no reason codes: the client just closes, and reports the same exception.
- While a packet within the limit arrives slowly, or stalls half-way, the client holds only the
  bytes of that packet: at most ``max_packet_size``.

Small limits (1 KiB, 100 kB) so that nothing big is allocated; every wait is bounded.
"""
from __future__ import annotations

import threading
import time
import tracemalloc
from typing import Any, List

import pytest

import mqttfast
from client_support import Inbox, aio_client_recording_disconnects, shutdown, uid, wait_until
from mqttfast.codec import ConnAck, Connect, Disconnect, Publish, encode, encode_remaining_length
from mqttfast.events import Disconnected
from scripted_peer import Script
from session_helpers import connected

LIMIT = 1024


def publish_header(remaining: int) -> bytes:
    """The fixed header of a QoS 0 PUBLISH announcing ``remaining`` bytes, and nothing of them."""
    return b"\x30" + bytes(encode_remaining_length(remaining))


def client_for(protocol: int, ended: List[Any], **options: Any) -> mqttfast.Client:
    options.setdefault("max_packet_size", LIMIT)
    client = mqttfast.Client(client_id=uid("big"), protocol=protocol, **options)
    client.on_disconnect = ended.append
    return client


def still_works(client: mqttfast.Client, peer: Any, connection: int) -> None:
    """The client (and its loop) connect again and a QoS 1 publish is acknowledged."""
    client.connect(peer.host, peer.port, timeout=5)
    assert peer.wait_connections(connection + 1)
    assert client.publish("a/b", b"again", qos=1).wait(5)
    assert [p.payload for p in peer.connections[connection].of(Publish)] == [b"again"]


# ----------------------------------------------------------------------------- sans-IO


def test_session_abort_queues_disconnect_0x95_last_on_mqtt5():
    s, b = connected(5, max_packet_size=LIMIT)
    with pytest.raises(mqttfast.PacketTooLarge) as raised:
        s.receive(publish_header(5000), 1.0)
    assert s.incoming_buffered <= 4  # the header, none of the 5000 bytes
    event = s.abort(raised.value)
    assert event == Disconnected(0x95, "packet too large: packet of 5003 bytes exceeds the "
                                 "maximum packet size of 1024 (DISCONNECT 0x95 sent)")
    assert b.read() == [Disconnect(0x95, {"reason_string": str(raised.value)})]


@pytest.mark.parametrize("protocol", [3, 4])
def test_session_abort_sends_nothing_before_mqtt5(protocol):
    s, b = connected(protocol, max_packet_size=LIMIT)
    with pytest.raises(mqttfast.PacketTooLarge) as raised:
        s.receive(publish_header(5000), 1.0)
    assert s.abort(raised.value) is None
    assert b.raw() == b""


# ----------------------------------------------------------------------------- MQTT 5


def test_mqtt5_a_packet_over_the_limit_gets_disconnect_0x95_from_its_header_alone(scripted_peer):
    peer = scripted_peer(5)
    ended: List[Any] = []
    client = client_for(5, ended)
    try:
        client.connect(peer.host, peer.port, timeout=5)
        connect = peer.connections[0].of(Connect)[0]
        assert connect.properties["maximum_packet_size"] == LIMIT  # announced
        peer.send(publish_header(100_000))  # declared; not one byte of the body follows
        goodbye = peer.wait_packet(Disconnect, connection=0)
        assert goodbye is not None, peer.connections[0].packets
        assert goodbye.reason_code == 0x95
        assert "1024" in goodbye.properties["reason_string"]
        assert peer.connections[0].ended.wait(5)  # and the client closed the connection
        assert wait_until(lambda: ended, 5)
        event = ended[0]
        assert event.reason_code == 0x95 and not event.by_server
        assert isinstance(event.error, mqttfast.PacketTooLarge)
        assert event.reason.startswith("packet too large"), event.reason
        assert "100004 bytes" in event.reason and "1024" in event.reason
        assert not client.is_connected
        still_works(client, peer, 1)
    finally:
        shutdown(client)


def test_mqtt5_a_packet_over_the_limit_with_the_connack_fails_connect(scripted_peer):
    peer = scripted_peer(5, Script(after_connack=publish_header(5000)), Script())
    ended: List[Any] = []
    client = client_for(5, ended)
    try:
        with pytest.raises(mqttfast.PacketTooLarge, match="1024"):
            client.connect(peer.host, peer.port, timeout=5)
        goodbye = peer.wait_packet(Disconnect, connection=0)
        assert goodbye is not None and goodbye.reason_code == 0x95
        assert wait_until(lambda: ended, 5) and ended[0].reason_code == 0x95
        still_works(client, peer, 1)
    finally:
        shutdown(client)


@pytest.mark.parametrize("wire, code, error", [
    (b"\x00\x00", 0x81, mqttfast.MalformedPacket),                     # reserved packet type 0
    (b"\x41\x02\x00\x01", 0x81, mqttfast.MalformedPacket),             # PUBACK with flags 0001
    (encode(ConnAck(False, 0, None), 5), 0x82, mqttfast.ProtocolError),  # a second CONNACK
], ids=["reserved-type", "bad-flags", "second-connack"])
def test_mqtt5_malformed_or_protocol_error_gets_its_reason_code(scripted_peer, wire, code, error):
    peer = scripted_peer(5)
    ended: List[Any] = []
    client = client_for(5, ended)
    try:
        client.connect(peer.host, peer.port, timeout=5)
        peer.send(wire)
        goodbye = peer.wait_packet(Disconnect, connection=0)
        assert goodbye is not None and goodbye.reason_code == code
        assert wait_until(lambda: ended, 5)
        assert ended[0].reason_code == code and isinstance(ended[0].error, error)
        if code == 0x82:
            assert not isinstance(ended[0].error, mqttfast.MalformedPacket)
        still_works(client, peer, 1)
    finally:
        shutdown(client)


def test_mqtt5_the_reason_string_is_left_out_when_the_broker_limit_is_smaller(scripted_peer):
    # [MQTT-3.14.2-3]: no Reason String that would take the DISCONNECT over the broker's maximum.
    peer = scripted_peer(5, Script(properties={"maximum_packet_size": 10}))
    ended: List[Any] = []
    client = client_for(5, ended)
    try:
        client.connect(peer.host, peer.port, timeout=5)
        peer.send(publish_header(100_000))
        goodbye = peer.wait_packet(Disconnect, connection=0)
        assert goodbye is not None and goodbye.reason_code == 0x95 and not goodbye.properties
        assert wait_until(lambda: ended, 5) and ended[0].reason_code == 0x95
    finally:
        shutdown(client)


# ----------------------------------------------------------------------------- MQTT 3.1.1


def test_mqtt311_a_packet_over_the_limit_just_closes(scripted_peer):
    peer = scripted_peer(4)
    ended: List[Any] = []
    client = client_for(4, ended)
    try:
        client.connect(peer.host, peer.port, timeout=5)
        peer.send(publish_header(100_000))
        assert peer.connections[0].ended.wait(5)
        assert [type(p) for p in peer.connections[0].packets] == [Connect]  # no DISCONNECT
        assert wait_until(lambda: ended, 5)
        assert isinstance(ended[0].error, mqttfast.PacketTooLarge)
        assert "1024" in ended[0].reason
        still_works(client, peer, 1)
    finally:
        shutdown(client)


# ----------------------------------------------------------------------------- bounded buffer


@pytest.mark.parametrize("protocol", [4, 5])
def test_a_packet_within_the_limit_that_trickles_and_stalls_holds_only_its_own_bytes(
        scripted_peer, protocol):
    limit = 100_000
    payload = bytes(range(256)) * 350  # 89,600 bytes
    wire = encode(Publish("slow/big", payload), protocol)
    assert len(wire) <= limit
    peer = scripted_peer(protocol)
    ended: List[Any] = []
    inbox = Inbox()
    client = client_for(protocol, ended, max_packet_size=limit)
    client.on_message = inbox
    session = client.session
    try:
        client.connect(peer.host, peer.port, timeout=5)
        sent = 0
        for size in [5] + [1000] * 20:  # the header, then 1 kB at a time
            peer.send(wire[sent:sent + size])
            sent += size
            assert wait_until(lambda n=sent: session.incoming_buffered == n, 5), \
                (sent, session.incoming_buffered)
        # The peer stalls half-way: the client holds what came, keeps the connection, and waits.
        time.sleep(0.3)
        assert session.incoming_buffered == sent <= limit
        assert client.is_connected and not ended
        peer.send(wire[sent:])
        assert inbox.wait_for(1, 5)
        assert inbox.messages[0].payload == payload
        assert session.incoming_buffered == 0
        assert client.publish("a/b", b"after", qos=1).wait(5)
    finally:
        shutdown(client)


@pytest.mark.parametrize("protocol", [4, 5])
def test_the_body_of_a_packet_over_the_limit_is_never_buffered(scripted_peer, protocol):
    """The header declares 200 MB (legal MQTT, 28 bits) and 8 MiB of it follow at once: the client
    refuses from the header, and Python allocations while it does stay far below the 8 MiB."""
    wire = publish_header(200_000_000) + b"\x00" * (8 * 1024 * 1024)
    peer = scripted_peer(protocol)
    ended: List[Any] = []
    client = client_for(protocol, ended)
    try:
        client.connect(peer.host, peer.port, timeout=5)
        tracemalloc.start()
        try:
            sender = threading.Thread(target=_send_quietly, args=(peer, wire))
            sender.start()
            assert wait_until(lambda: ended, 10)
            sender.join(10)
            assert not sender.is_alive()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # ``wire`` was made before tracing started: what is traced is the client's (and the
        # peer's small) allocations, a copy or two of one 256 KiB read at most.
        assert peak < 2 * 1024 * 1024, peak
        assert isinstance(ended[0].error, mqttfast.PacketTooLarge)
        still_works(client, peer, 1)
    finally:
        shutdown(client)


def _send_quietly(peer: Any, data: bytes) -> None:
    try:
        peer.send(data)
    except OSError:  # the client closed on the header: the rest cannot be written
        pass



# ----------------------------------------------------------------------------- mqttfast.aio


@pytest.mark.asyncio
async def test_aio_mqtt5_a_packet_over_the_limit_gets_disconnect_0x95(scripted_peer):
    import asyncio

    peer = scripted_peer(5)
    client, ended = aio_client_recording_disconnects("abig", max_packet_size=LIMIT)
    try:
        await asyncio.wait_for(client.connect(peer.host, peer.port), 5)
        peer.send(publish_header(100_000))
        for _ in range(500):
            if ended:
                break
            await asyncio.sleep(0.01)
        assert ended and ended[0].reason_code == 0x95, ended
        assert isinstance(ended[0].error, mqttfast.PacketTooLarge)
        goodbye = await asyncio.get_running_loop().run_in_executor(
            None, lambda: peer.wait_packet(Disconnect, connection=0))
        assert goodbye is not None and goodbye.reason_code == 0x95
        await asyncio.wait_for(client.connect(peer.host, peer.port), 5)  # usable again
        assert (await asyncio.wait_for(client.publish("a/b", b"again", qos=1), 5)) is not None
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), 5)
        except Exception:  # noqa: BLE001 - teardown goes on
            pass
