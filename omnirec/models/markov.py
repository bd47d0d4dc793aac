"""First-order Markov chain over item transitions: the next item depends on the last one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from omnirec.data.histories import UserBatch
from omnirec.data.train_data import TrainData
from omnirec.models.base import Recommender, sparse_from_state, sparse_state


@dataclass(frozen=True)
class MarkovConfig:
    """backoff: weight of (normalised) popularity added to P(next | last), which breaks ties and covers
    items never seen after the last one."""

    backoff: float = 1e-3

    def __post_init__(self) -> None:
        if self.backoff < 0:
            raise ValueError("backoff must be >= 0")


def transition_matrix(indptr: np.ndarray, items: np.ndarray, n_items: int) -> sp.csr_matrix:
    """(I + 1, I + 1) row-normalised counts of consecutive (item, next item) pairs within each history."""
    src, dst = items[:-1], items[1:]
    same_user = np.ones(len(src), dtype=bool)
    boundaries = indptr[1:-1][(indptr[1:-1] > 0) & (indptr[1:-1] < len(items))] - 1
    same_user[boundaries] = False  # the pair that would cross from one user to the next
    counts = sp.csr_matrix(
        (np.ones(same_user.sum(), dtype=np.float32), (src[same_user], dst[same_user])), shape=(n_items + 1, n_items + 1)
    )
    counts.sum_duplicates()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    return sp.diags(1.0 / np.maximum(totals, 1.0)).astype(np.float32) @ counts


class Markov(Recommender):
    """score(j | history) = P(j | last item) + backoff * popularity(j).

    >>> Markov().name
    'markov'
    """

    name = "markov"
    quick = True
    Config = MarkovConfig

    def _fit(self, data: TrainData) -> None:
        seqs = data.sequences
        self.transitions = transition_matrix(seqs.indptr, seqs.items, data.n_items)  # (I, I)
        self.popularity = (data.item_counts / max(data.item_counts.max(), 1.0)).astype(np.float32)  # (I,)

    def _score(self, batch: UserBatch) -> torch.Tensor:
        scores = torch.from_numpy(self.transitions[batch.last_items()].toarray())  # (B, I)
        return scores.add_(self.config.backoff * torch.from_numpy(self.popularity))

    def _get_state(self) -> dict[str, np.ndarray]:
        return {**sparse_state("transitions", self.transitions), "popularity": self.popularity}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.transitions = sparse_from_state("transitions", state)
        self.popularity = state["popularity"]
