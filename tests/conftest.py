"""Fixtures that run the codec tests under both twins: the Cython ``_codec`` and the pure ``_codec_py``.

When the C extension does not import, its half of every test is skipped with the import error as the
reason, unless ``MQTTFAST_REQUIRE_C=1`` (set by CI), in which case it fails: a suite that silently
tests the pure twin twice is worse than no suite.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Tuple

import pytest
from hypothesis import settings

# Bounded so the whole suite stays fast; HYPOTHESIS_PROFILE=thorough searches much longer.
settings.register_profile("default", max_examples=300, deadline=None)
settings.register_profile("thorough", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REQUIRE_C = os.environ.get("MQTTFAST_REQUIRE_C") == "1"
MODULES = {"c": "mqttfast._codec", "python": "mqttfast._codec_py"}


def load_codec(name: str) -> ModuleType:
    """The twin called ``name`` ("c" or "python"); skips (or fails, under MQTTFAST_REQUIRE_C=1)
    the calling test when the C extension cannot be imported."""
    try:
        return importlib.import_module(MODULES[name])
    except ImportError as exc:
        if name != "c":
            raise
        reason = f"C extension not built: {exc}"
        if REQUIRE_C:
            pytest.fail(f"{reason} (MQTTFAST_REQUIRE_C=1)", pytrace=False)
        pytest.skip(reason)


# Session scope: the modules are stateless, and hypothesis tests may use these fixtures.
@pytest.fixture(params=["c", "python"], scope="session")
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """Each twin in turn."""
    return load_codec(request.param)


@pytest.fixture(scope="session")
def both() -> Tuple[ModuleType, ModuleType]:
    """``(c, py)`` for cross-twin tests; skipped (or failed) like ``codec`` without the C twin."""
    return load_codec("c"), load_codec("python")


@pytest.fixture(scope="session")
def py() -> ModuleType:
    """The pure twin alone (for checks about the reference implementation itself)."""
    return load_codec("python")


# ==================================================================================================
# BEGIN mosquitto broker fixtures (tests/broker.py; tested by tests/test_broker_fixture.py)
#
#   broker                  module scope  anonymous plain listener            -> Mosquitto
#   broker_factory          function      broker_factory(**options) -> Mosquitto (started; all
#                                         stopped at teardown; options: see broker.Mosquitto)
#   tls_broker              module scope  TLS listener (trustme CA)           -> TLSBroker
#   tls_broker_client_cert  module scope  same, require_certificate true     -> TLSBroker
#   auth_broker             module scope  allow_anonymous false, alice/secret -> Mosquitto
#
# Without mosquitto these fail under CI=<anything true> and skip otherwise. Do not stop() or
# restart() the module-scoped brokers from a test; use broker_factory for that.
# ==================================================================================================
import typing as _typing  # noqa: E402  (this block is appended to the file)

try:  # tests/ is on sys.path under pytest's default ("prepend") import mode
    from broker import Mosquitto, TLSBroker, require_executable
except ImportError:  # pragma: no cover  (tests/ imported as a package)
    from tests.broker import Mosquitto, TLSBroker, require_executable


def _start_mosquitto(directory: _typing.Any, **options: _typing.Any) -> Mosquitto:
    require_executable("mosquitto")
    if options.get("users"):
        require_executable("mosquitto_passwd")
    return Mosquitto(directory=directory, **options).start()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> _typing.Iterator[Mosquitto]:
    """A plain anonymous mosquitto on 127.0.0.1 (``.host``, ``.port``), shared by a test module."""
    instance = _start_mosquitto(tmp_path_factory.mktemp("broker"))
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def broker_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> _typing.Iterator[_typing.Callable[..., Mosquitto]]:
    """``broker_factory(**options) -> Mosquitto``: starts a broker of its own for this test (any
    ``Mosquitto`` keyword: persistence, users, tls, max_keepalive, extra_config...); every broker
    it made is stopped at teardown."""
    require_executable("mosquitto")
    made: _typing.List[Mosquitto] = []

    def factory(**options: _typing.Any) -> Mosquitto:
        if options.get("users"):
            require_executable("mosquitto_passwd")
        options.setdefault("directory", tmp_path_factory.mktemp("broker_factory"))
        instance = Mosquitto(**options)
        made.append(instance)
        return instance.start()

    try:
        yield factory
    finally:
        for instance in made:
            instance.stop()


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> _typing.Iterator[TLSBroker]:
    """A TLS mosquitto: ``.host``, ``.port`` (TLS), ``.ca_path``, ``.client_cert_path``,
    ``.client_key_path``, ``.server_hostname``, ``.ca`` (trustme), ``.broker``."""
    instance = _start_mosquitto(tmp_path_factory.mktemp("tls_broker"), tls=True)
    try:
        yield TLSBroker(instance)
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def tls_broker_client_cert(tmp_path_factory: pytest.TempPathFactory) -> _typing.Iterator[TLSBroker]:
    """Like ``tls_broker``, but the broker demands a client certificate (require_certificate)."""
    instance = _start_mosquitto(
        tmp_path_factory.mktemp("tls_broker_client_cert"), tls=True, require_certificate=True
    )
    try:
        yield TLSBroker(instance)
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> _typing.Iterator[Mosquitto]:
    """A mosquitto that refuses anonymous clients and knows user "alice", password "secret"
    (``.users``)."""
    instance = _start_mosquitto(
        tmp_path_factory.mktemp("auth_broker"), allow_anonymous=False, users={"alice": "secret"}
    )
    try:
        yield instance
    finally:
        instance.stop()
# END mosquitto broker fixtures


# ==================================================================================================
# BEGIN scripted peer fixture (tests/scripted_peer.py): for what no broker can show
# ==================================================================================================
try:
    from scripted_peer import Script, ScriptedPeer
except ImportError:  # pragma: no cover  (tests/ imported as a package)
    from tests.scripted_peer import Script, ScriptedPeer


@pytest.fixture
def scripted_peer() -> _typing.Iterator[_typing.Callable[..., ScriptedPeer]]:
    """``scripted_peer(protocol, *scripts) -> ScriptedPeer`` (script n for connection n, the last
    one repeating); every peer is closed at teardown."""
    made: _typing.List[ScriptedPeer] = []

    def factory(protocol: int = 4, *scripts: Script) -> ScriptedPeer:
        peer = ScriptedPeer(protocol, scripts or (Script(),))
        made.append(peer)
        return peer

    try:
        yield factory
    finally:
        for peer in made:
            peer.close()
# END scripted peer fixture


# ==================================================================================================
# BEGIN asyncio event loops (pytest-asyncio): every asyncio test runs on the default loop and, where
# it is installed (not on Windows), on uvloop. A test may pick with
# @pytest.mark.asyncio(loop_factories=["asyncio"]); those marked with ON_EVERY_LOOP also run on
# ProactorLikeLoop.
# ==================================================================================================
import asyncio as _asyncio  # noqa: E402


class ProactorLikeLoop(_asyncio.SelectorEventLoop):
    """The default loop without what Windows' Proactor loop lacks: watching a file descriptor
    (``add_reader``, ``add_writer``) and signal handlers raise ``NotImplementedError``, as they
    do there. Its own transports use the private ``_add_reader``, so connections work: a client
    that runs on it asks the loop for nothing but transports, callbacks and timers, which is
    what the Proactor loop offers (no Windows machine here to run the real one)."""

    def add_reader(self, fd: _typing.Any, callback: _typing.Any, *args: _typing.Any) -> None:
        raise NotImplementedError("the Proactor loop has no add_reader")

    def add_writer(self, fd: _typing.Any, callback: _typing.Any, *args: _typing.Any) -> None:
        raise NotImplementedError("the Proactor loop has no add_writer")

    def add_signal_handler(self, sig: int, callback: _typing.Any, *args: _typing.Any) -> None:
        raise NotImplementedError("the Proactor loop has no add_signal_handler")


PROACTOR_LIKE = "proactor-like"  # opt-in: @pytest.mark.asyncio(loop_factories=ON_EVERY_LOOP)
ON_EVERY_LOOP = ["asyncio", "uvloop", PROACTOR_LIKE]


def pytest_asyncio_loop_factories(config: _typing.Any, item: _typing.Any) -> _typing.Dict[str, _typing.Any]:
    factories: _typing.Dict[str, _typing.Any] = {"asyncio": _asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:
        pass
    else:
        factories["uvloop"] = uvloop.new_event_loop
    marker = item.get_closest_marker("asyncio")
    if marker is not None and PROACTOR_LIKE in (marker.kwargs.get("loop_factories") or ()):
        factories[PROACTOR_LIKE] = ProactorLikeLoop
    return factories
# END asyncio event loops
