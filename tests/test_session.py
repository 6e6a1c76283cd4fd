"""Sans-IO tests of ``mqttfast.session.Session``: no socket, no clock.

A small in-memory broker side (``session_helpers.Broker``) decodes what the session wrote to
``session.out`` and feeds the broker's packets back through ``session.receive``. The behavioural
reference is the M2Mqtt client (its inflight queue, duplicate handling and RestoreSession).
The session imports ``mqttfast.codec``, so ``MQTTFAST_PURE=1`` runs all of this on the pure twin.
"""
from __future__ import annotations

import pytest

from mqttfast.codec import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubRel,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    encode_ack,
)
from mqttfast.constants import PacketType
from mqttfast.errors import (
    InvalidTopic,
    MalformedPacket,
    NotConnected,
    PayloadTooLarge,
    ProtocolError,
    QueueFull,
)
from mqttfast.session import (
    CONNECTED,
    DISCONNECTED,
    DONE,
    FAILED,
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
        Broker,
        ScanCountingDeque,
        ScanCountingDict,
        connected,
        publish_packet,
        scan_counting_store,
    )
except ImportError:  # pragma: no cover  (tests/ imported as a package)
    from tests.session_helpers import (
        CLIENT_ID,
        Broker,
        ScanCountingDeque,
        ScanCountingDict,
        connected,
        publish_packet,
        scan_counting_store,
    )

PROTOCOLS = [3, 4, 5]
protocols = pytest.mark.parametrize("protocol", PROTOCOLS, ids=["v31", "v311", "v5"])
v3_protocols = pytest.mark.parametrize("protocol", [3, 4], ids=["v31", "v311"])

PINGREQ = b"\xc0\x00"


def names(events):
    return [type(e).__name__ for e in events]


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
        assert s.publish("t", b"x", 0) is None  # QoS 0 takes no id
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
        events = b.puback(*(r.packet_id for r in recs if r.packet_id not in still_flying))
        assert len(events) == 65535 - len(still_flying)
        assert all(r.state == DONE for r in events)
        assert s.inflight_count == len(still_flying)

        new = [s.publish("t", b"", 1).packet_id for _ in range(4)]
        assert new == [3, 4, 8, 9]  # wrapped, skipping 1, 2 and 5..7
        assert s.subscribe("x") == 10
        assert not set(new) & still_flying

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
        assert names(b.send(SubAck(10, [0]))) == ["Subscribed"]
        assert s.publish("t", b"", 1).packet_id == 10
        assert s.inflight_count == 65535
        # Now the window is full: a publish queues, and a PUBACK lets it out with the freed id.
        late = s.publish("t", b"", 1)
        assert late.packet_id == 0 and s.queued_count == 1 and b.read() != []
        assert b.puback(3) != []
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
        events = b.puback(rec.packet_id)
        assert events == [rec]
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
        assert b.puback(r1.packet_id) == [r1]
        assert b.puback(r1.packet_id) == []  # duplicate
        assert b.puback(999) == []  # never sent
        assert r2.state == WAIT_PUBACK and s.inflight_count == 1
        assert b.puback(r2.packet_id) == [r2]
        assert b.read() == []

    @protocols
    def test_puback_for_a_qos2_publish_is_ignored(self, protocol):
        s, b = connected(protocol)
        rec = s.publish("t", b"x", 2)
        b.read()
        assert b.puback(rec.packet_id) == []
        assert rec.state == WAIT_PUBREC and s.inflight_count == 1

    def test_v5_puback_failure_reason_fails_the_record(self):
        s, b = connected(5)
        rec = s.publish("t", b"x", 1)
        b.read()
        assert b.puback(rec.packet_id, reason_code=0x87) == [rec]
        assert rec.state == FAILED and not rec.ok and rec.done
        assert rec.reason_code == 0x87 and rec.error == "not authorized"
        assert s.inflight_count == 0

    def test_v5_puback_success_reason_below_0x80_is_done(self):
        s, b = connected(5)
        rec = s.publish("t", b"x", 1)
        b.read()
        assert b.puback(rec.packet_id, reason_code=0x10) == [rec]  # no matching subscribers
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
        assert b.pubrec(rec.packet_id) == []
        assert rec.state == WAIT_PUBCOMP
        rel = b.read_one(PubRel)
        assert rel.packet_id == rec.packet_id and rel.reason_code == 0
        assert b.pubcomp(rec.packet_id) == [rec]
        assert rec.state == DONE and s.inflight_count == 0
        assert b.read() == []

    @protocols
    def test_duplicate_pubrec_resends_pubrel(self, protocol):
        s, b = connected(protocol)
        rec = s.publish("t", b"x", 2)
        b.read()
        b.pubrec(rec.packet_id)
        assert b.read_one(PubRel).packet_id == rec.packet_id
        assert b.pubrec(rec.packet_id) == []  # our PUBREL may have been lost
        assert b.read_one(PubRel).packet_id == rec.packet_id
        assert rec.state == WAIT_PUBCOMP
        assert b.pubcomp(rec.packet_id) == [rec] and rec.ok

    @protocols
    def test_orphan_pubrec_and_pubcomp_ignored(self, protocol):
        s, b = connected(protocol)
        rec = s.publish("t", b"x", 2)
        q1 = s.publish("t", b"x", 1)
        b.read()
        assert b.pubcomp(rec.packet_id) == []  # PUBCOMP before PUBREC: not for this state
        assert rec.state == WAIT_PUBREC
        assert b.pubrec(777) == [] and b.pubcomp(778) == []  # unknown ids
        assert b.pubrec(q1.packet_id) == []  # a QoS 1 publish has no PUBREC
        assert q1.state == WAIT_PUBACK
        assert b.read() == []  # no PUBREL for any of them (as M2Mqtt: ignored)
        b.pubrec(rec.packet_id)
        b.pubcomp(rec.packet_id)
        assert b.pubcomp(rec.packet_id) == []  # duplicate PUBCOMP
        assert b.pubrec(rec.packet_id) == []  # late duplicate PUBREC after completion
        assert b.read_one(PubRel).packet_id == rec.packet_id

    def test_v5_pubrec_failure_fails_without_pubrel(self):
        s, b = connected(5)
        rec = s.publish("t", b"x", 2)
        b.read()
        assert b.pubrec(rec.packet_id, reason_code=0x97) == [rec]  # quota exceeded
        assert rec.state == FAILED and rec.reason_code == 0x97 and rec.error
        assert s.inflight_count == 0
        assert b.read() == []

    def test_v5_pubcomp_with_packet_id_not_found_fails(self):
        s, b = connected(5)
        rec = s.publish("t", b"x", 2)
        b.read()
        b.pubrec(rec.packet_id)
        b.read()
        assert b.pubcomp(rec.packet_id, reason_code=0x92) == [rec]
        assert rec.state == FAILED and rec.reason_code == 0x92


# ================================================================================ incoming

class TestIncoming:
    @protocols
    def test_qos0_delivered_without_answer(self, protocol):
        s, b = connected(protocol)
        events = b.send(publish_packet("a", b"1"), publish_packet("b", b"2", retain=True))
        assert [(e.topic, e.payload, e.retain) for e in events] == [("a", b"1", False),
                                                                    ("b", b"2", True)]
        assert b.read() == []

    @protocols
    def test_qos1_delivered_and_acknowledged(self, protocol):
        s, b = connected(protocol)
        events = b.send(publish_packet("a/b", b"m", 1, 42))
        assert len(events) == 1 and isinstance(events[0], Publish)
        assert (events[0].topic, events[0].payload, events[0].packet_id) == ("a/b", b"m", 42)
        ack = b.read_one(PubAck)
        assert ack.packet_id == 42 and ack.reason_code == 0
        # A QoS 1 re-send is delivered again (at least once) and acknowledged again.
        assert len(b.send(publish_packet("a/b", b"m", 1, 42, dup=True))) == 1
        assert b.read_one(PubAck).packet_id == 42

    @protocols
    def test_qos2_delivered_once_then_released(self, protocol):
        s, b = connected(protocol)
        msg = publish_packet("q", b"once", 2, 7)
        events = b.send(msg)
        assert [(e.topic, e.payload, e.packet_id) for e in events] == [("q", b"once", 7)]
        assert b.read_one().__class__.__name__ == "PubRec"

        # The broker did not see our PUBREC and re-sends with DUP: PUBREC again, no delivery.
        assert b.send(publish_packet("q", b"once", 2, 7, dup=True)) == []
        rec = b.read_one()
        assert type(rec).__name__ == "PubRec" and rec.packet_id == 7
        # Even without DUP (a confused broker), the id is still held: not delivered twice.
        assert b.send(msg) == []
        b.read()

        assert b.pubrel(7) == []
        comp = b.read_one()
        assert type(comp).__name__ == "PubComp" and comp.packet_id == 7
        # The id is released: a new message with the same id is a new message.
        events = b.send(publish_packet("q", b"again", 2, 7))
        assert [e.payload for e in events] == [b"again"]

    @protocols
    def test_pubrel_for_unknown_id_gets_pubcomp(self, protocol):
        s, b = connected(protocol)
        assert b.pubrel(31) == []  # our PUBCOMP was lost, the broker asks again
        comp = b.read_one()
        assert type(comp).__name__ == "PubComp" and comp.packet_id == 31

    @protocols
    def test_incoming_and_outgoing_ids_are_separate(self, protocol):
        s, b = connected(protocol)
        ours = s.publish("out", b"o", 2)
        assert ours.packet_id == 1
        b.read()
        assert len(b.send(publish_packet("in", b"i", 2, 1))) == 1  # the broker's own id 1
        b.read()
        b.pubrel(1)  # releases the incoming message, not ours
        assert type(b.read_one()).__name__ == "PubComp"
        assert ours.state == WAIT_PUBREC
        b.pubrec(1)
        assert b.read_one(PubRel).packet_id == 1
        assert b.pubcomp(1) == [ours] and ours.ok

    @protocols
    def test_mixed_batch_in_one_receive(self, protocol):
        s, b = connected(protocol)
        r = s.publish("t", b"x", 1)
        b.read()
        events = b.send(publish_packet("a", b"0"), PubAck(r.packet_id),
                        publish_packet("b", b"1", 1, 5))
        assert names(events) == ["Publish", "Outgoing", "Publish"]
        assert events[1] is r and r.ok
        assert b.read_one(PubAck).packet_id == 5

    @protocols
    def test_byte_by_byte_and_trailing_partial_packet(self, protocol):
        s = Session(CLIENT_ID, protocol)
        b = Broker(s)
        s.connect(0.0, 0)
        b.read()
        stream = b.encode(ConnAck(False, 0)) + b.encode(publish_packet("t", b"p", 1, 9))
        events = []
        for i in range(len(stream)):
            events += s.receive(stream[i:i + 1], 0.0)
        assert names(events) == ["Connected", "Publish"]
        assert events[1].payload == b"p"
        assert b.read_one(PubAck).packet_id == 9
        tail = b.encode(publish_packet("t", b"q"))
        assert s.receive(tail[:-1], 0.0) == []
        assert [e.payload for e in s.receive(tail[-1:], 0.0)] == [b"q"]


# ================================================================================ subscribe

class TestSubscribe:
    @protocols
    def test_subscribe_and_suback(self, protocol):
        s, b = connected(protocol)
        pid = s.subscribe([("a/+", 1), "b/#", Subscription("c", 2)], qos=0)
        sub = b.read_one(Subscribe)
        assert sub.packet_id == pid
        assert [(x.topic, x.qos) for x in sub.subscriptions] == [("a/+", 1), ("b/#", 0), ("c", 2)]
        failure = 0x80 if protocol != 3 else 2  # MQTT 3.1 SUBACK has no failure code
        events = b.send(SubAck(pid, [1, 0, failure]))
        assert names(events) == ["Subscribed"]
        ev = events[0]
        assert isinstance(ev, Subscribed) and not isinstance(ev, Unsubscribed)
        assert (ev.packet_id, ev.topics, ev.reason_codes) == (pid, ["a/+", "b/#", "c"],
                                                              [1, 0, failure])
        assert b.send(SubAck(pid, [1, 0, 0])) == []  # duplicate

    @protocols
    def test_single_topic_forms(self, protocol):
        s, b = connected(protocol)
        p1 = s.subscribe("x", 1)
        p2 = s.subscribe(("y", 2))
        subs = b.read()
        assert [[(x.topic, x.qos) for x in p.subscriptions] for p in subs] == [[("x", 1)],
                                                                                [("y", 2)]]
        assert names(b.send(SubAck(p2, [2]), SubAck(p1, [1]))) == ["Subscribed", "Subscribed"]

    @protocols
    def test_unsubscribe_and_unsuback(self, protocol):
        s, b = connected(protocol)
        pid = s.unsubscribe(["a/+", "b"])
        unsub = b.read_one(Unsubscribe)
        assert unsub.packet_id == pid and unsub.topics == ["a/+", "b"]
        codes = [0x00, 0x11] if protocol == 5 else []
        events = b.send(UnsubAck(pid, codes))
        assert names(events) == ["Unsubscribed"]
        assert (events[0].packet_id, events[0].topics, events[0].reason_codes) == (
            pid, ["a/+", "b"], codes)
        assert s.unsubscribe("c") != pid  # the id was released, the counter moves on

    @protocols
    def test_orphan_and_mismatched_acks_ignored(self, protocol):
        s, b = connected(protocol)
        spid = s.subscribe("a")
        upid = s.unsubscribe("a")
        b.read()
        assert b.send(SubAck(999, [0])) == []
        assert b.send(UnsubAck(998, [0] if protocol == 5 else [])) == []
        # A SUBACK for the UNSUBSCRIBE's id (and vice versa) is not its acknowledgement.
        assert b.send(SubAck(upid, [0])) == []
        assert b.send(UnsubAck(spid, [0] if protocol == 5 else [])) == []
        events = b.send(SubAck(spid, [0]), UnsubAck(upid, [0] if protocol == 5 else []))
        assert names(events) == ["Subscribed", "Unsubscribed"]

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
        assert b.send(SubAck(pid, [0]))[0].topics == ["ok"]


# ================================================================================ inflight window

class TestWindow:
    @protocols
    def test_only_max_inflight_go_out_and_each_ack_releases_one(self, protocol):
        s, b = connected(protocol, max_inflight=3)
        recs = [s.publish("t", str(i), 1) for i in range(8)]
        sent = publishes(b.read())
        assert [p.payload for p in sent] == [b"0", b"1", b"2"]
        assert s.inflight_count == 3 and s.queued_count == 5
        assert [r.packet_id for r in recs[3:]] == [0] * 5
        for i in range(3, 8):
            first = recs[i - 3]
            assert b.puback(first.packet_id) == [first]
            out = publishes(b.read())
            assert [p.payload for p in out] == [str(i).encode()]  # exactly one, in order
            assert out[0].packet_id == recs[i].packet_id != 0
            assert s.inflight_count == 3
        assert s.queued_count == 0
        b.puback(*(r.packet_id for r in recs[5:]))
        assert b.read() == [] and s.inflight_count == 0
        assert all(r.ok for r in recs)

    @protocols
    def test_batch_of_acks_releases_as_many(self, protocol):
        s, b = connected(protocol, max_inflight=4)
        recs = [s.publish("t", str(i), 1) for i in range(10)]
        b.read()
        events = b.puback(*(r.packet_id for r in recs[:3]))
        assert events == recs[:3]
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

    def test_v5_window_resets_on_reconnect(self):
        s, b = connected(5, max_inflight=3, connack={"receive_maximum": 1})
        r = s.publish("t", b"x", 1)
        b.puback(r.packet_id)
        b.read()
        s.connection_lost()
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
            completed += len(s.receive(data, 0.0))
            s.out.clear()
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

        assert s.connection_lost("socket closed") == []  # nothing fails
        assert s.state == DISCONNECTED and not s.connected
        assert [r.state for r in (q1, q2_rel, q2_rec)] == [WAIT_PUBACK, WAIT_PUBCOMP, WAIT_PUBREC]

        offline = s.publish("t/4", b"four", 1)  # queued, sent after the CONNACK
        offline0 = s.publish("t/5", b"five", 0)
        assert offline.packet_id == 0 and s.queued_count == 2
        assert bytes(s.out) == b""

        s.connect(10.0, 0)
        conn = b.read_one(Connect)
        assert conn.clean_session is False and conn.client_id == CLIENT_ID
        events = b.send(ConnAck(True, 0), now=10.0)
        assert names(events) == ["Connected"] and events[0].session_present is (protocol != 3)
        out = b.read()
        assert [(type(p).__name__, p.packet_id) for p in out] == [
            ("Publish", q1.packet_id), ("PubRel", q2_rel.packet_id), ("Publish", q2_rec.packet_id),
            ("Publish", offline.packet_id), ("Publish", 0)]
        assert [getattr(p, "dup", None) for p in out] == [True, None, True, False, False]
        assert [p.payload for p in out if isinstance(p, Publish)] == [
            b"one", b"three", b"four", b"five"]
        assert offline.packet_id not in (0, q1.packet_id, q2_rel.packet_id, q2_rec.packet_id)
        assert offline0.state == DONE

        assert b.puback(q1.packet_id, offline.packet_id) == [q1, offline]
        assert b.pubcomp(q2_rel.packet_id) == [q2_rel]
        b.pubrec(q2_rec.packet_id)
        assert b.read_one(PubRel).packet_id == q2_rec.packet_id
        assert b.pubcomp(q2_rec.packet_id) == [q2_rec]
        assert all(r.ok for r in (q1, q2_rel, q2_rec, offline))
        assert s.inflight_count == 0 and s.queued_count == 0

    @protocols
    def test_nothing_is_resent_before_connack(self, protocol):
        s, b = connected(protocol, clean_session=False)
        s.publish("t", b"x", 1)
        b.read()
        s.connection_lost()
        s.connect(1.0, 0)
        assert [type(p).__name__ for p in b.read()] == ["Connect"]
        s.publish("t", b"y", 1)  # while CONNECTING: queued, not written before the CONNACK
        assert b.read() == []
        b.send(ConnAck(True, 0))
        assert [(p.payload, p.dup) for p in b.read()] == [(b"x", True), (b"y", False)]

    @protocols
    def test_incoming_qos2_state_survives_reconnect(self, protocol):
        s, b = connected(protocol, clean_session=False)
        assert len(b.send(publish_packet("q", b"m", 2, 9))) == 1
        b.read()  # PUBREC lost with the connection
        s.connection_lost()
        b.connect(1.0, 0, session_present=True)
        assert b.send(publish_packet("q", b"m", 2, 9, dup=True)) == []  # not delivered twice
        assert type(b.read_one()).__name__ == "PubRec"
        b.pubrel(9)
        assert type(b.read_one()).__name__ == "PubComp"

    @pytest.mark.parametrize("protocol", [4, 5], ids=["v311", "v5"])
    def test_broker_without_our_session_forgets_incoming_qos2_ids(self, protocol):
        s, b = connected(protocol, clean_session=False)
        b.send(publish_packet("q", b"m", 2, 9))
        s.connection_lost()
        b.read()
        b.connect(1.0, 0, session_present=False)
        assert len(b.send(publish_packet("q", b"new", 2, 9))) == 1  # a new message

    @protocols
    def test_clean_session_fails_inflight_on_connection_lost(self, protocol):
        s, b = connected(protocol, max_inflight=2)
        recs = [s.publish("t", b"x", q) for q in (1, 2, 1)]
        b.read()
        failed = s.connection_lost("reset by peer")
        assert sorted(id(r) for r in failed) == sorted(id(r) for r in recs)
        assert all(r.state == FAILED and r.error == "reset by peer" for r in recs)
        assert s.inflight_count == 0 and s.queued_count == 0
        with pytest.raises(NotConnected):
            s.publish("t", b"x", 1)
        with pytest.raises(NotConnected):
            s.publish("t", b"x", 0)
        assert s.connection_lost() == []

    @protocols
    def test_clean_session_forgets_incoming_qos2_ids(self, protocol):
        s, b = connected(protocol)
        b.send(publish_packet("q", b"m", 2, 9))
        s.connection_lost()
        b.read()
        b.connect(1.0, 0)
        assert len(b.send(publish_packet("q", b"m", 2, 9))) == 1

    @protocols
    def test_clean_session_publish_while_connecting_is_queued(self, protocol):
        s = Session(CLIENT_ID, protocol)
        b = Broker(s)
        s.connect(0.0, 0)
        b.read()
        rec = s.publish("t", b"early", 1)
        assert b.read() == [] and rec.packet_id == 0
        b.send(ConnAck(False, 0))
        pkt = b.read_one(Publish)
        assert pkt.payload == b"early" and pkt.packet_id == rec.packet_id != 0

    @protocols
    def test_fail_all(self, protocol):
        s, b = connected(protocol, clean_session=False, max_inflight=1)
        recs = [s.publish("t", b"x", 1) for _ in range(3)]
        failed = s.fail_all("client closed")
        assert failed == recs  # inflight first, then the queue, in order
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

    def removed(self, packet_id):
        self.log.append(("removed", packet_id))

    def incoming_changed(self, packet_id, present):
        self.log.append(("incoming", packet_id, present))


class TestDurableStoreHooks:
    @protocols
    def test_every_change_is_mirrored(self, protocol):
        store = RecordingStore()
        s, b = connected(protocol, clean_session=False, store=store, max_inflight=1)
        q1 = s.publish("t", b"1", 1)
        q2 = s.publish("t", b"2", 2)  # queued: not in flight yet
        assert store.log == [("saved", q1.packet_id, WAIT_PUBACK)]
        b.puback(q1.packet_id)  # completes q1, sends q2
        b.pubrec(q2.packet_id)
        b.pubcomp(q2.packet_id)
        b.send(publish_packet("in", b"x", 2, 40))
        b.pubrel(40)
        assert store.log[1:] == [
            ("removed", q1.packet_id), ("saved", q2.packet_id, WAIT_PUBREC),
            ("saved", q2.packet_id, WAIT_PUBCOMP), ("removed", q2.packet_id),
            ("incoming", 40, True), ("incoming", 40, False)]
        assert s.store is store and not store.outgoing and not store.incoming

    @v3_protocols
    def test_timeout_failure_is_mirrored(self, protocol):
        store = RecordingStore()
        s, b = connected(protocol, store=store, ack_timeout=1.0, max_retries=0)
        rec = s.publish("t", b"1", 1, now=0.0)
        assert s.tick(1.0) == [rec]
        assert store.log[-1] == ("removed", rec.packet_id)

    @protocols
    def test_failing_everything_is_mirrored(self, protocol):
        store = RecordingStore()
        s, b = connected(protocol, store=store)
        recs = [s.publish("t", b"1", 1) for _ in range(2)]
        assert len(s.connection_lost()) == 2
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
        assert s.tick(4.9) == [] and b.read() == []
        for attempt, now in enumerate((5.0, 10.0), start=1):
            assert s.tick(now) == []
            pkt = b.read_one(Publish)
            assert (pkt.dup, pkt.packet_id, pkt.payload) == (True, rec.packet_id, b"x")
            assert rec.attempts == attempt and rec.state == WAIT_PUBACK
            assert s.next_deadline() == now + 5.0
        assert s.tick(15.0) == [rec]
        assert rec.state == FAILED and "not acknowledged" in rec.error
        assert b.read() == [] and s.inflight_count == 0
        assert b.puback(rec.packet_id) == []  # a late PUBACK is an orphan now

    @v3_protocols
    def test_v3_ack_in_time_cancels_the_retry(self, protocol):
        s, b = connected(protocol, ack_timeout=5.0, max_retries=2)
        rec = s.publish("t", b"x", 1, now=0.0)
        b.read()
        b.puback(rec.packet_id, now=1.0)
        assert s.tick(5.0) == [] and b.read() == []
        assert rec.ok and rec.attempts == 0
        assert s.tick(100.0) == [] and s.next_deadline() is None

    @v3_protocols
    def test_v3_retry_of_a_qos2_past_pubrec_resends_pubrel(self, protocol):
        s, b = connected(protocol, ack_timeout=5.0, max_retries=1)
        rec = s.publish("t", b"x", 2, now=0.0)
        b.read()
        b.pubrec(rec.packet_id, now=1.0)
        b.read()
        assert s.tick(5.0) == []
        assert b.read_one(PubRel).packet_id == rec.packet_id
        assert s.tick(10.0) == [rec] and rec.state == FAILED

    @v3_protocols
    def test_v3_timeout_failure_frees_the_window(self, protocol):
        s, b = connected(protocol, ack_timeout=5.0, max_retries=0, max_inflight=1)
        r1 = s.publish("t", b"1", 1, now=0.0)
        r2 = s.publish("t", b"2", 1, now=0.0)
        b.read()
        assert s.tick(5.0) == [r1] and r1.error
        pkt = b.read_one(Publish)
        assert (pkt.payload, pkt.dup, pkt.packet_id) == (b"2", False, r2.packet_id)
        assert s.next_deadline() == 10.0  # r2's timer starts when it is sent

    def test_v5_never_resends_on_a_live_connection(self):
        s, b = connected(5, ack_timeout=5.0, max_retries=3)
        r1 = s.publish("t", b"x", 1, now=0.0)
        r2 = s.publish("t", b"y", 2, now=2.0)
        b.read()
        assert s.tick(4.9) == []
        assert s.tick(5.0) == [r1]
        assert r1.state == FAILED and "not acknowledged" in r1.error
        assert b.read() == []  # no DUP re-send
        assert s.tick(7.0) == [r2] and b.read() == []
        assert s.inflight_count == 0

    @v3_protocols
    def test_persistent_reconnect_does_not_stall_other_timers(self, protocol):
        """After a reconnect the restored records get fresh timers; their old timer entries
        must not hold back the timer of a publish made after the reconnect."""
        s, b = connected(protocol, clean_session=False, ack_timeout=10.0, max_retries=1)
        a = s.publish("t", b"a", 1, now=0.0)
        s.connection_lost()
        b.connect(2.0, 0, session_present=True)
        assert [(p.payload, p.dup) for p in b.read()] == [(b"a", True)]
        late = s.publish("t", b"b", 1, now=5.0)
        b.read()
        s.tick(12.0)
        assert [(p.payload, p.dup) for p in b.read()] == [(b"a", True)]
        s.tick(15.0)
        assert [(p.payload, p.dup) for p in b.read()] == [(b"b", True)]
        assert late.attempts == 1 and a.attempts == 1
        assert s.tick(22.0) == [a]
        assert s.tick(25.0) == [late]

    @v3_protocols
    def test_persistent_reconnect_restarts_the_retry_budget(self, protocol):
        s, b = connected(protocol, clean_session=False, ack_timeout=5.0, max_retries=1)
        rec = s.publish("t", b"x", 1, now=0.0)
        s.tick(5.0)
        assert rec.attempts == 1
        s.connection_lost()
        assert s.tick(100.0) == []  # no timers while disconnected
        b.connect(101.0, 0, session_present=True)
        b.read()
        assert rec.attempts == 0
        assert s.tick(106.0) == [] and b.read_one(Publish).dup
        assert s.tick(111.0) == [rec]


# ================================================================================ keep-alive

class TestKeepAlive:
    @protocols
    def test_pingreq_after_idle_and_pingresp_clears_it(self, protocol):
        s, b = connected(protocol, keepalive=10)
        assert s.next_deadline() == 10.0
        assert s.tick(9.9) == [] and b.raw() == b""
        assert s.tick(10.0) == []
        assert b.raw() == PINGREQ
        s.sent(10.0)  # the loop wrote it
        assert s.next_deadline() == 20.0
        assert s.tick(15.0) == [] and b.raw() == b""  # one ping at a time
        assert b.send(PingResp(), now=12.0) == []
        assert s.ping_sent_at is None
        assert s.tick(19.9) == [] and b.raw() == b""
        assert s.tick(20.0) == [] and b.raw() == PINGREQ

    @protocols
    def test_no_pingresp_disconnects(self, protocol):
        s, b = connected(protocol, keepalive=10)
        s.tick(10.0)
        assert b.raw() == PINGREQ
        s.sent(10.0)
        assert s.tick(19.9) == []
        events = s.tick(20.0)
        assert names(events) == ["Disconnected"]
        assert events[0].reason_code == 0x8D and "PINGRESP" in events[0].reason
        assert s.state == DISCONNECTED and s.next_deadline() is None
        assert s.tick(100.0) == [] and b.raw() == b""

    @protocols
    def test_traffic_postpones_the_ping(self, protocol):
        s, b = connected(protocol, keepalive=10)
        s.publish("t", b"x", 0)
        s.sent(6.0)
        b.raw()
        assert s.next_deadline() == 16.0
        assert s.tick(10.0) == [] and b.raw() == b""
        assert s.tick(16.0) == [] and b.raw() == PINGREQ

    @protocols
    def test_keepalive_zero_never_pings(self, protocol):
        s, b = connected(protocol, keepalive=0)
        assert s.next_deadline() is None
        assert s.tick(1e6) == [] and b.raw() == b""

    @protocols
    def test_no_timers_before_connack(self, protocol):
        s = Session(CLIENT_ID, protocol)
        s.connect(0.0, 10)
        assert s.next_deadline() is None and s.tick(100.0) == []

    @protocols
    def test_connect_carries_keepalive_and_credentials(self, protocol):
        s = Session(CLIENT_ID, protocol)
        b = Broker(s)
        conn, events = b.connect(0.0, 30, username="u", password="p")
        assert (conn.keepalive, conn.username, conn.password) == (30, "u", b"p")
        assert conn.protocol == protocol and conn.clean_session is True
        assert names(events) == ["Connected"] and s.keepalive == 30


# ================================================================================ MQTT 5

class TestMqtt5Connack:
    def test_assigned_client_identifier(self):
        s, _ = connected(5, client_id="", connack={"assigned_client_identifier": "auto-17"})
        assert s.client_id == "auto-17"

    def test_server_keep_alive_overrides(self):
        s = Session(CLIENT_ID, 5)
        b = Broker(s)
        b.connect(0.0, 60, properties={"server_keep_alive": 5})
        assert s.keepalive == 5
        assert s.next_deadline() == 5.0
        s.tick(5.0)
        assert b.raw() == PINGREQ

    def test_maximum_packet_size_raises_at_the_call(self):
        s, b = connected(5, connack={"maximum_packet_size": 64})
        assert not s.plain_qos0
        for qos in (0, 1, 2):
            with pytest.raises(PayloadTooLarge):
                s.publish("t", b"x" * 100, qos)
        assert b.read() == [] and s.inflight_count == 0 and s.queued_count == 0
        assert s.publish("t", b"x" * 10, 1).packet_id == 1  # no id was burnt
        assert s.publish("t", b"small", 0) is None
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
    def test_alias_resolved(self):
        s, b = connected(5)
        e1 = b.send(publish_packet("long/topic", b"1", properties={"topic_alias": 3}))
        e2 = b.send(publish_packet("", b"2", properties={"topic_alias": 3}))
        e3 = b.send(publish_packet("", b"3", 1, 4, properties={"topic_alias": 3}))
        assert [(e.topic, e.payload) for e in e1 + e2 + e3] == [
            ("long/topic", b"1"), ("long/topic", b"2"), ("long/topic", b"3")]
        assert b.read_one(PubAck).packet_id == 4
        b.send(publish_packet("other", b"4", properties={"topic_alias": 3}))  # re-mapped
        assert b.send(publish_packet("", b"5", properties={"topic_alias": 3}))[0].topic == "other"

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
        assert conn.properties is None  # nothing advertised: the broker may not alias
        with pytest.raises(ProtocolError):
            b.send(publish_packet("t", b"x", properties={"topic_alias": 1}))

    def test_aliases_reset_on_reconnect(self):
        s, b = connected(5)
        b.send(publish_packet("t", b"x", properties={"topic_alias": 1}))
        s.connection_lost()
        b.connect(1.0, 0)
        with pytest.raises(ProtocolError):
            b.send(publish_packet("", b"x", properties={"topic_alias": 1}))


class TestTopicAliasesOut:
    def wire(self, b):
        return [(p.topic, (p.properties or {}).get("topic_alias")) for p in publishes(b.read())]

    @pytest.mark.parametrize("qos", [0, 1, 2])
    def test_first_use_sets_then_alias_only_then_plain_beyond_max(self, qos):
        s, b = connected(5, connack={"topic_alias_maximum": 2})
        for topic in ("t/1", "t/1", "t/2", "t/3", "t/2", "t/3", "t/1"):
            s.publish(topic, b"x", qos)
        assert self.wire(b) == [("t/1", 1), ("", 1), ("t/2", 2), ("t/3", None), ("", 2),
                                ("t/3", None), ("", 1)]

    def test_aliases_reset_on_reconnect_and_dup_resend_uses_the_topic(self):
        s, b = connected(5, clean_session=False, connack={"topic_alias_maximum": 2})
        s.publish("t/1", b"a", 0)
        rec = s.publish("t/1", b"b", 1)
        assert self.wire(b) == [("t/1", 1), ("", 1)]
        s.connection_lost()
        b.connect(1.0, 0, session_present=True, properties={"topic_alias_maximum": 2})
        resent = b.read_one(Publish)
        assert (resent.topic, resent.dup, resent.properties) == ("t/1", True, None)
        s.publish("t/1", b"c", 0)
        assert self.wire(b) == [("t/1", 1)]  # the alias is set afresh
        b.puback(rec.packet_id)
        assert rec.ok

    def test_no_aliases_when_the_broker_allows_none_or_we_opt_out(self):
        s, b = connected(5)
        assert s.plain_qos0
        s.publish("t", b"x", 0)
        s.publish("t", b"x", 1)
        assert self.wire(b) == [("t", None), ("t", None)]
        s, b = connected(5, outgoing_aliases=False, connack={"topic_alias_maximum": 5})
        s.publish("t", b"x", 0)
        s.publish("t", b"x", 0)
        assert self.wire(b) == [("t", None), ("t", None)]

    def test_callers_own_alias_is_left_alone(self):
        s, b = connected(5, connack={"topic_alias_maximum": 5})
        s.publish("t", b"x", 0, properties={"topic_alias": 5})
        s.publish("t", b"x", 1, properties={"topic_alias": 5})
        assert self.wire(b) == [("t", 5), ("t", 5)]

    @pytest.mark.parametrize("qos", [0, 1, 2])
    def test_alias_that_would_break_the_size_limit_is_not_used(self, qos):
        """The Topic Alias property adds 3 bytes: a publish that fits the broker's maximum packet
        size plainly (20 bytes here, limit 21) is sent plainly, not refused or left stuck."""
        s, b = connected(5, connack={"topic_alias_maximum": 2, "maximum_packet_size": 21})
        rec = s.publish("t/1", b"x" * (10 if qos else 12), qos)  # 20 bytes, 23 with an alias
        assert self.wire(b) == [("t/1", None)]
        assert s.inflight_count == (1 if qos else 0)
        s.publish("t/1", b"x" * 5, qos)  # small enough to carry the alias: claims it now
        s.publish("t/1", b"x" * 5, qos)
        assert self.wire(b) == [("t/1", 1), ("", 1)]
        if qos == 1:
            assert b.puback(rec.packet_id) == [rec] and rec.ok

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
        assert self.wire(b) == [("t/1", 1), ("", 1)]


# ================================================================================ refusal, errors

class TestRefusedAndErrors:
    @v3_protocols
    def test_v3_refused(self, protocol):
        s = Session(CLIENT_ID, protocol)
        b = Broker(s)
        _, events = b.connect(0.0, 0, reason_code=5)
        assert names(events) == ["ConnectionRefused"]
        ev = events[0]
        assert isinstance(ev, ConnectionRefused)
        assert ev.reason_code == 5 and ev.reason == "not authorized"
        assert s.state == DISCONNECTED
        with pytest.raises(NotConnected):
            s.publish("t", b"x", 1)

    def test_v5_refused(self):
        s = Session(CLIENT_ID, 5)
        b = Broker(s)
        _, events = b.connect(0.0, 0, reason_code=0x86,
                              properties={"reason_string": "who are you"})
        ev = events[0]
        assert isinstance(ev, ConnectionRefused)
        assert ev.reason_code == 0x86 and "user name or password" in ev.reason
        assert ev.properties == {"reason_string": "who are you"}
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
        s.connect(0.0, 0)
        b.read()
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
        assert b.raw() == b"\xe0\x00" and s.state == DISCONNECTED
        s.disconnect()
        assert b.raw() == b""  # once

    def test_v5_disconnect_with_reason(self):
        s, b = connected(5)
        s.disconnect(0x04)  # disconnect with will message
        pkt = b.read_one(Disconnect)
        assert pkt.reason_code == 0x04

    def test_v5_broker_disconnect_event(self):
        s, b = connected(5)
        events = b.send(Disconnect(0x8B, {"reason_string": "bye"}))
        assert names(events) == ["Disconnected"]
        ev = events[0]
        assert isinstance(ev, Disconnected)
        assert ev.reason_code == 0x8B and ev.reason and ev.properties == {"reason_string": "bye"}
        assert s.state == DISCONNECTED

    def test_v5_auth_request(self):
        s, b = connected(5)
        events = b.send(Auth(0x18, {"authentication_method": "SCRAM"}))
        assert names(events) == ["AuthRequest"]
        assert isinstance(events[0], AuthRequest) and events[0].reason_code == 0x18
        s.auth(0x18, {"authentication_method": "SCRAM", "authentication_data": b"x"})
        pkt = b.read_one(Auth)
        assert pkt.properties["authentication_data"] == b"x"

    @protocols
    def test_connected_event_and_state(self, protocol):
        s = Session(CLIENT_ID, protocol)
        b = Broker(s)
        s.connect(0.0, 0)
        assert s.state != CONNECTED
        b.read()
        events = b.send(ConnAck(False, 0))
        assert isinstance(events[0], Connected) and events[0].session_present is False
        assert s.state == CONNECTED and s.plain_qos0
