"""MQTT 5 flow control across reconnects (issue 9): Receive Maximum changes and quota exceeded.

MQTT 5 section 4.9: the client MUST NOT have more QoS 1 and QoS 2 PUBLISH packets unacknowledged
than the broker's Receive Maximum [MQTT-4.9.0-2]; a PUBACK, PUBCOMP, or PUBREC with a reason code
of 0x80 or more frees the slot. A restarted broker may announce a smaller Receive Maximum than the
one the messages went out under; re-sending all of them at once then overruns its quota and it
answers 0x97 (mosquitto does, per message, while its incoming quota for the client is full) for
messages that were never refused before. The session re-sends, on a new connection, only as many as
the new window holds (PUBRELs first: they occupy slots already), and the rest, with their packet
ids and DUP set, as slots free up.

A PUBACK / PUBREC of 0x97 itself fails that message's handle with the reason code (the broker
refused that message; an automatic retry could loop on an administrative quota forever) and frees
its slot at once, so the next message goes out without waiting for anything.

Sans-IO: the session against the in-memory broker side of ``session_helpers``.
"""
from __future__ import annotations

from mqttfast.codec import Publish, PubRel
from mqttfast.constants import PacketType
from mqttfast.events import PublishState

from session_helpers import connected

QUOTA_EXCEEDED = 0x97


def publishes(packets):
    return [p for p in packets if isinstance(p, Publish)]


def test_a_reconnect_resends_no_more_than_the_new_receive_maximum():
    s, b = connected(5, clean_session=False)  # no Receive Maximum announced: 65535
    recs = [s.publish("t", b"%d" % i, 1) for i in range(50)]
    assert len(publishes(b.read())) == 50
    b.lost()
    b.connect(1.0, session_present=True, properties={"receive_maximum": 5})
    resent = publishes(b.read())
    assert [p.payload for p in resent] == [b"0", b"1", b"2", b"3", b"4"]
    assert all(p.dup for p in resent)
    # Each acknowledgement frees one slot: the next unacknowledged one goes out, with its id.
    b.puback(recs[0].packet_id)
    (nxt,) = publishes(b.read())
    assert (nxt.payload, nxt.packet_id, nxt.dup) == (b"5", recs[5].packet_id, True)
    # A new publish waits behind the ones still owed a re-send.
    late = s.publish("t", b"late", 1)
    assert publishes(b.read()) == []
    for rec in recs[1:]:
        b.puback(rec.packet_id)
        for p in publishes(b.read()):
            assert p.packet_id != rec.packet_id
    assert all(r.state == PublishState.DONE for r in recs)
    (last,) = publishes(b.read()) or [None]
    assert last is None or last.payload == b"late"
    assert s.inflight_count == 1 and late.state == PublishState.WAIT_PUBACK


def test_a_reconnect_counts_pubrels_in_the_new_window_for_qos2():
    s, b = connected(5, clean_session=False)
    recs = [s.publish("t", b"%d" % i, 2) for i in range(10)]
    assert len(publishes(b.read())) == 10
    b.pubrec(*(r.packet_id for r in recs[:3]))  # three past PUBREC: they hold broker slots
    b.read()
    b.lost()
    b.connect(1.0, session_present=True, properties={"receive_maximum": 4})
    out = b.read()
    assert [p.packet_id for p in out if isinstance(p, PubRel)] == [r.packet_id for r in recs[:3]]
    assert [p.payload for p in publishes(out)] == [b"3"]
    b.pubcomp(recs[0].packet_id)
    assert [p.payload for p in publishes(b.read())] == [b"4"]
    for rec in recs[1:3]:
        b.pubcomp(rec.packet_id)
    for rec in recs[3:]:
        b.pubrec(rec.packet_id)
        b.pubcomp(rec.packet_id)
        b.read()
    assert all(r.state == PublishState.DONE for r in recs)
    assert s.inflight_count == 0


def test_quota_exceeded_fails_the_message_and_frees_its_slot_at_once():
    s, b = connected(5, connack={"receive_maximum": 2})
    recs = [s.publish("t", b"%d" % i, 1) for i in range(4)]
    assert [p.payload for p in b.read()] == [b"0", b"1"]
    result = b.puback(recs[0].packet_id, reason_code=QUOTA_EXCEEDED)
    assert result.completed == [recs[0]]
    assert recs[0].state == PublishState.FAILED and recs[0].reason_code == QUOTA_EXCEEDED
    assert [p.payload for p in b.read()] == [b"2"]  # the freed slot is used at once
    rec2 = [s.publish("t", b"q2", 2)][0]
    b.puback(recs[1].packet_id)
    b.puback(recs[2].packet_id)
    b.read()
    b.ack(PacketType.PUBREC, rec2.packet_id, reason_code=QUOTA_EXCEEDED)
    assert rec2.state == PublishState.FAILED and rec2.reason_code == QUOTA_EXCEEDED
    assert s.inflight_count == 1  # recs[3] only: the refused QoS 2 holds no slot
