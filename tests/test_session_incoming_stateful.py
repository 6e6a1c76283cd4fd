"""Hypothesis stateful tests of the incoming side of the sans-IO Session (broker -> client).

A model broker written here sends QoS 0/1/2 PUBLISHes with unique payloads under packet ids it
manages itself (an id it still holds unacknowledged is never given to another message; a freed id
is reused soon, to catch a session that confuses the two), re-sends them with DUP set (on a live
connection only on MQTT 3.1.1: MQTT 5 forbids it [MQTT-4.4.0-1]), sends PUBREL once the session's
PUBREC reached it (and repeats it), sends PUBREL for ids it does not hold, reads what the session
wrote only now and then, drops the connection (losing what it did not read) and reconnects with
Session Present 1, re-sending its unacknowledged PUBLISHes with DUP and its PUBRELs, in order
[MQTT-4.4.0-1], or 0, forgetting its state for the client. Protocols 4 and 5, clean_session=False,
with and without ``manual_ack``; with it the application acknowledges delivered messages in any
order, with the epoch each was delivered in (and so with stale epochs too). Throughout (MQTT
3.1.1 / 5.0 sections 4.3 and 4.6):

- QoS 2 is delivered at most once, across DUP re-sends and reconnects with Session Present 1;
  QoS 0 and 1 each time they arrive (a QoS 1 re-send is a delivery again: at least once);
- the session answers every PUBLISH and PUBREL with the packet its QoS calls for, under the
  packet's id: PUBACK / PUBREC (one PUBREC per QoS 2 PUBLISH, re-sends included), PUBCOMP for
  every PUBREL (for an unknown id too), in the order they arrived [MQTT-4.6.0-2/3];
- the broker sees a message acknowledged (PUBACK, or PUBREC: ownership taken) only once it was
  delivered; a PUBLISH reusing an id after PUBCOMP is a new message and is delivered, and so is
  one reusing any id after Session Present 0 (the session forgot its state too);
- with ``manual_ack`` nothing is acknowledged before the application's ``ack()`` for that
  message on that connection: ``ack`` returns False (and sends nothing) for a stale epoch, while
  disconnected, or for an id not awaiting an acknowledgement; the acknowledgements go out in the
  order the messages arrived (the session's documented promise, MQTT-4.6.0-2), which may make an
  early ``ack`` wait for earlier messages. The one PUBREC sent without the application's ``ack``
  is the one for a QoS 2 message delivered on an earlier connection (its ``ack`` is refused as
  stale) when the broker re-sends it: it is not delivered again, so it is acknowledged then;
- at the end (``teardown``), once the broker re-sends until acknowledged and the application
  acknowledges everything, every QoS 1/2 message the broker still held was delivered (QoS 2
  exactly once) and completed (PUBACK / PUBCOMP seen by the broker).

The session runs on the codec ``mqttfast.codec`` loaded (``MQTTFAST_PURE=1`` for the pure twin).

Not modelled: with ``manual_ack``, a re-send on a live connection (MQTT 3.1.1 only). A re-send
that crosses the application's acknowledgement is a new publication owed its own PUBACK
[MQTT-4.3.2-2]; a broker that already has the first PUBACK and gives the id to a new message
takes that second PUBACK for the new message's, and the session, keeping one pending
acknowledgement per id, lets the application's ``ack`` of either send it. Which answer is right
there is open (this machine found it); live re-sends are modelled without ``manual_ack``, and
re-sends after a reconnect with it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Set, Tuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from session_helpers import Broker, Result

from mqttfast.codec import PubRel, Publish
from mqttfast.constants import MQTT_5, PacketType
from mqttfast.events import Connected
from mqttfast.session import CONNECTED, Session

PUBACK, PUBREC, PUBREL, PUBCOMP = (PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL,
                                   PacketType.PUBCOMP)
TOPIC = "in/t"
IDS = range(1, 7)  # few ids: a freed one is soon given to another message


@dataclass
class Held:
    """A QoS 1/2 message the broker sent and holds unacknowledged."""

    payload: bytes
    qos: int
    released: bool = False  # QoS 2: PUBREC received, PUBREL owed until PUBCOMP


@dataclass
class Delivery:
    """A QoS 1/2 message as the application got it (manual_ack: it is to acknowledge it)."""

    packet_id: int
    epoch: int
    payload: bytes


class IncomingMachine(RuleBasedStateMachine):
    s: Session
    b: Broker

    @initialize(protocol=st.sampled_from([4, 5]), manual=st.booleans())
    def start(self, protocol: int, manual: bool) -> None:
        self.s = Session("incoming", protocol, clean_session=False, keepalive=0,
                         manual_ack=manual)
        self.b = Broker(self.s)
        self.protocol = protocol
        self.manual = manual
        self.count = 0
        # The broker's side.
        self.held: Dict[int, Held] = {}  # packet id -> message, in the order first sent
        self.sent: Dict[bytes, int] = {}  # payload -> QoS of every QoS 1/2 message sent
        self.forgotten: Set[bytes] = set()  # dropped by the broker on Session Present 0
        self.completed: Set[bytes] = set()  # PUBACK / PUBCOMP reached the broker
        self.released_here: Set[int] = set()  # PUBREL sent on this connection (MQTT 5: once)
        # What the session must have written since the broker last read: (type, packet id).
        self.expected: List[Tuple[int, int]] = []
        # The application's side.
        self.delivered: Counter = Counter()  # payload -> times delivered
        self.first_epoch: Dict[bytes, int] = {}  # payload -> epoch it was first delivered in
        self.inbox: List[Delivery] = []  # manual_ack: delivered, not yet acknowledged
        self.acked_here: Set[bytes] = set()  # manual_ack: ack() True on this connection
        self.acked_ever: Set[bytes] = set()
        # What the session is entitled to know (a spec-level model, not a copy of its state):
        # QoS 2 ids whose PUBLISH it received and whose PUBREL it did not, while the session
        # lasts; and, with manual_ack, the acknowledgements owed on this connection, in arrival
        # order: packet id -> [PUBACK or PUBREC, the application called ack()].
        self.client_has: Set[int] = set()
        self.due: Dict[int, List] = {}
        self.connect(session_present=False)

    # ------------------------------------------------------------------ helpers

    @property
    def up(self) -> bool:
        return self.s.state is CONNECTED

    def connect(self, session_present: bool) -> None:
        if not session_present:
            # The broker lost the session: its unacknowledged messages are gone, and the
            # session must forget the QoS 2 ids it holds for it (a reused id is a new message).
            self.forgotten.update(m.payload for m in self.held.values())
            self.held.clear()
            self.client_has.clear()
        _, result = self.b.connect(session_present=session_present)
        assert result == Result(events=[Connected(session_present, 0, None)]), result
        assert self.up
        self.expected = []
        self.due = {}
        self.released_here = set()
        self.acked_here = set()
        if session_present:
            # [MQTT-4.4.0-1]: the broker re-sends what is unacknowledged, in order: PUBLISH
            # with DUP, or PUBREL for those past PUBREC.
            for pid, msg in list(self.held.items()):
                if msg.released:
                    self.pubrel_packet(pid)
                else:
                    self.feed(Publish(TOPIC, msg.payload, msg.qos, pid, False, True, None))

    def feed(self, pkt: Publish) -> None:
        """The broker sends one PUBLISH; the model says what the session must do with it."""
        pid, qos, payload = pkt.packet_id, pkt.qos, pkt.payload
        deliver = True
        if qos == 1:
            if not self.manual:
                self.expected.append((PUBACK, pid))
            elif pid not in self.due:  # a re-send before the ack waits for the same ack
                self.due[pid] = [PUBACK, False]
        elif qos == 2:
            deliver = pid not in self.client_has  # else a re-send of a message it has
            if deliver:
                self.client_has.add(pid)
                if self.manual:
                    self.due[pid] = [PUBREC, False]
                else:
                    self.expected.append((PUBREC, pid))
            elif not (self.manual and pid in self.due):
                self.expected.append((PUBREC, pid))  # every re-send is answered
        result = self.b.send(pkt)
        assert not result.events and not result.completed, result
        got = [m.payload for m in result.messages]
        if qos == 2 and payload in got:
            assert not self.delivered[payload], \
                f"QoS 2 {payload!r} (id {pid}, dup={pkt.dup}) delivered a second time"
        assert got == ([payload] if deliver else []), \
            f"{pkt!r}: delivered {got}, expected {'it' if deliver else 'nothing'}"
        if deliver:
            (msg,) = result.messages
            assert (msg.topic, msg.qos, msg.packet_id) == (TOPIC, qos, pid), msg
            self.delivered[payload] += 1
            self.first_epoch.setdefault(payload, self.s.epoch)
            if qos and self.manual:
                self.inbox.append(Delivery(pid, self.s.epoch, payload))

    def pubrel_packet(self, pid: int) -> None:
        self.released_here.add(pid)
        self.client_has.discard(pid)
        self.expected.append((PUBCOMP, pid))  # always answered, known id or not
        result = self.b.send(PubRel(pid))
        assert result == Result(), result

    def release(self) -> None:
        """manual_ack: the acknowledgements now due go out, in the order the messages came."""
        while self.due:
            pid, (kind, ready) = next(iter(self.due.items()))
            if not ready:
                break
            del self.due[pid]
            self.expected.append((kind, pid))

    # ------------------------------------------------------------------ rules: broker

    @precondition(lambda self: self.up)
    @rule(qos=st.sampled_from([0, 1, 1, 2, 2, 2]), data=st.data())
    def publish(self, qos: int, data: st.DataObject) -> None:
        self.count += 1
        payload = b"m%d" % self.count
        pid = 0
        if qos:
            free = [i for i in IDS if i not in self.held]
            if not free:
                return
            # Mostly the lowest free id (as a broker that recycles ids), else any free one.
            pid = data.draw(st.sampled_from([free[0]] * 4 + free))
            self.held[pid] = Held(payload, qos)
            self.sent[payload] = qos
        self.feed(Publish(TOPIC, payload, qos, pid, False, False, None))

    @precondition(lambda self: self.up and len(self.held) < len(IDS))
    @rule(qos=st.integers(1, 2))
    def publish_lost(self, qos: int) -> None:
        """The broker sends a new message, and the connection drops before it arrives: the
        broker holds it, to re-send with DUP if the session is kept."""
        self.count += 1
        payload = b"m%d" % self.count
        pid = min(i for i in IDS if i not in self.held)
        self.held[pid] = Held(payload, qos)
        self.sent[payload] = qos
        self.drop()

    @precondition(lambda self: self.up and self.protocol != MQTT_5 and not self.manual and any(
        not m.released for m in self.held.values()))
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        """MQTT 3.1.1 only: a re-send with DUP on a live connection (MQTT 5 forbids it; with
        ``manual_ack`` not modelled, see the module's docstring)."""
        pid = data.draw(st.sampled_from(sorted(k for k, m in self.held.items() if not m.released)))
        msg = self.held[pid]
        self.feed(Publish(TOPIC, msg.payload, msg.qos, pid, False, True, None))

    @precondition(lambda self: self.up and any(
        m.released and (self.protocol != MQTT_5 or pid not in self.released_here)
        for pid, m in self.held.items()))
    @rule(data=st.data())
    def pubrel(self, data: st.DataObject) -> None:
        """PUBREL for a QoS 2 message past PUBREC (again, on MQTT 3.1.1)."""
        self.pubrel_packet(data.draw(st.sampled_from(sorted(
            pid for pid, m in self.held.items()
            if m.released and (self.protocol != MQTT_5 or pid not in self.released_here)))))

    @precondition(lambda self: self.up)
    @rule(pid=st.sampled_from(IDS))
    def unknown_pubrel(self, pid: int) -> None:
        """PUBREL for an id the broker does not hold (its PUBCOMP was lost, say): PUBCOMP."""
        if pid not in self.held:
            self.pubrel_packet(pid)

    @precondition(lambda self: self.up)
    @rule()
    def read(self) -> None:
        """The broker reads what the session wrote, and acts on it."""
        packets = self.b.read()
        got = [(p.type, p.packet_id) for p in packets]
        assert got == self.expected, f"the session wrote {got}, expected {self.expected}"
        self.expected = []
        for p in packets:
            assert p.reason_code == 0, p
            msg = self.held.get(p.packet_id)
            if msg is None:
                continue  # a second answer to a repeated packet
            if p.type == PUBACK and msg.qos == 1:
                assert self.delivered[msg.payload], f"{msg!r} acknowledged, never delivered"
                if self.manual:
                    assert msg.payload in self.acked_here, \
                        f"PUBACK for {msg!r} before the application acknowledged it"
                del self.held[p.packet_id]
                self.completed.add(msg.payload)
            elif p.type == PUBREC and msg.qos == 2 and not msg.released:
                assert self.delivered[msg.payload], f"{msg!r} taken over, never delivered"
                if self.manual:
                    # Acknowledged by the application, or delivered on an earlier connection
                    # (its ack refused as stale) and re-sent: not delivered again, answered.
                    assert msg.payload in self.acked_ever or \
                        self.first_epoch[msg.payload] < self.s.epoch, \
                        f"PUBREC for {msg!r} before the application acknowledged it"
                msg.released = True
            elif p.type == PUBCOMP and msg.qos == 2 and msg.released:
                del self.held[p.packet_id]
                self.completed.add(msg.payload)

    @precondition(lambda self: self.up)
    @rule()
    def drop(self) -> None:
        """The connection is gone; what the session wrote and the broker did not read is lost."""
        assert self.b.lost() == Result()
        self.expected = []
        self.due = {}

    @precondition(lambda self: not self.up)
    @rule(session_present=st.booleans())
    def reconnect(self, session_present: bool) -> None:
        self.connect(session_present)

    # ------------------------------------------------------------------ rules: application

    @precondition(lambda self: self.manual and self.inbox)
    @rule(data=st.data())
    def app_ack(self, data: st.DataObject) -> None:
        """The application is done with a message it got (any of them, in any order), and
        acknowledges it with the epoch it came in."""
        d = self.inbox.pop(data.draw(st.integers(0, len(self.inbox) - 1)))
        self._ack(d)

    def _ack(self, d: Delivery) -> None:
        live = self.up and d.epoch == self.s.epoch and d.packet_id in self.due
        assert self.s.ack(d.packet_id, d.epoch) is live, \
            f"ack({d.packet_id}, epoch {d.epoch}) (now {self.s.epoch}, up={self.up}) " \
            f"should be {live}"
        if live:
            self.due[d.packet_id][1] = True
            self.acked_here.add(d.payload)
            self.acked_ever.add(d.payload)
            self.release()

    @precondition(lambda self: self.manual)
    @rule(pid=st.sampled_from(IDS), back=st.integers(0, 2))
    def stray_ack(self, pid: int, back: int) -> None:
        """ack() for an id nothing awaits, or with a stale epoch: refused, nothing sent."""
        epoch = self.s.epoch - back
        if epoch == self.s.epoch and pid in self.due:
            return
        assert self.s.ack(pid, epoch) is False, f"ack({pid}, epoch {epoch}) accepted"
        if self.up:
            self.read()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def qos2_at_most_once(self) -> None:
        twice = [p for p, n in self.delivered.items() if n > 1 and self.sent.get(p) == 2]
        assert not twice, f"QoS 2 delivered more than once: {twice}"

    def teardown(self) -> None:
        """The broker re-sends until acknowledged, the application acknowledges everything:
        every QoS 1/2 message the broker kept is delivered (QoS 2 once) and completed."""
        if not hasattr(self, "s"):
            return
        for _ in range(3):
            if not self.held:
                break
            if self.up:
                self.drop()
            self.connect(session_present=True)  # re-sends everything held
            for d in [d for d in self.inbox if d.epoch == self.s.epoch]:
                self.inbox.remove(d)
                self._ack(d)
            self.read()  # PUBACK done, PUBREC released
            for pid in [pid for pid, m in self.held.items() if m.released]:
                self.pubrel_packet(pid)
            self.read()  # PUBCOMP done
        assert not self.held, f"still unacknowledged: {self.held}"
        for payload, qos in self.sent.items():
            if payload in self.forgotten:
                continue
            assert payload in self.completed, f"{payload!r} (QoS {qos}) never completed"
            n = self.delivered[payload]
            assert n >= 1 if qos == 1 else n == 1, f"{payload!r} (QoS {qos}) delivered {n} times"


IncomingMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_session_incoming_stateful = IncomingMachine.TestCase
