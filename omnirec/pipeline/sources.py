"""Candidate sources. Each is named and returns, for a batch of users, (B, N) item ids with its scores and
its evidence: the item of the user's history a hit derives from (`cited`, 0 when none) and the value
that links them (`strength`: a similarity, a decayed count...). `explain` turns one hit's evidence into
words, so a reason always restates what the source actually computed.

>>> import numpy as np, scipy.sparse as sp
>>> from omnirec.data.histories import Histories
>>> sim = sp.csr_matrix(np.array([[0, 0, 0], [0, 0, .5], [0, .5, 0]], dtype=np.float32))
>>> hits = CooccurrenceSource(sim).retrieve(Histories(np.array([0, 0, 1]), np.array([1])).batch([1]), n=1)
>>> hits.ids.tolist(), hits.cited.tolist(), hits.strength.tolist()
([[2]], [[1]], [[0.5]])
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from omnirec.data.histories import UserBatch
from omnirec.models.base import Recommender
from omnirec.pipeline.ann import VectorIndex
from omnirec.topk import mask_seen, top_k

Namer = Callable[[int], str]  # dense item id -> what a person reads (title or external id)
Cite = Callable[[int], str]  # dense history item -> how a reason refers to it ("“Title”, which you interacted with")


def citer(name_of: Namer, page: bool = False) -> Cite:
    """How reasons refer to the history item behind a hit: by its name in quotes, as something the user
    interacted with; on an item page (the history is the viewed item) as "this item". Item 0 (no single
    item: the whole history) is "your history", or "this item" on an item page.

    >>> citer(lambda i: "Star Wars (1977)")(5), citer(str, page=True)(5), citer(str)(0)
    ('“Star Wars (1977)”, which you interacted with', 'this item', 'your history')
    """
    if page:
        return lambda item: "this item"
    return lambda item: f"“{name_of(item)}”, which you interacted with" if item else "your history"


class SourceHits(NamedTuple):
    """What a source proposes for a batch; empty slots hold id 0 and score -inf."""

    ids: np.ndarray  # (B, N) dense item ids
    scores: np.ndarray  # (B, N) the source's scores, best first
    cited: np.ndarray  # (B, N) the history item (or category id, for `popular`) behind each hit, 0 if none
    strength: np.ndarray  # (B, N) the evidence value (similarity, decayed count, model score)


class Source(Protocol):
    """A named candidate generator."""

    name: str

    def retrieve(self, batch: UserBatch, n: int) -> SourceHits:
        """Up to `n` items per user, best first, never an item of the user's history."""

    def explain(self, cited: int, strength: float, rank: int, cite: Cite) -> str:
        """The reason for one hit, from its evidence (`cite` words the history item it derives from)."""


def empty_hits(rows: int, n: int) -> SourceHits:
    """A (rows, n) result with every slot empty."""
    return SourceHits(np.zeros((rows, n), dtype=np.int64), np.full((rows, n), -np.inf, dtype=np.float32),
                      np.zeros((rows, n), dtype=np.int64), np.zeros((rows, n), dtype=np.float32))


def recent_items(batch: UserBatch, row: int, recent: int) -> np.ndarray:
    """The `recent` most recent distinct items of one row, newest first."""
    history = batch.items[batch.indptr[row] : batch.indptr[row + 1]][::-1]
    _, first = np.unique(history, return_index=True)
    return history[np.sort(first)][:recent]


def _best_per_item(items: np.ndarray, sims: np.ndarray, cited: np.ndarray, seen: np.ndarray, n: int,
                   total: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge (item, sim, cited) triples of one user: per item the best sim and its cited item; score is the
    sum of sims when `total`, else the best. Returns the top `n` (ids, scores, cited, strength)."""
    keep = (items > 0) & ~np.isin(items, seen) & np.isfinite(sims)
    items, sims, cited = items[keep], sims[keep], cited[keep]
    if len(items) == 0:
        no_ids, no_values = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return no_ids, no_values, no_ids, no_values
    order = np.lexsort((-sims, items))  # by item, best sim first within an item
    items, sims, cited = items[order], sims[order], cited[order]
    first = np.r_[True, items[1:] != items[:-1]]
    unique = items[first]
    best, best_cited = sims[first], cited[first]
    score = np.add.reduceat(sims, np.flatnonzero(first)) if total else best
    top = np.argsort(-score, kind="stable")[:n]
    return unique[top], score[top].astype(np.float32), best_cited[top], best[top].astype(np.float32)


def _fill(out: SourceHits, row: int, found: tuple[np.ndarray, ...]) -> None:
    ids, scores, cited, strength = found
    m = len(ids)
    out.ids[row, :m], out.scores[row, :m], out.cited[row, :m], out.strength[row, :m] = ids, scores, cited, strength


class ScoreCache:
    """A model whose full score matrix for the last batch is kept (per thread), so the `model` source and
    the model ranker of one request run the model once. Scores are returned as copies."""

    def __init__(self, model: Recommender):
        self.model, self.name, self.n_items = model, model.name, model.n_items
        self._last = threading.local()

    def forget(self) -> None:
        """Drop every thread's kept scores (after a user is deleted, nothing derived from them stays)."""
        self._last = threading.local()

    def score(self, batch: UserBatch, items: np.ndarray | None = None) -> torch.Tensor:
        key = (batch.users.tobytes(), batch.indptr.tobytes(), batch.items.tobytes())
        if getattr(self._last, "key", None) != key:
            with torch.inference_mode():
                self._last.scores, self._last.key = self.model.score(batch), key
        scores = self._last.scores
        if items is None:
            return scores.clone()
        return scores.gather(1, torch.as_tensor(items, dtype=torch.int64, device=scores.device))


class ModelSource:
    """A trained model's top-N over the whole catalogue (history masked). Users without history get
    nothing from it: a model's list for them carries no signal, the fallback chain serves them."""

    def __init__(self, model: Recommender | ScoreCache, name: str | None = None):
        self.model, self.name = model, name or model.name

    def retrieve(self, batch: UserBatch, n: int) -> SourceHits:
        with torch.inference_mode():
            scores = mask_seen(self.model.score(batch), batch)
            ids, values = top_k(scores, n, row_keys=torch.from_numpy(batch.users))
        ids, values = ids.cpu().numpy(), values.cpu().numpy().astype(np.float32)
        empty = batch.lengths() == 0
        ids[empty], values[empty] = 0, -np.inf
        return SourceHits(ids, values, np.zeros_like(ids), values.copy())

    def explain(self, cited: int, strength: float, rank: int, cite: Cite) -> str:
        return f"{self.model.name} ranks it #{rank} for {cite(0)} (score {strength:.3f})"


class CooccurrenceSource:
    """Items that co-occur with the user's `recent` latest items: score = sum of item-item similarities,
    evidence = the recent item with the largest one."""

    name = "cooccurrence"

    def __init__(self, similarity: sp.csr_matrix, recent: int = 5, name: str | None = None):
        self.similarity = sp.csr_matrix(similarity, dtype=np.float32)
        self.recent = recent
        self.name = name or self.name

    def retrieve(self, batch: UserBatch, n: int) -> SourceHits:
        out = empty_hits(len(batch), n)
        sim = self.similarity
        for row in range(len(batch)):
            recent = recent_items(batch, row, self.recent)
            if len(recent) == 0:
                continue
            sub = sim[recent].tocoo()  # (r, I): neighbours of each recent item
            seen = batch.items[batch.indptr[row] : batch.indptr[row + 1]]
            _fill(out, row, _best_per_item(sub.col.astype(np.int64), sub.data, recent[sub.row], seen, n, total=True))
        return out

    def explain(self, cited: int, strength: float, rank: int, cite: Cite) -> str:
        return f"often chosen together with {cite(cited)} (similarity {strength:.2f})"


class EmbeddingSource:
    """Nearest neighbours of the user's `recent` latest items in an embedding space (model item
    embeddings, or text embeddings for the `content` source), through a `VectorIndex`.

    `vectors` (I + 1, D) are unit rows (row 0 padding); cosine = inner product."""

    def __init__(self, vectors: np.ndarray, index: VectorIndex, name: str = "embedding", recent: int = 5,
                 what: str = "embedding"):
        self.vectors, self.index, self.name, self.recent, self.what = vectors, index, name, recent, what

    def retrieve(self, batch: UserBatch, n: int) -> SourceHits:
        out = empty_hits(len(batch), n)
        recents = [recent_items(batch, row, self.recent) for row in range(len(batch))]
        queries = np.concatenate(recents) if recents else np.zeros(0, dtype=np.int64)
        if len(queries) == 0:
            return out
        lengths = batch.lengths()
        ids, sims = self.index.search(self.vectors[queries], n + int(lengths.max()) + 1)  # (Q, n + h)
        start = 0
        for row, recent in enumerate(recents):
            r = len(recent)
            if r:
                seen = batch.items[batch.indptr[row] : batch.indptr[row + 1]]
                cited = np.repeat(recent, ids.shape[1])
                _fill(out, row, _best_per_item(ids[start : start + r].ravel(), sims[start : start + r].ravel(),
                                               cited, seen, n, total=False))
            start += r
        return out

    def explain(self, cited: int, strength: float, rank: int, cite: Cite) -> str:
        if self.what == "text":
            return f"its description is close to {cite(cited)} (cosine {strength:.2f})"
        return f"similar to {cite(cited)} (cosine {strength:.2f})"


def decayed_counts(items: np.ndarray, times: np.ndarray | None, n_items: int, half_life: float,
                   now: float | None = None) -> np.ndarray:
    """(I + 1,) interactions per item, each weighted 2 ** (-(now - t) / half_life); plain counts when
    `half_life` is 0 or times are unknown. `now` defaults to the latest time."""
    if half_life <= 0 or times is None or len(times) == 0:
        return np.bincount(items, minlength=n_items + 1).astype(np.float64)
    now = float(times.max()) if now is None else now
    weights = np.exp2(-np.maximum(now - times.astype(np.float64), 0) / half_life)
    return np.bincount(items, weights=weights, minlength=n_items + 1)


class PopularSource:
    """Most popular items (time-decayed counts), overall or, with `categories`, in the categories of the
    user's recent items (evidence: the category); users without history get the overall list."""

    name = "popular"

    def __init__(self, counts: np.ndarray, categories: np.ndarray | None = None,
                 category_names: list[str] | None = None, recent: int = 5, half_life: float = 0.0,
                 name: str | None = None):
        self.counts = np.asarray(counts, dtype=np.float64)
        self.categories, self.category_names, self.recent = categories, category_names, recent
        self.half_life = half_life
        self.name = name or self.name
        order = np.argsort(-self.counts[1:], kind="stable") + 1
        self.order = order[self.counts[order] > 0]  # items with any interaction, most popular first
        self.by_category = {}  # category -> its items, most popular first
        if categories is not None:
            cats = categories[self.order]
            self.by_category = {int(c): self.order[cats == c] for c in np.unique(cats[cats > 0])}

    def _pool(self, batch: UserBatch, row: int, wanted: int) -> tuple[np.ndarray, bool]:
        """At least `wanted` most popular items for one user (from its categories when it has some)."""
        if self.categories is not None and batch.indptr[row + 1] > batch.indptr[row]:
            cats = np.unique(self.categories[recent_items(batch, row, self.recent)])
            lists = [self.by_category[int(c)][:wanted] for c in cats if int(c) in self.by_category]
            if lists:
                pool = np.concatenate(lists)
                return pool[np.argsort(-self.counts[pool], kind="stable")], True
        return self.order[:wanted], False

    def retrieve(self, batch: UserBatch, n: int) -> SourceHits:
        out = empty_hits(len(batch), n)
        for row in range(len(batch)):
            seen = batch.items[batch.indptr[row] : batch.indptr[row + 1]]
            pool, by_category = self._pool(batch, row, n + len(seen))
            pool = pool[~np.isin(pool, seen)][:n]
            cats = self.categories[pool] if by_category else np.zeros(len(pool), dtype=np.int64)
            values = self.counts[pool].astype(np.float32)
            _fill(out, row, (pool, values, cats, values))
        return out

    def explain(self, cited: int, strength: float, rank: int, cite: Cite) -> str:
        how = "time-decayed interactions" if self.half_life > 0 else "interactions"
        count = f"{strength:.1f}" if self.half_life > 0 else f"{strength:.0f}"  # plain counts are whole numbers
        if cited and self.category_names is not None:
            return f"popular in {self.category_names[cited]}, a category you browse ({count} {how})"
        return f"popular right now ({count} {how})"


class NewItemSource:
    """Items with at most `max_interactions` training interactions (new items), ranked by the text
    similarity of their description to the user's recent items; for a user without history, in
    catalogue order. `vectors` are unit text embeddings (I + 1, D)."""

    name = "new_items"

    def __init__(self, vectors: np.ndarray, counts: np.ndarray, max_interactions: int = 0, recent: int = 5,
                 name: str | None = None):
        self.vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        self.new = np.flatnonzero(np.asarray(counts)[1:] <= max_interactions) + 1
        self.recent = recent
        self.name = name or self.name

    def retrieve(self, batch: UserBatch, n: int) -> SourceHits:
        out = empty_hits(len(batch), n)
        if len(self.new) == 0:
            return out
        new_vectors = self.vectors[torch.from_numpy(self.new)]  # (N_new, D)
        for row in range(len(batch)):
            recent = recent_items(batch, row, self.recent)
            seen = batch.items[batch.indptr[row] : batch.indptr[row + 1]]
            if len(recent) == 0:
                pool = self.new[~np.isin(self.new, seen)][:n]
                _fill(out, row, (pool, np.zeros(len(pool), np.float32), np.zeros(len(pool), np.int64), np.zeros(len(pool), np.float32)))
                continue
            sims = (self.vectors[torch.from_numpy(recent)] @ new_vectors.T).numpy()  # (r, N_new)
            items = np.tile(self.new, len(recent))
            _fill(out, row, _best_per_item(items, sims.ravel(), np.repeat(recent, len(self.new)), seen, n, total=False))
        return out

    def explain(self, cited: int, strength: float, rank: int, cite: Cite) -> str:
        if cited:
            return f"new item; its description is close to {cite(cited)} (cosine {strength:.2f})"
        return "new item in the catalogue"
