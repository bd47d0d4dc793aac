"""Rankers over merged candidates: the learned ranker must beat the inputs it learns from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnirec.data.histories import Histories, UserBatch
from omnirec.evaluate import metrics
from omnirec.pipeline.rank import Candidates, FusionRanker, LearnedRanker
from omnirec.topk import top_k

N_ITEMS, LIST = 200, 10  # each source proposes LIST items


def two_sources(n_users: int, seed: int) -> tuple[UserBatch, Candidates, Histories]:
    """Sources A and B, each right for half the users: for those, the source's first item is the target
    and its scores run high; for the others its list lacks the target and its scores run lower. The
    ranges overlap, so the score level tells which source to trust most of the time, not always. Ranks
    alone cannot tell: both sources always put something first."""
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(np.arange(1, N_ITEMS + 1), 2 * LIST, replace=False) for _ in range(n_users)])
    ranks = np.zeros((n_users, 2 * LIST, 2), dtype=np.int64)
    scores = np.full((n_users, 2 * LIST, 2), np.nan)
    right = np.arange(n_users) % 2  # 0: A is right for this user, 1: B is
    for source in (0, 1):
        at = slice(source * LIST, (source + 1) * LIST)
        ranks[:, at, source] = np.arange(1, LIST + 1)
        top = np.where(right == source, rng.uniform(0.5, 1.0, n_users), rng.uniform(0.2, 0.7, n_users))
        scores[:, at, source] = top[:, None] * np.linspace(1.0, 0.5, LIST)  # best first, as a source lists them
    targets = ids[np.arange(n_users), right * LIST]  # the right source's first item
    users = np.arange(1, n_users + 1)
    batch = UserBatch(users, np.zeros(n_users + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))
    candidates = Candidates(ids, ranks, scores, np.zeros_like(ranks), np.zeros(ranks.shape))
    return batch, candidates, Histories(np.r_[0, np.arange(n_users + 1)], targets)


def ndcg10(scores: torch.Tensor, batch: UserBatch, candidates: Candidates, targets: Histories) -> float:
    """NDCG@10 of the candidates ordered by `scores` (ties at random, as everywhere)."""
    order, _ = top_k(scores, 10, row_keys=torch.from_numpy(batch.users))
    listed = np.take_along_axis(candidates.ids, order.numpy(), axis=1)  # (B, 10) item ids
    hits = listed == targets.items[targets.indptr[batch.users], None]
    return float(metrics.ndcg(hits, np.ones(len(batch.users), dtype=np.int64), 10).mean())


def test_the_learned_ranker_beats_each_of_its_sources_and_their_fusion():
    fit_batch, fit_candidates, fit_targets = two_sources(600, seed=0)
    batch, candidates, targets = two_sources(600, seed=1)  # fresh users: the ranker is not scored on what it saw
    ranker = LearnedRanker(np.ones(N_ITEMS + 1)).fit([(fit_batch, fit_candidates, fit_targets)])
    learned = ndcg10(ranker.rank(batch, candidates), batch, candidates, targets)
    alone = {name: ndcg10(FusionRanker(np.array(weights)).rank(batch, candidates), batch, candidates, targets)
             for name, weights in (("A", [1.0, 0.0]), ("B", [0.0, 1.0]))}
    fused = ndcg10(FusionRanker().rank(batch, candidates), batch, candidates, targets)
    assert max(alone.values()) == pytest.approx(0.5, abs=0.01)  # each source is right for half the users
    # fusion sees ranks only, so it can only guess which first item to put first (about 0.5 + 0.5 x 0.63)
    assert fused < 0.85
    assert learned > max(alone.values()) + 0.3 and learned > fused + 0.05, (learned, alone, fused)
