"""MQTT 5 against a real mosquitto: outgoing topic aliases, the broker's Receive Maximum, SUBACK
reason codes, shared subscriptions, properties on PUBLISH, and the broker's maximum packet size."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import mqttfast
from broker import skip_unless_ci
from client_support import connected_client, granted, Inbox, shutdown, topic, uid, wait_until

V5 = {"protocol": 5}


# ----------------------------------------------------------------------------- topic aliases


def _send(pub, topics, rounds, payload_size=10):
    handles = []
    sent = []
    for i in range(rounds):
        for t in topics:
            payload = b"%s|%d|" % (t.encode(), i) + b"x" * payload_size
            handles.append(pub.publish(t, payload, qos=1 if i % 2 else 0))
            sent.append((t, payload))
    assert all(h.wait(10) for h in handles)
    return sent


def test_topic_aliases_used_and_topics_right(broker_factory):
    """Many messages on a few long topics: the first PUBLISH on each topic sets an alias, the rest
    carry only the alias (fewer bytes on the wire), and the subscriber sees every right topic."""
    instance = broker_factory(max_topic_alias=10)
    base = topic("alias") + "/" + "long-topic-segment/" * 8
    topics = [f"{base}{n}" for n in range(3)]
    inbox = Inbox()
    sub = aliased = plain = None
    try:
        sub = connected_client(instance.port, inbox=inbox, **V5)
        assert sub.subscribe(f"{base}#", qos=1).wait(5)
        aliased = connected_client(instance.port, **V5)
        assert aliased.session.broker_properties.get("topic_alias_maximum") == 10
        sent = _send(aliased, topics, 200)
        assert inbox.wait_for(len(sent), 10), (len(inbox), len(sent))
        # Order holds per QoS level (the broker queues QoS 1 behind its inflight window and
        # sends QoS 0 at once, so the two may interleave differently).
        for qos in (0, 1):
            assert [(m.topic, m.payload) for m in inbox.messages if m.qos == qos] == [
                s for i, s in enumerate(sent) if (i // len(topics)) % 2 == qos]
        assert aliased.session._aliases_out == {t: i + 1 for i, t in enumerate(topics)}
        aliased_bytes = aliased.session.position

        # The same traffic without outgoing aliases costs the full topic in every PUBLISH.
        plain = connected_client(instance.port, outgoing_aliases=False, **V5)
        _send(plain, topics, 200)
        assert plain.session._aliases_out == {}
        # Each aliased PUBLISH saves the topic but carries a 3-byte alias property.
        saved = plain.session.position - aliased_bytes
        assert saved >= (len(sent) - 3) * (len(topics[0]) - 4), saved
        assert inbox.wait_for(2 * len(sent), 10)
    finally:
        shutdown(sub, aliased, plain)


def test_topic_aliases_beyond_the_broker_maximum(broker_factory):
    """More topics than the broker's Topic Alias Maximum: the first ones get aliases, the others go
    out with their full name; nothing is misrouted and the broker never disconnects us."""
    instance = broker_factory(max_topic_alias=2)
    base = topic("alias2")
    topics = [f"{base}/{n}" for n in range(5)]
    inbox = Inbox()
    drops = []
    sub = pub = None
    try:
        sub = connected_client(instance.port, inbox=inbox, **V5)
        assert sub.subscribe(f"{base}/#", qos=1).wait(5)
        pub = connected_client(instance.port, **V5)
        pub.on_disconnect = drops.append
        sent = _send(pub, topics, 40)
        assert inbox.wait_for(len(sent), 10)
        assert sorted((m.topic, m.payload) for m in inbox.messages) == sorted(sent)
        # Per topic, order is kept.
        for t in topics:
            for qos in (0, 1):
                got = [m.payload for m in inbox.messages if m.topic == t and m.qos == qos]
                assert got == [p for i, (s, p) in enumerate(sent)
                               if s == t and (i // len(topics)) % 2 == qos]
        assert len(pub.session._aliases_out) == 2
        assert drops == []
    finally:
        shutdown(sub, pub)


def test_topic_aliases_reset_on_reconnect(broker_factory):
    """Aliases belong to a connection: after a reconnect the first PUBLISH must carry the topic
    again (the broker forgot the alias), or the broker disconnects with a protocol error."""
    instance = broker_factory(max_topic_alias=10)
    name = topic("alias3")
    inbox = Inbox()
    sub = pub = None
    try:
        sub = connected_client(instance.port, inbox=inbox, **V5)
        assert sub.subscribe(name, qos=1).wait(5)
        pub = connected_client(instance.port, client_id=uid("ar"), **V5)
        assert pub.publish(name, b"1", qos=1).wait(5)
        assert pub.publish(name, b"2", qos=1).wait(5)
        pub.disconnect()
        pub.connect(instance.host, instance.port, timeout=10)
        assert pub.publish(name, b"3", qos=1).wait(5)
        assert pub.publish(name, b"4", qos=1).wait(5)
        assert inbox.wait_for(4, 5)
        assert inbox.payloads == [b"1", b"2", b"3", b"4"]
        assert pub.is_connected
    finally:
        shutdown(sub, pub)


# ----------------------------------------------------------------------------- receive maximum


def test_receive_maximum_respected(broker_factory):
    instance = broker_factory(max_inflight_messages=5)
    name = topic("rxmax")
    inbox = Inbox()
    inflight_seen = []
    sub = pub = None
    try:
        sub = connected_client(instance.port, inbox=inbox, **V5)
        assert sub.subscribe(name, qos=1).wait(5)
        pub = mqttfast.Client(client_id=uid("rx"), protocol=5, max_inflight=1000)
        pub.on_publish = lambda handle: inflight_seen.append(pub.session.inflight_count)
        pub.connect(instance.host, instance.port, timeout=10)
        assert pub.session.broker_properties.get("receive_maximum") == 5
        assert pub.session._window == 5
        handles = [pub.publish(name, b"%04d" % i, qos=1) for i in range(1000)]
        assert pub.session.inflight_count <= 5
        assert all(h.wait(20) for h in handles)
        assert max(inflight_seen) <= 5
        assert inbox.wait_for(1000, 10)
        assert inbox.payloads == [b"%04d" % i for i in range(1000)]
    finally:
        shutdown(sub, pub)


def test_receive_maximum_qos2_and_publish_many(broker_factory):
    instance = broker_factory(max_inflight_messages=3)
    name = topic("rxmax2")
    inbox = Inbox()
    sub = pub = None
    try:
        sub = connected_client(instance.port, inbox=inbox, **V5)
        assert sub.subscribe(name, qos=2).wait(5)
        pub = connected_client(instance.port, **V5)
        assert pub.session._window == 3
        assert pub.publish_many(name, [b"%03d" % i for i in range(300)], qos=2).wait(20)
        assert inbox.wait_for(300, 10)
        assert inbox.payloads == [b"%03d" % i for i in range(300)]
    finally:
        shutdown(sub, pub)


# ----------------------------------------------------------------------------- SUBACK reason codes


DYNSEC_PLUGIN_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib",
                      "/usr/local/lib", "/opt/homebrew/lib")


@pytest.fixture
def acl_broker(broker_factory, tmp_path):
    """Anonymous clients may not subscribe to ``denied/#``.

    mosquitto's ``acl_file`` never refuses a SUBSCRIBE (2.0.11 grants it and filters at delivery:
    security_default.c returns success for MOSQ_ACL_SUBSCRIBE), so the refusal comes from the
    dynamic security plugin shipped with mosquitto, with a role on the anonymous group."""
    plugin = next((Path(d) / "mosquitto_dynamic_security.so" for d in DYNSEC_PLUGIN_DIRS
                   if (Path(d) / "mosquitto_dynamic_security.so").exists()), None)
    if plugin is None:
        skip_unless_ci("mosquitto_dynamic_security.so not found (it ships with mosquitto 2)")
    config = tmp_path / "dynsec.json"
    config.write_text(json.dumps({
        "defaultACLAccess": {"publishClientSend": True, "publishClientReceive": True,
                             "subscribe": True, "unsubscribe": True},
        "clients": [],
        "groups": [{"groupname": "anonymous", "roles": [{"rolename": "limited"}], "clients": []}],
        "anonymousGroup": "anonymous",
        "roles": [{"rolename": "limited", "acls": [
            {"acltype": "subscribePattern", "topic": "denied/#", "priority": 0, "allow": False}]}],
    }))
    return broker_factory(extra_config=[f"plugin {plugin}", f"plugin_opt_config_file {config}"])


@pytest.mark.parametrize("protocol, refused", [(5, 0x87), (4, 0x80)])
def test_suback_reason_codes(acl_broker, protocol, refused):
    """A filter the broker refuses: MQTT 5 says 0x87 "not authorized", 3.1.1 only 0x80 "failure";
    the other filters in the same SUBSCRIBE are granted, and the connection stays up."""
    subscribed = []
    client = mqttfast.Client(client_id=uid("acl"), protocol=protocol)
    client.on_subscribe = subscribed.append
    try:
        client.connect(acl_broker.host, acl_broker.port, timeout=10)
        assert granted(client.subscribe("denied/x", qos=1)) == [refused]
        handle = client.subscribe([("allowed/a", 2), ("denied/y", 1), ("allowed/b", 0)])
        assert granted(handle) == [2, refused, 0]
        assert subscribed[-1].reason_codes == (2, refused, 0)
        assert subscribed[-1].topics == ("allowed/a", "denied/y", "allowed/b")
        assert client.is_connected
        assert client.publish("allowed/a", b"x", qos=1).wait(5)
    finally:
        shutdown(client)


def test_suback_refused_mqtt31(acl_broker):
    """MQTT 3.1 has no failure code: mosquitto answers with the requested QoS but does not
    subscribe; nothing arrives."""
    inbox = Inbox()
    client = mqttfast.Client(client_id=uid("acl3"), protocol=3)
    client.on_message = inbox
    try:
        client.connect(acl_broker.host, acl_broker.port, timeout=10)
        assert granted(client.subscribe([("denied/z", 1), ("allowed/z", 1)])) == [1, 1]
        assert client.publish("denied/z", b"no", qos=1).wait(5)
        assert client.publish("allowed/z", b"yes", qos=1).wait(5)
        assert inbox.wait_for(1, 5)
        time.sleep(0.2)
        assert inbox.payloads == [b"yes"]
    finally:
        shutdown(client)


def test_invalid_shared_subscription_raises_at_the_call(broker):
    """No Local on a shared subscription is a protocol error (MQTT 5 3.8.3.1): refused before it
    reaches the broker, and the connection stays usable."""
    client = connected_client(broker.port, **V5)
    try:
        with pytest.raises(ValueError):
            client.subscribe(mqttfast.Subscription(f"$share/g/{topic('ns')}", 1, True))
        assert granted(client.subscribe(f"$share/g/{topic('ok')}", qos=1)) == [1]
    finally:
        shutdown(client)


def test_subscribe_above_broker_max_qos(broker_factory):
    """A broker configured with max_qos 1 grants QoS 1 to a QoS 2 request: the granted code is
    what wait() returns."""
    instance = broker_factory(extra_config=["max_qos 1"])
    client = connected_client(instance.port, protocol=4)
    try:
        assert granted(client.subscribe([(topic("q2"), 2), (topic("q0"), 0)])) == [1, 0]
    finally:
        shutdown(client)


# ----------------------------------------------------------------------------- shared subscriptions


def test_shared_subscription_splits_messages(broker):
    name = topic("shared")
    first, second = Inbox(), Inbox()
    a = b = pub = None
    try:
        a = connected_client(broker.port, inbox=first, **V5)
        b = connected_client(broker.port, inbox=second, **V5)
        assert granted(a.subscribe(f"$share/group/{name}", qos=1)) == [1]
        assert granted(b.subscribe(f"$share/group/{name}", qos=1)) == [1]
        pub = connected_client(broker.port, **V5)
        payloads = [b"%03d" % i for i in range(200)]
        assert pub.publish_many(name, payloads, qos=1).wait(10)
        assert wait_until(lambda: len(first) + len(second) >= 200, 10)
        time.sleep(0.2)
        assert len(first) + len(second) == 200  # each message to one member only
        assert sorted(first.payloads + second.payloads) == payloads
        assert len(first) > 20 and len(second) > 20  # mosquitto round-robins
        assert set(first.topics) | set(second.topics) == {name}
    finally:
        shutdown(pub, a, b)


# ----------------------------------------------------------------------------- properties


def test_publish_properties_round_trip(broker):
    name = topic("props")
    inbox = Inbox()
    sub = pub = None
    props = {
        "user_property": [("origin", "test"), ("origin", "again"), ("ünï", "cødé")],
        "content_type": "application/json",
        "response_topic": f"{name}/reply",
        "correlation_data": b"\x00\x01corr",
        "payload_format_indicator": 1,
        "message_expiry_interval": 600,
    }
    try:
        sub = connected_client(broker.port, inbox=inbox, **V5)
        assert sub.subscribe(name, qos=2).wait(5)
        pub = connected_client(broker.port, **V5)
        for qos in (0, 1, 2):
            assert pub.publish(name, b'{"qos": %d}' % qos, qos=qos, properties=props).wait(5)
        assert inbox.wait_for(3, 5)
        for msg in inbox.messages:
            got = msg.properties
            assert got["user_property"] == props["user_property"]
            assert got["content_type"] == "application/json"
            assert got["response_topic"] == f"{name}/reply"
            assert got["correlation_data"] == b"\x00\x01corr"
            assert got["payload_format_indicator"] == 1
            assert 590 <= got["message_expiry_interval"] <= 600  # what is left of it
        assert [m.qos for m in inbox.messages] == [0, 1, 2]
    finally:
        shutdown(sub, pub)


def test_subscription_identifier(broker):
    name = topic("subid")
    inbox = Inbox()
    sub = pub = None
    try:
        sub = connected_client(broker.port, inbox=inbox, **V5)
        assert sub.subscribe(name, qos=1, properties={"subscription_identifier": 42}).wait(5)
        pub = connected_client(broker.port, **V5)
        pub.publish(name, b"x", qos=1).wait(5)
        assert inbox.wait_for(1, 5)
        assert inbox.messages[0].properties["subscription_identifier"] == [42]
    finally:
        shutdown(sub, pub)


def test_connect_properties_and_assigned_client_id(broker):
    client = mqttfast.Client(client_id="", protocol=5, session_expiry=0)
    try:
        event = client.connect(broker.host, broker.port, timeout=10)
        assigned = (event.properties or {}).get("assigned_client_identifier")
        assert assigned and client.client_id == assigned
    finally:
        shutdown(client)


# ----------------------------------------------------------------------------- maximum packet size


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_payload_over_broker_maximum_packet_size(broker_factory, qos):
    instance = broker_factory(extra_config=["max_packet_size 1000"])
    name = topic("big")
    inbox = Inbox()
    sub = pub = None
    try:
        sub = connected_client(instance.port, inbox=inbox, **V5)
        assert sub.subscribe(name, qos=2).wait(5)
        pub = connected_client(instance.port, **V5)
        assert pub.session.broker_properties.get("maximum_packet_size") == 1000
        with pytest.raises(mqttfast.PayloadTooLarge):
            pub.publish(name, b"x" * 2000, qos=qos)
        with pytest.raises(mqttfast.PayloadTooLarge):
            pub.publish_many(name, [b"ok", b"x" * 2000], qos=qos)
        # Just under the limit still goes, and the connection is intact.
        assert pub.publish(name, b"y" * 900, qos=qos).wait(5)
        assert wait_until(lambda: b"y" * 900 in inbox.payloads, 5)
        assert b"x" * 2000 not in inbox.payloads
        assert pub.is_connected
    finally:
        shutdown(sub, pub)
