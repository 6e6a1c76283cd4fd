"""mqttfast.url: broker URLs parsed and checked, with no socket; no error message shows a password."""
from __future__ import annotations

import ssl

import pytest

from mqttfast.url import BrokerURL, credentials, is_url, parse_url, redact, target


@pytest.mark.parametrize("text, expected", [
    ("mqtt://broker", BrokerURL("mqtt", "broker", 1883, "")),
    ("mqtt://broker:1884", BrokerURL("mqtt", "broker", 1884, "")),
    ("MQTT://Broker:1884/", BrokerURL("mqtt", "broker", 1884, "/")),
    ("mqtts://broker", BrokerURL("mqtts", "broker", 8883, "")),
    ("ws://broker", BrokerURL("ws", "broker", 80, "/")),
    ("wss://broker:8443/mqtt", BrokerURL("wss", "broker", 8443, "/mqtt")),
    ("mqtt://[::1]:1883", BrokerURL("mqtt", "::1", 1883, "")),
    ("mqtt://alice@h", BrokerURL("mqtt", "h", 1883, "", "alice", None)),
    ("mqtt://alice:s3cret@h:1", BrokerURL("mqtt", "h", 1, "", "alice", "s3cret")),
    ("mqtt://a%40b:p%3Aw%2Fd@h", BrokerURL("mqtt", "h", 1883, "", "a@b", "p:w/d")),
    ("mqtt://:pw@h", BrokerURL("mqtt", "h", 1883, "", None, "pw")),
    ("mqtt://@h", BrokerURL("mqtt", "h", 1883, "")),
    ("mqtt://h/sensors/temp", BrokerURL("mqtt", "h", 1883, "/sensors/temp")),
    ("unix:///run/mosquitto.sock", BrokerURL("unix", "", 0, "/run/mosquitto.sock")),
    ("unix:///tmp/with%20space.sock", BrokerURL("unix", "", 0, "/tmp/with space.sock")),
    ("unix://u:p@/tmp/x.sock", BrokerURL("unix", "", 0, "/tmp/x.sock", "u", "p")),
])
def test_parse(text, expected):
    url = parse_url(text)
    assert url == expected
    assert url.password == expected.password  # (repr=False fields still compare)
    assert is_url(text)


def test_flags():
    assert parse_url("mqtts://h").tls and parse_url("wss://h").tls
    assert not parse_url("mqtt://h").tls and not parse_url("ws://h").tls
    assert parse_url("ws://h").websocket and parse_url("wss://h").websocket
    assert not parse_url("mqtt://h").websocket
    assert parse_url("unix:///x").unix and not parse_url("mqtt://h").unix


@pytest.mark.parametrize("text, why", [
    ("http://h", "unknown scheme"),
    ("h:1883", "unknown scheme"),
    ("mqtt://", "no host"),
    ("mqtt://:1883", "no host"),
    ("mqtt://h:0", "1..65535"),
    ("mqtt://h:65536", "1..65535"),
    ("mqtt://h:x", "1..65535"),
    ("mqtt://h:", "empty port"),
    ("mqtt://h?x=1", "query"),
    ("mqtt://h#f", "fragment"),
    ("mqtt://h /", "white space"),
    ("mqtt://h\n", "white space"),
    ("mqtt://[::1", "invalid broker URL"),
    ("unix://", "socket's path"),
    ("unix://host/x.sock", "has no host"),
    ("unix://u:p@host/x.sock", "has no host"),
    ("unix:///a%00b", "NUL"),
])
def test_rejected(text, why):
    with pytest.raises(ValueError, match="invalid broker URL") as info:
        parse_url(text)
    assert why in str(info.value)


@pytest.mark.parametrize("text", [
    "http://alice:hunter2@h", "mqtt://alice:hunter2@h:99999", "mqtt://alice:hunter2@h:x",
    "mqtt://alice:hunter2@h?q", "unix://alice:hunter2@h/x", "mqtt://alice:hunter2@[::1",
    "mqtt://alice:hunter2@", "mqtt://alice:hunter2@h /",
])
def test_password_not_in_errors(text):
    with pytest.raises(ValueError) as info:
        parse_url(text)
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


def test_password_not_in_repr_or_str():
    url = parse_url("mqtts://alice:hunter2@h/")
    assert "hunter2" not in repr(url) and "hunter2" not in str(url)
    assert str(url) == "mqtts://alice:***@h:8883"
    assert str(parse_url("mqtt://[::1]")) == "mqtt://[::1]:1883"
    assert str(parse_url("unix:///run/m.sock")) == "unix:///run/m.sock"


def test_redact():
    assert redact("mqtt://u:pw@h/t") == "mqtt://u:***@h/t"
    assert redact("mqtt://u:p@w@h") == "mqtt://u:***@h"  # the last @ ends the user-info
    assert redact("mqtt://u@h") == "mqtt://u@h"
    assert redact("not a url") == "not a url"


def test_not_a_url():
    assert not is_url("broker.example")
    assert not is_url(None)
    with pytest.raises(TypeError):
        parse_url(b"mqtt://h")  # type: ignore[arg-type]


def test_credentials():
    url = parse_url("mqtt://alice:secret@h")
    assert credentials(url, None, None) == ("alice", "secret")
    assert credentials(url, "alice", "secret") == ("alice", "secret")
    assert credentials(url, "alice", b"secret") == ("alice", b"secret")
    assert credentials(parse_url("mqtt://h"), "bob", b"x") == ("bob", b"x")
    assert credentials(parse_url("mqtt://carol@h"), None, b"x") == ("carol", b"x")
    with pytest.raises(ValueError, match="user name"):
        credentials(url, "bob", None)
    with pytest.raises(ValueError, match="password differs") as info:
        credentials(url, None, "other")
    assert "secret" not in str(info.value) and "other" not in str(info.value)


def _no_default() -> ssl.SSLContext:
    raise AssertionError("no default TLS context expected")


def test_target():
    made = ssl.create_default_context()
    assert target("mqtt://u:p@h:2", None, None, None, None, _no_default) == (
        "h", 2, None, None, "u", "p", None)
    assert target("mqtts://h", None, None, None, None, lambda: made).tls is made
    own = ssl.create_default_context()
    assert target("mqtts://h", None, own, None, None, _no_default).tls is own
    assert target("unix:///x.sock", None, None, None, None, _no_default) == (
        "", 0, "/x.sock", None, None, None, None)
    assert target("ws://h:8080/mqtt", None, None, None, None, _no_default,
                  websocket=True) == ("h", 8080, None, None, None, None, "/mqtt")
    assert target("wss://h", None, None, None, None, lambda: made, websocket=True) == (
        "h", 443, None, made, None, None, "/")


@pytest.mark.parametrize("text, port, tls, why", [
    ("mqtt://h", 1883, None, "not both"),
    ("mqtt://h", None, ssl.create_default_context(), "use mqtts://"),
    ("mqtt://h/topic", None, None, "path has no meaning"),
    ("ws://h", None, None, "WebSocket"),  # a client without WebSocket (mqttfast.aio)
    ("wss://h", None, None, "WebSocket"),
])
def test_target_rejected(text, port, tls, why):
    with pytest.raises(ValueError, match=why):
        target(text, port, tls, None, None, _no_default)
