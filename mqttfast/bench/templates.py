"""Topic templates and payload headers of the load generator.

A template is a topic (or, for ``bench sub``, a filter) with placeholders, as in emqtt-bench:

    %i        the client's sequence number (``-n`` start number + its index)
    %c        the client id
    %u        the username (``-u``; empty without one)
    %s        the message sequence number of this client (publishers only: 1, 2, 3, ...)
    %rand_N   a random integer in [1, N], drawn per message (per subscription for ``sub``)
    %%        a literal "%"

``%i``, ``%c`` and ``%u`` are resolved once per client (``Template.bind``); a template without
``%s`` or ``%rand_N`` then costs nothing per message. Anything else after a "%" is an error that
names the placeholder and its position.

Payload headers (``--payload-hdrs``): the publisher writes, at the start of each payload,

    b"MQFB" | timestamp ns (u64, ``time.time_ns()``) | sequence (u64, per publisher, from 1)
           | run id (u32, one per ``bench pub`` invocation) | publisher id (u32, the client's %i)

(big endian, 28 bytes) and pads the rest of the ``-s`` bytes with "x". ``time.time_ns()`` (not the
monotonic clock) so that a publisher and a subscriber in different processes agree on the time.
The subscriber recognises the magic, measures end-to-end latency and checks each publisher's
sequence for losses, duplicates and reordering.
"""
from __future__ import annotations

import random
import re
import struct
from typing import Callable, List, Optional, Tuple, Union

MAGIC = b"MQFB"
HEADER = struct.Struct(">4sQQII")
HEADER_SIZE = HEADER.size  # 28
# The same 28 bytes as the receiver reads them: magic as an int, and run id + publisher id as one
# 64-bit stream id.
RECV_HEADER = struct.Struct(">IQQQ")
MAGIC_INT = int.from_bytes(MAGIC, "big")

_PLACEHOLDER = re.compile(r"%(?:(rand_)(\d*)|(.?))", re.S)
KNOWN = "%i, %c, %u, %s, %rand_N, %%"

# Segment kinds.
_LITERAL, _SEQ, _RAND = 0, 1, 2
Segment = Tuple[int, Union[str, int]]


class TemplateError(ValueError):
    """A malformed template: the message says what and where."""


class Template:
    """A parsed template; ``bind`` resolves the per-client placeholders."""

    def __init__(self, text: str, *, allow_seq: bool = True) -> None:
        if not text:
            raise TemplateError("empty topic: give a topic with -t")
        self.text = text
        self.parts: List[Tuple[str, Union[str, int]]] = []  # ("lit", s) ("i",) ... ("rand", n)
        pos = 0
        literal = []
        for match in _PLACEHOLDER.finditer(text):
            literal.append(text[pos:match.start()])
            pos = match.end()
            rand, digits, other = match.group(1), match.group(2), match.group(3)
            where = f"at position {match.start()} of {text!r}"
            if rand:
                if not digits:
                    raise TemplateError(f"'%rand_' {where} needs a number: %rand_N with N >= 1")
                n = int(digits)
                if n < 1:
                    raise TemplateError(f"'%rand_{digits}' {where}: N must be at least 1")
                self._flush(literal)
                self.parts.append(("rand", n))
            elif other == "%":
                literal.append("%")
            elif other in ("i", "c", "u", "s"):
                if other == "s" and not allow_seq:
                    raise TemplateError(f"'%s' {where}: a subscription has no message sequence "
                                        f"(%s is for bench pub topics)")
                self._flush(literal)
                self.parts.append((other, ""))
            elif other:
                raise TemplateError(f"unknown placeholder '%{other}' {where} (known: {KNOWN})")
            else:
                raise TemplateError(f"a lone '%' at the end of {text!r} (write %% for a literal "
                                    f"%; known: {KNOWN})")
        literal.append(text[pos:])
        self._flush(literal)

    def _flush(self, literal: List[str]) -> None:
        text = "".join(literal)
        literal.clear()
        if text:
            self.parts.append(("lit", text))

    @property
    def per_message(self) -> bool:
        """Whether the topic changes from message to message (%s or %rand_N)."""
        return any(kind in ("s", "rand") for kind, _ in self.parts)

    def uses(self, kind: str) -> bool:
        return any(k == kind for k, _ in self.parts)

    def bind(self, seq: int, client_id: str, username: Optional[str]) -> "BoundTemplate":
        """Resolve %i, %c and %u for one client."""
        segments: List[Segment] = []
        text: List[str] = []
        for kind, value in self.parts:
            if kind == "lit":
                text.append(value)  # type: ignore[arg-type]
            elif kind == "i":
                text.append(str(seq))
            elif kind == "c":
                text.append(client_id)
            elif kind == "u":
                text.append(username or "")
            else:
                if text:
                    segments.append((_LITERAL, "".join(text)))
                    text = []
                segments.append((_SEQ, 0) if kind == "s" else (_RAND, value))  # type: ignore[arg-type]
        if text:
            segments.append((_LITERAL, "".join(text)))
        return BoundTemplate(segments)

    def check_publish_topic(self, client_id: str, username: Optional[str]) -> None:
        """Refuse a template whose topics would contain wildcards (or nothing at all)."""
        sample = self.bind(0, client_id, username)
        literal = "".join(str(v) for k, v in sample.segments if k == _LITERAL)
        for char in ("+", "#"):
            if char in literal:
                raise TemplateError(f"topic {self.text!r} contains the wildcard {char!r} "
                                    f"(resolved for the first client: {sample.example()!r}); "
                                    f"a PUBLISH topic cannot have wildcards")
        if "\0" in literal:
            raise TemplateError(f"topic {self.text!r} contains a NUL character")
        if not sample.example():
            raise TemplateError(f"topic {self.text!r} resolves to an empty topic")


class BoundTemplate:
    """A template with the per-client placeholders resolved: ``static`` is the topic when nothing
    changes per message; otherwise ``render(seq)`` builds it."""

    __slots__ = ("segments", "static")

    def __init__(self, segments: List[Segment]) -> None:
        self.segments = segments
        if not segments:
            self.static: Optional[str] = ""
        elif len(segments) == 1 and segments[0][0] == _LITERAL:
            self.static = segments[0][1]  # type: ignore[assignment]
        else:
            self.static = None

    def render(self, seq: int, _randint: Callable[[int, int], int] = random.randint) -> str:
        if self.static is not None:
            return self.static
        out: List[str] = []
        for kind, value in self.segments:
            if kind == _LITERAL:
                out.append(value)  # type: ignore[arg-type]
            elif kind == _SEQ:
                out.append(str(seq))
            else:
                out.append(str(_randint(1, value)))  # type: ignore[arg-type]
        return "".join(out)

    def example(self) -> str:
        return self.render(1)


# ------------------------------------------------------------------------------ payloads

class PayloadMaker:
    """Payloads of one publisher run: a constant, or a header (see the module docstring) + padding."""

    __slots__ = ("constant", "headers", "pad", "run_id", "size")

    def __init__(self, size: int, message: Optional[bytes], headers: bool, run_id: int) -> None:
        self.headers = headers
        self.run_id = run_id & 0xFFFFFFFF
        body = message if message is not None else b"x" * size
        if headers:
            self.pad = message if message is not None else b"x" * max(0, size - HEADER_SIZE)
            self.constant = None
            self.size = HEADER_SIZE + len(self.pad)
        else:
            self.pad = b""
            self.constant = body
            self.size = len(body)

    def make(self, publisher: int, seq: int, now_ns: int) -> bytes:
        if self.constant is not None:
            return self.constant
        return HEADER.pack(MAGIC, now_ns, seq, self.run_id, publisher & 0xFFFFFFFF) + self.pad


def parse_header(payload: bytes) -> Optional[Tuple[int, int, int, int]]:
    """``(timestamp_ns, seq, run_id, publisher)`` when ``payload`` starts with a header."""
    if len(payload) >= HEADER_SIZE and payload[:4] == MAGIC:
        _, ts, seq, run, pub = HEADER.unpack_from(payload)
        return ts, seq, run, pub
    return None


def share_group(topic_filter: str) -> Optional[str]:
    """The group of a ``$share/group/filter`` shared subscription, else None."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3 and parts[1]:
            return parts[1]
    return None


def check_filter(text: str) -> None:
    """Refuse filters the broker would refuse anyway, with a clearer message (literal parts only)."""
    levels = text.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise TemplateError(f"filter {text!r}: '#' must be a whole level, and the last one")
        if "+" in level and level != "+":
            raise TemplateError(f"filter {text!r}: '+' must be a whole level")
    if text.startswith("$share/"):
        parts = text.split("/", 2)
        if len(parts) < 3 or not parts[1] or not parts[2]:
            raise TemplateError(f"shared subscription {text!r} must be $share/<group>/<filter>")
