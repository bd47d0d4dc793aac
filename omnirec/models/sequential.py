"""What the next-item sequence models share: fitting through the training loop, scoring from the state at
the most recent position, validation NDCG@10 and persistence of torch weights. Each model file supplies
its network (`_build`); the network maps (B, T) left-padded items (and times) to (B, T, D) states and
exposes `item_table()`, the (I + 1, D) item embeddings used for scoring (shared with the input layer).
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnirec.config import config_hash
from omnirec.data.histories import Histories, UserBatch
from omnirec.data.train_data import TrainData
from omnirec.models.base import Recommender
from omnirec.train import losses
from omnirec.train.loop import (
    Deadline,
    LossFn,
    RefitPlan,
    TrainResult,
    budget_record,
    fit,
    fit_deadlines,
    plan_refit,
    refit_desc,
    refit_growth,
    timed,
    training_summary,
)
from omnirec.train.validation import first_target_ndcg


def check_sequence_config(config: Any, sizes: tuple[int, ...]) -> None:
    """The checks every sequence-model config shares; `sizes` are the ones that must be >= 1."""
    if config.d_model % config.n_heads:
        raise ValueError(f"d_model ({config.d_model}) must be a multiple of n_heads ({config.n_heads})")
    if min(config.d_model, config.n_layers, config.n_heads, config.max_len, config.n_negatives, *sizes) < 1:
        raise ValueError("sizes must be >= 1")
    if not 0 <= config.dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
    if config.loss not in losses.LOSSES:
        raise ValueError(f"loss={config.loss!r}; expected one of {', '.join(losses.LOSSES)}")


def make_loss(name: str, n_negatives: int, log_q: torch.Tensor | None = None) -> LossFn:
    """The training loss by name: "ce" (full softmax), "sampled" (sampled softmax), "inbatch" (the batch's
    targets as negatives, log-Q corrected: needs `log_q`), "bce"."""
    if name == "ce":
        return losses.full_softmax
    if name == "sampled":
        return lambda h, t, table: losses.sampled_softmax(h, t, table, n_negatives)
    if name == "inbatch":
        if log_q is None:
            raise ValueError("the in-batch loss needs log_q, the log share of each item among training targets")
        return lambda h, t, table: losses.in_batch_softmax(h, t, table, log_q.to(h.device))
    if name == "bce":
        return losses.binary_cross_entropy
    raise ValueError(f"loss={name!r}; expected one of {', '.join(losses.LOSSES)}")


def encode_last(module: torch.nn.Module, batch: UserBatch, max_len: int, chunk: int = 256) -> torch.Tensor:
    """(B, D) state after each user's most recent item (at most `max_len` items are read).

    Rows are encoded in chunks of similar history length, each padded only to its own longest history:
    padding is masked, so the result does not depend on which rows share a chunk.
    """
    device = next(module.parameters()).device
    lengths = np.minimum(batch.lengths(), max_len)
    order = np.argsort(lengths, kind="stable")
    ragged = Histories(batch.indptr, batch.items, batch.times)  # to take rows of the batch
    out = []
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        part = ragged.batch(rows)  # its `users` are row numbers; only the items and times are read
        width = int(max(1, lengths[rows].max()))
        items = torch.from_numpy(part.padded(width)).to(device)  # (b, T); the last column is the newest item
        times = None if part.times is None else torch.from_numpy(part.padded(width, part.times)).to(device)
        out.append(module(items, times)[:, -1])  # (b, D)
    hidden = torch.cat(out)
    return hidden[torch.from_numpy(np.argsort(order, kind="stable")).to(device)]  # back to the batch order


def validation_ndcg(
    module: torch.nn.Module, histories: Histories, targets: Histories, max_len: int, k: int = 10,
    batch_size: int = 1024,
) -> float:
    """Mean NDCG@k of each user's first validation target, ranked against all unseen items."""
    users = np.flatnonzero((targets.lengths() > 0) & (histories.lengths() > 0))
    table = module.item_table()
    score = lambda batch: encode_last(module, batch, max_len) @ table.T  # noqa: E731
    return first_target_ndcg(score, histories, targets, users, table.shape[0] - 1, k, batch_size)


class SequentialRecommender(Recommender):
    """Base of the Transformer next-item models. Config must have max_len, loss, n_negatives and train."""

    learns_from_validation = True  # early stopping on `data.valid`, then a refit on train + validation
    trains_in_epochs = True
    has_item_embeddings = True

    @abstractmethod
    def _build(self, n_items: int) -> torch.nn.Module:
        """A fresh network for `n_items` items."""

    def _fit(self, data: TrainData) -> None:
        cfg = self.config
        validate = None
        if data.valid is not None and data.valid.items.size:
            validate = lambda m: validation_ndcg(m, data.sequences, data.valid, cfg.max_len)  # noqa: E731
        refit = cfg.train.refit and validate is not None
        growth = refit_growth(data.sequences, data.valid) if refit else 0.0
        search, budget = fit_deadlines(cfg.train.max_minutes, growth)  # budget: early stopping and refit together
        torch.manual_seed(cfg.train.seed)  # initial weights depend on the seed only
        with timed() as took:
            self.module = self._build(data.n_items)
            result = fit(self.module, data.sequences, cfg.max_len, self._loss(data.sequences), self._reported(validate),
                         cfg.train, self._fingerprint(data), deadline=search)
        self._record(result)
        self.training["budget"] = budget_record(cfg.train.max_minutes, took["s"], result)
        if refit:
            self._refit(data, result, plan_refit(result, growth, budget), budget, took["s"])

    def _loss(self, sequences: Histories) -> LossFn:
        """The training loss for these training sequences (a model may restrict it to their items)."""
        log_q = None
        if self.config.loss == "inbatch":  # targets: every item of a sequence but its first
            first = np.zeros(len(sequences.items), dtype=bool)
            first[sequences.indptr[:-1][sequences.lengths() > 0]] = True
            log_q = losses.log_target_share(torch.from_numpy(sequences.items[~first]), self.n_items)
        return make_loss(self.config.loss, self.config.n_negatives, log_q)

    def _refit(self, data: TrainData, search: TrainResult, plan: RefitPlan, budget: Deadline, search_s: float) -> None:
        """Train a fresh network on train + validation items for the planned epochs, without validation,
        within what is left of the budget; with no epoch planned the early-stopped network stays."""
        train, refit = self.config.train, None
        with timed() as took:
            if plan.epochs:
                folder = str(Path(train.checkpoint_dir) / "refit") if train.checkpoint_dir else ""
                torch.manual_seed(train.seed)
                self.module = self._build(data.n_items)
                config = dataclasses.replace(train, epochs=plan.epochs, checkpoint_dir=folder)
                sequences = data.sequences.extend(data.valid)
                refit = fit(self.module, sequences, self.config.max_len, self._loss(sequences), None, config,
                            self._fingerprint(data) + "-refit", desc=refit_desc(plan), deadline=budget)
                self.history += [{**row, "refit": True} for row in refit.history]
        self.training["refit_epochs"] = 0 if refit is None else len(refit.history)
        self.training["budget"] = budget_record(train.max_minutes, search_s, search, plan, took["s"], refit)

    def _fingerprint(self, data: TrainData) -> str:
        """What a checkpoint must match to be resumed: the network, the loss, the optimiser settings, the
        seed and the data's sizes; not loop options such as epochs, budget, progress or folders."""
        loop_only = {"epochs": 1, "max_minutes": 0.0, "progress": False, "checkpoint_dir": "", "patience": 1,
                     "eval_every": 1, "threads": 0, "device": "auto", "compile": False, "refit": False}
        kept = dataclasses.replace(self.config, train=dataclasses.replace(self.config.train, **loop_only))
        return f"{self.name}-{config_hash(kept)}-{data.n_users}-{data.n_items}-{len(data.sequences.items)}"

    def _record(self, result: TrainResult) -> None:
        self.history = result.history
        self.training = training_summary(result, self.config.train.seed)

    @torch.no_grad()
    def _score(self, batch: UserBatch) -> torch.Tensor:
        self.module.eval()
        hidden = encode_last(self.module, batch, self.config.max_len)  # (B, D)
        return (hidden @ self.module.item_table().T).float().cpu()  # (B, I + 1)

    def item_embeddings(self) -> np.ndarray:
        """(I + 1, D) the output item embeddings (row 0 is padding), scored against the last state."""
        self._check_fitted()
        return self.module.item_table().detach().float().cpu().numpy()

    def _get_state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.module = self._build(self.n_items)
        self.module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        self.module.eval()
