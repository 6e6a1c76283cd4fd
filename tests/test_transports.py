"""Transports against a real mosquitto: broker URLs (``mqtt://user:pass@host:port``, ``mqtts://``,
``unix:///path``) in the sync and asyncio clients and in ``mqttfast pub/sub/bench``, and Unix domain
sockets through mosquitto's own Unix listener (``listener 0 /path``)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from broker import Mosquitto, require_executable
from client_support import Inbox, granted, shutdown, topic, uid, wait_until

import mqttfast
from mqttfast import aio
from mqttfast.errors import ConnectionLost

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "secret"  # the auth_broker fixture's password for "alice"

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix domain sockets")


class UnixBroker:
    """A mosquitto with its usual TCP listener and a Unix socket listener at ``.path``."""

    def __init__(self) -> None:
        require_executable("mosquitto")
        # A short directory: a Unix socket path has a limit of about 100 bytes, which pytest's
        # tmp_path can pass.
        self.directory = tempfile.mkdtemp(prefix="mqf-unix-")
        self.path = os.path.join(self.directory, "mqtt.sock")
        self.mosquitto = Mosquitto(directory=self.directory,
                                   extra_config=[f"listener 0 {self.path}"])

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> "UnixBroker":
        self.mosquitto.start()
        assert wait_until(lambda: os.path.exists(self.path), 10), self.mosquitto.log_text()
        return self

    def stop(self) -> None:
        self.mosquitto.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def unix_broker() -> Iterator[UnixBroker]:
    instance = UnixBroker().start()
    try:
        yield instance
    finally:
        instance.stop()


def _family(client: mqttfast.Client) -> int:
    conn = client._conn  # the loop's Connection: which socket carries this client
    assert conn is not None and conn.sock is not None
    return conn.sock.family


# ------------------------------------------------------------------------ Unix sockets, sync


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_unix_socket_both_ways(unix_broker, qos):
    """A client on the Unix socket receives what a TCP client publishes, and the other way round,
    every message once and in order."""
    base = topic("unix")
    on_unix, on_tcp = Inbox(), Inbox()
    u = mqttfast.Client(client_id=uid("u"))
    t = mqttfast.Client(client_id=uid("t"))
    try:
        u.on_message, t.on_message = on_unix, on_tcp
        u.connect(unix_broker.url, timeout=10)
        t.connect(unix_broker.mosquitto.host, unix_broker.mosquitto.port, timeout=10)
        assert _family(u) == socket.AF_UNIX and _family(t) in (socket.AF_INET, socket.AF_INET6)
        assert granted(u.subscribe(f"{base}/to-unix", qos)) == [qos]
        assert granted(t.subscribe(f"{base}/to-tcp", qos)) == [qos]
        n = 300
        for i in range(n):
            t.publish(f"{base}/to-unix", b"t%d" % i, qos=qos)
            u.publish(f"{base}/to-tcp", b"u%d" % i, qos=qos)
        assert on_unix.wait_for(n) and on_tcp.wait_for(n)
        assert on_unix.payloads == [b"t%d" % i for i in range(n)]
        assert on_tcp.payloads == [b"u%d" % i for i in range(n)]
    finally:
        shutdown(u, t)


def test_unix_socket_missing_is_reported():
    client = mqttfast.Client(client_id=uid("u"))
    started = time.monotonic()
    try:
        with pytest.raises(ConnectionLost, match="cannot connect to /nonexistent/mqtt.sock"):
            client.connect("unix:///nonexistent/mqtt.sock", timeout=5)
        assert time.monotonic() - started < 3  # an answer, not the connect timeout
        assert not client.is_connected
    finally:
        client.close()


def test_unix_socket_not_listening_is_reported(tmp_path):
    path = str(tmp_path / "dead.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)  # the file exists, nobody listens
    client = mqttfast.Client(client_id=uid("u"))
    try:
        with pytest.raises(ConnectionLost, match="refused"):
            client.connect(f"unix://{path}", timeout=5)
    finally:
        client.close()
        dead.close()


def test_unix_socket_reconnects_after_a_broker_restart():
    instance = UnixBroker().start()
    client = mqttfast.Client(client_id=uid("u"), clean_session=False,
                             reconnect=mqttfast.Backoff(0.05, 0.2))
    inbox = Inbox()
    client.on_message = inbox
    try:
        client.connect(instance.url, timeout=10)
        base = topic("unix-restart")
        assert granted(client.subscribe(f"{base}/#", 1)) == [1]
        instance.mosquitto.stop()
        assert wait_until(lambda: not client.is_connected, 10)
        instance.mosquitto.start()
        assert wait_until(lambda: client.is_connected, 15)
        assert _family(client) == socket.AF_UNIX
        assert client.publish(f"{base}/x", b"after", qos=1).wait(10)
        assert inbox.wait_for(1) and inbox.payloads == [b"after"]
    finally:
        shutdown(client)
        instance.stop()


def test_unix_socket_with_source_address_is_refused(unix_broker):
    client = mqttfast.Client(client_id=uid("u"))
    try:
        with pytest.raises(ValueError, match="source_address"):
            client.connect(unix_broker.url, source_address=("127.0.0.1", 0))
        client.connect(unix_broker.url, timeout=10)  # the client was left as it was
        assert client.is_connected
    finally:
        shutdown(client)


# ------------------------------------------------------------------------------ URLs, sync


def test_url_credentials_reach_the_broker(auth_broker):
    url = f"mqtt://alice:{PASSWORD}@{auth_broker.host}:{auth_broker.port}"
    client = mqttfast.Client(client_id=uid("url"))
    try:
        client.connect(url, timeout=10)
        assert client.publish("a/b", b"x", qos=1).wait(5)
    finally:
        shutdown(client)
    # A wrong password in the URL is refused by the broker: the URL's credentials are used.
    client = mqttfast.Client(client_id=uid("url"))
    try:
        with pytest.raises(mqttfast.ConnectRefused) as info:
            client.connect(f"mqtt://alice:wrong@{auth_broker.host}:{auth_broker.port}", timeout=10)
        assert "wrong" not in str(info.value)
    finally:
        client.close()


def test_url_completes_the_clients_credentials(auth_broker):
    # The user from the client, the password from the URL.
    client = mqttfast.Client(client_id=uid("url"), username="alice")
    try:
        client.connect(f"mqtt://:{PASSWORD}@{auth_broker.host}:{auth_broker.port}", timeout=10)
        assert client.is_connected
    finally:
        shutdown(client)


def test_url_credentials_that_differ_raise_before_connecting(auth_broker):
    client = mqttfast.Client(client_id=uid("url"), username="alice", password=PASSWORD)
    try:
        with pytest.raises(ValueError, match="password differs") as info:
            client.connect(f"mqtt://alice:other@{auth_broker.host}:{auth_broker.port}")
        assert "other" not in str(info.value) and PASSWORD not in str(info.value)
        with pytest.raises(ValueError, match="user name"):
            client.connect(f"mqtt://bob@{auth_broker.host}:{auth_broker.port}")
        # Nothing was changed: the same client connects with its own credentials.
        client.connect(f"mqtt://{auth_broker.host}:{auth_broker.port}", timeout=10)
        assert client.is_connected
    finally:
        shutdown(client)


def test_mqtts_url(tls_broker):
    ctx = ssl.create_default_context(cafile=str(tls_broker.ca_path))
    client = mqttfast.Client(client_id=uid("tls"), tls=ctx)
    try:
        client.connect(f"mqtts://{tls_broker.server_hostname}:{tls_broker.port}", timeout=10)
        assert isinstance(client._conn.sock, ssl.SSLSocket)  # type: ignore[union-attr]
        assert client.publish("a/b", b"x", qos=1).wait(5)
    finally:
        shutdown(client)
    # With no context of its own, mqtts:// uses the system CAs, which do not know the test CA:
    # the handshake fails, so TLS was on.
    client = mqttfast.Client(client_id=uid("tls"))
    try:
        with pytest.raises(ConnectionLost, match="CERTIFICATE_VERIFY_FAILED"):
            client.connect(f"mqtts://{tls_broker.server_hostname}:{tls_broker.port}", timeout=10)
    finally:
        client.close()


@pytest.mark.parametrize("url, port, tls, message", [
    ("mqtt://127.0.0.1:1883", 1883, None, "not both"),
    ("mqtt://127.0.0.1:1883", None, True, "use mqtts://"),
    ("ws://127.0.0.1:8080/mqtt", None, None, "WebSocket"),
    ("mqtt://alice:hunter2@127.0.0.1:99999", None, None, "1..65535"),
    ("tcp://127.0.0.1", None, None, "unknown scheme"),
])
def test_bad_urls_raise_at_the_call(url, port, tls, message):
    client = mqttfast.Client(client_id=uid("bad"), tls=tls)
    try:
        with pytest.raises(ValueError, match=message) as info:
            client.connect(url, port)
        assert "hunter2" not in str(info.value)
        assert client._conn is None  # nothing was started
    finally:
        client.close()


def test_host_and_port_form_still_works(broker):
    client = mqttfast.Client(client_id=uid("old"))
    try:
        client.connect(broker.host, broker.port, timeout=10)
        assert client.publish("a/b", b"x", qos=1).wait(5)
    finally:
        shutdown(client)


# -------------------------------------------------------------------------------- asyncio


def test_aio_unix_socket_and_url(unix_broker):
    async def main() -> None:
        base = topic("aio-unix")
        sub = aio.Client(client_id=uid("au"))
        pub = aio.Client(client_id=uid("at"))
        await asyncio.wait_for(sub.connect(unix_broker.url), 10)
        m = unix_broker.mosquitto
        await asyncio.wait_for(pub.connect(f"mqtt://{m.host}:{m.port}"), 10)
        try:
            await sub.subscribe(f"{base}/#", qos=1)
            for i in range(50):
                await pub.publish(f"{base}/x", b"%d" % i, qos=1)
            got: list = []

            async def take() -> None:
                async for msg in sub.messages():
                    got.append(msg.payload)
                    if len(got) == 50:
                        return

            await asyncio.wait_for(take(), 10)
            assert got == [b"%d" % i for i in range(50)]
            assert sub._proto is not None
            sock = sub._proto.transport.get_extra_info("socket")
            assert sock.family == socket.AF_UNIX
        finally:
            await sub.disconnect()
            await pub.disconnect()

    asyncio.run(main())


def test_aio_url_credentials_and_errors(auth_broker):
    async def main() -> None:
        client = aio.Client(client_id=uid("aa"))
        with pytest.raises(ValueError, match="WebSocket"):
            await client.connect("wss://127.0.0.1/mqtt")
        with pytest.raises(ConnectionLost, match="cannot connect to /nonexistent/m.sock"):
            await client.connect("unix:///nonexistent/m.sock", timeout=5)
        await client.connect(f"mqtt://alice:{PASSWORD}@{auth_broker.host}:{auth_broker.port}")
        try:
            await client.publish("a/b", b"x", qos=1)
        finally:
            await client.disconnect()
        other = aio.Client(client_id=uid("ab"), username="alice", password=PASSWORD)
        with pytest.raises(ValueError, match="password differs"):
            await other.connect(f"mqtt://alice:nope@{auth_broker.host}:{auth_broker.port}")

    asyncio.run(main())


# ------------------------------------------------------------------------------ the CLIs


def _cli(*args: Any, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mqttfast", *[str(a) for a in args]],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=REPO)


def test_cli_pub_sub_over_a_unix_socket(unix_broker):
    name = topic("cli-unix")
    sub = subprocess.Popen([sys.executable, "-m", "mqttfast", "sub", "-L", unix_broker.url,
                            "-t", name, "-C", "1", "-W", "20", "-d"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           stdin=subprocess.DEVNULL, cwd=REPO)
    try:
        # Wait for the subscription before publishing (-d prints the SUBACK).
        probe = mqttfast.Client(client_id=uid("probe"))
        probe.connect(unix_broker.url, timeout=10)
        deadline = time.monotonic() + 20
        out = ""
        while time.monotonic() < deadline and sub.poll() is None:
            done = _cli("pub", "-L", unix_broker.url, "-t", name, "-m", "over-unix", "-q", "1")
            assert done.returncode == 0, done.stderr
            try:
                out, err = sub.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
        shutdown(probe)
        assert sub.returncode == 0
        assert out.splitlines()[-1] == "over-unix"
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(5)


@pytest.mark.parametrize("args, message", [
    (["pub", "-t", "a", "-m", "x", "-L", "ws://alice:hunter2@127.0.0.1/mqtt"], "WebSocket"),
    (["pub", "-t", "a", "-m", "x", "-L", "unix:///tmp/x.sock", "-p", "1884"], "do not apply"),
    (["pub", "-t", "a", "-m", "x", "-L", "unix://alice:hunter2@host/x.sock"], "has no host"),
])
def test_cli_url_usage_errors(args, message):
    done = _cli(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "hunter2" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_cli_unix_socket_missing():
    done = _cli("pub", "-L", "unix:///nonexistent/m.sock", "-t", "a", "-m", "x")
    assert done.returncode == 1
    assert "/nonexistent/m.sock" in done.stderr and "Traceback" not in done.stderr


def test_bench_over_a_unix_socket_and_a_url(unix_broker, tmp_path):
    pytest.importorskip("hdrh", reason="the load generator needs hdrhistogram")
    out = tmp_path / "pub.json"
    done = subprocess.run(
        [sys.executable, "-m", "mqttfast.bench", "pub", "--url", unix_broker.url, "-c", "3",
         "-i", "0", "-t", f"{topic('bench-unix')}/%i", "-q", "1", "-L", "600", "-F", "20",
         "--rate", "3000", "--json", str(out)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())["summary"]
    assert summary["sent"] == 600 and summary["acked"] == 600
    m = unix_broker.mosquitto
    done = subprocess.run(
        [sys.executable, "-m", "mqttfast.bench", "conn", "--url", f"mqtt://{m.host}:{m.port}",
         "-c", "3", "-i", "0", "--duration", "0.3"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "3 connected, 0 failed" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "mqttfast.bench", "conn", "--url", "wss://u:hunter2@h/mqtt"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)
    assert done.returncode == 2 and "WebSocket" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
