"""omnirec's SASRec on `beauty` in a process of its own, for `speed_vs_recbole.py` (which launches it).

Two commands, both run in omnirec's environment:

    python benchmarks/omnirec_sasrec.py prepare --data-dir DIR --out-dir OUT
    python benchmarks/omnirec_sasrec.py train --data-dir DIR --spec '{...}' --precision fp32 \
        --budget-minutes 8 --seed 0 --threads 2 --export-dir E --out r.json

`prepare` writes the leave-one-out split of `beauty` as RecBole's atomic file `OUT/data/beauty/beauty.inter`
(each user's training items, then the validation item, then the test item, with timestamps 0, 1, 2, ...:
RecBole's own leave-one-out split of that file is then the same split), and `OUT/reference.npz`, the
validation users, their targets and training histories, which the common evaluation in
`speed_vs_recbole.py` masks with.

`train` fits SASRec with the sizes in `--spec` for `--budget-minutes`, validating (full ranking, NDCG@10)
after every epoch. After each validation it writes the network's state after each validation user's
training history and the item table to `--export-dir/epochNNN.npz`; that export is timed and left out of
the wall-clock curve.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from omnirec.data.datasets import load_dataset
from omnirec.data.histories import Histories
from omnirec.data.schema import ITEM, TIME, USER
from omnirec.data.split import split_dataset
from omnirec.features.sequences import windows
from omnirec.models.sasrec import SASRec, SASRecConfig
from omnirec.models.sequential import encode_last
from omnirec.train.loop import TrainConfig, bf16_is_fast

DATASET = "beauty"
clock = time.perf_counter


def prepare(data_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write the atomic file and the reference arrays; return the data's sizes."""
    ds = load_dataset(DATASET, data_dir)
    split = split_dataset(ds, "loo")
    parts = [part.select(USER, ITEM, TIME).with_columns(pl.lit(phase).alias("phase"))
             for phase, part in enumerate((split.train, split.valid, split.test))]
    frame = pl.concat(parts).sort([USER, "phase", TIME], maintain_order=True)
    frame = frame.with_columns(pl.int_range(pl.len()).over(USER).cast(pl.Float64).alias("position"))
    folder = out_dir / "data" / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    frame.select(pl.col(USER).alias("user_id:token"), pl.col(ITEM).alias("item_id:token"),
                 pl.col("position").alias("timestamp:float")).write_csv(
        folder / f"{DATASET}.inter", separator="\t", quote_style="never")
    train, valid = split.histories("valid"), split.targets("valid")
    users = np.flatnonzero((valid.lengths() > 0) & (train.lengths() > 0))
    np.savez(out_dir / "reference.npz", users=users, targets=valid.items[valid.indptr[users]],
             indptr=train.indptr, items=train.items, n_items=ds.n_items)
    return {"users": ds.n_users, "items": ds.n_items, "interactions": ds.interactions.height,
            "valid_users": len(users)}


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((row for row in text.splitlines() if row.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def median_ms(fn, repeats: int = 7) -> float:
    """Median milliseconds of `fn()` over `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(1000 * (clock() - start))
    return round(statistics.median(times), 2)


def precision_probe() -> dict[str, object]:
    """Whether bfloat16 runs on native kernels here: the CPU's capability and flags, what the training loop
    decides (`bf16_is_fast`), the dtype autocast gives a linear layer, and fp32 against bf16 timings of the
    two products that dominate an epoch (the logits over the catalogue and a feed-forward layer)."""
    flags = cpu_flags()
    logits_in, table = torch.randn(1536, 64), torch.randn(12102, 64)
    ffn_in, ffn = torch.randn(256 * 50, 64), torch.nn.Linear(64, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_dtype = str(ffn(ffn_in[:8]).dtype)

    def under_autocast(fn):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                fn()
        return run

    with torch.no_grad():
        timings = {
            "logits_1536x64x12102_fp32_ms": median_ms(lambda: logits_in @ table.T),
            "logits_1536x64x12102_bf16_ms": median_ms(lambda: logits_in.bfloat16() @ table.bfloat16().T),
            "linear_12800x64x256_fp32_ms": median_ms(lambda: ffn(ffn_in)),
            "linear_12800x64x256_autocast_bf16_ms": median_ms(under_autocast(lambda: ffn(ffn_in))),
        }
    try:
        mkldnn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        mkldnn_bf16 = False
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "flags": {name: name in flags for name in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")},
        "mkldnn_bf16_supported": mkldnn_bf16, "loop_uses_bf16_when_amp": bf16_is_fast(torch.device("cpu")),
        "autocast_linear_output_dtype": autocast_dtype, **timings,
        "bf16_speedup_logits": round(timings["logits_1536x64x12102_fp32_ms"] / timings["logits_1536x64x12102_bf16_ms"], 2),
        "bf16_speedup_linear": round(timings["linear_12800x64x256_fp32_ms"] / timings["linear_12800x64x256_autocast_bf16_ms"], 2),
    }


def sasrec_config(spec: dict, precision: str, budget_minutes: float, seed: int, threads: int) -> SASRecConfig:
    """omnirec's config for `spec`: no early stopping, no refit, no moving average, weight decay as given."""
    if spec["hidden"] * 4 != spec["inner"]:
        raise ValueError(f"omnirec's feed-forward width is a multiple of d_model; inner={spec['inner']}")
    if spec["optimizer"] != "adam" or spec["loss"] != "ce":
        raise ValueError("this benchmark compares Adam (AdamW, weight decay 0) and full cross-entropy")
    train = TrainConfig(epochs=100_000, batch_size=spec["batch_size"], lr=spec["lr"], weight_decay=spec["weight_decay"],
                        eval_every=1, patience=100_000, max_minutes=budget_minutes, seed=seed, device="cpu",
                        amp=precision == "bf16", threads=threads, progress=False, refit=False, ema_epochs=0.0)
    return SASRecConfig(d_model=spec["hidden"], n_layers=spec["n_layers"], n_heads=spec["n_heads"],
                        ffn_mult=spec["inner"] // spec["hidden"], max_len=spec["max_len"], dropout=spec["dropout"],
                        loss="ce", train=train)


class Recorder:
    """`model.on_validation`: records (wall seconds since the data was ready, NDCG@10) after every
    validation and exports the states the common evaluation ranks with; the export's time is left out."""

    def __init__(self, model: SASRec, ready: float, sequences: Histories, valid: Histories, export_dir: Path):
        self.model, self.ready, self.export_dir, self.excluded = model, ready, export_dir, 0.0
        self.users = np.flatnonzero((valid.lengths() > 0) & (sequences.lengths() > 0))
        self.batch, self.targets = sequences.batch(self.users), valid.items[valid.indptr[self.users]]
        self.curve: list[dict[str, float]] = []

    def __call__(self, count: int, value: float) -> None:
        now = clock()
        module = self.model.module
        hidden = encode_last(module, self.batch, self.model.config.max_len)  # (U, D)
        np.savez(self.export_dir / f"epoch{count:03d}.npz", users=self.users, targets=self.targets,
                 hidden=hidden.float().numpy(), table=module.item_table().detach().float().numpy())
        spent = clock() - now
        self.curve.append({"epoch": count, "t": round(now - self.ready - self.excluded, 3),
                           "native_ndcg@10": float(value), "export_s": round(spent, 3)})
        self.excluded += spent


def train(args: argparse.Namespace) -> dict:
    """Load, fit within the budget, return the run's document (the curve, epoch times, the probe)."""
    torch.set_num_threads(args.threads)
    probe = precision_probe()
    dataset = load_dataset(DATASET, args.data_dir)
    data = split_dataset(dataset, "loo").train_data()
    ready, ready_wall = clock(), time.time()
    spec = json.loads(args.spec)
    config = sasrec_config(spec, args.precision, args.budget_minutes, args.seed, args.threads)
    model = SASRec(config)
    recorder = Recorder(model, ready, data.sequences, data.valid, args.export_dir)
    model.on_validation = recorder
    model.fit(data)
    for point, row in zip(recorder.curve, model.history, strict=True):
        point.update(train_s=row["train_s"], valid_s=round(row["eval_s"] - point["export_s"], 3),
                     epoch_share=row.get("epoch_share", 1.0), loss=row["loss"])
    return {
        "library": "omnirec", "precision": args.precision, "seed": args.seed,
        "bf16_autocast_on": config.train.amp and bf16_is_fast(torch.device("cpu")),
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(), "nice": os.nice(0),
        "startup_s": round(ready_wall - args.spawned_at, 2) if args.spawned_at else None,
        "curve": recorder.curve, "stopped": model.training["stopped"],
        "train_instances": int((windows(data.sequences, config.max_len).lengths() - 1).sum()),
        "parameters": sum(p.numel() for p in model.module.parameters()),
        "peak_rss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "precision_probe": probe, "spec": spec, "config": dataclasses.asdict(config),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="write the atomic file and the reference arrays")
    prep.add_argument("--data-dir", type=Path, required=True)
    prep.add_argument("--out-dir", type=Path, required=True)
    run = commands.add_parser("train", help="fit within a budget, validating every epoch")
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument("--spec", required=True, help="the model and optimiser sizes, as JSON")
    run.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    run.add_argument("--budget-minutes", type=float, required=True)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=int, required=True)
    run.add_argument("--export-dir", type=Path, required=True)
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--spawned-at", type=float, default=0.0, help="time.time() when the launcher started this process")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        result = prepare(args.data_dir, args.out_dir)
    else:
        args.export_dir.mkdir(parents=True, exist_ok=True)
        result = train(args)
    out = args.out_dir / "prepare.json" if args.command == "prepare" else args.out
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
