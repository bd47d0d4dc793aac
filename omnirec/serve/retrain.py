"""Retraining from served feedback: the base data plus the stored events, without the interactions of
deleted users; and asking a running server to swap to the new bundle (its key checked before training).

>>> import polars as pl
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.serve.store import Event, open_store
>>> base = Dataset.from_frames(pl.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"], "timestamp": [1, 2, 1]}))
>>> store = open_store(":memory:")
>>> _ = store.add([Event("c", "y", time=5)]); _ = store.delete_user("b")
>>> data, summary = with_feedback(base, store)
>>> sorted(data.users.labels), summary["dropped"], summary["events"]
(['a', 'c'], 1, 1)
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import polars as pl

from omnirec.data.clean import CleanConfig
from omnirec.data.dataset import Dataset
from omnirec.data.schema import ITEM, TEXT, TIME, TITLE, USER
from omnirec.data.split import Split, split_dataset
from omnirec.serve.store import POSITIVE, EventStore, open_store


def with_feedback(dataset: Dataset, store: EventStore, clean: CleanConfig = CleanConfig()) -> tuple[Dataset, dict[str, Any]]:
    """`dataset`'s interactions minus those of deleted users, plus every stored positive event (view,
    click, purchase, rating) of users not deleted, cleaned and id-mapped again; item text, titles and user
    attributes are carried over. A deleted user is left out whether their data came from the base or from the store."""
    inter = dataset.interactions
    base = pl.DataFrame({
        USER: dataset.users.decode(inter[USER].to_numpy()),
        ITEM: dataset.items.decode(inter[ITEM].to_numpy()),
        TIME: inter[TIME].cast(pl.Int64),
    })
    stored = [e for e in store.all_events() if e.type in POSITIVE]
    deleted = store.deleted_among(set(dataset.users.labels) | {e.user for e in stored})
    kept = base.filter(~pl.col(USER).is_in(sorted(deleted)))
    events = [e for e in stored if e.user not in deleted]
    added = pl.DataFrame({USER: [e.user for e in events], ITEM: [e.item for e in events], TIME: [e.time for e in events]},
                         schema={USER: pl.String, ITEM: pl.String, TIME: pl.Int64})
    items = None
    if dataset.item_text is not None:
        items = pl.DataFrame({ITEM: dataset.items.labels, TEXT: dataset.item_text[1:]})
        if dataset.item_titles is not None:
            items = items.with_columns(pl.Series(TITLE, dataset.item_titles[1:], dtype=pl.String))
        new = [(i, t, title) for i, t, title in store.added_items() if i not in dataset.items]  # added while serving
        if new:
            extra = pl.DataFrame({ITEM: [i for i, _, _ in new], TEXT: [t for _, t, _ in new]})
            if TITLE in items.columns:
                extra = extra.with_columns(pl.Series(TITLE, [title or "" for _, _, title in new], dtype=pl.String))
            items = pl.concat([items, extra])
    fresh = Dataset.from_frames(pl.concat([kept, added]), items, name=dataset.name, config=clean)
    if dataset.user_attributes is not None:  # users keep their attributes under their new dense ids
        fresh = dataclasses.replace(fresh, user_attributes=dataset.user_attributes.reindexed(dataset.users, fresh.users))
    summary = {"base": base.height, "dropped": base.height - kept.height, "deleted_users": len(deleted),
               "events": added.height, "events_dropped": len(stored) - len(events),
               "interactions": fresh.interactions.height}
    return fresh, summary


def retrain_data(base: Dataset, store_path: str, clean: CleanConfig = CleanConfig()) -> tuple[Dataset, Split, dict[str, Any]]:
    """What `retrain` trains on: `base` with the feedback in the store at `store_path` (`with_feedback`),
    split leave-one-out with users known only from a little feedback trained on, not evaluated; and the
    summary of what was added and dropped."""
    store = open_store(store_path)
    try:
        dataset, summary = with_feedback(base, store, clean)
    finally:
        store.close()
    return dataset, split_dataset(dataset, "loo", short_users="train"), summary


class ServerError(OSError):
    """A running server that cannot be reached or refuses a request; the message says which and why."""


def _url(server: str, route: str) -> str:
    parts = urllib.parse.urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ServerError(f"{server!r} is not a server URL; expected http://HOST:PORT")
    return server.rstrip("/") + route


def _detail(error: urllib.error.HTTPError) -> str:
    """The server's `detail` from an error response (its text when the body is not omnirec's JSON)."""
    try:
        body = error.read().decode("utf-8", "replace")
    except OSError:
        return error.reason or "no detail"
    try:
        detail = json.loads(body).get("detail", body)
    except (ValueError, AttributeError):
        detail = body
    text = detail if isinstance(detail, str) else json.dumps(detail)
    return " ".join(text.split())[:300] or str(error.reason)


def _reason(error: OSError) -> str:
    """Why a connection failed, in words ('Connection refused', 'timed out')."""
    reason = getattr(error, "reason", error)
    return (reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)) or type(error).__name__


def _send(request: urllib.request.Request, timeout: float) -> tuple[int, bytes]:
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - an operator-given URL
        return response.status, response.read()


def _key(api_key: str | None) -> str:
    return api_key if api_key is not None else os.environ.get("OMNIREC_API_KEY", "")


def check_server(server: str, api_key: str | None = None, timeout: float = 10.0) -> None:
    """Raise `ServerError` unless the server at `server` is up and accepts the key (`GET /admin/key`: 204),
    so that a retrain learns of a wrong key or URL before it trains, not after.

    >>> check_server("localhost:8000")
    Traceback (most recent call last):
    ...
    omnirec.serve.retrain.ServerError: 'localhost:8000' is not a server URL; expected http://HOST:PORT
    """
    key = _key(api_key)
    url = _url(server, "/admin/key")
    try:
        _send(urllib.request.Request(url, headers={"x-api-key": key}), timeout)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            unset = "" if key else " (OMNIREC_API_KEY is not set)"
            raise ServerError(f"the server at {server} refused the key: {_detail(exc)}{unset}") from exc
        raise ServerError(f"the server at {server} answered HTTP {exc.code} to GET /admin/key: {_detail(exc)}") from exc
    except (urllib.error.URLError, OSError) as exc:  # refused, unknown host, timed out
        raise ServerError(f"cannot reach the server at {server} ({_reason(exc)})") from exc


def request_reload(server: str, bundle: str, api_key: str | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """POST /admin/reload on a running server so it swaps to `bundle` (key: `api_key` or $OMNIREC_API_KEY).

    Any failure raises `ServerError` with the status, the server's `detail`, and where the bundle is."""
    request = urllib.request.Request(
        _url(server, "/admin/reload"), data=json.dumps({"bundle": str(bundle)}).encode(), method="POST",
        headers={"content-type": "application/json", "x-api-key": _key(api_key)})
    saved = f"; the new bundle was saved at {bundle}"
    try:
        _, body = _send(request, timeout)
    except urllib.error.HTTPError as exc:
        raise ServerError(f"the server at {server} did not reload: HTTP {exc.code}: {_detail(exc)}{saved}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"the reload request to {server} failed ({_reason(exc)}){saved}") from exc
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ServerError(f"the server at {server} answered the reload with no JSON ({exc}){saved}") from exc
