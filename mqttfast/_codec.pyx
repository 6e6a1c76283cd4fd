# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The Cython codec: the hot path of mqttfast (twin of ``_codec_py.py``, same names and behaviour).

PUBLISH, PUBACK, PUBREC, PUBREL and PUBCOMP are parsed and built here over raw pointers, without a
Python object per byte; the cold packets (CONNECT, SUBSCRIBE, ...) and MQTT 5 property blocks are
handed to the shared pure-Python modules, since they are rare. Error messages match the pure twin.
"""
cimport cython
from cpython.bool cimport PyBool_Check
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_Check, PyLong_CheckExact
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.unicode cimport PyUnicode_Check, PyUnicode_DecodeUTF8
from libc.string cimport memcmp, memcpy


cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)

from .constants import MAX_REMAINING_LENGTH, V5_REASON_CODES
from .constants import PacketType as _P
from .errors import InvalidTopic, MalformedPacket, PacketTooLarge, PayloadTooLarge
from .packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    decode_cold,
    encode_cold,
)
from .properties import decode_properties, encode_properties
from .wire import check_utf8, encode_varint, topic_error, validate_topic, validate_topic_filter


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL


cdef enum:
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    MQTT5 = 5
    MAX_REMAINING = 268435455
    ANY_FLAGS = -1
    RESERVED = -2
    NOT_INT = -3  # _c_strict_int: the argument is not an int at all
    NO_LIMIT = 0x7FFFFFFF  # a max_size above any packet MQTT allows

# Fixed-header flags each packet type must carry; PUBLISH's are its own; 0 is reserved, and 15
# (AUTH) is reserved before MQTT 5 (checked separately).
cdef signed char REQUIRED[16]
REQUIRED[:] = [RESERVED, 0, 0, ANY_FLAGS, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, 0]

cdef bytes EMPTY_PROPS = b"\x00"
cdef bytes EMPTY = b""
cdef object _ZERO = 0
cdef frozenset PUBACK_CODES = V5_REASON_CODES[PUBACK]
cdef frozenset PUBREL_CODES = V5_REASON_CODES[PUBREL]
cdef dict _ACK_NAMES = {PUBACK: "PUBACK", PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP"}


# --------------------------------------------------------------------------- packet classes

def _packet_eq(self, other):
    """Field-wise equality by class name, so a C Publish equals a pure one with the same fields."""
    if type(other).__name__ != type(self).__name__:
        return NotImplemented
    for name in self._fields:
        if getattr(self, name) != getattr(other, name):
            return False
    return True


def _packet_repr(self):
    args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
    return f"{type(self).__name__}({args})"


@cython.freelist(256)
cdef class Publish:
    cdef public object topic
    cdef public object payload
    cdef public int qos
    cdef public int packet_id
    cdef public bint retain
    cdef public bint dup
    cdef public object properties

    type = _P.PUBLISH
    _fields = ("topic", "payload", "qos", "packet_id", "retain", "dup", "properties")

    def __init__(self, topic, payload=b"", int qos=0, int packet_id=0, bint retain=False,
                 bint dup=False, properties=None):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.packet_id = packet_id
        self.retain = retain
        self.dup = dup
        self.properties = properties or None

    def __eq__(self, other):
        return _packet_eq(self, other)

    def __ne__(self, other):
        result = _packet_eq(self, other)
        return result if result is NotImplemented else not result

    __hash__ = None

    def __repr__(self):
        return _packet_repr(self)

    def __reduce__(self):
        return (Publish, (self.topic, self.payload, self.qos, self.packet_id, self.retain,
                          self.dup, self.properties))


@cython.freelist(256)
cdef class _Ack:
    cdef public int packet_id
    cdef public int reason_code
    cdef public object properties

    _fields = ("packet_id", "reason_code", "properties")

    def __init__(self, int packet_id, int reason_code=0, properties=None):
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = properties or None

    def __eq__(self, other):
        return _packet_eq(self, other)

    def __ne__(self, other):
        result = _packet_eq(self, other)
        return result if result is NotImplemented else not result

    __hash__ = None

    def __repr__(self):
        return _packet_repr(self)

    def __reduce__(self):
        return (type(self), (self.packet_id, self.reason_code, self.properties))


cdef class PubAck(_Ack):
    type = _P.PUBACK


cdef class PubRec(_Ack):
    type = _P.PUBREC


cdef class PubRel(_Ack):
    type = _P.PUBREL


cdef class PubComp(_Ack):
    type = _P.PUBCOMP


# A cdef class cannot inherit from the Python Packet, so it registers as a virtual subclass:
# isinstance(pkt, Packet) holds in both twins; `pkt.__class__ is Publish` stays a pointer test.
for _cls in (Publish, PubAck, PubRec, PubRel, PubComp):
    Packet.register(_cls)
del _cls


# --------------------------------------------------------------------------- remaining length

def encode_remaining_length(value):
    """The fixed header's variable byte integer (1 to 4 bytes)."""
    return encode_varint(value)


def decode_remaining_length(data, Py_ssize_t offset=0):
    """``(value, offset after it)`` of the varint at ``offset``, or ``None`` if it is incomplete."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t i, end
    cdef unsigned int value = 0, shift = 0
    cdef unsigned char byte
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        p = <const unsigned char*>view.buf
        end = view.len
        for i in range(offset, offset + 4):
            if i >= end:
                return None
            byte = p[i]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, i + 1
            shift += 7
        raise MalformedPacket("remaining length is longer than 4 bytes")
    finally:
        PyBuffer_Release(&view)


cdef inline int _write_varint(unsigned char* d, Py_ssize_t value) noexcept nogil:
    cdef int n = 0
    while True:
        if value < 0x80:
            d[n] = <unsigned char>value
            return n + 1
        d[n] = <unsigned char>((value & 0x7F) | 0x80)
        value >>= 7
        n += 1


cdef inline int _varint_size(Py_ssize_t value) noexcept nogil:
    if value < 0x80:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x200000:
        return 3
    return 4


# --------------------------------------------------------------------------- encoding

cdef object _last_topic = None  # the last topic str that passed validation (topics repeat)


cdef struct PubPlan:
    const char* topic
    Py_ssize_t tlen
    Py_ssize_t remaining
    Py_ssize_t total
    int packet_id
    unsigned char first


cdef inline bytes _as_payload(object payload):
    if PyBytes_CheckExact(payload):
        return <bytes>payload
    if PyUnicode_Check(payload):
        return (<str>payload).encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"payload must be bytes, bytearray, memoryview or str, "
                    f"not {type(payload).__name__}")


cdef inline int _c_int(object value) except? -2:
    """A caller's int argument as a C int; -1 (always invalid here) for anything else."""
    cdef int overflow = 0
    cdef long v
    if not PyLong_Check(value):
        return -1
    v = PyLong_AsLongAndOverflow(value, &overflow)
    if overflow or v < -1 or v > 0x7FFFFFFF:
        return -1
    return <int>v


cdef inline int _c_strict_int(object value) except? -2:
    """Like _c_int, but NOT_INT for anything that is not an int, a bool included."""
    if not PyLong_CheckExact(value) and (PyBool_Check(value) or not PyLong_Check(value)):
        return NOT_INT
    return _c_int(value)


cdef int _bad_qos(object qos) except -1:
    if PyBool_Check(qos) or not PyLong_Check(qos):
        raise TypeError(f"qos must be an int 0, 1 or 2, not {type(qos).__name__}")
    raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")


cdef int _not_bool(str name, object value) except -1:
    # bool only: retain=1 or retain="no" is a caller's mistake, not a truth value to guess at.
    raise TypeError(f"{name} must be a bool, not {type(value).__name__}")


cdef Py_ssize_t _c_max_size(object value) except -1:
    """A caller's max_size (0: no limit) as a C size; NO_LIMIT for any huge int."""
    cdef int overflow = 0
    cdef long v
    if value is _ZERO:  # the default (small ints are singletons): one pointer test per publish
        return 0
    if PyBool_Check(value) or not PyLong_Check(value):
        raise TypeError(f"max_size must be an int (0: no limit), not {type(value).__name__}")
    v = PyLong_AsLongAndOverflow(value, &overflow)
    if overflow < 0 or (not overflow and v < 0):
        raise ValueError(f"max_size must be >= 0 (0: no limit), got {value}")
    if overflow or v > NO_LIMIT:
        return NO_LIMIT
    return v


cdef object _too_large(Py_ssize_t size, Py_ssize_t max_size):
    return PayloadTooLarge(f"PUBLISH of {size} bytes exceeds the maximum packet size of "
                           f"{max_size} bytes")


cdef int _plan_publish(PubPlan* plan, object topic, bytes payload, object qos_arg,
                       object packet_id_arg, object retain, object dup, object properties,
                       bytes props) except -1:
    """Validate a PUBLISH from the caller (same checks, same order as the pure twin)."""
    global _last_topic
    cdef Py_ssize_t tlen, i, remaining
    cdef const char* t
    cdef unsigned char c
    cdef int qos = _c_strict_int(qos_arg), packet_id = _c_strict_int(packet_id_arg)
    if not PyUnicode_Check(topic):
        raise TypeError(f"topic must be str, not {type(topic).__name__}")
    try:
        t = PyUnicode_AsUTF8AndSize(topic, &tlen)
    except UnicodeEncodeError:
        raise InvalidTopic(
            "topic contains a lone surrogate and cannot be encoded as UTF-8") from None
    if retain is not True and retain is not False:
        _not_bool("retain", retain)
    if dup is not True and dup is not False:
        _not_bool("dup", dup)
    if qos < 0 or qos > 2:
        _bad_qos(qos_arg)
    if qos:
        if packet_id == NOT_INT:
            raise TypeError(f"packet_id must be an int, not {type(packet_id_arg).__name__}")
        if packet_id < 1 or packet_id > 0xFFFF:
            raise ValueError(
                f"a QoS {qos} PUBLISH needs a packet_id of 1..65535, got {packet_id_arg!r}")
    elif dup is True:
        raise ValueError("dup must be False for QoS 0")
    if tlen == 0 and properties is _HAS_ALIAS:
        pass  # the alias alone names the topic
    elif topic is not _last_topic:
        for i in range(tlen):
            c = <unsigned char>t[i]
            if c == 43 or c == 35 or c == 0:  # + # NUL
                break
        else:
            if 0 < tlen <= 0xFFFF:
                _last_topic = topic
        if topic is not _last_topic:
            reason = topic_error(topic, tlen)
            if reason and not (tlen == 0 and properties and "topic_alias" in properties):
                raise InvalidTopic(reason)
    remaining = 2 + tlen + (2 if qos else 0) + PyBytes_GET_SIZE(payload)
    if props is not None:
        remaining += PyBytes_GET_SIZE(props)
    if remaining > MAX_REMAINING:
        raise PayloadTooLarge(f"PUBLISH of {remaining} bytes exceeds MQTT's limit of "
                              f"{MAX_REMAINING_LENGTH} bytes")
    plan.topic = t
    plan.tlen = tlen
    plan.remaining = remaining
    plan.total = 1 + _varint_size(remaining) + remaining
    plan.packet_id = packet_id
    plan.first = 0x30 | (qos << 1) | (0x08 if dup is True else 0) | (0x01 if retain is True else 0)
    return 0


# MQTT 5 properties holding only a Topic Alias, by alias (made on first use): the automatic
# aliases' hot path writes these 4 bytes instead of encoding a dict per message.
cdef list _ALIAS_PROPS = [None] * 65536
cdef dict _HAS_ALIAS = {"topic_alias": 1}  # tells _plan_publish an empty topic is aliased


cdef inline bytes _alias_props(int alias):
    cdef object props = _ALIAS_PROPS[alias]
    if props is None:
        props = PyBytes_FromStringAndSize(NULL, 4)
        d = <unsigned char*>PyBytes_AS_STRING(props)
        d[0] = 3
        d[1] = 0x23
        d[2] = <unsigned char>(alias >> 8)
        d[3] = <unsigned char>alias
        _ALIAS_PROPS[alias] = props
    return <bytes>props


cdef inline bytes _props_for(int protocol, object protocol_arg, object properties):
    if protocol == 4 and not properties:
        return None
    if protocol == MQTT5:
        return encode_properties(properties, _P.PUBLISH) if properties else EMPTY_PROPS
    if protocol != 3 and protocol != 4:
        raise ValueError(
            f"protocol must be 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0), got {protocol_arg!r}")
    if properties:
        raise ValueError("properties need protocol 5 (MQTT 5.0)")
    return None


cdef inline void _write_publish(unsigned char* d, PubPlan* plan, bytes payload,
                                bytes props) noexcept:
    cdef Py_ssize_t n, plen
    d[0] = plan.first
    n = 1 + _write_varint(d + 1, plan.remaining)
    d[n] = <unsigned char>(plan.tlen >> 8)
    d[n + 1] = <unsigned char>plan.tlen
    n += 2
    memcpy(d + n, plan.topic, plan.tlen)
    n += plan.tlen
    if plan.first & 0x06:
        d[n] = <unsigned char>(plan.packet_id >> 8)
        d[n + 1] = <unsigned char>plan.packet_id
        n += 2
    if props is not None:
        plen = PyBytes_GET_SIZE(props)
        memcpy(d + n, PyBytes_AS_STRING(props), plen)
        n += plen
    memcpy(d + n, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))


def encode_publish(topic, payload, qos=0, packet_id=0, retain=False, dup=False,
                   protocol=4, properties=None):
    """Encode one PUBLISH packet, validating everything the caller gave."""
    cdef PubPlan plan
    cdef bytes data = _as_payload(payload)
    cdef bytes props = _props_for(_c_int(protocol), protocol, properties)
    _plan_publish(&plan, topic, data, qos, packet_id, retain, dup, properties, props)
    out = PyBytes_FromStringAndSize(NULL, plan.total)
    _write_publish(<unsigned char*>PyBytes_AS_STRING(out), &plan, data, props)
    return out


def append_publish(bytearray buf not None, topic, payload, qos=0, packet_id=0,
                   retain=False, dup=False, protocol=4, properties=None):
    """Append one encoded PUBLISH to ``buf`` (for one ``send`` of many packets); returns its size."""
    return _append_publish(buf, topic, payload, qos, packet_id, retain, dup, protocol, properties,
                           0)


cdef Py_ssize_t _append_publish(bytearray buf, object topic, object payload, object qos,
                                object packet_id, object retain, object dup, object protocol,
                                object properties, Py_ssize_t max_size) except -1:
    cdef PubPlan plan
    cdef bytes data = _as_payload(payload)
    cdef bytes props = _props_for(_c_int(protocol), protocol, properties)
    cdef Py_ssize_t old
    _plan_publish(&plan, topic, data, qos, packet_id, retain, dup, properties, props)
    if max_size and plan.total > max_size:
        raise _too_large(plan.total, max_size)
    old = PyByteArray_GET_SIZE(buf)
    PyByteArray_Resize(buf, old + plan.total)
    _write_publish(<unsigned char*>PyByteArray_AS_STRING(buf) + old, &plan, data, props)
    return plan.total


def append_publish_many(bytearray buf not None, topic, payloads, retain=False,
                        protocol=4, properties=None):
    """Append a QoS 0 PUBLISH to ``topic`` for each payload: the bulk sender's path (the topic is
    validated once). Returns the number of bytes appended; on any error, appends nothing."""
    return _append_publish_many(buf, topic, payloads, retain, protocol, properties, 0)


cdef Py_ssize_t _append_publish_many(bytearray buf, object topic, object payloads,
                                     object retain, object protocol, object properties,
                                     Py_ssize_t max_size) except -1:
    cdef PubPlan plan
    cdef bytes props = _props_for(_c_int(protocol), protocol, properties)
    cdef bytes data
    cdef Py_ssize_t start = PyByteArray_GET_SIZE(buf), old, remaining, fixed
    # Everything but the payloads is validated once, even for an empty batch.
    _plan_publish(&plan, topic, EMPTY, 0, 0, retain, False, properties, props)
    fixed = plan.remaining
    try:
        for payload in payloads:
            data = _as_payload(payload)
            remaining = fixed + PyBytes_GET_SIZE(data)
            if remaining > MAX_REMAINING:
                raise PayloadTooLarge(f"PUBLISH of {remaining} bytes exceeds MQTT's limit of "
                                      f"{MAX_REMAINING_LENGTH} bytes")
            plan.remaining = remaining
            plan.total = 1 + _varint_size(remaining) + remaining
            if max_size and plan.total > max_size:
                raise _too_large(plan.total, max_size)
            old = PyByteArray_GET_SIZE(buf)
            PyByteArray_Resize(buf, old + plan.total)
            _write_publish(<unsigned char*>PyByteArray_AS_STRING(buf) + old, &plan, data, props)
    except BaseException:
        PyByteArray_Resize(buf, start)  # all or nothing: a half-appended batch cannot be counted
        raise
    return PyByteArray_GET_SIZE(buf) - start


cdef int _append_alias(bytearray buf, object topic, object payload, object qos,
                       object packet_id, object retain, object dup, object alias,
                       Py_ssize_t limit) except -1:
    cdef PubPlan plan
    cdef bytes data = _as_payload(payload)
    cdef int a = _c_strict_int(alias)
    if a == NOT_INT:
        raise TypeError(f"topic_alias must be an int, not {type(alias).__name__}")
    if a < 1 or a > 0xFFFF:
        raise ValueError(f"topic_alias must be 1..65535, got {alias!r}")
    cdef bytes props = _alias_props(a)
    cdef Py_ssize_t old
    _plan_publish(&plan, topic, data, qos, packet_id, retain, dup, _HAS_ALIAS, props)
    if limit and plan.total > limit:
        raise _too_large(plan.total, limit)
    old = PyByteArray_GET_SIZE(buf)
    PyByteArray_Resize(buf, old + plan.total)
    _write_publish(<unsigned char*>PyByteArray_AS_STRING(buf) + old, &plan, data, props)
    return 0


@cython.final
@cython.auto_pickle(False)
cdef class WriteBuffer:
    """The outgoing byte stream of one session: the bytes not yet taken, and a running position.

    ``position`` counts every byte ever written (across connections: QoS 0 completion marks are
    positions in this stream); ``taken`` counts those handed out by ``take`` or dropped by
    ``discard``, so ``position - taken == len(self)``. The append methods return the new position.
    """

    cdef bytearray _buf
    cdef long long _taken

    def __init__(self):
        self._buf = bytearray()
        self._taken = 0

    def __len__(self):
        return PyByteArray_GET_SIZE(self._buf)

    def __bool__(self):
        return PyByteArray_GET_SIZE(self._buf) > 0

    def __repr__(self):
        return (f"<WriteBuffer held={PyByteArray_GET_SIZE(self._buf)} position={self.position} "
                f"taken={self._taken}>")

    @property
    def position(self):
        """Bytes ever written: the stream position of the end of what is held."""
        return self._taken + PyByteArray_GET_SIZE(self._buf)

    @property
    def taken(self):
        """Bytes ever taken or discarded: the stream position of the start of what is held."""
        return self._taken

    def write(self, data):
        """Append raw bytes (an already encoded packet); returns the new position."""
        self._buf += data
        return self._taken + PyByteArray_GET_SIZE(self._buf)

    def append_publish(self, topic, payload, qos=0, packet_id=0, retain=False, dup=False,
                       protocol=4, properties=None, max_size=0):
        """Append one PUBLISH (as the module's ``append_publish``); with ``max_size`` > 0, a
        packet longer than that raises ``PayloadTooLarge`` and nothing is appended."""
        _append_publish(self._buf, topic, payload, qos, packet_id, retain, dup, protocol,
                        properties, _c_max_size(max_size))
        return self._taken + PyByteArray_GET_SIZE(self._buf)

    def append_publish_alias(self, topic, payload, qos, packet_id, retain, dup, alias,
                             max_size=0):
        """Append an MQTT 5 PUBLISH whose one property is the topic alias ``alias`` (``topic``
        may be "" to send the alias alone): the bytes of ``append_publish`` with
        ``properties={"topic_alias": alias}``, without encoding a dict."""
        _append_alias(self._buf, topic, payload, qos, packet_id, retain, dup, alias,
                      _c_max_size(max_size))
        return self._taken + PyByteArray_GET_SIZE(self._buf)

    def append_publish_many(self, topic, payloads, retain=False, protocol=4, properties=None,
                            max_size=0):
        """Append a QoS 0 PUBLISH for each payload (all or nothing); returns the new position."""
        _append_publish_many(self._buf, topic, payloads, retain, protocol, properties,
                             _c_max_size(max_size))
        return self._taken + PyByteArray_GET_SIZE(self._buf)

    def append_ack(self, packet_type, packet_id, reason_code=0, protocol=4):
        """Append a PUBACK, PUBREC, PUBREL or PUBCOMP; returns the new position."""
        self._buf += _encode_ack(packet_type, packet_id, reason_code, protocol, None)
        return self._taken + PyByteArray_GET_SIZE(self._buf)

    def take(self):
        """Everything held, handed over (no copy): the buffer starts afresh and ``taken`` moves on."""
        cdef bytearray out = self._buf
        self._buf = bytearray()
        self._taken += PyByteArray_GET_SIZE(out)
        return out

    def discard(self):
        """Drop everything held (the connection is gone); returns how many bytes were dropped."""
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(self._buf)
        self._buf = bytearray()
        self._taken += n
        return n

    def peek(self):
        """A copy of what is held (for tests and debugging)."""
        return PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self._buf),
                                         PyByteArray_GET_SIZE(self._buf))


# ---------------------------------------------------------------------- hot paths above the codec
#
# The session and the client keep their logic in Python. What runs once per message on the two bulk
# paths (a QoS 0 publish, a QoS 0 delivery) is compiled here, with hooks to the layers above, the
# way asyncpg compiles its protocol core under a Python facade. Both twins define all of it.

cdef enum:
    _QOS0_OFF = 0  # every QoS 0 publish goes through the session's own logic
    _QOS0_PLAIN = 1  # a QoS 0 publish is its bytes appended to the stream
    _QOS0_ALIASES = 2  # the same for a topic with an automatic MQTT 5 alias: the alias alone


@cython.final
@cython.auto_pickle(False)
cdef class Qos0Path:
    """How a QoS 0 publish without properties is written while it is only bytes in the stream.

    Owned by the session, which sets ``mode`` under its connection's lock: 0 off (not connected,
    or the broker's packet size limit must be checked); 1 plain, the PUBLISH at ``protocol``
    appended to ``out``; 2 MQTT 5 with automatic topic aliases, where a topic found in
    ``aliases`` (the session's own topic -> alias map, read here, never written) is appended as
    its alias alone and any other topic is left to the session.
    """

    cdef readonly WriteBuffer out
    cdef public int mode
    cdef object _protocol
    cdef public dict aliases

    def __init__(self, WriteBuffer out not None, protocol=4):
        self.out = out
        self.mode = _QOS0_OFF
        self._protocol = protocol
        self.aliases = None

    @property
    def protocol(self):
        return self._protocol

    @protocol.setter
    def protocol(self, value):
        if _c_int(value) not in (3, 4, 5):
            raise ValueError(f"protocol must be 3, 4 or 5, got {value!r}")
        self._protocol = value

    cpdef long long append(self, topic, payload, retain) except -2:
        """Append a QoS 0 PUBLISH if this path takes it: the stream position after it, or -1
        when it is the session's to write (mode 0, a topic without an alias, a non-str topic)."""
        cdef int mode = self.mode
        cdef object alias
        if mode == _QOS0_PLAIN:
            _append_publish(self.out._buf, topic, payload, _ZERO, _ZERO, retain, False,
                            self._protocol, None, 0)
        elif mode == _QOS0_ALIASES:
            if not PyUnicode_Check(topic) or self.aliases is None:
                return -1
            alias = self.aliases.get(topic)
            if alias is None:
                return -1
            _append_alias(self.out._buf, "", payload, _ZERO, _ZERO, retain, False, alias, 0)
        else:
            return -1
        return self.out._taken + PyByteArray_GET_SIZE(self.out._buf)


cdef class StreamMark:
    """A QoS 0 completion mark (a position in a session's stream) and the stream's ``taken``
    when it was made: publishes made while ``taken`` stays the same go out in one write, so
    they share one mark. The base of the client's QoS 0 handle."""

    cdef public long long _mark
    cdef public long long _taken

    def __init__(self, long long mark=0, long long taken=0):
        self._mark = mark
        self._taken = taken


@cython.final
@cython.auto_pickle(False)
cdef class Publisher:
    """One client's thread-safe ``publish()``, compiled for its hot path.

    A QoS 0 publish without properties that the session's ``Qos0Path`` takes is written under
    the connection's lock, the shared ``StreamMark`` moved on, the loop kicked unless a flush is
    already due, and the writer held back when the stream is over ``max_buffer`` (``drain()``).
    Everything else, and everything before ``bind``, goes to ``fallback`` (the client's own
    publish, called with the same arguments), which keeps every check and every other QoS.
    ``new_mark(mark, taken)`` makes a handle when the stream was taken since the last one.
    """

    cdef Qos0Path _path
    cdef object _fallback
    cdef object _new_mark
    cdef object _drain
    cdef Py_ssize_t _max_buffer
    cdef object _acquire
    cdef object _release
    cdef object _conn
    cdef object _kick
    cdef StreamMark _current

    def __init__(self, Qos0Path path not None, fallback, new_mark, Py_ssize_t max_buffer,
                 drain):
        self._path = path
        self._fallback = fallback
        self._new_mark = new_mark
        self._max_buffer = max_buffer
        self._drain = drain
        self._conn = None
        self._current = None

    def bind(self, lock, conn):
        """Publish through ``conn`` (its ``lock``, ``flush_queued`` and ``kick()``)."""
        self._acquire = lock.acquire
        self._release = lock.release
        self._kick = conn.kick
        self._conn = conn

    def unbind(self):
        self._conn = self._acquire = self._release = self._kick = None

    def __call__(self, topic, payload=b"", qos=0, retain=False, properties=None):
        cdef long long position
        cdef StreamMark mark
        conn = self._conn
        if conn is None or qos is not _ZERO or properties is not None:
            return self._fallback(topic, payload, qos, retain, properties)
        self._acquire()
        try:
            position = self._path.append(topic, payload, retain)
            if position >= 0:
                mark = self.mark(position)
        finally:
            self._release()
        if position < 0:
            return self._fallback(topic, payload, qos, retain, properties)
        if not conn.flush_queued:
            self._kick()
        if PyByteArray_GET_SIZE(self._path.out._buf) > self._max_buffer:
            self._drain()
        return mark

    cpdef StreamMark mark(self, long long position):
        """The handle of a QoS 0 publish that ended at ``position``: the current one, moved on,
        while the stream has not been taken since it was made (call with the lock held)."""
        cdef StreamMark mark = self._current
        cdef long long taken = self._path.out._taken
        if mark is not None and mark._taken == taken:
            mark._mark = position
            return mark
        mark = self._new_mark(position, taken)
        self._current = mark
        return mark


def untrack(obj):
    """Stop the cyclic garbage collector from walking ``obj``, which the caller knows cannot be
    part of a reference cycle (it is freed by reference counting like any other object). For
    the session's in-flight records: tens of thousands of them alive at once made each
    collection walk them all (a third of a QoS 1 publisher's time). The pure twin cannot."""
    PyObject_GC_UnTrack(<void*>obj)


def all_plain_qos0(list packets not None):
    """True when every packet is a QoS 0 PUBLISH without properties: the bulk receive path."""
    cdef object pkt
    for pkt in packets:
        if type(pkt) is not Publish or (<Publish>pkt).qos or (<Publish>pkt).properties is not None:
            return False
    return True


def deliver(callback, list messages not None, on_error):
    """Call ``callback(message)`` for each message in order; an ``Exception`` it raises goes to
    ``on_error(exc)`` and delivery goes on with the next one."""
    cdef object message
    for message in messages:
        try:
            callback(message)
        except Exception as exc:
            on_error(exc)


def encode_ack(packet_type, packet_id, reason_code=0, protocol=4, properties=None):
    """Encode a PUBACK, PUBREC, PUBREL or PUBCOMP."""
    return _encode_ack(packet_type, packet_id, reason_code, protocol, properties)


cdef object _encode_ack(object packet_type_arg, object packet_id, object reason_code_arg,
                        object protocol_arg, object properties):
    cdef unsigned char first
    cdef int pid
    cdef int packet_type = _c_int(packet_type_arg)
    cdef int reason_code = _c_int(reason_code_arg)
    cdef int protocol = _c_int(protocol_arg)
    if packet_type < PUBACK or packet_type > PUBCOMP:
        raise ValueError(f"not an acknowledgement packet type: {packet_type_arg!r}")
    if not isinstance(packet_id, int) or not 1 <= packet_id <= 0xFFFF:
        raise ValueError(f"packet_id must be 1..65535, got {packet_id!r}")
    pid = packet_id
    first = (packet_type << 4) | (2 if packet_type == PUBREL else 0)
    if protocol != MQTT5:
        if protocol != 3 and protocol != 4:
            raise ValueError(
                f"protocol must be 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0), got {protocol_arg!r}")
        if reason_code_arg or properties:
            raise ValueError("reason codes and properties on acknowledgements need MQTT 5")
        out = PyBytes_FromStringAndSize(NULL, 4)
        d = <unsigned char*>PyBytes_AS_STRING(out)
        d[0] = first
        d[1] = 2
        d[2] = <unsigned char>(pid >> 8)
        d[3] = <unsigned char>pid
        return out
    if reason_code_arg not in V5_REASON_CODES[packet_type]:
        raise ValueError(
            f"reason code {reason_code_arg!r} is not valid in {_ACK_NAMES[packet_type]}")
    if properties:
        body = bytes((pid >> 8, pid & 0xFF, reason_code)) + encode_properties(
            properties, packet_type)
        return bytes((first,)) + encode_varint(len(body)) + body
    if reason_code:
        return bytes((first, 3, pid >> 8, pid & 0xFF, reason_code))
    return bytes((first, 2, pid >> 8, pid & 0xFF))


def encode(packet, int protocol=4):
    """Encode any packet object (for a CONNECT, its own ``protocol`` field is used)."""
    kind = packet.type
    if kind == PUBLISH:
        # truth values: a Publish object's flags (a pure one may hold 1) are not caller input
        return encode_publish(packet.topic, packet.payload, packet.qos, packet.packet_id,
                              True if packet.retain else False, True if packet.dup else False,
                              protocol, packet.properties)
    if PUBACK <= kind <= PUBCOMP:
        return encode_ack(kind, packet.packet_id, packet.reason_code, protocol,
                          packet.properties)
    if kind == _P.CONNECT:
        protocol = packet.protocol
    flags, body = encode_cold(packet, protocol)
    if len(body) > MAX_REMAINING:
        raise PayloadTooLarge(f"{_P(kind).name} of {len(body)} bytes exceeds MQTT's limit")
    return bytes(((kind << 4) | flags,)) + encode_varint(len(body)) + body


# --------------------------------------------------------------------------- decoding

cdef class _TopicCache:
    """The last topic decoded, so a stream of messages on one topic decodes it once."""
    cdef bytes raw
    cdef str text


cdef object _decode_publish(unsigned char first, const unsigned char* p, Py_ssize_t i,
                            Py_ssize_t stop, int protocol, _TopicCache cache):
    cdef int qos = (first >> 1) & 3
    cdef bint dup = first & 8
    cdef Py_ssize_t tlen, j, plen
    cdef int packet_id = 0
    cdef bint wild = False, nul = False
    cdef unsigned char c
    cdef const char* t
    cdef Publish pkt
    cdef object props = None
    cdef str topic
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    if dup and not qos:
        raise MalformedPacket("PUBLISH with QoS 0 has the DUP flag set")
    if i + 2 > stop:
        raise MalformedPacket("topic length of PUBLISH runs past the end of the packet")
    tlen = (p[i] << 8) | p[i + 1]
    i += 2
    if i + tlen > stop:
        raise MalformedPacket(
            f"topic of PUBLISH ({tlen} bytes) runs past the end of the packet")
    t = <const char*>(p + i)
    if (cache is not None and cache.raw is not None and PyBytes_GET_SIZE(cache.raw) == tlen
            and memcmp(PyBytes_AS_STRING(cache.raw), t, tlen) == 0):
        topic = cache.text
    else:
        for j in range(tlen):
            c = <unsigned char>t[j]
            if c == 43 or c == 35:
                wild = True
            elif c == 0:
                nul = True
        if wild:
            raise MalformedPacket("PUBLISH topic contains a wildcard")
        try:
            topic = PyUnicode_DecodeUTF8(t, tlen, NULL)
        except UnicodeDecodeError:
            check_utf8(PyBytes_FromStringAndSize(t, tlen), "PUBLISH topic")  # raises its message
            raise
        if nul:
            raise MalformedPacket("PUBLISH topic contains U+0000")
        if cache is not None and tlen:
            cache.raw = PyBytes_FromStringAndSize(t, tlen)
            cache.text = topic
    i += tlen
    if qos:
        if i + 2 > stop:
            raise MalformedPacket("packet id of PUBLISH runs past the end of the packet")
        packet_id = (p[i] << 8) | p[i + 1]
        i += 2
        if not packet_id:
            raise MalformedPacket(f"QoS {qos} PUBLISH has packet id 0")
    if protocol == MQTT5:
        if i < stop and p[i] == 0:
            i += 1  # the common case: no properties
        else:
            block = PyBytes_FromStringAndSize(<const char*>(p + i), stop - i)
            props, plen = decode_properties(block, 0, stop - i, _P.PUBLISH)
            i += plen
    if not tlen and not (props and "topic_alias" in props):
        raise MalformedPacket("PUBLISH has an empty topic" + (
            " and no topic alias" if protocol == MQTT5 else ""))
    pkt = Publish.__new__(Publish)
    pkt.topic = topic
    pkt.payload = PyBytes_FromStringAndSize(<const char*>(p + i), stop - i)
    pkt.qos = qos
    pkt.packet_id = packet_id
    pkt.retain = first & 1
    pkt.dup = dup
    pkt.properties = props
    # Holding only a str, bytes and decoded properties, a received PUBLISH cannot be in a cycle
    # (CPython untracks tuples and dicts of atomic values the same way): not tracking it keeps
    # the cyclic collector from walking every message of a bulk receive (a fifth of its time).
    PyObject_GC_UnTrack(<void*>pkt)
    return pkt


cdef object _decode_ack(int kind, const unsigned char* p, Py_ssize_t i, Py_ssize_t stop,
                        int protocol):
    cdef Py_ssize_t size = stop - i
    cdef int packet_id, code = 0
    cdef _Ack ack
    cdef object props = None
    if size < 2 or (protocol != MQTT5 and size != 2):
        raise MalformedPacket(f"{_ACK_NAMES[kind]} must have remaining length 2, got {size}")
    packet_id = (p[i] << 8) | p[i + 1]
    if not packet_id:
        raise MalformedPacket(f"{_ACK_NAMES[kind]} has packet id 0")
    if size > 2:
        code = p[i + 2]
        if code not in (PUBACK_CODES if kind <= PUBREC else PUBREL_CODES):
            raise MalformedPacket(f"invalid reason code {code:#04x} in {_ACK_NAMES[kind]}")
        if size > 3:
            block = PyBytes_FromStringAndSize(<const char*>(p + i + 3), size - 3)
            props, used = decode_properties(block, 0, size - 3, kind)
            if used != size - 3:
                raise MalformedPacket(
                    f"{size - 3 - used} unexpected bytes at the end of {_ACK_NAMES[kind]}")
    if kind == PUBACK:
        ack = PubAck.__new__(PubAck)
    elif kind == PUBREC:
        ack = PubRec.__new__(PubRec)
    elif kind == PUBREL:
        ack = PubRel.__new__(PubRel)
    else:
        ack = PubComp.__new__(PubComp)
    ack.packet_id = packet_id
    ack.reason_code = code
    ack.properties = props
    PyObject_GC_UnTrack(<void*>ack)  # ints and decoded properties: no cycle (see _decode_publish)
    return ack


cdef inline int _check_first_byte(unsigned char first, int protocol) except -1:
    cdef int kind = first >> 4
    cdef int required = REQUIRED[kind]
    if required == RESERVED or (kind == 15 and protocol != MQTT5):
        raise MalformedPacket(f"reserved packet type {kind}")
    if required != ANY_FLAGS and (first & 0x0F) != required:
        raise MalformedPacket(f"{_P(kind).name} has fixed-header flags {first & 0x0F:#06b}, "
                              f"must be {required:#06b}")
    return 0


cdef object _decode_body(unsigned char first, const unsigned char* p, Py_ssize_t i,
                         Py_ssize_t stop, int protocol, _TopicCache cache):
    cdef int kind = first >> 4
    if kind == PUBLISH:
        return _decode_publish(first, p, i, stop, protocol, cache)
    if PUBACK <= kind <= PUBCOMP:
        return _decode_ack(kind, p, i, stop, protocol)
    body = PyBytes_FromStringAndSize(<const char*>(p + i), stop - i)
    return decode_cold(kind, first & 0x0F, body, 0, stop - i, protocol)


def decode(data, int protocol=4):
    """Decode exactly one whole packet."""
    cdef Py_buffer view
    if PyBytes_CheckExact(data):
        return _decode_one(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                           protocol)
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _decode_one(<const unsigned char*>view.buf, view.len, protocol)
    finally:
        PyBuffer_Release(&view)


cdef _TopicCache _decode_cache = _TopicCache()


cdef object _decode_one(const unsigned char* p, Py_ssize_t n, int protocol):
    cdef Py_ssize_t i, length
    cdef unsigned int shift = 0
    cdef unsigned char byte
    if n == 0:
        raise MalformedPacket("empty input: need at least 2 bytes")
    _check_first_byte(p[0], protocol)
    length = 0
    i = 1
    while True:
        if i >= n:
            raise MalformedPacket("incomplete fixed header")
        byte = p[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift == 28:
            raise MalformedPacket("remaining length is longer than 4 bytes")
    if i + length != n:
        if i + length > n:
            raise MalformedPacket(f"incomplete packet: {i + length - n} bytes missing")
        raise MalformedPacket(f"{n - i - length} bytes after the end of the packet")
    return _decode_body(p[0], p, i, n, protocol, _decode_cache)


cdef class StreamDecoder:
    """Turns a byte stream, in any chunking, into whole packets.

    ``feed(data)`` returns every packet completed by ``data``; an incomplete tail is kept for the
    next call. A packet over ``max_packet_size`` is refused as soon as its header is read. Input is
    parsed in place; only a packet split across two chunks is copied.
    """

    cdef int _protocol
    cdef object _max_packet_size
    cdef Py_ssize_t _limit
    cdef bytearray _buf
    cdef _TopicCache _cache

    def __init__(self, protocol=4, max_packet_size=None):
        self.protocol = protocol
        self.max_packet_size = max_packet_size
        self._buf = bytearray()
        self._cache = _TopicCache()

    # Properties, so that a value set later is checked like one given to the constructor.
    @property
    def protocol(self):
        return self._protocol

    @protocol.setter
    def protocol(self, value):
        cdef int protocol = _c_int(value)
        if protocol != 3 and protocol != 4 and protocol != MQTT5:
            raise ValueError(
                f"protocol must be 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0), got {value!r}")
        self._protocol = protocol

    @property
    def max_packet_size(self):
        return self._max_packet_size

    @max_packet_size.setter
    def max_packet_size(self, value):
        if value is not None:
            if PyBool_Check(value) or not PyLong_Check(value):
                raise TypeError(
                    f"max_packet_size must be an int or None, not {type(value).__name__}")
            if value < 2:
                raise ValueError(f"max_packet_size must be at least 2 bytes, got {value}")
        self._max_packet_size = value
        self._limit = -1 if value is None else min(value, PY_SSIZE_T_MAX)

    @property
    def buffered(self):
        """Bytes held back while waiting for the rest of a packet."""
        return PyByteArray_GET_SIZE(self._buf)

    def feed(self, data):
        cdef Py_buffer view
        cdef Py_ssize_t consumed = 0, start = 0, n, held, used
        cdef const unsigned char* p
        cdef list out = []
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            p = <const unsigned char*>view.buf
            n = view.len
            if PyByteArray_GET_SIZE(self._buf):
                held = PyByteArray_GET_SIZE(self._buf)
                try:
                    start = self._complete(p, n, out)
                except BaseException:
                    # Keep every byte, as the pure twin does, so the two agree after an error.
                    used = PyByteArray_GET_SIZE(self._buf) - held
                    self._buf += (<const char*>p)[used:n]
                    raise
                if PyByteArray_GET_SIZE(self._buf):
                    return out  # still incomplete: every byte went into the buffer
            try:
                self._parse(p + start, n - start, out, &consumed)
            finally:
                start += consumed
                if start < n:
                    self._buf = bytearray(<bytes>(<const char*>p)[start:n])
        finally:
            PyBuffer_Release(&view)
        return out

    cdef Py_ssize_t _complete(self, const unsigned char* p, Py_ssize_t n, list out) except -1:
        """Finish the packet split across chunks, copying only its own bytes from ``p``;
        returns how many bytes of ``p`` it used. The rest of ``p`` is then parsed in place."""
        cdef bytearray buf = self._buf
        cdef const unsigned char* b
        cdef Py_ssize_t used = 0, have, i, length, total, take
        cdef unsigned int shift
        cdef unsigned char byte
        cdef bint header = False
        while True:
            b = <const unsigned char*>PyByteArray_AS_STRING(buf)
            have = PyByteArray_GET_SIZE(buf)
            _check_first_byte(b[0], self._protocol)
            length = 0
            shift = 0
            i = 1
            while i < have:
                byte = b[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    header = True
                    break
                shift += 7
                if shift == 28:
                    raise MalformedPacket("remaining length is longer than 4 bytes")
            if header:
                break
            if used >= n:
                return used
            buf.append(p[used])  # one more byte of the fixed header
            used += 1
        total = i + length
        if self._limit >= 0 and total > self._limit:
            raise PacketTooLarge(f"packet of {total} bytes exceeds the maximum "
                                 f"packet size of {self._limit}")
        take = min(total - have, n - used)
        if take > 0:
            PyByteArray_Resize(buf, have + take)
            memcpy(PyByteArray_AS_STRING(buf) + have, p + used, take)
            used += take
        # More than one packet is held only after an error: the first one fails again.
        if PyByteArray_GET_SIZE(buf) >= total:
            b = <const unsigned char*>PyByteArray_AS_STRING(buf)
            out.append(_decode_body(b[0], b, i, total, self._protocol, self._cache))
            self._buf = bytearray()
        return used

    cdef int _parse(self, const unsigned char* p, Py_ssize_t n, list out,
                    Py_ssize_t* consumed) except -1:
        cdef Py_ssize_t pos = 0, i, length, stop
        cdef unsigned int shift
        cdef unsigned char first, byte
        cdef int protocol = self._protocol
        cdef Py_ssize_t limit = self._limit
        while pos < n:
            first = p[pos]
            _check_first_byte(first, protocol)
            length = 0
            shift = 0
            i = pos + 1
            while True:
                if i >= n:
                    return 0
                byte = p[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift == 28:
                    raise MalformedPacket("remaining length is longer than 4 bytes")
            stop = i + length
            if limit >= 0 and stop - pos > limit:
                raise PacketTooLarge(f"packet of {stop - pos} bytes exceeds the maximum "
                                     f"packet size of {limit}")
            if stop > n:
                return 0
            if first >> 4 == PUBLISH:
                out.append(_decode_publish(first, p, i, stop, protocol, self._cache))
            else:
                out.append(_decode_body(first, p, i, stop, protocol, self._cache))
            pos = stop
            consumed[0] = pos
        return 0


__all__ = [
    "Auth", "ConnAck", "Connect", "Disconnect", "Packet", "PingReq", "PingResp", "PubAck",
    "PubComp", "PubRec", "PubRel", "Publish", "Publisher", "Qos0Path", "StreamDecoder",
    "StreamMark", "SubAck", "Subscribe", "Subscription", "UnsubAck", "Unsubscribe", "Will",
    "WriteBuffer", "all_plain_qos0", "append_publish", "append_publish_many", "decode", "deliver",
    "untrack",
    "decode_remaining_length", "encode", "encode_ack", "encode_publish", "encode_remaining_length",
    "validate_topic", "validate_topic_filter",
]
