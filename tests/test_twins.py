"""The twins stay twins: same names, same exceptions, and the selector loads the one it should."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict

import pytest

import mqttfast
from mqttfast import errors

# The directory that holds the ``mqttfast`` package this test run imports (in-tree or installed),
# so the subprocesses below import the very same one.
PACKAGE_PARENT = str(Path(mqttfast.__file__).resolve().parent.parent)

REQUIRE_C = os.environ.get("MQTTFAST_REQUIRE_C") == "1"

# The names every twin must export (a twin may export more, as long as both export the same).
PUBLIC_NAMES = {
    "Auth", "ConnAck", "Connect", "Disconnect", "Packet", "PingReq", "PingResp", "PubAck",
    "PubComp", "PubRec", "PubRel", "Publish", "StreamDecoder", "SubAck", "Subscribe",
    "Subscription", "UnsubAck", "Unsubscribe", "Will", "append_publish", "decode",
    "decode_remaining_length", "encode", "encode_ack", "encode_publish", "encode_remaining_length",
    "validate_topic", "validate_topic_filter", "append_publish_many", "WriteBuffer",
}


def test_twins_export_the_same_names(both):
    c, py = both
    assert sorted(c.__all__) == sorted(py.__all__)
    assert len(set(c.__all__)) == len(c.__all__), "duplicate name in the C twin's __all__"
    for name in py.__all__:
        assert hasattr(c, name), f"the C twin lacks {name}"
        assert hasattr(py, name), f"the pure twin lacks {name}"
        assert callable(getattr(c, name)) == callable(getattr(py, name)), name


def test_public_api_is_complete(codec):
    assert PUBLIC_NAMES <= set(codec.__all__)
    for name in codec.__all__:
        assert getattr(codec, name) is not None


def test_twins_share_the_packet_type_numbers(both):
    c, py = both
    for name in ("Publish", "PubAck", "PubRec", "PubRel", "PubComp", "Connect", "ConnAck",
                 "Subscribe", "SubAck", "Unsubscribe", "UnsubAck", "PingReq", "PingResp",
                 "Disconnect", "Auth"):
        assert int(getattr(c, name).type) == int(getattr(py, name).type), name


def test_packets_compare_equal_across_twins(both):
    c, py = both
    assert c.Publish("a/b", b"x", 1, 7) == py.Publish("a/b", b"x", 1, 7)
    assert py.Publish("a/b", b"x", 1, 7) == c.Publish("a/b", b"x", 1, 7)
    assert c.Publish("a/b", b"x", 1, 7) != py.Publish("a/b", b"y", 1, 7)
    assert c.PubAck(3) == py.PubAck(3)
    assert c.PubAck(3) != py.PubRec(3)
    assert c.PubRel(3, 0x92) != py.PubRel(3)


def test_both_twins_raise_the_shared_exceptions(codec):
    # One hierarchy in errors.py, whichever twin raised.
    with pytest.raises(errors.MalformedPacket):
        codec.decode(b"\x00\x00")
    with pytest.raises(errors.InvalidTopic):
        codec.encode_publish("a/#", b"")
    decoder = codec.StreamDecoder(max_packet_size=10)
    with pytest.raises(errors.PacketTooLarge):
        decoder.feed(b"\x30\x7f")


def test_error_hierarchy():
    assert issubclass(errors.PacketTooLarge, errors.MalformedPacket)
    assert issubclass(errors.MalformedPacket, errors.ProtocolError)
    assert issubclass(errors.ProtocolError, errors.MQTTError)
    assert issubclass(errors.InvalidTopic, ValueError)
    assert issubclass(errors.InvalidTopic, errors.MQTTError)
    assert issubclass(errors.PayloadTooLarge, ValueError)
    assert issubclass(errors.PayloadTooLarge, errors.MQTTError)
    assert not issubclass(errors.MalformedPacket, ValueError)


# --------------------------------------------------------------------------- the selector

def _selector_in_subprocess(**env_changes: str) -> Dict[str, str]:
    """Import ``mqttfast.codec`` in a fresh interpreter with the given environment changes."""
    env = {k: v for k, v in os.environ.items() if k not in ("MQTTFAST_PURE", "PYTHONPATH")}
    env.update(env_changes)
    env["PYTHONPATH"] = PACKAGE_PARENT
    code = (
        "import json, mqttfast.codec as m;"
        "print(json.dumps({'impl': m.IMPLEMENTATION, 'publish': m.Publish.__module__,"
        " 'decoder': m.StreamDecoder.__module__, 'all': sorted(m.__all__)}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=PACKAGE_PARENT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _pure_names() -> list:
    import mqttfast._codec_py as py

    return list(py.__all__)


def _c_importable() -> bool:
    try:
        import mqttfast._codec  # noqa: F401
    except ImportError:
        return False
    return True


def test_c_loaded_when_required():
    """With MQTTFAST_REQUIRE_C=1 (CI), the selector must have picked the Cython twin."""
    default = _selector_in_subprocess()
    if REQUIRE_C:
        assert default["impl"] == "c", "MQTTFAST_REQUIRE_C=1 but mqttfast.codec fell back to python"
    else:
        # Without the requirement the selector still picks C whenever C imports.
        assert default["impl"] == ("c" if _c_importable() else "python")
    expected_module = "mqttfast._codec" if default["impl"] == "c" else "mqttfast._codec_py"
    assert default["decoder"] == expected_module
    assert default["publish"] == expected_module
    assert default["all"] == sorted([*_pure_names(), "IMPLEMENTATION"])


def test_pure_forced_by_environment():
    forced = _selector_in_subprocess(MQTTFAST_PURE="1")
    assert forced["impl"] == "python"
    assert forced["decoder"] == "mqttfast._codec_py"
    assert forced["publish"] == "mqttfast._codec_py"
    assert forced["all"] == sorted([*_pure_names(), "IMPLEMENTATION"])


def test_selector_in_this_process_matches_its_implementation():
    from mqttfast import codec as selected

    twin = __import__(
        "mqttfast._codec" if selected.IMPLEMENTATION == "c" else "mqttfast._codec_py",
        fromlist=["x"])
    assert selected.IMPLEMENTATION in ("c", "python")
    assert selected.StreamDecoder is twin.StreamDecoder
    assert selected.encode_publish is twin.encode_publish
    if REQUIRE_C and not os.environ.get("MQTTFAST_PURE"):
        assert selected.IMPLEMENTATION == "c"


# --------------------------------------------------------------------------- caller-side parity

# A caller's mistake raises the same exception type in both twins, and out-of-range numbers are a
# ValueError that names the argument, not a C-level "value too large to convert to int".
OUT_OF_RANGE = [
    ("publish-packet-id-2**32", lambda m: m.encode_publish("a", b"", 1, 2 ** 32), "packet_id"),
    ("publish-packet-id-65536", lambda m: m.encode_publish("a", b"", 1, 65536), "packet_id"),
    ("publish-qos-2**32", lambda m: m.encode_publish("a", b"", 2 ** 32, 1), "qos"),
    ("publish-protocol-2**32", lambda m: m.encode_publish("a", b"", protocol=2 ** 32), "protocol"),
    ("append-packet-id-2**63", lambda m: m.append_publish(bytearray(), "a", b"", 2, 2 ** 63),
     "packet_id"),
    ("ack-packet-id-2**32", lambda m: m.encode_ack(4, 2 ** 32), "packet_id"),
    ("ack-reason-2**32", lambda m: m.encode_ack(4, 1, 2 ** 32, 5), "reason code"),
    ("ack-type-2**32", lambda m: m.encode_ack(2 ** 32, 1), "acknowledgement"),
]


@pytest.mark.parametrize("name, call, match", OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE])
def test_out_of_range_arguments_are_value_errors(codec, name, call, match):
    with pytest.raises(ValueError, match=match):
        call(codec)


def test_decode_remaining_length_refuses_negative_offset(codec):
    # A negative offset must not index from the end (pure) or read before the buffer (C).
    for data in (b"\x05\x01", bytearray(b"\x05"), memoryview(b"\x7f")):
        with pytest.raises(ValueError, match="offset"):
            codec.decode_remaining_length(data, -1)
    assert codec.decode_remaining_length(b"\x05", 1) is None  # past the end: just incomplete
    assert codec.decode_remaining_length(b"\x05", 100) is None


@pytest.mark.parametrize("bad", [None, "text", 42, ["\x00"]], ids=["None", "str", "int", "list"])
def test_decoders_need_bytes_like_input(codec, bad):
    # Not bytes at all is the caller's mistake (TypeError), never a MalformedPacket from the peer.
    with pytest.raises(TypeError):
        codec.decode(bad)
    with pytest.raises(TypeError):
        codec.StreamDecoder().feed(bad)
    with pytest.raises(TypeError):
        codec.decode_remaining_length(bad)


def test_packets_repr_and_pickle_alike(both):
    import copy
    import pickle

    c, py = both
    for build in (lambda m: m.Publish("a/b", b"x", 1, 2, True, False, {"topic_alias": 1}),
                  lambda m: m.PubRel(5, 0x92), lambda m: m.Connect("id", 5)):
        pc, pp = build(c), build(py)
        assert repr(pc) == repr(pp)
        assert pickle.loads(pickle.dumps(pc)) == pc == pp
        assert pickle.loads(pickle.dumps(pp)) == pp
        assert copy.copy(pc) == pp and copy.deepcopy(pp) == pc


def test_twins_have_the_same_signatures(both):
    # Callers pass arguments by keyword (protocol=5, properties=...): names and defaults must match.
    import inspect

    c, py = both
    for name in py.__all__:
        f_py, f_c = getattr(py, name), getattr(c, name)
        if not callable(f_py) or name in ("Packet",):
            continue
        target_py = f_py.__init__ if inspect.isclass(f_py) else f_py
        target_c = f_c.__init__ if inspect.isclass(f_c) else f_c
        try:
            sig_py, sig_c = inspect.signature(target_py), inspect.signature(target_c)
        except (TypeError, ValueError):  # a C slot wrapper without introspection
            continue
        params_py = [(p.name, p.default) for p in sig_py.parameters.values()]
        params_c = [(p.name, p.default) for p in sig_c.parameters.values()]
        if any(p.kind == p.VAR_POSITIONAL for p in sig_c.parameters.values()):
            continue  # a cdef class's __init__ hides its signature: see the keyword test below
        assert params_c == params_py, name


def test_hot_classes_take_keywords(both):
    c, py = both
    kwargs = {
        "Publish": dict(topic="t", payload=b"p", qos=1, packet_id=2, retain=True, dup=True,
                        properties={"topic_alias": 3}),
        "PubAck": dict(packet_id=1, reason_code=0x10, properties={"reason_string": "r"}),
        "PubRec": dict(packet_id=1, reason_code=0x10, properties=None),
        "PubRel": dict(packet_id=1, reason_code=0x92, properties=None),
        "PubComp": dict(packet_id=1, reason_code=0, properties=None),
    }
    for name, kw in kwargs.items():
        made_c, made_py = getattr(c, name)(**kw), getattr(py, name)(**kw)
        assert made_c == made_py
        for field, value in kw.items():
            assert getattr(made_c, field) == value, (name, field)
    for m in (c, py):
        decoder = m.StreamDecoder(protocol=5, max_packet_size=10)
        assert (decoder.protocol, decoder.max_packet_size, decoder.buffered) == (5, 10, 0)


# --------------------------------------------------------------------------- behaviour table

def _raises(call: Callable[[], object]) -> object:
    try:
        call()
    except Exception as exc:  # noqa: BLE001  (the outcome is what is compared)
        return type(exc).__name__
    return "ok"


def _set(obj: object, name: str, value: object) -> object:
    """Set an attribute; the outcome, then the value read back."""
    outcome = _raises(lambda: setattr(obj, name, value))
    return outcome, getattr(obj, name)


# Behaviours that callers may rely on and that differed between the twins (defect 13): each row
# is a name and a function of the twin; both twins must give the same answer.
BEHAVIOURS = [
    ("Publish is a Packet", lambda m: isinstance(m.Publish("t", b""), m.Packet)),
    ("PubAck is a Packet", lambda m: isinstance(m.PubAck(1), m.Packet)),
    ("PubRec is a Packet", lambda m: isinstance(m.PubRec(1), m.Packet)),
    ("PubRel is a Packet", lambda m: isinstance(m.PubRel(1), m.Packet)),
    ("PubComp is a Packet", lambda m: isinstance(m.PubComp(1), m.Packet)),
    ("Connect is a Packet", lambda m: isinstance(m.Connect("x"), m.Packet)),
    ("Publish subclass of Packet", lambda m: issubclass(m.Publish, m.Packet)),
    ("PubAck subclass of Packet", lambda m: issubclass(m.PubAck, m.Packet)),
    ("decoded Publish is a Packet", lambda m: isinstance(m.decode(b"\x30\x03\x00\x01t"), m.Packet)),
    ("decoded PubAck is a Packet", lambda m: isinstance(m.decode(b"\x40\x02\x00\x01"), m.Packet)),
    ("decoded Publish class is Publish", lambda m: m.decode(b"\x30\x03\x00\x01t").__class__
     is m.Publish),
    ("PubAck is not a Publish", lambda m: isinstance(m.PubAck(1), m.Publish)),
    ("a str is not a Packet", lambda m: isinstance("x", m.Packet)),
    ("Publish is unhashable", lambda m: _raises(lambda: hash(m.Publish("t", b"")))),
    ("PubAck is unhashable", lambda m: _raises(lambda: hash(m.PubAck(1)))),
    ("max_packet_size = 1", lambda m: _set(m.StreamDecoder(max_packet_size=10),
                                           "max_packet_size", 1)),
    ("max_packet_size = 0", lambda m: _set(m.StreamDecoder(), "max_packet_size", 0)),
    ("max_packet_size = -5", lambda m: _set(m.StreamDecoder(), "max_packet_size", -5)),
    ("max_packet_size = 2", lambda m: _set(m.StreamDecoder(), "max_packet_size", 2)),
    ("max_packet_size = None", lambda m: _set(m.StreamDecoder(max_packet_size=5),
                                              "max_packet_size", None)),
    ("max_packet_size = '10'", lambda m: _set(m.StreamDecoder(), "max_packet_size", "10")),
    ("max_packet_size = 10.0", lambda m: _set(m.StreamDecoder(), "max_packet_size", 10.0)),
    ("max_packet_size = True", lambda m: _set(m.StreamDecoder(), "max_packet_size", True)),
    ("max_packet_size = 2**80", lambda m: _set(m.StreamDecoder(), "max_packet_size", 2 ** 80)),
    ("StreamDecoder(max_packet_size=1)", lambda m: _raises(lambda: m.StreamDecoder(
        max_packet_size=1))),
    ("StreamDecoder(max_packet_size='9')", lambda m: _raises(lambda: m.StreamDecoder(
        max_packet_size="9"))),
    ("StreamDecoder(protocol=6)", lambda m: _raises(lambda: m.StreamDecoder(protocol=6))),
    ("StreamDecoder(protocol='4')", lambda m: _raises(lambda: m.StreamDecoder(protocol="4"))),
    ("protocol = 6", lambda m: _set(m.StreamDecoder(), "protocol", 6)),
    ("protocol = '5'", lambda m: _set(m.StreamDecoder(), "protocol", "5")),
    ("protocol = 5", lambda m: _set(m.StreamDecoder(), "protocol", 5)),
    ("a limit set later is enforced", lambda m: _raises(lambda: _limit_later(m))),
    ("buffered is read-only", lambda m: _raises(lambda: setattr(m.StreamDecoder(), "buffered", 3))),
    ("no new attributes", lambda m: _raises(lambda: setattr(m.StreamDecoder(), "extra", 3))),
]


def _limit_later(m: object) -> None:
    decoder = m.StreamDecoder()  # type: ignore[attr-defined]
    decoder.max_packet_size = 4
    decoder.feed(b"\x30\x05\x00\x01t")


@pytest.mark.parametrize("name, probe", BEHAVIOURS, ids=[b[0] for b in BEHAVIOURS])
def test_twins_behave_alike(both, name, probe):
    c, py = both
    assert probe(c) == probe(py)


def test_packets_are_packets(codec):
    # The answer the twins agree on: every packet is a Packet, and a decoded PUBLISH is exactly the
    # twin's Publish class (the hot path checks `pkt.__class__ is Publish`).
    for build in (lambda: codec.Publish("t"), lambda: codec.PubAck(1), lambda: codec.PubRec(1),
                  lambda: codec.PubRel(1), lambda: codec.PubComp(1), lambda: codec.PingReq()):
        assert isinstance(build(), codec.Packet)
    assert codec.decode(b"\x30\x03\x00\x01t").__class__ is codec.Publish
    assert codec.decode(b"\x40\x02\x00\x01").__class__ is codec.PubAck


def test_setting_max_packet_size_is_validated(codec):
    decoder = codec.StreamDecoder()
    for bad in (1, 0, -1):
        with pytest.raises(ValueError, match="at least 2"):
            decoder.max_packet_size = bad
    for bad in ("10", 10.0, True):
        with pytest.raises(TypeError, match="max_packet_size must be an int or None"):
            decoder.max_packet_size = bad
    assert decoder.max_packet_size is None
    decoder.max_packet_size = 4
    with pytest.raises(errors.PacketTooLarge):
        decoder.feed(b"\x30\x05\x00\x01t")
