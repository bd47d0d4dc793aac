"""Validation during training: the NDCG@k of each user's first target, ranked exactly as the test ranks
(`top_k`'s tie order), what early stopping keeps the best epoch by."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch

from omnirec.data.histories import Histories, UserBatch
from omnirec.topk import mask_seen, rows_per_block, tie_keys


def first_target_ndcg(
    score: Callable[[UserBatch], torch.Tensor], histories: Histories, targets: Histories, users: np.ndarray,
    n_items: int, k: int = 10, batch_size: int = 1024,
) -> float:
    """Mean NDCG@k of each of `users`' first target, ranked by `score` against every item not in the history.

    Ties are broken as the test evaluation breaks them (`top_k`, used by `full_ranking_eval`): at random
    by (user id, item, seed 0), so the target ranks behind every item scoring higher and behind the tied
    items whose key comes first. This is the same number `full_ranking_eval` reports on the validation
    split, which an expected rank among ties (#better + #tied / 2) would not be: early stopping then
    picks the epoch the test protocol would. Counting only strictly better items put the target first
    among its ties, so a model scoring every item equally got a perfect NDCG.
    A target in the history is masked and gains 0, as in the test. Any non-finite score (NaN or inf,
    as from a diverged epoch) makes the whole validation fail: it returns -inf, which never counts as
    the best, and warns how many scores were not finite.

    >>> none = Histories(np.zeros(202, dtype=np.int64), np.array([], dtype=np.int64))  # 200 users, no history
    >>> wanted = Histories(np.arange(-1, 201).clip(0), np.ones(200, dtype=np.int64))  # each wants item 1
    >>> flat = lambda batch: torch.zeros(len(batch.users), 101)  # 100 items, all tied: a random ranking
    >>> round(first_target_ndcg(flat, none, wanted, np.arange(1, 201), n_items=100), 2)  # 0.045 expected
    0.03
    >>> right = lambda batch: torch.eye(101)[[1] * len(batch.users)]  # item 1 first for everyone
    >>> first_target_ndcg(right, none, wanted, np.arange(1, 201), n_items=100)
    1.0
    """
    gains = first_target_gains(score, histories, targets, users, n_items, k, batch_size)
    return (float(gains.mean()) if len(gains) else 0.0) if gains is not None else -math.inf


def first_target_gains(
    score: Callable[[UserBatch], torch.Tensor], histories: Histories, targets: Histories, users: np.ndarray,
    n_items: int, k: int = 10, batch_size: int = 1024,
) -> np.ndarray | None:
    """(len(users),) each user's NDCG@k of their first target, as `first_target_ndcg` averages them (so that
    groups of users can be told apart); None, with the same warning, where any score is not finite."""
    batch_size = rows_per_block(n_items, batch_size)
    gains, n_bad, n_scores = [], 0, 0
    for start in range(0, len(users), batch_size):
        batch = histories.batch(users[start : start + batch_size])
        raw = score(batch).float().cpu()  # (B, I + 1)
        n_bad += int((~torch.isfinite(raw[:, 1:])).sum())
        n_scores += raw[:, 1:].numel()
        if n_bad:
            continue  # the validation has failed; only the count is still wanted
        scores = mask_seen(raw, batch)
        wanted = torch.from_numpy(targets.items[targets.indptr[batch.users]])  # (B,)
        rank = _target_rank(scores, wanted, torch.from_numpy(batch.users))  # (B,)
        reachable = torch.isfinite(scores.gather(1, wanted[:, None]))[:, 0]  # (B,) False: target in the history
        gains.append(torch.where(reachable & (rank < k), 1.0 / torch.log2(rank.double() + 2.0), 0.0))
    if n_bad:
        warnings.warn(f"validation failed: {n_bad} of {n_scores} scores are not finite (NaN or inf); it counts "
                      "as NDCG -inf, so these weights are never kept as the best", RuntimeWarning, stacklevel=2)
        return None
    return torch.cat(gains).numpy() if gains else np.zeros(0)


def _target_rank(scores: torch.Tensor, wanted: torch.Tensor, row_keys: torch.Tensor) -> torch.Tensor:
    """(B,) items ahead of each row's `wanted` item in `top_k`'s order: those scoring higher, then the tied
    ones with a smaller tie key. Keys are computed only for the rows with ties (few, for a trained model)."""
    target = scores.gather(1, wanted[:, None])  # (B, 1)
    rank = (scores > target).sum(1)  # (B,)
    # rows where another item ties a reachable target (a masked one, -inf, ties the other masked items)
    tied = (((scores == target).sum(1) > 1) & torch.isfinite(target[:, 0])).nonzero().squeeze(1)
    if len(tied):
        keys = tie_keys(row_keys[tied, None], torch.arange(scores.shape[1])[None, :])  # (b, I + 1)
        before = keys < keys.gather(1, wanted[tied, None])
        rank[tied] += ((scores[tied] == target[tied]) & before).sum(1)
    return rank
