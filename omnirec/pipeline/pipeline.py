"""The final list: named sources propose candidates, which are merged (every proposing source kept), ranked,
re-ranked (exclusions, boosts, freshness, MMR diversity, category caps, pins), filled to k by a fallback
chain, and explained.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> from omnirec.pipeline.sources import PopularSource
>>> split = split_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=30, n_items=20))))
>>> train = split.train_data()
>>> pipe = Pipeline({"popular": PopularSource(train.item_counts)}, n_items=train.n_items)
>>> [rec] = pipe.recommend(split.histories("test").batch([1]), k=3)
>>> len(rec), rec[0].sources, rec[0].reason.startswith("popular")
(3, ('popular',), True)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from omnirec.data.histories import UserBatch
from omnirec.pipeline.rank import Candidates, FusionRanker, Ranker
from omnirec.pipeline.rerank import RerankConfig, mmr, place_pins, scale_scores
from omnirec.pipeline.sources import Cite, Namer, Source, SourceHits, citer


@dataclass
class Recommendation:
    """One listed item: dense id, the ranker's score, every source that proposed it and the reason."""

    item: int
    score: float
    sources: tuple[str, ...]
    reason: str
    evidence: dict[str, float | int | str]


TIE_BREAK = 1e-4  # weight of the sources' rank fusion inside the ranker's [0, 1] scores


@dataclass(frozen=True)
class Rules:
    """Business rules in dense ids: never-shown items, boosted items, pins (item -> 1-based position)."""

    blocked: frozenset[int] = frozenset()
    boosted: frozenset[int] = frozenset()
    pins: dict[int, int] = field(default_factory=dict)


def merge(hits: list[SourceHits]) -> Candidates:
    """Union of the sources' lists per row, each item once, with every source's rank, score and evidence."""
    n_rows, n_sources = hits[0].ids.shape[0], len(hits)
    ids = np.concatenate([h.ids for h in hits], axis=1)  # (B, M): every source's list side by side
    present = ids > 0
    source = np.concatenate([np.full(h.ids.shape, s) for s, h in enumerate(hits)], axis=1)[present]
    rank = np.concatenate([np.broadcast_to(np.arange(1, h.ids.shape[1] + 1), h.ids.shape) for h in hits], axis=1)[present]
    base = int(ids.max(initial=0)) + 1
    pairs = np.broadcast_to(np.arange(n_rows)[:, None], ids.shape)[present] * base + ids[present]
    unique, inverse = np.unique(pairs, return_inverse=True)  # (row, item) pairs, sorted by row
    rows = unique // base
    per_row = np.bincount(rows, minlength=n_rows)
    cols = np.arange(len(unique)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    shape = (n_rows, max(int(per_row.max(initial=0)), 1))
    out_ids = np.zeros(shape, dtype=np.int64)
    out_ids[rows, cols] = unique % base
    at = (rows[inverse], cols[inverse], source)
    ranks = np.zeros((*shape, n_sources), dtype=np.int64)
    ranks[at] = rank
    scores = np.full((*shape, n_sources), np.nan, dtype=np.float32)
    scores[at] = np.concatenate([h.scores for h in hits], axis=1)[present]
    cited = np.zeros((*shape, n_sources), dtype=np.int64)
    cited[at] = np.concatenate([h.cited for h in hits], axis=1)[present]
    strength = np.zeros((*shape, n_sources), dtype=np.float32)
    strength[at] = np.concatenate([h.strength for h in hits], axis=1)[present]
    return Candidates(out_ids, ranks, scores, cited, strength)


def in_rows(ids: np.ndarray, batch: UserBatch) -> np.ndarray:
    """(B, C) whether each id is in the history of its row."""
    base = int(max(ids.max(initial=0), batch.items.max(initial=0))) + 1
    history = np.repeat(np.arange(len(batch)), batch.lengths()) * base + batch.items
    return np.isin(np.arange(len(batch))[:, None] * base + ids, history)


class Pipeline:
    """sources -> merge -> rank -> re-rank -> fallback -> explain, for batches of users.

    sources: name -> Source; sizes: name -> how many candidates it proposes (default n_candidates); fallback: names of extra sources, in order, that fill lists
    left shorter than k. item_vectors: (I + 1, D) unit vectors for MMR; categories: (I + 1,) category id
    per item (0 = none) for caps; first_seen: (I + 1,) first time of each item, for freshness.
    Rules name items by dense id (`resolve_rules` turns external ids into these).
    """

    def with_rules(self, blocked: frozenset[int]) -> Pipeline:
        """The same pipeline with more items blocked (a request's own exclusions)."""
        other = copy.copy(self)
        other.rules = Rules(self.rules.blocked | blocked, self.rules.boosted, self.rules.pins)
        return other

    def with_rerank(self, rerank: RerankConfig) -> Pipeline:
        """The same pipeline with other re-rank settings (same sources, ranker and rules)."""
        other = copy.copy(self)
        other.rerank = rerank
        return other

    def __init__(self, sources: dict[str, Source], n_items: int, ranker: Ranker | None = None,
                 rerank: RerankConfig = RerankConfig(), fallback: dict[str, Source] | None = None,
                 n_candidates: int = 200, item_vectors: np.ndarray | None = None,
                 categories: np.ndarray | None = None, first_seen: np.ndarray | None = None, now: float = 0.0,
                 rules: Rules | None = None, name_of: Namer = str, sizes: dict[str, int] | None = None):
        if not sources:
            raise ValueError("a pipeline needs at least one candidate source")
        if rerank.diversity > 0 and item_vectors is None:
            raise ValueError("diversity > 0 needs item vectors")
        if rerank.category_cap and categories is None:
            raise ValueError("category_cap needs item categories")
        if rerank.freshness and first_seen is None:
            raise ValueError("freshness needs the items' first-seen times")
        self.sources, self.fallback = sources, fallback or {}
        self.n_items, self.ranker, self.rerank, self.n_candidates = n_items, ranker or FusionRanker(), rerank, n_candidates
        self.item_vectors = None if item_vectors is None else torch.from_numpy(np.ascontiguousarray(item_vectors, dtype=np.float32))
        self.categories = categories
        self.first_seen, self.now = first_seen, now
        self.rules = rules or Rules()
        self.name_of = name_of
        self.sizes = sizes or {}

    # -- the list -------------------------------------------------------------------------------
    def candidates(self, batch: UserBatch) -> Candidates:
        """Merged candidates of every source."""
        return merge([source.retrieve(batch, self.sizes.get(name, self.n_candidates)) for name, source in self.sources.items()])

    def _relevance(self, batch: UserBatch, cands: Candidates) -> torch.Tensor:
        rel = scale_scores(self.ranker.rank(batch, cands))  # (B, C) in [0, 1]
        # Ties (a ranker with nothing to go on, e.g. for an empty history) go to the sources' consensus.
        rel = rel + TIE_BREAK * scale_scores(FusionRanker().rank(batch, cands)).nan_to_num(0.0, neginf=0.0)
        hide = np.isin(cands.ids, list(self.rules.blocked))
        if self.rerank.exclude_seen:
            hide |= in_rows(cands.ids, batch)
        if self.rules.boosted and self.rerank.boost:
            rel = rel + self.rerank.boost * torch.from_numpy(np.isin(cands.ids, list(self.rules.boosted)))
        if self.rerank.freshness:
            age = np.maximum(self.now - self.first_seen[cands.ids], 0)
            rel = rel + self.rerank.freshness * torch.from_numpy(np.exp2(-age / self.rerank.freshness_half_life).astype(np.float32))
        return rel.masked_fill(torch.from_numpy(hide | (cands.ids == 0)), -torch.inf)

    def _select(self, cands: Candidates, rel: torch.Tensor, k: int) -> np.ndarray:
        """(B, k) positions into the candidates (-1 = unfilled), by MMR with caps."""
        vectors = None
        if self.rerank.diversity > 0:
            vectors = self.item_vectors[torch.from_numpy(cands.ids)]  # (B, C, D)
        cats = None if self.categories is None else torch.from_numpy(self.categories[cands.ids])
        return mmr(rel, vectors, k, self.rerank.diversity, cats, self.rerank.category_cap).numpy()

    def recommend_ids(self, batch: UserBatch, k: int = 10, candidates: Candidates | None = None) -> np.ndarray:
        """(B, k) dense ids of the final lists (0 = unfilled), without explanations (for evaluation)."""
        rows = self.recommend(batch, k, explain=False, candidates=candidates)
        return np.array([[r.item for r in row] + [0] * (k - len(row)) for row in rows], dtype=np.int64).reshape(len(batch), k)

    def recommend(self, batch: UserBatch, k: int = 10, explain: bool = True,
                  candidates: Candidates | None = None, page: bool = False) -> list[list[Recommendation]]:
        """The final list of each user of the batch, at most k items, each with its sources and reason.
        `candidates` (from `self.candidates(batch)`) saves retrieving again when only re-ranking changes;
        `page`: the histories are items being viewed (an item page), and reasons say "this item"."""
        cands = self.candidates(batch) if candidates is None else candidates
        rel = self._relevance(batch, cands)
        picks = self._select(cands, rel, k)
        names = list(self.sources)
        cite = citer(self.name_of, page)
        out = []
        for row in range(len(batch)):
            chosen = [p for p in picks[row] if p >= 0]
            recs = [self._describe(cands, row, p, float(rel[row, p]), names, cite if explain else None) for p in chosen]
            recs = self._fill(batch, row, recs, k, cite if explain else None)
            out.append(self._pin(recs, k, explain))
        return out

    # -- fallback, pins, reasons -------------------------------------------------------------------
    def _fill(self, batch: UserBatch, row: int, recs: list[Recommendation], k: int, cite: Cite | None) -> list[Recommendation]:
        """Fill a short list from the fallback sources, in order, skipping what is listed, seen or blocked."""
        if len(recs) >= k or not self.fallback:
            return recs
        one = UserBatch(batch.users[row : row + 1], np.array([0, batch.indptr[row + 1] - batch.indptr[row]]),
                        batch.items[batch.indptr[row] : batch.indptr[row + 1]],
                        None if batch.times is None else batch.times[batch.indptr[row] : batch.indptr[row + 1]])
        taken = {r.item for r in recs} | self.rules.blocked
        if self.rerank.exclude_seen:
            taken |= set(one.items.tolist())
        cap_counts: dict[int, int] = {}
        if self.rerank.category_cap and self.categories is not None:
            for r in recs:
                cap_counts[int(self.categories[r.item])] = cap_counts.get(int(self.categories[r.item]), 0) + 1
        for name, source in self.fallback.items():
            hits = source.retrieve(one, k + len(taken))
            for pos, item in enumerate(hits.ids[0].tolist()):
                if len(recs) >= k:
                    return recs
                if item == 0 or item in taken or self._capped(item, cap_counts):
                    continue
                taken.add(item)
                reason = source.explain(int(hits.cited[0, pos]), float(hits.strength[0, pos]), pos + 1, cite) if cite else ""
                recs.append(Recommendation(item, float("-inf"), (name,), reason,
                                           {"source": name, "cited": int(hits.cited[0, pos]), "strength": float(hits.strength[0, pos]), "fallback": 1}))
        return recs

    def _capped(self, item: int, counts: dict[int, int]) -> bool:
        if not self.rerank.category_cap or self.categories is None:
            return False
        cat = int(self.categories[item])
        if cat == 0:
            return False
        if counts.get(cat, 0) >= self.rerank.category_cap:
            return True
        counts[cat] = counts.get(cat, 0) + 1
        return False

    def _pin(self, recs: list[Recommendation], k: int, explain: bool) -> list[Recommendation]:
        if not self.rules.pins:
            return recs[:k]
        by_item = {r.item: r for r in recs}
        order = place_pins(np.array([r.item for r in recs], dtype=np.int64), self.rules.pins, k)
        pinned = {item: Recommendation(item, float("inf"), ("pinned",), "placed here by a business rule" if explain else "",
                                       {"source": "pinned", "position": pos}) for item, pos in self.rules.pins.items()}
        return [pinned[i] if i in self.rules.pins else by_item[i] for i in order.tolist()]

    def _describe(self, cands: Candidates, row: int, pos: int, score: float, names: list[str], cite: Cite | None) -> Recommendation:
        """The item at candidate position `pos`: its sources, and the reason of the source that ranked it best
        among those citing evidence from the user's own history (else among all that proposed it)."""
        proposed = np.flatnonzero(cands.ranks[row, pos] > 0)
        citing = proposed[cands.cited[row, pos, proposed] > 0]
        pool = citing if len(citing) else proposed
        best = pool[np.argmin(cands.ranks[row, pos, pool])]
        cited, strength, rank = int(cands.cited[row, pos, best]), float(cands.strength[row, pos, best]), int(cands.ranks[row, pos, best])
        item = int(cands.ids[row, pos])
        reason = self.sources[names[best]].explain(cited, strength, rank, cite) if cite else ""
        evidence = {"source": names[best], "cited": cited, "strength": strength, "rank": rank}
        return Recommendation(item, score, tuple(names[s] for s in proposed), reason, evidence)
