"""What the next-item sequence models share: their batches (each user's sequence in windows) and step for
the training loop (`NeuralRecommender`), scoring from the state at the most recent position, validation
NDCG@10 and persistence of torch weights. Each model file supplies
its network (`_build`); the network maps (B, T) left-padded items (and times) to (B, T, D) states and
exposes `item_table()`, the (I + 1, D) item embeddings used for scoring (shared with the input layer).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch

from omnirec.data.histories import Histories, UserBatch
from omnirec.data.train_data import TrainData
from omnirec.features.sequences import TrainBatch, batches_per_epoch, training_batches
from omnirec.models.neural import NeuralRecommender, Validate, validation_users
from omnirec.train import losses
from omnirec.train.loop import Batches, Deadline, LossFn, StepFn, TrainConfig, TrainResult, fit
from omnirec.train.validation import first_target_ndcg


def check_sequence_config(config: Any, sizes: tuple[int, ...], heads: int = 1) -> None:
    """The checks every sequence-model config shares; `sizes` are the ones that must be >= 1; `heads`: the
    attention heads of a Transformer config (`n_heads`), which must divide d_model."""
    if config.d_model % max(heads, 1):
        raise ValueError(f"d_model ({config.d_model}) must be a multiple of n_heads ({heads})")
    if min(config.d_model, config.n_layers, heads, config.max_len, config.n_negatives, *sizes) < 1:
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


def next_item_step(loss_fn: LossFn) -> StepFn:
    """The training step of the next-item models: the network's (B, T, D) states at the supervised
    positions, scored by `loss_fn` against the item table."""

    def step(network: torch.nn.Module, batch: TrainBatch, device: torch.device, generator: torch.Generator) -> torch.Tensor:
        items, targets = batch.items.to(device), batch.targets.to(device)
        times = None if batch.times is None else batch.times.to(device)
        hidden = network(items, times)  # (B, T, D)
        supervised = targets != 0
        return loss_fn(hidden[supervised], targets[supervised], network.item_table())

    return step


def fit_next_item(
    module: torch.nn.Module, sequences: Histories, max_len: int, loss_fn: LossFn, validate: Validate | None,
    config: TrainConfig, fingerprint: str = "", desc: str = "train", deadline: Deadline | None = None,
) -> TrainResult:
    """The training loop (`loop.fit`) for a next-item network on `sequences`: their windows of at most
    `max_len` items, batched, and the next-item step with `loss_fn`."""
    size = config.batch_size
    batches = lambda rng, shard: training_batches(sequences, max_len, size, rng, shard)  # noqa: E731
    return fit(module, batches, batches_per_epoch(sequences, max_len, size), next_item_step(loss_fn), validate,
               config, fingerprint, desc=desc, deadline=deadline)


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
    batch_size: int = 1024, users: np.ndarray | None = None,
) -> float:
    """Mean NDCG@k of each user's first validation target, ranked against all unseen items; over `users`
    (default: every user with a target and a history)."""
    if users is None:
        users = validation_users(histories, targets, 0, 0)
    table = module.item_table()
    score = lambda batch: encode_last(module, batch, max_len) @ table.T  # noqa: E731
    return first_target_ndcg(score, histories, targets, users, table.shape[0] - 1, k, batch_size)


class SequentialRecommender(NeuralRecommender):
    """Base of the Transformer next-item models. Config must have max_len, loss, n_negatives and train."""

    has_item_embeddings = True

    @abstractmethod
    def _build(self, n_items: int) -> torch.nn.Module:
        """A fresh network for `n_items` items."""

    def _network(self, data: TrainData, sequences: Histories) -> torch.nn.Module:
        return self._build(data.n_items)

    def _training(self, data: TrainData, sequences: Histories) -> tuple[Batches, int, StepFn]:
        cfg = self.config
        size = cfg.train.batch_size
        batches = lambda rng, shard: training_batches(sequences, cfg.max_len, size, rng, shard)  # noqa: E731
        return batches, batches_per_epoch(sequences, cfg.max_len, size), next_item_step(self._loss(sequences))

    def _validator(self, data: TrainData, users: np.ndarray) -> Validate:
        return lambda m: validation_ndcg(m, data.sequences, data.valid, self.config.max_len, users=users)

    def _loss(self, sequences: Histories) -> LossFn:
        """The training loss for these training sequences (a model may restrict it to their items)."""
        log_q = None
        if self.config.loss == "inbatch":  # targets: every item of a sequence but its first
            first = np.zeros(len(sequences.items), dtype=bool)
            first[sequences.indptr[:-1][sequences.lengths() > 0]] = True
            log_q = losses.log_target_share(torch.from_numpy(sequences.items[~first]), self.n_items)
        return make_loss(self.config.loss, self.config.n_negatives, log_q)

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
