"""Errors of the load generator and short, groupable descriptions of connection failures."""
from __future__ import annotations

import errno
import os
import re
from typing import Optional


class BenchError(Exception):
    """A failure the command line reports as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class UsageError(BenchError):
    """Bad input: exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 2)


_ERRNO_NAME = re.compile(r"\b(E[A-Z]+)\b(?: \(\d+\))?")
_PREFIXES = (
    re.compile(r"^cannot connect to \S+: "),
    re.compile(r"^receive failed: "),
    re.compile(r"^send failed: "),
)
_HINTS = {
    errno.EADDRNOTAVAIL: " (out of local ports or a bad --ifaddr: spread connections over more "
                         "source addresses with --ifaddr 127.0.0.1,127.0.0.2,...)",
    errno.EMFILE: " (too many open files: raise ulimit -n or use --workers)",
}


def describe_error(error: Optional[BaseException]) -> str:
    """A short reason for a failed or dropped connection, the same for every client that failed
    the same way (so that reasons can be counted): ``connection refused``, ``no CONNACK within
    10 s``, ``TLS handshake failed: ...``."""
    if error is None:
        return "closed"
    text = str(error) or type(error).__name__
    for prefix in _PREFIXES:
        text = prefix.sub("", text)
    match = _ERRNO_NAME.search(text)
    if match and hasattr(errno, match.group(1)):
        code = getattr(errno, match.group(1))
        text = text[:match.start()] + os.strerror(code).lower() + text[match.end():]
    text = re.sub(r"^no CONNACK from \S+ within", "no CONNACK within", text)
    text = re.sub(r"^TLS handshake with \S+ failed", "TLS handshake failed", text)
    text = re.sub(r"\[Errno (\d+)\] ", "", text).strip()
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]  # "Connection refused" (os.strerror) -> "connection ..."
    for code, hint in _HINTS.items():
        if os.strerror(code).lower() in text.lower() and hint not in text:
            text += hint
    return text
