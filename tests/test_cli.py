"""``mqttfast pub`` / ``mqttfast sub`` run as real processes (``python -m mqttfast``) against
mosquitto: delivery across QoS levels and protocol versions, stdin modes, mosquitto_sub's output
flags and format, MQTT 5 properties, TLS, authentication, and bad input that must exit 2 with a
message and no traceback. A few in-process tests cover the parser and formatter directly."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import types
import uuid
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
import test_transports
import trustme

from mqttfast import cli

ROOT = Path(__file__).resolve().parent.parent
ws_broker = test_transports.ws_broker  # the fixture: mosquitto with websockets listeners
TIMEOUT = 15.0


def run(*args: str, input: Optional[bytes] = None,
        timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mqttfast", *args], input=input,
                          capture_output=True, timeout=timeout, cwd=ROOT)


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert b"Traceback" not in result.stdout + result.stderr, result.stderr.decode()


def new_topic(name: str) -> str:
    return f"cli/{name}/{uuid.uuid4().hex[:10]}"


def addr(broker) -> List[str]:
    return ["-h", broker.host, "-p", str(broker.port)]


class Sub:
    """``mqttfast sub -d ...`` in the background; ``start`` returns once it has subscribed."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mqttfast", "sub", "-d", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        self.err_lines: List[bytes] = []
        self.subscribed = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err_lines.append(line)
            if line.startswith(b"Subscribed"):
                self.subscribed.set()

    @property
    def stderr(self) -> bytes:
        return b"".join(self.err_lines)

    def start(self) -> "Sub":
        if not self.subscribed.wait(TIMEOUT):
            self.proc.kill()
            self.proc.wait()
            self._reader.join(5)
            raise AssertionError(f"sub never subscribed:\n{self.stderr.decode()}")
        return self

    def finish(self, timeout: float = TIMEOUT) -> Tuple[int, bytes, bytes]:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self._reader.join(5)
        assert b"Traceback" not in out + self.stderr, self.stderr.decode()
        return code, out, self.stderr


def publish(broker, *args: str, input: Optional[bytes] = None) -> None:
    result = run("pub", *addr(broker), *args, input=input)
    no_traceback(result)
    assert result.returncode == 0, result.stderr.decode()


# ----------------------------------------------------------------------------- delivery


@pytest.mark.parametrize("qos, version", [
    (0, "311"), (1, "311"), (2, "mqttv311"), (0, "5"), (1, "mqttv5"), (2, "5"), (1, "31"),
])
def test_pub_reaches_sub(broker, qos, version):
    topic = new_topic("roundtrip")
    sub = Sub(*addr(broker), "-V", version, "-q", str(qos), "-t", topic, "-C", "1", "-v").start()
    publish(broker, "-V", version, "-q", str(qos), "-t", topic, "-m", "hello world")
    code, out, _ = sub.finish()
    assert (code, out) == (0, f"{topic} hello world\n".encode())


def test_pub_lines_from_stdin_in_order_and_sub_count(broker):
    topic = new_topic("lines")
    sub = Sub(*addr(broker), "-t", topic, "-C", "3", "-q", "1").start()
    publish(broker, "-t", topic, "-l", "-q", "1", input=b"one\ntwo\nthree\n")
    code, out, _ = sub.finish()
    assert (code, out) == (0, b"one\ntwo\nthree\n")


def test_pub_repeat(broker):
    topic = new_topic("repeat")
    sub = Sub(*addr(broker), "-t", topic, "-C", "3", "-N").start()
    publish(broker, "-t", topic, "-m", "x", "--repeat", "3", "--repeat-delay", "0.01")
    assert sub.finish()[:2] == (0, b"xxx")


def test_sub_timeout_exits_like_mosquitto_sub(broker):
    started = time.monotonic()
    result = run("sub", *addr(broker), "-t", new_topic("quiet"), "-W", "1")
    elapsed = time.monotonic() - started
    no_traceback(result)
    assert result.returncode == 27  # as mosquitto_sub: "-W ran out", not "-C count reached"
    assert result.stderr.strip() == b"Timed out"
    assert 1.0 <= elapsed < 5.0


def test_sub_stops_cleanly_on_sigterm(broker):
    sub = Sub(*addr(broker), "-t", new_topic("term")).start()
    sub.proc.send_signal(signal.SIGTERM)
    code, out, err = sub.finish(5)
    assert code == 0
    assert b"sending DISCONNECT" in err


# ----------------------------------------------------------------------------- output flags


def test_format_verbose_and_no_newline(broker):
    topic = new_topic("format")
    formatted = Sub(*addr(broker), "-t", topic, "-q", "1", "-C", "2",
                    "-F", r"%t %p %q|%r|%l|%x|%%\t").start()
    plain = Sub(*addr(broker), "-t", topic, "-C", "2", "-N").start()
    verbose = Sub(*addr(broker), "-t", topic, "-C", "2", "-v").start()
    publish(broker, "-t", topic, "-q", "1", "-m", "hi")
    publish(broker, "-t", topic, "-q", "1", "-m", "yo")
    assert formatted.finish()[:2] == (
        0, f"{topic} hi 1|0|2|6869|%\t\n{topic} yo 1|0|2|796f|%\t\n".encode())
    assert plain.finish()[:2] == (0, b"hiyo")
    assert verbose.finish()[:2] == (0, f"{topic} hi\n{topic} yo\n".encode())


def test_retained_reaches_later_subscriber_and_R_skips_it(broker):
    topic = new_topic("retained")
    publish(broker, "-t", topic, "-m", "old", "-r", "-q", "1")
    later = run("sub", *addr(broker), "-t", topic, "-C", "1", "-F", "%r %p")
    no_traceback(later)
    assert (later.returncode, later.stdout) == (0, b"1 old\n")
    fresh_only = Sub(*addr(broker), "-t", topic, "-C", "1", "-R", "-F", "%r %p").start()
    publish(broker, "-t", topic, "-m", "new")
    assert fresh_only.finish()[:2] == (0, b"0 new\n")
    publish(broker, "-t", topic, "-n", "-r")  # an empty retained message clears it
    cleared = run("sub", *addr(broker), "-t", topic, "-W", "0.5")
    assert (cleared.returncode, cleared.stdout) == (27, b"")


def test_null_message_and_binary_file(broker, tmp_path):
    topic = new_topic("payloads")
    data = bytes(range(256))
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    hexed = Sub(*addr(broker), "-t", topic, "-C", "2", "-F", "%l:%x").start()
    raw = Sub(*addr(broker), "-t", topic, "-C", "2", "-v").start()
    publish(broker, "-t", topic, "-n")
    publish(broker, "-t", topic, "-f", str(path), "-q", "2")
    assert hexed.finish()[:2] == (0, f"0:\n256:{data.hex()}\n".encode())
    # Like mosquitto_sub: the payload's bytes as they are; an empty one shows as "(null)".
    assert raw.finish()[:2] == (0, f"{topic} (null)\n{topic} ".encode() + data + b"\n")


def test_stdin_whole_as_one_message(broker):
    topic = new_topic("stdin")
    sub = Sub(*addr(broker), "-t", topic, "-C", "1").start()
    publish(broker, "-t", topic, "-s", input=b"line 1\nline 2\n")
    assert sub.finish()[:2] == (0, b"line 1\nline 2\n\n")


def test_v5_properties_reach_a_v5_subscriber(broker):
    topic = new_topic("props")
    sub = Sub(*addr(broker), "-V", "5", "-t", topic, "-C", "1",
              "-D", "subscribe", "subscription-identifier", "3", "-F", "%P|%C|%E|%S|%p").start()
    # -D alone makes pub an MQTT 5 client, as mosquitto_pub does.
    publish(broker, "-t", topic, "-m", "body", "-D", "publish", "user-property", "a", "b",
            "-D", "publish", "user-property", "c", "d",
            "-D", "publish", "content-type", "text/plain",
            "-D", "publish", "message-expiry-interval", "30",
            "-D", "connect", "session-expiry-interval", "0")
    code, out, _ = sub.finish()
    assert code == 0
    user, content_type, expiry, sub_id, payload = out.rstrip(b"\n").split(b"|")
    assert (user, content_type, sub_id, payload) == (b"a:b c:d", b"text/plain", b"3", b"body")
    assert 0 < int(expiry) <= 30


def test_will_flags(broker):
    will_topic = new_topic("will")
    watcher = Sub(*addr(broker), "-t", will_topic, "-C", "1", "-v").start()
    doomed = Sub(*addr(broker), "-t", new_topic("doomed"), "--will-topic", will_topic,
                 "--will-payload", "gone", "--will-qos", "1").start()
    doomed.proc.kill()  # no DISCONNECT: the broker publishes the will
    doomed.proc.wait(5)
    assert watcher.finish()[:2] == (0, f"{will_topic} gone\n".encode())


# ----------------------------------------------------------------------------- TLS and auth


def test_tls_with_cafile(tls_broker):
    topic = new_topic("tls")
    tls = ["-h", tls_broker.host, "-p", str(tls_broker.port), "--cafile", str(tls_broker.ca_path)]
    sub = Sub(*tls, "-t", topic, "-C", "1").start()
    result = run("pub", *tls, "-t", topic, "-m", "secret", "-q", "1")
    no_traceback(result)
    assert result.returncode == 0, result.stderr.decode()
    assert sub.finish()[:2] == (0, b"secret\n")


def test_ws_flag_pub_and_sub_over_websocket(ws_broker):
    """--ws [PATH]: MQTT over WebSocket to -h/-p (path /mqtt by default), over TLS (wss) with
    the TLS flags; sub on ws, pub on ws and wss, both arrive."""
    topic = new_topic("ws")
    ws = ["-h", "127.0.0.1", "-p", str(ws_broker.ws_port)]
    wss = ["-h", ws_broker.files.server_hostname, "-p", str(ws_broker.wss_port),
           "--cafile", str(ws_broker.files.ca_path)]
    sub = Sub(*ws, "--ws", "-t", topic, "-C", "3", "-q", "1").start()
    for args in ([*ws, "--ws", "/mqtt"], [*ws, "--ws=/"], [*wss, "--ws"]):
        result = run("pub", *args, "-t", topic, "-m", args[-1], "-q", "1")
        no_traceback(result)
        assert result.returncode == 0, result.stderr.decode()
    code, out, err = sub.finish()
    assert (code, out) == (0, b"/mqtt\n--ws=/\n--ws\n"), err.decode()


def test_tls_insecure_still_verifies_the_certificate(tls_broker, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    result = run("pub", "-h", tls_broker.host, "-p", str(tls_broker.port), "--cafile",
                 str(other_ca), "--insecure", "-t", "x", "-m", "y")
    no_traceback(result)
    assert result.returncode == 1
    assert b"certificate verify failed" in result.stderr


def test_tls_client_certificate(tls_broker_client_cert):
    broker = tls_broker_client_cert
    topic = new_topic("tls-cert")
    tls = ["-h", broker.host, "-p", str(broker.port), "--cafile", str(broker.ca_path)]
    cert = ["--cert", str(broker.client_cert_path), "--key", str(broker.client_key_path)]
    sub = Sub(*tls, *cert, "-t", topic, "-C", "1").start()
    result = run("pub", *tls, *cert, "-t", topic, "-m", "mutual", "-q", "2")
    no_traceback(result)
    assert result.returncode == 0, result.stderr.decode()
    assert sub.finish()[:2] == (0, b"mutual\n")
    refused = run("pub", *tls, "-t", topic, "-m", "no cert")  # the broker demands one
    no_traceback(refused)
    assert refused.returncode == 1 and refused.stderr.startswith(b"Error: ")


def test_auth(auth_broker):
    ok = run("pub", *addr(auth_broker), "-u", "alice", "-P", "secret", "-t", "a", "-m", "x",
             "-q", "1")
    no_traceback(ok)
    assert ok.returncode == 0, ok.stderr.decode()
    for version in ("311", "5"):
        bad = run("sub", *addr(auth_broker), "-V", version, "-u", "alice", "-P", "wrong",
                  "-t", "a")
        no_traceback(bad)
        assert bad.returncode == 1
        message = bad.stderr.decode().strip()
        assert message.startswith("Error: connection refused: ") and "\n" not in message
        assert "not authorized" in message or "bad user name or password" in message


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args, expected", [
    (["pub", "-t", "a", "-m", "x", "--bogus"], "unknown option '--bogus'"),
    (["pub", "-t", "a", "-m", "x", "-q", "3"], "-q"),
    (["sub", "-t", "a", "-V", "7"], "-V"),
    (["sub", "-t", "a", "-p", "70000"], "-p"),
    (["pub", "-t", "a/+", "-m", "x"], "a/+"),
    (["pub", "-t", "a", "-m", "x", "-D", "publish", "no-such-thing", "1"], "no-such-thing"),
    (["pub", "-t", "a", "-m", "x", "-D", "connect", "content-type", "x"], "not allowed"),
    (["pub", "-t", "a", "-m", "x", "-V", "311", "-D", "publish", "content-type", "x"], "-V 5"),
    (["pub", "-t", "a"], "message"),
    (["pub", "-m", "x"], "topic"),
    (["pub", "-t", "a", "-m", "x", "-n"], "only one"),
    (["sub"], "topic"),
    (["sub", "-t", "a", "-F", "%z"], "%z"),
    (["sub", "-t", "a", "-k"], "-k"),
    (["pub", "-t", "a", "-f", "/no/such/file"], "/no/such/file"),
    (["nonsense"], "unknown command"),
    (["pub", "-t", "a", "-m", "x", "--ws", "-L", "ws://127.0.0.1/mqtt"], "--ws or -L"),
    (["sub", "-t", "a", "-L", "mqtt://127.0.0.1/t", "--ws=/mqtt"], "--ws or -L"),
    (["sub", "-t", "a", "--ws", "mqtt"], "must start with /"),
])
def test_bad_input_exits_2_with_a_message(args, expected):
    result = run(*args)  # each is refused before any connection is attempted
    no_traceback(result)
    assert result.returncode == 2, result
    assert expected in result.stderr.decode()
    assert result.stdout == b""


def closed_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago: nobody listens on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_broker_exits_1():
    for tool, extra in (("pub", ["-m", "x"]), ("sub", [])):
        result = run(tool, "-h", "127.0.0.1", "-p", str(closed_port()), "-t", "a", *extra)
        no_traceback(result)
        assert result.returncode == 1
        message = result.stderr.decode().strip()
        assert message.startswith("Error: cannot connect to 127.0.0.1:") and "\n" not in message


def test_version_and_help():
    version = run("--version")
    assert version.returncode == 0 and version.stdout.decode().startswith("mqttfast ")
    helped = run("sub", "--help")
    assert helped.returncode == 0 and b"-h, --host HOST" in helped.stdout
    assert run().returncode == 2


# ----------------------------------------------------------------------------- in process


def test_bench_dispatch(monkeypatch, capsys):
    fake = types.ModuleType("mqttfast.bench.cli")
    fake.main = lambda argv: 7 if argv == ["pub", "--rate", "5"] else 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mqttfast.bench.cli", fake)
    assert cli.main(["bench", "pub", "--rate", "5"]) == 7
    monkeypatch.setitem(sys.modules, "mqttfast.bench.cli", None)  # as if not installed
    assert cli.main(["bench"]) == 2
    assert "mqttfast bench is not available" in capsys.readouterr().err


def test_parser_takes_values_verbatim_and_D_arity():
    opts = cli.parse("pub", ["-t", "a", "-m", "-5", "-D", "publish", "user-property", "k", "-v",
                             "-D", "connect", "session-expiry-interval", "60", "--qos=1"])
    assert opts["message"] == "-5" and opts["qos"] == 1
    props = cli.parse_properties("pub", opts["properties"])
    assert props == {"publish": {"user_property": [("k", "-v")]},
                     "connect": {"session_expiry_interval": 60}}
    with pytest.raises(cli.UsageError, match="subscribe"):
        cli.parse_properties("pub", [("-D", "subscribe", "user-property", "a", "b")])
    with pytest.raises(cli.UsageError, match="given twice"):
        cli.parse_properties("pub", [("-D", "publish", "content-type", "a"),
                                     ("-D", "publish", "content-type", "b")])


def test_format_compiler():
    msg = types.SimpleNamespace(topic="a/b", payload=b"\x00hi", qos=2, retain=True, packet_id=9,
                                properties={"user_property": [("k", "v")], "content_type": "t"})
    ns = 1_700_000_000_123_456_789

    def render(fmt: str) -> bytes:
        return b"".join(piece(msg, ns) for piece in cli.compile_format(fmt))

    assert render(r"%t|%q|%r|%m|%l|%x|%X|%%|@@|\n\t\\") == b"a/b|2|1|9|3|006869|006869|%|@|\n\t\\"
    assert render("%5t|%-5t|%.1t|%05l|%-5q|%P|%C|%E") == b"  a/b|a/b  |a|00003|2|k:v|t|"
    assert render("%U @N") == b"1700000000.123456789 123456789"
    for bad in ("%z", "%", "\\q", "@"):
        with pytest.raises(ValueError):
            cli.compile_format(bad)


@pytest.mark.parametrize("topic_filter, topic, matches", [
    ("a/#", "a", True), ("a/#", "a/b/c", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False),
    ("+/b", "a/b", True), ("#", "$SYS/x", False), ("a/b", "a/b", True), ("a/b", "a", False),
])
def test_topic_matches(topic_filter, topic, matches):
    assert cli.topic_matches(topic_filter, topic) is matches


@pytest.mark.parametrize("args", [
    ["pub", "-m", "x", "-L", "http://alice:s3cret@127.0.0.1/t"],            # wrong scheme
    ["pub", "-m", "x", "-L", "mqtt://alice:s3cret@127.0.0.1:notaport/t"],   # bad port
    ["sub", "--url=mqtt://alice:s3cret@127.0.0.1:99999/t"],                 # port out of range
    ["sub", "-L", "mqtts://alice:s3cret@/t"],                               # no host
    ["pub", "-m", "x", "mqtt://alice:s3cret@127.0.0.1/t"],                  # -L forgotten
])
def test_usage_errors_never_echo_a_url_password(args, capsys):
    """A usage error quotes the URL it could not use, but with its password masked: the message
    ends up in terminals, CI logs and bug reports."""
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "s3cret" not in captured.err
    assert "alice:***@" in captured.err  # still says which URL, and that it had a password
