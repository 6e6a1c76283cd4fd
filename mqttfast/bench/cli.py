"""``mqttfast bench conn | pub | sub``: the command line of the load generator.

``main(argv)`` parses (emqtt-bench's flags and meanings), checks everything it can before the
first connection (templates, TLS files, source addresses, the open-file limit, optional
packages), runs the clients in this process or in ``--workers`` processes, and prints the
summary. It returns the exit status and never lets a traceback out: 2 for bad input, 1 when the
run failed (no client connected, a worker crashed), 130 after a second Ctrl-C.
"""
from __future__ import annotations

import argparse
import ipaddress
import math
import os
import random
import signal
import socket
import ssl
import sys
import time
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from ..batching import DEFAULT_READ_DELAY, MAX_READ_DELAY
from ..url import DEFAULT_PORTS, WS_PATH, check_ws_path
from .errors import BenchError, UsageError

FD_RESERVE = 64  # descriptors a process needs besides its clients (selector, pipes, files)

USAGE = """usage: mqttfast bench {conn,pub,sub} [options]

  conn   open -c connections at -i/-R and hold them: connect rate, connect-time percentiles
  pub    connect, then publish at -I per client or --rate in total: rates, publish-to-ack latency
  sub    connect and subscribe -t: receive rate, end-to-end latency, lost/duplicated/reordered

Run 'mqttfast bench COMMAND --help' for the options (-h is the broker host, as in emqtt-bench).
"""


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting (main returns the status, prints no traceback)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def exit(self, status: int = 0, message: Optional[str] = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


def _number(kind: type, minimum: Optional[float] = None, maximum: Optional[float] = None,
            above: Optional[float] = None) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: "
                                             f"{text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be more than {above:g}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {text}")
        return value
    return parse


def _ws_path(text: str) -> str:
    try:
        return check_ws_path(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None


def _rate(text: str) -> float:
    """``2000``, ``2000/s``, ``2k``, ``1.5M``."""
    raw = text.strip().lower()
    if raw.endswith("/s"):
        raw = raw[:-2]
    scale = 1.0
    if raw[-1:] in ("k", "m"):
        scale = 1e3 if raw[-1] == "k" else 1e6
        raw = raw[:-1]
    try:
        value = float(raw) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 2000, 2000/s, 5k)") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"a rate must be more than 0, got {text!r}")
    return value


def build_parser(kind: str) -> _Parser:
    p = _Parser(prog=f"mqttfast bench {kind}", add_help=False, allow_abbrev=False,
                description={
                    "conn": "Open -c connections at the given rate and hold them.",
                    "pub": "Connect -c publishers, then publish to the -t topic template.",
                    "sub": "Connect -c subscribers to the -t filters and count what arrives.",
                }[kind])
    g = p.add_argument_group("broker")
    g.add_argument("--help", action="help", help="show this help and exit")
    g.add_argument("-h", "--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    g.add_argument("-p", "--port", type=_number(int, 1, 65535),
                   help="broker port (default 1883, 8883 with TLS)")
    g.add_argument("--url", metavar="URL", help="mqtt(s)://[user[:password]@]host[:port], "
                   "ws(s)://host[:port]/path or unix:///path/to/socket, instead of "
                   "-h/-p/-u/-P/-S (-L is --limit here, as in emqtt-bench)")
    g.add_argument("--ws", nargs="?", const=WS_PATH, type=_ws_path, dest="ws_path",
                   metavar="PATH", help="MQTT over WebSocket to -h/-p at HTTP path PATH "
                   f"(default {WS_PATH}); wss with TLS; the port defaults to 80, 443 with TLS")
    g.add_argument("-V", "--version", type=int, choices=(3, 4, 5), default=5,
                   help="MQTT version: 3 (3.1), 4 (3.1.1), 5 (default)")
    g.add_argument("-u", "--username", help="username (also %%u in templates)")
    g.add_argument("-P", "--password", help="password")
    g.add_argument("-k", "--keepalive", type=_number(int, 0, 65535), default=300,
                   help="keep-alive seconds (default 300)")
    g.add_argument("-C", "--clean", type=lambda s: s.lower() not in ("false", "0", "no"),
                   default=True, metavar="true|false", help="clean session / clean start "
                   "(default true)")
    g.add_argument("--connect-timeout", type=_number(float, above=0), default=10.0,
                   metavar="S", help="seconds from socket start to CONNACK before a client "
                   "counts as failed (default 10)")
    t = p.add_argument_group("TLS")
    t.add_argument("-S", "--ssl", action="store_true", help="use TLS (implied by --cafile, "
                   "--cert, --insecure)")
    t.add_argument("--cafile", help="CA certificates (PEM) to verify the broker with")
    t.add_argument("--cert", "--certfile", dest="certfile", help="client certificate (PEM)")
    t.add_argument("--key", "--keyfile", dest="keyfile", help="client private key (PEM)")
    t.add_argument("--insecure", action="store_true", help="do not verify the broker's "
                   "certificate or host name")
    c = p.add_argument_group("clients")
    c.add_argument("-c", "--count", type=_number(int, 1), default=200,
                   help="number of clients (default 200)")
    c.add_argument("-i", "--interval", type=_number(float, 0), metavar="MS",
                   help="milliseconds between connection starts (default 10; 0: all at once)")
    c.add_argument("-R", "--conn-rate", type=_rate, metavar="N",
                   help="connection starts per second (instead of -i)")
    c.add_argument("-n", "--startnumber", type=_number(int, 0), default=0,
                   help="sequence number of the first client (%%i; default 0)")
    c.add_argument("--prefix", help="client id prefix (ids are PREFIX_%s_N; default mqfbPID)"
                   % kind)
    c.add_argument("--ifaddr", metavar="A,B,...", help="local addresses to connect from, round "
                   "robin per connection (e.g. 127.0.0.2,127.0.0.3 for more ephemeral ports)")
    c.add_argument("--workers", type=_number(int, 0), default=1, metavar="N",
                   help="processes to spread the clients over (0: one per core; default 1)")
    c.add_argument("--duration", type=_number(float, above=0), metavar="S",
                   help={"conn": "hold the connections S seconds once all are up (default: "
                                 "until Ctrl-C)",
                         "pub": "publish for S seconds (default: until -L or Ctrl-C)",
                         "sub": "receive for S seconds once subscribed (default: until -L or "
                                "Ctrl-C)"}[kind])
    if kind in ("pub", "sub"):
        c.add_argument("--read-delay", type=_number(float, 0, MAX_READ_DELAY),
                       default=DEFAULT_READ_DELAY, metavar="S",
                       help="read in batches while traffic is heavy, a message waiting at most "
                            "S seconds in the socket (default 0: every segment at once; 0.001 "
                            "spares the broker most wake-ups, see the README)")
        c.add_argument("--quickack", action=argparse.BooleanOptionalAction, default=None,
                       help="acknowledge every read at once (TCP_QUICKACK, Linux; default: on "
                            "for bench sub with more than one connection, where a burst after "
                            "subscribing arrived about twice as fast, off otherwise)")
        m = p.add_argument_group("messages")
        m.add_argument("-t", "--topic", action="append", required=True,
                       help="topic template: %%i client number, %%c client id, %%u username, "
                            "%%s message number, %%rand_N random 1..N" if kind == "pub" else
                            "topic filter, repeatable ($share/GROUP/... for a shared "
                            "subscription): %%i client number, %%c client id, %%u username, "
                            "%%rand_N random 1..N")
        m.add_argument("-q", "--qos", type=int, choices=(0, 1, 2), default=0,
                       help="QoS (default 0)")
        m.add_argument("-L", "--limit", type=_number(int, 0), default=0,
                       help="total messages to %s, over all clients (default 0: no limit)"
                       % ("publish" if kind == "pub" else "receive before stopping"))
        m.add_argument("--payload-hdrs", action="store_true",
                       help="put a timestamp, sequence and publisher id at the start of each "
                            "payload (28 bytes)" if kind == "pub" else
                            "expect payload headers (they are detected anyway)")
    if kind == "pub":
        m.add_argument("-I", "--interval-of-msg", "--interval_of_msg", dest="msg_interval",
                       type=_number(float, 0), metavar="MS",
                       help="milliseconds between messages of each client (default 1000; "
                            "0 with no --rate: as fast as possible)")
        m.add_argument("--rate", type=_rate, metavar="N/s",
                       help="total target messages per second (instead of -I)")
        m.add_argument("-s", "--size", type=_number(int, 0, 268_435_000), default=256,
                       help="payload size in bytes (default 256; at least 28 with "
                            "--payload-hdrs)")
        m.add_argument("-m", "--message", help="literal payload (instead of -s)")
        m.add_argument("-r", "--retain", action="store_true", help="set the retain flag")
        m.add_argument("-F", "--inflight", type=_number(int, 0, 65535), default=1,
                       help="QoS 1/2 messages in flight per client (default 1; 0: 65535)")
        m.add_argument("-w", "--wait-before-publishing", dest="wait", action="store_true",
                       help="wait until every publisher is connected before publishing")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="PATH", help="write the summary and per-second series")
    o.add_argument("--csv", metavar="PATH", help="write the per-second series to PATH and the "
                   "summary (metric,value rows) next to it: NAME.csv -> NAME.summary.csv")
    o.add_argument("--plot", metavar="PATH.png", help="draw rates over time and the latency "
                   "distribution (needs matplotlib)")
    o.add_argument("--quiet", action="store_true", help="no live line and no notes on stderr "
                   "(the summary still goes to stdout)")
    return p


# ---------------------------------------------------------------------------------- checks

def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE as far as the hard limit allows; returns the soft limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover  (not POSIX)
        return 1 << 30
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as handle:
                target = int(handle.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else 1 << 30
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def check_fd_limit(count: int, workers: int) -> None:
    per_process = -(-count // workers)
    need = per_process + FD_RESERVE
    limit = raise_fd_limit()
    if need <= limit:
        return
    try:
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hard_text = "unlimited" if hard == resource.RLIM_INFINITY else f"{hard:,}"
    except ImportError:  # pragma: no cover
        hard_text = "unknown"
    fit = max(0, limit - FD_RESERVE)
    raise UsageError(
        f"-c {count:,} needs about {need:,} open files per process (one socket per client"
        + (f", {per_process:,} clients in each of {workers} processes" if workers > 1 else "")
        + f"), but the limit is {limit:,} (hard limit {hard_text}): at most {fit:,} clients fit "
        f"in one process. Raise the limit (ulimit -n {need}; the hard limit as root: ulimit -Hn, "
        f"/etc/security/limits.conf or systemd LimitNOFILE), or spread the clients over more "
        f"processes with --workers N.")


def _check_ifaddrs(text: str, family: int) -> List[str]:
    addrs = [a.strip() for a in text.split(",") if a.strip()]
    if not addrs:
        raise UsageError("--ifaddr needs at least one address")
    for addr in addrs:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            raise UsageError(f"--ifaddr: {addr!r} is not an IP address") from None
        want = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if want != family:
            version = 4 if family == socket.AF_INET else 6
            raise UsageError(f"--ifaddr {addr}: the broker's address is IPv{version}")
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((addr, 0))
            except OSError as exc:
                raise UsageError(f"--ifaddr {addr}: cannot bind to it: "
                                 f"{exc.strerror or exc}") from None
    return addrs


def _resolve(host: str, port: int) -> Any:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BenchError(f"cannot resolve broker host {host!r}: {exc.strerror or exc}") from None
    return infos[0]


def make_options(kind: str, ns: argparse.Namespace) -> Any:
    from .runner import Options
    from .templates import PayloadMaker, Template, TemplateError, check_filter

    if ns.interval is not None and ns.conn_rate is not None:
        raise UsageError("give -i (ms between connection starts) or -R (starts per second), "
                         "not both")
    if ns.url and ns.ws_path is not None:
        raise UsageError("give --ws or --url, not both (--url ws://HOST:PORT/PATH is -h HOST "
                         "-p PORT --ws PATH)")
    unix_path = _apply_url(ns) if ns.url else None
    tls = bool(ns.ssl or ns.cafile or ns.certfile or ns.keyfile or ns.insecure)
    if ns.port is not None:
        port = ns.port
    else:
        port = DEFAULT_PORTS[("ws" if ns.ws_path is not None else "mqtt") + ("s" if tls else "")]
    workers = ns.workers or (os.cpu_count() or 1)
    workers = max(1, min(workers, ns.count))
    opts = Options(kind=kind, host=ns.host, port=port, version=ns.version,
                   username=ns.username, password=ns.password, tls=tls, cafile=ns.cafile,
                   certfile=ns.certfile, keyfile=ns.keyfile, insecure=ns.insecure,
                   count=ns.count, interval_ms=ns.interval if ns.interval is not None else 10.0,
                   conn_rate=ns.conn_rate, start_number=ns.startnumber, keepalive=ns.keepalive,
                   prefix=ns.prefix if ns.prefix is not None else f"mqfb{os.getpid()}",
                   clean=ns.clean, connect_timeout=ns.connect_timeout, duration=ns.duration,
                   workers=workers, quiet=ns.quiet, run_id=random.getrandbits(32))
    if ns.conn_rate is not None:
        opts.interval_ms = 0.0
    if kind in ("pub", "sub"):
        opts.topics = list(ns.topic)
        opts.qos = ns.qos
        opts.limit = ns.limit
        opts.payload_hdrs = ns.payload_hdrs
        opts.read_delay = ns.read_delay
        opts.quickack = (ns.quickack if ns.quickack is not None
                         else kind == "sub" and opts.count > 1)
        sample_id = f"{opts.prefix}_{kind}_{opts.start_number}"
        try:
            if kind == "pub":
                if len(opts.topics) != 1:
                    raise UsageError("bench pub takes one -t topic template "
                                     f"(got {len(opts.topics)})")
                Template(opts.topics[0]).check_publish_topic(sample_id, ns.username)
            else:
                for text in opts.topics:
                    template = Template(text, allow_seq=False)
                    check_filter(template.bind(opts.start_number, sample_id,
                                               ns.username).example())
        except TemplateError as exc:
            raise UsageError(str(exc)) from None
    if kind == "pub":
        if ns.msg_interval is not None and ns.rate is not None:
            raise UsageError("give -I (ms between messages of each client) or --rate (total "
                             "messages per second), not both")
        opts.msg_interval_ms = ns.msg_interval if ns.msg_interval is not None else 1000.0
        opts.rate = ns.rate
        opts.size = ns.size
        opts.message = ns.message.encode("utf-8") if ns.message is not None else None
        opts.retain = ns.retain
        opts.inflight = ns.inflight
        opts.wait = ns.wait
        opts.size = PayloadMaker(opts.size, opts.message, opts.payload_hdrs, 0).size
    for name in ("cafile", "certfile", "keyfile"):
        path = getattr(ns, name)
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"--{name.replace('file', '') if name != 'cafile' else name}: "
                             f"no such file: {path}")
    if tls:
        from ..client import tls_context

        try:
            tls_context(ns.cafile, ns.certfile, ns.keyfile, verify=not ns.insecure)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise UsageError(f"cannot load the TLS files: {exc}") from None
    opts.ws_path = ns.ws_path
    if unix_path is not None:
        if ns.ifaddr:
            raise UsageError("--ifaddr has no meaning for a Unix domain socket")
        opts.unix_path = unix_path
        return opts
    info = _resolve(ns.host, port)
    opts.addr = info[4][0]
    if ns.ifaddr:
        opts.ifaddrs = _check_ifaddrs(ns.ifaddr, info[0])
    return opts


def _apply_url(ns: argparse.Namespace) -> Optional[str]:
    """Take host, port, user, password and TLS from --url; the Unix socket's path for unix://."""
    from ..url import parse_url

    try:
        url = parse_url(ns.url)
    except ValueError as exc:  # the message masks the password
        raise UsageError(str(exc)) from None
    if url.websocket:
        ns.ws_path = url.path
    elif url.path not in ("", "/") and not url.unix:
        raise UsageError(f"--url {url}: no path here (the topic is -t)")
    ns.username = ns.username if ns.username is not None else url.username
    ns.password = ns.password if ns.password is not None else url.password
    ns.ssl = ns.ssl or url.tls
    if url.unix:
        return url.path
    if ns.port is None:
        ns.port = url.port
    ns.host = url.host  # -h has a default, so the URL's host wins
    return None


# ---------------------------------------------------------------------------------- running

def _note(opts: Any, text: str) -> None:
    if not opts.quiet:
        print(text, file=sys.stderr, flush=True)


def _ready_note(opts: Any, info: Dict[str, Any]) -> str:
    ok, failed, clients = info["ok"], info["failed"], info["clients"]
    if opts.kind == "sub":
        return f"{ok:,} of {clients:,} clients subscribed ({failed:,} failed to connect)"
    if opts.kind == "pub" and opts.wait:
        return f"{ok:,} of {clients:,} publishers connected ({failed:,} failed): publishing"
    return f"{ok:,} of {clients:,} clients connected ({failed:,} failed)"


def run(opts: Any) -> List[Dict[str, Any]]:
    from .report import LiveLine
    from .runner import Runner
    from .workers import run_workers, split

    live = LiveLine(opts, sys.stderr)
    state = {"interrupts": 0}
    runner_box: List[Any] = []

    def on_signal(signum: int, frame: Any) -> None:
        state["interrupts"] += 1
        if state["interrupts"] > 1:
            raise KeyboardInterrupt
        if runner_box:
            runner_box[0].interrupted = True
        _note(opts, "stopping (Ctrl-C again to quit at once)...")

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        shares = split(opts, opts.workers)
        opts.t0 = time.monotonic()
        if opts.workers == 1:
            def sink(kind: str, payload: Any) -> None:
                if kind == "tick":
                    if not opts.quiet:
                        live.show(payload)
                elif kind == "ready":
                    _note(opts, _ready_note(opts, payload))
                    if opts.wait:
                        runner_box[0].go()

            runner = Runner(opts, shares[0], sink)
            runner_box.append(runner)
            if state["interrupts"]:
                runner.interrupted = True
            return [runner.run()]

        def notify(kind: str, payload: Any) -> None:
            if kind == "tick":
                if not opts.quiet:
                    live.show(payload)
            elif kind == "ready":
                _note(opts, _ready_note(opts, payload))

        return run_workers(opts, shares, notify, lambda: state["interrupts"] > 0)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``mqttfast bench ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except _Exit as exc:
        return exc.status
    except BenchError as exc:
        print(f"mqttfast bench: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("mqttfast bench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: one line, plus how to see more
        print(f"mqttfast bench: internal error: {type(exc).__name__}: {exc} "
              f"(set MQTTFAST_BENCH_DEBUG=1 for the traceback)", file=sys.stderr)
        if os.environ.get("MQTTFAST_BENCH_DEBUG"):
            import traceback

            traceback.print_exc()
        return 1


def _main(argv: List[str]) -> int:
    if not argv or argv[0] in ("--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    kind = argv[0]
    if kind not in ("conn", "pub", "sub"):
        raise UsageError(f"unknown command {kind!r}: use conn, pub or sub "
                         f"('mqttfast bench --help')")
    parser = build_parser(kind)
    ns = parser.parse_args(argv[1:])
    try:
        import hdrh  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise UsageError("mqttfast bench needs the hdrhistogram package, a dependency of mqttfast "
                         "missing from this environment: pip install 'hdrhistogram>=0.10'") from None
    if ns.plot:
        from .report import plot_available

        problem = plot_available()
        if problem:
            raise UsageError(problem)
    opts = make_options(kind, ns)
    check_fd_limit(opts.count, opts.workers)

    from .report import build_summary, summary_text, write_csv, write_json, write_plot
    from .stats import merge_results

    results = run(opts)
    merged = merge_results(results)
    summary = build_summary(opts, merged)
    print(summary_text(opts, summary), flush=True)
    written = []
    try:
        if ns.json:
            write_json(ns.json, opts, [kind] + argv[1:], summary, merged)
            written.append(ns.json)
        if ns.csv:
            written += write_csv(ns.csv, summary, merged)
        if ns.plot:
            write_plot(ns.plot, opts, summary, merged)
            written.append(ns.plot)
    except OSError as exc:
        raise BenchError(f"cannot write {exc.filename}: {exc.strerror}") from None
    if written:
        _note(opts, "wrote " + ", ".join(written))
    if not merged["connected"]:
        raise BenchError(f"0 of {opts.count:,} clients connected: "
                         + _reasons_line(merged["failure_reasons"]))
    if kind == "sub" and not merged["subscribed"]:
        raise BenchError(f"0 of {opts.count:,} clients subscribed: "
                         + _reasons_line(merged["error_reasons"] or merged["drop_reasons"]))
    return 0


def _reasons_line(table: Dict[str, int]) -> str:
    if not table:
        return "no reason reported"
    return ", ".join(f"{reason} ({n:,})" for reason, n in
                     sorted(table.items(), key=lambda item: -item[1]))
