"""The SQLite session store: its file (schema, locking, refusals), what is durable when, and
crashes of the client's process (``kill -9`` against a real, persistent mosquitto).

A "crash" is a child process that ends with ``os._exit`` (no cleanup, no close) or is sent
SIGKILL; the parent then opens the same file, as the next process would.
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, List, Set

import pytest

import mqttfast
from mqttfast.codec import ConnAck, PubRec, PubRel, Publish
from mqttfast.errors import StoreError
from mqttfast.events import PublishState
from mqttfast.session import Session
from mqttfast.sqlite_store import APPLICATION_ID, SCHEMA_VERSION, SQLiteStore

from client_support import QUIET_LOG, Inbox, shutdown, uid
from scripted_peer import Script
from session_helpers import CLIENT_ID, Broker, Result, publish_packet

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PUBLISHER = str(HERE / "durable_publisher.py")
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}


def run_child(code: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter (tests/ importable); it should end with ``os._exit``."""
    prelude = "import os, sys\nfrom session_helpers import *\nfrom mqttfast.session import Session\n" \
              "from mqttfast.sqlite_store import SQLiteStore\n"
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, env=CHILD_ENV)
    assert done.returncode == 0, done.stderr
    return done


def rows(path: Path) -> List[tuple]:
    """The outgoing rows of a closed store file: (packet id, state, qos, payload)."""
    db = sqlite3.connect(str(path))
    try:
        return db.execute("SELECT packet_id, state, qos, payload FROM outgoing ORDER BY key"
                          ).fetchall()
    finally:
        db.close()


def durable_session(path: Path, **kw: Any) -> Session:
    return Session(CLIENT_ID, 4, False, keepalive=0, store=SQLiteStore(path), **kw)


# ---------------------------------------------------------------------------------- the file

def test_a_new_store_has_the_versioned_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SQLiteStore(path) as store:
        assert store.attach("me") == []
        assert store.client_id == "me"
    db = sqlite3.connect(str(path))
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"meta", "outgoing", "incoming"}
        assert db.execute("SELECT value FROM meta WHERE name='client_id'").fetchone() == ("me",)
    finally:
        db.close()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(StoreError, match="not a readable mqttfast session store"):
        SQLiteStore(path)
    assert path.read_bytes() == random.Random(1).randbytes(8192)  # left as it was


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER)")
    db.execute("INSERT INTO accounts VALUES (1, 100)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="another program"):
        SQLiteStore(path)
    db = sqlite3.connect(str(path))
    assert db.execute("SELECT * FROM accounts").fetchall() == [(1, 100)]  # untouched
    db.close()


def test_a_schema_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SQLiteStore(path).close()
    db = sqlite3.connect(str(path))
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"newer mqttfast \\(store schema {SCHEMA_VERSION + 1}\\)"):
        SQLiteStore(path)


def test_a_damaged_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s = durable_session(path, max_inflight=1)
    Broker(s).connect()
    for i in range(300):
        s.publish("t", bytes([i % 256]) * 200, 1)
    s.store.commit()
    s.store.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 5 * 4096
    rng = random.Random(7)
    for page in range(1, len(data) // 4096):  # every page but the header page
        data[page * 4096:page * 4096 + 64] = rng.randbytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged|not a readable"):
        SQLiteStore(path)


def test_a_store_opened_twice_in_one_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SQLiteStore(path):
        with pytest.raises(StoreError, match=f"in use by another live client \\(process "
                                             f"{os.getpid()}\\)"):
            SQLiteStore(path)
    SQLiteStore(path).close()  # free again once closed


def test_a_store_held_by_another_live_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, mqttfast\ns = mqttfast.SQLiteStore(sys.argv[1])\n"
         "print('open', flush=True)\nsys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=CHILD_ENV)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(StoreError, match=f"process {holder.pid}\\)"):
            SQLiteStore(path)
    finally:
        holder.kill()
        holder.wait(10)
    SQLiteStore(path).close()  # a dead holder's lock is gone with it


def test_a_store_refuses_another_client_id(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SQLiteStore(path) as store:
        store.attach("sensor-1")
    with SQLiteStore(path) as store:
        with pytest.raises(StoreError, match="'sensor-1', not 'sensor-2'"):
            Session("sensor-2", 4, False, store=store)
    with SQLiteStore(path) as store:
        assert Session("sensor-1", 4, False, store=store).restored == []


def test_a_durable_store_needs_a_persistent_session_and_a_client_id(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "a.db") as store:
        with pytest.raises(ValueError, match="clean_session=False"):
            Session("me", 4, True, store=store)
    with SQLiteStore(tmp_path / "b.db") as store:
        with pytest.raises(ValueError, match="needs a client_id"):
            Session("", 5, False, store=store)


def test_a_full_store_raises_and_keeps_the_changes_for_the_next_commit(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(path, max_size=64 * 1024)  # PRAGMA max_page_count: SQLITE_FULL beyond
    s = Session(CLIENT_ID, 4, False, keepalive=0, store=store)
    b = Broker(s)
    b.connect()
    records = []
    with pytest.raises(StoreError, match="database or disk is full") as raised:
        for i in range(100):
            records.append(s.publish("t", bytes([i]) * 5000, 1))
            store.commit()
    assert "kept in memory" in str(raised.value)
    failed = records[-1]
    assert store.uncommitted == 1 and failed.packet_id in s.store.outgoing
    b.read()
    # Acknowledgements free room: the commit of the next receive writes the one that failed.
    result = b.puback(*(r.packet_id for r in records[:4]))
    assert result.completed == records[:4]
    assert store.uncommitted == 0
    store.close()
    assert [row[3][0] for row in rows(path)] == list(range(4, len(records)))


def test_a_write_error_of_the_disk_is_reported(tmp_path: Path) -> None:
    # A real failing write (RLIMIT_FSIZE: the kernel refuses to grow the file), not a pragma.
    path = tmp_path / "state.db"
    done = run_child(f"""
        import resource, signal
        from mqttfast.errors import StoreError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        store = SQLiteStore({str(path)!r})
        s = Session(CLIENT_ID, 4, False, keepalive=0, store=store)
        Broker(s).connect()
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        try:
            for i in range(200):
                s.publish("t", bytes([i]) * 8000, 1)
                store.commit()
        except StoreError as exc:
            print("StoreError", i, exc)
        os._exit(0)
    """)
    assert done.stdout.startswith("StoreError"), done.stdout
    assert "writing the session store" in done.stdout
    failed_at = int(done.stdout.split()[1])
    assert 0 < failed_at < 200
    with SQLiteStore(path) as store:  # what was committed before the failure is intact
        assert [r.payload[0] for r in store.attach(CLIENT_ID)] == list(range(failed_at))


# ---------------------------------------------------------------------------------- durable when

def test_committed_state_survives_a_crash_and_uncommitted_changes_do_not(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    run_child(f"""
        store = SQLiteStore({str(path)!r})
        s = Session(CLIENT_ID, 4, False, keepalive=0, store=store, max_inflight=3)
        b = Broker(s)
        b.connect()
        a = s.publish("t", b"acked", 1)
        q2 = s.publish("t", b"pubrec", 2)
        s.publish("t", b"in flight", 1, retain=True)
        s.publish("t", b"queued", 1)            # the window of 3 is full
        s.publish("t", b"queued 2", 1)
        b.read()
        b.send(publish_packet("in", b"x", 2, packet_id=7))  # incoming QoS 2, PUBREL not yet
        b.puback(a.packet_id)                   # receive() commits all of the above, and
        b.pubrec(q2.packet_id)                  # "queued" starting; q2 waits for PUBCOMP
        s.publish("t", b"never committed", 1)   # no commit: lost with the crash
        os._exit(0)
    """)
    s = durable_session(path, max_inflight=3)
    restored = s.restored
    assert [(r.payload, r.qos, r.state) for r in restored] == [
        (b"pubrec", 2, PublishState.WAIT_PUBCOMP), (b"in flight", 1, PublishState.WAIT_PUBACK),
        (b"queued", 1, PublishState.WAIT_PUBACK), (b"queued 2", 1, PublishState.QUEUED)]
    assert restored[1].retain and not restored[0].retain
    assert s.store.incoming == {7} and s.inflight_count == 3 and s.queued_count == 1
    # Session Present: PUBREL for the QoS 2 past PUBREC, the QoS 1 ones again with DUP; the
    # queued one once the window allows.
    b = Broker(s)
    b.connect(session_present=True)
    assert b.read() == [PubRel(restored[0].packet_id)] + [
        Publish("t", r.payload, 1, r.packet_id, r.retain, True) for r in restored[1:3]]
    assert b.send(publish_packet("in", b"x", 2, packet_id=7, dup=True)) == Result()  # not again
    result = b.pubcomp(restored[0].packet_id)
    assert result.completed == [restored[0]] and restored[0].ok
    pubrec, late = b.read()
    assert pubrec == PubRec(7) and (late.payload, late.dup) == (b"queued 2", False)
    b.puback(restored[1].packet_id, restored[2].packet_id, late.packet_id)
    b.read()
    b.pubrel(7)
    assert all(r.ok for r in restored)
    s.store.close()
    assert rows(path) == []
    with SQLiteStore(path) as store:
        assert store.incoming == set()


def test_a_lost_session_requeues_the_stored_publishes_durably(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s = durable_session(path)
    b = Broker(s)
    b.connect()
    r1, r2 = s.publish("t", b"one", 1), s.publish("t", b"two", 2)
    b.read()
    b.send(publish_packet("in", b"x", 2, packet_id=9))
    b.lost()
    b.start()  # reconnect; the broker has forgotten us: Session Present 0
    b.send(ConnAck(False, 0))
    assert s.store.uncommitted == 0  # committed by that receive
    s.store.close()
    # Re-sent as new messages with new ids, and stored as such; the incoming id is gone.
    assert [(pid, state, payload) for pid, state, _, payload in rows(path)] == [
        (r1.packet_id, PublishState.WAIT_PUBACK, b"one"), (r2.packet_id, PublishState.WAIT_PUBREC,
                                                           b"two")]
    with SQLiteStore(path) as store:
        assert store.incoming == set()


def test_properties_survive_the_store(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    props = {"user_property": [("k", "v")], "correlation_data": b"\x00\x01",
             "message_expiry_interval": 60, "content_type": "text/plain"}
    s = Session(CLIENT_ID, 5, False, keepalive=0, store=SQLiteStore(path))
    s.publish_record(s.make_record("t", b"p", 1, False, props))  # queued: not connected
    s.store.commit()
    s.store.close()
    s = Session(CLIENT_ID, 5, False, keepalive=0, store=SQLiteStore(path))
    (record,) = s.restored
    assert (record.topic, record.payload, record.state) == ("t", b"p", PublishState.QUEUED)
    assert record.properties == props
    s.store.close()


# ---------------------------------------------------------------------------------- the log

def log_of(path: Path) -> Path:
    return path.with_name(path.name + "-log")


def test_a_commit_is_a_frame_in_the_log_and_the_next_open_replays_it(tmp_path: Path) -> None:
    """Below ``log_size`` a commit appends to ``<path>-log`` and leaves the database as it was;
    the next process gets the publishes from the log."""
    path = tmp_path / "state.db"
    run_child(f"""
        store = SQLiteStore({str(path)!r})
        s = Session(CLIENT_ID, 4, False, keepalive=0, store=store, max_inflight=2)
        b = Broker(s)
        b.connect()
        a = s.publish("t", b"acked", 1)
        s.publish("t", b"in flight", 1, retain=True)
        s.publish("t", b"queued", 1)
        store.commit()
        b.read()
        b.puback(a.packet_id)                   # a delete, and "queued" starting: one frame
        s.publish("t", b"never committed", 1)
        os._exit(0)
    """)
    assert rows(path) == []  # nothing folded yet
    assert log_of(path).stat().st_size > 24
    with SQLiteStore(path) as store:
        restored = store.attach(CLIENT_ID)
    assert [(r.payload, r.state, r.retain) for r in restored] == [
        (b"in flight", PublishState.WAIT_PUBACK, True), (b"queued", PublishState.WAIT_PUBACK, False)]
    assert len({r.packet_id for r in restored}) == 2
    # Replayed into the database at that open, and folded again at close: the log is empty.
    assert [row[3] for row in rows(path)] == [b"in flight", b"queued"]
    assert log_of(path).stat().st_size == 24


def _three_commits(path: Path) -> List[int]:
    """A crashed child's three one-publish commits; the log's size after each."""
    done = run_child(f"""
        store = SQLiteStore({str(path)!r})
        s = Session(CLIENT_ID, 4, False, keepalive=0, store=store)
        Broker(s).connect()
        for p in (b"one", b"two", b"three"):
            s.publish("t", p, 2)
            store.commit()
            print(os.path.getsize({str(path) + "-log"!r}))
        os._exit(0)
    """)
    return [int(line) for line in done.stdout.split()]


@pytest.mark.parametrize("damage", ["cut", "flipped"])
def test_a_frame_a_crash_cut_short_is_not_replayed(tmp_path: Path, damage: str) -> None:
    """A frame the kernel did not get whole (a crash inside ``write``) was a commit that never
    returned: it ends the log, as a torn frame ends SQLite's WAL."""
    path = tmp_path / "state.db"
    sizes = _three_commits(path)
    data = bytearray(log_of(path).read_bytes())
    assert len(data) == sizes[-1]
    if damage == "cut":
        data = data[:sizes[-1] - 3]
    else:
        data[sizes[-1] - 3] ^= 0x40
    log_of(path).write_bytes(bytes(data))
    with SQLiteStore(path) as store:
        assert [r.payload for r in store.attach(CLIENT_ID)] == [b"one", b"two"]


def test_a_log_already_folded_is_not_replayed_again(tmp_path: Path) -> None:
    """A crash between a fold and the log's reset leaves a log whose commits the database has:
    its generation says so, and replaying it would bring back an acknowledged publish."""
    path = tmp_path / "state.db"
    s = durable_session(path)
    b = Broker(s)
    b.connect()
    one = s.publish("t", b"one", 1)
    s.publish("t", b"two", 1)
    s.store.commit()
    stale = log_of(path).read_bytes()  # both publishes
    b.read()
    b.puback(one.packet_id)
    s.store.close()  # folded: "two" in the database, the log reset
    log_of(path).write_bytes(stale)
    with SQLiteStore(path) as store:
        assert [r.payload for r in store.attach(CLIENT_ID)] == [b"two"]


def test_a_log_of_another_store_is_refused_and_one_beside_a_new_database_dropped(
        tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    _three_commits(a)
    SQLiteStore(b).close()
    log_of(b).write_bytes(log_of(a).read_bytes())
    with pytest.raises(StoreError, match="not the log of the session store"):
        SQLiteStore(b)
    # Database removed on purpose: what its log holds belongs to no store any more.
    for name in ("a.db", "a.db-wal"):
        (tmp_path / name).unlink(missing_ok=True)
    with SQLiteStore(a) as store:
        assert store.attach(CLIENT_ID) == []
    assert log_of(a).stat().st_size == 24


def test_a_schema_1_store_is_upgraded(tmp_path: Path) -> None:
    """Schema 1 (before the log) is read and upgraded to 2, so a version that knows no log
    refuses the file instead of ignoring what the log holds."""
    path = tmp_path / "state.db"
    db = sqlite3.connect(str(path))
    db.execute("PRAGMA page_size=1024")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE TABLE outgoing (key INTEGER PRIMARY KEY, packet_id INTEGER NOT NULL, "
               "state INTEGER NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, "
               "topic TEXT NOT NULL, payload BLOB NOT NULL, properties BLOB)")
    db.execute("CREATE TABLE incoming (packet_id INTEGER PRIMARY KEY)")
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute("PRAGMA user_version=1")
    db.execute(f"INSERT INTO meta VALUES ('client_id', '{CLIENT_ID}')")
    db.execute("INSERT INTO outgoing VALUES (3, 5, ?, 1, 0, 't', x'6f6c64', NULL)",
               (int(PublishState.WAIT_PUBACK),))
    db.execute("INSERT INTO incoming VALUES (9)")
    db.commit()
    db.close()
    s = durable_session(path)
    assert [(r.payload, r.packet_id, r.state) for r in s.restored] == [
        (b"old", 5, PublishState.WAIT_PUBACK)]
    assert s.store.incoming == {9}
    s.publish("t", b"new", 1)
    s.store.commit()
    s.store.close()
    assert [row[3] for row in rows(path)] == [b"old", b"new"]
    db = sqlite3.connect(str(path))
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert {r[0] for r in db.execute("SELECT name FROM meta")} == {
            "client_id", "store_id", "log_applied"}
    finally:
        db.close()


def test_the_log_is_folded_into_the_database_at_log_size(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    done = run_child(f"""
        store = SQLiteStore({str(path)!r}, log_size=8192)
        s = Session(CLIENT_ID, 4, False, keepalive=0, store=store, max_inflight=1000)
        b = Broker(s)
        b.connect()
        records = []
        for i in range(200):
            records.append(s.publish("t", b"%03d" % i + bytes(100), 1))
            store.commit()
        b.read()
        b.puback(*(r.packet_id for r in records[:50]))
        print(os.path.getsize({str(path) + "-log"!r}))
        os._exit(0)
    """)
    assert int(done.stdout) <= 8192
    folded = rows(path)
    assert 0 < len(folded) < 200  # the database has what the last fold wrote, the log the rest
    with SQLiteStore(path) as store:
        assert [int(r.payload[:3]) for r in store.attach(CLIENT_ID)] == list(range(50, 200))


def test_a_full_synchronous_store_commits_to_the_database_every_time(tmp_path: Path) -> None:
    """synchronous="FULL" promises power loss too: every commit is a SQLite transaction with
    fsync, and the log (which is never fsynced) stays empty."""
    path = tmp_path / "state.db"
    run_child(f"""
        store = SQLiteStore({str(path)!r}, synchronous="FULL")
        s = Session(CLIENT_ID, 4, False, keepalive=0, store=store)
        Broker(s).connect()
        for p in (b"one", b"two"):
            s.publish("t", p, 1)
            store.commit()
        os._exit(0)
    """)
    assert [row[3] for row in rows(path)] == [b"one", b"two"]
    assert log_of(path).stat().st_size == 24


# ---------------------------------------------------------------------------------- the Client

def _publisher(port: int, store: Path, client_id: str, qos: int, start: int, count: int,
               batch: int = 1, finish: bool = False) -> subprocess.Popen:
    args = [sys.executable, PUBLISHER, str(port), str(store), client_id, str(qos), str(start),
            str(count), str(batch), "1" if finish else "0"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=CHILD_ENV)


def _kill_after(proc: subprocess.Popen, returned: int) -> int:
    """Read the publisher's progress until ``returned`` publishes returned, SIGKILL it, and
    return the highest index whose ``publish`` call had returned (the pipe keeps the lines
    written before the kill)."""
    assert proc.stdout is not None
    last = -1
    killed = False
    for line in proc.stdout:
        if line.startswith("R "):
            last = int(line.split()[1])
            if not killed and last >= returned:
                proc.send_signal(signal.SIGKILL)
                killed = True
    proc.wait(10)
    assert killed, f"the publisher ended before {returned} publishes: {proc.stderr.read()}"
    assert proc.returncode == -signal.SIGKILL
    return last


@pytest.mark.parametrize("qos,batch", [(1, 1), (2, 1), (1, 50)],
                         ids=["qos1-publish", "qos2-publish", "qos1-publish_many"])
def test_what_publish_returned_is_in_the_store_after_kill_9(
        tmp_path: Path, scripted_peer: Any, qos: int, batch: int) -> None:
    """Against a peer that never acknowledges, so every returned publish must be in the file."""
    peer = scripted_peer(4, Script(ack_publish=False))
    path = tmp_path / "state.db"
    rng = random.Random(qos * 100 + batch)
    start = 0
    for _ in range(3):
        proc = _publisher(peer.port, path, "durable-1", qos, start, start + 5000, batch)
        last = _kill_after(proc, start + rng.randrange(50, 1500))
        with SQLiteStore(path) as store:
            stored = {int(r.payload) for r in store.attach("durable-1")}
        assert set(range(last + 1)) <= stored, sorted(set(range(last + 1)) - stored)[:10]
        assert stored <= set(range(last + 1 + batch))  # at most the call that had not returned
        start = last + 1


@pytest.fixture
def persistent_broker(broker_factory: Any) -> Any:
    return broker_factory(persistence=True, max_queued_messages=0, max_inflight_messages=0,
                          log_types=QUIET_LOG, extra_config=["autosave_on_changes true"])


@pytest.mark.parametrize("qos", [1, 2])
def test_kill_9_of_the_publisher_loses_nothing(tmp_path: Path, persistent_broker: Any,
                                               qos: int) -> None:
    count, kills = 3000, 3
    rng = random.Random(20261202 + qos)
    inbox = Inbox()
    sub = mqttfast.Client(uid("sub"), clean_session=False)
    sub.on_message = inbox
    sub.connect("127.0.0.1", persistent_broker.port)
    path = tmp_path / "state.db"
    client_id = uid("pub")
    try:
        assert sub.subscribe(f"durable/{client_id}", qos).wait(5)
        deadline = time.monotonic() + 60
        start = 0
        for i in range(kills):
            proc = _publisher(persistent_broker.port, path, client_id, qos, start, count)
            target = start + rng.randrange(100, (count - start) // (kills - i + 1))
            start = _kill_after(proc, target) + 1
        final = _publisher(persistent_broker.port, path, client_id, qos, start, count,
                           finish=True)
        out, err = final.communicate(timeout=max(5.0, deadline - time.monotonic()))
        assert final.returncode == 0, err
        lines = out.split("\n")
        restored = int(lines[0].split()[1])
        done = [line for line in lines if line.startswith("DONE")]
        assert done, out
        restored_ok, on_publish_calls, rows_left, all_ok = map(int, done[0].split()[1:])
        # The restored handles completed, on_publish reported each, and the store is empty.
        assert restored > 0 and restored_ok == restored == on_publish_calls
        assert rows_left == 0 and all_ok == 1
        got: Set[int] = set()

        def received() -> bool:
            got.update(int(m.payload) for m in inbox.messages[len(got):])
            return len(got) >= count

        assert _wait(received, 20), f"lost: {sorted(set(range(count)) - got)[:20]}"
        assert got == set(range(count))
    finally:
        shutdown(sub)


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return bool(predicate())
        time.sleep(0.05)
    return True


def test_publish_raises_when_the_store_is_full(tmp_path: Path, broker: Any) -> None:
    store = SQLiteStore(tmp_path / "state.db", max_size=64 * 1024)
    client = mqttfast.Client(uid("full"), clean_session=False, store=store, max_inflight=1)
    client.connect("127.0.0.1", broker.port)
    handles: List[Any] = []
    try:
        with pytest.raises(StoreError, match="database or disk is full"):
            for i in range(100):
                handles.append(client.publish("mqttfast-test/full", bytes([i]) * 5000, 1))
        assert 3 < len(handles) < 100
    finally:
        shutdown(client)
        try:
            store.close()
        except StoreError:
            pass


def test_client_restored_handles_report_through_on_publish(tmp_path: Path, broker: Any) -> None:
    path = tmp_path / "state.db"
    client_id = uid("restore")
    with SQLiteStore(path) as store:  # what a crashed process left: two queued publishes
        s = Session(client_id, 4, False, store=store)
        s.publish_record(s.make_record("mqttfast-test/restored", b"a", 1))
        s.publish_record(s.make_record("mqttfast-test/restored", b"b", 2))
    store = SQLiteStore(path)
    client = mqttfast.Client(client_id, clean_session=False, store=store)
    reported: List[Any] = []
    seen = threading.Event()

    def on_publish(handle: Any) -> None:
        reported.append(handle)
        if len(reported) == 2:
            seen.set()

    client.on_publish = on_publish
    restored = client.restored
    assert [h.payload for h in restored] == [b"a", b"b"]
    assert all(isinstance(h, mqttfast.PublishHandle) for h in restored)
    try:
        client.connect("127.0.0.1", broker.port)
        assert all(h.wait(5) for h in restored)
        assert seen.wait(5) and reported == restored
    finally:
        shutdown(client)
        store.close()
    assert rows(path) == []


def test_a_failed_commit_after_receive_still_delivers(tmp_path: Path, caplog: Any) -> None:
    """Raising out of receive() would drop messages whose QoS 2 ids are already recorded (the
    broker's re-send would pass for a duplicate): the session logs the error and goes on."""
    store = SQLiteStore(tmp_path / "state.db", max_size=64 * 1024)
    s = Session(CLIENT_ID, 4, False, keepalive=0, store=store)
    b = Broker(s)
    b.connect()
    with pytest.raises(StoreError, match="database or disk is full"):
        for i in range(100):
            s.publish("t", bytes([i]) * 5000, 1)
            store.commit()
    b.read()
    waiting = store.uncommitted
    with caplog.at_level("ERROR", logger="mqttfast"):
        result = b.send(publish_packet("in", b"exactly once", 2, packet_id=3))
    assert [m.payload for m in result.messages] == [b"exactly once"]
    assert b.read() == [PubRec(3)]
    assert store.uncommitted == waiting + 1  # the incoming id waits for the next commit
    assert "database or disk is full" in caplog.text
