"""The MQTT password appears in no repr, no log line, no exception message and no CLI message: they
all end up in terminals, CI logs and bug reports. Each is tried with a password no other text
contains, against a real mosquitto with a password file (``auth_broker``: alice / secret) where a
broker is needed."""
from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterable

import pytest
from client_support import uid

import mqttfast
from mqttfast import cli
from mqttfast.session import Session

PASSWORD = "hunter2-Qx7-never-shown"
ROOT = Path(__file__).resolve().parent.parent


def assert_hidden(*texts: object) -> None:
    for text in texts:
        shown = text if isinstance(text, str) else repr(text)
        assert PASSWORD not in shown, f"the password is in {shown!r}"


def exception_texts(exc: BaseException) -> Iterable[str]:
    yield str(exc)
    yield repr(exc)
    yield from (repr(arg) for arg in exc.args)


# ----------------------------------------------------------------------------- repr


@pytest.mark.parametrize("password", [PASSWORD, PASSWORD.encode()])
def test_connect_repr(codec, password):
    packet = codec.Connect("c", 4, username="u", password=password)
    decoded = codec.decode(codec.encode(packet), 4)
    assert decoded.password == PASSWORD.encode()  # it is there, only not shown
    for p in (packet, decoded):
        assert_hidden(repr(p), str(p))
        assert "password=<hidden>" in repr(p)


def test_session_repr():
    s = Session("c", 4, username="alice", password=PASSWORD)
    assert_hidden(repr(s), str(s))
    s.start(0.0)  # the CONNECT is encoded and queued: still nothing shown
    assert_hidden(repr(s), str(s), repr(s.out))


def test_client_repr_before_and_after_a_refused_connect(auth_broker):
    client = mqttfast.Client(client_id=uid("hyg"), username="alice", password=PASSWORD)
    try:
        assert_hidden(repr(client), str(client), repr(client.session), repr(client.loop_object))
        with pytest.raises(mqttfast.ConnectRefused):
            client.connect(auth_broker.host, auth_broker.port, timeout=10)
        assert_hidden(repr(client), repr(client.session), repr(client.loop_object))
    finally:
        client.close()


def test_cli_config_repr():
    """``cli.Config`` carries the Client's keyword arguments, the password among them."""
    opts = cli.parse("pub", ["-u", "alice", "-P", PASSWORD, "-t", "a", "-m", "x"])
    config = cli.configure("pub", opts)
    assert config.client_kwargs["password"] == PASSWORD.encode()
    assert_hidden(repr(config), str(config))
    assert "alice" in repr(config)  # the rest is still shown


# ----------------------------------------------------------------------------- logs, exceptions


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_no_log_line_or_exception_through_a_refused_connect(auth_broker, caplog, protocol):
    caplog.set_level(logging.DEBUG)  # every logger, the library's "mqttfast" among them
    client = mqttfast.Client(client_id=uid("hyg"), protocol=protocol, username="alice",
                             password=PASSWORD, reconnect=mqttfast.Backoff(0.05, 0.1))
    try:
        with pytest.raises(mqttfast.ConnectRefused) as info:
            client.connect(auth_broker.host, auth_broker.port, timeout=10)
    finally:
        client.close()
    assert_hidden(*exception_texts(info.value))
    for record in caplog.records:
        assert_hidden(record.getMessage(), repr(record.args))
    assert_hidden(caplog.text)


def test_no_log_line_through_an_accepted_session(auth_broker, caplog):
    """The right password (it must not be shown either): connect, publish, a dropped connection
    that reconnects, close."""
    caplog.set_level(logging.DEBUG)
    right = "secret"
    client = mqttfast.Client(client_id=uid("hyg"), username="alice", password=right,
                             reconnect=mqttfast.Backoff(0.05, 0.1))
    try:
        client.connect(auth_broker.host, auth_broker.port, timeout=10)
        assert client.publish("hyg/t", b"x", qos=1).wait(5)
    finally:
        client.close()
    for record in caplog.records:
        assert right not in record.getMessage()


def test_exception_messages_about_the_password():
    too_long = PASSWORD * (70_000 // len(PASSWORD))
    with pytest.raises(ValueError) as info:
        mqttfast.Client(client_id="c", username="alice", password=too_long)
    assert "65535" in str(info.value)
    assert_hidden(*exception_texts(info.value))
    with pytest.raises(ValueError) as info:  # MQTT 3.1.1 has no password without a user name
        mqttfast.Client(client_id="c", password=PASSWORD)
    assert_hidden(*exception_texts(info.value))


def test_connection_failure_message():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = mqttfast.Client(client_id="c", username="alice", password=PASSWORD)
    try:
        with pytest.raises(mqttfast.MQTTError) as info:
            client.connect("127.0.0.1", port, timeout=5)
    finally:
        client.close()
    assert_hidden(*exception_texts(info.value))


# ----------------------------------------------------------------------------- CLI


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mqttfast", *args], capture_output=True,
                          timeout=20, cwd=ROOT, text=True)


@pytest.mark.parametrize("tool, extra", [
    ("pub", ["-t", "a", "-m", "x", "-q", "1"]),
    ("pub", ["-t", "a", "-m", "x", "-d", "-V", "5"]),
    ("sub", ["-t", "a", "-d"]),
    ("sub", ["-t", "a", "-d", "-V", "31"]),
])
def test_cli_refused(auth_broker, tool, extra):
    result = run(tool, "-h", auth_broker.host, "-p", str(auth_broker.port), "-u", "alice",
                 "-P", PASSWORD, *extra)
    assert result.returncode == 1, result.stderr
    assert "connection refused" in result.stderr
    assert_hidden(result.stdout, result.stderr)


def test_cli_url_refused(auth_broker):
    url = f"mqtt://alice:{PASSWORD}@{auth_broker.host}:{auth_broker.port}/a"
    result = run("pub", "-L", url, "-m", "x", "-d")
    assert result.returncode == 1, result.stderr
    assert_hidden(result.stdout, result.stderr)


def test_cli_password_too_long():
    result = run("pub", "-t", "a", "-m", "x", "-u", "alice", "-P", PASSWORD * 3000)
    assert result.returncode != 0 and "65535" in result.stderr
    assert "Traceback" not in result.stderr
    assert_hidden(result.stdout, result.stderr)


@pytest.mark.parametrize("args", [
    ["pub", "-t", "a", "-m", "x", "-P", PASSWORD],  # no -u before MQTT 5
    ["pub", "-t", "a", "-m", "x", "-u", "alice", f"-P{PASSWORD}"],  # value glued to the flag
    ["sub", "-t", "a", "-u", "alice", f"-P{PASSWORD}", "-d"],
    ["pub", "-t", "a#", "-m", "x", "-u", "alice", "-P", PASSWORD],  # another flag is wrong
])
def test_cli_usage_errors(args):
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()
    assert_hidden(result.stdout, result.stderr)
