"""mqttfast.compat.paho: paho programs run unchanged but for the import, against mosquitto.

Each program in tests/paho_programs/ imports ``paho.mqtt.client as mqtt``. It runs twice in a
subprocess: as written (real paho-mqtt: proof that it is a valid paho program) and with that one
line replaced by ``import mqttfast.compat.paho as mqtt`` (with ``paho`` made unimportable, so
nothing falls through to it); both must exit 0 and print the same thing.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import pytest
import test_transports

import mqttfast.compat.paho as compat
from broker import require_module
from mqttfast.compat import _paho_types as types

PROGRAMS = Path(__file__).parent / "paho_programs"
PAHO_IMPORT = "import paho.mqtt.client as mqtt\n"
COMPAT_IMPORT = "import mqttfast.compat.paho as mqtt\n"
# Runs a program with paho unimportable (``sys.modules[name] = None`` makes import fail).
BLOCK_PAHO = ("import runpy, sys; sys.modules['paho'] = None; sys.modules['paho.mqtt'] = None; "
              "path = sys.argv[1]; sys.argv = sys.argv[1:]; runpy.run_path(path, run_name='__main__')")
TIMEOUT = 60
# The fixtures of mosquitto's websockets listeners and of its Unix socket listener.
ws_broker = test_transports.ws_broker
unix_broker = test_transports.unix_broker

paho = require_module("paho.mqtt.client", "the reference runs need paho-mqtt "
                           "(in the test extra: pip install -e '.[test]')")


def _run(argv: List[str], tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=tmp, env=env)


def _both(name: str, args: List[str], tmp: Path) -> str:
    """Run program ``name`` with paho and with the compat layer; their output, once equal."""
    source = (PROGRAMS / name).read_text()
    assert source.count(PAHO_IMPORT) == 1, f"{name} must import paho.mqtt.client as mqtt once"
    compat_path = tmp / f"compat_{name}"
    compat_path.write_text(source.replace(PAHO_IMPORT, COMPAT_IMPORT))
    real = _run([str(PROGRAMS / name), *args], tmp)
    assert real.returncode == 0, f"{name} under real paho failed:\n{real.stdout}\n{real.stderr}"
    ours = _run(["-c", BLOCK_PAHO, str(compat_path), *args], tmp)
    assert ours.returncode == 0, f"{name} under mqttfast.compat.paho failed:\n{ours.stdout}\n" \
                                 f"{ours.stderr}"
    assert ours.stdout == real.stdout, f"{name}: outputs differ"
    assert real.stdout.strip(), f"{name} printed nothing"
    return ours.stdout


@pytest.mark.parametrize("name", ["pub_sub_v2.py", "loop_forever_v1.py", "callbacks_v5.py",
                                  "manual_loop.py", "async_forever.py"])
def test_program_same_output(name: str, broker, tmp_path: Path) -> None:
    _both(name, [broker.host, str(broker.port)], tmp_path)


def test_program_errors(broker, auth_broker, tmp_path: Path) -> None:
    out = _both("errors.py", [broker.host, str(broker.port), str(auth_broker.port)], tmp_path)
    assert "closed port: ConnectionRefusedError True" in out
    assert "connect: Not authorized failure=True" in out or \
        "connect: Bad user name or password failure=True" in out


def test_program_tls(tls_broker, tmp_path: Path) -> None:
    out = _both("tls_async.py", [tls_broker.host, str(tls_broker.port), str(tls_broker.ca_path)],
                tmp_path)
    assert "published: [True, True, True, True, True]" in out


def test_program_websockets_and_unix_transports(ws_broker, unix_broker, tmp_path: Path) -> None:
    """transport="websockets" (ws, and wss after tls_set) and transport="unix": each a round
    trip through mosquitto's own listeners, with the same output as under paho."""
    files = ws_broker.files
    out = _both("transports_v2.py", ["127.0.0.1", str(ws_broker.ws_port), str(ws_broker.wss_port),
                                     files.server_hostname, str(files.ca_path), unix_broker.path],
                tmp_path)
    for name in ("ws", "wss", "unix"):
        assert f"{name}: published=True" in out
        assert f"{name}: messages=[('compat/transports/{name}', b'over {name}', 1)]" in out


def test_program_pure_twin(broker, tmp_path: Path) -> None:
    """The same program on the pure-Python codec (the face is above the codec; one run shows
    nothing in it depends on the C twin)."""
    source = (PROGRAMS / "pub_sub_v2.py").read_text().replace(PAHO_IMPORT, COMPAT_IMPORT)
    path = tmp_path / "pure.py"
    path.write_text(source)
    env = dict(os.environ, MQTTFAST_PURE="1", PYTHONWARNINGS="ignore::DeprecationWarning")
    done = subprocess.run([sys.executable, str(path), broker.host, str(broker.port)],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 0, done.stderr
    assert "published: [(2, 'Success'), (3, 'Success'), (4, 'Success')]" in done.stdout


# ---------------------------------------------------------------------------------- value types


def test_constants_match_paho() -> None:
    for name in dir(paho):
        if name.startswith(("MQTT_ERR_", "MQTTv", "CONNACK_", "MQTT_LOG_")) or name in (
                "MQTT_CLEAN_START_FIRST_ONLY",):
            assert getattr(compat, name) == getattr(paho, name), name
    assert [v.value for v in compat.CallbackAPIVersion] == \
        [v.value for v in paho.CallbackAPIVersion]
    for code in range(-1, 17):
        assert compat.error_string(code) == paho.error_string(code), code
    for code in range(6):
        assert compat.connack_string(code) == paho.connack_string(code)


def test_reason_codes_match_paho() -> None:
    from paho.mqtt.reasoncodes import ReasonCode as PahoReasonCode

    compared = 0
    for code in PahoReasonCode.names:
        for packet in range(1, 16):
            try:
                theirs = PahoReasonCode(packet, identifier=code)
            except (KeyError, ValueError):
                continue  # not a code that packet carries
            ours = compat.ReasonCode(packet, identifier=code)
            assert (str(ours), repr(ours), ours.value, ours.is_failure) == \
                (str(theirs), repr(theirs), theirs.value, theirs.is_failure)
            assert ours == theirs and ours == code and ours == str(theirs)
            compared += 1
    assert compared > 60
    assert compat.ReasonCode(compat.PacketTypes.DISCONNECT, "Success").getName() == \
        "Normal disconnection"


def test_properties_round_trip_with_paho_objects() -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties as PahoProperties

    theirs = PahoProperties(PacketTypes.PUBLISH)
    theirs.UserProperty = ("a", "1")
    theirs.UserProperty = ("b", "2")
    theirs.MessageExpiryInterval = 30
    theirs.ContentType = "text/plain"
    as_dict = types.props_to_dict(theirs)
    assert as_dict == {"user_property": [("a", "1"), ("b", "2")], "message_expiry_interval": 30,
                       "content_type": "text/plain"}
    ours = compat.Properties.from_dict(compat.PacketTypes.PUBLISH, as_dict)
    assert str(ours) == str(theirs)
    assert types.props_to_dict(ours) == as_dict
    connack = compat.Properties.from_dict(compat.PacketTypes.CONNACK, {"maximum_qos": 1})
    assert connack.MaximumQoS == 1  # paho's spelling, not MaximumQos
    with pytest.raises(AttributeError):
        ours.NotAProperty = 1


def test_message_info_unpacks_like_paho() -> None:
    info = compat.MQTTMessageInfo(7)
    rc, mid = info
    assert (rc, mid) == (0, 7) and info[0] == 0 and info[1] == 7
    assert str(info) == str(paho.MQTTMessageInfo(7))
    with pytest.raises(IndexError):
        info[2]
    info.rc = compat.MQTT_ERR_NO_CONN
    with pytest.raises(RuntimeError):
        info.wait_for_publish(0.1)
    info.rc = compat.MQTT_ERR_QUEUE_SIZE
    with pytest.raises(ValueError):
        info.is_published()


# ---------------------------------------------------------------------------------- behaviour


def test_ws_set_options_checks_its_headers() -> None:
    client = compat.Client(compat.CallbackAPIVersion.VERSION2, transport="websockets")
    with pytest.raises(ValueError):
        client.ws_set_options(headers="not a dict")


@pytest.mark.parametrize("headers", [{"X-Token": "abc"}, lambda h: dict(h, **{"X-Token": "abc"})])
def test_websocket_upgrade_request_and_refusal(headers) -> None:
    """The upgrade goes to ws_set_options' path with its headers and paho's Origin; a refused
    upgrade raises paho's WebsocketConnectionError from connect()."""
    fake = test_transports.FakeHTTP(b"HTTP/1.1 404 Not Found\r\n\r\n")
    client = compat.Client(compat.CallbackAPIVersion.VERSION2, transport="websockets")
    client.ws_set_options(path="/custom/mqtt", headers=headers)
    try:
        with pytest.raises(compat.WebsocketConnectionError, match="404"):
            client.connect("127.0.0.1", fake.port)
    finally:
        fake.close()
    request = fake.request.decode()
    assert request.startswith("GET /custom/mqtt HTTP/1.1\r\n")
    assert "\r\nX-Token: abc\r\n" in request
    assert f"\r\nOrigin: https://127.0.0.1:{fake.port}\r\n" in request
    assert request.lower().count("\r\nhost:") == 1


def test_external_loop_calls_refuse_clearly() -> None:
    client = compat.Client(compat.CallbackAPIVersion.VERSION2)
    with pytest.raises(NotImplementedError, match="loop_start"):
        client.loop_read()
    with pytest.raises(NotImplementedError):
        client.socket()


def test_publish_from_many_threads_gets_every_on_publish(broker) -> None:
    """Acknowledgements race the return of publish(): every mid still reaches on_publish once."""
    client = compat.Client(compat.CallbackAPIVersion.VERSION2, client_id="compat-race")
    mids: List[int] = []
    lock = threading.Lock()

    def on_publish(c, userdata, mid, reason_code, properties) -> None:
        with lock:
            mids.append(mid)

    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos: List[compat.MQTTMessageInfo] = []

    def publisher() -> None:
        for i in range(500):
            info = client.publish("compat/race", b"%d" % i, qos=1 + i % 2)
            with lock:
                infos.append(info)

    threads = [threading.Thread(target=publisher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    assert sorted(mids) == sorted(info.mid for info in infos)
    assert len(set(mids)) == 2000


def test_qos0_on_publish_and_publish_from_callback(broker) -> None:
    """paho calls on_publish for QoS 0 once written; a publish made inside it goes out at once."""
    with pytest.warns(DeprecationWarning):  # as paho warns about VERSION1
        client = compat.Client(compat.CallbackAPIVersion.VERSION1, client_id="compat-q0")
    seen: List[int] = []
    done = threading.Event()

    def on_publish(c, userdata, mid) -> None:
        seen.append(mid)
        if len(seen) < 20:
            c.publish("compat/q0", b"next")
        else:
            done.set()

    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish("compat/q0", b"first")
    assert done.wait(5), f"chain stopped after {len(seen)}"
    client.disconnect()
    client.loop_stop()
    assert seen == list(range(1, 21))


def test_reconnect_after_the_broker_restarts(broker_factory) -> None:
    """paho's shape of a drop under loop_start: on_disconnect (connection lost), then, once the
    broker is back, on_connect again; the program's resubscribe in on_connect works."""
    broker = broker_factory()
    client = compat.Client(compat.CallbackAPIVersion.VERSION2, client_id="compat-restart")
    client.reconnect_delay_set(0.1, 0.5)
    events: List[str] = []
    connects = threading.Semaphore(0)
    got = threading.Event()

    def on_connect(c, userdata, flags, reason_code, properties) -> None:
        events.append(f"connect {reason_code}")
        c.subscribe("compat/restart", 1)
        connects.release()

    client.on_connect = on_connect
    client.on_disconnect = lambda c, u, flags, rc, p: events.append(
        f"disconnect {rc} server={flags.is_disconnect_packet_from_server}")
    client.on_message = lambda c, u, m: got.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert connects.acquire(timeout=5)
    broker.restart()
    assert connects.acquire(timeout=15), events
    info = client.publish("compat/restart", b"back", qos=1)
    info.wait_for_publish(5)
    assert info.is_published() and got.wait(5)
    client.disconnect()
    client.loop_stop()
    assert events[:3] == ["connect Success", "disconnect Unspecified error server=False",
                          "connect Success"], events
    assert events[-1] == "disconnect Normal disconnection server=False"


def test_reconnect_call_starts_a_new_connection(broker) -> None:
    """reconnect() drops the connection without on_disconnect (as paho) and connects again."""
    client = compat.Client(compat.CallbackAPIVersion.VERSION2, client_id="compat-reconnect")
    events: List[str] = []
    client.on_connect = lambda c, u, f, rc, p: events.append("connect")
    client.on_disconnect = lambda c, u, f, rc, p: events.append("disconnect")
    client.connect(broker.host, broker.port)
    assert client.reconnect() == compat.MQTT_ERR_SUCCESS
    client.loop(0.1)
    assert client.is_connected()
    client.disconnect()
    client.loop(0.1)
    assert events == ["connect", "connect", "disconnect"]


def test_manual_ack(broker) -> None:
    """manual_ack=True: a QoS 1 message is acknowledged when the program calls ack(mid, qos)."""
    client = compat.Client(compat.CallbackAPIVersion.VERSION2, client_id="compat-ack",
                           manual_ack=True)
    messages: List[compat.MQTTMessage] = []
    client.on_message = lambda c, u, m: messages.append(m)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe("compat/ack", 1)
    client.publish("compat/ack", b"1", qos=1).wait_for_publish(5)
    deadline = threading.Event()
    for _ in range(50):
        if messages:
            break
        deadline.wait(0.1)
    assert messages and messages[0].qos == 1
    assert client.ack(messages[0].mid, 1) == compat.MQTT_ERR_SUCCESS
    assert client.ack(messages[0].mid, 1) == compat.MQTT_ERR_NOT_FOUND  # once only
    client.disconnect()
    client.loop_stop()
