"""A durable session store in one SQLite file and its log: unacknowledged QoS 1/2 publishes (in
flight and queued) and the ids of incoming QoS 2 messages not yet released survive a crash of the
process.

    store = SQLiteStore("state.db")
    client = Client("sensor-1", clean_session=False, store=store)

What is durable when (the session calls ``commit()``; the Client calls it as below):

- ``Client.publish(qos >= 1)`` commits before it returns: once it has returned, the message is in
  the store's files. The commit happens under the connection's lock, before the loop can take
  the message's bytes, so nothing leaves the process that is not written.
- ``Client.publish_many(qos >= 1)`` commits once for the whole batch, before it returns.
- What the broker's packets change (acknowledgements completing publishes, PUBREC moving QoS 2
  to PUBREL, incoming QoS 2 ids, queued publishes starting in the window they free) is committed
  once per ``Session.receive`` call, i.e. per chunk the loop read, before the messages reach the
  application and before the answers it queued (PUBREC, PUBREL, the next publishes) are sent.
- Timer-driven changes (a publish failed after ``max_retries``) are committed with the next batch.

How a commit is written: a SQLite transaction costs 10-20 us even without fsync, more than a
whole in-memory publish, so a commit appends its changes as one checksummed frame to a redo log,
``<path>-log``, with one ``write`` (the kernel has it when the call returns: that survives a
crash of the process). The log is folded into the database in one transaction when it reaches
``log_size`` bytes (most publishes are acknowledged by then and never reach the database) and at
``close()``; opening the store replays what the database does not hold yet. A frame cut short by
a crash is ignored, as SQLite's WAL ignores a torn frame: it was not committed. With
``synchronous="FULL"`` or ``"EXTRA"`` every commit is a SQLite transaction with fsync instead.

A commit that fails (full disk, I/O error) keeps its changes for the next one. In ``publish`` it
raises ``StoreError``; in ``receive`` it is logged and the session goes on (raising there would
drop messages whose QoS 2 ids are already recorded).

A crash between a change and its commit can only make the new process re-send something the
broker already has (a duplicate, which QoS 1 allows), never lose a message that ``publish``
returned. With the default ``synchronous="NORMAL"`` neither the log nor the database is fsynced:
that survives a crash of the process, not of the machine; ``synchronous="FULL"`` also survives
power loss, at the cost of an fsync per commit. QoS 0 messages are never stored.

One live client per file: the store holds an ``flock`` on ``<path>-lock`` and SQLite's exclusive
locking mode for as long as it is open. The file records its client id and schema version, and
anything unexpected (another program's database, a newer schema, a damaged file or a log of
another store, a full disk) raises ``StoreError`` at the call rather than dropping state.
"""
from __future__ import annotations

import os
import sqlite3
import struct
import zlib
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

from .constants import PacketType
from .errors import StoreError
from .events import PublishState
from .properties import decode_properties, encode_properties
from .store import MemoryStore

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's exclusive lock alone guards the file
    fcntl = None  # type: ignore[assignment]

# PRAGMA user_version of the files this module writes. 2: the redo log (meta store_id and
# log_applied); a schema 1 file is upgraded at open. A reader of schema 1 would ignore the log.
SCHEMA_VERSION = 2
APPLICATION_ID = 0x6D716673  # PRAGMA application_id: "mqfs", marks a file as an mqttfast store
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_PAGE_SIZE = 1024  # small rows: a commit of one publish writes fewer bytes (~40% faster)
LOG_SIZE = 4 << 20  # default log_size: bytes of log before it is folded into the database

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

# The log: a header, then frames. Header: magic, the store id (meta store_id) and a generation;
# the database's meta log_applied is the last generation folded into it, so a log left behind by
# a crash between a fold and the log's reset is recognised as already applied. Frame: length and
# CRC-32 of the body, then the body: operations, each opened by its code.
_LOG_MAGIC = b"mqfslog\x01"
_HEADER = struct.Struct("<8sQQ")  # magic, store id, generation
_FRAME = struct.Struct("<II")  # body length, crc32(body)
_PUT = struct.Struct("<BQHBBBHII")  # op, key, packet id, state, qos, retain, len(topic),
#                                     len(payload), len(properties) (_NO_PROPS: none)
_SET = struct.Struct("<BQHB")  # op, key, packet id, state
_DEL = struct.Struct("<BQ")  # op, key
_INC = struct.Struct("<BHB")  # op, incoming packet id, present
_OP_PUT, _OP_SET, _OP_DEL, _OP_INC = 1, 2, 3, 4
_NO_PROPS = 0xFFFFFFFF
_Row = List[Any]  # packet_id, state, qos, retain, topic, payload, properties (encoded or None)


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
    SQLite file ``path`` and its log ``<path>-log``: see the module docstring for what is durable
    when.

    ``synchronous``: SQLite's setting ("NORMAL" survives a process crash, "FULL" power loss too,
    with an fsync per commit). ``max_size``: refuse to grow the database beyond this many bytes
    (a commit over it raises ``StoreError``, as a full disk does; the log is then folded at a
    quarter of it). ``check``: run SQLite's quick integrity check at open. ``log_size``: fold the
    log into the database when it reaches this many bytes.
    """

    durable = True

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, synchronous: str = "NORMAL",
                 max_size: Optional[int] = None, check: bool = True,
                 log_size: int = LOG_SIZE) -> None:
        super().__init__()
        synchronous = synchronous.upper()
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, "
                             f"got {synchronous!r}")
        if max_size is not None and max_size < 16 * _PAGE_SIZE:
            raise ValueError(f"max_size must be at least {16 * _PAGE_SIZE} bytes, got {max_size}")
        if log_size < 4096:
            raise ValueError(f"log_size must be at least 4096 bytes, got {log_size}")
        self.path = os.fspath(path)
        self.log_path = self.path + "-log"
        self.client_id: Optional[str] = None  # the client the file belongs to, once known
        self._keys: Dict[Any, int] = {}  # record -> its row
        self._next_key = 1
        # Two levels of changes. Against the database (written by a fold):
        self._new: Dict[int, Any] = {}  # rows to insert
        self._changed: Dict[int, Any] = {}  # rows whose packet id / state to update
        self._deleted: List[int] = []  # rows to delete
        self._incoming_changes: Dict[int, bool] = {}  # packet id -> present
        # Against the database plus the log (written by the next commit's frame):
        self._put: Dict[int, Any] = {}  # rows in neither
        self._set: Dict[int, Any] = {}
        self._del: List[int] = []
        self._inc: Dict[int, bool] = {}
        self._stored: List[StoredPublish] = []
        # A FULL/EXTRA store commits to SQLite each time: the log would need its own fsync.
        self._use_log = synchronous in ("OFF", "NORMAL")
        self._log_limit = log_size if max_size is None else min(log_size, max_size // 4)
        self._log_fd: Optional[int] = None
        self._log_end: Optional[int] = None  # bytes in the log; None: to be reset by a fold
        self._store_id = 0
        self._generation = 0  # the log's; the database has folded every earlier one
        self._lock_fd: Optional[int] = None
        self._db: Optional[sqlite3.Connection] = None
        self._take_lock()
        try:
            self._db = self._open(synchronous, max_size, check)
            self._reset_log()
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
        except OSError as exc:
            db.close()
            raise StoreError(f"cannot use the log of the session store {self.log_path}: "
                             f"{exc}") from exc
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
        # Only now, with the database known to be ours (or new), the log beside it.
        self._log_fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
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
            elif check:
                result = [row[0] for row in db.execute("PRAGMA quick_check")]
                if result != ["ok"]:
                    raise StoreError(f"{path} is a damaged mqttfast session store: "
                                     f"{'; '.join(result[:3])}")
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
            self.client_id = meta.get("client_id")
            if version < 2:  # new, or schema 1 (no log yet): give it an id to bind its log to
                self._store_id = int.from_bytes(os.urandom(8), "little")
                applied = 0
                db.executemany("INSERT INTO meta (name, value) VALUES (?, ?)",
                               [("store_id", str(self._store_id)), ("log_applied", "0")])
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                self._discard_log()  # a leftover beside a new database belongs to no store
            else:
                try:
                    self._store_id = int(meta["store_id"])
                    applied = int(meta["log_applied"])
                except (KeyError, ValueError):
                    raise StoreError(f"{path} is a damaged mqttfast session store: meta "
                                     f"{sorted(meta)}") from None
                self._replay(db, applied)
            # What the log held is in the database now; the log restarts after it.
            self._generation = max(applied, self._generation)
            db.execute("UPDATE meta SET value=? WHERE name='log_applied'",
                       (str(self._generation),))
            self._stored = list(self._read_outgoing(db))
            self.incoming.update(row[0] for row in db.execute("SELECT packet_id FROM incoming"))
            max_key = db.execute("SELECT max(key) FROM outgoing").fetchone()[0]
            self._next_key = (max_key or 0) + 1
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _discard_log(self) -> None:
        assert self._log_fd is not None
        os.ftruncate(self._log_fd, 0)

    def _replay(self, db: sqlite3.Connection, applied: int) -> None:
        """Apply the commits in the log that the database does not have yet (in the open
        transaction); the caller then resets the log."""
        assert self._log_fd is not None
        size = os.fstat(self._log_fd).st_size
        data = os.pread(self._log_fd, size, 0) if size else b""
        if len(data) < _HEADER.size:
            return  # empty, or a header cut short by a crash: nothing was appended after it
        magic, store_id, generation = _HEADER.unpack_from(data)
        if magic != _LOG_MAGIC or store_id != self._store_id:
            raise StoreError(f"{self.log_path} is not the log of the session store {self.path}"
                             f" (another store's, or a foreign file): move it away only if "
                             f"{self.path} was replaced on purpose")
        self._generation = generation
        if generation <= applied:
            return  # folded before a crash could reset it
        rows: Dict[int, Optional[_Row]] = {}  # the rows the log touches, as it leaves them
        incoming: Dict[int, bool] = {}
        for op, key, a in self._log_ops(data):
            if op == _OP_INC:
                incoming[key] = a
            elif op == _OP_PUT:
                rows[key] = a
            else:
                row = rows[key] if key in rows else self._db_row(db, key)
                if row is None:
                    raise StoreError(f"{self.log_path} is damaged: it changes outgoing row {key}"
                                     f", which does not exist")
                if op == _OP_DEL:
                    rows[key] = None
                else:
                    row[0], row[1] = a
                    rows[key] = row
        for key, row in rows.items():
            db.execute("DELETE FROM outgoing WHERE key=?", (key,))
            if row is not None:
                db.execute("INSERT INTO outgoing VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (key, *row))
        for pid, present in incoming.items():
            db.execute("INSERT OR IGNORE INTO incoming VALUES (?)" if present else
                       "DELETE FROM incoming WHERE packet_id=?", (pid,))

    @staticmethod
    def _db_row(db: sqlite3.Connection, key: int) -> Optional[_Row]:
        row = db.execute("SELECT packet_id, state, qos, retain, topic, payload, properties "
                         "FROM outgoing WHERE key=?", (key,)).fetchone()
        return None if row is None else list(row)

    def _log_ops(self, data: bytes) -> Iterator[Tuple[int, int, Any]]:
        """The operations of the whole frames in ``data`` (after the header), in order. The
        first frame that is cut short or fails its checksum ends the log: a crash in the middle
        of its write, so a commit that never returned."""
        try:
            yield from self._parse_frames(data)
        except (struct.error, UnicodeDecodeError) as exc:
            raise StoreError(f"{self.log_path} is damaged: a frame with a valid checksum does "
                             f"not parse ({exc})") from None

    @staticmethod
    def _parse_frames(data: bytes) -> Iterator[Tuple[int, int, Any]]:
        pos, end = _HEADER.size, len(data)
        while pos + _FRAME.size <= end:
            length, crc = _FRAME.unpack_from(data, pos)
            body = pos + _FRAME.size
            if body + length > end or zlib.crc32(data[body:body + length]) != crc:
                return
            pos, stop = body, body + length
            while pos < stop:
                op = data[pos]
                if op == _OP_PUT:
                    _, key, pid, state, qos, retain, tlen, plen, xlen = _PUT.unpack_from(data, pos)
                    pos += _PUT.size
                    topic = data[pos:pos + tlen].decode("utf-8")
                    pos += tlen
                    payload = data[pos:pos + plen]
                    pos += plen
                    props = None
                    if xlen != _NO_PROPS:
                        props = data[pos:pos + xlen]
                        pos += xlen
                    yield op, key, [pid, state, qos, retain, topic, payload, props]
                elif op == _OP_SET:
                    _, key, pid, state = _SET.unpack_from(data, pos)
                    pos += _SET.size
                    yield op, key, (pid, state)
                elif op == _OP_DEL:
                    _, key = _DEL.unpack_from(data, pos)
                    pos += _DEL.size
                    yield op, key, None
                elif op == _OP_INC:
                    _, pid, present = _INC.unpack_from(data, pos)
                    pos += _INC.size
                    yield op, pid, bool(present)
                else:
                    raise struct.error(f"unknown operation {op}")
            if pos != stop:
                raise struct.error("operations overrun their frame")

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
            self._put[key] = record
        else:
            if key not in self._new:
                self._changed[key] = record
            if key not in self._put:
                self._set[key] = record

    def removed(self, record: Any) -> None:
        key = self._keys.pop(record, None)
        if key is None:
            return  # not a stored publish (QoS 0)
        if self._new.pop(key, None) is None:
            self._changed.pop(key, None)
            self._deleted.append(key)
        if self._put.pop(key, None) is None:
            self._set.pop(key, None)
            self._del.append(key)

    def incoming_changed(self, packet_id: int, present: bool) -> None:
        self._incoming_changes[packet_id] = present
        self._inc[packet_id] = present

    @property
    def uncommitted(self) -> int:
        """Changes made since the last commit (rows to insert, update or delete)."""
        return len(self._put) + len(self._set) + len(self._del) + len(self._inc)

    def commit(self) -> None:
        """Write every change since the last commit: one frame appended to the log (or, when the
        log is full or ``synchronous`` is FULL, one transaction folding everything into the
        database). On failure (a full disk, an I/O error) nothing is lost: the changes stay here
        for the next commit, and ``StoreError`` says what happened."""
        if not (self._put or self._set or self._del or self._inc):
            return
        end = self._log_end
        if end is None or not self._use_log:
            self._fold()
            return
        frame = self._frame()
        if end + len(frame) > self._log_limit:
            self._fold()
            return
        fd = self._log_fd
        assert fd is not None
        try:
            written = os.write(fd, frame)
        except OSError as exc:
            written, error = 0, exc
        else:
            if written == len(frame):
                self._log_end = end + written
                self._put.clear()
                self._set.clear()
                self._del.clear()
                self._inc.clear()
                return
            error = OSError(f"short write ({written} of {len(frame)} bytes)")
        if written:  # never leave part of a frame for a later one to follow
            try:
                os.ftruncate(fd, end)
            except OSError:
                self._log_end = None  # not appended to again before a fold has reset it
        raise StoreError(f"writing the session store {self.path} failed (its log "
                         f"{self.log_path}: {error}); {self.uncommitted} changes are kept in "
                         f"memory and retried with the next commit") from error

    def _frame(self) -> bytes:
        parts: List[Any] = [b""]
        add = parts.append
        put, last_topic, last_encoded = _PUT.pack, None, b""
        for key, r in self._put.items():
            topic = r.topic
            if topic is not last_topic:
                last_topic = topic
                last_encoded = topic.encode("utf-8") if topic.__class__ is str else bytes(topic)
            payload, props = r.payload, r.properties
            if props:
                encoded = encode_properties(props, PacketType.PUBLISH)
                add(put(_OP_PUT, key, r.packet_id, r.state, r.qos, r.retain, len(last_encoded),
                        len(payload), len(encoded)))
                add(last_encoded)
                add(payload)
                add(encoded)
            else:
                add(put(_OP_PUT, key, r.packet_id, r.state, r.qos, r.retain, len(last_encoded),
                        len(payload), _NO_PROPS))
                add(last_encoded)
                add(payload)
        for key, r in self._set.items():
            add(_SET.pack(_OP_SET, key, r.packet_id, r.state))
        for key in self._del:
            add(_DEL.pack(_OP_DEL, key))
        for pid, present in self._inc.items():
            add(_INC.pack(_OP_INC, pid, present))
        body = b"".join(parts)
        return _FRAME.pack(len(body), zlib.crc32(body)) + body

    def _fold(self) -> None:
        """Write every change into the database in one transaction and empty the log (commits
        do this by themselves when the log is full, and ``close`` does)."""
        self._write(self._write_changes)
        self._clear_changes()
        self._reset_log()

    def _clear_changes(self) -> None:
        self._new.clear()
        self._changed.clear()
        self._deleted.clear()
        self._incoming_changes.clear()
        self._put.clear()
        self._set.clear()
        self._del.clear()
        self._inc.clear()

    def _reset_log(self) -> None:
        """Start the log anew after a fold (the database has every generation before it)."""
        fd = self._log_fd
        if fd is None:
            return
        if self._log_end == _HEADER.size:
            return  # nothing appended since the last reset
        self._log_end = None
        self._generation += 1
        try:
            os.ftruncate(fd, 0)  # first: a crash before the header leaves an empty log
            header = _HEADER.pack(_LOG_MAGIC, self._store_id, self._generation)
            if os.write(fd, header) != len(header):
                raise OSError("short write")
        except OSError:
            return  # commits fold until a reset succeeds; the database holds everything
        self._log_end = len(header)

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
        if self._log_end != _HEADER.size:  # the log holds commits: this generation is folded
            db.execute("UPDATE meta SET value=? WHERE name='log_applied'",
                       (str(self._generation),))

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
        self._clear_changes()
        self._stored = []

        def forget(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM outgoing")
            db.execute("DELETE FROM incoming")
            self._write_changes(db)  # nothing left to write but log_applied

        self._write(forget)
        self._reset_log()

    # ------------------------------------------------------------------ closing

    @property
    def closed(self) -> bool:
        return self._db is None

    def close(self) -> None:
        """Fold what is committed or pending into the database, close the files and release the
        lock (idempotent). Raises ``StoreError`` if that last write fails (the files are closed
        all the same; what the log holds is replayed at the next open)."""
        db = self._db
        error: Optional[StoreError] = None
        if db is not None:
            if self.uncommitted or (self._log_end or 0) > _HEADER.size or self._log_end is None:
                try:
                    self._fold()
                except StoreError as exc:
                    error = exc
            self._db = None
            db.close()
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
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


__all__ = ["APPLICATION_ID", "LOG_SIZE", "SCHEMA_VERSION", "SQLiteStore", "StoredPublish"]
