"""A real mosquitto broker for the integration tests, on a free loopback port, in its own directory.

``Mosquitto(**options)`` writes a config file, a log file, (optionally) a password file, TLS
certificates and a persistence database into its own directory, and runs ``mosquitto -c`` bound to
127.0.0.1 only. ``start()`` returns once the broker accepts connections on every port *and* has
logged that it is running; ``stop()`` terminates it (SIGTERM, so a persistent broker saves its
database), then kills it after a timeout; ``restart()`` brings it back on the same ports with the
same persistence. The pytest fixtures that use it are at the end of ``tests/conftest.py``.

Listener options that apply to every listener go in ``listener_options``; raw ``extra_config``
lines are appended at the very end of the file, i.e. after the last listener (the TLS one when
``tls`` is set), which is where mosquitto attaches any listener-specific option among them.
"""
from __future__ import annotations

import atexit
import importlib
import types
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import (
    TYPE_CHECKING, BinaryIO, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union,
)

import pytest

if TYPE_CHECKING:  # pragma: no cover
    import trustme

HOST = "127.0.0.1"  # the only address a test broker ever listens on
SERVER_HOSTNAME = "localhost"  # a name in the server certificate (which also names 127.0.0.1)
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
SUBPROCESS_TIMEOUT = 10.0
_ADDR_IN_USE = "Address already in use"
_START_ATTEMPTS = 3

# Where Debian/Ubuntu and Homebrew put the broker, which is often not on a non-root PATH.
_EXTRA_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/opt/homebrew/sbin", "/usr/bin")

INSTALL_HINTS = {
    "mosquitto": "apt-get install -y mosquitto",
    "mosquitto_passwd": "apt-get install -y mosquitto",
    "mosquitto_pub": "apt-get install -y mosquitto-clients",
    "mosquitto_sub": "apt-get install -y mosquitto-clients",
}

PathLike = Union[str, "os.PathLike[str]"]


class BrokerError(RuntimeError):
    """A test broker could not be set up, started or stopped."""


class BrokerStartError(BrokerError):
    """mosquitto did not come up; the message carries its log."""


class _AddressInUse(BrokerStartError):
    pass


def find_executable(name: str) -> Optional[str]:
    """``name`` on PATH, else in the usual sbin directories; None when absent."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_DIRS:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def ci_requested() -> bool:
    """True when the environment variable CI is set to something other than a false-ish value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def skip_unless_ci(reason: str) -> None:
    """Skip the calling test for ``reason``, except under CI, which installs everything the
    suite needs: there the missing piece is a failure, not a silent skip."""
    if ci_requested():
        pytest.fail(f"{reason}; CI is set, so this test may not be skipped", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str, reason: str) -> "types.ModuleType":
    """``importlib.import_module(name)``, or ``skip_unless_ci(reason)`` when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        skip_unless_ci(reason)
        raise  # pragma: no cover  (skip_unless_ci raises)


def require_executable(name: str = "mosquitto") -> str:
    """The path of ``name``; when it is missing, fails the calling test under CI (a suite that
    silently skips its broker tests proves nothing) and skips it otherwise."""
    path = find_executable(name)
    if path is not None:
        return path
    hint = INSTALL_HINTS.get(name, "apt-get install -y mosquitto mosquitto-clients")
    reason = f"{name} not installed ({hint})"
    if ci_requested():
        pytest.fail(f"{reason}; CI is set, so the broker tests may not be skipped", pytrace=False)
    pytest.skip(reason)
    raise AssertionError("unreachable")  # pragma: no cover  (pytest.skip raises)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the race is handled by retrying)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class TLSFiles:
    """The PEM files of a TLS broker: a CA, the server's certificate and a client certificate."""

    ca_path: Path
    server_cert_path: Path
    server_key_path: Path
    client_cert_path: Path
    client_key_path: Path
    server_hostname: str = SERVER_HOSTNAME


def make_tls_files(directory: Path, ca: Optional[trustme.CA] = None) -> TLSFiles:
    """Writes a trustme CA, a server certificate for 127.0.0.1/localhost and a client certificate
    (issued by the same CA) into ``directory``."""
    import trustme

    ca = ca if ca is not None else trustme.CA()
    directory.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(
        ca_path=directory / "ca.pem",
        server_cert_path=directory / "server.pem",
        server_key_path=directory / "server.key",
        client_cert_path=directory / "client.pem",
        client_key_path=directory / "client.key",
    )
    ca.cert_pem.write_to_path(str(files.ca_path))
    server = ca.issue_cert(HOST, SERVER_HOSTNAME, common_name=SERVER_HOSTNAME)
    _write_chain(server, files.server_cert_path)
    server.private_key_pem.write_to_path(str(files.server_key_path))
    client = ca.issue_cert("client.mqttfast.test", common_name="mqttfast-test-client")
    _write_chain(client, files.client_cert_path)
    client.private_key_pem.write_to_path(str(files.client_key_path))
    return files


def _write_chain(leaf: trustme.LeafCert, path: Path) -> None:
    path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))


_LIVE: Set[Mosquitto] = set()


@atexit.register
def _kill_leftovers() -> None:  # pragma: no cover  (only when a test run dies mid-way)
    for broker in list(_LIVE):
        broker.kill()


class Mosquitto:
    """One mosquitto process bound to 127.0.0.1 (see the module docstring).

    Options:
        allow_anonymous: whether clients without a username may connect.
        users: ``{username: password}``; written with ``mosquitto_passwd -b -c`` to a password file.
        tls: add a TLS listener (``tls_port``) with trustme certificates; ``ca`` reuses a CA.
        require_certificate: on the TLS listener, demand a client certificate (implies ``tls``).
        persistence: keep sessions and queued messages in a database across ``restart()``.
        max_inflight_messages, max_queued_messages, max_keepalive: the mosquitto settings, when
            not None.
        max_topic_alias: the per-listener MQTT 5 topic alias maximum (None leaves it out).
        log_types: the ``log_type`` lines ("all" logs every packet, which the tests can wait for).
        listener_options: raw lines added to every listener.
        extra_config: raw lines appended at the end of the config.
        directory: where to put the files; a fresh temporary directory (removed by ``cleanup()``)
            when None.
        port, tls_port: fixed ports; free ones are picked when None.
    """

    host = HOST

    def __init__(
        self,
        *,
        allow_anonymous: bool = True,
        users: Optional[Mapping[str, str]] = None,
        tls: bool = False,
        require_certificate: bool = False,
        ca: Optional[trustme.CA] = None,
        persistence: bool = False,
        max_inflight_messages: Optional[int] = None,
        max_queued_messages: Optional[int] = None,
        max_keepalive: Optional[int] = None,
        max_topic_alias: Optional[int] = 10,
        log_types: Sequence[str] = ("all",),
        listener_options: Sequence[str] = (),
        extra_config: Sequence[str] = (),
        directory: Optional[PathLike] = None,
        port: Optional[int] = None,
        tls_port: Optional[int] = None,
        start_timeout: float = START_TIMEOUT,
        executable: Optional[str] = None,
    ) -> None:
        self.allow_anonymous = allow_anonymous
        self.users: Dict[str, str] = dict(users or {})
        self.tls = tls or require_certificate
        self.require_certificate = require_certificate
        self.persistence = persistence
        self.max_inflight_messages = max_inflight_messages
        self.max_queued_messages = max_queued_messages
        self.max_keepalive = max_keepalive
        self.max_topic_alias = max_topic_alias
        self.log_types = list(log_types)
        self.listener_options = list(listener_options)
        self.extra_config = list(extra_config)
        self.start_timeout = start_timeout
        self._ca = ca
        self._fixed_port = port
        self._fixed_tls_port = tls_port
        self._port: Optional[int] = port
        self._tls_port: Optional[int] = tls_port
        self._owns_directory = directory is None
        self.directory = Path(
            tempfile.mkdtemp(prefix="mosquitto-") if directory is None else directory
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self.output_path = self.directory / "mosquitto.out"
        self.password_path: Optional[Path] = self.directory / "passwd" if self.users else None
        self.persistence_path = self.directory / "persistence"
        self.tls_files: Optional[TLSFiles] = None
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._output: Optional[BinaryIO] = None
        self._log_offset = 0
        self.executable = executable or find_executable("mosquitto")
        if self.executable is None:
            raise BrokerError("mosquitto not installed (apt-get install -y mosquitto)")
        self._prepared = False
        self._started_once = False

    # ---------------------------------------------------------------- addresses and files

    @property
    def port(self) -> int:
        """The plain MQTT listener's port."""
        if self._port is None:
            raise BrokerError("the broker has not been started yet")
        return self._port

    @property
    def tls_port(self) -> int:
        """The TLS listener's port (only with ``tls``)."""
        if not self.tls:
            raise BrokerError("this broker has no TLS listener (pass tls=True)")
        if self._tls_port is None:
            raise BrokerError("the broker has not been started yet")
        return self._tls_port

    @property
    def address(self) -> Tuple[str, int]:
        return (self.host, self.port)

    @property
    def ca(self) -> trustme.CA:
        """The trustme CA behind the TLS listener (``ca.configure_trust(ssl_context)``)."""
        if self._ca is None:
            raise BrokerError("this broker has no TLS listener (pass tls=True)")
        return self._ca

    def _tls(self) -> TLSFiles:
        if self.tls_files is None:
            raise BrokerError("this broker has no TLS listener (pass tls=True)")
        return self.tls_files

    @property
    def ca_path(self) -> Path:
        return self._tls().ca_path

    @property
    def client_cert_path(self) -> Path:
        return self._tls().client_cert_path

    @property
    def client_key_path(self) -> Path:
        return self._tls().client_key_path

    @property
    def server_hostname(self) -> str:
        return self._tls().server_hostname

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> Optional[int]:
        return self._proc.poll() if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---------------------------------------------------------------- config

    def _prepare(self) -> None:
        """Files that survive restarts: certificates, password file, persistence directory."""
        if self._prepared:
            return
        if self.tls:
            if self._ca is None:
                import trustme

                self._ca = trustme.CA()
            self.tls_files = make_tls_files(self.directory / "tls", self._ca)
        if self.password_path is not None:
            self._write_password_file(self.password_path)
        if self.persistence:
            self.persistence_path.mkdir(exist_ok=True)
        self._prepared = True

    def _write_password_file(self, path: Path) -> None:
        tool = find_executable("mosquitto_passwd")
        if tool is None:
            raise BrokerError("mosquitto_passwd not installed (apt-get install -y mosquitto)")
        for index, (user, password) in enumerate(self.users.items()):
            args = [tool, "-b"] + (["-c"] if index == 0 else []) + [str(path), user, password]
            done = subprocess.run(
                args, stdin=subprocess.DEVNULL, capture_output=True, timeout=SUBPROCESS_TIMEOUT,
                check=False,
            )
            if done.returncode != 0:
                raise BrokerError(
                    f"mosquitto_passwd failed for user {user!r} (exit {done.returncode}): "
                    f"{(done.stdout + done.stderr).decode(errors='replace').strip()}"
                )

    def config_text(self) -> str:
        """The config file for the current ports."""
        lines: List[str] = ["# generated by tests/broker.py"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root, mosquitto would switch to the "mosquitto" user, which cannot read our files.
            lines.append("user root")
        lines.append(f"log_dest file {self.log_path}")
        lines += [f"log_type {kind}" for kind in self.log_types]
        lines += ["log_timestamp true", "log_timestamp_format %Y-%m-%dT%H:%M:%S",
                  "connection_messages true"]
        lines.append(f"allow_anonymous {'true' if self.allow_anonymous else 'false'}")
        if self.password_path is not None:
            lines.append(f"password_file {self.password_path}")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.persistence_path}/",
                      "persistence_file mosquitto.db"]
        else:
            lines.append("persistence false")
        for name in ("max_inflight_messages", "max_queued_messages", "max_keepalive"):
            value = getattr(self, name)
            if value is not None:
                lines.append(f"{name} {int(value)}")
        lines += ["", f"listener {self.port} {HOST}"] + self._listener_lines()
        if self.tls:
            files = self._tls()
            lines += ["", f"listener {self.tls_port} {HOST}"] + self._listener_lines()
            lines += [f"cafile {files.ca_path}", f"certfile {files.server_cert_path}",
                      f"keyfile {files.server_key_path}"]
            if self.require_certificate:
                lines.append("require_certificate true")
        if self.extra_config:
            lines += ["", "# extra_config"] + list(self.extra_config)
        return "\n".join(lines) + "\n"

    def _listener_lines(self) -> List[str]:
        lines = []
        if self.max_topic_alias is not None:
            lines.append(f"max_topic_alias {int(self.max_topic_alias)}")
        return lines + list(self.listener_options)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Mosquitto:
        """Starts the broker and waits until it serves; on a port race (EADDRINUSE) it retries,
        with new ports unless the ports are fixed (``restart()`` keeps them)."""
        if self.is_running():
            return self
        self._prepare()
        last: Optional[BrokerStartError] = None
        for attempt in range(_START_ATTEMPTS):
            if self._port is None:
                self._port = free_port()
            if self.tls and self._tls_port is None:
                self._tls_port = free_port()
                while self._tls_port == self._port:
                    self._tls_port = free_port()
            try:
                self._spawn_and_wait()
                _LIVE.add(self)
                return self
            except _AddressInUse as exc:
                last = exc
                if self._fixed_port is None and not self._started_once:
                    self._port = None
                if self._fixed_tls_port is None and not self._started_once:
                    self._tls_port = None
                time.sleep(0.2 * (attempt + 1))
        assert last is not None
        raise BrokerStartError(f"gave up after {_START_ATTEMPTS} attempts: {last}")

    def _spawn_and_wait(self) -> None:
        self.config_path.write_text(self.config_text())
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._close_output()
        self._output = open(self.output_path, "ab")  # noqa: SIM115  (lives as long as the process)
        self._proc = subprocess.Popen(
            [str(self.executable), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT,
            cwd=str(self.directory),
        )
        ports = [self.port] + ([self.tls_port] if self.tls else [])
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._close_output()
                log = self.log_text()
                cls = _AddressInUse if _ADDR_IN_USE in log[-2000:] else BrokerStartError
                raise cls(self._describe(f"mosquitto exited with status {code} on start", log))
            if "running" in self._new_log() and all(port_accepts(p) for p in ports):
                self._started_once = True
                return
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerStartError(self._describe(
                    f"mosquitto did not accept connections on {HOST}:{ports} within "
                    f"{self.start_timeout:.0f} s", self.log_text()))
            time.sleep(0.02)

    def _describe(self, what: str, log: str) -> str:
        return (f"{what}\nconfig {self.config_path}:\n{self._read(self.config_path)}"
                f"\nlog:\n{log or '(empty)'}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """SIGTERM (a persistent broker saves its database), wait, SIGKILL after ``timeout``.
        Returns the exit status (None when it was never started)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._close_output()
        _LIVE.discard(self)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, without saving persistence."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        self._close_output()
        _LIVE.discard(self)

    def restart(self, timeout: float = STOP_TIMEOUT) -> Mosquitto:
        """Stops and starts again on the same ports with the same files and persistence."""
        self.stop(timeout)
        return self.start()

    def cleanup(self) -> None:
        """Stops the broker and removes the directory when this object created it."""
        self.stop()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> Mosquitto:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        ports = f"{self._port}" + (f", tls {self._tls_port}" if self.tls else "")
        return f"<Mosquitto {HOST}:{ports} {state} in {self.directory}>"

    # ---------------------------------------------------------------- log

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        """Everything mosquitto logged (all runs), preceded by whatever it printed to stdout/stderr
        (config errors come there, before the log file is opened)."""
        output = self._read(self.output_path).strip()
        log = self._read(self.log_path)
        return (f"[stdout/stderr]\n{output}\n[log]\n{log}" if output else log)

    def _new_log(self) -> str:
        """What the log gained since the last start."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._log_offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(
        self, text: str, timeout: float = SUBPROCESS_TIMEOUT, since_start: bool = True
    ) -> str:
        """Waits until ``text`` appears in the log (of the current run unless ``since_start`` is
        False) and returns the log; raises TimeoutError with the log otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            log = self._new_log() if since_start else self._read(self.log_path)
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not in the mosquitto log after {timeout} s:\n{log}")
            time.sleep(0.02)


@dataclass(frozen=True)
class TLSBroker:
    """What the TLS fixtures yield: the TLS endpoint of a ``Mosquitto`` (``.port`` is the TLS port;
    ``.broker.port`` the plain one)."""

    broker: Mosquitto

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.tls_port

    @property
    def plain_port(self) -> int:
        return self.broker.port

    @property
    def ca_path(self) -> Path:
        return self.broker.ca_path

    @property
    def client_cert_path(self) -> Path:
        return self.broker.client_cert_path

    @property
    def client_key_path(self) -> Path:
        return self.broker.client_key_path

    @property
    def server_hostname(self) -> str:
        return self.broker.server_hostname

    @property
    def require_certificate(self) -> bool:
        return self.broker.require_certificate

    @property
    def ca(self) -> trustme.CA:
        return self.broker.ca

    def log_text(self) -> str:
        return self.broker.log_text()
