"""Example packets shared by the round-trip and stream tests.

Each case is ``(id, protocol, build)`` where ``build(m)`` makes the packet from twin ``m``'s classes,
so the same table runs under the Cython and the pure twin. Together the MQTT 5 cases use every
property of ``properties.PROPERTIES`` at least once (``test_every_property_is_exercised`` checks).
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, List, Tuple

Build = Callable[[ModuleType], Any]
Case = Tuple[str, int, Build]

USER = [("k", "v"), ("k", "v2"), ("", ""), ("naïve", "日本")]

PUBLISH_PROPS = {
    "payload_format_indicator": 1,
    "message_expiry_interval": 0xFFFFFFFF,
    "content_type": "application/json",
    "response_topic": "reply/to/me",
    "correlation_data": b"\x00\x01corr",
    "subscription_identifier": [1, 268_435_455, 16384],
    "topic_alias": 65535,
    "user_property": USER,
}
WILL_PROPS = {
    "will_delay_interval": 30,
    "payload_format_indicator": 0,
    "message_expiry_interval": 60,
    "content_type": "text/plain",
    "response_topic": "will/reply",
    "correlation_data": b"",
    "user_property": [("will", "yes")],
}
CONNECT_PROPS = {
    "session_expiry_interval": 3600,
    "authentication_method": "SCRAM-SHA-1",
    "authentication_data": b"client-first",
    "request_problem_information": 0,
    "request_response_information": 1,
    "receive_maximum": 20,
    "topic_alias_maximum": 10,
    "maximum_packet_size": 1 << 20,
    "user_property": USER,
}
CONNACK_PROPS = {
    "session_expiry_interval": 0,
    "assigned_client_identifier": "auto-1234",
    "server_keep_alive": 30,
    "authentication_method": "SCRAM-SHA-1",
    "authentication_data": b"server-first",
    "response_information": "resp/info",
    "server_reference": "other.example:1883",
    "reason_string": "welcome",
    "receive_maximum": 65535,
    "topic_alias_maximum": 0,
    "maximum_qos": 1,
    "retain_available": 0,
    "user_property": [("a", "b")],
    "maximum_packet_size": 268_435_460,
    "wildcard_subscription_available": 1,
    "subscription_identifier_available": 0,
    "shared_subscription_available": 1,
}
ACK_PROPS = {"reason_string": "fine", "user_property": [("x", "y")]}


def _connect_full(protocol: int, props: bool) -> Build:
    def build(m: ModuleType) -> Any:
        will = m.Will("last/will", b"\x00gone\xff", qos=2, retain=True,
                      properties=WILL_PROPS if props else None)
        return m.Connect("client-1", protocol=protocol, clean_session=False, keepalive=65535,
                         username="user", password=b"p\x00ss", will=will,
                         properties=CONNECT_PROPS if props else None)
    return build


def _subscribe(protocol: int, props: bool) -> Build:
    def build(m: ModuleType) -> Any:
        subs = [m.Subscription("a/+/c", 0), m.Subscription("#", 1), m.Subscription("$SYS/x", 2)]
        if protocol == 5:
            subs += [m.Subscription("a/b", 1, no_local=True, retain_as_published=True,
                                    retain_handling=2),
                     m.Subscription("$share/group/x/#", 2, retain_handling=1)]
        properties = {"subscription_identifier": 42, "user_property": USER} if props else None
        return m.Subscribe(65535, subs, properties)
    return build


def cases_for(protocol: int) -> List[Case]:
    """Every packet type that exists in ``protocol``, without properties."""
    p = protocol
    out: List[Case] = [
        ("connect-minimal", p, lambda m: m.Connect("c" if p == 3 else "", protocol=p)),
        ("connect-full", p, _connect_full(p, False)),
        ("connect-will-qos0", p, lambda m: m.Connect(
            "x", protocol=p, will=m.Will("w", b"", 0, False))),
        ("connack", p, lambda m: m.ConnAck(p != 3, 0)),
        ("connack-refused", p, lambda m: m.ConnAck(False, 0x87 if p == 5 else 5)),
        ("publish-qos0", p, lambda m: m.Publish("a/b", b"hello")),
        ("publish-qos1", p, lambda m: m.Publish("a/b", b"", 1, 1, retain=True)),
        ("publish-qos2-dup", p, lambda m: m.Publish("ü/€/𝄞", bytes(range(256)), 2, 65535,
                                                    dup=True)),
        ("publish-binary-topic-chars", p, lambda m: m.Publish("$SYS/ /\u00ff", b"\x00")),
        ("puback", p, lambda m: m.PubAck(1)),
        ("pubrec", p, lambda m: m.PubRec(65535)),
        ("pubrel", p, lambda m: m.PubRel(258)),
        ("pubcomp", p, lambda m: m.PubComp(7)),
        ("subscribe", p, _subscribe(p, False)),
        ("suback", p, lambda m: m.SubAck(9, [0, 1, 2] + ([] if p == 3 else [0x80]))),
        ("unsubscribe", p, lambda m: m.Unsubscribe(10, ["a/+", "#", "x/y/z"])),
        ("unsuback", p, lambda m: m.UnsubAck(11, [0, 0x11] if p == 5 else [])),
        ("pingreq", p, lambda m: m.PingReq()),
        ("pingresp", p, lambda m: m.PingResp()),
        ("disconnect", p, lambda m: m.Disconnect()),
    ]
    if p == 5:
        out += [
            ("puback-reason", p, lambda m: m.PubAck(2, 0x10)),
            ("pubrec-reason", p, lambda m: m.PubRec(3, 0x80)),
            ("pubrel-reason", p, lambda m: m.PubRel(4, 0x92)),
            ("pubcomp-reason", p, lambda m: m.PubComp(5, 0x92)),
            ("suback-v5-codes", p, lambda m: m.SubAck(9, [0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E,
                                                          0xA1, 0xA2])),
            ("disconnect-reason", p, lambda m: m.Disconnect(0x04)),
            ("auth", p, lambda m: m.Auth()),
            ("auth-continue", p, lambda m: m.Auth(0x18)),
        ]
    return [(f"v{p}-{name}", p, build) for name, p, build in out]


def cases_with_properties() -> List[Case]:
    """MQTT 5 packets carrying properties; between them, every property defined by the spec."""
    out: List[Case] = [
        ("connect", _connect_full(5, True)),
        ("connect-will-props-only", lambda m: m.Connect(
            "", will=m.Will("w/t", b"bye", 1, False, {"will_delay_interval": 0}), protocol=5)),
        ("connack", lambda m: m.ConnAck(True, 0, CONNACK_PROPS)),
        ("publish", lambda m: m.Publish("a/b", b"payload", 1, 5, properties=PUBLISH_PROPS)),
        ("publish-alias-only", lambda m: m.Publish("", b"x", 0, properties={"topic_alias": 1})),
        ("publish-one-subscription-id", lambda m: m.Publish(
            "t", b"", 2, 9, properties={"subscription_identifier": [7]})),
        ("puback", lambda m: m.PubAck(1, 0, ACK_PROPS)),
        ("pubrec", lambda m: m.PubRec(2, 0x97, ACK_PROPS)),
        ("pubrel", lambda m: m.PubRel(3, 0x92, {"reason_string": "gone"})),
        ("pubcomp", lambda m: m.PubComp(4, 0, {"user_property": [("a", "")]})),
        ("subscribe", _subscribe(5, True)),
        ("suback", lambda m: m.SubAck(5, [1, 0x80], ACK_PROPS)),
        ("unsubscribe", lambda m: m.Unsubscribe(6, ["a"], {"user_property": USER})),
        ("unsuback", lambda m: m.UnsubAck(7, [0x00], ACK_PROPS)),
        ("disconnect", lambda m: m.Disconnect(0x8B, {
            "session_expiry_interval": 10, "server_reference": "elsewhere",
            "reason_string": "bye", "user_property": [("why", "maintenance")]})),
        ("disconnect-props-success", lambda m: m.Disconnect(0, {"reason_string": "ok"})),
        ("auth", lambda m: m.Auth(0x19, {"authentication_method": "SCRAM-SHA-1",
                                         "authentication_data": b"\x01\x02",
                                         "reason_string": "again",
                                         "user_property": [("step", "2")]})),
    ]
    return [(f"v5-props-{name}", 5, build) for name, build in out]


ALL_CASES: List[Case] = cases_for(3) + cases_for(4) + cases_for(5) + cases_with_properties()

PROPERTY_DICTS = [PUBLISH_PROPS, WILL_PROPS, CONNECT_PROPS, CONNACK_PROPS, ACK_PROPS]
