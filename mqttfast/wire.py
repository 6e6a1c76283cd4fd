"""MQTT's primitive data types (spec 1.5): varints, integers, UTF-8 strings, binary data.

Pure Python, shared by both codec twins for the cold paths (CONNECT, SUBSCRIBE, properties...).
Decoders take ``(buf, pos, end)`` and return ``(value, new_pos)``; they never read past ``end``
and raise ``MalformedPacket`` with a message that says what was wrong.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Optional, Tuple, Union

from .constants import MAX_REMAINING_LENGTH
from .errors import InvalidTopic, MalformedPacket

Buffer = Union[bytes, bytearray, memoryview]


def encode_varint(value: int) -> bytes:
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(buf: Buffer, pos: int, end: int, what: str = "variable byte integer") -> Tuple[int, int]:
    value = 0
    shift = 0
    for _ in range(4):
        if pos >= end:
            raise MalformedPacket(f"{what} runs past the end of the packet")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise MalformedPacket(f"{what} is longer than 4 bytes")


def decode_u8(buf: Buffer, pos: int, end: int, what: str) -> Tuple[int, int]:
    if pos + 1 > end:
        raise MalformedPacket(f"{what} runs past the end of the packet")
    return buf[pos], pos + 1


def decode_u16(buf: Buffer, pos: int, end: int, what: str) -> Tuple[int, int]:
    if pos + 2 > end:
        raise MalformedPacket(f"{what} runs past the end of the packet")
    return (buf[pos] << 8) | buf[pos + 1], pos + 2


def decode_u32(buf: Buffer, pos: int, end: int, what: str) -> Tuple[int, int]:
    if pos + 4 > end:
        raise MalformedPacket(f"{what} runs past the end of the packet")
    return int.from_bytes(buf[pos:pos + 4], "big"), pos + 4


def decode_binary(buf: Buffer, pos: int, end: int, what: str) -> Tuple[bytes, int]:
    length, pos = decode_u16(buf, pos, end, f"length of {what}")
    if pos + length > end:
        raise MalformedPacket(f"{what} ({length} bytes) runs past the end of the packet")
    return bytes(buf[pos:pos + length]), pos + length


def check_utf8(raw: bytes, what: str) -> str:
    """Decode an MQTT UTF-8 string: well-formed, no surrogates, no U+0000 (spec 1.5.4)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"{what} is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    if "\x00" in text:
        raise MalformedPacket(f"{what} contains U+0000")
    return text


def decode_string(buf: Buffer, pos: int, end: int, what: str) -> Tuple[str, int]:
    raw, pos = decode_binary(buf, pos, end, what)
    return check_utf8(raw, what), pos


def encode_u16(value: int, what: str = "value") -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} must be 0..65535, got {value}")
    return value.to_bytes(2, "big")


def encode_binary(data: Union[bytes, bytearray, memoryview], what: str = "binary data") -> bytes:
    data = bytes(data)
    if len(data) > 0xFFFF:
        raise ValueError(f"{what} is {len(data)} bytes; MQTT allows at most 65535")
    return len(data).to_bytes(2, "big") + data


def encode_string(text: str, what: str = "string") -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be str, not {type(text).__name__}")
    if "\x00" in text:
        raise ValueError(f"{what} must not contain U+0000")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} contains a lone surrogate and cannot be encoded as UTF-8") from None
    return encode_binary(raw, what)


def topic_error(topic: str, raw_length: int) -> str:
    """Why ``topic`` cannot be published to, or '' if it can (the caller's side of validation)."""
    if raw_length == 0:
        return "topic must not be empty"
    if raw_length > 0xFFFF:
        return f"topic is {raw_length} bytes of UTF-8; MQTT allows at most 65535"
    if "+" in topic or "#" in topic:
        return f"cannot publish to {topic!r}: wildcards (+ #) are only allowed in subscriptions"
    if "\x00" in topic:
        return "topic must not contain U+0000"
    return ""


def validate_topic(topic: str) -> None:
    """Raise ``InvalidTopic`` unless ``topic`` is a valid topic name to publish to."""
    if not isinstance(topic, str):
        raise TypeError(f"topic must be str, not {type(topic).__name__}")
    try:
        raw_length = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidTopic("topic contains a lone surrogate and cannot be encoded as UTF-8") from None
    reason = topic_error(topic, raw_length)
    if reason:
        raise InvalidTopic(reason)


def filter_error(topic_filter: str) -> str:
    """Why ``topic_filter`` is not a valid subscription filter, or '' if it is (spec 4.7)."""
    if not topic_filter:
        return "topic filter must not be empty"
    if "\x00" in topic_filter:
        return "topic filter must not contain U+0000"
    try:
        if len(topic_filter.encode("utf-8")) > 0xFFFF:
            return "topic filter is longer than 65535 bytes"
    except UnicodeEncodeError:
        return "topic filter contains a lone surrogate"
    levels = topic_filter.split("/")
    if topic_filter.startswith("$share/"):
        if len(levels) < 3 or not levels[1] or "+" in levels[1] or "#" in levels[1]:
            return f"shared subscription {topic_filter!r} must be $share/<group>/<filter>"
        rest = "/".join(levels[2:])
        return filter_error(rest) if rest else "shared subscription needs a filter after the group"
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return f"'#' must be a whole level and the last one, in {topic_filter!r}"
        if "+" in level and level != "+":
            return f"'+' must be a whole level, in {topic_filter!r}"
    return ""


def validate_topic_filter(topic_filter: str) -> None:
    """Raise ``InvalidTopic`` unless ``topic_filter`` is a valid subscription filter."""
    if not isinstance(topic_filter, str):
        raise TypeError(f"topic filter must be str, not {type(topic_filter).__name__}")
    reason = filter_error(topic_filter)
    if reason:
        raise InvalidTopic(reason)


# A filter, compiled once: (the filter text, None, False) for one without wildcards (matched by
# string equality), else ("", its regular expression's fullmatch, starts with a wildcard); with
# the $share/<group>/ prefix already stripped. A regex: about 3x faster than comparing split
# levels in Python. Callbacks match the same few filters per message, so they are cached; the
# cache is simply emptied when full (a dict lookup is cheaper than an LRU's bookkeeping).
_Compiled = Tuple[str, Optional[Callable[[str], Optional["re.Match[str]"]]], bool]
_FILTER_CACHE: Dict[str, _Compiled] = {}
_FILTER_CACHE_SIZE = 4096


def _compile_filter(topic_filter: str) -> _Compiled:
    reason = filter_error(topic_filter)
    if reason:
        raise InvalidTopic(reason)
    if topic_filter.startswith("$share/"):
        # A shared subscription matches like its filter (MQTT 5 section 4.8.2).
        topic_filter = topic_filter.split("/", 2)[2]
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter, None, False
    levels = topic_filter.split("/")
    multi = levels[-1] == "#"
    if multi:
        del levels[-1]
    pattern = "/".join("[^/]*" if level == "+" else re.escape(level) for level in levels)
    if multi:  # '#' also matches the parent level: 'a/#' matches 'a'
        pattern = f"{pattern}(?:/.*)?" if levels else ".*"
    return "", re.compile(pattern, re.DOTALL).fullmatch, topic_filter[0] in "+#"


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether a message on ``topic`` matches the subscription ``topic_filter`` (MQTT 3.1.1 4.7):
    '+' matches one level, a trailing '#' this level and every one below ('a/#' matches 'a'), a
    filter starting with a wildcard does not match a topic starting with '$', and
    '$share/<group>/<filter>' matches like '<filter>'. An invalid filter raises ``InvalidTopic``."""
    if topic_filter.__class__ is not str and not isinstance(topic_filter, str):
        raise TypeError(f"topic filter must be str, not {type(topic_filter).__name__}")
    if topic.__class__ is not str and not isinstance(topic, str):
        raise TypeError(f"topic must be str, not {type(topic).__name__}")
    compiled = _FILTER_CACHE.get(topic_filter)
    if compiled is None:
        compiled = _compile_filter(topic_filter)
        if len(_FILTER_CACHE) >= _FILTER_CACHE_SIZE:
            _FILTER_CACHE.clear()
        _FILTER_CACHE[topic_filter] = compiled
    plain, match, leading_wildcard = compiled
    if match is None:
        return topic == plain
    if leading_wildcard and topic[:1] == "$":
        return False  # $SYS/... and the like are only matched by filters naming them (4.7.2)
    return match(topic) is not None
