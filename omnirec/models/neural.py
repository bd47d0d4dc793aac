"""What every neural model shares: fitting through the one training loop (`omnirec.train.loop.fit`) with
early stopping on the validation targets, then the refit on training + validation items for the epochs
early stopping chose, within one time budget; the training record; checkpoints that resume.

A family base (the sequence models, the collaborative ones) says how to build a network for some training
sequences (`_network`), how to train it (`_training`: the batches from `omnirec.features` and the step)
and how to validate it (`_validator`); a model file then holds its config, its network and its loss.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from omnirec.config import config_hash
from omnirec.data.histories import Histories
from omnirec.data.train_data import TrainData
from omnirec.models.base import Recommender
from omnirec.train.loop import (
    Batches,
    Deadline,
    RefitPlan,
    StepFn,
    TrainConfig,
    TrainResult,
    budget_record,
    fit,
    fit_deadlines,
    learning_options,
    plan_refit,
    refit_desc,
    refit_growth,
    timed,
    training_summary,
)

Validate = Callable[[torch.nn.Module], float]


def validation_users(histories: Histories, targets: Histories, most: int, seed: int) -> np.ndarray:
    """Users with a validation target and a history; a seeded sample of `most` of them (0 = all)."""
    users = np.flatnonzero((targets.lengths() > 0) & (histories.lengths() > 0))
    if most and len(users) > most:
        users = np.sort(np.random.default_rng(seed).choice(users, size=most, replace=False))
    return users


class NeuralRecommender(Recommender):
    """Base of the models trained by the loop. Config must have `train: TrainConfig`."""

    learns_from_validation = True  # early stopping on `data.valid`, then a refit on train + validation
    trains_in_epochs = True

    module: torch.nn.Module

    # -- what a family of models supplies ------------------------------------------------------------
    @abstractmethod
    def _network(self, data: TrainData, sequences: Histories) -> torch.nn.Module:
        """A fresh network to train on `sequences` (the training sequences; for the refit, with the
        validation items appended)."""

    @abstractmethod
    def _training(self, data: TrainData, sequences: Histories) -> tuple[Batches, int, StepFn]:
        """How to train on `sequences`: the epoch's batches, how many there are, and the step."""

    @abstractmethod
    def _validator(self, data: TrainData, users: np.ndarray) -> Validate:
        """NDCG@10 of a network on `users`' first validation target (`data.valid`)."""

    def _prepare(self, data: TrainData) -> None:
        """Anything computed once per fit before the budget starts (text vectors, say)."""

    def _finish_fit(self, data: TrainData, sequences: Histories) -> None:
        """Anything cached once the final weights are in place; `sequences` are what they learnt from."""

    def with_loop_options(self, progress: bool | None = None, checkpoint_dir: str | None = None) -> NeuralRecommender:
        changes: dict[str, object] = {} if progress is None else {"progress": progress}
        if checkpoint_dir is not None:
            changes["checkpoint_dir"] = checkpoint_dir
        config = dataclasses.replace(self.config, train=dataclasses.replace(self.config.train, **changes))
        encoder = getattr(config, "encoder", None)  # a text encoder's progress bar too
        if encoder is not None and progress is False:
            config = dataclasses.replace(config, encoder=dataclasses.replace(encoder, progress=False))
        return type(self)(config)

    # -- fit, then refit ---------------------------------------------------------------------------
    def _fit(self, data: TrainData) -> None:
        cfg: TrainConfig = self.config.train
        self._prepare(data)  # before the budget starts, as the text models' item vectors are
        validate = None
        if data.valid is not None and data.valid.items.size:
            users = validation_users(data.sequences, data.valid, cfg.valid_users, cfg.seed)
            validate = self._validator(data, users) if len(users) else None
        refit = cfg.refit and validate is not None
        growth = refit_growth(data.sequences, data.valid) if refit else 0.0
        search, budget = fit_deadlines(cfg.max_minutes, growth)  # budget: early stopping and refit together
        with timed() as took:
            result = self._train(data, data.sequences, self._reported(validate), cfg, search)
        self.history = result.history
        self.training = training_summary(result, cfg.seed)
        self.training["budget"] = budget_record(cfg.max_minutes, took["s"], result)
        sequences = data.sequences
        if refit:
            sequences = self._refit(data, result, plan_refit(result, growth, budget), budget, took["s"])
        self._finish_fit(data, sequences)

    def _train(self, data: TrainData, sequences: Histories, validate: Validate | None, cfg: TrainConfig,
               deadline: Deadline, desc: str = "train", refit: bool = False) -> TrainResult:
        """A fresh network trained on `sequences` until `deadline` at the latest."""
        torch.manual_seed(cfg.seed)  # initial weights depend on the seed only
        self.module = self._network(data, sequences)
        batches, steps, step = self._training(data, sequences)
        fingerprint = self._fingerprint(data) + ("-refit" if refit else "")
        return fit(self.module, batches, steps, step, validate, cfg, fingerprint, desc=desc, deadline=deadline)

    def _refit(self, data: TrainData, search: TrainResult, plan: RefitPlan, budget: Deadline,
               search_s: float) -> Histories:
        """Train a fresh network on train + validation items for the planned epochs, without validation,
        within what is left of the budget; returns the sequences the final network learnt from (with no
        epoch planned, the early-stopped network and the training sequences stay)."""
        cfg, refit, sequences = self.config.train, None, data.sequences
        with timed() as took:
            if plan.epochs:
                folder = str(Path(cfg.checkpoint_dir) / "refit") if cfg.checkpoint_dir else ""
                sequences = data.sequences.extend(data.valid)
                config = dataclasses.replace(cfg, epochs=plan.epochs, checkpoint_dir=folder)
                refit = self._train(data, sequences, None, config, budget, refit_desc(plan), refit=True)
                self.history += [{**row, "refit": True} for row in refit.history]
        self.training["refit_epochs"] = 0 if refit is None else len(refit.history)
        self.training["budget"] = budget_record(cfg.max_minutes, search_s, search, plan, took["s"], refit)
        return sequences

    def _fingerprint(self, data: TrainData) -> str:
        """What a checkpoint must match to be resumed: the network, the loss, the optimiser settings, the
        seed and the data's sizes; not the loop's options (epochs, budget, progress, folders...)."""
        kept = dataclasses.replace(self.config, train=learning_options(self.config.train))
        return f"{self.name}-{config_hash(kept)}-{data.n_users}-{data.n_items}-{len(data.sequences.items)}"
