"""Item-based k-nearest neighbours: cosine similarity with shrinkage, top-k neighbours per item."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from omnirec.data.histories import UserBatch
from omnirec.data.train_data import TrainData, interaction_matrix
from omnirec.features.similarity import cosine_similarity, keep_top_k
from omnirec.models.base import Recommender, sparse_from_state, sparse_state


@dataclass(frozen=True)
class ItemKNNConfig:
    """k: neighbours kept per item; shrink: added to the cosine denominator to damp rare co-occurrences."""

    k: int = 100
    shrink: float = 10.0

    def __post_init__(self) -> None:
        if self.k < 1 or self.shrink < 0:
            raise ValueError("k >= 1 and shrink >= 0 are required")


class ItemKNN(Recommender):
    """score(u, j) = sum over items i in u's history of sim_k(i, j), where sim_k keeps i's k nearest items.

    >>> ItemKNN(ItemKNNConfig(k=20)).config.k
    20
    """

    name = "itemknn"
    Config = ItemKNNConfig
    quick = True
    adds_items = True
    default_trial = {"k": ItemKNNConfig.k, "shrink": ItemKNNConfig.shrink}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"k": trial.suggest_int("k", 10, 400, log=True), "shrink": trial.suggest_float("shrink", 0.0, 100.0)}

    def _fit(self, data: TrainData) -> None:
        binary = interaction_matrix(data.interactions, data.n_users, data.n_items, binary=True)
        self.similarity = keep_top_k(cosine_similarity(binary, self.config.shrink), self.config.k)  # (I, I)

    def add_items(self, texts: list[str]) -> None:
        """New items have no co-occurrence yet: empty rows and columns (they score 0 until a retraining)."""
        self._check_fitted()
        n = self.similarity.shape[0] + len(texts)
        self.similarity = sp.csr_matrix((self.similarity.data, self.similarity.indices,
                                         np.r_[self.similarity.indptr, np.full(len(texts), self.similarity.nnz)]),
                                        shape=(n, n))
        self.n_items += len(texts)

    def _score(self, batch: UserBatch) -> sp.spmatrix:
        return batch.to_csr(self.n_items) @ self.similarity  # (B, I)

    def _get_state(self) -> dict[str, np.ndarray]:
        return sparse_state("similarity", self.similarity)

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.similarity = sparse_from_state("similarity", state)
