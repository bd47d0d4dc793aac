"""Training batches for the sequence models: each user's sequence cut into windows, batched by similar
length, inputs and next-item targets aligned, sharded across processes for DDP.

>>> h = Histories(np.array([0, 0, 3, 5]), np.array([1, 2, 3, 4, 5]))  # user 1: 1 2 3, user 2: 4 5
>>> b = make_batch(h, np.array([1, 2]), max_len=50)
>>> b.items.tolist(), b.targets.tolist()
([[1, 2], [0, 4]], [[2, 3], [0, 5]])
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from omnirec.data.histories import Histories


class TrainBatch(NamedTuple):
    """Users' training sequences, left-padded with item 0."""

    items: torch.Tensor  # (B, T) input items
    times: torch.Tensor | None  # (B, T) their times, where the data has times
    targets: torch.Tensor  # (B, T) the next item at each position; 0 = not supervised
    scale: float = 1.0  # loss weight: this process's share of the global batch's supervised positions x world size


def windows(sequences: Histories, max_len: int) -> Histories:
    """Each user's sequence cut, from its end, into windows of at most max_len + 1 items that overlap by
    one item: every item but a user's first is a target in exactly one window, read with up to max_len
    items before it. Users with fewer than two items have no window.

    >>> windows(Histories(np.array([0, 0, 6]), np.arange(1, 7)), max_len=2).items.tolist()
    [1, 2, 2, 3, 4, 4, 5, 6]
    """
    lengths = sequences.lengths()
    n_windows = np.where(lengths >= 2, -(-(lengths - 1) // max_len), 0)  # ceil((n - 1) / max_len)
    owner = np.repeat(np.arange(len(lengths)), n_windows)
    k = np.arange(n_windows.sum()) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)  # 0 = the last window
    ends = lengths[owner] - k * max_len  # exclusive, within the user's sequence
    starts = np.maximum(0, ends - max_len - 1)
    order = np.lexsort((-k, owner))  # each user's windows oldest first
    starts, ends, base = starts[order], ends[order], sequences.indptr[owner[order]]
    indptr = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=indptr[1:])
    sizes = ends - starts
    index = np.repeat(base + starts - indptr[:-1], sizes) + np.arange(indptr[-1])
    times = None if sequences.times is None else sequences.times[index]
    return Histories(indptr, sequences.items[index], times)


def training_batches(
    sequences: Histories, max_len: int, batch_size: int, rng: np.random.Generator, shard: tuple[int, int] = (0, 1)
) -> Iterator[TrainBatch]:
    """Every window of every user (see `windows`), in random batches of similar lengths (less padding).

    Each position predicts the next item from the (at most `max_len`) items before it: every item but a
    user's first is a target once, the same supervision as training on all prefixes separately.
    With `shard` = (rank, world size), every process draws the same global batches and keeps its rows
    rank::world of each, weighted so that gradients averaged over the processes equal those of the
    global batch in one process.
    """
    rows = windows(sequences, max_len)
    lengths = rows.lengths()
    order = rng.permutation(len(lengths))
    chunk = batch_size * 32
    batches = []
    for start in range(0, len(order), chunk):  # sort by length within chunks, keep the batches random
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rank, world = shard
    supervised = np.minimum(lengths, max_len + 1) - 1  # targets per window
    for at in rng.permutation(len(batches)):
        if world == 1:
            yield make_batch(rows, batches[at], max_len)
            continue
        mine = batches[at][rank::world]
        share = supervised[mine].sum() / supervised[batches[at]].sum() * world
        if len(mine) == 0:  # fewer rows than processes: take part in the step with a zero weight
            mine, share = batches[at][:1], 0.0
        yield make_batch(rows, mine, max_len)._replace(scale=float(share))


def batches_per_epoch(sequences: Histories, max_len: int, batch_size: int) -> int:
    """How many batches `training_batches` yields: its chunks are whole multiples of `batch_size`, so
    only the last batch of all can be short."""
    return -(-len(windows(sequences, max_len).lengths()) // batch_size)


def make_batch(sequences: Histories, users: np.ndarray, max_len: int) -> TrainBatch:
    """The training batch of `users`: inputs are items[:-1], targets items[1:], the last max_len of each."""
    batch = sequences.batch(users)
    width = int(min(batch.lengths().max(), max_len + 1))
    items = torch.from_numpy(batch.padded(width))  # (B, T + 1)
    inputs, targets = items[:, :-1], items[:, 1:]
    targets = targets.masked_fill(inputs == 0, 0)  # a first item has nothing before it
    times = None if batch.times is None else torch.from_numpy(batch.padded(width, batch.times))[:, :-1]
    return TrainBatch(inputs, times, targets)
