"""Transports against a real mosquitto: broker URLs (``mqtt://user:pass@host:port``, ``mqtts://``,
``unix:///path``, ``ws://``, ``wss://``) in the sync and asyncio clients and in
``mqttfast pub/sub/bench``, Unix domain sockets through mosquitto's own Unix listener
(``listener 0 /path``) and MQTT over WebSocket through its websockets listener."""
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
from broker import Mosquitto, free_port, make_tls_files, require_executable, require_module
from client_support import Inbox, granted, shutdown, topic, uid, wait_until

import mqttfast
from mqttfast import aio
from mqttfast.errors import ConnectionLost

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "secret"  # the auth_broker fixture's password for "alice"

from test_aio_client import take as aio_take  # noqa: E402

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
    ("ws://127.0.0.1:8080/mqtt?x=1", None, None, "query"),
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
        with pytest.raises(ValueError, match="ws_headers need a ws:// or wss:// URL"):
            await client.connect("mqtt://127.0.0.1:1", ws_headers={"A": "b"})
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
    (["pub", "-t", "a", "-m", "x", "-L", "ws://alice:hunter2@127.0.0.1:0/mqtt"], "1..65535"),
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
    require_module("hdrh", "the load generator needs hdrhistogram")
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
        [sys.executable, "-m", "mqttfast.bench", "conn", "--url", "wss://u:hunter2@h:x/mqtt"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)
    assert done.returncode == 2 and "1..65535" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


# ------------------------------------------------------------------------------ WebSocket


class WsBroker:
    """A mosquitto with its plain listener, a websockets one (``.ws_port``) and a websockets one
    over TLS (``.wss_port``, trustme certificates: ``.files``). Debian's mosquitto 2.0.11 binds
    a websockets listener to every address unless ``socket_domain ipv4`` is set."""

    def __init__(self) -> None:
        require_executable("mosquitto")
        self.directory = Path(tempfile.mkdtemp(prefix="mqf-ws-"))
        self.files = make_tls_files(self.directory)
        self.ws_port, self.wss_port = free_port(), free_port()
        self.mosquitto = Mosquitto(directory=self.directory, extra_config=[
            f"listener {self.ws_port} 127.0.0.1", "protocol websockets", "socket_domain ipv4",
            "", f"listener {self.wss_port} 127.0.0.1", "protocol websockets",
            "socket_domain ipv4", f"cafile {self.files.ca_path}",
            f"certfile {self.files.server_cert_path}", f"keyfile {self.files.server_key_path}"])

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.files.ca_path))


@pytest.fixture(scope="module")
def ws_broker() -> Iterator[WsBroker]:
    instance = WsBroker()
    instance.mosquitto.start()
    from broker import port_accepts

    assert wait_until(lambda: port_accepts(instance.ws_port) and port_accepts(instance.wss_port),
                      10), instance.mosquitto.log_text()
    try:
        yield instance
    finally:
        instance.mosquitto.stop()
        shutil.rmtree(instance.directory, ignore_errors=True)


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_websocket_both_ways(ws_broker, scheme, qos):
    """A WebSocket client receives what a TCP client publishes and the other way round, every
    message once and in order (small messages: mosquitto 2.0.11 sends a websockets client at
    most 4 KiB per 100 ms, measured)."""
    base = topic("ws")
    on_ws, on_tcp = Inbox(), Inbox()
    port = ws_broker.ws_port if scheme == "ws" else ws_broker.wss_port
    w = mqttfast.Client(client_id=uid("w"), tls=ws_broker.tls() if scheme == "wss" else None)
    t = mqttfast.Client(client_id=uid("t"))
    try:
        w.on_message, t.on_message = on_ws, on_tcp
        w.connect(f"{scheme}://{ws_broker.files.server_hostname}:{port}/mqtt", timeout=10)
        assert w._conn is not None and w._conn.ws is not None and w._conn.ws.open
        assert isinstance(w._conn.sock, ssl.SSLSocket) is (scheme == "wss")
        t.connect(ws_broker.mosquitto.host, ws_broker.mosquitto.port, timeout=10)
        assert granted(w.subscribe(f"{base}/to-ws", qos)) == [qos]
        assert granted(t.subscribe(f"{base}/to-tcp", qos)) == [qos]
        n = 200
        for i in range(n):
            t.publish(f"{base}/to-ws", b"t%d" % i, qos=qos)
        big = os.urandom(300_000)  # many frames' worth the other way
        for i in range(n):
            w.publish(f"{base}/to-tcp", b"w%d" % i, qos=qos)
        w.publish(f"{base}/to-tcp", big, qos=qos)
        assert on_ws.wait_for(n, 20) and on_tcp.wait_for(n + 1, 20)
        assert on_ws.payloads == [b"t%d" % i for i in range(n)]
        assert on_tcp.payloads == [b"w%d" % i for i in range(n)] + [big]
    finally:
        shutdown(w, t)


def test_websocket_keepalive_and_clean_close(ws_broker):
    """PINGREQ/PINGRESP travel in frames; disconnect() ends with DISCONNECT, which the broker
    logs as a clean disconnection (not a socket error)."""
    client = mqttfast.Client(client_id=uid("wk"))
    try:
        client.connect(f"ws://127.0.0.1:{ws_broker.ws_port}/mqtt", keepalive=1, timeout=10)
        time.sleep(2.5)  # two keep-alive periods: pings answered, or the client would drop
        assert client.is_connected
        assert client.publish("a/b", b"x", qos=1).wait(5)
        # QoS 0 handles complete once written: the loop counts the MQTT bytes inside frames.
        handles = [client.publish("a/b", b"y" * size, qos=0) for size in (1, 200, 70_000)]
        assert all(h.wait(5) for h in handles)
        assert client.session.pending_bytes == 0
    finally:
        client.disconnect(timeout=5)
    assert wait_until(lambda: f"Client {client.client_id} disconnected." in
                      ws_broker.mosquitto.log_text(), 5)


def test_websocket_reconnects_after_a_broker_restart():
    instance = WsBroker()
    instance.mosquitto.start()
    client = mqttfast.Client(client_id=uid("wr"), reconnect=mqttfast.Backoff(0.05, 0.2))
    try:
        client.connect(f"ws://127.0.0.1:{instance.ws_port}/mqtt", timeout=10)
        instance.mosquitto.stop()
        assert wait_until(lambda: not client.is_connected, 10)
        instance.mosquitto.start()
        assert wait_until(lambda: client.is_connected, 15)
        assert client._conn is not None and client._conn.ws is not None
        assert client.publish("a/b", b"after", qos=1).wait(10)
    finally:
        shutdown(client)
        instance.mosquitto.stop()
        shutil.rmtree(instance.directory, ignore_errors=True)


class FakeHTTP:
    """A listener that records one upgrade request and answers it with ``reply`` (for what no
    broker shows: the request's headers, and a refused upgrade)."""

    def __init__(self, reply: Any, after: Any = ()) -> None:
        import threading

        self.after = list(after)  # (bytes to send, then bytes to read) once the reply is out
        self.received = b""
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.request = b""
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            conn.settimeout(5)
            while b"\r\n\r\n" not in self.request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                self.request += chunk
            conn.sendall(self.reply(self.request) if callable(self.reply) else self.reply)
            for send, want in self.after:
                conn.sendall(send)
                while len(self.received) < want:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    self.received += chunk
            time.sleep(0.5)

    def close(self) -> None:
        self.thread.join(5)
        self.server.close()


def test_websocket_path_headers_and_refusal():
    fake = FakeHTTP(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    client = mqttfast.Client(client_id=uid("wf"))
    try:
        with pytest.raises(ConnectionLost, match="refused the WebSocket upgrade.*403"):
            client.connect(f"ws://127.0.0.1:{fake.port}/custom/path", timeout=5,
                           ws_headers={"Authorization": "Bearer abc", "X-Tenant": "7"})
    finally:
        client.close()
        fake.close()
    lines = fake.request.decode().split("\r\n")
    assert lines[0] == "GET /custom/path HTTP/1.1"
    for line in (f"Host: 127.0.0.1:{fake.port}", "Sec-WebSocket-Protocol: mqtt",
                 "Authorization: Bearer abc", "X-Tenant: 7"):
        assert line in lines


def test_websocket_not_an_http_server(broker):
    """ws:// to a plain MQTT listener: mosquitto does not answer HTTP; the client gives up at the
    connect timeout with a reason instead of hanging."""
    client = mqttfast.Client(client_id=uid("wn"), connect_timeout=1.0)
    try:
        with pytest.raises(ConnectionLost):
            client.connect(f"ws://127.0.0.1:{broker.port}/mqtt", timeout=5)
        assert not client.is_connected
    finally:
        client.close()


def test_ws_headers_without_a_websocket_url(broker):
    client = mqttfast.Client(client_id=uid("wh"))
    try:
        with pytest.raises(ValueError, match="ws_headers"):
            client.connect(broker.host, broker.port, ws_headers={"A": "b"})
        with pytest.raises(ValueError, match="invalid WebSocket header"):
            client.connect(f"ws://127.0.0.1:{broker.port}/", ws_headers={"A": "b\r\nC: d"})
        assert client._conn is None
    finally:
        client.close()


def test_cli_and_bench_over_websocket(ws_broker, tmp_path):
    name = topic("cli-ws")
    probe = mqttfast.Client(client_id=uid("probe"))
    inbox = Inbox()
    probe.on_message = inbox
    try:
        probe.connect(ws_broker.mosquitto.host, ws_broker.mosquitto.port, timeout=10)
        assert granted(probe.subscribe(f"{name}/#", 1)) == [1]
        done = _cli("pub", "-L", f"ws://127.0.0.1:{ws_broker.ws_port}/mqtt", "-t", f"{name}/a",
                    "-m", "over-ws", "-q", "1")
        assert done.returncode == 0, done.stderr
        done = _cli("pub", "-L", f"wss://{ws_broker.files.server_hostname}:{ws_broker.wss_port}/",
                    "--cafile", ws_broker.files.ca_path, "-t", f"{name}/b", "-m", "over-wss",
                    "-q", "1")
        assert done.returncode == 0, done.stderr
        assert inbox.wait_for(2) and sorted(inbox.payloads) == [b"over-ws", b"over-wss"]
    finally:
        shutdown(probe)
    require_module("hdrh", "the load generator needs hdrhistogram")
    out = tmp_path / "pub.json"
    done = subprocess.run(
        [sys.executable, "-m", "mqttfast.bench", "pub", "--url",
         f"ws://127.0.0.1:{ws_broker.ws_port}/mqtt", "-c", "3", "-i", "0", "-t",
         f"{name}/bench/%i", "-q", "1", "-L", "600", "-F", "20", "--rate", "3000",
         "--json", str(out)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=REPO)
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())["summary"]
    assert summary["sent"] == 600 and summary["acked"] == 600


@pytest.mark.parametrize("frames, message", [
    (b"\x82\x84\0\0\0\0\x20\x02\0\0", "masked"),  # a masked server frame
    (b"\x81\x04\x20\x02\0\0", "text"),  # MQTT in a text frame
    (b"\x82\x7f" + (1 << 63).to_bytes(8, "big"), "top bit"),
    (b"\x88\x02\x03\xf0", "closed the WebSocket \\(1008"),  # the broker closes (1008)
    (b"\x82\x04\x20\x02\0\0", "before the CONNECT"),  # MQTT bytes before we sent any
])
def test_hostile_websocket_peer_ends_the_connection_cleanly(frames, message):
    """After a good upgrade, frames no broker may send: the connect fails with the reason, and
    the client's loop thread lives on (a second connect works)."""
    from mqttfast.websocket import accept_for

    def reply(request: bytes) -> bytes:
        key = next(line.split(":", 1)[1].strip() for line in request.decode().split("\r\n")
                   if line.lower().startswith("sec-websocket-key:"))
        return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Protocol: mqtt\r\n"
                b"Sec-WebSocket-Accept: " + accept_for(key.encode()) + b"\r\n\r\n" + frames)

    fake = FakeHTTP(reply)
    client = mqttfast.Client(client_id=uid("wh"))
    try:
        with pytest.raises(mqttfast.MQTTError, match=message):
            client.connect(f"ws://127.0.0.1:{fake.port}/mqtt", timeout=5)
        fake.close()
        again = FakeHTTP(b"HTTP/1.1 404 Not Found\r\n\r\n")
        with pytest.raises(ConnectionLost, match="404"):
            client.connect(f"ws://127.0.0.1:{again.port}/mqtt", timeout=5)
        again.close()
    finally:
        client.close()


def _upgrade_reply(request: bytes) -> bytes:
    from mqttfast.websocket import accept_for

    key = next(line.split(":", 1)[1].strip() for line in request.decode().split("\r\n")
               if line.lower().startswith("sec-websocket-key:"))
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Protocol: mqtt\r\n"
            b"Sec-WebSocket-Accept: " + accept_for(key.encode()) + b"\r\n\r\n")


def test_websocket_ping_answered_and_close_reported_when_connected():
    """Connected (a CONNACK in a frame), the peer pings (the client answers with a masked pong
    carrying the same data), then closes with 1001: the client reports the code and reason."""
    client_id = uid("wp")
    connect_frame = 2 + 4 + 2 + 10 + 2 + len(client_id)  # frame header, mask, 3.1.1 CONNECT
    fake = FakeHTTP(_upgrade_reply, after=[
        (b"", connect_frame),
        (b"\x82\x04\x20\x02\x00\x00" + b"\x89\x03abc", connect_frame + 2 + 4 + 3),
        (b"\x88\x06\x03\xe9" + b"bye!", 0),
    ])
    ended: list = []
    client = mqttfast.Client(client_id=client_id)
    client.on_disconnect = ended.append
    try:
        client.connect(f"ws://127.0.0.1:{fake.port}/mqtt", timeout=5)
        assert wait_until(lambda: bool(ended), 5)
        assert "closed the WebSocket (1001 bye!)" in str(ended[0].error)
    finally:
        client.close()
        fake.close()
    from test_websocket import unmask

    _, _, rest = unmask(fake.received)  # the CONNECT's frame
    b0, body, _ = unmask(rest)
    assert b0 == 0x8A and body == b"abc"  # a final pong with the ping's data


# ------------------------------------------------------------------ WebSocket, asyncio client
# Every test below runs on the default loop and on uvloop (conftest.py's loop factories).


async def _aio_take(client: aio.Client, n: int, timeout: float = 20.0) -> list:
    return await aio_take(client, n, timeout)


@pytest.mark.asyncio
@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_aio_websocket_both_ways(ws_broker, scheme):
    """An asyncio client on ws:// or wss:// subscribes, publishes QoS 0/1/2 and receives its own
    messages, and those of a TCP client; a message over 64 KiB (an 8-byte frame length going
    out; mosquitto sends a websockets client 4 KiB at a time) arrives intact both ways; every
    MQTT byte handed to the transport inside frames is counted as sent (pending_bytes back to
    0)."""
    base = topic("aws")
    port = ws_broker.ws_port if scheme == "ws" else ws_broker.wss_port
    w = aio.Client(client_id=uid("aw"), tls=ws_broker.tls() if scheme == "wss" else None)
    t = aio.Client(client_id=uid("at"))
    try:
        await asyncio.wait_for(
            w.connect(f"{scheme}://{ws_broker.files.server_hostname}:{port}/mqtt"), 10)
        assert w.is_connected
        assert w._proto is not None and w._proto.ws is not None and w._proto.ws.open
        ssl_object = w._proto.transport.get_extra_info("ssl_object")
        assert (ssl_object is not None) is (scheme == "wss")
        await asyncio.wait_for(t.connect(ws_broker.mosquitto.host, ws_broker.mosquitto.port), 10)
        assert (await w.subscribe(f"{base}/#", qos=2)).reason_codes == (2,)
        assert (await t.subscribe(f"{base}/from-ws/#", qos=2)).reason_codes == (2,)
        for qos in (0, 1, 2):
            handle = await asyncio.wait_for(w.publish(f"{base}/from-ws/{qos}", b"w%d" % qos,
                                                      qos=qos), 10)
            assert handle.done
        got = await _aio_take(w, 3)
        assert [(m.topic, m.payload, m.qos) for m in got] == [
            (f"{base}/from-ws/{q}", b"w%d" % q, q) for q in (0, 1, 2)]
        assert [m.payload for m in await _aio_take(t, 3)] == [b"w0", b"w1", b"w2"]
        for i in range(50):
            t.publish_nowait(f"{base}/to-ws", b"t%d" % i, qos=i % 3)
        got = await _aio_take(w, 50)
        for qos in (0, 1, 2):  # mosquitto may pass QoS 0 ahead of QoS 1/2: in order per QoS
            assert [m.payload for m in got if m.qos == qos] == [
                b"t%d" % i for i in range(50) if i % 3 == qos]
        big = os.urandom(80_000)
        await asyncio.wait_for(w.publish(f"{base}/from-ws/big", big, qos=1), 10)
        (mine,), (theirs,) = await _aio_take(w, 1), await _aio_take(t, 1)
        assert mine.payload == big and theirs.payload == big
        handles = [w.publish_nowait(f"{base}/q0", b"y" * size) for size in (1, 200, 70_000)]
        assert all(await asyncio.wait_for(asyncio.gather(*(h.wait() for h in handles)), 10))
        assert w.pending_bytes == 0
    finally:
        for c in (w, t):
            await asyncio.wait_for(c.disconnect(), 10)


@pytest.mark.asyncio
async def test_aio_websocket_keepalive_and_clean_close(ws_broker):
    """PINGREQ/PINGRESP travel in frames; disconnect() sends DISCONNECT (then a close frame),
    which mosquitto logs as a clean disconnection, not a socket error."""
    client = aio.Client(client_id=uid("ak"))
    await asyncio.wait_for(client.connect(f"ws://127.0.0.1:{ws_broker.ws_port}/mqtt",
                                          keepalive=1), 10)
    try:
        await asyncio.sleep(2.5)  # two keep-alive periods: pings answered, or the client drops
        assert client.is_connected
        await asyncio.wait_for(client.publish("a/b", b"x", qos=1), 5)
    finally:
        await asyncio.wait_for(client.disconnect(), 10)
    assert wait_until(lambda: f"Client {client.client_id} disconnected." in
                      ws_broker.mosquitto.log_text(), 5)


@pytest.mark.asyncio
async def test_aio_websocket_broker_drop_is_connection_lost_and_reconnects():
    """The broker goes away: on_disconnect gets a ConnectionLost; the client reconnects with a
    new upgrade once it is back, and a client without reconnect ends messages() with
    ConnectionLost."""
    from broker import port_accepts

    instance = WsBroker()
    loop = asyncio.get_running_loop()

    async def start() -> None:  # in a thread: the clients' loop keeps running meanwhile
        await loop.run_in_executor(None, instance.mosquitto.start)
        assert await loop.run_in_executor(None, wait_until,
                                          lambda: port_accepts(instance.ws_port), 10)

    await start()
    url = f"ws://127.0.0.1:{instance.ws_port}/mqtt"
    ended: list = []
    again = aio.Client(client_id=uid("ar"), reconnect=mqttfast.Backoff(0.05, 0.2))
    once = aio.Client(client_id=uid("ao"))
    again.on_disconnect = ended.append
    try:
        await asyncio.wait_for(again.connect(url), 10)
        await asyncio.wait_for(once.connect(url), 10)
        first = again._proto
        await loop.run_in_executor(None, instance.mosquitto.stop)
        with pytest.raises(ConnectionLost):
            await _aio_take(once, 1, 10)
        for _ in range(500):
            if ended:
                break
            await asyncio.sleep(0.01)
        assert ended and isinstance(ended[0].error, ConnectionLost) and ended[0].will_reconnect
        await start()
        for _ in range(1500):
            if again.is_connected:
                break
            await asyncio.sleep(0.01)
        assert again.is_connected and again._proto is not first and again._proto.ws.open
        await asyncio.wait_for(again.publish("a/b", b"after", qos=1), 10)
    finally:
        await asyncio.wait_for(again.disconnect(), 10)
        await once.close()
        instance.mosquitto.stop()
        shutil.rmtree(instance.directory, ignore_errors=True)


@pytest.mark.asyncio
async def test_aio_websocket_path_headers_and_refusal(broker):
    fake = FakeHTTP(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    client = aio.Client(client_id=uid("af"))
    try:
        with pytest.raises(ConnectionLost, match="refused the WebSocket upgrade.*403"):
            await client.connect(f"ws://127.0.0.1:{fake.port}/custom/path", timeout=5,
                                 ws_headers={"Authorization": "Bearer abc", "X-Tenant": "7"})
    finally:
        await client.close()
        await asyncio.get_running_loop().run_in_executor(None, fake.close)
    lines = fake.request.decode().split("\r\n")
    assert lines[0] == "GET /custom/path HTTP/1.1"
    for line in (f"Host: 127.0.0.1:{fake.port}", "Sec-WebSocket-Protocol: mqtt",
                 "Authorization: Bearer abc", "X-Tenant: 7"):
        assert line in lines
    other = aio.Client(client_id=uid("ag"))
    with pytest.raises(ValueError, match="ws_headers"):
        await other.connect(broker.host, broker.port, ws_headers={"A": "b"})
    with pytest.raises(ValueError, match="invalid WebSocket header"):
        await other.connect(f"ws://127.0.0.1:{broker.port}/", ws_headers={"A": "b\r\nC: d"})
    assert other._proto is None


@pytest.mark.asyncio
async def test_aio_websocket_not_an_http_server(broker):
    """ws:// to a plain MQTT listener: mosquitto drops the connection (a GET is no CONNECT), or
    the connect timeout ends it; either way a ConnectionLost, not a hang."""
    client = aio.Client(client_id=uid("an"))
    with pytest.raises(ConnectionLost):
        await client.connect(f"ws://127.0.0.1:{broker.port}/mqtt", timeout=1)
    assert not client.is_connected and client._proto is None


@pytest.mark.asyncio
@pytest.mark.parametrize("frames, message", [
    (b"\x82\x84\0\0\0\0\x20\x02\0\0", "masked"),  # a masked server frame
    (b"\x81\x04\x20\x02\0\0", "text"),  # MQTT in a text frame
    (b"\x82\x7f" + (1 << 63).to_bytes(8, "big"), "top bit"),
    (b"\x88\x02\x03\xf0", "closed the WebSocket \\(1008"),  # the broker closes (1008)
    (b"\x82\x04\x20\x02\0\0", "before the CONNECT"),  # MQTT bytes before we sent any
])
async def test_aio_hostile_websocket_peer_fails_the_connect(frames, message):
    fake = FakeHTTP(lambda request: _upgrade_reply(request) + frames)
    client = aio.Client(client_id=uid("ah"))
    try:
        with pytest.raises(mqttfast.MQTTError, match=message):
            await client.connect(f"ws://127.0.0.1:{fake.port}/mqtt", timeout=5)
        assert client._proto is None
    finally:
        await client.close()
        await asyncio.get_running_loop().run_in_executor(None, fake.close)


@pytest.mark.asyncio
async def test_aio_websocket_ping_answered_and_close_reported_when_connected():
    """Connected (a CONNACK in a frame), the peer pings (answered with a masked pong carrying
    the same data), then closes with 1001: on_disconnect and messages() report ConnectionLost
    with the code and reason."""
    client_id = uid("ap")
    connect_frame = 2 + 4 + 2 + 10 + 2 + len(client_id)  # frame header, mask, 3.1.1 CONNECT
    fake = FakeHTTP(_upgrade_reply, after=[
        (b"", connect_frame),
        (b"\x82\x04\x20\x02\x00\x00" + b"\x89\x03abc", connect_frame + 2 + 4 + 3),
        (b"\x88\x06\x03\xe9" + b"bye!", 0),
    ])
    ended: list = []
    client = aio.Client(client_id=client_id)
    client.on_disconnect = ended.append
    try:
        await asyncio.wait_for(client.connect(f"ws://127.0.0.1:{fake.port}/mqtt"), 5)
        with pytest.raises(ConnectionLost, match=r"closed the WebSocket \(1001 bye!\)"):
            await _aio_take(client, 1, 5)
        assert ended and "closed the WebSocket (1001 bye!)" in str(ended[0].error)
    finally:
        await client.close()
        await asyncio.get_running_loop().run_in_executor(None, fake.close)
    from test_websocket import unmask

    _, _, rest = unmask(fake.received)  # the CONNECT's frame
    b0, body, _ = unmask(rest)
    assert b0 == 0x8A and body == b"abc"  # a final pong with the ping's data
