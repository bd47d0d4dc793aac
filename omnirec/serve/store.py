"""The feedback event store: SQLite in WAL mode by default (embedded, nothing to start), PostgreSQL through a
URL when several server processes share it. An event is acknowledged only once its transaction is
committed (SQLite: synchronous=FULL, so a crash or a power cut after the answer loses nothing).

An idempotency key names one event: sending it again is harmless, sending the same key with a different
event is refused (IdempotencyConflict). A deletion is final: the user's events and their keys are
removed, and what remains is a tombstone holding a salted SHA-256 of the id, never the id, so events for
that user are refused from then on (UserDeleted) while the store holds no copy of the id (SQLite zeroes
the freed bytes and empties its write-ahead log; PostgreSQL is vacuumed, best effort). A write that could
not be stored (a full disk, a database that stays unreachable) raises StoreUnavailable, having stored
nothing; a lost PostgreSQL connection (a restarted server) is reopened and the call run once more, which
never stores an event twice (see PostgresStore).

>>> store = open_store(":memory:")
>>> store.add([Event("u1", "i9", "click", key="k1"), Event("u1", "i9", "click", key="k1")])
[True, False]
>>> [e.item for e in store.events_of("u1")]
['i9']
>>> store.add([Event("u1", "i8", "click", key="k1")])
Traceback (most recent call last):
omnirec.serve.store.IdempotencyConflict: idempotency key 'k1' was already used for a different event
>>> store.delete_user("u1"), store.is_deleted("u1"), store.deleted_among(["u1", "u2"]), store.deleted_count()
(1, True, {'u1'}, 1)
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

EVENT_TYPES = ("view", "click", "purchase", "rating", "skip")
POSITIVE = ("view", "click", "purchase", "rating")  # events that extend a user's history; a skip does not
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One feedback event. `time` is Unix seconds (set when stored if 0); `key` makes a retry harmless."""

    user: str
    item: str
    type: str = "click"
    value: float | None = None
    time: int = 0
    key: str | None = None

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"event type {self.type!r}; expected one of {', '.join(EVENT_TYPES)}")
        if not self.user or not self.item:
            raise ValueError("an event needs a user and an item")


class UserDeleted(Exception):
    """An event names a user who was deleted (the HTTP layer answers 410)."""

    def __init__(self, user: str):
        super().__init__(f"user '{user}' was deleted; events for a deleted user are refused")
        self.user = user


class IdempotencyConflict(Exception):
    """An idempotency key was already stored with a different event (the HTTP layer answers 409)."""

    def __init__(self, key: str):
        super().__init__(f"idempotency key '{key}' was already used for a different event")
        self.key = key


class StoreUnavailable(Exception):
    """A write could not be stored and nothing of it was (the HTTP layer answers 503); the message says why.
    PostgreSQL reads raise it too while the database is unreachable; SQLite reads keep working on a full disk."""


class EventStore(Protocol):
    """What the server needs from a store."""

    def add(self, events: list[Event]) -> list[bool]:
        """Store the events in one transaction; per event, False when its key was already stored with the
        same event. Raises IdempotencyConflict, UserDeleted or StoreUnavailable, storing none of them."""

    def events_of(self, user: str) -> list[Event]:
        """The user's stored events, oldest first."""

    def delete_user(self, user: str) -> int:
        """Remove the user's events, leave a tombstone; returns how many events were removed."""

    def is_deleted(self, user: str) -> bool:
        """Whether the user was deleted (checked on every request, so every server process honours it)."""

    def deleted_among(self, users: Iterable[str]) -> set[str]:
        """Which of `users` were deleted (the store keeps only hashes, so it cannot list them)."""

    def deleted_count(self) -> int:
        """How many users were deleted."""

    def all_events(self) -> Iterator[Event]:
        """Every stored event, in storage order."""

    def add_item(self, item: str, text: str, title: str | None = None) -> bool:
        """Keep an item added while serving; False where it was kept before."""

    def added_items(self) -> list[tuple[str, str, str | None]]:
        """Every item added while serving, (item, text, title), oldest first."""

    def get_setting(self, key: str) -> str | None:
        """A shared setting (the bundle every server process should serve)."""

    def set_setting(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (seq {seq} PRIMARY KEY {auto}, key TEXT UNIQUE, user_id TEXT NOT NULL, "
    "item_id TEXT NOT NULL, type TEXT NOT NULL, value DOUBLE PRECISION, ts BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, seq)",
    "CREATE TABLE IF NOT EXISTS tombstones (user_hash TEXT PRIMARY KEY, ts BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS items (seq {seq} PRIMARY KEY {auto}, item_id TEXT UNIQUE NOT NULL, text TEXT NOT NULL, "
    "title TEXT, ts BIGINT NOT NULL)",
)
SALT = "tombstone_salt"  # the settings key of the store's random salt, made when the store is first opened
UPSERT_SETTING = "INSERT INTO settings (key, value) VALUES ({p}, {p}) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
INSERT = "INSERT INTO events (key, user_id, item_id, type, value, ts) VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (key) DO NOTHING"
TOMBSTONE = "INSERT INTO tombstones (user_hash, ts) VALUES ({p}, {p}) ON CONFLICT (user_hash) DO UPDATE SET ts = excluded.ts"
SELECT = "SELECT user_id, item_id, type, value, ts, key FROM events"


def _row(r: tuple) -> Event:
    return Event(r[0], r[1], r[2], r[3], int(r[4]), r[5])


class _Tables:
    """The SQL both stores share. A subclass supplies the writing connection `_db`, the placeholder `_p`, the
    query that tells whether a table exists, `_write`, which runs a function in one transaction under the
    process's write lock, and `_fetch`, which runs one read-only statement on a connection of its own, so
    that a read (a request's history) never waits for a write's commit to reach the disk. Both turn the
    backend's failures into StoreUnavailable."""

    _db: Any
    _p = "?"
    _table_exists = _seq = _auto = ""
    _salt = b""

    def _x(self, sql: str, params: tuple = ()) -> Any:
        return self._db.execute(sql.format(p=self._p), params)

    def _write(self, work: Callable[[], T]) -> T:
        raise NotImplementedError

    def _fetch(self, sql: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def _lock_users(self, hashes: list[str], exclusive: bool) -> None:
        """Serialise a deletion with the writes for the same user (SQLite's write lock already does)."""

    def _purge(self) -> None:
        """Leave no copy of deleted rows where the backend can (after a deletion has committed)."""

    def _hash(self, user: str) -> str:
        return hashlib.sha256(self._salt + user.encode()).hexdigest()

    def _open(self) -> None:
        """Create the tables and the salt (once), and turn the clear ids of an older store into tombstones."""
        def work() -> int:
            self._lock_users(["schema"], exclusive=True)  # several processes may open a new store at once
            for statement in SCHEMA:
                self._db.execute(statement.format(seq=self._seq, auto=self._auto))
            self._x("INSERT INTO settings (key, value) VALUES ({p}, {p}) ON CONFLICT (key) DO NOTHING",
                    (SALT, secrets.token_hex(16)))
            self._salt = bytes.fromhex(self._x("SELECT value FROM settings WHERE key = {p}", (SALT,)).fetchone()[0])
            if self._x(self._table_exists, ("deleted_users",)).fetchone() is None:
                return 0
            old = [r[0] for r in self._x("SELECT user_id FROM deleted_users").fetchall()]
            for user in old:
                self._x(TOMBSTONE, (self._hash(user), int(time.time())))
            self._x("DROP TABLE deleted_users")
            return len(old)
        if self._write(work):
            self._purge()

    def add(self, events: list[Event]) -> list[bool]:
        events, now = list(events), int(time.time())
        return self._write(lambda: self._add(events, now)) if events else []

    def _add(self, events: list[Event], now: int) -> list[bool]:
        hashes = {e.user: self._hash(e.user) for e in events}
        wanted = sorted(set(hashes.values()))
        self._lock_users(wanted, exclusive=False)
        dead: set[str] = set()
        for start in range(0, len(wanted), 500):  # under every backend's limit on parameters
            some = wanted[start:start + 500]
            marks = ", ".join([self._p] * len(some))
            dead |= {r[0] for r in self._db.execute(f"SELECT user_hash FROM tombstones WHERE user_hash IN ({marks})", some)}
        for user, hashed in hashes.items():
            if hashed in dead:
                raise UserDeleted(user)
        return [self._insert(e, now) for e in events]

    def _insert(self, e: Event, now: int) -> bool:
        row = (e.key, e.user, e.item, e.type, e.value, e.time or now)
        if self._x(INSERT, row).rowcount == 1:
            return True
        stored = self._x("SELECT user_id, item_id, type, value, ts FROM events WHERE key = {p}", (e.key,)).fetchone()
        if tuple(stored[:4]) != row[1:5] or (e.time and stored[4] != e.time):
            raise IdempotencyConflict(str(e.key))
        return False

    def events_of(self, user: str) -> list[Event]:
        return [_row(r) for r in self._fetch(f"{SELECT} WHERE user_id = {{p}} ORDER BY seq", (user,))]

    def delete_user(self, user: str) -> int:
        hashed = self._hash(user)

        def work() -> int:
            self._lock_users([hashed], exclusive=True)
            removed = self._x("DELETE FROM events WHERE user_id = {p}", (user,)).rowcount
            self._x(TOMBSTONE, (hashed, int(time.time())))
            return removed
        removed = self._write(work)
        self._purge()
        return removed

    def is_deleted(self, user: str) -> bool:
        return bool(self._fetch("SELECT 1 FROM tombstones WHERE user_hash = {p}", (self._hash(user),)))

    def deleted_among(self, users: Iterable[str]) -> set[str]:
        dead = {r[0] for r in self._fetch("SELECT user_hash FROM tombstones")}
        return {u for u in users if self._hash(u) in dead} if dead else set()

    def deleted_count(self) -> int:
        return int(self._fetch("SELECT count(*) FROM tombstones")[0][0])

    def get_setting(self, key: str) -> str | None:
        rows = self._fetch("SELECT value FROM settings WHERE key = {p}", (key,))
        return rows[0][0] if rows else None

    def set_setting(self, key: str, value: str) -> None:
        self._write(lambda: self._x(UPSERT_SETTING, (key, value)))

    def all_events(self) -> Iterator[Event]:
        return (_row(r) for r in self._fetch(f"{SELECT} ORDER BY seq"))

    def add_item(self, item: str, text: str, title: str | None = None) -> bool:
        """Keep a new catalogue item (its text and title); False where it was kept before (then unchanged)."""
        sql = ("INSERT INTO items (item_id, text, title, ts) VALUES ({p}, {p}, {p}, {p}) "
               "ON CONFLICT (item_id) DO NOTHING")
        return bool(self._write(lambda: self._x(sql, (item, text, title, int(time.time()))).rowcount))

    def added_items(self) -> list[tuple[str, str, str | None]]:
        """Every item added while serving, (item, text, title), in the order they came."""
        return [(r[0], r[1], r[2]) for r in self._fetch("SELECT item_id, text, title FROM items ORDER BY seq")]


def _sqlite_failure(error: sqlite3.Error) -> str | None:
    """Why a SQLite write could not be stored, for the failures an operator can fix; None for a bug."""
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF  # the primary result code of an extended one
    if code == sqlite3.SQLITE_FULL:
        return "the event store's disk is full"
    if code == sqlite3.SQLITE_IOERR:
        return "the event store could not write to its disk (I/O error)"
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return "the event store stayed locked by another process"
    return None


class SQLiteStore(_Tables):
    """One SQLite file in WAL mode, with two connections, each under its own lock: one writes (writes are
    serialised anyway, and BEGIN IMMEDIATE serialises them across processes too, so the tombstone check needs
    no lock of its own), one reads the last committed state meanwhile (an in-memory store has one)."""

    _seq, _auto = "INTEGER", "AUTOINCREMENT"  # INTEGER PRIMARY KEY is the rowid
    _table_exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock, self._unpurged = threading.Lock(), False
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten with zeros, not left in free space
        self._open()
        if self.path == ":memory:":  # a second connection would open another, empty database
            self._reader, self._read_lock = self._db, self._lock
        else:
            self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._read_lock = threading.Lock()

    def _write(self, work: Callable[[], T]) -> T:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work()
                    self._db.execute("COMMIT")
                    if self._unpurged:  # a deletion's checkpoint could not finish: finish it now
                        self._unpurged = not self._checkpoint()
                except BaseException:
                    if self._db.in_transaction:  # SQLite may already have rolled back (a full disk does)
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as error:
                if (why := _sqlite_failure(error)) is None:
                    raise
                raise StoreUnavailable(why) from error
        return result

    def _fetch(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._read_lock:
            return self._reader.execute(sql.format(p=self._p), params).fetchall()

    def _purge(self) -> None:
        with self._lock:
            self._unpurged = not self._checkpoint()
        if self._unpurged:
            log.warning("another process kept the event store busy: the write-ahead log may keep old copies of a "
                        "deleted user's events until the next write empties it")

    def _checkpoint(self) -> bool:
        """Copy the last page versions into the file and truncate the write-ahead log, which still holds the
        pages as they were before a deletion (the busy timeout waits for other processes' readers)."""
        try:
            return self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        except sqlite3.OperationalError as error:
            if _sqlite_failure(error) is None:
                raise
            return False

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()
        with self._lock:
            self._db.close()


class _Link:
    """One PostgreSQL connection and its lock, reopened when lost: waiting up to `patience` seconds for the
    database the first time, then, while it stays unreachable, trying once per call."""

    def __init__(self, psycopg: Any, url: str, patience: float):
        self.psycopg, self.url, self.patience = psycopg, url, patience
        self.lock, self.db, self.reachable = threading.Lock(), None, True

    def connect(self) -> None:
        if self.db is not None and not self.db.closed:
            return
        deadline = time.monotonic() + (self.patience if self.reachable else 0.0)
        while True:
            try:
                self.db = self.psycopg.connect(self.url, autocommit=True, connect_timeout=2)
                self.reachable = True
                return
            except self.psycopg.OperationalError:
                if time.monotonic() >= deadline:
                    self.reachable = False
                    raise
                time.sleep(0.1)

    def lost(self) -> bool:
        return self.db is None or self.db.closed

    def close(self) -> None:
        with self.lock:
            if self.db is not None:
                self.db.close()


class PostgresStore(_Tables):
    """The same tables in PostgreSQL (psycopg 3), for several server processes; per process, one connection
    writes and one reads, each under its own lock. A write takes an advisory lock per user (shared for
    events, exclusive for a deletion), so a deletion cannot miss an event another process is storing at the
    same moment.

    A lost connection (a restarted server) is reopened, waiting up to `patience` seconds, and the call is
    run once more. That is safe because the transaction records its id first: when the connection broke
    before COMMIT the transaction was rolled back, and when it broke during COMMIT the store asks the server
    whether that id committed, returning the first answer if it did and retrying if it did not (so an event
    without a key is never stored twice). If the server is still unreachable, StoreUnavailable."""

    _p = "%s"
    _seq, _auto = "BIGINT", "GENERATED ALWAYS AS IDENTITY"
    _table_exists = "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = %s"

    def __init__(self, url: str, patience: float = 5.0):
        import psycopg

        self._psycopg, self.url = psycopg, url
        self._writer, self._reader = _Link(psycopg, url, patience), _Link(psycopg, url, patience)
        self._open()

    @property
    def _db(self) -> Any:  # the writing connection, which the shared SQL uses
        return self._writer.db

    def set_patience(self, seconds: float) -> None:
        """How long a call waits for a lost database to come back before raising StoreUnavailable."""
        self._writer.patience = self._reader.patience = seconds

    def _write(self, work: Callable[[], T]) -> T:
        return self._run(self._writer, work, write=True)

    def _fetch(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self._run(self._reader, lambda: self._reader.db.execute(sql.format(p=self._p), params).fetchall(), write=False)

    def _run(self, link: _Link, work: Callable[[], T], write: bool) -> T:
        lost: Exception | None = None
        with link.lock:
            for _ in range(2):
                xid, done = None, False
                try:
                    link.connect()
                    if not write:
                        return work()
                    with link.db.transaction():
                        xid = link.db.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
                        result, done = work(), True
                    return result
                except self._psycopg.OperationalError as error:
                    if not link.lost():
                        raise  # the statement failed, not the connection
                    lost = error
                if done and self._committed(xid):
                    return result  # only the answer to COMMIT was lost
        reason = str(lost).strip().splitlines()[0] if lost else "unknown"
        raise StoreUnavailable(f"the event store's database is unreachable ({reason})") from lost

    def _committed(self, xid: str) -> bool:
        """Whether transaction `xid` committed; raises StoreUnavailable when that cannot be known."""
        try:
            self._writer.connect()
            status = self._db.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()[0]
        except self._psycopg.OperationalError as error:
            raise StoreUnavailable("the connection to the event store's database broke during a commit and the "
                                   "database stayed unreachable, so whether the write was stored is unknown") from error
        if status not in ("committed", "aborted"):
            raise StoreUnavailable(f"the connection to the event store's database broke during a commit whose "
                                   f"outcome is still {status!r}; whether the write was stored is unknown")
        return status == "committed"

    def _lock_users(self, hashes: list[str], exclusive: bool) -> None:
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        for hashed in hashes:  # sorted by the caller, so two writers never wait on each other in a cycle
            key = int.from_bytes(hashlib.sha256(hashed.encode()).digest()[:8], "big", signed=True)
            self._db.execute(f"SELECT {function}(%s)", (key,))

    def _purge(self) -> None:
        """VACUUM the events (best effort, on a connection of its own so this process's locks are not held):
        the deleted rows' space is marked free for reuse; PostgreSQL gives no stronger promise."""
        try:
            with self._psycopg.connect(self.url, autocommit=True, connect_timeout=2) as db:
                db.execute("VACUUM events")
        except self._psycopg.Error:
            pass  # the deletion itself is committed; the next VACUUM (or autovacuum) does this

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


def open_store(url: str) -> EventStore:
    """`postgresql://...` opens PostgreSQL; anything else is a SQLite file path (or `sqlite:///path`)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    return SQLiteStore(url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url)
