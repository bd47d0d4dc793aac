"""What the HTTP layer calls: a loaded bundle with its scenario pipelines, the event store, and an atomic
swap to a new bundle. Histories are read fresh on every request (the bundle's, plus the user's stored
events), so feedback counts from the next request on.

>>> import tempfile
>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> from omnirec.bundle import Bundle, bundle_folder
>>> from omnirec.models import ItemKNN
>>> ds = Dataset.from_frames(*generate(SyntheticConfig(n_users=40, n_items=200)))
>>> folder = tempfile.mkdtemp() + "/b"
>>> Bundle.create(ItemKNN().fit(split_dataset(ds).train_data()), ds).save(folder)
>>> service = Service(folder, store=open_store(":memory:"))
>>> len(service.recommend(user=ds.users.labels[0], k=5)["items"])
5
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omnirec.bundle import Bundle, bundle_folder
from omnirec.data.histories import UserBatch
from omnirec.pipeline.pipeline import Pipeline
from omnirec.pipeline.scenario import (
    PipelineData,
    ScenarioConfig,
    build_pipeline,
    bundle_pipeline_data,
    load_scenarios,
    source,
)
from omnirec.serve.store import POSITIVE, Event, EventStore, open_store  # noqa: F401 - the doctest uses open_store

DEFAULT_SCENARIOS = {
    "home": ScenarioConfig(sources=(source("model", n=200), source("cooccurrence", n=100),
                                    source("popular", n=50)), ranker="model", fallback=("popular",)),
    "similar": ScenarioConfig(sources=(source("cooccurrence", n=50, recent=1),), ranker="fusion",
                              fallback=("popular",)),
}
# The model's own top-k (what `omnirec recommend` lists without --scenario), popular items for users it
# cannot rank.
MODEL_ONLY = ScenarioConfig(sources=(source("model", n=1000),), ranker="fusion", fallback=("popular",))


RECENT = 10  # history items shown with a list, newest first


class NotFound(LookupError):
    """An id the service does not know (a 404)."""


class ItemExists(ValueError):
    """An item added while serving that the catalogue already holds, or that the served model cannot take
    (a 409: the request is fine, the state of the service refuses it)."""


@dataclass
class Loaded:
    """One bundle and everything built from it; replaced as a whole on reload."""

    bundle: Bundle
    pipelines: dict[str, Pipeline]
    data: PipelineData
    path: str
    loaded_at: float


def load(path: str | Path, scenarios: dict[str, ScenarioConfig],
         added: list[tuple[str, str, str | None]] = ()) -> Loaded:
    """Read a bundle, with the items `added` while serving (id, text, title) in its catalogue, and build
    every scenario's pipeline over it."""
    bundle = Bundle.load(path)
    if added and bundle.model.adds_items:
        bundle = bundle.with_items(list(added))
    return assemble(bundle, scenarios, str(path))


def assemble(bundle: Bundle, scenarios: dict[str, ScenarioConfig], path: str) -> Loaded:
    """Every scenario's pipeline over `bundle` (read from `path`)."""
    data = bundle_pipeline_data(bundle, list(scenarios.values()))
    return Loaded(bundle, {name: build_pipeline(s, data) for name, s in scenarios.items()}, data, path, time.time())


class Service:
    """Recommendations, item look-ups, feedback and deletion over a swappable bundle."""

    def __init__(self, bundle: str | Path, store: EventStore,
                 scenarios: str | Path | dict[str, ScenarioConfig] | None = None,
                 max_k: int = 100, max_history: int = 500, follow_every: float = 2.0):
        if isinstance(scenarios, dict):
            self.scenarios = dict(scenarios)
        else:
            self.scenarios = load_scenarios(str(scenarios)) if scenarios else dict(DEFAULT_SCENARIOS)
        self.store, self.max_k, self.max_history = store, max_k, max_history
        shared = store.get_setting("bundle")  # what the other processes on this store serve, if it still exists
        added = store.added_items()
        self.current = load(shared if shared and (Path(shared) / "bundle.json").exists() else bundle, self.scenarios,
                            added)
        self.added_seen = len(added)  # items added while serving that this process has taken in
        self._reload_lock = threading.Lock()
        self.follow_every, self._checked, self._follower = follow_every, time.monotonic(), None

    def follow(self) -> threading.Thread | None:
        """Every `follow_every` seconds, look up the bundle the store says to serve (another server process
        may have reloaded); if it differs, load it in the background and swap. Returns the loading thread."""
        now = time.monotonic()
        if now - self._checked < self.follow_every or (self._follower is not None and self._follower.is_alive()):
            return None
        self._checked = now
        wanted = self.store.get_setting("bundle") or self.current.path
        added = int(self.store.get_setting("added_items") or 0)
        if wanted == self.current.path and added <= self.added_seen:
            return None
        self._follower = threading.Thread(target=self._swap_to, args=(wanted,), daemon=True)
        self._follower.start()
        return self._follower

    def _swap_to(self, path: str) -> None:
        with self._reload_lock:
            added = self.store.added_items()
            self.current, self.added_seen = load(path, self.scenarios, added), len(added)

    # -- reads ----------------------------------------------------------------------------------------
    def history(self, loaded: Loaded, user: str | None, items: list[str] | None) -> np.ndarray:
        """Dense ids of the request's history: the user's bundle history and stored events (newest last),
        or the anonymous items given; unknown items are ignored, only the latest `max_history` kept. A
        deleted user has none: the tombstone outlives any copy of the old data."""
        dense: list[int] = []
        if user is not None and self.store.is_deleted(user):
            return np.zeros(0, dtype=np.int64)
        if user is not None and user in loaded.bundle.users:
            u = loaded.bundle.users.encode([user])[0]
            h = loaded.bundle.histories
            dense += h.items[h.indptr[u] : h.indptr[u + 1]].tolist()
        labels = [e.item for e in self.store.events_of(user) if e.type in POSITIVE] if user is not None else []
        labels += items or []
        known = [label for label in labels if label in loaded.bundle.items]
        dense += [int(i) for i in loaded.bundle.items.encode(known)] if known else []
        return np.asarray(dense[-self.max_history :], dtype=np.int64)

    def recommend(self, user: str | None = None, items: list[str] | None = None, scenario: str = "home",
                  k: int = 10, exclude: list[str] | None = None, page: bool = False) -> dict[str, Any]:
        """The scenario's final list for a user (by id) or an anonymous history, with reasons; `personalized`
        says whether it was built from a history, and `reason` says why not when it was not."""
        self.follow()
        loaded = self.current  # one reference for the whole request: a reload cannot change it midway
        if scenario not in loaded.pipelines:
            raise NotFound(f"scenario {scenario!r} is not configured; known: {', '.join(loaded.pipelines)}")
        if not 1 <= k <= self.max_k:
            raise ValueError(f"k must lie in 1..{self.max_k}, got {k}")
        history = self.history(loaded, user, items)
        batch = UserBatch.request(history)
        pipeline = loaded.pipelines[scenario]
        blocked = [e for e in (exclude or []) if e in loaded.bundle.items]
        if blocked:
            pipeline = pipeline.with_rules(frozenset(int(i) for i in loaded.bundle.items.encode(blocked)))
        [recs] = pipeline.recommend(batch, k=k, page=page)
        name_of, title = loaded.data.items.decode, loaded.bundle.title
        recent = list(dict.fromkeys(history[::-1].tolist()))[:RECENT]
        return {"user": user, "scenario": scenario, "model": loaded.bundle.model.name, "bundle": loaded.path,
                "personalized": len(history) > 0,
                "reason": None if len(history) else self._why_not_personal(loaded, user, items),
                "history": [{"item": name_of([i])[0], "title": title(i)} for i in recent],
                "items": [{"item": name_of([r.item])[0], "title": title(r.item), "score": _finite(r.score),
                           "sources": list(r.sources), "reason": r.reason} for r in recs]}

    def _why_not_personal(self, loaded: Loaded, user: str | None, items: list[str] | None) -> str:
        """Why a list could not be built from a history (it comes from the scenario's fallback)."""
        fallback = "the most popular items instead"
        if user is not None and self.store.is_deleted(user):
            return f"user {user!r} was deleted, so nothing of theirs is used: {fallback}"
        if user is not None:
            return (f"user {user!r} is not known (not in the bundle's {len(loaded.bundle.users):,} users and no "
                    f"feedback stored): {fallback}")
        if items:
            return f"none of the {len(items)} items given is in the catalogue: {fallback}"
        return f"no user and no items given: {fallback}"

    def item(self, item: str) -> dict[str, Any]:
        """What the service knows of an item."""
        loaded = self.current
        if item not in loaded.bundle.items:
            raise NotFound(f"item {item!r} is not in the catalogue")
        dense = int(loaded.bundle.items.encode([item])[0])
        counts = loaded.data.counts(0.0)
        text = loaded.bundle.item_text[dense] if loaded.bundle.item_text is not None else None
        return {"item": item, "title": loaded.bundle.title(dense), "interactions": int(counts[dense]), "text": text}

    def similar(self, item: str, k: int = 10) -> dict[str, Any]:
        """Items like `item` (the `similar` scenario, the item as the history)."""
        if item not in self.current.bundle.items:
            raise NotFound(f"item {item!r} is not in the catalogue")
        scenario = "similar" if "similar" in self.current.pipelines else next(iter(self.current.pipelines))
        return self.recommend(items=[item], scenario=scenario, k=k, page=True)

    # -- writes ---------------------------------------------------------------------------------------
    def feedback(self, events: list[Event]) -> dict[str, int]:
        """Store events (acknowledged once committed). The store refuses the whole batch when a user of it
        was deleted (`UserDeleted`) or an idempotency key comes back with another event (`IdempotencyConflict`)."""
        stored = self.store.add(events)
        return {"stored": sum(stored), "duplicates": len(stored) - sum(stored)}

    def add_item(self, item: str, text: str, title: str | None = None) -> dict[str, Any]:
        """Put a new item in the running catalogue: kept in the store (every server process and the next
        retraining take it from there) and scored at once from its text by models that can
        (`Recommender.adds_items`). An item already in the catalogue is refused (`ItemExists`)."""
        if not text.strip():
            raise ValueError("an item needs text: it is scored from its text until it has interactions")
        loaded = self.current
        if item in loaded.bundle.items:
            raise ItemExists(f"item {item!r} is already in the catalogue")
        if not loaded.bundle.model.adds_items:
            raise ItemExists(f"model {loaded.bundle.model.name!r} cannot take new items without retraining "
                             "(textseq, hybrid, tfidf and itemknn can): retrain with the item in the catalogue")
        self.store.add_item(item, text, title)
        with self._reload_lock:
            grown = self.current.bundle.with_items([(item, text, title)])
            self.current = assemble(grown, self.scenarios, self.current.path)
        self.added_seen = len(self.store.added_items())
        self.store.set_setting("added_items", str(self.added_seen))  # the other processes follow
        return {"item": item, "items": len(self.current.bundle.items)}

    def delete_user(self, user: str) -> dict[str, Any]:
        """Forget a user: stored events removed, bundle history ignored from now on (by every process sharing
        the store), kept scores dropped, and the user left out of the next retraining."""
        removed = self.store.delete_user(user)
        self.current.data.scorer().forget()  # the last scores computed may be this user's
        return {"user": user, "events_removed": removed}

    def reload(self, path: str | Path | None = None) -> dict[str, Any]:
        """Load a bundle (default: the current path again) and swap it in atomically."""
        with self._reload_lock:
            added = self.store.added_items()
            fresh = load(str(Path(path).resolve()) if path else self.current.path, self.scenarios, added)
            self.current = fresh  # a single reference assignment: requests see the old or the new, whole
            self.added_seen = len(added)
        self.store.set_setting("bundle", fresh.path)  # the other server processes follow
        return {"bundle": fresh.path, "model": fresh.bundle.model.name, "items": len(fresh.bundle.items)}


def scenario_service(bundle: str | Path, scenarios_file: str | None = None, scenario: str | None = None) -> Service:
    """A service over the bundle with an empty in-memory store, serving one scenario: `scenario` of the
    TOML file `scenarios_file`, or without one the model's own list (`MODEL_ONLY`). What `omnirec
    recommend` prints is what the HTTP API would answer."""
    if scenario is None:
        scenarios = {"model": MODEL_ONLY}
    elif scenarios_file is None:
        raise ValueError("--scenario needs --scenarios FILE (the TOML that declares the scenarios)")
    else:
        declared = load_scenarios(scenarios_file)
        if scenario not in declared:
            raise ValueError(f"scenario {scenario!r} is not in {scenarios_file}; it has: {', '.join(declared)}")
        scenarios = {scenario: declared[scenario]}
    return Service(bundle_folder(bundle), open_store(":memory:"), scenarios, max_k=1000)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def format_list(answer: dict[str, Any]) -> str:
    """A final list as lines of rank, id, title, score, sources and reason."""
    lines = []
    for rank, r in enumerate(answer["items"], 1):
        score = "-" if r["score"] is None else f"{r['score']:.4f}"
        title = f"  {r['title']}" if r.get("title") else ""
        lines.append(f"{rank:>3}  {r['item']}{title}  {score}  [{', '.join(r['sources'])}]  {r['reason']}")
    return "\n".join(lines)


def query_list(bundle: Bundle, user: str | None, query: str, k: int = 10, query_weight: float = 0.5) -> dict[str, Any]:
    """A text request blended with the user's history (models that read text queries), listed like a
    final list; a user the bundle does not know gets the query alone, said so."""
    reason = None
    asked = user
    if user is not None and user not in bundle.users:
        reason, user = f"user {user!r} is not known to this bundle: the list answers the query alone", None
    rows = bundle.recommend(user, k=k, query=query, query_weight=query_weight)
    dense = bundle.items.encode([item for item, _ in rows]) if rows else []
    why = "your query" if user is None else "your query and history"
    return {"user": asked, "query": query, "personalized": user is not None, "reason": reason,
            "items": [{"item": item, "title": bundle.title(int(d)), "score": score, "sources": [bundle.model.name],
                       "reason": f"{bundle.model.name} ranks it #{rank} for {why} (score {score:.3f})"}
                      for rank, ((item, score), d) in enumerate(zip(rows, dense, strict=True), 1)]}
