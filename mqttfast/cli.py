"""``mqttfast pub`` and ``mqttfast sub``: mosquitto_pub / mosquitto_sub work-alikes on the Client.

Flags mean what mosquitto's mean, so ``-h`` is the host and help is ``--help``. Values are taken
verbatim from the next argument (``-m -5`` publishes "-5"), and ``-D`` takes three arguments, or
four for ``user-property``, which is why this is a small table-driven parser and not argparse.

Exit status: 0 done; 1 a runtime error (broker unreachable or refused the connection, a publish
or subscription refused, connection lost); 2 a bad command line; 27 ``sub -W`` ran out of time
(as mosquitto_sub, so ``-C 1 -W 5`` tells "a message came" from "none came"); 128 + the signal
number when ``pub`` is interrupted. ``sub`` stopped by Ctrl-C or SIGTERM exits 0.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import queue
import random
import signal
import ssl
import string
import sys
import textwrap
import threading
import time
from collections import deque
from typing import Any, BinaryIO, Callable, Deque, Dict, List, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import quote

from ._version import __version__
from .client import Client, tls_context
from .codec import Subscription, Will
from .constants import MQTT_3_1, MQTT_3_1_1, MQTT_5, SUBACK_FAILURE, PacketType, reason_name
from .errors import InvalidTopic, MQTTError
from .properties import BINARY, BY_NAME, PAIR, STRING, WILL, encode_properties
from .url import DEFAULT_PORTS, WS_PATH, check_ws_path, parse_url
from .url import redact as _mask_password
from .wire import validate_topic, validate_topic_filter

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 27  # mosquitto_sub's status when -W runs out (MOSQ_ERR_TIMEOUT)


class UsageError(Exception):
    """A bad command line: printed on stderr with a pointer to --help; exit status 2."""


class HelpRequested(Exception):
    """``--help`` was among the arguments."""


# ================================================================================ the flag table


class Flag(NamedTuple):
    names: Tuple[str, ...]
    dest: str
    metavar: str  # "" for a switch that takes no value
    help: str
    convert: Optional[Callable[[str], Any]] = None  # raises ValueError("must be ...")
    repeat: bool = False  # collect every value in a list
    bare: Optional[str] = None  # the value when given alone: the value is optional ("[PATH]")


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"must be an integer from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}")
        return value
    return convert


def _qos(text: str) -> int:
    if text not in ("0", "1", "2"):
        raise ValueError("QoS must be 0, 1 or 2")
    return int(text)


_PROTOCOLS = {"31": MQTT_3_1, "mqttv31": MQTT_3_1, "311": MQTT_3_1_1, "mqttv311": MQTT_3_1_1,
              "5": MQTT_5, "mqttv5": MQTT_5}


def _protocol(text: str) -> int:
    try:
        return _PROTOCOLS[text.lower()]
    except KeyError:
        raise ValueError("must be 31, 311 or 5 (or mqttv31, mqttv311, mqttv5)") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise ValueError("must be a number of seconds, 0 or more")
    return value


def _expiry(text: str) -> int:
    if text in ("-1", "∞"):
        return 0xFFFFFFFF
    return _int_range(0, 0xFFFFFFFF)(text)


CONNECTION = (
    Flag(("-h", "--host"), "host", "HOST", "broker host (default: localhost)"),
    Flag(("-p", "--port"), "port", "PORT", "broker port (default: 1883, or 8883 with TLS)",
         _int_range(1, 65535)),
    Flag(("-L", "--url"), "url", "URL",
         "mqtt(s)://[user[:password]@]host[:port]/topic, ws(s)://host[:port]/path, or "
         "unix:///path/to/socket"),
    Flag(("--ws",), "ws_path", "[PATH]",
         f"MQTT over WebSocket to -h/-p at HTTP path PATH (default {WS_PATH}); wss with the TLS "
         "flags; the port defaults to 80, 443 with TLS", check_ws_path, bare=WS_PATH),
    Flag(("-A",), "bind_address", "ADDRESS", "bind the outgoing socket to this local address"),
    Flag(("-V", "--protocol-version"), "protocol", "VERSION",
         "MQTT version: 31, 311 or 5 (also mqttv31, mqttv311, mqttv5; default 311)", _protocol),
    Flag(("-i", "--id"), "client_id", "ID",
         "client id (default: random for 3.1/3.1.1, assigned by the broker for 5)"),
    Flag(("-I", "--id-prefix"), "id_prefix", "PREFIX", "client id: PREFIX followed by the pid"),
    Flag(("-k", "--keepalive"), "keepalive", "SECONDS", "keep-alive interval (default 60; 0 = off)",
         _int_range(0, 65535)),
    Flag(("-c", "--disable-clean-session"), "persistent", "",
         "keep the session on the broker after disconnecting (needs -i or -I)"),
    Flag(("-x",), "session_expiry", "SECONDS",
         "MQTT 5 session expiry interval (-1 = never expires)", _expiry),
    Flag(("-u", "--username"), "username", "USER", "user name"),
    Flag(("-P", "--pw"), "password", "PASSWORD", "password"),
    Flag(("-D", "--property"), "properties", "COMMAND NAME VALUE",
         "an MQTT 5 property (implies -V 5), e.g. -D connect user-property key value, "
         "-D connect session-expiry-interval 60; COMMAND is connect, publish (pub), subscribe "
         "(sub), disconnect or will", repeat=True),
    Flag(("-d", "--debug"), "debug", "", "print connection events on stderr"),
    Flag(("--quiet",), "quiet", "", "do not print runtime errors (usage errors still are)"),
    Flag(("--nodelay",), "nodelay", "", "accepted for compatibility: Nagle is always off"),
    Flag(("--help",), "help", "", "show this help and exit"),
)

WILL_FLAGS = (
    Flag(("--will-topic",), "will_topic", "TOPIC", "topic of the will message"),
    Flag(("--will-payload",), "will_payload", "PAYLOAD", "payload of the will (default empty)"),
    Flag(("--will-qos",), "will_qos", "QOS", "QoS of the will (default 0)", _qos),
    Flag(("--will-retain",), "will_retain", "", "retain the will"),
)

TLS_FLAGS = (
    Flag(("--cafile",), "cafile", "FILE", "trusted CA certificates (PEM); enables TLS"),
    Flag(("--capath",), "capath", "DIR", "directory of trusted CA certificates; enables TLS"),
    Flag(("--cert",), "cert", "FILE", "client certificate (PEM)"),
    Flag(("--key",), "key", "FILE", "client private key (PEM)"),
    Flag(("--insecure",), "insecure", "",
         "do not check the server's hostname against its certificate (the certificate is "
         "still verified)"),
    Flag(("--tls-use-os-certs",), "tls_use_os_certs", "", "trust the system's CA certificates"),
    Flag(("--tls-version",), "tls_version", "VERSION", "tlsv1.3, tlsv1.2 or tlsv1.1"),
    Flag(("--tls-alpn",), "tls_alpn", "PROTOCOL", "ALPN protocol to offer"),
    Flag(("--ciphers",), "ciphers", "CIPHERS", "OpenSSL cipher list"),
)
_TLS_DESTS = ("cafile", "capath", "cert", "key", "insecure", "tls_use_os_certs", "tls_version",
              "tls_alpn", "ciphers")

PUB_FLAGS = (
    Flag(("-t", "--topic"), "topics", "TOPIC", "topic to publish to", repeat=True),
    Flag(("-m", "--message"), "message", "MESSAGE", "send MESSAGE"),
    Flag(("-f", "--file"), "file", "FILE", "send the whole file as one message"),
    Flag(("-l", "--stdin-line"), "stdin_line", "",
         "send each line of stdin as a message, as it arrives, until end of file"),
    Flag(("-n", "--null-message"), "null_message", "", "send an empty message"),
    Flag(("-s", "--stdin-file"), "stdin_file", "", "send all of stdin as one message"),
    Flag(("-q", "--qos"), "qos", "QOS", "QoS of the messages (default 0)", _qos),
    Flag(("-r", "--retain"), "retain", "", "ask the broker to retain the message"),
    Flag(("--repeat",), "repeat", "N", "with -m, -f, -s or -n: publish the message N times",
         _int_range(1, 2**31 - 1)),
    Flag(("--repeat-delay",), "repeat_delay", "SECONDS",
         "with --repeat: wait this long after each message is delivered", _seconds),
    Flag(("-M",), "max_inflight", "N", "most QoS 1/2 messages awaiting acknowledgement",
         _int_range(1, 65535)),
)

SUB_FLAGS = (
    Flag(("-t", "--topic"), "topics", "FILTER", "topic filter to subscribe to (repeatable)",
         repeat=True),
    Flag(("-T", "--filter-out"), "filter_out", "FILTER",
         "do not print messages whose topic matches FILTER (repeatable)", repeat=True),
    Flag(("-q", "--qos"), "qos", "QOS", "QoS of the subscriptions (default 0)", _qos),
    Flag(("-C",), "count", "COUNT", "exit after COUNT messages", _int_range(1, 2**31 - 1)),
    Flag(("-W",), "timeout", "SECONDS",
         "exit after SECONDS (counted from the connection; exit status 27)", _seconds),
    Flag(("-E",), "exit_after_subscribe", "", "exit once the subscriptions are acknowledged"),
    Flag(("-R",), "no_retained", "", "do not print retained (stale) messages"),
    Flag(("--retained-only",), "retained_only", "",
         "print only retained messages; exit at the first fresh one"),
    Flag(("--remove-retained",), "remove_retained", "",
         "clear every retained message received (publish an empty retained message)"),
    Flag(("--retain-as-published",), "retain_as_published", "",
         "MQTT 5: keep the retain flag as the publisher set it"),
    Flag(("-v", "--verbose"), "verbose", "", 'print "topic payload"'),
    Flag(("-N",), "no_eol", "", "no newline after each message"),
    Flag(("-F",), "format", "FORMAT",
         "output format: %t topic, %p payload, %q qos, %r retain, %l length, %m message id, "
         "%x/%X payload in hex, %I ISO time, %U unix time, %j/%J JSON, %P user properties, "
         "%A %C %D %E %F %R %S MQTT 5 properties, %% a %, @X strftime, \\n \\t \\0 \\\\ "
         "escapes (see mosquitto_sub(1))"),
    Flag(("--pretty",), "pretty", "", "indent %j / %J JSON output"),
)

TOOLS = {
    "pub": ("publish messages (like mosquitto_pub)",
            (("message", PUB_FLAGS), ("connection", CONNECTION), ("will", WILL_FLAGS),
             ("TLS", TLS_FLAGS))),
    "sub": ("subscribe and print the messages as they arrive (like mosquitto_sub)",
            (("subscription and output", SUB_FLAGS), ("connection", CONNECTION),
             ("will", WILL_FLAGS), ("TLS", TLS_FLAGS))),
}


def _flags(tool: str) -> List[Flag]:
    return [flag for _, group in TOOLS[tool][1] for flag in group]


def usage(tool: str) -> str:
    what, groups = TOOLS[tool]
    lines = [f"usage: mqttfast {tool} [options]", f"{what}.", ""]
    for title, group in groups:
        lines.append(f"{title}:")
        for flag in group:
            left = ", ".join(flag.names) + (f" {flag.metavar}" if flag.metavar else "")
            if len(left) > 26:
                lines.append(f"  {left}")
                left = ""
            text = textwrap.wrap(flag.help, 70)
            lines.append(f"  {left:<26} {text[0]}")
            lines.extend(f"  {'':<26} {more}" for more in text[1:])
        lines.append("")
    lines.append("-h is the host, as in mosquitto_pub/mosquitto_sub; help is --help.")
    return "\n".join(lines)


def parse(tool: str, argv: Sequence[str]) -> Dict[str, Any]:
    """Parse ``argv`` for ``tool`` into a dict of every flag's dest (None / False / [] when not
    given). Raises UsageError."""
    table: Dict[str, Flag] = {}
    opts: Dict[str, Any] = {}
    for entry in _flags(tool):
        for name in entry.names:
            table[name] = entry
        opts[entry.dest] = [] if entry.repeat else (None if entry.metavar else False)
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        name, value = token, None
        if token.startswith("--") and "=" in token:
            name, value = token.split("=", 1)
        flag = table.get(name)
        if flag is None:
            if token.startswith("-") and token != "-":
                glued = next((n for n, f in table.items() if f.dest == "password"
                              and token.startswith(n)), None)
                if glued is not None:  # -Psecret: the rest of it is a password, never echoed
                    raise UsageError(f"unknown option {glued + '...'!r} (write {glued} PASSWORD)")
                raise UsageError(f"unknown option {name!r}")
            raise UsageError(f"unexpected argument {_mask_password(token)!r} "
                             "(options take the form -x VALUE)")
        if flag.dest == "help":
            raise HelpRequested
        if flag.dest == "properties":
            if value is not None:
                raise UsageError(f"{name} takes COMMAND IDENTIFIER VALUE as separate arguments")
            rest = argv[i:]
            need = 4 if len(rest) >= 2 and rest[1].lower() == "user-property" else 3
            if len(rest) < need:
                raise UsageError(f"{name} needs COMMAND IDENTIFIER VALUE (user-property takes "
                                 f"NAME VALUE), e.g. {name} publish user-property key value")
            opts["properties"].append((name, *rest[:need]))
            i += need
            continue
        if not flag.metavar:
            if value is not None:
                raise UsageError(f"{name} takes no value")
            opts[flag.dest] = True
            continue
        if value is None and flag.bare is not None:  # an optional value: not an option
            if i < len(argv) and not argv[i].startswith("-"):
                value = argv[i]
                i += 1
            else:
                value = flag.bare
        if value is None:
            if i >= len(argv):
                raise UsageError(f"{name} needs a value ({flag.metavar})")
            value = argv[i]
            i += 1
        if flag.convert is not None:
            try:
                converted = flag.convert(value)
            except ValueError as exc:
                raise UsageError(f"invalid value {value!r} for {name}: {exc}") from None
        else:
            converted = value
        if flag.repeat:
            opts[flag.dest].append(converted)
        else:
            opts[flag.dest] = converted
    return opts


# ================================================================================ MQTT 5 properties

# What mosquitto_pub/mosquitto_sub accept after -D, command by command (their man pages), minus
# commands these tools never send.
_PROPERTY_COMMANDS: Dict[str, Tuple[int, Tuple[str, ...]]] = {
    "connect": (PacketType.CONNECT, (
        "authentication-data", "authentication-method", "maximum-packet-size", "receive-maximum",
        "request-problem-information", "request-response-information",
        "session-expiry-interval", "topic-alias-maximum", "user-property")),
    "publish": (PacketType.PUBLISH, (
        "content-type", "correlation-data", "message-expiry-interval", "payload-format-indicator",
        "response-topic", "topic-alias", "user-property")),
    "subscribe": (PacketType.SUBSCRIBE, ("subscription-identifier", "user-property")),
    "disconnect": (PacketType.DISCONNECT, ("session-expiry-interval", "user-property")),
    "will": (WILL, (
        "content-type", "correlation-data", "message-expiry-interval", "payload-format-indicator",
        "response-topic", "user-property", "will-delay-interval")),
}
_TOOL_COMMANDS = {"pub": ("connect", "publish", "disconnect", "will"),
                  "sub": ("connect", "subscribe", "disconnect", "will")}


def parse_properties(tool: str, raw: Sequence[Tuple[str, ...]]) -> Dict[str, Dict[str, Any]]:
    """``-D command identifier value...`` tuples to ``{command: {snake_case_name: value}}``."""
    result: Dict[str, Dict[str, Any]] = {}
    for flag, command, identifier, *values in raw:
        command, identifier = command.lower(), identifier.lower()
        where = f"{flag} {command} {identifier}"
        if command not in _TOOL_COMMANDS[tool]:
            known = ", ".join(_TOOL_COMMANDS[tool])
            raise UsageError(f"{flag}: mqttfast {tool} cannot set properties on {command!r} "
                             f"(it takes {known})")
        packet_type, allowed = _PROPERTY_COMMANDS[command]
        name = identifier.replace("-", "_")
        prop = BY_NAME.get(name)
        if prop is None:
            raise UsageError(f"{flag}: unknown property {identifier!r}")
        if identifier not in allowed:
            raise UsageError(f"{flag}: property {identifier} is not allowed in {command} "
                             f"(allowed: {', '.join(allowed)})")
        value: Any
        if prop.kind == PAIR:
            value = (values[0], values[1])
        elif prop.kind == STRING:
            value = values[0]
        elif prop.kind == BINARY:
            value = os.fsencode(values[0])
        else:
            try:
                value = int(values[0])
            except ValueError:
                raise UsageError(f"{where}: {values[0]!r} is not an integer") from None
        try:
            encode_properties({name: value}, packet_type)
        except (ValueError, TypeError) as exc:  # out of range, 0 where 0 is not allowed...
            raise UsageError(f"{where}: {str(exc).replace(name, identifier)}") from None
        props = result.setdefault(command, {})
        if prop.kind == PAIR:
            props.setdefault(name, []).append(value)
        elif name in props:
            raise UsageError(f"{where} given twice")
        else:
            props[name] = value
    return result


# ================================================================================ configuration


class Config(NamedTuple):
    """Everything about the connection, checked; built by ``configure``."""
    host: str
    port: int
    protocol: int
    client_kwargs: Dict[str, Any]
    keepalive: int
    bind_address: Optional[str]
    props: Dict[str, Dict[str, Any]]
    unix_path: Optional[str] = None  # -L unix:///path: a Unix domain socket, not host and port
    ws_path: Optional[str] = None  # -L ws(s)://host/path: MQTT over WebSocket

    def __repr__(self) -> str:  # the password stays out of logs and tracebacks
        kwargs = dict(self.client_kwargs)
        if kwargs.get("password") is not None:
            kwargs["password"] = "<hidden>"
        shown = self._replace(client_kwargs=kwargs)
        return f"Config({', '.join(f'{n}={v!r}' for n, v in zip(self._fields, shown, strict=True))})"


def _random_id(tool: str) -> str:
    alphabet = string.ascii_letters + string.digits
    prefix = f"mqttfast-{tool}-"
    return prefix + "".join(random.choice(alphabet) for _ in range(23 - len(prefix)))


def _apply_url(opts: Dict[str, Any]) -> bool:
    """Fill host, port, user, password and topic from -L where no flag gave them (a unix:// URL
    fills ``unix_path``); True for mqtts://."""
    try:
        url = parse_url(opts["url"])
    except ValueError as exc:  # its message shows the URL with the password masked
        raise UsageError(str(exc)) from None
    opts["username"] = opts["username"] or url.username
    opts["password"] = opts["password"] or url.password
    if url.unix:
        if opts["host"] or opts["port"] or opts["bind_address"]:
            raise UsageError("-L unix://... names a Unix socket: -h, -p and -A do not apply")
        opts["unix_path"] = url.path
        return False
    opts["host"] = opts["host"] or url.host
    opts["port"] = opts["port"] or url.port
    if url.websocket:  # the path is the HTTP one, not a topic
        opts["ws_path"] = url.path
        return url.tls
    if url.path.lstrip("/") and not opts["topics"]:
        opts["topics"].append(url.path[1:])
    return url.tls


def _check_file(flag: str, path: str) -> None:
    if not os.path.isfile(path):
        raise UsageError(f"{flag} {path}: no such file")


def _tls(opts: Dict[str, Any], url_tls: bool) -> Optional[ssl.SSLContext]:
    if not url_tls and not any(opts[dest] for dest in _TLS_DESTS):
        return None
    cafile, capath, cert, key = opts["cafile"], opts["capath"], opts["cert"], opts["key"]
    for flag, path in (("--cafile", cafile), ("--cert", cert), ("--key", key)):
        if path:
            _check_file(flag, path)
    if capath and not os.path.isdir(capath):
        raise UsageError(f"--capath {capath}: no such directory")
    if key and not cert:
        raise UsageError("--key needs --cert")
    alpn = [opts["tls_alpn"]] if opts["tls_alpn"] else None
    try:
        if capath:  # tls_context knows no capath: the same settings, made here
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile, capath=capath)
            if cert:
                ctx.load_cert_chain(cert, key)
            if alpn:
                ctx.set_alpn_protocols(alpn)
        else:
            ctx = tls_context(ca_certs=cafile, certfile=cert, keyfile=key, alpn_protocols=alpn)
        if opts["tls_use_os_certs"] and (cafile or capath):
            ctx.load_default_certs()
        if opts["insecure"]:  # as mosquitto's --insecure: the hostname check only
            ctx.check_hostname = False
        if opts["tls_version"]:
            versions = {"tlsv1.3": ssl.TLSVersion.TLSv1_3, "tlsv1.2": ssl.TLSVersion.TLSv1_2,
                        "tlsv1.1": ssl.TLSVersion.TLSv1_1}
            version = versions.get(opts["tls_version"].lower())
            if version is None:
                raise UsageError(f"invalid value {opts['tls_version']!r} for --tls-version: "
                                 "must be tlsv1.3, tlsv1.2 or tlsv1.1")
            ctx.minimum_version = ctx.maximum_version = version
        if opts["ciphers"]:
            ctx.set_ciphers(opts["ciphers"])
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise UsageError(f"cannot set up TLS: {exc}") from None
    return ctx


def configure(tool: str, opts: Dict[str, Any]) -> Config:
    """Check the flags that depend on each other and build the Client's arguments."""
    protocol = opts["protocol"]
    explicit_v3 = protocol is not None and protocol != MQTT_5
    if opts["properties"]:
        if explicit_v3:
            raise UsageError("-D (MQTT 5 properties) needs -V 5")
        protocol = MQTT_5
    if protocol is None:
        protocol = MQTT_3_1_1
    v5 = protocol == MQTT_5
    props = parse_properties(tool, opts["properties"])
    if opts["session_expiry"] is not None and not v5:
        raise UsageError("-x (session expiry) needs -V 5")
    if opts.get("retain_as_published") and not v5:
        raise UsageError("--retain-as-published needs -V 5")

    if opts["client_id"] is not None and opts["id_prefix"] is not None:
        raise UsageError("-i and -I cannot be used together")
    client_id = opts["client_id"]
    if opts["id_prefix"] is not None:
        client_id = f"{opts['id_prefix']}{os.getpid()}"
    if opts["persistent"] and not client_id:
        raise UsageError("-c needs a client id (-i or -I): a session is kept under its client id")
    if client_id is None:
        client_id = "" if v5 else _random_id(tool)

    if opts["password"] is not None and opts["username"] is None and not v5:
        raise UsageError("-P needs -u before MQTT 5 (MQTT 3.1.1 has no password without a user "
                         "name)")

    will = None
    will_flags = [name for name, dest in (("--will-payload", "will_payload"),
                                          ("--will-qos", "will_qos"),
                                          ("--will-retain", "will_retain"))
                  if opts[dest] is not None and opts[dest] is not False]
    if opts["will_topic"] is None:
        if will_flags or "will" in props:
            what = will_flags[0] if will_flags else "-D will"
            raise UsageError(f"{what} needs --will-topic")
    else:
        _check_topic("--will-topic", opts["will_topic"])
        payload = os.fsencode(opts["will_payload"]) if opts["will_payload"] is not None else b""
        will = Will(opts["will_topic"], payload, opts["will_qos"] or 0, bool(opts["will_retain"]),
                    props.get("will"))

    ctx = _tls(opts, bool(opts.get("url_tls")))
    connect_props = dict(props.get("connect", {}))
    kwargs: Dict[str, Any] = dict(
        client_id=client_id, protocol=protocol, username=opts["username"],
        password=os.fsencode(opts["password"]) if opts["password"] is not None else None,
        will=will, clean_session=not opts["persistent"], tls=ctx,
    )
    # The session enforces these two limits on what it receives, so they go to it, not verbatim
    # into CONNECT.
    if "topic_alias_maximum" in connect_props:
        kwargs["topic_alias_maximum"] = connect_props.pop("topic_alias_maximum")
    if "maximum_packet_size" in connect_props:
        kwargs["max_packet_size"] = connect_props.pop("maximum_packet_size")
    if v5:
        expiry = opts["session_expiry"]
        if expiry is None and opts["persistent"] and "session_expiry_interval" not in connect_props:
            expiry = 0xFFFFFFFF  # mosquitto's default for -c: the session never expires
        if expiry is not None:
            if "session_expiry_interval" in connect_props:
                raise UsageError("-x and -D connect session-expiry-interval: give one")
            connect_props["session_expiry_interval"] = expiry
        kwargs["properties"] = connect_props or None
    if opts.get("max_inflight"):
        kwargs["max_inflight"] = opts["max_inflight"]
    if opts.get("ws_path") is not None:  # ws://, wss:// (a URL's port is in opts already)
        default_port = DEFAULT_PORTS["ws" if ctx is None else "wss"]
    else:
        default_port = DEFAULT_PORTS["mqtt" if ctx is None else "mqtts"]
    port = opts["port"] or default_port
    keepalive = 60 if opts["keepalive"] is None else opts["keepalive"]
    return Config(opts["host"] or "localhost", port, protocol, kwargs, keepalive,
                  opts["bind_address"], props, opts.get("unix_path"), opts.get("ws_path"))


def _check_topic(flag: str, topic: str, is_filter: bool = False) -> None:
    try:
        (validate_topic_filter if is_filter else validate_topic)(topic)
    except InvalidTopic as exc:
        kind = "topic filter" if is_filter else "topic"
        raise UsageError(f"invalid {kind} {topic!r} for {flag}: {exc}") from None


# ================================================================================ running a client


class Reporter:
    """Debug lines (``-d``) and runtime errors (unless ``--quiet``), both on stderr."""

    def __init__(self, debug: bool, quiet: bool) -> None:
        self.debug = debug
        self.quiet = quiet
        self.client: Optional[Client] = None

    def event(self, text: str) -> None:
        if self.debug:
            client_id = self.client.client_id if self.client is not None else ""
            _stderr(f"Client {client_id or '(null)'} {text}")

    def error(self, text: str) -> None:
        if not self.quiet:
            _stderr(f"Error: {text}")

    def timed_out(self) -> None:
        if not self.quiet:
            _stderr("Timed out")  # mosquitto_sub's words


def _stderr(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


_debug_handler: Optional[logging.Handler] = None


def _make_client(config: Config, report: Reporter) -> Client:
    global _debug_handler
    if report.debug and _debug_handler is None:  # the library's own log lines, on stderr
        _debug_handler = logging.StreamHandler(sys.stderr)
        _debug_handler.setFormatter(logging.Formatter("mqttfast: %(message)s"))
        logger = logging.getLogger("mqttfast")
        logger.addHandler(_debug_handler)
        logger.setLevel(logging.INFO)
    client = Client(**config.client_kwargs)
    report.client = client
    return client


def _connect(client: Client, config: Config, report: Reporter) -> bool:
    """Connect; False after reporting why not (refused, unreachable, TLS failure)."""
    report.event("sending CONNECT")
    source = (config.bind_address, 0) if config.bind_address else None
    try:
        if config.ws_path is not None:
            host = f"[{config.host}]" if ":" in config.host else config.host
            scheme = "wss" if config.client_kwargs.get("tls") is not None else "ws"
            connected = client.connect(f"{scheme}://{host}:{config.port}{config.ws_path}", None,
                                       config.keepalive, source_address=source)
        elif config.unix_path is not None:
            connected = client.connect(f"unix://{quote(config.unix_path)}", None,
                                       config.keepalive)
        else:
            connected = client.connect(config.host, config.port, config.keepalive,
                                       source_address=source)
    except MQTTError as exc:  # ConnectRefused carries the broker's reason
        report.error(str(exc))
        client.close()
        return False
    report.event(f"received CONNACK (0){' session present' if connected.session_present else ''}")
    return True


def _describe(what: str, topic: str, qos: int, retain: bool, mid: int, dup: bool,
              size: int) -> str:
    return (f"{what} PUBLISH (d{int(dup)}, q{qos}, r{int(retain)}, m{mid}, '{topic}', ... "
            f"({size} bytes))")


def _install_signals(handler: Callable[[int, Any], None]) -> Dict[int, Any]:
    """Install ``handler`` for SIGINT and SIGTERM; returns the previous handlers (none when not
    in the main thread, where Python allows no signal handlers)."""
    previous: Dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, handler)
        except (ValueError, OSError):
            pass
    return previous


def _restore_signals(previous: Dict[int, Any]) -> None:
    for signum, handler in previous.items():
        try:
            signal.signal(signum, handler)
        except (ValueError, OSError):
            pass


# ================================================================================ pub


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def _read_payload(opts: Dict[str, Any]) -> Optional[bytes]:
    """The one message of -m / -f / -s / -n, or None for -l."""
    if opts["message"] is not None:
        return os.fsencode(opts["message"])
    if opts["null_message"]:
        return b""
    if opts["file"] is not None:
        try:
            with open(opts["file"], "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise UsageError(f"cannot read -f {opts['file']}: {exc.strerror or exc}") from None
    if opts["stdin_file"]:
        return _stdin().read()
    return None


def _stdin() -> BinaryIO:
    stream: Any = sys.stdin
    if stream is None:
        raise UsageError("stdin is closed")
    return getattr(stream, "buffer", stream)  # type: ignore[no-any-return]


def check_pub(opts: Dict[str, Any]) -> None:
    modes = [flag for flag, dest in (("-m", "message"), ("-f", "file"), ("-l", "stdin_line"),
                                     ("-n", "null_message"), ("-s", "stdin_file"))
             if opts[dest] is not None and opts[dest] is not False]
    if len(opts["topics"]) > 1:
        raise UsageError("pub publishes to one topic: -t given more than once")
    if not opts["topics"] or not modes:
        missing = " and ".join(what for what, ok in (
            ("a topic (-t)", opts["topics"]), ("a message (-m, -f, -l, -n or -s)", modes))
            if not ok)
        raise UsageError(f"pub needs {missing}")
    if len(modes) > 1:
        raise UsageError(f"only one kind of message can be sent at once: {' and '.join(modes)}")
    if opts["repeat_delay"] is not None and opts["repeat"] is None:
        raise UsageError("--repeat-delay needs --repeat")
    if opts["repeat"] is not None and modes[0] == "-l":
        raise UsageError("--repeat works with -m, -f, -s or -n, not -l")
    _check_topic("-t", opts["topics"][0])


def _settle(client: Client, handle: Any) -> bool:
    """Wait until a publish is written (QoS 0) or acknowledged (1, 2); False if it failed."""
    while not handle.wait(0.5):
        if handle.done or not client.is_connected:
            return False
    return True


def _failure(handle: Any) -> str:
    error = getattr(handle, "error", None)
    if error:
        return str(error)
    return "the connection closed before the broker acknowledged it"


def run_pub(opts: Dict[str, Any]) -> int:
    check_pub(opts)
    config = configure("pub", opts)
    report = Reporter(opts["debug"], opts["quiet"])
    topic = opts["topics"][0]
    qos = opts["qos"] or 0
    retain = bool(opts["retain"])
    properties = config.props.get("publish")
    previous = _install_signals(_raise_interrupted)
    client: Optional[Client] = None
    try:
        payload = _read_payload(opts)
        client = _make_client(config, report)
        if not _connect(client, config, report):
            client = None
            return EXIT_ERROR
        pending: Deque[Any] = deque()

        def send(data: bytes) -> Any:
            assert client is not None
            handle = client.publish(topic, data, qos, retain, properties)
            report.event(_describe("sending", topic, qos, retain,
                                   getattr(handle, "packet_id", 0), False, len(data)))
            return handle

        def finish(handle: Any) -> bool:
            assert client is not None
            if not _settle(client, handle):
                report.error(f"publish to {topic!r} failed: {_failure(handle)}")
                return False
            if qos:
                ack = "PUBACK" if qos == 1 else "PUBCOMP"
                report.event(f"received {ack} (Mid: {handle.packet_id}, RC:{handle.reason_code})")
            return True

        if payload is None:  # -l: lines as they arrive; acknowledgements checked as they come
            for line in iter(_stdin().readline, b""):
                if line.endswith(b"\n"):
                    line = line[:-1]
                pending.append(send(line))
                while pending and pending[0].done:
                    if not finish(pending.popleft()):
                        return EXIT_ERROR
            for handle in pending:
                if not finish(handle):
                    return EXIT_ERROR
        else:
            repeat = opts["repeat"] or 1
            for n in range(repeat):
                if not finish(send(payload)):
                    return EXIT_ERROR
                if opts["repeat_delay"] and n + 1 < repeat:
                    time.sleep(opts["repeat_delay"])
        return EXIT_OK
    except Interrupted as exc:
        return 128 + exc.signum
    except (MQTTError, ValueError) as exc:  # e.g. a payload larger than the broker takes
        report.error(str(exc))
        return EXIT_ERROR
    finally:
        _restore_signals(previous)
        if client is not None:
            _disconnect(client, config, report)


def _disconnect(client: Client, config: Config, report: Reporter) -> None:
    if client.is_connected:
        report.event("sending DISCONNECT")
        client.disconnect(properties=config.props.get("disconnect"))
    else:
        client.close()


# ================================================================================ sub output


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (+ and #; wildcards at the first level do not
    match topics starting with $)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    levels = topic.split("/")
    for i, part in enumerate(topic_filter.split("/")):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(topic_filter.split("/")) == len(levels)


class SkipMessage(Exception):
    """The message cannot be printed in this format (%J with a payload that is not JSON)."""


_ESCAPES = {"\\": b"\\", "0": b"\0", "a": b"\a", "e": b"\x1b", "n": b"\n", "r": b"\r",
            "t": b"\t", "v": b"\v"}
_ZERO_PAD = set("AEFlmSXx")
_WIDTH = set("ACEFIlmpRStxX")
_PRECISION = set("CIRt")
_TEXT_PROPERTIES = {"A": "topic_alias", "C": "content_type", "E": "message_expiry_interval",
                    "F": "payload_format_indicator", "R": "response_topic"}

Piece = Callable[[Any, int], bytes]  # (message, time in ns) -> bytes


def _prop(msg: Any, name: str) -> Any:
    props = msg.properties
    return props.get(name) if props else None


def _text(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, list):
        return ",".join(str(v) for v in value).encode()
    return str(value).encode("utf-8", "surrogateescape")


def _iso_time(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ns // 1_000_000_000))


def _json(msg: Any, ns: int, raw_payload: bool, pretty: bool) -> bytes:
    seconds, rest = divmod(ns, 1_000_000_000)
    local = time.localtime(seconds)
    # mosquitto's exact "tst" (microseconds, then a literal Z, then the UTC offset).
    tst = (time.strftime("%Y-%m-%dT%H:%M:%S", local) + f".{rest // 1000:06d}Z"
           + time.strftime("%z", local))
    doc: Dict[str, Any] = {"tst": tst, "topic": msg.topic, "qos": msg.qos,
                           "retain": int(msg.retain), "payloadlen": len(msg.payload)}
    if msg.properties:
        props: Dict[str, Any] = {}
        for name, value in msg.properties.items():
            if name == "user_property":
                props["user-properties"] = {k: v for k, v in value}
            elif name == "subscription_identifier" and isinstance(value, list):
                props["subscription-identifier"] = value[0] if len(value) == 1 else value
            else:
                props[name.replace("_", "-")] = (value.decode("utf-8", "replace")
                                                 if isinstance(value, bytes) else value)
        doc["properties"] = props
    if raw_payload:
        try:
            doc["payload"] = json.loads(msg.payload)
        except ValueError:
            raise SkipMessage(f"message payload is not valid JSON on topic {msg.topic}") from None
    else:
        doc["payload"] = msg.payload.decode("utf-8", "replace")
    if pretty:
        text = json.dumps(doc, ensure_ascii=False, indent="\t")
    else:
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogateescape")


def _field(spec: str, pretty: bool) -> Piece:
    if spec == "t":
        return lambda m, ns: m.topic.encode("utf-8", "surrogateescape")
    if spec == "p":
        return lambda m, ns: m.payload
    if spec == "q":
        return lambda m, ns: b"%d" % m.qos
    if spec == "r":
        return lambda m, ns: b"1" if m.retain else b"0"
    if spec == "l":
        return lambda m, ns: b"%d" % len(m.payload)
    if spec == "m":
        return lambda m, ns: b"%d" % m.packet_id
    if spec == "x":
        return lambda m, ns: m.payload.hex().encode()
    if spec == "X":
        return lambda m, ns: m.payload.hex().upper().encode()
    if spec == "I":
        return lambda m, ns: _iso_time(ns).encode()
    if spec == "U":
        return lambda m, ns: b"%d.%09d" % divmod(ns, 1_000_000_000)
    if spec == "j":
        return lambda m, ns: _json(m, ns, False, pretty)
    if spec == "J":
        return lambda m, ns: _json(m, ns, True, pretty)
    if spec == "P":
        return lambda m, ns: " ".join(
            f"{k}:{v}" for k, v in (_prop(m, "user_property") or ())).encode(
            "utf-8", "surrogateescape")
    if spec == "D":
        return lambda m, ns: _text(_prop(m, "correlation_data"))
    if spec == "S":
        return lambda m, ns: _text(_prop(m, "subscription_identifier"))
    if spec in _TEXT_PROPERTIES:
        name = _TEXT_PROPERTIES[spec]
        return lambda m, ns: _text(_prop(m, name))
    raise ValueError(f"unknown format specifier %{spec}")


def _padded(piece: Piece, spec: str, flags: str, width: int, precision: Optional[int]) -> Piece:
    if spec not in _WIDTH:
        width = 0
    if spec not in _PRECISION:
        precision = None
    if not width and precision is None:
        return piece
    left = "-" in flags
    fill = b"0" if "0" in flags and not left and spec in _ZERO_PAD else b" "

    def padded(msg: Any, ns: int) -> bytes:
        value = piece(msg, ns)
        if precision is not None:
            value = value[:precision]
        if len(value) < width:
            value = value + b" " * (width - len(value)) if left else (
                fill * (width - len(value)) + value)
        return value
    return padded


def _strftime(directive: str) -> Piece:
    return lambda m, ns: time.strftime(directive, time.localtime(ns // 1_000_000_000)).encode(
        "utf-8", "replace")


def compile_format(fmt: str, pretty: bool = False) -> List[Piece]:
    """mosquitto_sub's -F language (see its man page) to a list of pieces; ValueError when it
    uses a specifier or escape that does not exist."""
    pieces: List[Piece] = []
    literal = bytearray()

    def flush() -> None:
        if literal:
            data = bytes(literal)
            pieces.append(lambda m, ns: data)
            literal.clear()

    i, n = 0, len(fmt)
    while i < n:
        char = fmt[i]
        i += 1
        if char == "%":
            start = i
            while i < n and fmt[i] in "-0":
                i += 1
            flags = fmt[start:i]
            start = i
            while i < n and fmt[i].isdigit():
                i += 1
            width = int(fmt[start:i] or 0)
            precision = None
            if i < n and fmt[i] == ".":
                start = i = i + 1
                while i < n and fmt[i].isdigit():
                    i += 1
                precision = int(fmt[start:i] or 0)
            if i >= n:
                raise ValueError("format ends in the middle of a % sequence")
            spec = fmt[i]
            i += 1
            if spec == "%":
                literal += b"%"
                continue
            flush()
            pieces.append(_padded(_field(spec, pretty), spec, flags, width, precision))
        elif char == "@":
            if i >= n:
                raise ValueError("format ends with a lone @ (write @@ for a literal @)")
            spec = fmt[i]
            i += 1
            if spec == "@":
                literal += b"@"
                continue
            flush()
            if spec == "N":
                pieces.append(lambda m, ns: b"%09d" % (ns % 1_000_000_000))
            else:
                pieces.append(_strftime("%" + spec))
        elif char == "\\":
            if i >= n or fmt[i] not in _ESCAPES:
                raise ValueError(f"unknown escape \\{fmt[i] if i < n else ''} (known: "
                                 "\\\\ \\0 \\a \\e \\n \\r \\t \\v)")
            literal += _ESCAPES[fmt[i]]
            i += 1
        else:
            literal += char.encode("utf-8", "surrogateescape")
    flush()
    return pieces


class Printer:
    """Turns a message into the bytes mosquitto_sub would print for the same flags."""

    def __init__(self, fmt: Optional[str], verbose: bool, eol: bool, pretty: bool) -> None:
        self.pieces = compile_format(fmt, pretty) if fmt is not None else None
        self.verbose = verbose
        self.eol = b"\n" if eol else b""

    def __call__(self, msg: Any) -> bytes:
        if self.pieces is not None:
            ns = time.time_ns()
            return b"".join(piece(msg, ns) for piece in self.pieces) + self.eol
        payload = msg.payload
        if self.verbose:
            topic = msg.topic.encode("utf-8", "surrogateescape")
            if payload:
                return topic + b" " + payload + self.eol
            return topic + b" (null)" + self.eol if self.eol else b""
        # As mosquitto_sub: an empty payload prints nothing at all in the default format.
        return payload + self.eol if payload else b""


# ================================================================================ sub


class _Closed(NamedTuple):
    error: Optional[BaseException]


_STOP = object()


def check_sub(opts: Dict[str, Any]) -> Printer:
    if not opts["topics"]:
        raise UsageError("sub needs at least one topic filter (-t)")
    for topic_filter in opts["topics"]:
        _check_topic("-t", topic_filter, is_filter=True)
    for topic_filter in opts["filter_out"]:
        _check_topic("-T", topic_filter, is_filter=True)
    if opts["no_retained"] and opts["retained_only"]:
        raise UsageError("-R and --retained-only cannot be used together")
    try:
        return Printer(opts["format"], bool(opts["verbose"]), not opts["no_eol"],
                       bool(opts["pretty"]))
    except ValueError as exc:
        raise UsageError(f"invalid -F format {opts['format']!r}: {exc}") from None


def run_sub(opts: Dict[str, Any]) -> int:
    printer = check_sub(opts)
    config = configure("sub", opts)
    report = Reporter(opts["debug"], opts["quiet"])
    inbox: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stopping.is_set():  # a second Ctrl-C: stop waiting for a clean disconnect
            raise KeyboardInterrupt
        stopping.set()
        inbox.put(_STOP)

    previous = _install_signals(on_signal)
    client: Optional[Client] = None
    try:
        client = _make_client(config, report)
        # Before connecting: a kept session (-c) may deliver messages right after the CONNACK.
        client.on_message = inbox.put
        client.on_disconnect = lambda event: inbox.put(_Closed(event.error))
        if not _connect(client, config, report):
            client = None
            return EXIT_ERROR
        deadline = None if opts["timeout"] is None else time.monotonic() + opts["timeout"]
        status = _subscribe(client, opts, config, report, stopping, deadline)
        if status is not None:
            return status
        return _print_messages(client, opts, printer, report, inbox, deadline)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        _restore_signals(previous)
        if client is not None:
            client.on_disconnect = None
            _disconnect(client, config, report)


def _subscribe(client: Client, opts: Dict[str, Any], config: Config, report: Reporter,
               stopping: threading.Event, deadline: Optional[float]) -> Optional[int]:
    """Subscribe and wait for the SUBACK; an exit status when sub should stop, else None."""
    qos = opts["qos"] or 0
    subs = [Subscription(t, qos, retain_as_published=bool(opts["retain_as_published"]))
            for t in opts["topics"]]
    handle = client.subscribe(subs, properties=config.props.get("subscribe"))
    for sub in subs:
        report.event(f"sending SUBSCRIBE (Mid: {handle.packet_id}, Topic: {sub.topic}, "
                     f"QoS: {sub.qos}, Options: 0x{int(sub.retain_as_published) << 3:02x})")
    while not handle.wait(0.2):
        if stopping.is_set():
            return EXIT_OK
        if handle.done or not client.is_connected:
            report.error("connection lost before the broker acknowledged the subscription")
            return EXIT_ERROR
        if deadline is not None and time.monotonic() >= deadline:
            report.timed_out()
            return EXIT_TIMEOUT
    codes = handle.reason_codes or ()
    report.event("received SUBACK")
    if report.debug:
        _stderr(f"Subscribed (mid: {handle.packet_id}): {', '.join(str(c) for c in codes)}")
    # One code per filter is the broker's to send (the session does not count them): a short
    # SUBACK reports the codes it has rather than raising ValueError here.
    refused = [(topic, code) for topic, code in zip(handle.topics, codes, strict=False)
               if code >= SUBACK_FAILURE]
    for topic, code in refused:
        report.error(f"subscription to {topic!r} refused: "
                     f"{reason_name(code, PacketType.SUBACK, config.protocol)}")
    if refused and len(refused) == len(codes):
        report.error("all subscription requests were denied")
        return EXIT_ERROR
    if opts["exit_after_subscribe"]:
        return EXIT_OK
    return None


def _print_messages(client: Client, opts: Dict[str, Any], printer: Printer, report: Reporter,
                    inbox: "queue.SimpleQueue[Any]", deadline: Optional[float]) -> int:
    out: Any = getattr(sys.stdout, "buffer", None)
    count = opts["count"]
    filter_out = opts["filter_out"]
    printed = 0
    while True:
        wait = 1.0
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                report.timed_out()
                return EXIT_TIMEOUT
        try:
            item = inbox.get(timeout=wait)
        except queue.Empty:
            continue
        if item is _STOP:
            return EXIT_OK
        if isinstance(item, _Closed):
            report.error(f"connection lost: {item.error or 'closed by the broker'}")
            return EXIT_ERROR
        msg = item
        report.event(_describe("received", msg.topic, msg.qos, msg.retain, msg.packet_id,
                               msg.dup, len(msg.payload)))
        if opts["remove_retained"] and msg.retain and msg.payload:
            client.publish(msg.topic, b"", 0, True)
        if opts["retained_only"] and not msg.retain:
            return EXIT_OK
        if (opts["no_retained"] and msg.retain) or any(
                topic_matches(f, msg.topic) for f in filter_out):
            continue
        try:
            data = printer(msg)
        except SkipMessage as exc:
            report.error(str(exc))
            continue
        try:
            if out is not None:
                out.write(data)
                out.flush()
            else:  # a text-only stdout (embedding); mosquitto writes bytes
                sys.stdout.write(data.decode("utf-8", "replace"))
                sys.stdout.flush()
        except BrokenPipeError:  # the reader went away (``| head -1``): stop quietly
            _silence_stdout()
            return EXIT_OK
        printed += 1
        if count is not None and printed >= count:
            return EXIT_OK


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


# ================================================================================ entry point

_TOP_USAGE = """\
usage: mqttfast pub [options]     publish messages (like mosquitto_pub)
       mqttfast sub [options]     subscribe and print messages (like mosquitto_sub)
       mqttfast bench [options]   load generator
       mqttfast --version

'mqttfast COMMAND --help' lists a command's options."""


def _bench(argv: List[str]) -> int:
    try:  # lazily: the load generator is heavier than pub / sub
        bench_main = importlib.import_module("mqttfast.bench.cli").main
    except ModuleNotFoundError as exc:
        if exc.name in ("mqttfast.bench", "mqttfast.bench.cli"):
            _stderr("Error: mqttfast bench is not available in this installation "
                    "(the mqttfast.bench package is missing)")
        else:
            _stderr(f"Error: mqttfast bench needs the {exc.name!r} module, missing from this "
                    "installation: reinstall mqttfast with its dependencies "
                    "(pip install --force-reinstall mqttfast)")
        return EXIT_USAGE
    return int(bench_main(argv) or 0)


def _run_tool(tool: str, argv: List[str]) -> int:
    runner = run_pub if tool == "pub" else run_sub
    try:
        opts = parse(tool, argv)
        if opts["url"] and opts["ws_path"] is not None:
            raise UsageError("give --ws or -L, not both (-L ws://HOST:PORT/PATH is -h HOST "
                             "-p PORT --ws PATH)")
        if opts["url"]:
            opts["url_tls"] = _apply_url(opts)
        return runner(opts)
    except HelpRequested:
        print(usage(tool))
        return EXIT_OK
    except UsageError as exc:
        _stderr(f"Error: {exc}\nUse 'mqttfast {tool} --help' to see usage.")
        return EXIT_USAGE
    except KeyboardInterrupt:  # a second Ctrl-C while disconnecting
        return 128 + signal.SIGINT


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``mqttfast pub|sub|bench ...``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        _stderr(_TOP_USAGE)
        return EXIT_USAGE
    command, rest = args[0], args[1:]
    if command in ("--help", "-help", "help"):
        print(_TOP_USAGE)
        return EXIT_OK
    if command == "--version":
        print(f"mqttfast {__version__}")
        return EXIT_OK
    if command in TOOLS:
        return _run_tool(command, rest)
    if command == "bench":
        return _bench(rest)
    _stderr(f"Error: unknown command {command!r}\n{_TOP_USAGE}")
    return EXIT_USAGE


__all__ = ["UsageError", "compile_format", "configure", "main", "parse", "parse_properties",
           "topic_matches"]
