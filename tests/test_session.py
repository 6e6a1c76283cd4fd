"""Sans-IO tests of ``mqttfast.session.Session``: no socket, no clock.

A small in-memory broker side (``session_helpers.Broker``) takes what the session wrote to its
output stream (``take_output()`` and ``sent()``, as the loop does) and feeds the broker's packets
back through ``session.receive``. Each call returns a ``Result`` (messages, control events,
completed publish records) that the tests compare as a value. The behavioural reference is the
M2Mqtt client (its inflight queue, duplicate handling and RestoreSession). The session imports
``mqttfast.codec``, so ``MQTTFAST_PURE=1`` runs all of this on the pure twin.
"""
from __future__ import annotations

import dataclasses
import random
from unittest.mock import ANY

import pytest

from mqttfast.codec import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    PubRec,
    PubRel,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    encode_ack,
)
from mqttfast.constants import MAX_PACKET_SIZE, PacketType
from mqttfast.errors import (
    InvalidTopic,
    MalformedPacket,
    NotConnected,
    PayloadTooLarge,
    ProtocolError,
    QueueFull,
)
from mqttfast.events import ConnectionState, PublishState
from mqttfast.session import (
    CONNECTED,
    CONNECTING,
    DISCONNECTED,
    DISCONNECTING,
    DONE,
    FAILED,
    QUEUED,
    WAIT_PUBACK,
    WAIT_PUBCOMP,
    WAIT_PUBREC,
    AuthRequest,
    Connected,
    ConnectionRefused,
    Disconnected,
    Outgoing,
    Session,
    Subscribed,
    Unsubscribed,
)
from mqttfast.store import MemoryStore

try:  # tests/ is on sys.path under pytest's default ("prepend") import mode
    from session_helpers import (
        CLIENT_ID,
        NOTHING,
        Broker,
        Result,
        ScanCountingDeque,
        ScanCountingDict,
        connected,
        publish_packet,
        scan_counting_store,
    )
except ImportError:  # pragma: no cover  (tests/ imported as a package)
    from tests.session_helpers import (
        CLIENT_ID,
        NOTHING,
        Broker,
        Result,
        ScanCountingDeque,
        ScanCountingDict,
        connected,
        publish_packet,
        scan_counting_store,
    )

PROTOCOLS = [3, 4, 5]
protocols = pytest.mark.parametrize("protocol", PROTOCOLS, ids=["v31", "v311", "v5"])
v3_protocols = pytest.mark.parametrize("protocol", [3, 4], ids=["v31", "v311"])
persistent_protocols = pytest.mark.parametrize("protocol", [4, 5], ids=["v311", "v5"])

PINGREQ = b"\xc0\x00"


def names(packets):
    return [type(p).__name__ for p in packets]


def publishes(packets):
    assert all(isinstance(p, Publish) for p in packets), packets
    return packets


# ================================================================================ packet ids

class TestPacketIds:
    @protocols
    def test_ids_start_at_1_and_are_shared_with_subscribe(self, protocol):
        s, b = connected(protocol)
        recs = [s.publish("t", b"x", qos) for qos in (1, 2, 1)]
        assert [r.packet_id for r in recs] == [1, 2, 3]
        assert [p.packet_id for p in b.read()] == [1, 2, 3]
        assert s.subscribe("a/#", 1) == 4
        assert s.unsubscribe("a/#") == 5
        mark = s.publish("t", b"x", 0)  # QoS 0 takes no id: it returns its stream mark
        assert type(mark) is int and mark == s.position
        assert s.publish("t", b"x", 1).packet_id == 6

    def test_ids_wrap_skip_those_in_flight_and_run_out(self):
        """1..65535 in order; after the wrap an id still unacknowledged is skipped, never reused;
        with all 65535 in use, a new id is QueueFull (a publish just waits in the queue)."""
        s, b = connected(4, max_inflight=65535)
        recs = [s.publish("t", b"", 1) for _ in range(65535)]
        assert [r.packet_id for r in recs] == list(range(1, 65536))
        assert s.inflight_count == 65535
        assert publishes(b.read())[-1].packet_id == 65535
        still_flying = {1, 2, 5, 6, 7, 65535}
        acked = [r for r in recs if r.packet_id not in still_flying]
        assert b.puback(*(r.packet_id for r in acked)) == Result(completed=acked)
        assert all(r.state == DONE for r in acked)
        assert s.inflight_count == len(still_flying)

        new = [s.publish("t", b"", 1) for _ in range(4)]
        assert [r.packet_id for r in new] == [3, 4, 8, 9]  # wrapped, skipping 1, 2 and 5..7
        assert s.subscribe("x") == 10
        assert not {r.packet_id for r in new} & still_flying

        # Fill every remaining id: now nothing is free.
        free = 65535 - s.inflight_count - 1  # minus the SUBSCRIBE's id 10
        for _ in range(free):
            s.publish("t", b"", 1)
        assert s.inflight_count == 65535 - 1
        b.read()
        with pytest.raises(QueueFull):
            s.subscribe("y")
        with pytest.raises(QueueFull):
            s.unsubscribe("y")
        with pytest.raises(QueueFull):  # the window has room, but no id is free
            s.publish("t", b"", 1)
        assert s.inflight_count == 65535 - 1 and s.queued_count == 0 and b.read() == []
        # The SUBACK frees id 10, which the next publish takes.
        assert b.send(SubAck(10, [0])) == Result(events=[Subscribed(10, ("x",), (0,))])
        assert s.publish("t", b"", 1).packet_id == 10
        assert s.inflight_count == 65535 and s.window_free == 0
        # Now the window is full: a publish queues, and a PUBACK lets it out with the freed id.
        late = s.publish("t", b"", 1)
        assert late.packet_id == 0 and late.state == QUEUED and s.queued_count == 1
        assert b.read() != []
        assert b.puback(3) == Result(completed=[new[0]])
        assert [p.packet_id for p in publishes(b.read())] == [3] == [late.packet_id]


# ================================================================================ outgoing QoS 1

class TestOutgoingQos1:
    @protocols
    def test_publish_bytes_and_puback_completes(self, protocol):
        s, b = connected(protocol)
        rec = s.publish("a/b", b"hello", 1, retain=True)
        assert isinstance(rec, Outgoing) and rec.state == WAIT_PUBACK and not rec.done
        pkt = b.read_one(Publish)
        assert (pkt.topic, pkt.payload, pkt.qos, pkt.packet_id, pkt.retain, pkt.dup) == (
            "a/b", b"hello", 1, rec.packet_id, True, False)
        assert s.inflight_count == 1
        assert b.puback(rec.packet_id) == Result(completed=[rec])
        assert rec.state == DONE and rec.ok and rec.reason_code == 0 and rec.error is None
        assert s.inflight_count == 0
        assert b.read() == []  # nothing to answer to a PUBACK

    @protocols
    def test_str_and_memoryview_payloads_are_owned_bytes(self, protocol):
        s, b = connected(protocol)
        buf = bytearray(b"abc")
        r1 = s.publish("t", "héllo", 1)
        r2 = s.publish("t", memoryview(buf), 1)
        buf[0] = ord("X")
        assert r1.payload == "héllo".encode() and r2.payload == b"abc"
        assert [p.payload for p in b.read()] == ["héllo".encode(), b"abc"]

    @protocols
    def test_duplicate_and_orphan_puback_ignored(self, protocol):
        s, b = connected(protocol)
        r1 = s.publish("t", b"1", 1)
        r2 = s.publish("t", b"2", 1)
        b.read()
        assert b.puback(r1.packet_id) == Result(completed=[r1])
        assert b.puback(r1.packet_id) == NOTHING  # duplicate
        assert b.puback(999) == NOTHING  # never sent
        assert r2.state == WAIT_PUBACK and s.inflight_count == 1
        assert b.puback(r2.packet_id) == Result(completed=[r2])
        assert b.read() == []

    @protocols
    def test_puback_for_a_qos2_publish_is_ignored(self, protocol):
        s, b = connected(protocol)
        rec = s.publish("t", b"x", 2)
        b.read()
        assert b.puback(rec.packet_id) == NOTHING
        assert rec.state == WAIT_PUBREC and s.inflight_count == 1

    def test_v5_puback_failure_reason_fails_the_record(self):
        s, b = connected(5)
        rec = s.publish("t", b"x", 1)
        b.read()
        assert b.puback(rec.packet_id, reason_code=0x87) == Result(completed=[rec])
        assert rec.state == FAILED and not rec.ok and rec.done
        assert rec.reason_code == 0x87 and rec.error == "not authorized"
        assert s.inflight_count == 0

    def test_v5_puback_success_reason_below_0x80_is_done(self):
        s, b = connected(5)
        rec = s.publish("t", b"x", 1)
        b.read()
        assert b.puback(rec.packet_id, reason_code=0x10) == Result(completed=[rec])  # no subscribers
        assert rec.state == DONE and rec.reason_code == 0x10 and rec.error is None


# ================================================================================ outgoing QoS 2

class TestOutgoingQos2:
    @protocols
    def test_full_flow(self, protocol):
        s, b = connected(protocol)
        rec = s.publish("q/2", b"exactly once", 2)
        pkt = b.read_one(Publish)
        assert (pkt.qos, pkt.packet_id, pkt.dup) == (2, rec.packet_id, False)
        assert rec.state == WAIT_PUBREC
        assert b.pubrec(rec.packet_id) == NOTHING
        assert rec.state == WAIT_PUBCOMP
        rel = b.read_one(PubRel)
        assert rel.packet_id == rec.packet_id and rel.reason_code == 0
        assert b.pubcomp(rec.packet_id) == Result(completed=[rec])
        assert rec.state == DONE and s.inflight_count == 0
        assert b.read() == []

    @protocols
    def test_duplicate_pubrec_resends_pubrel(self, protocol):
        s, b = connected(protocol)
        rec = s.publish("t", b"x", 2)
        b.read()
        b.pubrec(rec.packet_id)
        assert b.read_one(PubRel).packet_id == rec.packet_id
        assert b.pubrec(rec.packet_id) == NOTHING  # our PUBREL may have been lost
        assert b.read_one(PubRel).packet_id == rec.packet_id
        assert rec.state == WAIT_PUBCOMP
        assert b.pubcomp(rec.packet_id) == Result(completed=[rec]) and rec.ok

    @protocols
    def test_orphan_pubrec_and_pubcomp_ignored(self, protocol):
        s, b = connected(protocol)
        rec = s.publish("t", b"x", 2)
        q1 = s.publish("t", b"x", 1)
        b.read()
        assert b.pubcomp(rec.packet_id) == NOTHING  # PUBCOMP before PUBREC: not for this state
        assert rec.state == WAIT_PUBREC
        assert b.pubrec(777) == NOTHING and b.pubcomp(778) == NOTHING  # unknown ids
        assert b.pubrec(q1.packet_id) == NOTHING  # a QoS 1 publish has no PUBREC
        assert q1.state == WAIT_PUBACK
        assert b.read() == []  # no PUBREL for any of them (as M2Mqtt: ignored)
        b.pubrec(rec.packet_id)
        assert b.pubcomp(rec.packet_id) == Result(completed=[rec])
        assert b.pubcomp(rec.packet_id) == NOTHING  # duplicate PUBCOMP
        assert b.pubrec(rec.packet_id) == NOTHING  # late duplicate PUBREC after completion
        assert b.read_one(PubRel).packet_id == rec.packet_id

    def test_v5_pubrec_failure_fails_without_pubrel(self):
        s, b = connected(5)
        rec = s.publish("t", b"x", 2)
        b.read()
        assert b.pubrec(rec.packet_id, reason_code=0x97) == Result(completed=[rec])  # quota
        assert rec.state == FAILED and rec.reason_code == 0x97 and rec.error
        assert s.inflight_count == 0
        assert b.read() == []

    def test_v5_pubcomp_with_packet_id_not_found_fails(self):
        s, b = connected(5)
        rec = s.publish("t", b"x", 2)
        b.read()
        b.pubrec(rec.packet_id)
        b.read()
        assert b.pubcomp(rec.packet_id, reason_code=0x92) == Result(completed=[rec])
        assert rec.state == FAILED and rec.reason_code == 0x92


# ================================================================================ incoming

class TestIncoming:
    @protocols
    def test_qos0_delivered_without_answer(self, protocol):
        s, b = connected(protocol)
        m1, m2 = publish_packet("a", b"1"), publish_packet("b", b"2", retain=True)
        assert b.send(m1, m2) == Result(messages=[m1, m2])
        assert b.read() == []

    @protocols
    def test_qos1_delivered_and_acknowledged(self, protocol):
        s, b = connected(protocol)
        msg = publish_packet("a/b", b"m", 1, 42)
        assert b.send(msg) == Result(messages=[msg])
        ack = b.read_one(PubAck)
        assert ack.packet_id == 42 and ack.reason_code == 0
        # A QoS 1 re-send is delivered again (at least once) and acknowledged again.
        assert len(b.send(publish_packet("a/b", b"m", 1, 42, dup=True)).messages) == 1
        assert b.read_one(PubAck).packet_id == 42

    @protocols
    def test_qos2_delivered_once_then_released(self, protocol):
        s, b = connected(protocol)
        msg = publish_packet("q", b"once", 2, 7)
        assert b.send(msg) == Result(messages=[msg])
        assert b.read_one(PubRec).packet_id == 7

        # The broker did not see our PUBREC and re-sends with DUP: PUBREC again, no delivery.
        assert b.send(publish_packet("q", b"once", 2, 7, dup=True)) == NOTHING
        assert b.read_one(PubRec).packet_id == 7
        # Even without DUP (a confused broker), the id is still held: not delivered twice.
        assert b.send(msg) == NOTHING
        b.read()

        assert b.pubrel(7) == NOTHING
        assert b.read_one(PubComp).packet_id == 7
        # The id is released: a new message with the same id is a new message.
        assert [m.payload for m in b.send(publish_packet("q", b"again", 2, 7)).messages] == [
            b"again"]

    @protocols
    def test_pubrel_for_unknown_id_gets_pubcomp(self, protocol):
        s, b = connected(protocol)
        assert b.pubrel(31) == NOTHING  # our PUBCOMP was lost, the broker asks again
        assert b.read_one(PubComp).packet_id == 31

    @protocols
    def test_incoming_and_outgoing_ids_are_separate(self, protocol):
        s, b = connected(protocol)
        ours = s.publish("out", b"o", 2)
        assert ours.packet_id == 1
        b.read()
        assert len(b.send(publish_packet("in", b"i", 2, 1)).messages) == 1  # the broker's id 1
        b.read()
        b.pubrel(1)  # releases the incoming message, not ours
        b.read_one(PubComp)
        assert ours.state == WAIT_PUBREC
        b.pubrec(1)
        assert b.read_one(PubRel).packet_id == 1
        assert b.pubcomp(1) == Result(completed=[ours]) and ours.ok

    @protocols
    def test_mixed_batch_in_one_receive(self, protocol):
        s, b = connected(protocol)
        r = s.publish("t", b"x", 1)
        b.read()
        m0, m1 = publish_packet("a", b"0"), publish_packet("b", b"1", 1, 5)
        assert b.send(m0, PubAck(r.packet_id), m1) == Result(messages=[m0, m1], completed=[r])
        assert r.ok
        assert b.read_one(PubAck).packet_id == 5

    @protocols
    def test_byte_by_byte_and_trailing_partial_packet(self, protocol):
        s = Session(CLIENT_ID, protocol, keepalive=0)
        b = Broker(s)
        b.start()
        msg = publish_packet("t", b"p", 1, 9)
        stream = b.encode(ConnAck(False, 0)) + b.encode(msg)
        messages = []
        for i in range(len(stream)):
            messages += s.receive(stream[i:i + 1], 0.0)
        assert messages == [msg]
        assert s.take_events() == [Connected(session_present=False)]
        assert b.read_one(PubAck).packet_id == 9
        tail = b.encode(publish_packet("t", b"q"))
        assert s.receive(tail[:-1], 0.0) == []
        assert [m.payload for m in s.receive(tail[-1:], 0.0)] == [b"q"]
        assert s.take_events() == [] and s.take_completed() == []


# ================================================================================ subscribe

class TestSubscribe:
    @protocols
    def test_subscribe_and_suback(self, protocol):
        s, b = connected(protocol)
        pid = s.subscribe([("a/+", 1), "b/#", Subscription("c", 2)], qos=0)
        assert s.subscription_topics(pid) == ("a/+", "b/#", "c")
        sub = b.read_one(Subscribe)
        assert sub.packet_id == pid
        assert [(x.topic, x.qos) for x in sub.subscriptions] == [("a/+", 1), ("b/#", 0), ("c", 2)]
        failure = 0x80 if protocol != 3 else 2  # MQTT 3.1 SUBACK has no failure code
        assert b.send(SubAck(pid, [1, 0, failure])) == Result(events=[
            Subscribed(pid, ("a/+", "b/#", "c"), (1, 0, failure))])
        assert b.send(SubAck(pid, [1, 0, 0])) == NOTHING  # duplicate

    @protocols
    def test_single_topic_forms(self, protocol):
        s, b = connected(protocol)
        p1 = s.subscribe("x", 1)
        p2 = s.subscribe(("y", 2))
        subs = b.read()
        assert [[(x.topic, x.qos) for x in p.subscriptions] for p in subs] == [[("x", 1)],
                                                                                [("y", 2)]]
        assert b.send(SubAck(p2, [2]), SubAck(p1, [1])).events == [
            Subscribed(p2, ("y",), (2,)), Subscribed(p1, ("x",), (1,))]

    @protocols
    def test_unsubscribe_and_unsuback(self, protocol):
        s, b = connected(protocol)
        pid = s.unsubscribe(["a/+", "b"])
        unsub = b.read_one(Unsubscribe)
        assert unsub.packet_id == pid and unsub.topics == ["a/+", "b"]
        codes = [0x00, 0x11] if protocol == 5 else []  # before MQTT 5 an UNSUBACK has none
        assert b.send(UnsubAck(pid, codes)) == Result(events=[
            Unsubscribed(pid, ("a/+", "b"), (0x00, 0x11) if protocol == 5 else (0, 0))])
        assert s.unsubscribe("c") != pid  # the id was released, the counter moves on

    @protocols
    def test_orphan_and_mismatched_acks_ignored(self, protocol):
        s, b = connected(protocol)
        spid = s.subscribe("a")
        upid = s.unsubscribe("a")
        b.read()
        unsuback_codes = [0] if protocol == 5 else []
        assert b.send(SubAck(999, [0])) == NOTHING
        assert b.send(UnsubAck(998, unsuback_codes)) == NOTHING
        # A SUBACK for the UNSUBSCRIBE's id (and vice versa) is not its acknowledgement.
        assert b.send(SubAck(upid, [0])) == NOTHING
        assert b.send(UnsubAck(spid, unsuback_codes)) == NOTHING
        assert b.send(SubAck(spid, [0]), UnsubAck(upid, unsuback_codes)) == Result(events=[
            Subscribed(spid, ("a",), (0,)), Unsubscribed(upid, ("a",), (0,))])

    @protocols
    def test_an_ack_with_the_wrong_number_of_codes_is_a_protocol_error(self, protocol):
        """One reason code per filter, in order (3.1.1 [MQTT-3.8.4-5], 5.0 [MQTT-3.9.3-1],
        [MQTT-3.11.3-1]): with more or fewer, which filter a code belongs to is unknown, so the
        acknowledgement cannot be reported (it was, with the codes as they came)."""
        for codes in ([1], [1, 0, 0]):  # (none at all: the codec refuses it)
            s, b = connected(protocol)
            pid = s.subscribe(["a", "b"], qos=1)
            b.read()
            with pytest.raises(ProtocolError, match="SUBACK"):
                b.send(SubAck(pid, codes))
        if protocol == 5:  # before MQTT 5 an UNSUBACK carries no codes at all
            for codes in ([0], [0, 0, 0]):
                s, b = connected(protocol)
                pid = s.unsubscribe(["a", "b"])
                b.read()
                with pytest.raises(ProtocolError, match="UNSUBACK"):
                    b.send(UnsubAck(pid, codes))

    @protocols
    def test_needs_a_connection(self, protocol):
        s = Session(CLIENT_ID, protocol)
        with pytest.raises(NotConnected):
            s.subscribe("a")
        with pytest.raises(NotConnected):
            s.unsubscribe("a")

    @protocols
    def test_invalid_filter_raises_at_the_call(self, protocol):
        s, b = connected(protocol)
        for bad in ("a/#/b", "a+", ""):
            with pytest.raises(ValueError):
                s.subscribe(bad)
        assert b.read() == []
        pid = s.subscribe("ok")
        assert b.send(SubAck(pid, [0])).events == [Subscribed(pid, ("ok",), (0,))]


# ================================================================================ inflight window

class TestWindow:
    @protocols
    def test_only_max_inflight_go_out_and_each_ack_releases_one(self, protocol):
        s, b = connected(protocol, max_inflight=3)
        assert s.window == 3 and s.window_free == 3
        recs = [s.publish("t", str(i), 1) for i in range(8)]
        sent = publishes(b.read())
        assert [p.payload for p in sent] == [b"0", b"1", b"2"]
        assert s.inflight_count == 3 and s.queued_count == 5 and s.window_free == 0
        assert [r.packet_id for r in recs[3:]] == [0] * 5
        for i in range(3, 8):
            first = recs[i - 3]
            assert b.puback(first.packet_id) == Result(completed=[first])
            out = publishes(b.read())
            assert [p.payload for p in out] == [str(i).encode()]  # exactly one, in order
            assert out[0].packet_id == recs[i].packet_id != 0
            assert s.inflight_count == 3
        assert s.queued_count == 0
        b.puback(*(r.packet_id for r in recs[5:]))
        assert b.read() == [] and s.inflight_count == 0 and s.window_free == 3
        assert all(r.ok for r in recs)

    @protocols
    def test_batch_of_acks_releases_as_many(self, protocol):
        s, b = connected(protocol, max_inflight=4)
        recs = [s.publish("t", str(i), 1) for i in range(10)]
        b.read()
        assert b.puback(*(r.packet_id for r in recs[:3])) == Result(completed=recs[:3])
        assert [p.payload for p in b.read()] == [b"4", b"5", b"6"]

    @protocols
    def test_qos2_holds_its_slot_until_pubcomp(self, protocol):
        s, b = connected(protocol, max_inflight=1)
        r1 = s.publish("t", b"1", 2)
        r2 = s.publish("t", b"2", 1)
        assert len(b.read()) == 1
        b.pubrec(r1.packet_id)
        assert names(b.read()) == ["PubRel"]  # PUBREC does not free the slot
        assert r2.packet_id == 0
        b.pubcomp(r1.packet_id)
        assert [p.payload for p in publishes(b.read())] == [b"2"]

    @protocols
    def test_failed_ack_also_frees_the_slot(self, protocol):
        s, b = connected(protocol, max_inflight=1)
        r1 = s.publish("t", b"1", 1)
        s.publish("t", b"2", 1)
        b.read()
        b.puback(r1.packet_id, reason_code=0x80 if protocol == 5 else 0)
        assert [p.payload for p in b.read()] == [b"2"]

    @protocols
    def test_queue_full(self, protocol):
        s, b = connected(protocol, max_inflight=2, max_queued=3)
        recs = [s.publish("t", b"x", 1) for _ in range(5)]
        with pytest.raises(QueueFull):
            s.publish("t", b"x", 1)
        with pytest.raises(QueueFull):
            s.publish("t", b"x", 2)
        assert s.inflight_count == 2 and s.queued_count == 3
        assert len(b.read()) == 2
        b.puback(recs[0].packet_id)  # one slot: one queued goes out, one queue place frees
        assert s.publish("t", b"x", 1).packet_id == 0
        with pytest.raises(QueueFull):
            s.publish("t", b"x", 1)

    def test_v5_receive_maximum_caps_the_window(self):
        s, b = connected(5, max_inflight=10, connack={"receive_maximum": 2})
        assert s.window == 2
        recs = [s.publish("t", str(i), 1) for i in range(5)]
        assert [p.payload for p in b.read()] == [b"0", b"1"]
        assert s.queued_count == 3
        b.puback(recs[0].packet_id)
        assert [p.payload for p in b.read()] == [b"2"]

    def test_v5_receive_maximum_larger_than_ours_does_not_widen(self):
        s, b = connected(5, max_inflight=2, connack={"receive_maximum": 100})
        for _ in range(4):
            s.publish("t", b"x", 1)
        assert len(b.read()) == 2

    @pytest.mark.parametrize("protocol, qos2_window", [(5, 1000), (4, 20), (3, 20)])
    def test_default_qos2_window_without_a_broker_limit(self, protocol, qos2_window):
        """A broker that announces no Receive Maximum (mosquitto with max_inflight_messages 0, or
        any 3.x broker) gets at most ``qos2_window`` QoS 2 publishes in flight by default, while
        QoS 1 goes on up to 65535: QoS 2 beyond that gains nothing and slows such a broker."""
        s, b = connected(protocol)
        assert (s.max_inflight, s.max_inflight_qos2) == (65535, qos2_window)
        recs = [s.publish("t", b"x", 2) for _ in range(qos2_window + 5)]
        assert len(b.read()) == qos2_window and s.queued_count == 5
        assert s.publish("t", b"x", 1).qos == 1 and s.queued_count == 6  # behind the queue, FIFO
        b.pubrec(recs[0].packet_id)
        b.pubcomp(recs[0].packet_id)
        assert s.inflight_count == qos2_window  # the freed QoS 2 slot went to the next QoS 2

    def test_v5_window_resets_on_reconnect(self):
        s, b = connected(5, max_inflight=3, connack={"receive_maximum": 1})
        r = s.publish("t", b"x", 1)
        b.puback(r.packet_id)
        b.read()
        b.lost()
        b.connect(1.0, 0)  # this broker sends no receive_maximum (65535)
        b.read()
        for _ in range(5):
            s.publish("t", b"x", 1)
        assert len(b.read()) == 3

    def test_linear_bookkeeping_200k(self):
        """200k QoS 1 publishes through a window of 1000, acknowledged in batches: every record
        completes, the bookkeeping ends empty, and no acknowledgement walks the inflight dict or
        the pending queue (paho's O(inflight) rescan per ack is what makes such runs quadratic)."""
        store = scan_counting_store()
        s, b = connected(4, max_inflight=1000, store=store)
        ScanCountingDict.scans = ScanCountingDeque.scans = 0  # the CONNACK's restore walked it
        n = 200_000
        publish = s.publish
        recs = [publish("t", b"p", 1) for _ in range(n)]
        assert s.inflight_count == 1000 and s.queued_count == n - 1000
        b.raw()
        done = 0
        completed = 0
        while done < n:
            batch = recs[done:done + 1000]
            data = b"".join([encode_ack(PacketType.PUBACK, r.packet_id) for r in batch])
            assert s.receive(data, 0.0) == []
            completed += len(s.take_completed())
            b.raw()
            done += len(batch)
        assert completed == n
        assert s.inflight_count == 0 and s.queued_count == 0
        assert len(s.store.outgoing) == 0 and len(s.store.pending) == 0
        assert all(r.state == DONE for r in recs)
        assert ScanCountingDict.scans == 0 and ScanCountingDeque.scans == 0
        ids = {r.packet_id for r in recs}
        assert min(ids) == 1 and max(ids) == 65535  # the counter wrapped (200k > 65535)


# ================================================================================ persistence

class TestPersistentSession:
    @protocols
    def test_reconnect_resends_publish_with_dup_and_pubrel(self, protocol):
        s, b = connected(protocol, clean_session=False)
        q1 = s.publish("t/1", b"one", 1)
        q2_rel = s.publish("t/2", b"two", 2)
        q2_rec = s.publish("t/3", b"three", 2)
        b.read()
        b.pubrec(q2_rel.packet_id)
        b.read()  # the PUBREL that the broker never gets
        assert q2_rel.state == WAIT_PUBCOMP

        assert b.lost("socket closed") == NOTHING  # nothing fails
        assert s.state == DISCONNECTED and not s.connected
        assert [r.state for r in (q1, q2_rel, q2_rec)] == [WAIT_PUBACK, WAIT_PUBCOMP, WAIT_PUBREC]

        offline = s.publish("t/4", b"four", 1)  # queued, sent after the CONNACK
        offline0 = s.publish("t/5", b"five", 0)  # QoS 0 while offline: a record, queued too
        assert isinstance(offline0, Outgoing) and offline0.state == QUEUED
        assert offline.packet_id == 0 and s.queued_count == 2
        assert len(s.out) == 0 and s.pending_bytes == 0

        conn = b.start(10.0, 0)
        assert conn.clean_session is False and conn.client_id == CLIENT_ID
        assert b.send(ConnAck(True, 0), now=10.0) == Result(events=[
            Connected(session_present=protocol != 3)])
        out = b.read()
        assert [(type(p).__name__, p.packet_id) for p in out] == [
            ("Publish", q1.packet_id), ("PubRel", q2_rel.packet_id), ("Publish", q2_rec.packet_id),
            ("Publish", offline.packet_id), ("Publish", 0)]
        assert [getattr(p, "dup", None) for p in out] == [True, None, True, False, False]
        assert [p.payload for p in out if isinstance(p, Publish)] == [
            b"one", b"three", b"four", b"five"]
        assert offline.packet_id not in (0, q1.packet_id, q2_rel.packet_id, q2_rec.packet_id)
        assert offline0.state == DONE and s.take_completed() == [offline0]  # its bytes were sent

        assert b.puback(q1.packet_id, offline.packet_id) == Result(completed=[q1, offline])
        assert b.pubcomp(q2_rel.packet_id) == Result(completed=[q2_rel])
        b.pubrec(q2_rec.packet_id)
        assert b.read_one(PubRel).packet_id == q2_rec.packet_id
        assert b.pubcomp(q2_rec.packet_id) == Result(completed=[q2_rec])
        assert all(r.ok for r in (q1, q2_rel, q2_rec, offline))
        assert s.inflight_count == 0 and s.queued_count == 0

    @protocols
    def test_nothing_is_resent_before_connack(self, protocol):
        s, b = connected(protocol, clean_session=False)
        s.publish("t", b"x", 1)
        b.read()
        b.lost()
        b.start(1.0, 0)  # only the CONNECT
        s.publish("t", b"y", 1)  # while CONNECTING: queued, not written before the CONNACK
        assert b.read() == []
        b.send(ConnAck(True, 0))
        assert [(p.payload, p.dup) for p in b.read()] == [(b"x", True), (b"y", False)]

    @protocols
    def test_incoming_qos2_state_survives_reconnect(self, protocol):
        s, b = connected(protocol, clean_session=False)
        assert len(b.send(publish_packet("q", b"m", 2, 9)).messages) == 1
        b.read()  # PUBREC lost with the connection
        b.lost()
        b.connect(1.0, 0, session_present=True)
        assert b.send(publish_packet("q", b"m", 2, 9, dup=True)) == NOTHING  # not delivered twice
        b.read_one(PubRec)
        b.pubrel(9)
        b.read_one(PubComp)

    @protocols
    def test_a_held_qos2_id_reused_without_dup_after_a_reconnect_is_a_new_message(self, protocol):
        """A broker killed and restarted from an older database keeps the session but may have
        lost the exchange for an id we still hold (it died before our PUBREC reached it) and
        assign that id to its next message. A re-delivery carries DUP 1 [MQTT-3.3.1-1], so a
        DUP 0 PUBLISH with an id held from the previous connection is a new message: holding it
        back lost it (seen against mosquitto 2.0.11 in tests/test_faults.py)."""
        s, b = connected(protocol, clean_session=False)
        assert len(b.send(publish_packet("q", b"old", 2, 9)).messages) == 1
        b.read()
        b.lost()
        b.connect(1.0, 0, session_present=True)
        delivered = b.send(publish_packet("q", b"new", 2, 9)).messages
        assert [m.payload for m in delivered] == [b"new"]
        assert b.read_one(PubRec).packet_id == 9
        # Now held on this connection: a re-send (with or without DUP) is not delivered twice.
        assert b.send(publish_packet("q", b"new", 2, 9, dup=True)) == NOTHING
        assert b.send(publish_packet("q", b"new", 2, 9)) == NOTHING
        b.read()
        b.pubrel(9)
        assert b.read_one(PubComp).packet_id == 9

    @protocols
    def test_ids_held_before_a_reconnect_are_not_new_after_two(self, protocol):
        """Only the first DUP 0 arrival after the reconnect is new; an id that came again with
        DUP 1 first stays the old message."""
        s, b = connected(protocol, clean_session=False)
        b.send(publish_packet("q", b"a", 2, 3))
        b.send(publish_packet("q", b"b", 2, 4))
        b.read()
        b.lost()
        b.connect(1.0, 0, session_present=True)
        assert b.send(publish_packet("q", b"a", 2, 3, dup=True)) == NOTHING
        assert b.send(publish_packet("q", b"a", 2, 3)) == NOTHING  # re-sent on this connection
        b.lost()
        b.connect(2.0, 0, session_present=True)
        assert [m.payload for m in b.send(publish_packet("q", b"c", 2, 4)).messages] == [b"c"]
        assert [m.payload for m in b.send(publish_packet("q", b"d", 2, 3)).messages] == [b"d"]

    @persistent_protocols
    def test_broker_without_our_session_forgets_incoming_qos2_ids(self, protocol):
        s, b = connected(protocol, clean_session=False)
        b.send(publish_packet("q", b"m", 2, 9))
        b.lost()
        b.read()
        b.connect(1.0, 0, session_present=False)
        assert len(b.send(publish_packet("q", b"new", 2, 9)).messages) == 1  # a new message

    @protocols
    def test_clean_session_fails_inflight_on_connection_lost(self, protocol):
        s, b = connected(protocol, max_inflight=2)
        recs = [s.publish("t", b"x", q) for q in (1, 2, 1)]
        b.read()
        failed = b.lost("reset by peer").completed
        assert sorted(id(r) for r in failed) == sorted(id(r) for r in recs)
        assert all(r.state == FAILED and r.error == "reset by peer" for r in recs)
        assert s.inflight_count == 0 and s.queued_count == 0
        with pytest.raises(NotConnected):
            s.publish("t", b"x", 1)
        with pytest.raises(NotConnected):
            s.publish("t", b"x", 0)
        assert b.lost() == NOTHING

    @protocols
    def test_clean_session_forgets_incoming_qos2_ids(self, protocol):
        s, b = connected(protocol)
        b.send(publish_packet("q", b"m", 2, 9))
        b.lost()
        b.read()
        b.connect(1.0, 0)
        assert len(b.send(publish_packet("q", b"m", 2, 9)).messages) == 1

    @protocols
    def test_clean_session_publish_while_connecting_is_queued(self, protocol):
        s = Session(CLIENT_ID, protocol, keepalive=0)
        b = Broker(s)
        b.start()
        rec = s.publish("t", b"early", 1)
        assert b.read() == [] and rec.packet_id == 0
        b.send(ConnAck(False, 0))
        pkt = b.read_one(Publish)
        assert pkt.payload == b"early" and pkt.packet_id == rec.packet_id != 0

    @protocols
    def test_fail_all(self, protocol):
        s, b = connected(protocol, clean_session=False, max_inflight=1)
        recs = [s.publish("t", b"x", 1) for _ in range(3)]
        assert s.fail_all("client closed") is None
        assert s.take_completed() == recs  # inflight first, then the queue, in order
        assert all(r.state == FAILED and r.error == "client closed" for r in recs)
        assert s.inflight_count == 0 and s.queued_count == 0


class RecordingStore(MemoryStore):
    """A durable store that logs the hooks the session calls."""

    durable = True

    def __init__(self):
        super().__init__()
        self.log = []

    def saved(self, record):
        self.log.append(("saved", record.packet_id, record.state))

    def removed(self, record):
        self.log.append(("removed", record.packet_id))

    def incoming_changed(self, packet_id, present):
        self.log.append(("incoming", packet_id, present))


class TestDurableStoreHooks:
    @protocols
    def test_every_change_is_mirrored(self, protocol):
        store = RecordingStore()
        s, b = connected(protocol, clean_session=False, store=store, max_inflight=1)
        q1 = s.publish("t", b"1", 1)
        q2 = s.publish("t", b"2", 2)  # queued: not in flight yet
        assert store.log == [("saved", q1.packet_id, WAIT_PUBACK), ("saved", 0, QUEUED)]
        b.puback(q1.packet_id)  # completes q1, sends q2
        b.pubrec(q2.packet_id)
        b.pubcomp(q2.packet_id)
        b.send(publish_packet("in", b"x", 2, 40))
        b.pubrel(40)
        assert store.log[2:] == [
            ("removed", q1.packet_id), ("saved", q2.packet_id, WAIT_PUBREC),
            ("saved", q2.packet_id, WAIT_PUBCOMP), ("removed", q2.packet_id),
            ("incoming", 40, True), ("incoming", 40, False)]
        assert s.store is store and not store.outgoing and not store.incoming

    @v3_protocols
    def test_timeout_failure_is_mirrored(self, protocol):
        store = RecordingStore()
        s, b = connected(protocol, store=store, ack_timeout=1.0, max_retries=0)
        rec = s.publish("t", b"1", 1, now=0.0)
        assert b.tick(1.0) == Result(completed=[rec])
        assert store.log[-1] == ("removed", rec.packet_id)

    @protocols
    def test_failing_everything_is_mirrored(self, protocol):
        store = RecordingStore()
        s, b = connected(protocol, store=store)
        recs = [s.publish("t", b"1", 1) for _ in range(2)]
        assert b.lost() == Result(completed=recs)
        assert [e for e in store.log if e[0] == "removed"] == [
            ("removed", r.packet_id) for r in recs]


# ================================================================================ ack timeout

class TestAckTimeout:
    @v3_protocols
    def test_v3_resends_with_dup_then_fails(self, protocol):
        s, b = connected(protocol, ack_timeout=5.0, max_retries=2)
        rec = s.publish("t", b"x", 1, now=0.0)
        assert b.read_one(Publish).dup is False
        assert s.next_deadline() == 5.0
        assert b.tick(4.9) == NOTHING and b.read() == []
        for attempt, now in enumerate((5.0, 10.0), start=1):
            assert b.tick(now) == NOTHING
            pkt = b.read_one(Publish)
            assert (pkt.dup, pkt.packet_id, pkt.payload) == (True, rec.packet_id, b"x")
            assert rec.attempts == attempt and rec.state == WAIT_PUBACK
            assert s.next_deadline() == now + 5.0
        assert b.tick(15.0) == Result(completed=[rec])
        assert rec.state == FAILED and "not acknowledged" in rec.error
        assert b.read() == [] and s.inflight_count == 0
        assert b.puback(rec.packet_id) == NOTHING  # a late PUBACK is an orphan now

    @v3_protocols
    def test_v3_ack_in_time_cancels_the_retry(self, protocol):
        s, b = connected(protocol, ack_timeout=5.0, max_retries=2)
        rec = s.publish("t", b"x", 1, now=0.0)
        b.read()
        b.puback(rec.packet_id, now=1.0)
        assert b.tick(5.0) == NOTHING and b.read() == []
        assert rec.ok and rec.attempts == 0
        assert b.tick(100.0) == NOTHING and s.next_deadline() is None

    @v3_protocols
    def test_v3_retry_of_a_qos2_past_pubrec_resends_pubrel(self, protocol):
        s, b = connected(protocol, ack_timeout=5.0, max_retries=1)
        rec = s.publish("t", b"x", 2, now=0.0)
        b.read()
        b.pubrec(rec.packet_id, now=1.0)
        b.read()
        assert b.tick(5.0) == NOTHING
        assert b.read_one(PubRel).packet_id == rec.packet_id
        assert b.tick(10.0) == Result(completed=[rec]) and rec.state == FAILED

    @v3_protocols
    def test_v3_timeout_failure_frees_the_window(self, protocol):
        s, b = connected(protocol, ack_timeout=5.0, max_retries=0, max_inflight=1)
        r1 = s.publish("t", b"1", 1, now=0.0)
        r2 = s.publish("t", b"2", 1, now=0.0)
        b.read()
        assert b.tick(5.0) == Result(completed=[r1]) and r1.error
        pkt = b.read_one(Publish)
        assert (pkt.payload, pkt.dup, pkt.packet_id) == (b"2", False, r2.packet_id)
        assert s.next_deadline() == 10.0  # r2's timer starts when it is sent

    def test_v5_never_resends_on_a_live_connection(self):
        s, b = connected(5, ack_timeout=5.0, max_retries=3)
        r1 = s.publish("t", b"x", 1, now=0.0)
        r2 = s.publish("t", b"y", 2, now=2.0)
        b.read()
        assert b.tick(4.9) == NOTHING
        assert b.tick(5.0) == Result(completed=[r1])
        assert r1.state == FAILED and "not acknowledged" in r1.error
        assert b.read() == []  # no DUP re-send
        assert b.tick(7.0) == Result(completed=[r2]) and b.read() == []
        assert s.inflight_count == 0

    @v3_protocols
    def test_persistent_reconnect_does_not_stall_other_timers(self, protocol):
        """After a reconnect the restored records get fresh timers; their old timer entries
        must not hold back the timer of a publish made after the reconnect."""
        s, b = connected(protocol, clean_session=False, ack_timeout=10.0, max_retries=1)
        a = s.publish("t", b"a", 1, now=0.0)
        b.lost()
        b.connect(2.0, 0, session_present=True)
        assert [(p.payload, p.dup) for p in b.read()] == [(b"a", True)]
        late = s.publish("t", b"b", 1, now=5.0)
        b.read()
        b.tick(12.0)
        assert [(p.payload, p.dup) for p in b.read()] == [(b"a", True)]
        b.tick(15.0)
        assert [(p.payload, p.dup) for p in b.read()] == [(b"b", True)]
        assert late.attempts == 1 and a.attempts == 1
        assert b.tick(22.0) == Result(completed=[a])
        assert b.tick(25.0) == Result(completed=[late])

    @v3_protocols
    def test_persistent_reconnect_restarts_the_retry_budget(self, protocol):
        s, b = connected(protocol, clean_session=False, ack_timeout=5.0, max_retries=1)
        rec = s.publish("t", b"x", 1, now=0.0)
        b.tick(5.0)
        assert rec.attempts == 1
        b.lost()
        assert b.tick(100.0) == NOTHING  # no timers while disconnected
        b.connect(101.0, 0, session_present=True)
        b.read()
        assert rec.attempts == 0
        assert b.tick(106.0) == NOTHING and b.read_one(Publish).dup
        assert b.tick(111.0) == Result(completed=[rec])


# ================================================================================ keep-alive

class TestKeepAlive:
    """MQTT requires something sent every ``keepalive`` seconds; the session also pings a broker
    it has not heard from for ``keepalive / 2``, so a silent peer is noticed whatever we send."""

    @protocols
    def test_pingreq_when_nothing_was_received_for_half_the_keepalive(self, protocol):
        s, b = connected(protocol, keepalive=10)
        assert s.next_deadline() == 5.0
        assert b.tick(4.9) == NOTHING and b.raw() == b""
        assert b.tick(5.0) == NOTHING
        assert b.raw(now=5.0) == PINGREQ
        assert s.ping_sent_at == 5.0
        assert s.next_deadline() == 10.0  # max(ping + keepalive/2, last received + keepalive)
        assert b.tick(7.0) == NOTHING and b.raw() == b""  # one ping at a time
        assert b.send(PingResp(), now=8.0) == NOTHING
        assert s.ping_sent_at is None
        assert s.next_deadline() == 13.0  # heard at 8: min(sent 5 + 10, 8 + 5)
        assert b.tick(12.9) == NOTHING and b.raw() == b""
        assert b.tick(13.0) == NOTHING and b.raw() == PINGREQ

    @protocols
    def test_pingreq_when_nothing_was_sent_for_the_keepalive(self, protocol):
        s, b = connected(protocol, keepalive=10)
        for now in (3.0, 6.0, 9.0):  # the broker talks: only the sending side is idle
            b.send(publish_packet("t", b"m"), now=now)
            assert b.tick(now) == NOTHING and b.raw() == b""
        assert s.next_deadline() == 10.0
        assert b.tick(10.0) == NOTHING and b.raw(now=10.0) == PINGREQ

    @protocols
    def test_no_pingresp_disconnects(self, protocol):
        s, b = connected(protocol, keepalive=10)
        b.tick(5.0)
        assert b.raw(now=5.0) == PINGREQ
        assert b.tick(9.9) == NOTHING
        result = b.tick(10.0)
        assert result == Result(events=[Disconnected(0x8D, ANY)])
        assert "keep alive" in result.events[0].reason
        assert s.state == DISCONNECTED and s.next_deadline() is None
        assert b.tick(100.0) == NOTHING and b.raw() == b""

    @protocols
    def test_traffic_postpones_the_ping(self, protocol):
        s, b = connected(protocol, keepalive=10)
        s.publish("t", b"x", 0)
        b.raw(now=6.0)
        b.send(publish_packet("t", b"m"), now=6.0)
        assert s.next_deadline() == 11.0
        assert b.tick(10.0) == NOTHING and b.raw() == b""
        b.send(publish_packet("t", b"m"), now=10.0)
        b.send(publish_packet("t", b"m"), now=14.0)
        assert s.next_deadline() == 16.0  # now the sending side is due first
        assert b.tick(15.9) == NOTHING and b.raw() == b""
        assert b.tick(16.0) == NOTHING and b.raw() == PINGREQ

    @protocols
    def test_keepalive_zero_never_pings(self, protocol):
        s, b = connected(protocol, keepalive=0)
        assert s.next_deadline() is None
        assert b.tick(1e6) == NOTHING and b.raw() == b""

    @protocols
    def test_no_timers_before_connack(self, protocol):
        s = Session(CLIENT_ID, protocol)
        b = Broker(s)
        b.start(0.0, 10)
        assert s.next_deadline() is None and b.tick(100.0) == NOTHING

    @protocols
    def test_connect_carries_keepalive_and_credentials(self, protocol):
        s = Session(CLIENT_ID, protocol)
        b = Broker(s)
        conn, result = b.connect(0.0, 30, username="u", password="p")
        assert (conn.keepalive, conn.username, conn.password) == (30, "u", b"p")
        assert conn.protocol == protocol and conn.clean_session is True
        assert result == Result(events=[Connected(session_present=False)]) and s.keepalive == 30


# ================================================================================ MQTT 5

class TestMqtt5Connack:
    def test_assigned_client_identifier(self):
        s, _ = connected(5, client_id="", connack={"assigned_client_identifier": "auto-17"})
        assert s.client_id == "auto-17"

    def test_server_keep_alive_overrides(self):
        s = Session(CLIENT_ID, 5)
        b = Broker(s)
        b.connect(0.0, 60, properties={"server_keep_alive": 6})
        assert s.keepalive == 6
        assert s.next_deadline() == 3.0  # nothing heard for half of the broker's keep-alive
        b.tick(3.0)
        assert b.raw() == PINGREQ

    def test_maximum_packet_size_raises_at_the_call(self):
        s, b = connected(5, connack={"maximum_packet_size": 64})
        assert not s.plain_qos0
        for qos in (0, 1, 2):
            with pytest.raises(PayloadTooLarge):
                s.publish("t", b"x" * 100, qos)
        assert b.read() == [] and s.inflight_count == 0 and s.queued_count == 0
        assert s.publish("t", b"x" * 10, 1).packet_id == 1  # no id was burnt
        assert type(s.publish("t", b"small", 0)) is int
        assert [p.payload for p in b.read()] == [b"x" * 10, b"small"]

    def test_maximum_qos(self):
        s, b = connected(5, connack={"maximum_qos": 1})
        with pytest.raises(ValueError):
            s.publish("t", b"x", 2)
        assert s.publish("t", b"x", 1).qos == 1

    def test_connect_advertises_our_limits(self):
        s = Session(CLIENT_ID, 5, topic_alias_maximum=8, max_packet_size=4096)
        b = Broker(s)
        conn, _ = b.connect(0.0, 0)
        assert conn.properties == {"topic_alias_maximum": 8, "maximum_packet_size": 4096}

    def test_incoming_packet_over_our_maximum_is_refused(self):
        s, b = connected(5, max_packet_size=64)
        with pytest.raises(ProtocolError):
            b.send(publish_packet("t", b"x" * 100))


class TestTopicAliasesIn:
    def test_alias_resolved_and_removed_from_the_properties(self):
        s, b = connected(5)
        r1 = b.send(publish_packet("long/topic", b"1", properties={"topic_alias": 3}))
        r2 = b.send(publish_packet("", b"2", properties={"topic_alias": 3}))
        r3 = b.send(publish_packet("", b"3", 1, 4, properties={"topic_alias": 3,
                                                               "content_type": "text"}))
        assert r1.messages + r2.messages + r3.messages == [
            publish_packet("long/topic", b"1"), publish_packet("long/topic", b"2"),
            publish_packet("long/topic", b"3", 1, 4, properties={"content_type": "text"})]
        assert b.read_one(PubAck).packet_id == 4
        b.send(publish_packet("other", b"4", properties={"topic_alias": 3}))  # re-mapped
        assert b.send(publish_packet("", b"5", properties={"topic_alias": 3})).messages[
            0].topic == "other"

    def test_unknown_alias(self):
        s, b = connected(5)
        with pytest.raises(ProtocolError):
            b.send(publish_packet("", b"x", properties={"topic_alias": 1}))

    def test_alias_above_our_maximum(self):
        s, b = connected(5, topic_alias_maximum=4)
        b.send(publish_packet("t", b"x", properties={"topic_alias": 4}))
        with pytest.raises(ProtocolError):
            b.send(publish_packet("t", b"x", properties={"topic_alias": 5}))

    def test_alias_when_we_allow_none(self):
        s = Session(CLIENT_ID, 5, topic_alias_maximum=0)
        b = Broker(s)
        conn, _ = b.connect(0.0, 0)
        # Nothing advertised (only the default Maximum Packet Size): the broker may not alias.
        assert conn.properties == {"maximum_packet_size": MAX_PACKET_SIZE}
        with pytest.raises(ProtocolError):
            b.send(publish_packet("t", b"x", properties={"topic_alias": 1}))

    def test_aliases_reset_on_reconnect(self):
        s, b = connected(5)
        b.send(publish_packet("t", b"x", properties={"topic_alias": 1}))
        b.lost()
        b.connect(1.0, 0)
        with pytest.raises(ProtocolError):
            b.send(publish_packet("", b"x", properties={"topic_alias": 1}))


def wire(b):
    return [(p.topic, (p.properties or {}).get("topic_alias")) for p in publishes(b.read())]


class TestTopicAliasesOut:
    @pytest.mark.parametrize("qos", [0, 1, 2])
    def test_first_use_sets_then_alias_only_then_plain_beyond_max(self, qos):
        s, b = connected(5, connack={"topic_alias_maximum": 2})
        for topic in ("t/1", "t/1", "t/2", "t/3", "t/2", "t/3", "t/1"):
            s.publish(topic, b"x", qos)
        assert wire(b) == [("t/1", 1), ("", 1), ("t/2", 2), ("t/3", None), ("", 2),
                           ("t/3", None), ("", 1)]

    def test_aliases_reset_on_reconnect_and_dup_resend_uses_the_topic(self):
        s, b = connected(5, clean_session=False, connack={"topic_alias_maximum": 2})
        s.publish("t/1", b"a", 0)
        rec = s.publish("t/1", b"b", 1)
        assert wire(b) == [("t/1", 1), ("", 1)]
        b.lost()
        b.connect(1.0, 0, session_present=True, properties={"topic_alias_maximum": 2})
        resent = b.read_one(Publish)
        assert (resent.topic, resent.dup, resent.properties) == ("t/1", True, None)
        s.publish("t/1", b"c", 0)
        assert wire(b) == [("t/1", 1)]  # the alias is set afresh
        b.puback(rec.packet_id)
        assert rec.ok

    def test_no_aliases_when_the_broker_allows_none_or_we_opt_out(self):
        s, b = connected(5)
        assert s.plain_qos0
        s.publish("t", b"x", 0)
        s.publish("t", b"x", 1)
        assert wire(b) == [("t", None), ("t", None)]
        s, b = connected(5, outgoing_aliases=False, connack={"topic_alias_maximum": 5})
        s.publish("t", b"x", 0)
        s.publish("t", b"x", 0)
        assert wire(b) == [("t", None), ("t", None)]

    def test_callers_own_alias_is_left_alone(self):
        s, b = connected(5, connack={"topic_alias_maximum": 5})
        s.publish("t", b"x", 0, properties={"topic_alias": 5})
        s.publish("t", b"x", 1, properties={"topic_alias": 5})
        assert wire(b) == [("t", 5), ("t", 5)]

    @pytest.mark.parametrize("qos", [0, 1, 2])
    def test_alias_that_would_break_the_size_limit_is_not_used(self, qos):
        """The Topic Alias property adds 3 bytes: a publish that fits the broker's maximum packet
        size plainly (20 bytes here, limit 21) is sent plainly, not refused or left stuck."""
        s, b = connected(5, connack={"topic_alias_maximum": 2, "maximum_packet_size": 21})
        rec = s.publish("t/1", b"x" * (10 if qos else 12), qos)  # 20 bytes, 23 with an alias
        assert wire(b) == [("t/1", None)]
        assert s.inflight_count == (1 if qos else 0)
        s.publish("t/1", b"x" * 5, qos)  # small enough to carry the alias: claims it now
        s.publish("t/1", b"x" * 5, qos)
        assert wire(b) == [("t/1", 1), ("", 1)]
        if qos == 1:
            assert b.puback(rec.packet_id) == Result(completed=[rec]) and rec.ok

    @pytest.mark.parametrize("qos", [0, 1])
    def test_refused_publish_does_not_claim_an_alias(self, qos):
        """A publish that raises (wildcard topic, too large) must not leave an alias behind that
        the broker never learnt: later publishes would carry an alias it cannot resolve."""
        s, b = connected(5, connack={"topic_alias_maximum": 2, "maximum_packet_size": 40})
        for _ in range(2):
            with pytest.raises(InvalidTopic):
                s.publish("a/+", b"x", qos)
        with pytest.raises(PayloadTooLarge):
            s.publish("t/1", b"x" * 50, qos)
        assert b.read() == []
        s.publish("t/1", b"ok", qos)
        s.publish("t/1", b"ok", qos)
        assert wire(b) == [("t/1", 1), ("", 1)]


# ================================================================================ refusal, errors

class TestRefusedAndErrors:
    @v3_protocols
    def test_v3_refused(self, protocol):
        s = Session(CLIENT_ID, protocol)
        b = Broker(s)
        _, result = b.connect(0.0, 0, reason_code=5)
        assert result == Result(events=[ConnectionRefused(5, "not authorized")])
        assert s.state == DISCONNECTED
        with pytest.raises(NotConnected):
            s.publish("t", b"x", 1)

    def test_v5_refused(self):
        s = Session(CLIENT_ID, 5)
        b = Broker(s)
        _, result = b.connect(0.0, 0, reason_code=0x86,
                              properties={"reason_string": "who are you"})
        assert result == Result(events=[
            ConnectionRefused(0x86, ANY, {"reason_string": "who are you"})])
        assert "user name or password" in result.events[0].reason
        assert s.state == DISCONNECTED and s.next_deadline() is None

    @protocols
    @pytest.mark.parametrize("packet", [
        Subscribe(1, [Subscription("a", 0)]), Unsubscribe(1, ["a"]), PingReq(),
        Connect(CLIENT_ID, 4), ConnAck(False, 0)], ids=lambda p: type(p).__name__)
    def test_broker_must_not_send(self, protocol, packet):
        s, b = connected(protocol)
        if isinstance(packet, Connect):
            packet = Connect(CLIENT_ID, protocol)
        with pytest.raises(ProtocolError):
            b.send(packet)

    @protocols
    @pytest.mark.parametrize("packet", [
        publish_packet("t", b"x"), publish_packet("t", b"x", 1, 1), PubAck(1), PingResp(),
        SubAck(1, [0])], ids=lambda p: type(p).__name__)
    def test_anything_but_connack_first_is_an_error(self, protocol, packet):
        s = Session(CLIENT_ID, protocol)
        b = Broker(s)
        b.start(0.0, 0)
        with pytest.raises(ProtocolError):
            b.send(packet)

    @protocols
    def test_malformed_input(self, protocol):
        s, b = connected(protocol)
        with pytest.raises(MalformedPacket):
            s.receive(b"\x00\x00", 0.0)  # reserved packet type 0

    @protocols
    def test_caller_mistakes_raise_at_the_call(self, protocol):
        s, b = connected(protocol)
        for qos in (0, 1, 2):
            for topic in ("a/+", "a/#", "#", ""):
                with pytest.raises(InvalidTopic):
                    s.publish(topic, b"x", qos)
        for qos in (3, -1):
            with pytest.raises(ValueError):
                s.publish("t", b"x", qos)
        with pytest.raises(TypeError):
            s.publish("t", b"x", 1.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            s.publish("t", 12345, 1)  # type: ignore[arg-type]
        if protocol != 5:
            with pytest.raises(ValueError):
                s.publish("t", b"x", 1, properties={"message_expiry_interval": 1})
        assert b.read() == [] and s.inflight_count == 0
        assert s.publish("t", b"x", 1).packet_id == 1  # nothing consumed an id

    def test_constructor_checks(self):
        with pytest.raises(ValueError):
            Session(CLIENT_ID, 6)
        with pytest.raises(ValueError):
            Session(CLIENT_ID, 4, max_inflight=0)
        with pytest.raises(ValueError):
            Session(CLIENT_ID, 4, max_inflight=65536)


# ================================================================================ disconnect, auth

class TestDisconnect:
    @v3_protocols
    def test_v3_disconnect(self, protocol):
        s, b = connected(protocol)
        s.disconnect()
        assert b.raw() == b"\xe0\x00" and s.state == DISCONNECTING
        s.disconnect()
        assert b.raw() == b""  # once
        with pytest.raises(NotConnected):
            s.publish("t", b"x", 0)
        assert b.lost() == NOTHING and s.state == DISCONNECTED

    def test_v5_disconnect_with_reason(self):
        s, b = connected(5)
        s.disconnect(0x04)  # disconnect with will message
        assert b.read_one(Disconnect).reason_code == 0x04
        assert s.state == DISCONNECTING

    def test_v5_broker_disconnect_event(self):
        s, b = connected(5)
        assert b.send(Disconnect(0x8B, {"reason_string": "bye"})) == Result(events=[
            Disconnected(0x8B, "server shutting down: bye", {"reason_string": "bye"},
                         by_server=True)])
        assert s.state == DISCONNECTED

    def test_v5_auth_request(self):
        s, b = connected(5)
        assert b.send(Auth(0x18, {"authentication_method": "SCRAM"})) == Result(events=[
            AuthRequest(0x18, {"authentication_method": "SCRAM"})])
        s.auth(0x18, {"authentication_method": "SCRAM", "authentication_data": b"x"})
        pkt = b.read_one(Auth)
        assert pkt.properties["authentication_data"] == b"x"

    @protocols
    def test_connected_event_and_state(self, protocol):
        s = Session(CLIENT_ID, protocol)
        b = Broker(s)
        assert s.state == DISCONNECTED
        b.start(0.0, 0)
        assert s.state == CONNECTING and not s.plain_qos0
        assert b.send(ConnAck(False, 0)) == Result(events=[Connected(session_present=False)])
        assert s.state == CONNECTED and s.plain_qos0
        assert s.connack == Connected(session_present=False)


# ================================================================================ the redesign
# The tests below pin the behaviour the redesigned session added (issue 7).

class TestConnectParameters:
    @pytest.mark.parametrize("kw, exc", [
        ({"keepalive": 70000}, ValueError), ({"keepalive": -1}, ValueError),
        ({"keepalive": 1.5}, TypeError), ({"username": "a\x00b"}, ValueError),
        ({"password": "p"}, ValueError)], ids=["keepalive-high", "keepalive-negative",
                                               "keepalive-float", "nul-username", "password-only"])
    def test_bad_connect_parameters_raise_at_the_call_and_keep_the_last_good_ones(self, kw, exc):
        with pytest.raises(exc):
            Session(CLIENT_ID, 4, **kw)
        s = Session(CLIENT_ID, 4, keepalive=7, username="u")
        b = Broker(s)
        with pytest.raises(exc):
            s.configure(**kw)
        assert s.position == 0 and s.state == DISCONNECTED  # nothing written, nothing moved
        conn = b.start()
        assert (conn.keepalive, conn.username) == (7, "u")

    def test_will_topic_with_a_wildcard(self):
        from mqttfast.codec import Will
        with pytest.raises(InvalidTopic):
            Session(CLIENT_ID, 4, will=Will("a/#", b"gone"))


class TestStreamPositions:
    """``written(mark)``: a QoS 0 publish is complete when the stream up to its mark reached the
    socket. Positions run on across connections; what a dropped connection took with it is lost."""

    @persistent_protocols
    def test_marks_across_a_dropped_connection_and_a_new_start(self, protocol):
        s, b = connected(protocol, clean_session=False)
        start = s.position
        m1 = s.publish("t", b"1", 0)
        assert s.position == m1 > start and s.pending_bytes == m1 - start
        assert s.written(m1) is None
        b.raw()
        assert s.written(m1) is True and s.pending_bytes == 0

        m2, m3, m4 = (s.publish("t", p, 0) for p in (b"2", b"3", b"4"))
        taken = s.take_output()  # the loop took all three...
        assert len(taken) == m4 - m1 and s.pending_bytes == m4 - m1
        s.sent(m2 - m1, 1.0)  # ...and the socket accepted the first before the connection died
        assert (s.written(m2), s.written(m3), s.written(m4)) == (True, None, None)
        assert b.lost() == NOTHING
        assert [s.written(m) for m in (m1, m2, m3, m4)] == [True, True, False, False]
        assert s.pending_bytes == 0 and s.position == m4  # the position is not rewound

        b.connect(2.0, 0, session_present=True)  # the CONNECT is written after m4
        m5 = s.publish("t", b"5", 0)
        assert m5 > m4 and s.written(m5) is None
        b.raw()
        assert s.written(m5) is True  # a new connection does not desynchronise the marks
        assert [s.written(m) for m in (m1, m2, m3, m4)] == [True, True, False, False]

        m6 = s.publish("t", b"6", 0)  # a second loss, then a second connection
        b.lost()
        b.connect(3.0, 0, session_present=True)
        m7 = s.publish("t", b"7", 0)
        b.raw()
        assert [s.written(m) for m in (m3, m5, m6, m7)] == [False, True, False, True]

    def test_publish_many_returns_the_mark_after_the_last(self):
        s, b = connected(4)
        mark = s.publish_many("t", [b"a", b"b", b"c"])
        assert mark == s.position and s.written(mark) is None
        assert [p.payload for p in b.read()] == [b"a", b"b", b"c"]
        assert s.written(mark) is True

    @persistent_protocols
    def test_qos0_queued_offline_completes_once_sent_on_the_next_connection(self, protocol):
        s, b = connected(protocol, clean_session=False)
        b.lost()
        rec = s.publish("t", b"offline", 0)
        assert isinstance(rec, Outgoing) and rec.state == QUEUED and s.queued_count == 1
        b.start(1.0, 0)
        assert b.send(ConnAck(True, 0)) == Result(events=[Connected(session_present=True)])
        taken = s.take_output()  # written into the stream, not sent yet: not done
        assert rec.state == QUEUED and s.take_completed() == []
        s.sent(len(taken) - 1, 1.0)
        assert s.take_completed() == [] and not rec.done
        s.sent(1, 1.0)
        assert s.take_completed() == [rec] and rec.state == DONE and rec.ok

    @persistent_protocols
    def test_qos0_queued_offline_fails_if_that_connection_drops_first(self, protocol):
        s, b = connected(protocol, clean_session=False)
        b.lost()
        rec = s.publish("t", b"offline", 0)
        b.start(1.0, 0)
        b.send(ConnAck(True, 0))
        s.take_output()  # the loop took it, the socket never accepted it
        assert b.lost("reset") == Result(completed=[rec])
        assert rec.state == FAILED and "reset" in rec.error

    @persistent_protocols
    def test_qos0_offline_queue_is_bounded_by_max_buffer(self, protocol):
        s, b = connected(protocol, clean_session=False, max_buffer=1000)
        b.lost()
        queued = []
        with pytest.raises(QueueFull):
            for _ in range(20):
                queued.append(s.publish("t", b"x" * 100, 0))
        assert 8 <= len(queued) <= 9  # 100 bytes each and a little overhead, in 1000
        assert s.queued_count == len(queued)
        with pytest.raises(QueueFull):
            s.publish("t", b"x" * 100, 0)
        assert s.publish("t", b"x", 1).state == QUEUED  # QoS 1/2 have their own bound
        b.connect(1.0, 0, session_present=True)
        assert len(b.read()) == len(queued) + 1
        assert s.take_completed() == queued and all(r.ok for r in queued)
        b.lost()  # the budget is free again
        again = [s.publish("t", b"x" * 100, 0) for _ in range(len(queued))]
        assert all(r.state == QUEUED for r in again)

    def test_qos0_refused_by_max_queued_takes_nothing_from_max_buffer(self):
        """A QoS 0 publish refused because the queue is full (max_queued) must not keep its
        bytes counted against max_buffer: the byte budget would shrink for good."""
        s, b = connected(4, clean_session=False, max_buffer=250, max_queued=3)
        b.lost()
        q1 = [s.publish("t", b"q", 1) for _ in range(3)]  # the queue is full
        for _ in range(3):
            with pytest.raises(QueueFull):
                s.publish("t", b"x" * 100, 0)
        b.connect(1.0, 0, session_present=True)
        b.read()
        b.puback(*(r.packet_id for r in q1))
        b.lost()
        for _ in range(2):  # 2 x ~108 bytes fit in 250
            assert s.publish("t", b"x" * 100, 0).state == QUEUED

    def test_clean_session_qos0_offline_is_refused(self):
        s, b = connected(4)
        b.lost()
        with pytest.raises(NotConnected):
            s.publish("t", b"x", 0)


class TestConnectionState:
    def test_states_are_int_enums_with_readable_reprs(self):
        assert repr(ConnectionState.CONNECTED) == "ConnectionState.CONNECTED"
        assert repr(PublishState.WAIT_PUBACK) == "PublishState.WAIT_PUBACK"
        assert CONNECTED is ConnectionState.CONNECTED and DONE is PublishState.DONE
        assert [CONNECTING, DISCONNECTING, QUEUED, FAILED] == [
            ConnectionState.CONNECTING, ConnectionState.DISCONNECTING, PublishState.QUEUED,
            PublishState.FAILED]
        s, b = connected(4)
        rec = s.publish("a/b", b"x", 1)
        assert type(rec.state) is PublishState and "WAIT_PUBACK" in repr(rec)
        assert type(s.state) is ConnectionState and repr(s.state) == "ConnectionState.CONNECTED"

    @protocols
    def test_the_lifecycle(self, protocol):
        s = Session(CLIENT_ID, protocol, keepalive=0)
        b = Broker(s)
        seen = [s.state]
        b.start()
        seen.append(s.state)
        b.send(ConnAck(False, 0))
        seen.append(s.state)
        s.disconnect()
        seen.append(s.state)
        b.lost()
        seen.append(s.state)
        b.connect(1.0)  # and again
        seen.append(s.state)
        assert seen == [DISCONNECTED, CONNECTING, CONNECTED, DISCONNECTING, DISCONNECTED,
                        CONNECTED]

    @protocols
    def test_start_on_a_live_connection_is_refused(self, protocol):
        s = Session(CLIENT_ID, protocol, keepalive=0)
        b = Broker(s)
        b.start()
        for step in ("connecting", "connected", "disconnecting"):
            if step == "connected":
                b.send(ConnAck(False, 0))
            elif step == "disconnecting":
                s.disconnect()
                b.raw()
            position, epoch, state = s.position, s.epoch, s.state
            with pytest.raises(RuntimeError, match=f"from ConnectionState.{state.name}"):
                s.start(1.0)
            assert (s.position, s.epoch, s.state) == (position, epoch, state)  # nothing moved
        b.lost()
        b.start(2.0)  # from DISCONNECTED it may

    @protocols
    def test_refused_and_dropped_connections_may_start_again(self, protocol):
        s = Session(CLIENT_ID, protocol, keepalive=10)
        b = Broker(s)
        b.connect(reason_code=5 if protocol != 5 else 0x87)
        assert s.state == DISCONNECTED
        b.lost()
        b.connect(1.0)
        assert s.state == CONNECTED
        b.tick(6.0)
        b.raw(now=6.0)
        assert b.tick(20.0).events[0].reason_code == 0x8D and s.state == DISCONNECTED
        b.lost()
        b.connect(21.0)
        assert s.state == CONNECTED


class TestEventsAreValues:
    def test_equality_and_repr(self):
        assert Connected(False) == Connected(session_present=False, reason_code=0)
        assert Connected(False) != Connected(True)
        assert Subscribed(1, ("a",), (0,)) != Unsubscribed(1, ("a",), (0,))  # the class counts
        assert repr(Connected(False)) == (
            "Connected(session_present=False, reason_code=0, properties=None)")
        assert repr(Subscribed(3, ("a/b", "c"), (1, 0x80))) == (
            "Subscribed(packet_id=3, topics=('a/b', 'c'), reason_codes=(1, 128), properties=None)")
        assert repr(ConnectionRefused(5, "not authorized")) == (
            "ConnectionRefused(reason_code=5, reason='not authorized', properties=None)")
        assert repr(AuthRequest(0x18)) == "AuthRequest(reason_code=24, properties=None)"
        assert Disconnected(0x8D, "x", by_server=False) == Disconnected(0x8D, "x")
        assert "by_server=True" in repr(Disconnected(0x8B, "x", by_server=True))

    def test_events_are_frozen(self):
        ev = Connected(False)
        with pytest.raises(dataclasses.FrozenInstanceError):
            ev.session_present = True  # type: ignore[misc]

    def test_events_are_slotted(self):
        """The target API: frozen, *slotted* value objects (no per-instance ``__dict__``)."""
        for ev in (Connected(False), ConnectionRefused(5, "x"), Subscribed(1, ("a",), (0,)),
                   Unsubscribed(1, ("a",), (0,)), Disconnected(0, "x"), AuthRequest(0x18)):
            assert not hasattr(ev, "__dict__"), type(ev).__name__

    def test_control_events_come_apart_from_messages(self):
        s, b = connected(5)
        pid = s.subscribe("a")
        msg = publish_packet("a", b"m")
        messages = s.receive(b.encode(msg) + b.encode(SubAck(pid, [0])) + b.encode(msg), 0.0)
        assert messages == [msg, msg]
        assert s.events == [Subscribed(pid, ("a",), (0,))]
        assert s.take_events() == [Subscribed(pid, ("a",), (0,))] and s.events == []


class TestKeepAliveBothWays:
    @protocols
    def test_a_silent_broker_is_noticed_whatever_we_send(self, protocol):
        """A session that keeps sending but receives nothing pings within keepalive/2 and reports
        the connection dead within 1.5 x keepalive."""
        s, b = connected(protocol, keepalive=10)
        ping_at = dead_at = None
        now = 0.0
        while now <= 30.0 and dead_at is None:
            if s.connected:
                s.publish("t", b"telemetry", 0)
            result = b.tick(now)
            if "PingReq" in names(b.read(now=now)) and ping_at is None:
                ping_at = now
            if result.events:
                assert result.events == [Disconnected(0x8D, ANY)]
                dead_at = now
            now += 0.25
        assert ping_at is not None and ping_at <= 5.0
        assert dead_at is not None and dead_at <= 15.0
        assert s.state == DISCONNECTED

    @protocols
    def test_a_talking_broker_that_ignores_the_ping_is_dead_a_keepalive_after_it_fell_silent(
            self, protocol):
        s, b = connected(protocol, keepalive=10)
        b.tick(5.0)
        assert b.raw(now=5.0) == PINGREQ
        b.send(publish_packet("t", b"m"), now=9.0)  # alive, but no PINGRESP
        assert s.next_deadline() == 19.0  # max(ping + keepalive/2, last received + keepalive)
        assert b.tick(18.9) == NOTHING and s.connected
        assert b.tick(19.0) == Result(events=[Disconnected(0x8D, ANY)])

    @protocols
    def test_ping_on_demand(self, protocol):
        s = Session(CLIENT_ID, protocol, keepalive=0)
        b = Broker(s)
        assert s.ping(0.0) is False  # not connected
        b.connect()
        assert s.ping(1.0) is True and b.raw() == PINGREQ
        assert s.ping(1.5) is False and b.raw() == b""  # one outstanding
        b.send(PingResp(), now=2.0)
        assert s.ping(3.0) is True and b.raw() == PINGREQ


class TestSessionPresentZero:
    """CONNACK with Session Present 0 although we asked to keep the session: the broker has no
    state for us, so unacknowledged publishes go again as new messages (DUP 0, new ids)."""

    @persistent_protocols
    def test_unacknowledged_publishes_are_sent_again_as_new_messages(self, protocol):
        s, b = connected(protocol, clean_session=False, max_inflight=3)
        q1 = s.publish("t/1", b"one", 1)
        q2 = s.publish("t/2", b"two", 2)
        q2c = s.publish("t/3", b"three", 2)
        waiting = s.publish("t/4", b"four", 1)  # the window is full: queued
        b.read()
        b.pubrec(q2c.packet_id)
        b.read()
        assert q2c.state == WAIT_PUBCOMP
        old_ids = {q1.packet_id, q2.packet_id, q2c.packet_id}
        assert b.lost() == NOTHING

        _, result = b.connect(1.0, 0, session_present=False)
        # Past PUBREC the broker had the message: done. No PUBREL for a session it lost.
        assert result == Result(events=[Connected(session_present=False)], completed=[q2c])
        assert q2c.state == DONE and q2c.ok
        out = b.read()
        assert [(type(p).__name__, p.topic, p.payload, p.qos, p.dup) for p in out] == [
            ("Publish", "t/1", b"one", 1, False), ("Publish", "t/2", b"two", 2, False),
            ("Publish", "t/4", b"four", 1, False)]
        assert [p.packet_id for p in out] == [q1.packet_id, q2.packet_id, waiting.packet_id]
        assert not {q1.packet_id, q2.packet_id} & old_ids  # fresh ids
        assert [r.state for r in (q1, q2, waiting)] == [WAIT_PUBACK, WAIT_PUBREC, WAIT_PUBACK]
        assert s.inflight_count == 3 and s.queued_count == 0
        assert b.puback(q1.packet_id, waiting.packet_id) == Result(completed=[q1, waiting])
        b.pubrec(q2.packet_id)
        assert b.read_one(PubRel).packet_id == q2.packet_id
        assert b.pubcomp(q2.packet_id) == Result(completed=[q2])

    @persistent_protocols
    def test_incoming_qos2_ids_are_forgotten(self, protocol):
        s, b = connected(protocol, clean_session=False)
        msg = publish_packet("in", b"m", 2, 9)
        assert b.send(msg) == Result(messages=[msg])
        b.read()
        b.lost()
        b.connect(1.0, 0, session_present=False)
        again = publish_packet("in", b"new", 2, 9)
        assert b.send(again) == Result(messages=[again])  # a new message, delivered

    def test_mqtt31_has_no_session_present_flag_and_resumes(self):
        s, b = connected(3, clean_session=False)
        rec = s.publish("t", b"x", 1)
        b.read()
        b.lost()
        b.connect(1.0, 0, session_present=False)
        assert [(p.packet_id, p.dup) for p in b.read()] == [(rec.packet_id, True)]


class TestTopicAliasMixing:
    def test_caller_remapping_an_automatic_alias(self):
        s, b = connected(5, connack={"topic_alias_maximum": 3})
        s.publish("a", b"1", 0)  # automatic: alias 1 = a
        s.publish("b", b"2", 0, properties={"topic_alias": 1})  # the caller: alias 1 = b now
        s.publish("a", b"3", 0)  # must not go as alias 1 any more
        s.publish("b", b"4", 0)  # alias 1 means b
        assert wire(b) == [("a", 1), ("b", 1), ("a", 2), ("", 1)]

    def test_automatic_aliases_skip_the_callers_numbers(self):
        s, b = connected(5, connack={"topic_alias_maximum": 3})
        s.publish("x", b"1", 1, properties={"topic_alias": 2})
        for topic in ("y", "z", "w", "y", "z"):
            s.publish(topic, b"2", 0)
        assert wire(b) == [("x", 2), ("y", 1), ("z", 3), ("w", None), ("", 1), ("", 3)]

    def test_caller_alias_above_the_brokers_maximum(self):
        s, b = connected(5, connack={"topic_alias_maximum": 2})
        for qos in (0, 1):
            with pytest.raises(ValueError, match="Topic Alias Maximum"):
                s.publish("t", b"x", qos, properties={"topic_alias": 3})
        s, b = connected(5)  # a broker that allows none
        with pytest.raises(ValueError):
            s.publish("t", b"x", 0, properties={"topic_alias": 1})
        assert b.read() == []

    @pytest.mark.parametrize("seed", range(12))
    def test_every_publish_resolves_to_its_topic(self, seed):
        """Random mixes of caller aliases, automatic aliases, QoS 0/1, acknowledgements and
        reconnects: replaying what the session wrote as a broker would (alias -> topic per
        connection) gives every PUBLISH the topic it was published to (carried in the payload)."""
        rnd = random.Random(seed)
        s, b = connected(5, clean_session=False, connack={"topic_alias_maximum": 4})
        topics = [f"t/{i}" for i in range(7)]
        broker_aliases = {}
        caller_aliases = {}  # what the caller taught the broker on this connection
        checked = 0

        def replay():
            nonlocal checked
            for p in publishes(b.read()):
                alias = (p.properties or {}).get("topic_alias")
                if p.topic:
                    if alias is not None:
                        broker_aliases[alias] = p.topic
                    topic = p.topic
                else:
                    assert alias in broker_aliases, (p, broker_aliases)
                    topic = broker_aliases[alias]
                assert topic == p.payload.decode().split("|")[1], (p, broker_aliases)
                checked += 1

        for i in range(300):
            op = rnd.random()
            qos = rnd.choice((0, 1))
            if op < 0.25:
                topic, alias = rnd.choice(topics), rnd.randint(1, 4)
                s.publish(topic, f"{i}|{topic}", qos, properties={"topic_alias": alias})
                caller_aliases[alias] = topic
            elif op < 0.35 and caller_aliases:
                alias = rnd.choice(sorted(caller_aliases))
                s.publish("", f"{i}|{caller_aliases[alias]}", qos,
                          properties={"topic_alias": alias})
            elif op < 0.9:
                topic = rnd.choice(topics)
                s.publish(topic, f"{i}|{topic}", qos)
            elif op < 0.97:
                replay()
                for packet_id in list(s.store.outgoing):  # acknowledge everything in flight
                    b.puback(packet_id)
            else:
                replay()
                b.lost()
                b.connect(float(i), 0, session_present=True, properties={"topic_alias_maximum": 4})
                broker_aliases.clear()
                caller_aliases.clear()
            if rnd.random() < 0.3:
                replay()
        replay()
        assert checked > 250


class TestPublishChecks:
    def test_empty_topic(self):
        s, b = connected(5)  # no aliases
        for qos in (0, 1, 2):
            with pytest.raises(InvalidTopic):
                s.publish("", b"x", qos)
        s, b = connected(5, connack={"topic_alias_maximum": 2})
        for qos in (0, 1, 2):
            with pytest.raises(InvalidTopic):
                s.publish("", b"x", qos)
        with pytest.raises(ValueError):  # an alias the broker was never taught
            s.publish("", b"x", 0, properties={"topic_alias": 1})
        with pytest.raises(ValueError):
            s.publish("", b"x", 1, properties={"topic_alias": 1})
        assert b.read() == []
        s.publish("t", b"1", 0, properties={"topic_alias": 1})
        s.publish("", b"2", 0, properties={"topic_alias": 1})
        rec = s.publish("", b"3", 1, properties={"topic_alias": 1})
        assert rec.topic == "t"  # kept: a re-send on another connection needs the topic
        assert wire(b) == [("t", 1), ("", 1), ("t", 1)]

    @persistent_protocols
    def test_empty_topic_offline(self, protocol):
        s, b = connected(protocol, clean_session=False)
        b.lost()
        for qos in (0, 1):
            with pytest.raises(InvalidTopic):
                s.publish("", b"x", qos)
        assert s.queued_count == 0

    @pytest.mark.parametrize("online", [True, False], ids=["connected", "offline"])
    def test_subscription_identifier_refused(self, online):
        s, b = connected(5, clean_session=False)
        if not online:
            b.lost()
        for qos in (0, 1, 2):
            with pytest.raises(ValueError, match="subscription_identifier"):
                s.publish("t", b"x", qos, properties={"subscription_identifier": 1})
        assert s.queued_count == 0 and s.inflight_count == 0 and b.raw() == b""
        if online:
            assert s.publish("t", b"x", 1).packet_id == 1  # no id was burnt

    @pytest.mark.parametrize("qos", [0, 1])
    def test_alias_only_publish_that_would_break_the_size_limit_goes_with_its_topic(self, qos):
        """For a 1-character topic the alias-only form is 2 bytes longer than the plain one: a
        publish that fits plainly must not be refused because the topic has an alias."""
        s, b = connected(5, connack={"topic_alias_maximum": 2, "maximum_packet_size": 20})
        s.publish("t", b"x" * (9 if qos else 11), qos)  # 20 bytes with the alias: claims 1
        assert wire(b) == [("t", 1)]
        s.publish("t", b"x" * (11 if qos else 13), qos)  # 19 plain, 21 as alias only
        assert [(p.topic, len(p.payload)) for p in publishes(b.read())] == [
            ("t", 11 if qos else 13)]


class TestSubscribeRedesign:
    @protocols
    def test_a_tuple_of_two_filters_is_two_filters(self, protocol):
        s, b = connected(protocol)
        pid = s.subscribe(("a/b", "c/d"), qos=1)
        sub = b.read_one(Subscribe)
        assert [(x.topic, x.qos) for x in sub.subscriptions] == [("a/b", 1), ("c/d", 1)]
        assert s.subscription_topics(pid) == ("a/b", "c/d")
        assert b.send(SubAck(pid, [1, 1])) == Result(events=[
            Subscribed(pid, ("a/b", "c/d"), (1, 1))])
        pid = s.subscribe(("a/b", 2))  # a (filter, qos) pair stays one filter
        assert [(x.topic, x.qos) for x in b.read_one(Subscribe).subscriptions] == [("a/b", 2)]

    def test_subscribe_and_unsubscribe_over_the_brokers_maximum_packet_size(self):
        s, b = connected(5, connack={"maximum_packet_size": 40})
        long_filter = "a/" + "b" * 60
        with pytest.raises(PayloadTooLarge):
            s.subscribe(long_filter)
        with pytest.raises(PayloadTooLarge):
            s.subscribe(["x", long_filter])
        with pytest.raises(PayloadTooLarge):
            s.unsubscribe(long_filter)
        assert b.raw() == b""
        assert s.subscribe("ok") == 1  # nothing kept, no id burnt
        assert b.send(SubAck(1, [0])).events == [Subscribed(1, ("ok",), (0,))]

    @protocols
    def test_an_ack_in_flight_when_the_connection_drops_is_forgotten(self, protocol):
        s, b = connected(protocol, clean_session=False)
        pid = s.subscribe("a")
        b.read()
        b.lost()
        b.connect(1.0, 0, session_present=True)
        assert b.send(SubAck(pid, [0])) == NOTHING  # the client layer failed its handle


class TestManualAck:
    @protocols
    def test_acknowledgements_go_in_receive_order(self, protocol):
        s, b = connected(protocol, manual_ack=True)
        m1, m2 = publish_packet("a", b"1", 1, 1), publish_packet("b", b"2", 2, 2)
        assert b.send(m1, m2) == Result(messages=[m1, m2])
        assert b.raw() == b""  # nothing is acknowledged by itself
        epoch = s.epoch
        assert s.ack(2, epoch) is True
        assert b.raw() == b""  # the 2nd waits for the 1st
        assert s.ack(1, epoch) is True
        assert [(type(p).__name__, p.packet_id) for p in b.read()] == [("PubAck", 1),
                                                                       ("PubRec", 2)]
        assert s.ack(1, epoch) is False and b.raw() == b""  # once
        b.pubrel(2)
        assert b.read_one(PubComp).packet_id == 2

    @protocols
    def test_a_qos2_resend_before_the_ack_gets_no_early_pubrec(self, protocol):
        s, b = connected(protocol, manual_ack=True)
        msg = publish_packet("a", b"1", 2, 5)
        b.send(msg)
        assert b.send(publish_packet("a", b"1", 2, 5, dup=True)) == NOTHING
        assert b.raw() == b""
        s.ack(5, s.epoch)
        assert b.read_one(PubRec).packet_id == 5

    @persistent_protocols
    def test_an_ack_for_a_previous_connection_is_refused(self, protocol):
        s, b = connected(protocol, clean_session=False, manual_ack=True)
        b.send(publish_packet("a", b"1", 1, 1))
        old = s.epoch
        b.lost()
        b.connect(1.0, 0, session_present=True)
        assert s.epoch != old
        assert s.ack(1, old) is False and b.raw() == b""  # the broker sends it again


class TestNothingAfterDisconnect:
    @protocols
    def test_no_acknowledgement_is_written_after_the_disconnect(self, protocol):
        """DISCONNECTING: "nothing more may be sent" (MQTT-3.14.4-1). Packets the broker sent
        before it saw our DISCONNECT must not make the session write PUBACK / PUBREL / PUBCOMP
        behind it."""
        s, b = connected(protocol)
        rec = s.publish("t", b"x", 2)
        b.read()
        s.disconnect()
        disconnect = b.raw()
        b.send(publish_packet("in", b"m", 1, 5), PubRec(rec.packet_id), PubRel(6))
        assert b.raw() == b""
        assert disconnect[:1] == b"\xe0"
