"""Argument checks at encode time: a caller's wrong type is a clear TypeError, the same in both
twins, never an obscure comparison error or a silent coercion (``retain="no"`` is not True)."""
from __future__ import annotations

import enum
from functools import partial
from typing import Any, Callable, Dict, List, Tuple

import pytest

from mqttfast.errors import MQTTError


class QoS(enum.IntEnum):
    AT_MOST_ONCE = 0
    AT_LEAST_ONCE = 1


# Each encoder, as a function of keyword overrides of a valid call.
def _encoders(m: Any) -> Dict[str, Callable[..., Any]]:
    def encode(**kw: Any) -> Any:
        args = dict(topic="t", payload=b"p", qos=1, packet_id=1, retain=False, dup=False)
        args.update(kw)
        return m.encode_publish(**args)

    def append(**kw: Any) -> Any:
        args = dict(topic="t", payload=b"p", qos=1, packet_id=1, retain=False, dup=False)
        args.update(kw)
        return m.append_publish(bytearray(), **args)

    def buffer(**kw: Any) -> Any:
        args = dict(topic="t", payload=b"p", qos=1, packet_id=1, retain=False, dup=False)
        args.update(kw)
        return m.WriteBuffer().append_publish(**args)

    def many(**kw: Any) -> Any:
        args = dict(topic="t", payloads=[b"p", b"q"], retain=False)
        args.update(kw)
        return m.append_publish_many(bytearray(), **args)

    def buffer_many(**kw: Any) -> Any:
        args = dict(topic="t", payloads=[b"p", b"q"], retain=False)
        args.update(kw)
        return m.WriteBuffer().append_publish_many(**args)

    return {"encode_publish": encode, "append_publish": append, "WriteBuffer.append_publish": buffer,
            "append_publish_many": many, "WriteBuffer.append_publish_many": buffer_many}


SINGLE = ["encode_publish", "append_publish", "WriteBuffer.append_publish"]
ALL = SINGLE + ["append_publish_many", "WriteBuffer.append_publish_many"]

# (which encoders, keyword overrides, exception, message)
CHECKS: List[Tuple[List[str], Dict[str, Any], type, str]] = [
    (ALL, {"retain": "no"}, TypeError, "retain must be a bool, not str"),
    (ALL, {"retain": 1}, TypeError, "retain must be a bool, not int"),
    (ALL, {"retain": 0}, TypeError, "retain must be a bool, not int"),
    (ALL, {"retain": None}, TypeError, "retain must be a bool, not NoneType"),
    (SINGLE, {"dup": "yes"}, TypeError, "dup must be a bool, not str"),
    (SINGLE, {"dup": 1}, TypeError, "dup must be a bool, not int"),
    (SINGLE, {"dup": None}, TypeError, "dup must be a bool, not NoneType"),
    (SINGLE, {"qos": "1"}, TypeError, "qos must be an int 0, 1 or 2, not str"),
    (SINGLE, {"qos": 1.0}, TypeError, "qos must be an int 0, 1 or 2, not float"),
    (SINGLE, {"qos": None}, TypeError, "qos must be an int 0, 1 or 2, not NoneType"),
    (SINGLE, {"qos": True}, TypeError, "qos must be an int 0, 1 or 2, not bool"),
    (SINGLE, {"qos": 3}, ValueError, "qos must be 0, 1 or 2, got 3"),
    (SINGLE, {"qos": -1}, ValueError, "qos must be 0, 1 or 2, got -1"),
    (SINGLE, {"qos": 2 ** 70}, ValueError, "qos must be 0, 1 or 2, got "),
    (SINGLE, {"packet_id": "1"}, TypeError, "packet_id must be an int, not str"),
    (SINGLE, {"packet_id": 1.0}, TypeError, "packet_id must be an int, not float"),
    (SINGLE, {"packet_id": True}, TypeError, "packet_id must be an int, not bool"),
    (SINGLE, {"packet_id": 0}, ValueError, "a QoS 1 PUBLISH needs a packet_id of 1..65535, got 0"),
]


@pytest.mark.parametrize("names, overrides, error, message", CHECKS,
                         ids=[f"{k}={v!r}" for _n, o, _e, _m in CHECKS for k, v in o.items()])
def test_wrong_argument_types_raise_clearly(codec, names, overrides, error, message):
    encoders = _encoders(codec)
    for name in names:
        with pytest.raises(error) as info:
            encoders[name](**overrides)
        assert str(info.value).startswith(message), (name, str(info.value))
        assert not isinstance(info.value, MQTTError) or error is not TypeError, name


def test_valid_arguments_still_encode(codec):
    encoders = _encoders(codec)
    expected = codec.encode_publish("t", b"p", 1, 1, True, True)
    for name in SINGLE:
        result = encoders[name](retain=True, dup=True)
        assert (result == expected) if name == "encode_publish" else (result == len(expected))
    # an IntEnum is an int: a QoS enum of the caller's own works
    assert codec.encode_publish("t", b"p", QoS.AT_LEAST_ONCE, 1) == codec.encode_publish(
        "t", b"p", 1, 1)
    assert codec.encode_publish("t", b"p", QoS.AT_MOST_ONCE) == codec.encode_publish("t", b"p")
    # QoS 0 ignores packet_id, whatever it is (callers pass 0)
    assert codec.encode_publish("t", b"p", 0, 5) == codec.encode_publish("t", b"p")


def test_encode_of_a_packet_object_keeps_working(codec):
    # A Publish object's retain/dup are coerced by its class in C; encode() accepts them alike.
    pkt = codec.Publish("t", b"p", 1, 3, True, True)
    assert codec.encode(pkt) == codec.encode_publish("t", b"p", 1, 3, True, True)
    loose = codec.Publish("t", b"p", 0, 0, 1, 0)
    assert codec.encode(loose) == codec.encode_publish("t", b"p", 0, 0, True, False)


# Odd values for each argument of each encoder: both twins raise the same exception type with the
# same message, or both return the same result.
ODD = [None, "1", b"1", 1.0, True, False, -1, 0, 1, 2, 3, 2 ** 31, 2 ** 64, [], object]


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", call())
    except Exception as exc:  # noqa: BLE001  (compared across twins)
        text = str(exc)
        if " at 0x" in text:  # the repr of `object` differs by address only
            text = text.split(" at 0x")[0]
        return (type(exc).__name__, text)


@pytest.mark.parametrize("argument", ["qos", "packet_id", "retain", "dup", "protocol", "topic",
                                      "payload", "max_size"])
def test_odd_arguments_behave_alike(both, argument):
    c, py = both
    for name in ALL:
        for value in ODD:
            if argument in ("qos", "packet_id", "dup") and name not in SINGLE:
                continue
            if argument == "max_size" and not name.startswith("WriteBuffer"):
                continue
            key = "payloads" if (argument == "payload" and name not in SINGLE) else argument
            results = [_outcome(partial(_encoders(m)[name], **{key: value})) for m in (c, py)]
            assert results[0] == results[1], (name, argument, value)


@pytest.mark.parametrize("make", [
    lambda m, v: m.Connect("c", 4, username="u", password=v),
    lambda m, v: m.Will("w/t", v),
], ids=["connect-password", "will-payload"])
@pytest.mark.parametrize("value", [123, 2.5, ["x"], object()], ids=["int", "float", "list", "object"])
def test_binary_fields_refuse_what_is_not_text_or_bytes(codec, make, value):
    """``bytes(123)`` is 123 NUL bytes: a number must not become a password or a will silently."""
    with pytest.raises(TypeError, match="must be bytes"):
        make(codec, value)


def test_binary_fields_take_text_and_every_bytes_like(codec):
    for value, expected in (("pw", b"pw"), (b"pw", b"pw"), (bytearray(b"pw"), b"pw"),
                            (memoryview(b"pw"), b"pw")):
        assert codec.Connect("c", 4, username="u", password=value).password == expected
        assert codec.Will("w/t", value).payload == expected
