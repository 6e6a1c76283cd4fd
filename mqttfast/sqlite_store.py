"""A durable session store in one SQLite file: unacknowledged QoS 1/2 publishes (in flight and
queued) and the ids of incoming QoS 2 messages not yet released survive a crash of the process.

    store = SQLiteStore("state.db")
    client = Client("sensor-1", clean_session=False, store=store)

What is durable when (the session calls ``commit()``; the Client calls it as below):

- ``Client.publish(qos >= 1)`` commits before it returns: once it has returned, the message is in
  the file. The commit happens under the connection's lock, before the loop can take the
  message's bytes, so nothing leaves the process that is not on disk.
- ``Client.publish_many(qos >= 1)`` commits once for the whole batch, before it returns.
- What the broker's packets change (acknowledgements completing publishes, PUBREC moving QoS 2
  to PUBREL, incoming QoS 2 ids, queued publishes starting in the window they free) is committed
  once per ``Session.receive`` call, i.e. per chunk the loop read, before the messages reach the
  application and before the answers it queued (PUBREC, PUBREL, the next publishes) are sent.
- Timer-driven changes (a publish failed after ``max_retries``) are committed with the next batch.

A commit that fails (full disk, I/O error) keeps its changes for the next one. In ``publish`` it
raises ``StoreError``; in ``receive`` it is logged and the session goes on (raising there would
drop messages whose QoS 2 ids are already recorded).

A crash between a change and its commit can only make the new process re-send something the
broker already has (a duplicate, which QoS 1 allows), never lose a message that ``publish``
returned. The commit writes the WAL without fsync (``synchronous="NORMAL"``): that survives a
crash of the process, not of the machine; ``synchronous="FULL"`` also survives power loss, at the
cost of an fsync per commit. QoS 0 messages are never stored.

One live client per file: the store holds an ``flock`` on ``<path>-lock`` and SQLite's exclusive
locking mode for as long as it is open. The file records its client id and schema version, and
anything unexpected (another program's database, a newer schema, a damaged file, a full disk)
raises ``StoreError`` at the call rather than dropping state.
"""
from __future__ import annotations

import os
import sqlite3
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Union

from .constants import PacketType
from .errors import StoreError
from .events import PublishState
from .properties import decode_properties, encode_properties
from .store import MemoryStore

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's exclusive lock alone guards the file
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 1  # PRAGMA user_version of the files this module writes
APPLICATION_ID = 0x6D716673  # PRAGMA application_id: "mqfs", marks a file as an mqttfast store
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_PAGE_SIZE = 1024  # small rows: a commit of one publish writes fewer bytes (~40% faster)

_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # key: the order publishes were made in; packet_id 0 while queued.
    "CREATE TABLE outgoing (key INTEGER PRIMARY KEY, packet_id INTEGER NOT NULL, "
    "state INTEGER NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, topic TEXT NOT NULL, "
    "payload BLOB NOT NULL, properties BLOB)",
    "CREATE TABLE incoming (packet_id INTEGER PRIMARY KEY)",
)
# The states a stored publish may be in, with the QoS each allows.
_VALID = {
    (PublishState.QUEUED, 1), (PublishState.QUEUED, 2), (PublishState.WAIT_PUBACK, 1),
    (PublishState.WAIT_PUBREC, 2), (PublishState.WAIT_PUBCOMP, 2),
}


class StoredPublish(NamedTuple):
    """One publish as the file holds it (``packet_id`` 0: queued, not yet sent)."""

    key: int
    packet_id: int
    state: PublishState
    qos: int
    retain: bool
    topic: str
    payload: bytes
    properties: Optional[dict]


class SQLiteStore(MemoryStore):
    """The session's state in memory (the same containers as ``MemoryStore``), mirrored to the
    SQLite file ``path`` in batches: see the module docstring for what is durable when.

    ``synchronous``: SQLite's setting ("NORMAL" survives a process crash, "FULL" power loss too).
    ``max_size``: refuse to grow the file beyond this many bytes (a commit over it raises
    ``StoreError``, as a full disk does). ``check``: run SQLite's quick integrity check at open.
    """

    durable = True

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, synchronous: str = "NORMAL",
                 max_size: Optional[int] = None, check: bool = True) -> None:
        super().__init__()
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, "
                             f"got {synchronous!r}")
        if max_size is not None and max_size < 16 * _PAGE_SIZE:
            raise ValueError(f"max_size must be at least {16 * _PAGE_SIZE} bytes, got {max_size}")
        self.path = os.fspath(path)
        self.client_id: Optional[str] = None  # the client the file belongs to, once known
        self._keys: Dict[Any, int] = {}  # record -> its row
        self._next_key = 1
        self._new: Dict[int, Any] = {}  # rows to insert at the next commit
        self._changed: Dict[int, Any] = {}  # rows whose packet id / state to update
        self._deleted: List[int] = []  # rows to delete
        self._incoming_changes: Dict[int, bool] = {}  # packet id -> present
        self._stored: List[StoredPublish] = []
        self._lock_fd: Optional[int] = None
        self._db: Optional[sqlite3.Connection] = None
        self._take_lock()
        try:
            self._db = self._open(synchronous.upper(), max_size, check)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening

    def _take_lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        lock_path = self.path + "-lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open the lock file {lock_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(f"the session store {self.path} is in use by another live client "
                             f"(process {holder}): one store serves one client at a time") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._lock_fd = fd

    def _open(self, synchronous: str, max_size: Optional[int], check: bool) -> sqlite3.Connection:
        path = self.path
        try:
            # Autocommit mode: transactions are begun and committed here, explicitly. The
            # session and the client call the store under the connection's lock only, from
            # either thread.
            db = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the session store {path}: {exc}") from exc
        try:
            self._prepare(db, synchronous, max_size, check)
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" in str(exc):
                raise StoreError(f"the session store {path} is locked by another process: one "
                                 f"store serves one client at a time") from exc
            raise StoreError(f"cannot use the session store {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(f"{path} is not a readable mqttfast session store ({exc}): a damaged "
                             f"or foreign file; move it away to start an empty store") from exc
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection, synchronous: str, max_size: Optional[int],
                 check: bool) -> None:
        path = self.path
        # Exclusive: the lock taken by the first write below is held until close, and WAL needs no
        # shared-memory file.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if app_id == 0 and version == 0 and not tables:
            db.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        elif app_id != APPLICATION_ID:
            raise StoreError(f"{path} is a SQLite database of another program (application id "
                             f"{app_id:#x}), not an mqttfast session store: give another path")
        elif version > SCHEMA_VERSION:
            raise StoreError(f"{path} was written by a newer mqttfast (store schema {version}); "
                             f"this version reads schema {SCHEMA_VERSION}: upgrade mqttfast")
        elif version < 1 or not {"meta", "outgoing", "incoming"} <= tables:
            raise StoreError(f"{path} is a damaged mqttfast session store (schema {version}, "
                             f"tables {sorted(tables)})")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{path}: SQLite refused WAL mode (journal_mode={mode})")
        db.execute(f"PRAGMA synchronous={synchronous}")
        if max_size is not None:
            db.execute(f"PRAGMA max_page_count={max_size // _PAGE_SIZE}")
        db.execute("BEGIN IMMEDIATE")  # takes the exclusive lock, held from now on
        try:
            if not tables:
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif check:
                result = [row[0] for row in db.execute("PRAGMA quick_check")]
                if result != ["ok"]:
                    raise StoreError(f"{path} is a damaged mqttfast session store: "
                                     f"{'; '.join(result[:3])}")
            row = db.execute("SELECT value FROM meta WHERE name='client_id'").fetchone()
            self.client_id = row[0] if row else None
            self._stored = list(self._read_outgoing(db))
            self.incoming.update(row[0] for row in db.execute("SELECT packet_id FROM incoming"))
            max_key = db.execute("SELECT max(key) FROM outgoing").fetchone()[0]
            self._next_key = (max_key or 0) + 1
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _read_outgoing(self, db: sqlite3.Connection) -> Iterator[StoredPublish]:
        pids = set()
        for key, pid, state, qos, retain, topic, payload, props in db.execute(
                "SELECT key, packet_id, state, qos, retain, topic, payload, properties "
                "FROM outgoing ORDER BY key"):
            if (state, qos) not in _VALID or not isinstance(topic, str) or \
                    not isinstance(payload, bytes) or (pid == 0) != (state == PublishState.QUEUED) \
                    or not 0 <= pid <= 65535 or (pid and pid in pids):
                raise StoreError(f"{self.path} is a damaged mqttfast session store: outgoing row "
                                 f"{key} (packet id {pid}, state {state}, qos {qos})")
            pids.add(pid)
            properties = None
            if props is not None:
                properties, _ = decode_properties(props, 0, len(props), PacketType.PUBLISH)
            yield StoredPublish(key, pid, PublishState(state), qos, bool(retain), topic, payload,
                                properties)

    # ------------------------------------------------------------------ the session's side

    def attach(self, client_id: str, clean_session: bool = False) -> List[StoredPublish]:
        """Bind the file to ``client_id`` (or check that it belongs to it) and return the
        publishes it holds, in the order they were made. The session calls this once, and then
        ``adopt`` for each record it makes from them."""
        if self._db is None:
            raise StoreError(f"the session store {self.path} is closed")
        if clean_session:
            raise ValueError("a durable store keeps a session across processes: it needs "
                             "clean_session=False")
        if not client_id:
            raise ValueError("a durable store needs a client_id: the file belongs to one client")
        if self.client_id is None:
            self._write(lambda db: db.execute(
                "INSERT INTO meta (name, value) VALUES ('client_id', ?)", (client_id,)))
            self.client_id = client_id
        elif self.client_id != client_id:
            raise StoreError(f"the session store {self.path} holds the session of client "
                             f"{self.client_id!r}, not {client_id!r}: use one file per client id")
        stored, self._stored = self._stored, []
        return stored

    def adopt(self, record: Any, key: int) -> None:
        """``record`` is the session's object for the stored row ``key``."""
        self._keys[record] = key

    def saved(self, record: Any) -> None:
        key = self._keys.get(record)
        if key is None:
            key = self._keys[record] = self._next_key
            self._next_key = key + 1
            self._new[key] = record
        elif key not in self._new:
            self._changed[key] = record

    def removed(self, record: Any) -> None:
        key = self._keys.pop(record, None)
        if key is None:
            return  # not a stored publish (QoS 0)
        if self._new.pop(key, None) is None:
            self._changed.pop(key, None)
            self._deleted.append(key)

    def incoming_changed(self, packet_id: int, present: bool) -> None:
        self._incoming_changes[packet_id] = present

    @property
    def uncommitted(self) -> int:
        """Changes made since the last commit (rows to insert, update or delete)."""
        return (len(self._new) + len(self._changed) + len(self._deleted)
                + len(self._incoming_changes))

    def commit(self) -> None:
        """Write every change since the last commit in one transaction. On failure (a full disk,
        an I/O error) nothing is lost: the changes stay here for the next commit, and
        ``StoreError`` says what happened."""
        if not (self._new or self._changed or self._deleted or self._incoming_changes):
            return
        self._write(self._write_changes)
        self._new.clear()
        self._changed.clear()
        self._deleted.clear()
        self._incoming_changes.clear()

    def _write_changes(self, db: sqlite3.Connection) -> None:
        if self._deleted:
            db.executemany("DELETE FROM outgoing WHERE key=?", [(k,) for k in self._deleted])
        if self._new:
            db.executemany("INSERT INTO outgoing VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
                (key, r.packet_id, int(r.state), r.qos, int(r.retain), r.topic,
                 r.payload if r.payload.__class__ is bytes else bytes(r.payload),
                 None if not r.properties else encode_properties(r.properties,
                                                                 PacketType.PUBLISH))
                for key, r in self._new.items()])
        if self._changed:
            db.executemany("UPDATE outgoing SET packet_id=?, state=? WHERE key=?", [
                (r.packet_id, int(r.state), key) for key, r in self._changed.items()])
        if self._incoming_changes:
            changes = self._incoming_changes.items()
            db.executemany("DELETE FROM incoming WHERE packet_id=?",
                           [(pid,) for pid, present in changes if not present])
            db.executemany("INSERT OR IGNORE INTO incoming VALUES (?)",
                           [(pid,) for pid, present in changes if present])

    def _write(self, change: Any) -> None:
        db = self._db
        if db is None:
            raise StoreError(f"the session store {self.path} is closed: "
                             f"{self.uncommitted} changes not written")
        try:
            db.execute("BEGIN")
            change(db)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise StoreError(f"writing the session store {self.path} failed: {exc}; "
                             f"{self.uncommitted} changes are kept in memory and retried with "
                             f"the next commit") from exc

    def clear(self) -> None:
        """Forget every publish and incoming id, in memory and in the file."""
        super().clear()
        self._keys.clear()
        self._new.clear()
        self._changed.clear()
        self._deleted.clear()
        self._incoming_changes.clear()
        self._stored = []
        self._write(lambda db: (db.execute("DELETE FROM outgoing"),
                                db.execute("DELETE FROM incoming")))

    # ------------------------------------------------------------------ closing

    @property
    def closed(self) -> bool:
        return self._db is None

    def close(self) -> None:
        """Commit what is pending, close the file and release the lock (idempotent). Raises
        ``StoreError`` if the last commit fails (the file is closed all the same)."""
        db, self._db = self._db, None
        error: Optional[StoreError] = None
        if db is not None:
            if self.uncommitted:
                self._db = db
                try:
                    self.commit()
                except StoreError as exc:
                    error = exc
                self._db = None
            db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        if error is not None:
            raise error

    def __enter__(self) -> "SQLiteStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._db is None else f"client {self.client_id!r}"
        return (f"<SQLiteStore {self.path!r} {state}: {len(self.outgoing)} in flight, "
                f"{len(self.pending)} queued>")


__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteStore", "StoredPublish"]
