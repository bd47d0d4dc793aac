"""Compressed bundles on `beauty`: size on disk, test NDCG@10 and recommend latency, for the full bundle and
its int8 and fp16 copies (`omnirec compress`), with the sasrec of the pipeline benchmark's cache.

    python benchmarks/compression.py --data-dir ../shared/data
    python benchmarks/compression.py --report-only      # COMPRESSION.md from the saved JSON
    python benchmarks/compression.py --data-dir ../shared/data --seeds 0,1 --max-minutes 0.2 --max-users 2000 \
        --cache /tmp/pm --out /tmp/compression-smoke/compression.json     # a smoke run

Leave-one-out, full ranking. sasrec (default config) stops early on the validation targets and refits on
train + validation, once per seed of `--seeds` (the pipeline benchmark's cached models, one folder per
seed). NDCG@10 and HR@10 are mean ± sample std over the seeds; each compressed bundle is compared with the
float32 one by the pre-declared paired test (`protocol.paired`). Sizes are seed 0's (every seed's are kept
in the JSON). Latency: `Bundle.recommend` for one known user, median over 500 users, one torch thread,
mean ± std over the seeds. Writes benchmarks/results/compression.json and benchmarks/COMPRESSION.md (with
--out elsewhere: the markdown beside that JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from baselines import code_version  # noqa: E402
from pipeline import DEFAULT_MINUTES, fit_or_load, sasrec_cache, sasrec_config  # noqa: E402 - its cached sasrec
from protocol import SEEDS, describe_test, fmt_mean_std, mean_std, paired  # noqa: E402

from omnirec.bundle import Bundle  # noqa: E402
from omnirec.compress import compress_bundle, folder_bytes  # noqa: E402
from omnirec.data.datasets import load_dataset  # noqa: E402
from omnirec.data.histories import Histories  # noqa: E402
from omnirec.data.split import split_dataset  # noqa: E402
from omnirec.evaluate.ranking import EvalResult, full_ranking_eval  # noqa: E402
from omnirec.models import SASRec  # noqa: E402
from omnirec.utils import atomic_write_text  # noqa: E402

OUT = HERE / "results" / "compression.json"
FULL = "full (float32)"
VARIANTS = {FULL: None, "fp16 weights": "fp16", "int8 weights": "int8"}  # row: `compress_bundle` weights
SIZES = ("bundle_mib", "model_mib")


def measure(folder: Path, histories: Histories, targets: Histories, users: list[str]) -> tuple[dict, EvalResult]:
    """A bundle's sizes and median recommend latency, and its test result."""
    bundle = Bundle.load(folder)
    result = full_ranking_eval(bundle.model, histories, targets, ks=(10,))
    for user in users[:20]:
        bundle.recommend(user, k=10)
    times = []
    for user in users:
        start = time.perf_counter()
        bundle.recommend(user, k=10)
        times.append(time.perf_counter() - start)
    return {"bundle_mib": round(folder_bytes(folder) / 2**20, 3), "model_mib": round(folder_bytes(folder / "model") / 2**20, 3),
            "recommend_ms_p50": round(1000 * float(np.median(times)), 3)}, result


def one_seed(seed: int, ds, split, targets: Histories, users: list[str], args: argparse.Namespace) -> dict:  # noqa: ANN001
    """The seed's sasrec (from the cache, or trained there), bundled, compressed and measured: variant ->
    (sizes and latency, test result)."""
    config = sasrec_config(args.max_minutes, seed)
    model, _ = fit_or_load(SASRec(config), split.train_data(), sasrec_cache(args.cache, "beauty", config))
    histories, out = split.histories("test"), {}
    with tempfile.TemporaryDirectory(prefix="omnirec-compress-") as tmp:
        folder = Path(tmp)
        Bundle.create(model, ds).save(folder / "full")
        for name, weights in VARIANTS.items():
            if weights:
                compress_bundle(folder / "full", folder / weights, weights)
            out[name] = measure(folder / (weights or "full"), histories, targets, users)
            print(f"seed {seed}: {name}", out[name][0], f"NDCG@10 {out[name][1]['ndcg@10']:.4f}", flush=True)
    return out


def rows(runs: list[dict]) -> tuple[dict, dict]:
    """Each variant's row (sizes of the first seed, the rest mean ± std over the seeds, every seed's sizes
    kept) and the paired test of each compressed variant against float32."""
    out = {}
    for name in VARIANTS:
        measured, results = [run[name][0] for run in runs], [run[name][1] for run in runs]
        out[name] = {**{s: measured[0][s] for s in SIZES},
                     **{m: mean_std([r.summary[m] for r in results]) for m in ("ndcg@10", "hr@10")},
                     "recommend_ms_p50": mean_std([m["recommend_ms_p50"] for m in measured], 3),
                     "sizes_per_seed": {s: [m[s] for m in measured] for s in SIZES}}
    tests = {name: paired([run[name][1] for run in runs], [run[FULL][1] for run in runs]) for name in VARIANTS if name != FULL}
    return out, tests


def markdown(doc: dict) -> str:
    base = doc["rows"][FULL]
    seeds = ", ".join(map(str, doc["seeds"]))
    lines = ["# Compressed bundles", "", "Generated by `benchmarks/compression.py`; do not edit by hand. `beauty`, sasrec "
             "(default config; early stopping on the validation targets, then a refit on train + validation), "
             "leave-one-out, full ranking. `omnirec compress` stores large weight matrices as int8 "
             "(a float32 scale per row) or fp16, histories as int32, and zip-compresses every array file; loading "
             f"dequantizes to float32. NDCG@10 and HR@10: mean ± sample std over seeds {seeds}; sizes: seed "
             f"{doc['seeds'][0]}'s. Latency: `Bundle.recommend` for one known user, median of 500, one torch thread "
             "(mean ± std over the seeds).", "",
             "| bundle | size MiB | smaller by | model MiB | NDCG@10 | change | HR@10 | recommend ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in doc["rows"].items():
        change = 100 * (r["ndcg@10"]["mean"] / base["ndcg@10"]["mean"] - 1)
        lines.append(f"| {name} | {r['bundle_mib']:.2f} | {base['bundle_mib'] / r['bundle_mib']:.1f}x | {r['model_mib']:.2f} | "
                     f"{fmt_mean_std(r['ndcg@10'])} | {change:+.2f}% | {fmt_mean_std(r['hr@10'])} | "
                     f"{fmt_mean_std(r['recommend_ms_p50'], 2)} |")
    lines += ["", *(f"- {name} against float32: {describe_test(t)}." for name, t in doc["tests"].items()), "",
              f"Command: `{doc['command']}`; code {doc['code']}; machine: {doc['machine']}.", ""]
    return "\n".join(lines)


def command(args: argparse.Namespace) -> str:
    """The command as typed from the repository root, without local paths."""
    words = ["python benchmarks/compression.py --data-dir ../shared/data"]
    if tuple(args.seeds) != SEEDS:
        words += ["--seeds", ",".join(map(str, args.seeds))]
    if args.max_minutes != DEFAULT_MINUTES:
        words += ["--max-minutes", f"{args.max_minutes:g}"]
    if args.max_users:
        words += ["--max-users", str(args.max_users)]
    return " ".join(words)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    p.add_argument("--cache", default="runs/pipeline-models", help="the pipeline benchmark's trained models")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), type=lambda s: tuple(int(x) for x in s.split(",")))
    p.add_argument("--max-minutes", type=float, default=DEFAULT_MINUTES, help="sasrec's training budget when not cached")
    p.add_argument("--max-users", type=int, default=0, help="evaluate a sample of this many test users (smoke runs)")
    p.add_argument("--out", type=Path, default=OUT, help="the JSON (COMPRESSION.md beside it unless the default)")
    p.add_argument("--report-only", action="store_true", help="rewrite COMPRESSION.md from the saved JSON")
    args = p.parse_args()
    report = HERE / "COMPRESSION.md" if args.out.resolve() == OUT.resolve() else args.out.with_suffix(".md")
    if args.report_only:
        atomic_write_text(report, markdown(json.loads(args.out.read_text())))
        return
    torch.set_num_threads(1)
    ds = load_dataset("beauty", args.data_dir)
    split = split_dataset(ds, "loo")
    targets = split.targets("test")
    if args.max_users:
        users = np.flatnonzero(targets.lengths() > 0)
        targets = targets.only_users(np.sort(np.random.default_rng(0).permutation(users)[: args.max_users]))
    latency_users = list(np.random.default_rng(0).choice(ds.users.labels, 500, replace=False))
    runs = [one_seed(seed, ds, split, targets, latency_users, args) for seed in args.seeds]
    table, tests = rows(runs)
    doc = {"rows": table, "tests": tests, "seeds": list(args.seeds), "code": code_version("benchmarks/compression.py"),
           "command": command(args), "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}"}
    atomic_write_text(args.out, json.dumps(doc, indent=2))
    atomic_write_text(report, markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
