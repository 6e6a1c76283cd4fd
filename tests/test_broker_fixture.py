"""The mosquitto fixtures themselves: each broker really serves what it promises.

Clients are mosquitto_pub/mosquitto_sub (skipped, or failed under CI, when mosquitto-clients is
missing), Python's ssl module, and a hand-built MQTT 5 CONNECT for the CONNACK properties. Every
subprocess and every wait is bounded.
"""
from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import pytest

try:  # tests/ is on sys.path under pytest's default ("prepend") import mode
    import broker as broker_module
except ImportError:  # pragma: no cover  (tests/ imported as a package)
    from tests import broker as broker_module

Mosquitto = broker_module.Mosquitto
TLSBroker = broker_module.TLSBroker

CLIENT_TIMEOUT = 20.0  # hard cap on any client subprocess
SUB_WAIT = 10  # mosquitto_sub -W: seconds it waits for messages before giving up


# ------------------------------------------------------------------------------------ helpers


def client_path(tool: str) -> str:
    return broker_module.require_executable(tool)


def run_client(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [client_path(tool), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=CLIENT_TIMEOUT, check=False,
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def round_trip(
    mosq: Mosquitto, port: int, conn_args: Sequence[str] = (), payload: str = "hello"
) -> str:
    """Subscribes with mosquitto_sub, waits (in the broker log) until its SUBACK went out,
    publishes with mosquitto_pub, and returns what the subscriber printed."""
    sub_id, topic = unique("sub"), unique("mqttfast/test")
    common = ["-h", mosq.host, "-p", str(port), *conn_args]
    sub = subprocess.Popen(
        [client_path("mosquitto_sub"), *common, "-i", sub_id, "-t", topic, "-q", "1",
         "-C", "1", "-W", str(SUB_WAIT)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + SUB_WAIT
        while f"Sending SUBACK to {sub_id}" not in mosq.log_text():
            if sub.poll() is not None:
                out, err = sub.communicate(timeout=5)
                pytest.fail(f"mosquitto_sub exited with {sub.returncode}: {out}{err}\n"
                            f"broker log:\n{mosq.log_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no SUBACK to {sub_id} within {SUB_WAIT} s:\n{mosq.log_text()}")
            time.sleep(0.02)
        pub = run_client("mosquitto_pub", *common, "-t", topic, "-q", "1", "-m", payload)
        assert pub.returncode == 0, f"mosquitto_pub failed: {pub.stdout}{pub.stderr}"
        out, err = sub.communicate(timeout=CLIENT_TIMEOUT)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(5)
    assert sub.returncode == 0, f"mosquitto_sub exited with {sub.returncode}: {err}"
    return out


def tls_args(tls: TLSBroker, with_cert: bool = False) -> List[str]:
    args = ["--cafile", str(tls.ca_path)]
    if with_cert:
        args += ["--cert", str(tls.client_cert_path), "--key", str(tls.client_key_path)]
    return args


# A hand-built MQTT 5 CONNECT, so that the broker's CONNACK properties can be read without a client
# library. Property identifier -> size in bytes (0: UTF-8 string / binary, 2-byte length prefix).
_CONNACK_PROPERTY_SIZES = {
    0x11: 4, 0x12: 0, 0x13: 2, 0x15: 0, 0x16: 0, 0x1A: 0, 0x1C: 0, 0x1F: 0, 0x21: 2,
    0x22: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1,
}
TOPIC_ALIAS_MAXIMUM, SERVER_KEEP_ALIVE, RECEIVE_MAXIMUM, MAXIMUM_PACKET_SIZE = 0x22, 0x13, 0x21, 0x27


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def mqtt5_connack(port: int, keepalive: int = 60) -> Tuple[int, Dict[int, Union[int, bytes]]]:
    """(reason code, {property id: value}) of the CONNACK answering a clean-start MQTT 5 CONNECT."""
    client_id = unique("probe").encode()
    body = (b"\x00\x04MQTT\x05\x02" + keepalive.to_bytes(2, "big") + b"\x00"
            + len(client_id).to_bytes(2, "big") + client_id)
    with socket.create_connection((broker_module.HOST, port), timeout=5) as sock:
        sock.sendall(b"\x10" + bytes([len(body)]) + body)
        header = _recv_exactly(sock, 1)
        assert header == b"\x20", f"expected CONNACK, got packet type byte {header!r}"
        length_bytes = b""
        while not length_bytes or length_bytes[-1] & 0x80:
            length_bytes += _recv_exactly(sock, 1)
        length, _ = _varint(length_bytes, 0)
        packet = _recv_exactly(sock, length)
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    reason = packet[1]
    props_len, pos = _varint(packet, 2)
    end, props = pos + props_len, {}
    while pos < end:
        ident = packet[pos]
        size = _CONNACK_PROPERTY_SIZES[ident]
        pos += 1
        if size:
            props[ident] = int.from_bytes(packet[pos:pos + size], "big")
            pos += size
        else:
            n = int.from_bytes(packet[pos:pos + 2], "big")
            props[ident] = packet[pos + 2:pos + 2 + n]
            pos += 2 + n
    return reason, props


# ------------------------------------------------------------------------------------ plain


def test_plain_broker_round_trip(broker: Mosquitto) -> None:
    assert broker.host == "127.0.0.1"
    assert broker.is_running()
    assert round_trip(broker, broker.port, payload="plain round trip") == "plain round trip\n"
    log = broker.log_text()
    assert "Received PUBLISH from" in log and "mosquitto version" in log


def test_plain_broker_listens_on_loopback_only(broker: Mosquitto) -> None:
    config = broker.config_path.read_text()
    listeners = [line for line in config.splitlines() if line.startswith("listener ")]
    assert listeners == [f"listener {broker.port} 127.0.0.1"]
    assert "Opening ipv4 listen socket on port" in broker.log_text()
    assert "ipv6" not in broker.log_text()


def test_plain_broker_advertises_topic_alias_maximum(broker: Mosquitto) -> None:
    reason, props = mqtt5_connack(broker.port)
    assert reason == 0
    assert props[TOPIC_ALIAS_MAXIMUM] == 10


# ------------------------------------------------------------------------------------ TLS


def test_tls_broker_accepts_a_client_that_trusts_the_ca(tls_broker: TLSBroker) -> None:
    assert tls_broker.port == tls_broker.broker.tls_port != tls_broker.plain_port
    assert tls_broker.ca_path.is_file() and tls_broker.client_cert_path.is_file()
    out = round_trip(tls_broker.broker, tls_broker.port, tls_args(tls_broker), payload="over tls")
    assert out == "over tls\n"


def test_tls_broker_accepts_a_client_certificate(tls_broker: TLSBroker) -> None:
    out = round_trip(tls_broker.broker, tls_broker.port, tls_args(tls_broker, with_cert=True),
                     payload="with a cert")
    assert out == "with a cert\n"


def test_tls_broker_certificate_verifies_with_python_ssl(tls_broker: TLSBroker) -> None:
    context = ssl.create_default_context(cafile=str(tls_broker.ca_path))
    with socket.create_connection((tls_broker.host, tls_broker.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=tls_broker.server_hostname) as tls:
            cert = tls.getpeercert()
    assert cert is not None
    names = {value for kind, value in cert.get("subjectAltName", ())}
    assert {"localhost", "127.0.0.1"} <= names


def test_tls_broker_refuses_a_client_that_trusts_another_ca(
    tls_broker: TLSBroker, tmp_path: Path
) -> None:
    import trustme

    other_ca = os.path.join(str(tmp_path), "other-ca.pem")
    trustme.CA().cert_pem.write_to_path(other_ca)
    pub = run_client("mosquitto_pub", "-h", tls_broker.host, "-p", str(tls_broker.port),
                     "--cafile", other_ca, "-t", "mqttfast/test/untrusted", "-m", "x")
    assert pub.returncode != 0
    context = ssl.create_default_context(cafile=other_ca)
    with socket.create_connection((tls_broker.host, tls_broker.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname=tls_broker.server_hostname)


def test_tls_broker_client_cert_accepts_a_certified_client(
    tls_broker_client_cert: TLSBroker,
) -> None:
    tls = tls_broker_client_cert
    assert tls.require_certificate
    assert "require_certificate true" in tls.broker.config_path.read_text()
    out = round_trip(tls.broker, tls.port, tls_args(tls, with_cert=True), payload="mutual tls")
    assert out == "mutual tls\n"


def test_tls_broker_client_cert_refuses_a_client_without_one(
    tls_broker_client_cert: TLSBroker,
) -> None:
    tls = tls_broker_client_cert
    pub = run_client("mosquitto_pub", "-h", tls.host, "-p", str(tls.port), *tls_args(tls),
                     "-t", "mqttfast/test/no-cert", "-m", "x")
    assert pub.returncode != 0, pub.stdout + pub.stderr
    tls.broker.wait_for_log("peer did not return a certificate", timeout=5)


# ------------------------------------------------------------------------------------ auth


def test_auth_broker_refuses_a_wrong_password(auth_broker: Mosquitto) -> None:
    assert auth_broker.users == {"alice": "secret"}
    pub = run_client("mosquitto_pub", "-h", auth_broker.host, "-p", str(auth_broker.port),
                     "-u", "alice", "-P", "wrong", "-t", "mqttfast/test/auth", "-m", "x")
    assert pub.returncode != 0
    assert "not authori" in (pub.stdout + pub.stderr).lower()


def test_auth_broker_refuses_anonymous_clients(auth_broker: Mosquitto) -> None:
    pub = run_client("mosquitto_pub", "-h", auth_broker.host, "-p", str(auth_broker.port),
                     "-t", "mqttfast/test/auth", "-m", "x")
    assert pub.returncode != 0
    assert "not authori" in (pub.stdout + pub.stderr).lower()


def test_auth_broker_accepts_alice(auth_broker: Mosquitto) -> None:
    out = round_trip(auth_broker, auth_broker.port, ["-u", "alice", "-P", "secret"],
                     payload="hi alice")
    assert out == "hi alice\n"
    assert auth_broker.password_path is not None
    assert auth_broker.password_path.read_text().startswith("alice:$")  # hashed, not plain text


# ------------------------------------------------------------------------------------ lifecycle


def test_restart_keeps_the_port_and_the_persistent_session(broker_factory) -> None:
    mosq = broker_factory(persistence=True)
    port, pid = mosq.port, mosq.pid
    client_id, topic = unique("persistent"), unique("mqttfast/test/persist")
    common = ["-h", mosq.host, "-p", str(port)]
    # A persistent session (clean session off) with a QoS 1 subscription, then offline...
    sub = run_client("mosquitto_sub", *common, "-c", "-i", client_id, "-q", "1", "-t", topic, "-E")
    assert sub.returncode == 0, sub.stderr
    # ...a message queued for it, and the broker restarted (SIGTERM saves the database).
    pub = run_client("mosquitto_pub", *common, "-q", "1", "-t", topic, "-m", "survived")
    assert pub.returncode == 0, pub.stderr
    mosq.restart()
    assert mosq.is_running()
    assert mosq.port == port
    assert mosq.pid != pid
    assert (mosq.persistence_path / "mosquitto.db").is_file()
    resumed = run_client("mosquitto_sub", *common, "-c", "-i", client_id, "-q", "1", "-t", topic,
                         "-C", "1", "-W", str(SUB_WAIT))
    assert resumed.returncode == 0, resumed.stderr + mosq.log_text()
    assert resumed.stdout == "survived\n"


def test_stop_ends_the_process_and_frees_the_port(broker_factory) -> None:
    mosq = broker_factory()
    pid, port = mosq.pid, mosq.port
    assert pid is not None and broker_module.port_accepts(port)
    assert mosq.stop() == 0  # SIGTERM is a clean exit for mosquitto
    assert not mosq.is_running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not broker_module.port_accepts(port)
    assert "terminating" in mosq.log_text()
    assert mosq.stop() == 0  # idempotent


def test_context_manager_starts_stops_and_cleans_up() -> None:
    broker_module.require_executable("mosquitto")
    with Mosquitto() as mosq:
        assert mosq.is_running() and broker_module.port_accepts(mosq.port)
        pid, directory = mosq.pid, mosq.directory
    assert not mosq.is_running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not directory.exists()


def test_factory_options_reach_the_broker(broker_factory) -> None:
    mosq = broker_factory(max_keepalive=30, max_inflight_messages=5, max_queued_messages=7,
                          max_topic_alias=4, extra_config=["max_packet_size 2000"])
    config = mosq.config_path.read_text()
    for line in ("max_keepalive 30", "max_inflight_messages 5", "max_queued_messages 7",
                 "max_topic_alias 4", "max_packet_size 2000", "log_type all"):
        assert line in config.splitlines()
    reason, props = mqtt5_connack(mosq.port, keepalive=120)
    assert reason == 0
    assert props[SERVER_KEEP_ALIVE] == 30  # max_keepalive lowers the client's 120
    assert props[RECEIVE_MAXIMUM] == 5  # max_inflight_messages
    assert props[TOPIC_ALIAS_MAXIMUM] == 4
    assert props[MAXIMUM_PACKET_SIZE] == 2000  # extra_config


def test_max_queued_messages_limits_an_offline_queue(broker_factory) -> None:
    mosq = broker_factory(max_queued_messages=2)
    client_id, topic = unique("queued"), unique("mqttfast/test/queue")
    common = ["-h", mosq.host, "-p", str(mosq.port)]
    sub = run_client("mosquitto_sub", *common, "-c", "-i", client_id, "-q", "1", "-t", topic, "-E")
    assert sub.returncode == 0, sub.stderr
    for n in range(5):
        pub = run_client("mosquitto_pub", *common, "-q", "1", "-t", topic, "-m", f"m{n}")
        assert pub.returncode == 0, pub.stderr
    resumed = run_client("mosquitto_sub", *common, "-c", "-i", client_id, "-q", "1", "-t", topic,
                         "-C", "5", "-W", "2")
    assert resumed.stdout.split() == ["m0", "m1"]


def test_start_failure_reports_the_log(broker_factory) -> None:
    started = time.monotonic()
    with pytest.raises(broker_module.BrokerStartError) as info:
        broker_factory(extra_config=["no_such_option true"])
    assert "no_such_option" in str(info.value)  # mosquitto's own complaint, from its output
    assert "exited with status" in str(info.value)
    assert time.monotonic() - started < broker_module.START_TIMEOUT


def test_start_retries_when_the_port_is_taken(
    broker_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        taken = squatter.getsockname()[1]
        real_free_port = broker_module.free_port
        ports = iter([taken])
        monkeypatch.setattr(broker_module, "free_port", lambda: next(ports, None) or real_free_port())
        mosq = broker_factory()
        assert mosq.port != taken
        assert round_trip(mosq, mosq.port, payload="after a retry") == "after a retry\n"
        assert "Address already in use" in mosq.log_text()


# ------------------------------------------------------------------------------------ missing


def test_missing_mosquitto_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broker_module, "find_executable", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        broker_module.require_executable("mosquitto")
    assert skipped.value.msg == "mosquitto not installed (apt-get install -y mosquitto)"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        broker_module.require_executable("mosquitto")
    assert "mosquitto not installed" in str(failed.value) and "CI" in str(failed.value)


def test_find_executable_looks_in_sbin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(broker_module, "_EXTRA_DIRS", ())
    assert broker_module.find_executable("mosquitto") is None
    monkeypatch.setattr(broker_module, "_EXTRA_DIRS", ("/usr/sbin", "/usr/local/sbin"))
    found = broker_module.find_executable("mosquitto")
    if found is None:
        # .ci/run installs mosquitto from Debian, into /usr/sbin: under CI this is a failure.
        broker_module.skip_unless_ci("mosquitto is not in /usr/sbin or /usr/local/sbin here")
    assert os.path.basename(found) == "mosquitto" and os.access(found, os.X_OK)
