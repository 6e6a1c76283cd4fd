"""Broker URLs: ``mqtt://user:pass@host:1883``, ``mqtts://``, ``ws://``, ``wss://``, ``unix:///path``.

Pure (no sockets): ``parse_url`` checks a URL and returns a ``BrokerURL``; every error is a
``ValueError`` whose message shows the URL with its password replaced by ``***`` (``redact``).
"""
from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}
SCHEMES = ("mqtt", "mqtts", "ws", "wss", "unix")
WS_PATH = "/mqtt"  # the CLIs' --ws with no PATH, and paho's ws_set_options default
_FORM = ("expected mqtt://, mqtts://, ws:// or wss://[user[:password]@]host[:port][/path], "
         "or unix:///path/to/socket")


@dataclass(frozen=True)
class BrokerURL:
    """A checked broker URL. ``path`` is the socket's path for ``unix``, the HTTP path for
    ``ws``/``wss`` ("/" when absent) and what follows the authority for ``mqtt``/``mqtts``
    (the CLI's topic); ``port`` is 0 for ``unix``."""

    scheme: str
    host: str
    port: int
    path: str
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.scheme in ("mqtts", "wss")

    @property
    def websocket(self) -> bool:
        return self.scheme in ("ws", "wss")

    @property
    def unix(self) -> bool:
        return self.scheme == "unix"

    def __str__(self) -> str:  # no password: safe for logs
        if self.unix:
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}{':***' if self.password is not None else ''}@" \
            if self.username is not None or self.password is not None else ""
        path = self.path if self.path not in ("", "/") else ""
        return f"{self.scheme}://{user}{host}:{self.port}{path}"


def check_ws_path(path: str) -> str:
    """``path`` if it can be the HTTP path of a WebSocket upgrade (``/...``, no white space or
    control characters); ``ValueError`` saying why not."""
    if not path.startswith("/"):
        raise ValueError(f"must start with / (e.g. {WS_PATH})")
    if any(c.isspace() or ord(c) < 0x20 for c in path):
        raise ValueError("must not contain white space or control characters")
    if "?" in path or "#" in path:
        raise ValueError("a query (?...) or fragment (#...) is not supported")
    return path


def redact(text: str) -> str:
    """``text`` with the password of a ``scheme://user:password@host...`` URL in it replaced by
    ``***``. The user-info is what precedes the last ``@`` of the authority, which ends at the
    first ``/``, ``?`` or ``#`` (RFC 3986: those characters in a password are percent-encoded)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if not at or ":" not in userinfo:
        return text
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{host}{rest[end:]}"


def is_url(host: object) -> bool:
    """``connect(host)`` got a URL rather than a host name."""
    return isinstance(host, str) and "://" in host


def parse_url(text: str) -> BrokerURL:
    """Check ``text`` and split it; ``ValueError`` (with the password hidden) when it is wrong."""
    if not isinstance(text, str):
        raise TypeError(f"a broker URL is a str, not {type(text).__name__}")
    shown = redact(text)

    def bad(why: str) -> ValueError:
        return ValueError(f"invalid broker URL {shown!r}: {why}")

    if any(c.isspace() or ord(c) < 0x20 for c in text):
        raise bad("it contains white space or control characters")
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 address
        raise bad(str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise bad(f"unknown scheme {parts.scheme!r}; {_FORM}")
    if parts.query or parts.fragment:
        raise bad("a query (?...) or fragment (#...) has no meaning here")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if username == "":
        username = None  # "mqtt://@host", "mqtt://:password@host": no user name given
    if scheme == "unix":
        if parts.hostname or parts.netloc.rpartition("@")[2]:
            raise bad("a unix:// URL has no host: write unix:///path/to/socket (three slashes)")
        path = unquote(parts.path)
        if not path:
            raise bad("a unix:// URL needs the socket's path")
        if "\0" in path:
            raise bad("the socket path contains a NUL byte")
        return BrokerURL(scheme, "", 0, path, username, password)
    host = parts.hostname
    if not host:
        raise bad(f"no host; {_FORM}")
    try:
        port = parts.port
    except ValueError:
        raise bad("the port must be a number 1..65535") from None
    if port is None:
        if parts.netloc.endswith(":"):
            raise bad("empty port after ':'")
        port = DEFAULT_PORTS[scheme]
    elif not 0 < port < 65536:
        raise bad("the port must be a number 1..65535")
    path = parts.path
    if scheme in ("ws", "wss") and not path:
        path = "/"
    return BrokerURL(scheme, host, port, path, username, password)


def credentials(url: BrokerURL, username: Optional[str], password: Union[str, bytes, None]
                ) -> Tuple[Optional[str], Union[str, bytes, None]]:
    """The user name and password to connect with: the client's, completed by the URL's; a URL
    that names a different user or password than the client was given is a ``ValueError``."""
    if url.username is not None:
        if username is not None and username != url.username:
            raise ValueError(f"the URL's user name {url.username!r} differs from the client's "
                             f"{username!r}: give it in one place")
        username = url.username
    if url.password is not None:
        if password is not None:
            given = password.encode() if isinstance(password, str) else bytes(password)
            if given != url.password.encode():
                raise ValueError("the URL's password differs from the client's: give it in one "
                                 "place")
        else:
            password = url.password
    return username, password


class Target(NamedTuple):
    """Where and how a client connects, from a URL and the client's own settings."""

    host: str
    port: int
    unix_path: Optional[str]
    tls: Optional[ssl.SSLContext]
    username: Optional[str]
    password: Union[str, bytes, None]
    ws_path: Optional[str] = None  # ws:// and wss://: the HTTP path of the upgrade request


def target(text: str, port: Optional[int], tls: Optional[ssl.SSLContext],
           username: Optional[str], password: Union[str, bytes, None],
           default_tls: Callable[[], ssl.SSLContext], websocket: bool = False) -> Target:
    """What ``connect(url)`` connects to: ``mqtts``/``wss`` use the client's TLS context, or
    ``default_tls()`` (system CAs, host name checked) when it has none; ``mqtt`` with a TLS
    context is a contradiction and raises; credentials as ``credentials``."""
    url = parse_url(text)
    if port is not None:
        raise ValueError(f"connect({url}, port={port!r}): give the port in the URL, not both")
    if url.websocket and not websocket:
        raise ValueError(f"{url.scheme}:// (WebSocket) is not supported by this client; use "
                         "mqtt://, mqtts:// or unix://")
    if url.unix and getattr(socket, "AF_UNIX", None) is None:
        raise ValueError("unix:// URLs need Unix domain sockets, which this platform lacks")
    if url.scheme == "mqtt" and tls is not None:
        raise ValueError(f"{url} is plain TCP but the client has a TLS context: use mqtts://")
    if url.tls and tls is None:
        tls = default_tls()
    if url.path not in ("", "/") and not url.unix and not url.websocket:
        raise ValueError(f"{url}: a path has no meaning in an {url.scheme}:// URL given to "
                         "connect()")
    username, password = credentials(url, username, password)
    return Target(url.host, url.port, url.path if url.unix else None, tls, username, password,
                  url.path if url.websocket else None)


__all__ = ["BrokerURL", "DEFAULT_PORTS", "SCHEMES", "Target", "WS_PATH", "check_ws_path",
           "credentials", "is_url", "parse_url", "redact", "target"]
