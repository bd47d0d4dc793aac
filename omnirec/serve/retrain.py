"""Retraining from served feedback: the base data plus the stored events, without the interactions of
deleted users; and asking a running server to swap to the new bundle.

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

import json
import os
import urllib.request
from typing import Any

import polars as pl

from omnirec.data.clean import CleanConfig
from omnirec.data.dataset import Dataset
from omnirec.data.schema import ITEM, TEXT, TIME, USER
from omnirec.serve.store import POSITIVE, EventStore


def with_feedback(dataset: Dataset, store: EventStore, clean: CleanConfig = CleanConfig()) -> tuple[Dataset, dict[str, Any]]:
    """`dataset`'s interactions minus those of deleted users, plus every stored positive event (view,
    click, purchase, rating), cleaned and id-mapped again; item text is carried over."""
    inter = dataset.interactions
    base = pl.DataFrame({
        USER: dataset.users.decode(inter[USER].to_numpy()),
        ITEM: dataset.items.decode(inter[ITEM].to_numpy()),
        TIME: inter[TIME].cast(pl.Int64),
    })
    deleted = store.deleted_users()
    kept = base.filter(~pl.col(USER).is_in(sorted(deleted)))
    events = [e for e in store.all_events() if e.type in POSITIVE]
    added = pl.DataFrame({USER: [e.user for e in events], ITEM: [e.item for e in events], TIME: [e.time for e in events]},
                         schema={USER: pl.String, ITEM: pl.String, TIME: pl.Int64})
    items = None
    if dataset.item_text is not None:
        items = pl.DataFrame({ITEM: dataset.items.labels, TEXT: dataset.item_text[1:]})
    fresh = Dataset.from_frames(pl.concat([kept, added]), items, name=dataset.name, config=clean)
    summary = {"base": base.height, "dropped": base.height - kept.height, "deleted_users": len(deleted),
               "events": added.height, "interactions": fresh.interactions.height}
    return fresh, summary


def request_reload(server: str, bundle: str, api_key: str | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """POST /admin/reload on a running server so it swaps to `bundle` (key: `api_key` or $OMNIREC_API_KEY)."""
    key = api_key if api_key is not None else os.environ.get("OMNIREC_API_KEY", "")
    request = urllib.request.Request(
        server.rstrip("/") + "/admin/reload", data=json.dumps({"bundle": str(bundle)}).encode(), method="POST",
        headers={"content-type": "application/json", "x-api-key": key})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - an operator-given URL
        return json.loads(response.read())
