"""The feedback event store: SQLite in WAL mode by default (embedded, nothing to start), PostgreSQL through a
URL when several server processes share it. An event is acknowledged only once its transaction is
committed (SQLite: synchronous=FULL, so a crash or a power cut after the answer loses nothing).

>>> store = open_store(":memory:")
>>> store.add([Event("u1", "i9", "click", key="k1"), Event("u1", "i9", "click", key="k1")])
[True, False]
>>> [e.item for e in store.events_of("u1")]
['i9']
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

EVENT_TYPES = ("view", "click", "purchase", "rating", "skip")
POSITIVE = ("view", "click", "purchase", "rating")  # events that extend a user's history; a skip does not


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


class EventStore(Protocol):
    """What the server needs from a store."""

    def add(self, events: list[Event]) -> list[bool]:
        """Store the events in one transaction; per event, False when its key was already stored."""

    def events_of(self, user: str) -> list[Event]:
        """The user's stored events, oldest first."""

    def delete_user(self, user: str) -> int:
        """Remove the user's events, remember the deletion; returns how many events were removed."""

    def deleted_users(self) -> set[str]:
        """Users deleted so far (kept out of the next training)."""

    def is_deleted(self, user: str) -> bool:
        """Whether the user was deleted (checked on every request, so every server process honours it)."""

    def all_events(self) -> Iterator[Event]:
        """Every stored event, in storage order."""

    def get_setting(self, key: str) -> str | None:
        """A shared setting (the bundle every server process should serve)."""

    def set_setting(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY {auto}, key TEXT UNIQUE, user_id TEXT NOT NULL, "
    "item_id TEXT NOT NULL, type TEXT NOT NULL, value DOUBLE PRECISION, ts BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, seq)",
    "CREATE TABLE IF NOT EXISTS deleted_users (user_id TEXT PRIMARY KEY, ts BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
UPSERT_SETTING = "INSERT INTO settings (key, value) VALUES ({p}, {p}) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
INSERT = "INSERT INTO events (key, user_id, item_id, type, value, ts) VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (key) DO NOTHING"
SELECT = "SELECT user_id, item_id, type, value, ts, key FROM events"


def _row(r: tuple) -> Event:
    return Event(r[0], r[1], r[2], r[3], int(r[4]), r[5])


class SQLiteStore:
    """One SQLite file in WAL mode; one connection shared under a lock (writes are serialised anyway)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in SCHEMA:
            self._db.execute(statement.format(auto="AUTOINCREMENT"))

    def add(self, events: list[Event]) -> list[bool]:
        now = int(time.time())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                new = [self._db.execute(INSERT.format(p="?"), (e.key, e.user, e.item, e.type, e.value, e.time or now)).rowcount == 1
                       for e in events]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    def events_of(self, user: str) -> list[Event]:
        with self._lock:
            rows = self._db.execute(f"{SELECT} WHERE user_id = ? ORDER BY seq", (user,)).fetchall()
        return [_row(r) for r in rows]

    def delete_user(self, user: str) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = self._db.execute("DELETE FROM events WHERE user_id = ?", (user,)).rowcount
                self._db.execute("INSERT INTO deleted_users (user_id, ts) VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET ts = excluded.ts",
                                 (user, int(time.time())))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return removed

    def deleted_users(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT user_id FROM deleted_users")}

    def is_deleted(self, user: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM deleted_users WHERE user_id = ?", (user,)).fetchone() is not None

    def get_setting(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_setting(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(UPSERT_SETTING.format(p="?"), (key, value))

    def all_events(self) -> Iterator[Event]:
        with self._lock:
            rows = self._db.execute(f"{SELECT} ORDER BY seq").fetchall()
        return (_row(r) for r in rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresStore:
    """The same tables in PostgreSQL (psycopg 3), for several server processes; a connection per call
    from a small pool would be the next step, one locked connection is enough for a process."""

    def __init__(self, url: str):
        import psycopg

        self._db = psycopg.connect(url, autocommit=False)
        self._lock = threading.Lock()
        with self._lock, self._db.transaction():
            for statement in SCHEMA:
                self._db.execute(statement.format(auto="GENERATED ALWAYS AS IDENTITY").replace("INTEGER PRIMARY KEY", "BIGINT PRIMARY KEY"))

    def add(self, events: list[Event]) -> list[bool]:
        now = int(time.time())
        with self._lock, self._db.transaction():
            return [self._db.execute(INSERT.format(p="%s"), (e.key, e.user, e.item, e.type, e.value, e.time or now)).rowcount == 1
                    for e in events]

    def events_of(self, user: str) -> list[Event]:
        with self._lock, self._db.transaction():
            return [_row(r) for r in self._db.execute(f"{SELECT} WHERE user_id = %s ORDER BY seq", (user,)).fetchall()]

    def delete_user(self, user: str) -> int:
        with self._lock, self._db.transaction():
            removed = self._db.execute("DELETE FROM events WHERE user_id = %s", (user,)).rowcount
            self._db.execute("INSERT INTO deleted_users (user_id, ts) VALUES (%s, %s) ON CONFLICT (user_id) DO UPDATE SET ts = excluded.ts",
                             (user, int(time.time())))
        return removed

    def deleted_users(self) -> set[str]:
        with self._lock, self._db.transaction():
            return {r[0] for r in self._db.execute("SELECT user_id FROM deleted_users").fetchall()}

    def is_deleted(self, user: str) -> bool:
        with self._lock, self._db.transaction():
            return self._db.execute("SELECT 1 FROM deleted_users WHERE user_id = %s", (user,)).fetchone() is not None

    def get_setting(self, key: str) -> str | None:
        with self._lock, self._db.transaction():
            row = self._db.execute("SELECT value FROM settings WHERE key = %s", (key,)).fetchone()
        return None if row is None else row[0]

    def set_setting(self, key: str, value: str) -> None:
        with self._lock, self._db.transaction():
            self._db.execute(UPSERT_SETTING.format(p="%s"), (key, value))

    def all_events(self) -> Iterator[Event]:
        with self._lock, self._db.transaction():
            rows = self._db.execute(f"{SELECT} ORDER BY seq").fetchall()
        return (_row(r) for r in rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(url: str) -> EventStore:
    """`postgresql://...` opens PostgreSQL; anything else is a SQLite file path (or `sqlite:///path`)."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    return SQLiteStore(url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url)
