"""What the neural collaborative models (two-tower, NeuMF, LightGCN) share: their batches (the (user,
item) training pairs) and step for the training loop (`NeuralRecommender`: early stopping on a sample of
validation users, the refit on training plus validation items), their training defaults, and scoring.

Each model file supplies its network (`_build`), its training step (`_step`) and its scores
(`_score_with`). Training pairs are every (user, item) of the training sequences, in order, so a pair's
index is its position in `PairData.sequences.items`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from omnirec.data.attributes import Attributes
from omnirec.data.histories import Histories, UserBatch
from omnirec.data.train_data import TrainData
from omnirec.features.pairs import pair_batches, pair_batches_per_epoch
from omnirec.models.neural import NeuralRecommender, Validate
from omnirec.train.loop import Batches, StepFn, TrainConfig
from omnirec.train.validation import first_target_ndcg

PairStep = Callable[[torch.nn.Module, torch.Tensor, np.ndarray, torch.Generator], torch.Tensor]


class PairData(NamedTuple):
    """What a collaborative network is built and trained from."""

    sequences: Histories  # each user's training items in time order: the training pairs
    n_users: int
    n_items: int
    user_attributes: Attributes | None
    item_text: list[str] | None

    def pair_users(self) -> np.ndarray:
        """(P,) the user of each training pair."""
        return np.repeat(np.arange(len(self.sequences.indptr) - 1), self.sequences.lengths())


PAIR_TRAINING = {"epochs": 100, "batch_size": 2048, "weight_decay": 0.0, "amp": False, "ema_epochs": 0.0,
                 "valid_users": 5000}


def pair_training(**changes: object) -> TrainConfig:
    """The training defaults of the collaborative models, with `changes`: up to 100 epochs of 2,048 pairs
    a batch, no weight decay, no bf16 autocast and no weight averaging (their networks are embedding
    tables, where neither helps), validation on a sample of 5,000 users.

    >>> pair_training(batch_size=1024).batch_size, pair_training().ema_epochs
    (1024, 0.0)
    """
    return TrainConfig(**{**PAIR_TRAINING, **changes})  # type: ignore[arg-type]


class PairRecommender(NeuralRecommender):
    """Base of the collaborative neural models. Config must have `train: TrainConfig` (`pair_training`)."""

    @abstractmethod
    def _build(self, data: PairData) -> torch.nn.Module:
        """A fresh network for this data."""

    @abstractmethod
    def _step(self, data: PairData) -> PairStep:
        """The training step: (module, users, pair positions, generator) -> loss."""

    @abstractmethod
    def _score_with(self, module: torch.nn.Module, batch: UserBatch) -> torch.Tensor:
        """(B, I + 1) float32 scores of the batch by `module` (in eval mode, without gradients)."""

    def _finish(self, data: PairData) -> None:
        """Anything cached once the final weights are in place (the scoring embeddings, say)."""

    def _view(self, data: TrainData, sequences: Histories) -> PairData:
        return PairData(sequences, data.n_users, data.n_items, data.user_attributes, data.item_text)

    def _network(self, data: TrainData, sequences: Histories) -> torch.nn.Module:
        return self._build(self._view(data, sequences))

    def _training(self, data: TrainData, sequences: Histories) -> tuple[Batches, int, StepFn]:
        view, size = self._view(data, sequences), self.config.train.batch_size
        users, pair_step = view.pair_users(), self._step(view)
        batches = lambda rng, shard: pair_batches(users, size, rng, shard)  # noqa: E731
        step = lambda net, batch, device, generator: pair_step(net, batch.users.to(device), batch.positions, generator)  # noqa: E731
        return batches, pair_batches_per_epoch(len(users), size), step

    def _validator(self, data: TrainData, users: np.ndarray) -> Validate:
        return lambda m: first_target_ndcg(lambda b: self._score_with(m, b), data.sequences, data.valid, users,
                                           data.n_items)

    def _finish_fit(self, data: TrainData, sequences: Histories) -> None:
        self._finish(self._view(data, sequences))

    @torch.no_grad()
    def _score(self, batch: UserBatch) -> torch.Tensor:
        self.module.eval()
        return self._score_with(self.module, batch).float().cpu()
