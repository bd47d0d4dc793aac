"""The sequence models (sasrec, hstu, gru4rec) on the public benchmarks: leave-one-out, full ranking,
default configs (the same on every dataset), training time and peak memory; 3 seeds (mean ± std), and
the one pre-declared paired test of `protocol.TEST` of every other model against the first one named.

Writes `benchmarks/results/sequential/<dataset>.json` and the "Sequential models" part of
`benchmarks/SEQUENTIAL.md`, with published numbers of the same data and protocol beside ours.

    python benchmarks/sequential.py --data-dir ../shared/data
    python benchmarks/sequential.py --datasets beauty --models sasrec --max-minutes 10 --seeds 0
    python benchmarks/sequential.py --report-only    # rewrite SEQUENTIAL.md from results/sequential/*.json
    python benchmarks/sequential.py --datasets beauty-bert4rec --checkpoints runs/seq-ckpt   # resumable
    python benchmarks/sequential.py --datasets beauty-bert4rec --models sasrec --max-epochs 10 --seeds 1 --keep-seeds

Each finished (model, seed) run is kept in `--cache` and reused by a later invocation while the library
(`omnirec/`, by its git tree) is unchanged, so a stopped run continues where it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

import readme_figures
from baselines import code_version, machine
from protocol import SEEDS, TEST, RunCache, describe_test, exit_with_parent, fmt_mean_std, mean_std, paired

from omnirec.data.datasets import DATASETS, load_dataset
from omnirec.data.split import split_dataset
from omnirec.evaluate.ranking import EvalResult, full_ranking_eval
from omnirec.models import MODELS
from omnirec.utils import atomic_write_text

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "sequential"
KEPT = Path("runs/sequential-models")  # every fitted model without a budget; pipeline.py reuses sasrec's

# Published full-ranking, leave-one-out numbers on the same files: (model, metrics, source).
PUBLISHED = {
    "beauty": [
        ("SASRec, sampled softmax", {"ndcg@10": 0.0531, "hr@10": 0.0921}, "eSASRec benchmark (RecSys 2025)"),
        ("eSASRec", {"ndcg@10": 0.0523, "hr@10": 0.0928}, "eSASRec benchmark (RecSys 2025)"),
        ("TIGER", {"ndcg@10": 0.0384, "hr@10": 0.0648}, "Rajput et al., NeurIPS 2023"),
        ("SASRec (BCE)", {"ndcg@10": 0.0318, "hr@10": 0.0605}, "P5 (Geng et al., RecSys 2022), Table 3"),
    ],
    "beauty-bert4rec": [
        ("SASRec+ (full CE)", {"ndcg@10": 0.0327, "hr@10": 0.0533}, "Klenitskiy & Vasilev, RecSys 2023"),
    ],
}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_model(name: str, dataset_name: str, data_dir: Path, max_minutes: float, seed: int,
              checkpoints: str = "", max_epochs: int = 0, parent: int | None = None) -> dict:
    """Fit one model with its default config and `seed` (optionally under a time budget or a cap on the
    epochs, `max_epochs`: 0 = the model's own), evaluate on test.
    Run in a process of its own, so that the peak memory is this model's. With `checkpoints` (a folder for
    this run), training resumes from the checkpoint a stopped invocation left there; its seconds are then
    the sum of the epochs' recorded seconds, since this process saw only the last of them. With `parent`
    (the invoking process), it ends when that process is killed."""
    if parent is not None:
        exit_with_parent(parent)
    dataset = load_dataset(dataset_name, data_dir)
    split = split_dataset(dataset, "loo")
    cls = MODELS[name]
    config = cls.Config()
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, seed=seed, max_minutes=max_minutes, checkpoint_dir=checkpoints,
        epochs=max_epochs or config.train.epochs))
    model = cls(config)
    resumed = bool(checkpoints) and any(Path(checkpoints).rglob("*.pt"))
    start = time.perf_counter()
    model.fit(split.train_data(dataset.item_text))
    fit_s = time.perf_counter() - start
    if resumed:
        fit_s = sum(row.get("train_s", 0.0) + row.get("eval_s", 0.0) for row in model.history)
    if max_minutes == 0 and max_epochs == 0:  # a budgeted fit is not the default model: not for reuse
        kept = KEPT / dataset_name / f"{name}-seed{seed}"
        model.save(kept)
        atomic_write_text(kept / "fit_s.json", json.dumps(fit_s))
    result = full_ranking_eval(model, split.histories("test"), split.targets("test"), ks=(10, 20))
    epoch_s = [row["train_s"] for row in model.history]
    return {
        "seed": seed, "metrics": {k: round(v, 5) for k, v in result.summary.items()},
        "fit_s": round(fit_s, 1), "eval_s": round(result.eval_s, 2),
        "epoch_s_median": round(statistics.median(epoch_s), 2), "training": model.training,
        "peak_rss_mib": round(peak_rss_mib(), 1), "config": dataclasses.asdict(config),
        "history": model.history, "users": result.users.tolist(), "per_user_ndcg@10": result.per_user["ndcg@10"].tolist(),
        **({"resumed": True} if resumed else {}),
    }


def over_seeds(runs: list[dict]) -> dict:
    """One model's row: each metric's mean ± std over the seeds' runs, the medians of the times, the
    largest peak memory, and every run (without its per-user values)."""
    metrics = {m: mean_std([r["metrics"][m] for r in runs]) for m in runs[0]["metrics"]}
    kept = [{k: v for k, v in r.items() if k not in ("users", "per_user_ndcg@10", "config")} for r in runs]
    return {"metrics": metrics, "seeds": [r["seed"] for r in runs],
            "fit_s": round(statistics.median(r["fit_s"] for r in runs), 1),
            "epoch_s_median": round(statistics.median(r["epoch_s_median"] for r in runs), 2),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "config": runs[0]["config"], "runs": kept,
            "training": runs[0]["training"]}


def as_results(runs: list[dict]) -> list[EvalResult]:
    return [EvalResult("loo", np.asarray(r["users"]), {"ndcg@10": np.asarray(r["per_user_ndcg@10"])},
                       {"ndcg@10": r["metrics"]["ndcg@10"]}, 0.0)
            for r in runs]


def started_code() -> str:
    """The commit of the library and this script as the run starts ('+dirty' with changes): a commit made
    while a run goes on must not label its results as the new code's."""
    global STARTED_CODE
    if STARTED_CODE is None:
        STARTED_CODE = code_version("benchmarks/sequential.py")
    return STARTED_CODE


STARTED_CODE: str | None = None


def cached_run(cache: RunCache, name: str, model: str, data_dir: Path, max_minutes: float, seed: int,
               checkpoints: Path | None = None, max_epochs: int = 0) -> dict:
    """One (model, seed) run, from the cache where the same library made it, else fitted in a process of its
    own (so that the peak memory is this model's), checkpointed under `checkpoints` where given, and kept."""
    key = (name, f"{model}-seed{seed}-{max_minutes:g}min" + (f"-{max_epochs}ep" if max_epochs else ""))
    run = cache.get(*key)
    if run is not None:
        print(f"{name} {model} seed {seed}: reused from {cache.folder} (code {run['code']})", flush=True)
        return run
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        folder = str(checkpoints / name / key[1]) if checkpoints else ""
        run = {**child.submit(run_model, model, name, data_dir, max_minutes, seed, folder, max_epochs,
                                  os.getpid()).result(),
               "code": started_code()}
    cache.put(run, *key)
    return run


def comparable(config: dict) -> dict:
    """A run's config without what differs between seeds of one setting (the seed, the checkpoint folder)."""
    train = {k: v for k, v in config["train"].items() if k not in ("seed", "checkpoint_dir")}
    return {**config, "train": train}


def saved_seeds(row: dict | None, runs: list[dict]) -> list[dict]:
    """The saved `row`'s per-seed runs of the same setting as `runs` and of seeds `runs` has not, each with
    its config (a row keeps one config; its seeds differ only by the seed); none when the setting differs."""
    if not row or "runs" not in row or "config" not in row or comparable(row["config"]) != comparable(runs[0]["config"]):
        return []
    have = {r["seed"] for r in runs}
    return [{**r, "config": {**row["config"], "train": {**row["config"]["train"], "seed": r["seed"]}}}
            for r in row["runs"] if r["seed"] not in have]


def run_dataset(name: str, data_dir: Path, models: list[str], max_minutes: float, seeds: tuple[int, ...],
                cache: RunCache = RunCache(None), checkpoints: Path | None = None, max_epochs: int = 0,
                keep_seeds: bool = False) -> dict:
    """Every model in `models` over `seeds`; with `keep_seeds`, a model's saved runs of other seeds (same
    setting) join its row, so that seeds too long for one sitting can be run one invocation at a time."""
    dataset = load_dataset(name, data_dir)
    document = {
        "dataset": name, "protocol": "loo-full", "n_users": dataset.n_users, "n_items": dataset.n_items,
        "n_interactions": dataset.interactions.height, "results": {}, "seeds": list(seeds), "test": TEST,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "code": started_code(),
        "machine": machine(),
        "published": [{"model": m, "metrics": v, "source": s} for m, v, s in PUBLISHED.get(name, [])],
    }
    previous = OUT / f"{name}.json"
    old = json.loads(previous.read_text()) if previous.exists() else {"results": {}}
    kept = old["results"]  # keep the other models' results; the rows say which code made them
    document["results"] = {m: {"code": kept[m].get("code", old["code"]), **kept[m]} for m in kept if m not in models}
    per_model = {}
    for model in models:
        runs = []
        for seed in seeds:
            runs.append(cached_run(cache, name, model, data_dir, max_minutes, seed, checkpoints, max_epochs))
            r = runs[-1]
            print(f"{name} {model} seed {seed}: ndcg@10 {r['metrics']['ndcg@10']:.4f} fit {r['fit_s']:.0f} s "
                  f"({r['training']['epochs_run']} epochs, best {r['training']['best_epoch']}), peak {r['peak_rss_mib']:.0f} MiB",
                  flush=True)
        saved = saved_seeds(kept.get(model), runs) if keep_seeds else []
        if saved:
            print(f"{name} {model}: saved seeds {[r['seed'] for r in saved]} kept beside the new", flush=True)
            runs = sorted(runs + saved, key=lambda r: r["seed"])
        else:  # the paired test needs every seed's per-user values, which a saved run has not
            per_model[model] = as_results(runs)
        codes = dict.fromkeys(r.get("code", document["code"]) for r in runs)  # reused runs keep the code that made them
        document["results"][model] = {**over_seeds(runs), "code": "/".join(codes)}
    # the one pre-declared test: every other model against the first one named (sasrec by default)
    first = models[0]
    document["comparisons"] = [{"a": a, "b": first, **paired(ra, per_model[first])}
                               for a, ra in per_model.items() if a != first and first in per_model]
    return document


def stopped_by(row: dict) -> str:
    """Why the (first seed's) early-stopping run ended; a cap below the model's own reads as such (the
    README's rule, `readme_figures.stopped_by`)."""
    return readme_figures.stopped_by(row["training"], readme_figures.epoch_cap(row))


def markdown(documents: list[dict]) -> str:
    lines = ["# Sequential models: leave-one-out, full ranking", "",
             "Generated by `benchmarks/sequential.py`; do not edit by hand. Default configs, the same on every",
             "dataset: early stopping on validation NDCG@10 (patience 5), then a refit from scratch on training +",
             "validation items for the chosen number of epochs; the test split is evaluated once, all users, all",
             "items ranked, history items masked. `epochs (best)` is the early-stopping run (the refit then trains",
             "`best` epochs); `fit s` covers both. A time budget (`--max-minutes`) bounds the early-stopping run and",
             "the refit together; a cap on the epochs (`--max-epochs`, the same on any machine) bounds the",
             "early-stopping run (`stopped by`: epoch cap N). The weights validated and kept are an exponential moving average of the",
             "trained ones over about one epoch (`ema_epochs`); AdamW with weight decay 0.1. Figures are mean ±",
             "sample std over the seeds (`seeds` column; a row with one seed has std 0); `epochs (best)` and",
             "`stopped by` are the first seed's, times are medians over the seeds, peak MiB the largest.",
             f"Pre-declared test between the two models of a dataset run together: {TEST}.", ""]
    for doc in documents:
        lines += [f"## {doc['dataset']}", "", f"{doc['n_users']:,} users, {doc['n_items']:,} items, "
                  f"{doc['n_interactions']:,} interactions. {doc['machine']['cpus']} CPUs, "
                  f"torch {doc['machine']['torch']}, {doc['machine']['torch_threads']} threads.", "",
                  "| model | ndcg@10 | hr@10 | ndcg@20 | hr@20 | epochs (best) | stopped by | s/epoch | fit s | peak MiB | seeds | code |",
                  "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
        for model, row in doc["results"].items():
            m, t = row["metrics"], row["training"]
            lines.append(f"| {model} | {fmt_mean_std(m['ndcg@10'])} | {fmt_mean_std(m['hr@10'])} | {fmt_mean_std(m['ndcg@20'])} "
                         f"| {fmt_mean_std(m['hr@20'])} | {t['epochs_run']} ({t['best_epoch']}) | {stopped_by(row)} "
                         f"| {row['epoch_s_median']:.1f} | {row['fit_s']:.0f} | {row['peak_rss_mib']:.0f} "
                         f"| {len(row.get('seeds', [0]))} | {row.get('code', doc['code'])} |")
        for pub in doc["published"]:
            m = pub["metrics"]
            lines.append(f"| *{pub['model']}* ({pub['source']}) | {m['ndcg@10']:.4f} | {m['hr@10']:.4f} | | | | | | | | | |")
        comparisons = doc.get("comparisons") or ([doc["comparison"]] if doc.get("comparison") else [])
        if comparisons:
            lines.append("")
        lines += [f"{c['a']} against {c['b']}: {describe_test(c)}." for c in comparisons]
        lines.append("")
    lines += ["Training speed against RecBole (fp32 on both sides, time to the same validation quality): "
              "[SPEED.md](SPEED.md).", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--datasets", default="beauty,beauty-bert4rec,ml-100k")
    parser.add_argument("--models", default="sasrec,hstu,gru4rec", help="the first is the one the others are tested against")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="training budget per model (0 = none)")
    parser.add_argument("--max-epochs", type=int, default=0, help="cap on the early-stopping run's epochs, the "
                        "same on any machine (0 = the model's own); the refit trains the best epoch's number")
    parser.add_argument("--keep-seeds", action="store_true", help="keep a model's saved runs of other seeds (same "
                        "setting) in its row: long seeds run one invocation at a time (no paired test then)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="training seeds (comma-separated)")
    parser.add_argument("--report-only", action="store_true", help="rewrite SEQUENTIAL.md from the saved results")
    parser.add_argument("--cache", default="runs/sequential", help="finished runs are kept here and reused while the "
                        "library is unchanged ('' = none)")
    parser.add_argument("--checkpoints", default="", help="checkpoint each run under this folder, and resume a "
                        "stopped one from there ('' = none)")
    args = parser.parse_args()
    if args.report_only:
        args.datasets = ""
    data_dir = Path(args.data_dir)
    if not args.report_only and not data_dir.is_dir():
        print(f"benchmark data not found at {data_dir}; pass --data-dir", file=sys.stderr)
        return 2
    cache = RunCache(Path(args.cache) if args.cache else None)  # the code as the run starts
    started_code()
    for name in filter(None, args.datasets.split(",")):
        if name not in DATASETS:
            print(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}", file=sys.stderr)
            return 2
        seeds = tuple(int(x) for x in args.seeds.split(","))
        document = run_dataset(name, data_dir, args.models.split(","), args.max_minutes, seeds, cache,
                               Path(args.checkpoints) if args.checkpoints else None, args.max_epochs, args.keep_seeds)
        atomic_write_text(OUT / f"{name}.json", json.dumps(document, indent=2))
    documents = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    atomic_write_text(HERE / "SEQUENTIAL.md", markdown(documents))
    return 0


if __name__ == "__main__":
    sys.exit(main())
