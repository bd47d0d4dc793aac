"""One plain training loop for the sequence models: progress bar, validation every N epochs with early
stopping on NDCG@10, a time budget, checkpoint and resume, seeds, AMP and `torch.compile` on GPU.

The loop knows nothing about a model's internals: it gets a module whose `forward(items, times)` returns
(B, T, D) states and whose `item_table()` returns the (I + 1, D) output embeddings, a loss over the
supervised positions, and a `validate(module) -> NDCG@10` callback.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from omnirec.features.sequences import Histories
from omnirec.train import distributed
from omnirec.utils import atomic_write

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """epochs: upper bound; training stops earlier when validation NDCG@10 has not improved for
    `patience` validations, or when `max_minutes` of wall time are spent (0 = no budget).
    device: "auto" takes CUDA when available. amp: bfloat16 autocast for training, on CUDA and on CPUs
    with native bfloat16 (scoring and validation stay float32). compile: torch.compile
    the module (CUDA only; on CPU the compile time outweighs the gain for models this size).
    threads: CPU threads for torch (0 = torch's default, one per core). checkpoint_dir: where to write
    a checkpoint after every validation and resume from ("" = no checkpoints).
    refit: once early stopping has chosen the number of epochs, train again from scratch on the
    training + validation items for that many epochs (the validation items are each user's most recent
    known events; the test items stay unseen). ema_epochs: the weights validated and returned are an
    exponential moving average of the trained ones, updated after every optimiser step, with a horizon
    of this many epochs (0 = off); see `ema_update`."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    eval_every: int = 1
    patience: int = 5
    max_minutes: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    compile: bool = False
    threads: int = 0
    checkpoint_dir: str = ""
    progress: bool = True
    refit: bool = True
    ema_epochs: float = 1.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.max_minutes < 0 or self.threads < 0:
            raise ValueError("lr must be > 0; weight_decay, max_minutes and threads >= 0")
        if self.ema_epochs < 0:
            raise ValueError(f"ema_epochs must be >= 0, got {self.ema_epochs}")


class TrainBatch(NamedTuple):
    """Users' training sequences, left-padded with item 0."""

    items: torch.Tensor  # (B, T) input items
    times: torch.Tensor | None  # (B, T) their times, where the data has times
    targets: torch.Tensor  # (B, T) the next item at each position; 0 = not supervised
    scale: float = 1.0  # loss weight: this process's share of the global batch's supervised positions x world size


@dataclass
class TrainResult:
    """What training did: one row per epoch, the epoch whose weights were kept, and its metric."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = -math.inf
    stopped: str = "epochs"


def training_summary(result: TrainResult, seed: int) -> dict[str, object]:
    """What a model records of its training (`model.training`): best epoch and metric, epochs, why it stopped."""
    best = result.best_metric if np.isfinite(result.best_metric) else None  # None: never validated
    return {"best_epoch": result.best_epoch, "best_valid_ndcg@10": best, "epochs_run": len(result.history),
            "stopped": result.stopped, "threads": torch.get_num_threads(), "seed": seed}


def windows(sequences: Histories, max_len: int) -> Histories:
    """Each user's sequence cut, from its end, into windows of at most max_len + 1 items that overlap by
    one item: every item but a user's first is a target in exactly one window, read with up to max_len
    items before it. Users with fewer than two items have no window.

    >>> windows(Histories(np.array([0, 0, 6]), np.arange(1, 7)), max_len=2).items.tolist()
    [1, 2, 2, 3, 4, 4, 5, 6]
    """
    lengths = sequences.lengths()
    n_windows = np.where(lengths >= 2, -(-(lengths - 1) // max_len), 0)  # ceil((n - 1) / max_len)
    owner = np.repeat(np.arange(len(lengths)), n_windows)
    k = np.arange(n_windows.sum()) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)  # 0 = the last window
    ends = lengths[owner] - k * max_len  # exclusive, within the user's sequence
    starts = np.maximum(0, ends - max_len - 1)
    order = np.lexsort((-k, owner))  # each user's windows oldest first
    starts, ends, base = starts[order], ends[order], sequences.indptr[owner[order]]
    indptr = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=indptr[1:])
    sizes = ends - starts
    index = np.repeat(base + starts - indptr[:-1], sizes) + np.arange(indptr[-1])
    times = None if sequences.times is None else sequences.times[index]
    return Histories(indptr, sequences.items[index], times)


def training_batches(
    sequences: Histories, max_len: int, batch_size: int, rng: np.random.Generator, shard: tuple[int, int] = (0, 1)
) -> Iterator[TrainBatch]:
    """Every window of every user (see `windows`), in random batches of similar lengths (less padding).

    Each position predicts the next item from the (at most `max_len`) items before it: every item but a
    user's first is a target once, the same supervision as training on all prefixes separately.
    With `shard` = (rank, world size), every process draws the same global batches and keeps its rows
    rank::world of each, weighted so that gradients averaged over the processes equal those of the
    global batch in one process.
    """
    rows = windows(sequences, max_len)
    lengths = rows.lengths()
    order = rng.permutation(len(lengths))
    chunk = batch_size * 32
    batches = []
    for start in range(0, len(order), chunk):  # sort by length within chunks, keep the batches random
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rank, world = shard
    supervised = np.minimum(lengths, max_len + 1) - 1  # targets per window
    for at in rng.permutation(len(batches)):
        if world == 1:
            yield make_batch(rows, batches[at], max_len)
            continue
        mine = batches[at][rank::world]
        share = supervised[mine].sum() / supervised[batches[at]].sum() * world
        if len(mine) == 0:  # fewer rows than processes: take part in the step with a zero weight
            mine, share = batches[at][:1], 0.0
        yield make_batch(rows, mine, max_len)._replace(scale=float(share))


def batches_per_epoch(sequences: Histories, max_len: int, batch_size: int) -> int:
    """How many batches `training_batches` yields: its chunks are whole multiples of `batch_size`, so
    only the last batch of all can be short."""
    return -(-len(windows(sequences, max_len).lengths()) // batch_size)


def make_batch(sequences: Histories, users: np.ndarray, max_len: int) -> TrainBatch:
    """The training batch of `users`: inputs are items[:-1], targets items[1:], the last max_len of each."""
    batch = sequences.batch(users)
    width = int(min(batch.lengths().max(), max_len + 1))
    items = torch.from_numpy(batch.padded(width))  # (B, T + 1)
    inputs, targets = items[:, :-1], items[:, 1:]
    targets = targets.masked_fill(inputs == 0, 0)  # a first item has nothing before it
    times = None if batch.times is None else torch.from_numpy(batch.padded(width, batch.times))[:, :-1]
    return TrainBatch(inputs, times, targets)


def pick_device(name: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bf16_is_fast(device: torch.device) -> bool:
    """bfloat16 autocast pays off on CUDA and on CPUs with native bfloat16 (AVX512-BF16, AMX); elsewhere
    it would be emulated, slower than float32."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def ema_update(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor | int], None]:
    """The moving-average step for `AveragedModel`: after n updates the average is the mean of the
    weights of every step so far, the weights of k steps ago counting decay**k. That is the bias-corrected
    exponential average: average += (weights - average) * (1 - decay) / (1 - decay**n), so the first
    steps are not dominated by the initial weights.

    >>> average, weights = [torch.zeros(2)], [torch.ones(2)]
    >>> ema_update(0.5)(average, weights, 1)  # the second step: weights (0, 1) counting (0.5, 1)
    >>> [round(x, 6) for x in average[0].tolist()]
    [0.666667, 0.666667]
    """

    def update(average: list[torch.Tensor], weights: list[torch.Tensor], n: torch.Tensor | int) -> None:
        step = int(n) + 1  # AveragedModel counts the updates before this one and copies the first itself
        for a, w in zip(average, weights, strict=True):
            a.lerp_(w, (1.0 - decay) / (1.0 - decay**step))

    return update


def ema_decay(epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay whose horizon 1 / (1 - decay) is `epochs` epochs of `steps_per_epoch` steps.

    >>> ema_decay(1.0, 1000)
    0.999
    """
    return 1.0 - 1.0 / max(epochs * steps_per_epoch, 1.0)


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def train_step(
    module: torch.nn.Module, batch: TrainBatch, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
    device: torch.device, amp: bool,
) -> float:
    """One optimiser step on one batch; returns the loss."""
    items, targets = batch.items.to(device), batch.targets.to(device)
    times = None if batch.times is None else batch.times.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        hidden = module(items, times)  # (B, T, D); through DistributedDataParallel when several processes
        supervised = targets != 0
        network = getattr(module, "module", module)  # the network inside a DistributedDataParallel wrapper
        loss = loss_fn(hidden[supervised], targets[supervised], network.item_table())
    optimizer.zero_grad(set_to_none=True)
    (loss * batch.scale if batch.scale != 1.0 else loss).backward()
    optimizer.step()
    return float(loss.detach())


def fit(
    module: torch.nn.Module, sequences: Histories, max_len: int, loss_fn: LossFn,
    validate: Callable[[torch.nn.Module], float] | None, config: TrainConfig, fingerprint: str = "",
) -> TrainResult:
    """Train `module` in place and leave it holding the weights of its best validation; see TrainConfig.

    Without `validate` it trains for `config.epochs` (or the time budget) and keeps the last weights.
    """
    group = distributed.setup(config.device)  # None unless launched by torchrun with several processes
    device = pick_device(config.device) if group is None else group.device
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)  # the same on every rank: all draw the same global batches
    module.to(device)
    optimizer = adamw(module, config, device)
    averaged = None
    if config.ema_epochs:
        steps = batches_per_epoch(sequences, max_len, config.batch_size)
        averaged = AveragedModel(module, multi_avg_fn=ema_update(ema_decay(config.ema_epochs, steps)))
    kept = module if averaged is None else averaged.module  # the weights validated and returned
    step_module = _wrap(module, config, device, group)
    shard = (0, 1) if group is None else (group.rank, group.size)
    amp = config.amp and bf16_is_fast(device)
    result, best_state, start_epoch = TrainResult(), None, 1
    checkpoint = Path(config.checkpoint_dir) / CHECKPOINT if config.checkpoint_dir else None
    if checkpoint is not None and checkpoint.exists():
        start_epoch, best_state = _resume(checkpoint, fingerprint, module, optimizer, averaged, rng, result)
    began, bad_evals = time.perf_counter(), _bad_evals(result)
    if result.stopped == "patience":  # the run this checkpoint comes from had already finished
        start_epoch = config.epochs + 1
    main = group is None or group.main
    bar = tqdm(range(start_epoch, config.epochs + 1), desc="train", unit="epoch", disable=not config.progress or not main)
    for epoch in bar:
        module.train()
        with _timed() as t:
            losses = []
            for batch in training_batches(sequences, max_len, config.batch_size, rng, shard):
                losses.append(train_step(step_module, batch, loss_fn, optimizer, device, amp))
                if averaged is not None:
                    averaged.update_parameters(module)
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "train_s": round(t["s"], 3)}
        out_of_time = bool(distributed.from_main(
            float(bool(config.max_minutes) and time.perf_counter() - began > 60 * config.max_minutes), group))
        last = epoch == config.epochs or out_of_time
        checkpoint_now = epoch % config.eval_every == 0 or last
        if validate is not None and checkpoint_now:
            if _validate_epoch(kept, validate, row, result, group):
                best_state, bad_evals = _copy_state(kept), 0
            else:
                bad_evals += 1
        result.history.append(row)
        if validate is None:
            bar.set_postfix(loss=f"{row['loss']:.3f}")
        else:
            bar.set_postfix(loss=f"{row['loss']:.3f}", best_ndcg=f"{result.best_metric:.4f}", best=result.best_epoch)
        if bad_evals >= config.patience or out_of_time:
            result.stopped = "patience" if bad_evals >= config.patience else "time budget"
        if checkpoint is not None and (checkpoint_now or result.stopped != "epochs"):
            if main:  # one writer; the others wait, so a resume finds the file complete
                _save_checkpoint(checkpoint, fingerprint, epoch, module, optimizer, averaged, rng, result, best_state)
            distributed.barrier(group)
        if result.stopped != "epochs":
            break
    if best_state is None and averaged is not None:
        best_state = _copy_state(kept)  # no validation: the averaged weights of the last epoch
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return result


def adamw(module: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW, fused into one kernel where torch has it (CPU and CUDA): on a 1,000,000 x 64 item table the
    step takes 41 ms instead of 230 ms on a 2-core CPU."""
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
        except (RuntimeError, TypeError):  # an older torch, or parameters the fused kernel does not take
            pass
    return torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _wrap(module: torch.nn.Module, config: TrainConfig, device: torch.device,
          group: distributed.Group | None) -> torch.nn.Module:
    """What the training steps call: DistributedDataParallel across processes, torch.compile on CUDA."""
    if group is not None:
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(module) if config.compile and device.type == "cuda" else module


def _validate_epoch(
    module: torch.nn.Module, validate: Callable[[torch.nn.Module], float], row: dict, result: TrainResult,
    group: distributed.Group | None = None,
) -> bool:
    """Validate (on rank 0 only; the others receive its metric), record the metric and its time in
    `row`; True (and `result` updated) on a new best."""
    module.eval()
    with _timed() as t, torch.no_grad():
        metric = validate(module) if group is None or group.main else 0.0
        row["valid_ndcg@10"] = distributed.from_main(metric, group)
    row["eval_s"] = round(t["s"], 3)
    if row["valid_ndcg@10"] > result.best_metric:
        result.best_metric, result.best_epoch = row["valid_ndcg@10"], row["epoch"]
        return True
    return False


def _bad_evals(result: TrainResult) -> int:
    """Validations since the best one (resume continues the patience count)."""
    evals = [r["epoch"] for r in result.history if "valid_ndcg@10" in r]
    return sum(e > result.best_epoch for e in evals)


class _timed:
    """`with _timed() as t:` then t["s"] holds the elapsed seconds."""

    def __enter__(self) -> dict[str, float]:
        self.out, self.start = {"s": 0.0}, time.perf_counter()
        return self.out

    def __exit__(self, *exc: object) -> None:
        self.out["s"] = time.perf_counter() - self.start


def _copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _save_checkpoint(
    path: Path, fingerprint: str, epoch: int, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
    averaged: AveragedModel | None, rng: np.random.Generator, result: TrainResult, best_state: dict | None,
) -> None:
    """Everything resume needs, written atomically: an interrupted write leaves the previous checkpoint."""
    blob = {
        "fingerprint": fingerprint, "epoch": epoch, "module": _copy_state(module),
        "optimizer": optimizer.state_dict(), "averaged": None if averaged is None else _copy_state(averaged),
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(), "best_state": best_state,
        "history": result.history, "best_epoch": result.best_epoch, "best_metric": result.best_metric,
        "stopped": result.stopped,
    }
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def _resume(
    path: Path, fingerprint: str, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
    averaged: AveragedModel | None, rng: np.random.Generator, result: TrainResult,
) -> tuple[int, dict | None]:
    """Restore a checkpoint in place; returns (first epoch still to run, best weights so far)."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if blob["fingerprint"] != fingerprint:
        raise ValueError(f"{path}: checkpoint of a different model or data (fingerprint {blob['fingerprint']} "
                         f"!= {fingerprint}); remove it or choose another checkpoint_dir")
    module.load_state_dict(blob["module"])
    optimizer.load_state_dict(blob["optimizer"])
    if averaged is not None:
        averaged.load_state_dict(blob["averaged"])
    rng.bit_generator.state = blob["numpy_rng"]
    torch.set_rng_state(blob["torch_rng"])
    result.history, result.best_epoch, result.best_metric = blob["history"], blob["best_epoch"], blob["best_metric"]
    result.stopped = "patience" if blob.get("stopped") == "patience" else "epochs"  # a spent time budget is renewed
    return blob["epoch"] + 1, blob["best_state"]
