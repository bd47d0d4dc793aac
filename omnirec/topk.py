"""Masking of seen items and top-k, written once for every layer that ranks: models' `recommend`, the
evaluation, the pipeline's sources. Equal scores are ordered at random by a pure function of (user, item,
seed), so a list never depends on the other users in a batch, and ids (which follow first appearance and so
popularity) never break ties.

>>> scores = torch.tensor([[0.0, 0.5, 0.9, 0.5]])  # items 1 and 3 tie
>>> ids, values = top_k(scores, 2)
>>> ids.tolist(), values.tolist()
([[2, 1]], [[0.8999999761581421, 0.5]])
"""

from __future__ import annotations

import numpy as np
import torch

from omnirec.data.histories import UserBatch


def mask_seen(scores: torch.Tensor, batch: UserBatch) -> torch.Tensor:
    """Set the padding column and every item in each row's history to -inf, in place."""
    scores[:, 0] = -torch.inf
    rows = np.repeat(np.arange(len(batch.users)), batch.lengths())
    if len(rows):
        scores[torch.from_numpy(rows).to(scores.device), torch.from_numpy(batch.items).to(scores.device)] = -torch.inf
    return scores


SCORE_BUDGET_BYTES = 512 * 2**20  # the most a (users x items) float32 score block may take


def rows_per_block(n_items: int, most: int = 2048, budget: int = SCORE_BUDGET_BYTES) -> int:
    """How many users to score at once so that their (B, I + 1) float32 scores fit in `budget`: the full
    `most` on small catalogues, fewer on large ones (1,000,000 items: 134 users per 512 MiB).

    >>> rows_per_block(12_000), rows_per_block(1_000_000)
    (2048, 134)
    """
    return int(max(1, min(most, budget // (4 * (n_items + 1)))))


_PRIME = 2_147_483_647  # 2**31 - 1


def _mix(x: torch.Tensor) -> torch.Tensor:
    mask = 0x7FFFFFFF
    for mult in (0x2C1B3C6D, 0x297A2D39):
        x = ((x ^ (x >> 15)) * mult) & mask
    return x ^ (x >> 16)


def tie_keys(rows: torch.Tensor, items: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Pseudo-random int64 keys, a pure function of (row key, item id, seed): the tie-break order.

    rows: (B, 1) and items: (B, W) or (1, W), broadcast together. Each row orders items by an affine
    map (a * item + b) mod (2**31 - 1) with (a, b) hashed from the row key: a different scramble
    per user, at three integer operations per item.
    """
    a = _mix(rows * 0x9E3779B1 + seed * 0xC2B2AE3D) % (_PRIME - 1) + 1  # (B, 1), never 0
    b = _mix(rows * 0x85EBCA77 + seed + 1)  # (B, 1)
    return (items * a + b) % _PRIME


def top_k(
    scores: torch.Tensor, k: int, row_keys: torch.Tensor | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, k) item ids and scores, best first; equal scores are ordered at random.

    `torch.topk` orders ties by position, which would favour low ids; ids follow first appearance
    and so correlate with popularity, so a fixed order would flatter models that tie a lot. The
    random order depends only on (row key, item, seed): pass user ids as `row_keys` and a user's
    list does not depend on the other users in the batch.
    Slots left without a finite score (fewer than k unmasked items) hold id 0 and score -inf.
    """
    n_rows, n_cols = scores.shape
    kept = min(k, n_cols)
    rows = (torch.arange(n_rows) if row_keys is None else torch.as_tensor(row_keys)).to(scores.device)[:, None]
    # One wider top-k holds, for almost every row, all the items tied with the k-th best.
    values, ids = torch.topk(scores, min(2 * kept + 64, n_cols), dim=1)  # (B, W)
    head = values[:, : kept + 1]
    if ((head[:, :-1] == head[:, 1:]) & torch.isfinite(head[:, 1:])).any():
        values, ids = _order_ties(values, ids, tie_keys(rows, ids, seed))
        overflow = (values[:, -1] == values[:, kept - 1]) & (values.shape[1] < n_cols)  # tie group cut off
        if overflow.any():  # a tie group larger than the window: choose among all its members
            at = overflow.nonzero().squeeze(1)
            ids[at, :kept] = _big_tie_group(scores[at], values[at], ids[at], rows[at], kept, seed)
    values, ids = values[:, :kept], ids[:, :kept]
    if k > kept:
        values = torch.nn.functional.pad(values, (0, k - kept), value=-torch.inf)
        ids = torch.nn.functional.pad(ids, (0, k - kept), value=0)
    return ids.masked_fill(torch.isneginf(values), 0), values


def _big_tie_group(
    scores: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, k: int, seed: int
) -> torch.Tensor:
    """(B, k) ids where the k-th best value b is shared by more items than the window holds.

    Items scoring above b all lie in the window (it ends inside the tie group); the rest of the list
    is the tied items with the smallest keys, drawn from every column.
    """
    boundary = values[:, k - 1 : k]  # (B, 1)
    n_above = (values > boundary).sum(dim=1, keepdim=True)  # (B, 1), < k
    items = torch.arange(scores.shape[1], device=scores.device)[None, :]
    keys = tie_keys(rows, items, seed).masked_fill(scores != boundary, torch.iinfo(torch.int64).max)
    tied = torch.topk(keys, k, dim=1, largest=False).indices  # (B, k) tied items, smallest keys first
    slot = torch.arange(k, device=scores.device)[None, :]
    from_tied = tied.gather(1, (slot - n_above).clamp(min=0))
    return torch.where(slot < n_above, ids[:, :k], from_tied)


def _order_ties(values: torch.Tensor, ids: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-sort (B, W) top lists by value, breaking ties by `keys` (B, W)."""
    by_key = torch.argsort(keys, dim=1)
    values, ids = values.gather(1, by_key), ids.gather(1, by_key)
    by_value = torch.argsort(values, dim=1, descending=True, stable=True)
    return values.gather(1, by_value), ids.gather(1, by_value)
