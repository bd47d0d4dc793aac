"""Most popular items first: the baseline every model must beat."""

from __future__ import annotations

import numpy as np
import torch

from omnirec.data.histories import UserBatch
from omnirec.data.train_data import TrainData
from omnirec.models.base import Recommender


class Popularity(Recommender):
    """Scores each item by its number of training interactions.

    >>> from omnirec.data.train_data import TrainData
    >>> import polars as pl
    >>> f = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [1, 2, 2], "timestamp": [0, 1, 0]})
    >>> m = Popularity().fit(TrainData(f, n_users=2, n_items=2))
    >>> m.recommend(TrainData(f, 2, 2).sequences.batch([2]), k=1)[0].tolist()
    [[1]]
    """

    name = "pop"
    quick = True

    def _fit(self, data: TrainData) -> None:
        self.counts = data.item_counts.astype(np.float32)

    def _score(self, batch: UserBatch) -> torch.Tensor:
        return torch.from_numpy(self.counts).expand(len(batch.users), -1).clone()  # (B, I)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.counts = state["counts"]
