"""``mqttfast bench conn | pub | sub`` against a real mosquitto, as a person runs it: subprocesses
(``python -m mqttfast.bench``) with timeouts, their exit status, stdout, stderr and the JSON/CSV/PNG
files they write. Plus the pure parts (templates, payload headers, sequence checks) in-process.

Every subprocess has a timeout and every run is bounded (-L, --duration); the file takes < 60 s.
"""
from __future__ import annotations

import csv
import json
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest
import test_transports

import mqttfast
from broker import free_port, require_module

require_module("hdrh", "the load generator needs hdrhistogram (a dependency of mqttfast)")

from mqttfast.bench.stats import SeqTracker  # noqa: E402
from mqttfast.bench.templates import (  # noqa: E402
    HEADER_SIZE,
    PayloadMaker,
    Template,
    TemplateError,
    parse_header,
    share_group,
)

REPO = Path(__file__).resolve().parent.parent
ws_broker = test_transports.ws_broker  # the fixture: mosquitto with websockets listeners
TIMEOUT = 45


def bench(*args: Any) -> List[str]:
    return [sys.executable, "-m", "mqttfast.bench", *[str(a) for a in args]]


def run(*args: Any, timeout: float = TIMEOUT, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(bench(*args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=REPO, **kw)


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def ordered(stats: Dict[str, float]) -> None:
    assert stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["p99.9"] \
        <= stats["max"], stats


class Background:
    """A bench subprocess in the background; its stderr is collected by a thread, so the test can
    wait for a line ("subscribed") without blocking on a pipe."""

    def __init__(self, *args: Any) -> None:
        self.proc = subprocess.Popen(bench(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, cwd=REPO)
        self.err: List[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.err):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"{text!r} never appeared on stderr:\n{''.join(self.err)}")
            time.sleep(0.02)

    def finish(self, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        self._thread.join(5)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out,
                                           "".join(self.err))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# ------------------------------------------------------------------------------ pure parts

def test_template_placeholders():
    t = Template("dev/%i/%c/%u/x")
    bound = t.bind(7, "cid", "bob")
    assert bound.static == "dev/7/cid/bob/x"
    per_msg = Template("m/%i/%s/%rand_3/100%%").bind(2, "c", None)
    assert per_msg.static is None
    for seq in (1, 2, 50):
        parts = per_msg.render(seq).split("/")
        assert parts[:3] == ["m", "2", str(seq)] and 1 <= int(parts[3]) <= 3
        assert parts[4] == "100%"


@pytest.mark.parametrize("text, message", [
    ("a/%z", "unknown placeholder '%z' at position 2"),
    ("a/%rand_", "needs a number"),
    ("a/%rand_0", "N must be at least 1"),
    ("a/%", "a lone '%'"),
    ("", "empty topic"),
])
def test_template_errors(text, message):
    with pytest.raises(TemplateError, match=message.replace("(", r"\(")):
        Template(text)


def test_template_wildcards_refused_for_publish():
    for text in ("a/+", "a/#", "%c/x"):
        with pytest.raises(TemplateError, match="wildcard"):
            Template(text).check_publish_topic("id+1" if text.startswith("%c") else "id", None)
    Template("a/%i").check_publish_topic("id", None)
    with pytest.raises(TemplateError, match="no message sequence"):
        Template("a/%s", allow_seq=False)
    assert share_group("$share/g1/a/#") == "g1" and share_group("a/#") is None


def test_payload_headers_round_trip():
    maker = PayloadMaker(100, None, True, run_id=0xABCDEF)
    payload = maker.make(42, 7, 123456789)
    assert len(payload) == 100 and maker.size == 100
    assert parse_header(payload) == (123456789, 7, 0xABCDEF, 42)
    assert len(PayloadMaker(4, None, True, 1).make(1, 1, 1)) == HEADER_SIZE  # -s below the header
    assert PayloadMaker(10, b"hello", False, 1).make(1, 1, 1) == b"hello"
    assert parse_header(b"x" * 100) is None


def test_sequence_tracker():
    seq = SeqTracker()
    streams = seq.streams_of("subscriber-1")
    for n in (1, 2, 3, 5, 4, 4, 8, 9):  # 4 late, 4 again, 6 and 7 never
        seq.see(streams, 1, n)
    assert (seq.lost, seq.duplicated, seq.out_of_order) == (2, 1, 1)
    for n in (10, 11, 12):  # another stream starts where the subscriber joined
        seq.see(streams, 2, n)
    for n in (3, 1, 2):  # another subscriber: reordered at its start
        seq.see(seq.streams_of("subscriber-2"), 1, n)
    assert (seq.lost, seq.duplicated, seq.out_of_order) == (2, 1, 3)
    assert seq.streams == 3


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("args, message", [
    (["pub", "-t", "a", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["pub", "-t", "a", "-q", "3"], "invalid choice: 3"),
    (["pub", "-t", "a/%z"], "unknown placeholder '%z'"),
    (["pub", "-t", "a/#"], "wildcard"),
    (["sub", "-t", "a/%rand_"], "needs a number"),
    (["conn", "-c", "0"], "must be at least 1"),
    (["conn", "-i", "5", "-R", "100"], "not both"),
    (["flood"], "unknown command 'flood'"),
    (["conn", "--ifaddr", "not-an-address"], "is not an IP address"),
    (["pub", "-t", "a", "--ws", "--url", "ws://127.0.0.1/mqtt"], "--ws or --url"),
    (["conn", "--url", "mqtt://127.0.0.1", "--ws", "/mqtt"], "--ws or --url"),
    (["conn", "--ws", "mqtt"], "must start with /"),
    (["sub", "-t", "a", "--read-delay", "2"], "must be at most 1"),
    (["sub", "-t", "a", "--read-delay", "-0.001"], "must be at least 0"),
    (["pub", "-t", "a", "--read-delay", "soon"], "not a number"),
])
def test_bad_input_is_a_usage_error(args, message):
    done = run(*args)
    assert done.returncode == 2, done
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_unreachable_broker_is_a_runtime_error():
    done = run("conn", "-p", free_port(), "-c", 10, "-i", 0, timeout=30)
    assert done.returncode == 1, done
    assert "0 of 10 clients connected: connection refused (10)" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_too_many_clients_for_the_fd_limit():
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    done = subprocess.run(bench("conn", "-c", 5000, "-p", free_port()), capture_output=True,
                          text=True, timeout=TIMEOUT, preexec_fn=low_limit, cwd=REPO)
    assert done.returncode == 2, done
    assert "limit is 200" in done.stderr and "at most 136 clients fit" in done.stderr
    assert "ulimit -n" in done.stderr and "--workers" in done.stderr


def test_missing_hdrhistogram_says_what_to_install():
    code = ("import sys; sys.modules['hdrh'] = None; from mqttfast.bench.cli import main; "
            "sys.exit(main(['conn', '-c', '1']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=REPO)
    assert done.returncode == 2
    assert "a dependency of mqttfast" in done.stderr and "pip install 'hdrhistogram>=0.10'" in done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------------------ against mosquitto

def test_conn_500_agrees_with_broker_sys_topic(broker_factory, tmp_path):
    """500 connections held open; mosquitto's $SYS/broker/clients/connected counts them too."""
    broker = broker_factory(extra_config=["sys_interval 1"])
    seen: List[int] = []
    observer = mqttfast.Client(client_id=uid("sys-observer"))
    observer.on_message = lambda m: seen.append(int(m.payload))
    observer.connect(broker.host, broker.port, timeout=10)
    try:
        observer.subscribe("$SYS/broker/clients/connected").wait(5)
        out = tmp_path / "conn.json"
        proc = Background("conn", "-p", broker.port, "-c", 500, "-R", 2000, "--duration", 3.5,
                          "--json", out)
        proc.wait_for("of 500 clients connected")
        done = proc.finish()
        assert done.returncode == 0, done.stderr
    finally:
        observer.disconnect()
    summary = json.loads(out.read_text())["summary"]
    assert summary["connected"] == 500 and summary["failed"] == 0
    assert summary["failure_reasons"] == {} and summary["dropped"] == 0
    ordered(summary["connect_time_us"])
    assert summary["connect_time_us"]["count"] == 500
    assert summary["connect_rate"] > 0
    # The broker's count while the bench held its clients: theirs plus the observer's.
    assert max(seen) - 1 == summary["connected"], seen
    assert "500 connected, 0 failed" in done.stdout and "connect time p50" in done.stdout


def test_read_delay_reaches_every_connection():
    """``--read-delay S`` is each connection's ``max_read_delay`` (batched reads); the default
    reads every segment at once, as the clients do."""
    from mqttfast.bench.cli import build_parser, make_options
    from mqttfast.bench.runner import Options

    for kind in ("pub", "sub"):
        ns = build_parser(kind).parse_args(["-t", "a", "--read-delay", "0.002"])
        assert make_options(kind, ns).read_delay == 0.002
        assert make_options(kind, build_parser(kind).parse_args(["-t", "a"])).read_delay == 0.0
    assert Options(kind="sub").read_delay == 0.0


def test_quickack_default_follows_the_subscriber_count():
    """``bench sub`` with more than one connection acknowledges every read at once (a burst
    after the subscriptions arrived about twice as fast); one subscriber, and ``bench pub``, do
    not; ``--quickack`` / ``--no-quickack`` decide instead of the count."""
    from mqttfast.bench.cli import build_parser, make_options
    from mqttfast.bench.runner import Options

    def opts(kind: str, *args: str) -> Any:
        return make_options(kind, build_parser(kind).parse_args(["-t", "a", *args]))

    assert opts("sub", "-c", "2").quickack is True
    assert opts("sub", "-c", "100").quickack is True
    assert opts("sub", "-c", "1").quickack is False
    assert opts("sub", "-c", "2", "--no-quickack").quickack is False
    assert opts("sub", "-c", "1", "--quickack").quickack is True
    assert opts("pub", "-c", "10").quickack is False
    assert opts("pub", "-c", "10", "--quickack").quickack is True
    assert Options(kind="sub").quickack is False


def test_sub_with_quickack_loses_nothing(broker, tmp_path):
    """Two subscribers with prompt acknowledgements (the default for -c 2) and one without: every
    message counted by each, in order."""
    base = uid("bench")
    results = []
    for flag in ("--quickack", "--no-quickack"):
        sub_json = tmp_path / f"sub{flag}.json"
        sub = Background("sub", "-p", broker.port, "-c", 2, "-t", f"{base}{flag}/#", "-L", 20000,
                         "--duration", 20, flag, "--json", sub_json)
        sub.wait_for("2 of 2 clients subscribed")
        pub = run("pub", "-p", broker.port, "-c", 1, "-i", 0, "-I", 0, "-t", f"{base}{flag}/%i",
                  "-L", 10000, "-s", 64, "--payload-hdrs")
        assert pub.returncode == 0, pub.stderr
        done = sub.finish()
        assert done.returncode == 0, done.stderr
        results.append(json.loads(sub_json.read_text())["summary"])
    for s in results:
        assert s["received"] == 20000 and s["stop_reason"] == "limit", s
        assert (s["lost"], s["duplicated"], s["out_of_order"]) == (0, 0, 0)


def test_sub_with_batched_reads_loses_nothing(broker, tmp_path):
    """A burst read with ``--read-delay 0.001``: every message counted, none waits past the run."""
    base = uid("bench")
    sub_json = tmp_path / "sub.json"
    sub = Background("sub", "-p", broker.port, "-c", 2, "-t", f"{base}/#", "-L", 40000,
                     "--duration", 20, "--read-delay", 0.001, "--json", sub_json)
    sub.wait_for("2 of 2 clients subscribed")
    pub = run("pub", "-p", broker.port, "-c", 1, "-i", 0, "-I", 0, "-t", f"{base}/%i",
              "-L", 20000, "-s", 64, "--payload-hdrs")
    assert pub.returncode == 0, pub.stderr
    done = sub.finish()
    assert done.returncode == 0, done.stderr
    s = json.loads(sub_json.read_text())["summary"]
    assert s["received"] == 40000 and s["stop_reason"] == "limit", s
    assert (s["lost"], s["duplicated"], s["out_of_order"]) == (0, 0, 0)


def test_pub_sub_counts_latency_and_rate(broker, tmp_path):
    """QoS 1 with payload headers: every message arrives once, in order; -L is exact; --rate
    holds within 10 %; the summary has ordered percentiles."""
    base = uid("bench")
    sub_json, pub_json = tmp_path / "sub.json", tmp_path / "pub.json"
    sub = Background("sub", "-p", broker.port, "-c", 1, "-t", f"{base}/#", "-q", 1,
                     "-L", 6000, "--duration", 20, "--json", sub_json)
    sub.wait_for("1 of 1 clients subscribed")
    pub = run("pub", "-p", broker.port, "-c", 5, "-i", 0, "-t", f"{base}/%i", "-q", 1, "-F", 20,
              "--rate", 2000, "-L", 6000, "--payload-hdrs", "-s", 64, "--json", pub_json)
    assert pub.returncode == 0, pub.stderr
    done = sub.finish()
    assert done.returncode == 0, done.stderr
    p = json.loads(pub_json.read_text())["summary"]
    s = json.loads(sub_json.read_text())["summary"]
    assert p["sent"] == 6000 and p["acked"] == 6000 and p["unacked"] == 0  # -L exactly
    assert p["stop_reason"] == "limit"
    assert 0.9 <= p["publish_rate"] / 2000 <= 1.1, p["publish_rate"]
    ordered(p["ack_latency_us"])
    assert s["received"] == p["sent"]
    assert (s["lost"], s["duplicated"], s["out_of_order"]) == (0, 0, 0)
    assert s["streams"] == 5 and s["without_headers"] == 0
    ordered(s["e2e_latency_us"])
    assert s["e2e_latency_us"]["count"] == 6000
    assert "0 lost, 0 duplicated, 0 out of order" in done.stdout


def test_shared_subscription_and_workers(broker, tmp_path):
    """Two publisher processes (--workers 2: unique client ids, -L split exactly) and a shared
    subscription over three subscribers: the group receives each message once."""
    base = uid("share")
    sub_json, pub_json = tmp_path / "sub.json", tmp_path / "pub.json"
    sub = Background("sub", "-p", broker.port, "-c", 3, "-i", 0, "-t", f"$share/g/{base}/#",
                     "-q", 1, "-L", 3001, "--duration", 20, "--json", sub_json)
    sub.wait_for("3 of 3 clients subscribed")
    pub = run("pub", "-p", broker.port, "--workers", 2, "-c", 4, "-i", 0, "-t", f"{base}/%c",
              "-q", 1, "-F", 10, "-I", 2, "-L", 3001, "-w", "--payload-hdrs", "--json", pub_json)
    assert pub.returncode == 0, pub.stderr
    done = sub.finish()
    assert done.returncode == 0, done.stderr
    p = json.loads(pub_json.read_text())["summary"]
    s = json.loads(sub_json.read_text())["summary"]
    assert p["workers"] == 2 and p["connected"] == 4 and p["dropped"] == 0
    assert "4 of 4 publishers connected (0 failed): publishing" in pub.stderr  # -w, both workers
    assert p["sent"] == p["acked"] == 3001
    assert sum(row["sent"] for row in json.loads(pub_json.read_text())["series"]) == 3001
    assert s["received"] == 3001
    assert s["lost"] == 0 and s["duplicated"] == 0 and s["streams"] == 4


def test_output_files(broker, tmp_path):
    """--json, --csv (series + summary) and --plot, from one short QoS 0 run."""
    mpl = require_module("matplotlib", "matplotlib is not installed "
                              "(pip install 'mqttfast[plot]'): --plot cannot be tested")
    assert mpl
    out = tmp_path / "out"
    done = run("pub", "-p", broker.port, "-c", 2, "-i", 0, "-t", uid("files") + "/%i",
               "--rate", 400, "-L", 800, "--json", out / "r.json", "--csv", out / "r.csv",
               "--plot", out / "r.png", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""  # --quiet
    doc = json.loads((out / "r.json").read_text())
    assert doc["summary"]["sent"] == 800 and doc["command"] == "pub"
    assert len(doc["series"]) >= 2 and sum(row["sent"] for row in doc["series"]) == 800
    with open(out / "r.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(int(row["sent"]) for row in rows) == 800
    assert {"second", "connected", "sent", "acked", "received", "errors"} <= set(rows[0])
    with open(out / "r.summary.csv") as handle:
        summary = {row["metric"]: row["value"] for row in csv.DictReader(handle)}
    assert summary["sent"] == "800" and "publish_rate" in summary
    png = (out / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_plot_without_matplotlib_is_a_usage_error(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from mqttfast.bench.cli import main; "
            f"sys.exit(main(['conn', '-c', '1', '--plot', {str(tmp_path / 'x.png')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=REPO)
    assert done.returncode == 2
    assert "--plot needs matplotlib" in done.stderr and "Traceback" not in done.stderr


def test_tls_connections(tls_broker):
    done = run("conn", "-p", tls_broker.port, "-h", "localhost", "-c", 5, "-i", 0,
               "--cafile", tls_broker.ca_path, "--duration", 0.3)
    assert done.returncode == 0, done.stderr
    assert "5 connected, 0 failed" in done.stdout and "over TLS" in done.stdout
    # Without the CA the broker's certificate does not verify: a reason, not a traceback.
    done = run("conn", "-p", tls_broker.port, "-S", "-c", 3, "-i", 0, "--duration", 0.3)
    assert done.returncode == 1
    assert "0 of 3 clients connected: TLS handshake failed" in done.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr and "Traceback" not in done.stderr


def test_ws_flag_pub_and_sub_over_websocket(ws_broker, tmp_path):
    """--ws [PATH]: the subscriber on ws (default path), the publishers on wss (--cafile): every
    message arrives, in order, over both."""
    base = uid("bench-ws")
    sub_json, pub_json = tmp_path / "sub.json", tmp_path / "pub.json"
    sub = Background("sub", "-p", ws_broker.ws_port, "--ws", "-c", 1, "-t", f"{base}/#", "-q", 1,
                     "-L", 600, "--duration", 20, "--json", sub_json)
    sub.wait_for("1 of 1 clients subscribed")
    pub = run("pub", "-h", ws_broker.files.server_hostname, "-p", ws_broker.wss_port,
              "--ws", "/mqtt", "--cafile", ws_broker.files.ca_path, "-c", 3, "-i", 0,
              "-t", f"{base}/%i", "-q", 1, "-F", 20, "-L", 600, "--rate", 3000, "--payload-hdrs",
              "--json", pub_json)
    assert pub.returncode == 0, pub.stderr
    assert "over TLS" in pub.stdout
    done = sub.finish()
    assert done.returncode == 0, done.stderr
    p = json.loads(pub_json.read_text())["summary"]
    s = json.loads(sub_json.read_text())["summary"]
    assert p["sent"] == 600 and p["acked"] == 600
    assert s["received"] == 600 and (s["lost"], s["duplicated"], s["out_of_order"]) == (0, 0, 0)


def test_refused_credentials_are_counted_with_the_reason(auth_broker):
    done = run("conn", "-p", auth_broker.port, "-c", 4, "-i", 0, "-u", "alice", "-P", "wrong",
               "-V", 4)
    assert done.returncode == 1
    assert "0 of 4 clients connected: refused by the broker: " in done.stderr
    ok = run("conn", "-p", auth_broker.port, "-c", 4, "-i", 0, "-u", "alice", "-P", "secret",
             "--duration", 0.2)
    assert ok.returncode == 0, ok.stderr
    assert "4 connected, 0 failed" in ok.stdout


def test_ifaddr_spreads_source_addresses(broker_factory):
    broker = broker_factory()
    done = run("conn", "-p", broker.port, "-c", 4, "-i", 0, "--ifaddr", "127.0.0.2,127.0.0.3",
               "--duration", 0.2)
    assert done.returncode == 0, done.stderr
    log = broker.log_text()
    assert log.count("New connection from 127.0.0.2:") == 2
    assert log.count("New connection from 127.0.0.3:") == 2
