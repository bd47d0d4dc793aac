"""The event store, SQLite and PostgreSQL alike: keys, conflicts, final deletions, and what happens when the
disk fills up or the database restarts."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import threading
import time
import uuid
from urllib.parse import parse_qs, urlparse

import pytest

from omnirec.serve.store import Event, IdempotencyConflict, PostgresStore, StoreUnavailable, UserDeleted, open_store
from tests.serve.conftest import _tool


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "s.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def fresh():
    """A prefix no other test uses: a PostgreSQL store is shared by the whole session and deletions are final."""
    return f"t{uuid.uuid4().hex[:10]}-"


def test_store_keeps_order_keys_and_deletions(store_url, fresh):
    a, b = fresh + "a", fresh + "b"
    store = open_store(store_url)
    assert store.add([]) == []
    assert store.add([Event(a, "1", key=fresh + "x"), Event(a, "2"), Event(b, "3")]) == [True, True, True]
    assert store.add([Event(a, "1", key=fresh + "x")]) == [False]
    assert [e.item for e in store.events_of(a)] == ["1", "2"]
    deleted_before = store.deleted_count()
    assert store.delete_user(a) == 2 and store.is_deleted(a) and not store.is_deleted(b)
    assert store.deleted_among([a, b, fresh + "c"]) == {a} and store.deleted_count() == deleted_before + 1
    store.close()
    again = open_store(store_url)  # durable across reopen
    assert [e.item for e in again.all_events() if e.user.startswith(fresh)] == ["3"] and again.is_deleted(a)
    again.close()
    with pytest.raises(ValueError, match="event type"):
        Event(a, "1", type="stare")


def test_idempotency_key_reused_with_a_different_payload_conflicts(store_url, fresh):
    store = open_store(store_url)
    k, u = fresh + "k", fresh + "u"
    assert store.add([Event(u, "i1", "rating", 4.0, time=1000, key=k)]) == [True]
    assert store.add([Event(u, "i1", "rating", 4, key=k)]) == [False]  # the same event; no time given
    assert store.add([Event(u, "i1", "rating", 4.0, time=1000, key=k)]) == [False]
    for other in (Event(u, "i2", "rating", 4.0, key=k), Event(u, "i1", "click", 4.0, key=k), Event(u, "i1", "rating", 5.0, key=k),
                  Event(u, "i1", "rating", None, key=k), Event(fresh + "v", "i1", "rating", 4.0, key=k),
                  Event(u, "i1", "rating", 4.0, time=999, key=k)):
        with pytest.raises(IdempotencyConflict, match="already used for a different event") as caught:
            store.add([Event(u, "i3", key=fresh + "new"), other])
        assert caught.value.key == k
    with pytest.raises(IdempotencyConflict):  # the same key twice in one batch
        store.add([Event(u, "i4", key=fresh + "twice"), Event(u, "i5", key=fresh + "twice")])
    assert [(e.item, e.key) for e in store.events_of(u)] == [("i1", k)]  # every refused batch left nothing
    store.close()


def test_events_for_a_deleted_user_are_refused(store_url, fresh):
    store = open_store(store_url)
    gone, kept = fresh + "gone", fresh + "kept"
    store.add([Event(gone, "i1", key=fresh + "1")])
    assert store.delete_user(gone) == 1 and store.delete_user(gone) == 0
    with pytest.raises(UserDeleted, match=f"user '{gone}' was deleted; events for a deleted user are refused") as caught:
        store.add([Event(kept, "i2"), Event(gone, "i1", key=fresh + "1")])
    assert caught.value.user == gone
    assert store.events_of(kept) == [] and store.events_of(gone) == []  # the whole batch was refused
    assert store.add([Event(kept, "i2", key=fresh + "1")]) == [True]  # the deleted user's key went with its events
    store.close()


def test_a_deletion_racing_writes_leaves_no_event_behind(store_url, fresh):
    writer, deleter = open_store(store_url), open_store(store_url)  # two connections, as two server processes have
    user, refused, started = fresh + "racer", threading.Event(), threading.Event()

    def write() -> None:  # until the deletion refuses it (a deadline, in case it never does)
        deadline, i = time.monotonic() + 60, 0
        while time.monotonic() < deadline:
            try:
                writer.add([Event(user, f"i{i}")])
            except UserDeleted:
                refused.set()
                return
            started.set()
            i += 1

    thread = threading.Thread(target=write)
    thread.start()
    # delete once the first events are in, while the writer goes on; waiting on an event (not polling the
    # writer's own connection) keeps the race real on a loaded machine
    assert started.wait(30)
    deleter.delete_user(user)
    thread.join()
    assert refused.is_set() and deleter.events_of(user) == [] and writer.events_of(user) == []
    writer.close()
    deleter.close()


def test_a_read_does_not_wait_for_a_write_to_commit(store_url, fresh):
    store = open_store(store_url)
    store.add([Event(fresh + "u", "i1")])
    got: list = []
    with store._writer.lock if isinstance(store, PostgresStore) else store._lock:  # a write is committing
        reader = threading.Thread(target=lambda: got.append(store.events_of(fresh + "u")))
        reader.start()
        reader.join(5)
        answered = list(got)
    reader.join()
    assert answered and [e.item for e in answered[0]] == ["i1"], "the read waited for the write"
    store.close()


def test_deletion_leaves_no_trace_of_the_id_in_the_store_files(tmp_path):
    path = tmp_path / "store" / "events.db"
    store, reader = open_store(str(path)), open_store(str(path))  # a second connection, as another process has
    target = "forget-me-7f3a9c"
    for batch in range(20):  # enough rows for the index pages to split and rebalance
        store.add([Event(target if i % 5 == 0 else f"user-{batch}-{i}", f"item-{i}", key=f"{target}/{batch}/{i}" if i % 5 == 0 else None)
                   for i in range(100)])
    assert len(reader.events_of(target)) == 400
    assert store.delete_user(target) == 400
    assert reader.is_deleted(target) and reader.events_of(target) == []
    files = sorted(path.parent.iterdir())
    assert {f.name for f in files} >= {"events.db"}
    for file in files:
        assert target.encode() not in file.read_bytes(), f"{file.name} still holds the deleted id"
    other = open_store(str(tmp_path / "other.db"))  # a salt of its own: the same id hashes differently
    other.delete_user(target)
    assert sqlite3.connect(path).execute("SELECT user_hash FROM tombstones").fetchall() != \
        sqlite3.connect(tmp_path / "other.db").execute("SELECT user_hash FROM tombstones").fetchall()


def test_an_older_store_s_clear_deleted_ids_become_tombstones(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE deleted_users (user_id TEXT PRIMARY KEY, ts BIGINT NOT NULL)")
    old.execute("INSERT INTO deleted_users VALUES ('old-deleted-user', 1)")
    old.commit()
    old.close()
    store = open_store(str(path))
    assert store.is_deleted("old-deleted-user") and store.deleted_count() == 1
    assert all(b"old-deleted-user" not in f.read_bytes() for f in tmp_path.iterdir())


def test_full_disk_refuses_writes_keeps_reads_and_recovers(tmp_path):
    store = open_store(str(tmp_path / "full.db"))
    store.add([Event("a", "i0", key="k0")])
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow: a disk with no space left
    with pytest.raises(StoreUnavailable, match="disk is full"):
        for i in range(1, 200):
            store.add([Event(f"u{i}", "x" * 400, key=f"k{i}"), Event("a", f"i{i}", key=f"a{i}")])
    stored = list(store.all_events())
    assert [e.item for e in store.events_of("a")][0] == "i0" and len(stored) % 2 == 1  # no batch half-written
    assert store.get_setting("tombstone_salt")  # reads keep working
    store._db.execute("PRAGMA max_page_count = 1000000")  # space is back
    assert store.add([Event("b", "i1", key="kb")]) == [True] and len(list(store.all_events())) == len(stored) + 1
    store.close()


def _pg_ctl(url: str, action: str) -> None:
    """Stop, start or restart the session's throw-away PostgreSQL server (its folder is the URL's socket host;
    a start is given the options the session fixture started it with)."""
    query = parse_qs(urlparse(url).query)
    host, port = query["host"][0], query["port"][0]
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    options = ["-o", f"-p {port} -k {host} -c listen_addresses='' -c fsync=off"] if action == "start" else []
    subprocess.run([*prefix, _tool("pg_ctl"), "-D", os.path.join(host, "data"), "-w", "-m", "fast", "-l",
                    os.path.join(host, "log"), *options, action], check=True, capture_output=True)


def test_postgres_reconnects_after_a_restart(postgres_url, fresh):
    store = PostgresStore(postgres_url)
    assert store.add([Event(fresh + "u", "i1", key=fresh + "1")]) == [True]
    _pg_ctl(postgres_url, "restart")  # the store's connection is gone
    assert store.add([Event(fresh + "u", "i2", key=fresh + "2"), Event(fresh + "u", "i3")]) == [True, True]
    _pg_ctl(postgres_url, "stop")
    try:
        store.set_patience(0.2)
        with pytest.raises(StoreUnavailable, match="unreachable"):
            store.add([Event(fresh + "u", "i4", key=fresh + "4")])
        with pytest.raises(StoreUnavailable, match="unreachable"):
            store.events_of(fresh + "u")
    finally:
        _pg_ctl(postgres_url, "start")
    assert store.add([Event(fresh + "u", "i5", key=fresh + "5")]) == [True]
    assert [e.item for e in store.events_of(fresh + "u")] == ["i1", "i2", "i3", "i5"]
    store.close()


class _CommitAnswerLost:
    """A connection whose first COMMIT reaches the server but whose answer never comes back."""

    def __init__(self, db, psycopg):
        self._wrapped, self._psycopg = db, psycopg

    def __getattr__(self, name):
        return getattr(self._wrapped, name)

    @contextlib.contextmanager
    def transaction(self):
        with self._wrapped.transaction():
            yield
        self._wrapped.close()
        raise self._psycopg.OperationalError("server closed the connection unexpectedly")


def test_postgres_commit_whose_answer_was_lost_is_not_stored_twice(postgres_url, fresh):
    store = PostgresStore(postgres_url)
    store._writer.db = _CommitAnswerLost(store._writer.db, store._psycopg)
    assert store.add([Event(fresh + "u", "i1")]) == [True]  # no key: a blind retry would store it twice
    assert [e.item for e in store.events_of(fresh + "u")] == ["i1"]
    store.close()
