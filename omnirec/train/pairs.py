"""The training loop of the collaborative models (two-tower, NeuMF, LightGCN): epochs over shuffled
(user, item) training pairs, with the progress bar, validation every N epochs, early stopping on NDCG@10
and the time budget of the sequence models' loop.

The loop knows nothing of the model: it gets a module, the pairs, a `step(module, users, positions,
generator) -> loss` and a `validate(module) -> NDCG@10` callback. `positions` index the pairs, so a
step can look up whatever it needs about them (the item, the user's other items).

>>> import numpy as np, torch
>>> module = torch.nn.Linear(1, 1)
>>> step = lambda m, users, at, g: (m(torch.ones(len(users), 1)) - 1).pow(2).mean()
>>> result = fit_pairs(module, np.array([1, 1, 2]), step, None, PairTrainConfig(epochs=3, progress=False))
>>> len(result.history), result.stopped
(3, 'epochs')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from omnirec.train.loop import (
    Deadline,
    EpochBar,
    TrainResult,
    _copy_state,
    _epoch_row,
    _validate_epoch,
    adamw,
    pick_device,
    require_finite_validation,
    stop_note,
    timed,
)

StepFn = Callable[[torch.nn.Module, torch.Tensor, np.ndarray, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class PairTrainConfig:
    """epochs: upper bound; training stops when validation NDCG@10 has not improved for `patience`
    validations or after `max_minutes` (0 = no budget). refit: once early stopping has chosen the
    number of epochs, train again from scratch on the training + validation items for that many epochs.
    max_minutes bounds early stopping and the refit together, split as for the sequence models:
    early stopping may use max_minutes / (1 + growth), growth being (train + validation pairs) / train
    pairs (`omnirec.train.loop.search_minutes`); the refit gets the rest and stops at the deadline,
    and is skipped when less than three quarters of its work fits (`plan_refit`).
    valid_users: validate on at most this many users (a seeded sample; 0 = all)."""

    epochs: int = 100
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 1
    patience: int = 5
    max_minutes: float = 0.0
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    progress: bool = True
    refit: bool = True
    valid_users: int = 5000

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.max_minutes < 0 or self.threads < 0 or self.valid_users < 0:
            raise ValueError("lr must be > 0; weight_decay, max_minutes, threads and valid_users >= 0")


def fit_pairs(
    module: torch.nn.Module, users: np.ndarray, step: StepFn, validate: Callable[[torch.nn.Module], float] | None,
    config: PairTrainConfig, desc: str = "train", deadline: Deadline | None = None,
) -> TrainResult:
    """Train `module` in place on the pairs (`users[p]` is pair p's user) and leave it holding the
    weights of its best validation (the last weights without `validate`). Training ends by `deadline`
    (default: `config.max_minutes` from this call), after the batch under way, as in the sequence
    models' loop; `desc` labels the progress bar."""
    deadline = Deadline.after(config.max_minutes) if deadline is None else deadline
    device = pick_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    module.to(device)
    optimizer = adamw(module, config, device)  # type: ignore[arg-type]  # reads lr and weight_decay only
    result, best_state, bad_evals = TrainResult(), None, 0
    user_tensor = torch.from_numpy(np.asarray(users, dtype=np.int64))
    steps = -(-len(users) // config.batch_size)
    bar = EpochBar(desc, 1, config.epochs, deadline, config.progress)
    for epoch in range(1, config.epochs + 1):
        module.train()
        with timed() as t:
            losses = []
            order = rng.permutation(len(users))
            for lo in range(0, len(order), config.batch_size):
                at = order[lo : lo + config.batch_size]
                loss = step(module, user_tensor[at].to(device), at, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                if deadline.passed():
                    break
        row = _epoch_row(epoch, losses, t["s"], steps)
        out_of_time = deadline.passed()
        if validate is not None and (epoch % config.eval_every == 0 or epoch == config.epochs or out_of_time):
            if _validate_epoch(module, validate, row, result):
                best_state, bad_evals = _copy_state(module), 0
            else:
                bad_evals += 1
            bar.epoch_done(epoch, loss=f"{row['loss']:.4f}", best_ndcg=f"{result.best_metric:.4f}", best=result.best_epoch)
        else:
            bar.epoch_done(epoch, loss=f"{row['loss']:.4f}")
        result.history.append(row)
        if bad_evals >= config.patience or out_of_time:
            result.stopped = "patience" if bad_evals >= config.patience else "time budget"
            break
    bar.close(stop_note(result, validate is not None))
    require_finite_validation(result)
    if best_state is not None:
        module.load_state_dict(best_state)
    else:
        result.best_epoch = len(result.history)
    module.eval()
    return result
