"""What the neural collaborative models (two-tower, NeuMF, LightGCN) share: fitting through the pair
loop (`omnirec.train.pairs`) with early stopping on a sample of validation users, the refit on training
plus validation items, and persistence of torch weights.

Each model file supplies its network (`_build`), its training step (`_step`) and its scores
(`_score_with`). Training pairs are every (user, item) of the training sequences, in order, so a pair's
index is its position in `PairData.sequences.items`.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from omnirec.data.attributes import Attributes
from omnirec.data.histories import Histories, UserBatch
from omnirec.data.train_data import TrainData
from omnirec.models.base import Recommender
from omnirec.train.loop import (
    Deadline,
    RefitPlan,
    TrainResult,
    budget_record,
    fit_deadlines,
    plan_refit,
    refit_desc,
    refit_growth,
    timed,
    training_summary,
)
from omnirec.train.pairs import StepFn, fit_pairs
from omnirec.train.validation import first_target_ndcg


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


def validation_users(histories: Histories, targets: Histories, most: int, seed: int) -> np.ndarray:
    """Users with a validation target and a history; a seeded sample of `most` of them (0 = all)."""
    users = np.flatnonzero((targets.lengths() > 0) & (histories.lengths() > 0))
    if most and len(users) > most:
        users = np.sort(np.random.default_rng(seed).choice(users, size=most, replace=False))
    return users


class PairRecommender(Recommender):
    """Base of the collaborative neural models. Config must have `train: PairTrainConfig`."""

    learns_from_validation = True  # early stopping on `data.valid`, then a refit on train + validation
    trains_in_epochs = True

    module: torch.nn.Module

    @abstractmethod
    def _build(self, data: PairData) -> torch.nn.Module:
        """A fresh network for this data."""

    @abstractmethod
    def _step(self, data: PairData) -> StepFn:
        """The training step: (module, users, pair positions, generator) -> loss."""

    @abstractmethod
    def _score_with(self, module: torch.nn.Module, batch: UserBatch) -> torch.Tensor:
        """(B, I + 1) float32 scores of the batch by `module` (in eval mode, without gradients)."""

    def _prepare(self, data: TrainData) -> None:
        """Anything computed once per fit before the network is built (text vectors, say)."""

    def _finish(self, data: PairData) -> None:
        """Anything cached once the final weights are in place (the scoring embeddings, say)."""

    def _fit(self, data: TrainData) -> None:
        cfg = self.config.train
        self._prepare(data)  # before the budget starts, as the text models' item vectors are
        view = PairData(data.sequences, data.n_users, data.n_items, data.user_attributes, data.item_text)
        validate = None
        if data.valid is not None and data.valid.items.size:
            users = validation_users(data.sequences, data.valid, cfg.valid_users, cfg.seed)
            if len(users):
                validate = lambda m: first_target_ndcg(  # noqa: E731
                    lambda b: self._score_with(m, b), data.sequences, data.valid, users, data.n_items)
        refit = cfg.refit and validate is not None
        growth = refit_growth(data.sequences, data.valid) if refit else 0.0
        search, budget = fit_deadlines(cfg.max_minutes, growth)  # budget: early stopping and refit together
        with timed() as took:
            result = self._train(view, self._reported(validate), cfg, search)
        self._record(result)
        self.training["budget"] = budget_record(cfg.max_minutes, took["s"], result)
        if refit:
            view = self._refit(data, view, result, plan_refit(result, growth, budget), budget, took["s"])
        self._finish(view)

    def _refit(self, data: TrainData, view: PairData, search: TrainResult, plan: RefitPlan, budget: Deadline,
               search_s: float) -> PairData:
        """Train a fresh network on train + validation items for the planned epochs within what is left of
        the budget; returns the data the final network was trained on (with no epoch planned, the
        early-stopped network and its training data stay)."""
        cfg, refit = self.config.train, None
        with timed() as took:
            if plan.epochs:
                view = view._replace(sequences=data.sequences.extend(data.valid))
                config = dataclasses.replace(cfg, epochs=plan.epochs)
                refit = self._train(view, None, config, budget, refit_desc(plan))
                self.history += [{**row, "refit": True} for row in refit.history]
        self.training["refit_epochs"] = 0 if refit is None else len(refit.history)
        self.training["budget"] = budget_record(cfg.max_minutes, search_s, search, plan, took["s"], refit)
        return view

    def _train(self, view: PairData, validate: Callable | None, cfg: Any, deadline: Deadline,
               desc: str = "train") -> TrainResult:
        """A fresh network trained on `view` until `deadline` at the latest."""
        torch.manual_seed(cfg.seed)  # initial weights depend on the seed only
        self.module = self._build(view)
        return fit_pairs(self.module, view.pair_users(), self._step(view), validate, cfg, desc=desc, deadline=deadline)

    def _record(self, result: TrainResult) -> None:
        self.history = result.history
        self.training = training_summary(result, self.config.train.seed)

    @torch.no_grad()
    def _score(self, batch: UserBatch) -> torch.Tensor:
        self.module.eval()
        return self._score_with(self.module, batch).float().cpu()
