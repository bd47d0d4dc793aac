"""Training batches for the collaborative models: every (user, item) training pair once an epoch, in
random batches; sharded across processes for DDP.

A pair's position is its index in the training sequences' items (`Histories.items`), so a model's step
can look up whatever it needs about it (the item, the user's other items).

>>> epoch = list(pair_batches(np.array([1, 1, 2, 3]), 3, np.random.default_rng(0)))
>>> [len(b.positions) for b in epoch], sorted(int(p) for b in epoch for p in b.positions)
([3, 1], [0, 1, 2, 3])
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch


class PairBatch(NamedTuple):
    """Training pairs a step learns from."""

    users: torch.Tensor  # (B,) int64 dense user ids
    positions: np.ndarray  # (B,) each pair's index in the training sequences' items
    scale: float = 1.0  # loss weight: this process's share of the global batch x world size (DDP)


def pair_batches(
    users: np.ndarray, batch_size: int, rng: np.random.Generator, shard: tuple[int, int] = (0, 1)
) -> Iterator[PairBatch]:
    """One epoch over the pairs (`users[p]` is pair p's user) in a random order, `batch_size` at a time.
    With `shard` = (rank, world size), every process draws the same global batches and keeps its rows
    rank::world of each, weighted so that the averaged gradients equal those of the global batch."""
    user_tensor = torch.from_numpy(np.asarray(users, dtype=np.int64))
    order = rng.permutation(len(users))
    rank, world = shard
    for lo in range(0, len(order), batch_size):
        at = order[lo : lo + batch_size]
        if world == 1:
            yield PairBatch(user_tensor[at], at)
            continue
        mine = at[rank::world]
        share = len(mine) / len(at) * world
        if len(mine) == 0:  # fewer rows than processes: take part in the step with a zero weight
            mine, share = at[:1], 0.0
        yield PairBatch(user_tensor[mine], mine, float(share))


def pair_batches_per_epoch(n_pairs: int, batch_size: int) -> int:
    """How many batches `pair_batches` yields."""
    return -(-n_pairs // batch_size)
