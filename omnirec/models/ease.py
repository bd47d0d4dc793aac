"""EASE (Steck, WWW 2019): a linear item-item model with a closed form. With G = X^T X + l2 I (X the
binary user x item matrix), P = G^-1 and B = -P / diag(P) with a zero diagonal, a user's scores are
their history row times B. One dense (I x I) inverse: seconds for 10,000 items, and memory of
2 x I^2 x 8 bytes while fitting, so meant for catalogues up to a few tens of thousands of items.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> split = split_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=40, n_items=30))))
>>> ids, _ = EASE().fit(split.train_data()).recommend(split.histories("test").batch([1, 2]), k=5)
>>> ids.shape
(2, 5)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from omnirec.data.histories import UserBatch
from omnirec.data.train_data import TrainData, interaction_matrix
from omnirec.models.base import Recommender

MAX_ITEMS = 60_000  # a (60k x 60k) float64 inverse needs about 58 GiB


@dataclass(frozen=True)
class EASEConfig:
    """l2: the ridge penalty (the paper's lambda; larger for denser data)."""

    l2: float = 500.0

    def __post_init__(self) -> None:
        if self.l2 <= 0:
            raise ValueError(f"l2 must be > 0, got {self.l2}")


class EASE(Recommender):
    """Closed-form item-item regression; see the module docstring."""

    name = "ease"
    default_trial = {"l2": EASEConfig.l2}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"l2": trial.suggest_float("l2", 10.0, 5000.0, log=True)}
    Config = EASEConfig

    def _fit(self, data: TrainData) -> None:
        if data.n_items > MAX_ITEMS:
            raise ValueError(f"ease: {data.n_items} items need a dense {data.n_items}^2 inverse; it is meant for "
                             f"at most {MAX_ITEMS} (use itemknn or a neural model)")
        x = interaction_matrix(data.interactions, data.n_users, data.n_items, binary=True)[:, 1:].astype(np.float64)
        gram = torch.from_numpy((x.T @ x).toarray())  # (I, I)
        gram.diagonal().add_(self.config.l2)
        inverse = torch.linalg.inv(gram)
        weights = -inverse / inverse.diagonal()[None, :]
        weights.diagonal().zero_()
        self.weights = torch.zeros((data.n_items + 1, data.n_items + 1), dtype=torch.float32)
        self.weights[1:, 1:] = weights.float()

    def _score(self, batch: UserBatch) -> torch.Tensor:
        history = torch.from_numpy(batch.to_csr(self.n_items).toarray())  # (B, I + 1) binary
        return history @ self.weights

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights.numpy()}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.weights = torch.from_numpy(np.asarray(state["weights"], dtype=np.float32))
