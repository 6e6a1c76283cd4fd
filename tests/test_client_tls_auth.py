"""Authentication and TLS against a real mosquitto: username/password accepted and refused (with the
CONNACK code each protocol level defines), server verification against a CA, hostname verification,
client certificates, and an untrusted server certificate refused."""
from __future__ import annotations

import ssl
import time

import pytest
import trustme

import mqttfast
from client_support import connected_client, granted, Inbox, shutdown, topic, uid

# ----------------------------------------------------------------------------- username / password


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_auth_accepted(auth_broker, protocol):
    client = mqttfast.Client(client_id=uid("alice"), protocol=protocol, username="alice",
                             password="secret")
    try:
        client.connect(auth_broker.host, auth_broker.port, timeout=10)
        assert client.is_connected
        assert client.publish("a/b", b"x", qos=1).wait(5)
    finally:
        shutdown(client)


# MQTT 3.1 / 3.1.1 CONNACK return codes: 4 "bad user name or password", 5 "not authorized". The
# spec allows either for a wrong password (4 is meant for malformed credentials, 5 for a refusal);
# mosquitto 2.0.11 answers 5 for a wrong password, an unknown user and a missing one (its
# handle_connect.c sends CONNACK_REFUSED_NOT_AUTHORIZED on MOSQ_ERR_AUTH). MQTT 5 likewise has
# 0x86 "bad user name or password" and 0x87 "not authorized"; mosquitto 2.0.11 sends 0x87 in all
# three cases (MQTT_RC_NOT_AUTHORIZED), which the spec allows. The client must surface the code
# the broker sent, whichever it is.
@pytest.mark.parametrize(
    "protocol, username, password, code",
    [
        (3, "alice", "wrong", 5),
        (4, "alice", "wrong", 5),
        (4, "mallory", "secret", 5),
        (4, None, None, 5),
        (5, "alice", "wrong", 0x87),
        (5, "mallory", "secret", 0x87),
        (5, None, None, 0x87),
    ],
)
def test_auth_refused(auth_broker, protocol, username, password, code):
    client = mqttfast.Client(client_id=uid("bad"), protocol=protocol, username=username,
                             password=password, reconnect=mqttfast.Backoff(0.1, 0.2))
    started = time.monotonic()
    with pytest.raises(mqttfast.ConnectRefused) as info:
        client.connect(auth_broker.host, auth_broker.port, timeout=10)
    # A refusal is an answer: it comes at once and is not retried, even with a reconnect policy.
    assert time.monotonic() - started < 5
    assert info.value.reason_code == code
    assert info.value.reason  # a readable name
    assert f"{code:#04x}" in str(info.value)
    assert not client.is_connected
    with pytest.raises(mqttfast.NotConnected):
        client.publish("a/b", b"x", qos=1)
    client.close()


def test_auth_refused_reason_names(auth_broker):
    for protocol, expected in [(3, "not authorized"), (4, "not authorized"), (5, "not authorized")]:
        client = mqttfast.Client(client_id=uid("bad"), protocol=protocol, username="alice",
                                 password=b"wrong")
        with pytest.raises(mqttfast.ConnectRefused) as info:
            client.connect(auth_broker.host, auth_broker.port, timeout=10)
        assert info.value.reason.replace("_", " ").lower() == expected
        client.close()


# ----------------------------------------------------------------------------- TLS


def test_tls_with_ca_verification(tls_broker):
    name = topic("tls")
    inbox = Inbox()
    context = mqttfast.tls_context(ca_certs=str(tls_broker.ca_path))
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    client = None
    try:
        # The server certificate names 127.0.0.1 (and localhost): verification passes on the IP.
        client = connected_client(tls_broker.port, inbox=inbox, tls=context)
        assert granted(client.subscribe(name, qos=1)) == [1]
        payloads = [bytes([i]) * 1000 for i in range(50)]
        assert all(h.wait(5) for h in [client.publish(name, p, qos=1) for p in payloads])
        assert inbox.wait_for(50, 10)
        assert inbox.payloads == payloads
    finally:
        shutdown(client)


def test_tls_server_hostname(tls_broker):
    context = mqttfast.tls_context(ca_certs=str(tls_broker.ca_path))
    client = None
    try:
        client = connected_client(tls_broker.port, tls=context,
                                  server_hostname=tls_broker.server_hostname)
        assert client.publish("a/b", b"x", qos=1).wait(5)
    finally:
        shutdown(client)


def test_tls_hostname_verified_by_default(tls_broker):
    """A certificate from the trusted CA but for another name is refused."""
    context = mqttfast.tls_context(ca_certs=str(tls_broker.ca_path))
    client = mqttfast.Client(client_id=uid("host"), tls=context, server_hostname="not-the-broker.test")
    with pytest.raises(mqttfast.ConnectionLost) as info:
        client.connect(tls_broker.host, tls_broker.port, timeout=10)
    message = str(info.value).lower()
    assert "tls" in message and ("hostname" in message or "certificate" in message), message
    client.close()


def test_tls_untrusted_certificate_refused(tls_broker):
    other_ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    other_ca.configure_trust(context)
    client = mqttfast.Client(client_id=uid("untrusted"), tls=context)
    started = time.monotonic()
    with pytest.raises(mqttfast.ConnectionLost) as info:
        client.connect(tls_broker.host, tls_broker.port, timeout=10)
    assert time.monotonic() - started < 5
    message = str(info.value).lower()
    assert "tls" in message and "certificate" in message, message
    client.close()


def test_tls_true_uses_system_cas(tls_broker):
    """``tls=True`` trusts only the system CAs: the test CA's certificate is refused."""
    client = mqttfast.Client(client_id=uid("sys"), tls=True)
    with pytest.raises(mqttfast.ConnectionLost):
        client.connect(tls_broker.host, tls_broker.port, timeout=10)
    client.close()


def test_tls_without_verification(tls_broker):
    client = None
    try:
        client = connected_client(tls_broker.port, tls=mqttfast.tls_context(verify=False))
        assert client.publish("a/b", b"x", qos=1).wait(5)
    finally:
        shutdown(client)


def test_tls_plain_client_against_tls_port(tls_broker):
    """Plain MQTT to a TLS listener: the broker drops it; connect raises, it does not hang."""
    client = mqttfast.Client(client_id=uid("plain"), connect_timeout=3)
    started = time.monotonic()
    with pytest.raises(mqttfast.ConnectionLost):
        client.connect(tls_broker.host, tls_broker.port)
    assert time.monotonic() - started < 5
    client.close()


@pytest.mark.parametrize("protocol", [4, 5])
def test_tls_client_certificate(tls_broker_client_cert, protocol):
    name = topic("cert")
    inbox = Inbox()
    context = mqttfast.tls_context(ca_certs=str(tls_broker_client_cert.ca_path),
                                   certfile=str(tls_broker_client_cert.client_cert_path),
                                   keyfile=str(tls_broker_client_cert.client_key_path))
    client = None
    try:
        client = connected_client(tls_broker_client_cert.port, inbox=inbox, tls=context,
                                  protocol=protocol)
        assert client.subscribe(name, qos=2).wait(5)
        assert client.publish(name, b"signed", qos=2).wait(5)
        assert inbox.wait_for(1, 5)
        assert inbox.payloads == [b"signed"]
    finally:
        shutdown(client)


def test_tls_client_certificate_missing_refused(tls_broker_client_cert):
    context = mqttfast.tls_context(ca_certs=str(tls_broker_client_cert.ca_path))
    client = mqttfast.Client(client_id=uid("nocert"), tls=context, connect_timeout=5)
    started = time.monotonic()
    with pytest.raises(mqttfast.ConnectionLost):
        client.connect(tls_broker_client_cert.host, tls_broker_client_cert.port)
    assert time.monotonic() - started < 6
    client.close()


def test_tls_with_auth(broker_factory):
    instance = broker_factory(tls=True, allow_anonymous=False, users={"alice": "secret"})
    context = mqttfast.tls_context(ca_certs=str(instance.ca_path))
    client = None
    try:
        client = connected_client(instance.tls_port, tls=context, protocol=5, username="alice",
                                  password="secret")
        assert client.publish("a/b", b"x", qos=1).wait(5)
    finally:
        shutdown(client)
    refused = mqttfast.Client(client_id=uid("tlsbad"), tls=context, protocol=5, username="alice",
                              password="nope")
    with pytest.raises(mqttfast.ConnectRefused) as info:
        refused.connect(instance.host, instance.tls_port, timeout=10)
    assert info.value.reason_code == 0x87  # what mosquitto 2.0.11 sends (see above)
    refused.close()
