"""A scripted MQTT peer for the few client tests no real broker can show (a CONNACK with a given
Maximum Packet Size or Session Present flag, a broker that drops the connection on a chosen packet
or stops answering).

``ScriptedPeer(protocol, scripts)`` listens on 127.0.0.1 on a free port and serves connections one
after another in a background thread. Connection *n* follows ``scripts[n]`` (the last script
repeats for later connections). It decodes what the client sends with ``mqttfast.codec``'s
``StreamDecoder`` and records, per connection, every packet and every raw byte received
(``peer.connections[n].packets`` / ``.raw``). A ``Script`` says what to answer: the CONNACK
(session present, reason code, properties), whether SUBSCRIBE / UNSUBSCRIBE / PUBLISH get their
acknowledgements, bytes to send after the CONNACK, and when to ``close`` the socket or ``freeze``
(stop reading and answering, socket left open: the peer moves on to the next connection).
``peer.send(data)`` writes arbitrary bytes to the current connection. Every wait is bounded;
``close()`` stops the thread and closes every socket.

Like h11's tests, this is a peer, not a broker: it routes no messages.
"""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple, Type

from mqttfast.codec import (
    ConnAck, Connect, PingReq, PubRel, Publish, StreamDecoder, SubAck, Subscribe, UnsubAck,
    Unsubscribe, encode, encode_ack,
)
from mqttfast.constants import MQTT_5, PacketType

HOST = "127.0.0.1"
POLL = 0.05  # how often the serving thread looks at the stop flag
PINGRESP = b"\xd0\x00"


@dataclass
class Script:
    """What the peer does on one connection."""

    session_present: bool = False
    reason_code: int = 0
    properties: Optional[dict] = None
    ack_subscribe: bool = True      # SUBACK granting each requested QoS
    ack_unsubscribe: bool = True    # UNSUBACK (reason codes 0 under MQTT 5)
    ack_publish: bool = True        # PUBACK / PUBREC, then PUBCOMP for a PUBREL
    answer_ping: bool = True
    after_connack: bytes = b""      # raw bytes sent right after the CONNACK
    close_after: Tuple[Type[Any], ...] = ()   # close the socket once one of these arrives
    freeze_after: Tuple[Type[Any], ...] = ()  # stop reading and answering once one arrives


@dataclass
class PeerConnection:
    """What one client connection sent, and how it ended."""

    packets: List[Any] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    ended: threading.Event = field(default_factory=threading.Event)  # closed or frozen

    def of(self, cls: Type[Any]) -> List[Any]:
        return [p for p in self.packets if isinstance(p, cls)]


class ScriptedPeer:
    def __init__(self, protocol: int = 4, scripts: Sequence[Script] = (Script(),)) -> None:
        self.protocol = protocol
        self.scripts = list(scripts) or [Script()]
        self.connections: List[PeerConnection] = []
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._current: Optional[socket.socket] = None
        self._frozen: List[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((HOST, 0))
        self._listener.listen(8)
        self._listener.settimeout(POLL)
        self.host = HOST
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, name="scripted-peer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ test side

    def wait_connections(self, count: int, timeout: float = 5.0) -> bool:
        """True once ``count`` connections were accepted, False after ``timeout``."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self.connections) >= count, timeout)

    def wait_packet(self, cls: Type[Any], connection: int = -1, timeout: float = 5.0) -> Any:
        """The first packet of type ``cls`` received on ``connection`` (None after ``timeout``)."""
        def found() -> Any:
            if not self.connections or connection >= len(self.connections):
                return None
            return next(iter(self.connections[connection].of(cls)), None)
        with self._lock:
            self._lock.wait_for(found, timeout)
            return found()

    def send(self, data: bytes) -> None:
        """Write raw bytes to the connection being served."""
        sock = self._current
        if sock is None:
            raise RuntimeError("no connection is being served")
        sock.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        for sock in [self._listener, *self._frozen]:
            sock.close()

    def __enter__(self) -> "ScriptedPeer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ serving thread

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            record = PeerConnection()
            with self._lock:
                script = self.scripts[min(len(self.connections), len(self.scripts) - 1)]
                self.connections.append(record)
                self._lock.notify_all()
            sock.settimeout(POLL)
            self._current = sock
            try:
                frozen = self._converse(sock, script, record)
            except OSError:
                frozen = False
            self._current = None
            if frozen:
                self._frozen.append(sock)
            else:
                sock.close()
            record.ended.set()

    def _converse(self, sock: socket.socket, script: Script, record: PeerConnection) -> bool:
        """Answer per ``script`` until the client closes, the script closes (False) or freezes
        (True), or the peer stops."""
        decoder = StreamDecoder(self.protocol)
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                return False
            with self._lock:
                record.raw += data
            for packet in decoder.feed(data):
                with self._lock:
                    record.packets.append(packet)
                    self._lock.notify_all()
                if isinstance(packet, script.freeze_after):
                    return True
                if isinstance(packet, script.close_after):
                    return False
                reply = self._answer(packet, script)
                if reply:
                    sock.sendall(reply)
        return False

    def _answer(self, packet: Any, script: Script) -> bytes:
        protocol = self.protocol
        if isinstance(packet, Connect):
            connack = ConnAck(script.session_present, script.reason_code, script.properties)
            return encode(connack, protocol) + script.after_connack
        if isinstance(packet, Subscribe) and script.ack_subscribe:
            codes = [s.qos for s in packet.subscriptions]
            return encode(SubAck(packet.packet_id, codes), protocol)
        if isinstance(packet, Unsubscribe) and script.ack_unsubscribe:
            codes = [0] * len(packet.topics) if protocol == MQTT_5 else []
            return encode(UnsubAck(packet.packet_id, codes), protocol)
        if isinstance(packet, Publish) and packet.qos and script.ack_publish:
            ack = PacketType.PUBACK if packet.qos == 1 else PacketType.PUBREC
            return encode_ack(ack, packet.packet_id, 0, protocol)
        if isinstance(packet, PubRel) and script.ack_publish:
            return encode_ack(PacketType.PUBCOMP, packet.packet_id, 0, protocol)
        if isinstance(packet, PingReq) and script.answer_ping:
            return PINGRESP
        return b""


__all__ = ["PeerConnection", "Script", "ScriptedPeer"]
