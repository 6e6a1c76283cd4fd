"""Hypothesis stateful tests of the sans-IO Session against a model broker written here.

The machine publishes at QoS 0/1/2, delivers (or not) what the session wrote, acknowledges in any
order (PUBACK, PUBREC, PUBCOMP), repeats acknowledgements, sends orphan ones, drops the connection
(losing whatever was not delivered) and reconnects with Session Present 1 or 0. Throughout:

- no QoS >= 1 message is lost: each is either completed once (DONE, and only after the broker
  acknowledged it) or still held by the session (in flight or queued), and whatever the broker
  holds in flight the session holds too, under the same packet id;
- on a reconnect with Session Present 1 what is in flight is re-sent (PUBREL past PUBREC, and
  PUBLISH with DUP, oldest first, as far as the window goes); with Session Present 0 they are
  sent again as new messages;
- no packet id is used for a second message while the first is in flight (as the broker sees the
  wire), and the session never has more PUBLISHes in flight on a connection than that
  connection's window: on MQTT 5 each reconnect announces a Receive Maximum of 1-5, and a
  broker restart may come back with 1 or 2 while more are in flight, so only as many are re-sent
  as it allows, the rest as slots free up (nor QoS 2 beyond its cap);
- at the end, once the broker reads and acknowledges everything, every message completes and the
  session holds nothing: none is stranded (owed a re-send that never comes).

The session runs on the codec ``mqttfast.codec`` loaded (CI runs the suite on both twins).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from session_helpers import Broker, Result

from mqttfast.constants import MQTT_5, PacketType
from mqttfast.session import (
    CONNECTED,
    DONE,
    WAIT_PUBACK,
    WAIT_PUBCOMP,
    WAIT_PUBREC,
    Outgoing,
    Session,
)

PUBLISH = PacketType.PUBLISH


class SessionMachine(RuleBasedStateMachine):
    s: Session
    b: Broker

    # MQTT 5 twice as often: only there can a reconnect shrink the window.
    @initialize(protocol=st.sampled_from([3, 4, 5, 5]), window=st.integers(1, 6),
                qos2_window=st.integers(1, 3))
    def start(self, protocol: int, window: int, qos2_window: int) -> None:
        self.s = Session("stateful", protocol, clean_session=False, keepalive=0,
                         max_inflight=window, max_inflight_qos2=qos2_window)
        self.b = Broker(self.s)
        self.protocol = protocol
        self.records: List[Outgoing] = []  # every QoS >= 1 publish, in order
        self.completed: Dict[int, Outgoing] = {}  # id(record) -> record
        self.acked: Set[bytes] = set()  # payloads the broker acknowledged (PUBACK / PUBREC)
        # The broker's side of the session: packet id -> (payload, qos) of each message it holds
        # in flight (received, not yet PUBACKed / PUBCOMPed), and the QoS 2 ids it has PUBRECed
        # and then seen PUBREL for.
        self.wire: Dict[int, Tuple[bytes, int]] = {}
        self.pubreced: Set[int] = set()
        self.released: Set[int] = set()
        self.count = 0
        self.on_wire: Set[int] = set()  # ids sent on this connection, not yet completed
        self.biggest_window = 0
        self.connect(session_present=False, receive_maximum=3)

    # ------------------------------------------------------------------ helpers

    def collect(self, result: Result) -> None:
        for record in result.completed:
            assert id(record) not in self.completed, f"{record!r} completed twice"
            self.completed[id(record)] = record
        self.s.take_events()

    def connect(self, session_present: bool, receive_maximum: int) -> None:
        props = {"receive_maximum": receive_maximum} if self.protocol == MQTT_5 else None
        if self.protocol == 3:
            session_present = True  # a 3.1 CONNACK cannot say: the session keeps its state
        if not session_present:
            self.wire.clear()  # the broker has no state for us
            self.pubreced.clear()
            self.released.clear()
        held = dict(self.s.store.outgoing)
        self.on_wire = set()
        _, result = self.b.connect(session_present=session_present, properties=props)
        self.collect(result)
        assert self.s.state is CONNECTED
        self.biggest_window = max(self.biggest_window, self.s.window)
        packets = self.b.read()
        if session_present:
            # What is in flight is sent again, before anything new: PUBREL for each QoS 2
            # message past PUBREC, and PUBLISH with DUP for the others, oldest first, as far as
            # the window goes (the rest as slots free up: ``teardown`` sees them all complete).
            resent = {(p.packet_id, p.type) for p in packets}
            owed = []
            for pid, record in held.items():
                if record.state == WAIT_PUBCOMP:
                    assert (pid, PacketType.PUBREL) in resent, f"no PUBREL for {record!r}"
                else:
                    owed.append((pid, record.payload))
            again = [(p.packet_id, p.payload) for p in packets if p.type == PUBLISH and p.dup]
            assert again == owed[:len(again)], f"re-sent {again}, owed {owed}"
        else:
            for p in packets:
                assert not (p.type == PUBLISH and p.dup), f"a new session got a DUP re-send {p!r}"
        self.receive(packets)

    def receive(self, packets: list) -> None:
        """The broker takes the session's packets into its model."""
        for p in packets:
            if p.type == PUBLISH and p.qos:
                held = self.wire.get(p.packet_id)
                if held is None and p.dup and p.qos == 1 and p.payload in self.acked:
                    # Re-sent while the broker acknowledged the copy it had: it takes this one
                    # for a new message and acknowledges it too, which the session ignores.
                    continue
                self.on_wire.add(p.packet_id)
                if held is not None:
                    assert p.dup and held == (p.payload, p.qos), \
                        f"packet id {p.packet_id} reused for {p!r} while {held!r} is in flight"
                else:
                    self.wire[p.packet_id] = (p.payload, p.qos)
            elif p.type == PacketType.PUBREL:
                if p.packet_id in self.pubreced:
                    self.released.add(p.packet_id)

    def ack(self, kind: int, pid: int, times: int = 1) -> Result:
        result = self.b.ack(kind, *[pid] * times)
        self.collect(result)
        return result

    # ------------------------------------------------------------------ rules

    @rule(qos=st.integers(0, 2))
    def publish(self, qos: int) -> None:
        self.count += 1
        payload = b"m%d" % self.count
        out = self.s.publish("state/t", payload, qos)
        if qos:
            assert isinstance(out, Outgoing) and out.payload == payload
            self.records.append(out)

    @precondition(lambda self: self.s.state is CONNECTED)
    @rule()
    def deliver(self) -> None:
        self.receive(self.b.read())

    @precondition(lambda self: self.s.state is CONNECTED)
    @rule(n=st.integers(2, 6), qos=st.integers(1, 2))
    def burst(self, n: int, qos: int) -> None:
        """Several at once, delivered: a window's worth in flight for a drop to strand."""
        for _ in range(n):
            self.publish(qos)
        self.deliver()

    @precondition(lambda self: self.s.state is CONNECTED and any(
        v[1] == 1 for v in self.wire.values()))
    @rule(data=st.data(), times=st.integers(1, 2))
    def puback(self, data: st.DataObject, times: int) -> None:
        self._puback(data.draw(st.sampled_from(sorted(
            k for k, v in self.wire.items() if v[1] == 1))), times)

    def _puback(self, pid: int, times: int = 1) -> None:
        payload = self.wire.pop(pid)[0]
        self.on_wire.discard(pid)
        self.acked.add(payload)
        result = self.ack(PacketType.PUBACK, pid, times)
        assert [r.payload for r in result.completed if r.qos] == [payload]

    @precondition(lambda self: self.s.state is CONNECTED and any(
        v[1] == 2 for v in self.wire.values()))
    @rule(data=st.data(), times=st.integers(1, 2))
    def pubrec(self, data: st.DataObject, times: int) -> None:
        self._pubrec(data.draw(st.sampled_from(sorted(
            k for k, v in self.wire.items() if v[1] == 2))), times)

    def _pubrec(self, pid: int, times: int = 1) -> None:
        self.acked.add(self.wire[pid][0])
        self.pubreced.add(pid)
        self.ack(PacketType.PUBREC, pid, times)

    @precondition(lambda self: self.s.state is CONNECTED and self.released)
    @rule(data=st.data(), times=st.integers(1, 2))
    def pubcomp(self, data: st.DataObject, times: int) -> None:
        self._pubcomp(data.draw(st.sampled_from(sorted(self.released))), times)

    def _pubcomp(self, pid: int, times: int = 1) -> None:
        self.on_wire.discard(pid)
        self.released.discard(pid)
        self.pubreced.discard(pid)
        payload = self.wire.pop(pid)[0]
        result = self.ack(PacketType.PUBCOMP, pid, times)
        assert [r.payload for r in result.completed if r.qos] == [payload]

    @precondition(lambda self: self.s.state is CONNECTED)
    @rule(pid=st.integers(1, 12),
          kind=st.sampled_from([PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBCOMP]))
    def orphan_ack(self, pid: int, kind: int) -> None:
        """An acknowledgement for an id nothing is in flight under: ignored."""
        if pid in self.s.store.outgoing or pid in self.wire:
            return
        self.deliver()
        before = dict(self.s.store.outgoing)
        result = self.ack(kind, pid)
        assert [r for r in result.completed if r.qos] == []
        assert dict(self.s.store.outgoing) == before
        assert self.b.read() == []

    @precondition(lambda self: self.s.state is CONNECTED)
    @rule()
    def drop(self) -> None:
        """The connection is gone; what the session wrote and the broker did not read is lost."""
        self.collect(self.b.lost())

    @precondition(lambda self: self.s.state is not CONNECTED)
    @rule(session_present=st.booleans(), receive_maximum=st.integers(1, 5))
    def reconnect(self, session_present: bool, receive_maximum: int) -> None:
        self.connect(session_present, receive_maximum)

    @precondition(lambda self: self.protocol == MQTT_5 and self.s.state is CONNECTED
                  and len(self.s.store.outgoing) >= 2)
    @rule(receive_maximum=st.integers(1, 2))
    def restart_smaller(self, receive_maximum: int) -> None:
        """The broker comes back, session kept, with fewer slots than are in flight."""
        self.drop()
        self.connect(True, receive_maximum)

    def teardown(self) -> None:
        """The broker now reads and acknowledges everything: every message completes."""
        if not hasattr(self, "s"):
            return
        if self.s.state is not CONNECTED:
            self.connect(session_present=True, receive_maximum=3)
        for _ in range(3 * len(self.records) + 3):
            self.deliver()
            for pid, (_, qos) in sorted(self.wire.items()):
                if qos == 1:
                    self._puback(pid)
                elif pid in self.released:
                    self._pubcomp(pid)
                elif pid not in self.pubreced:
                    self._pubrec(pid)
            self.window_kept()
            if not (self.s.store.outgoing or self.s.store.pending or self.wire):
                break
        stranded = [r for r in self.records if id(r) not in self.completed]
        assert not stranded, f"{len(stranded)} never completed, first {stranded[0]!r}"
        assert not self.s.store.outgoing and not self.s.store.pending

    # ------------------------------------------------------------------ invariants

    @invariant()
    def nothing_lost(self) -> None:
        store = self.s.store
        held = {id(r) for r in store.outgoing.values()} | {id(r) for r in store.pending}
        for record in self.records:
            done, kept = id(record) in self.completed, id(record) in held
            assert done != kept, f"{record!r}: completed={done}, held by the session={kept}"
            if done:
                assert record.state == DONE, f"{record!r} failed: {record.error}"
                assert record.payload in self.acked, f"{record!r} completed, never acknowledged"
        for pid, (payload, qos) in self.wire.items():
            record: Optional[Outgoing] = store.outgoing.get(pid)
            assert record is not None and (record.payload, record.qos) == (payload, qos), \
                f"the broker holds {payload!r} under id {pid}, the session {record!r}"

    @invariant()
    def window_kept(self) -> None:
        outgoing = self.s.store.outgoing
        for pid, record in outgoing.items():
            assert record.packet_id == pid
            assert record.state in (WAIT_PUBACK, WAIT_PUBREC, WAIT_PUBCOMP), record
        assert len(self.on_wire) <= self.s.window, \
            f"{len(self.on_wire)} in flight on this connection, window {self.s.window}"
        assert len(outgoing) <= self.biggest_window, (len(outgoing), self.biggest_window)
        qos2 = sum(r.qos == 2 for r in outgoing.values())
        assert qos2 <= self.s.max_inflight_qos2


SessionMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_session_stateful = SessionMachine.TestCase
