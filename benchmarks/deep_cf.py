"""Deep collaborative models (two-tower, NeuMF, LightGCN) against tuned simple ones (item-kNN, ALS, EASE).

Protocol, per dataset: leave-one-out, full ranking. Each model's hyperparameters are chosen on the
validation targets only (fit on train, rank every item for each user's validation item); the chosen
configuration is then fitted on train + validation (the neural models refit on it for the epochs early
stopping chose; the others simply fit on it) and evaluated once on test, so every model has seen each
user's validation item before ranking the test item. The best deep and the best simple model (by
validation) are compared per user with a paired t-test and a Wilcoxon signed-rank test.

On `ml-100k` a second protocol holds 10% of the users out of training entirely (`cold-users`): only their
attributes (age, gender, occupation, zip region) are known, and two-tower is compared with popularity.

Writes `benchmarks/results/deep_cf.json` and `benchmarks/DEEP_CF.md`.

    python benchmarks/deep_cf.py --data-dir ../shared/data
    python benchmarks/deep_cf.py --data-dir ../shared/data --datasets ml-100k --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from omnirec.auto import build
from omnirec.data.dataset import TrainData
from omnirec.data.datasets import load_dataset
from omnirec.data.split import split_dataset
from omnirec.evaluate.ranking import full_ranking_eval
from omnirec.experiment import paired_test
from omnirec.models import MODELS
from omnirec.utils import atomic_write_text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from baselines import code_version, machine  # noqa: E402

SIMPLE = ("itemknn", "als", "ease")
DEEP = ("twotower", "neumf", "lightgcn")

# The search space of each model: small grids around each method's published or library defaults.
GRIDS: dict[str, list[dict]] = {
    "itemknn": [{"k": k, "shrink": s} for k in (50, 200) for s in (0.0, 10.0)],
    "als": [{"factors": f, "regularization": r, "alpha": a} for f in (64, 128) for r in (1.0, 10.0) for a in (1.0, 10.0)],
    "ease": [{"l2": x} for x in (50.0, 200.0, 500.0, 1500.0)],
    "twotower": [{"temperature": t, "dropout": d} for t, d in ((0.05, 0.1), (0.05, 0.3), (0.1, 0.1))]
    + [{"temperature": 0.05, "item_text": False}],
    "neumf": [{"train": {"lr": lr}} for lr in (1e-3, 3e-3)],
    "lightgcn": [{"reg": r, "train": {"lr": lr}} for r, lr in ((1e-4, 5e-3), (1e-3, 5e-3), (1e-4, 1e-2))],
}
QUICK = {name: grid[:1] for name, grid in GRIDS.items()}


def tune(name: str, grid: list[dict], dataset, split) -> tuple[dict, list[dict]]:
    """Fit each configuration on train (no refit) and score it on the validation targets."""
    train = split.train_data(dataset.item_text, dataset.user_attributes)
    histories, targets = split.histories("valid"), split.targets("valid")
    trials = []
    for params in grid:
        start = time.perf_counter()
        model = build(name, params, trial=True).fit(train)  # the neural models: no refit while tuning
        fit_s = time.perf_counter() - start
        valid = full_ranking_eval(model, histories, targets, ks=(10,))["ndcg@10"]
        trials.append({"params": params, "valid_ndcg@10": round(valid, 5), "fit_s": round(fit_s, 1)})
        print(f"  {name} {params}: valid NDCG@10 {valid:.4f} ({fit_s:.0f} s)", flush=True)
    best = max(trials, key=lambda t: t["valid_ndcg@10"])
    return best["params"], trials


def with_validation(split, dataset) -> TrainData:
    """Train + validation interactions, for the final fit of the models without a refit of their own."""
    return TrainData(split.train_and_valid(), split.n_users, split.n_items, dataset.item_text,
                     user_attributes=dataset.user_attributes)


def run_dataset(name: str, data_dir: Path, grids: dict[str, list[dict]], models: list[str]) -> dict:
    dataset = load_dataset(name, data_dir)
    split = split_dataset(dataset, "loo")
    train = split.train_data(dataset.item_text, dataset.user_attributes)
    train_valid = with_validation(split, dataset)
    histories, targets = split.histories("test"), split.targets("test")
    out: dict = {"dataset": name, "users": dataset.n_users, "items": dataset.n_items,
                 "interactions": dataset.interactions.height, "models": {}}
    results = {}
    for model_name in models:
        print(f"{name}: tuning {model_name}", flush=True)
        params, trials = tune(model_name, grids[model_name], dataset, split)
        start = time.perf_counter()
        model = build(model_name, params).fit(train if model_name in DEEP else train_valid)
        fit_s = time.perf_counter() - start
        results[model_name] = full_ranking_eval(model, histories, targets, ks=(10, 20))
        best_valid = max(t["valid_ndcg@10"] for t in trials)
        out["models"][model_name] = {
            "kind": "deep" if model_name in DEEP else "simple", "params": params, "trials": trials,
            "valid_ndcg@10": best_valid, "fit_s": round(fit_s, 1),
            "test": {k: round(v, 5) for k, v in results[model_name].summary.items() if "@" in k},
            "training": getattr(model, "training", None),
        }
        print(f"{name}: {model_name} test NDCG@10 {results[model_name]['ndcg@10']:.4f}, fit {fit_s:.0f} s", flush=True)
    by_valid = {kind: max((m for m in out["models"] if out["models"][m]["kind"] == kind),
                          key=lambda m: out["models"][m]["valid_ndcg@10"], default=None) for kind in ("deep", "simple")}
    if by_valid["deep"] and by_valid["simple"]:
        test = paired_test(results[by_valid["deep"]], results[by_valid["simple"]], "ndcg@10")
        out["comparison"] = {"deep": by_valid["deep"], "simple": by_valid["simple"], **test}
    return out


def run_cold_users(data_dir: Path, quick: bool) -> dict:
    """ml-100k with 10% of users held out of training: two-tower (attributes) against popularity."""
    dataset = load_dataset("ml-100k", data_dir)
    split = split_dataset(dataset, "cold-users", user_frac=0.1, seed=0)
    train = split.train_data(dataset.item_text, dataset.user_attributes)
    histories = split.histories("test")
    cold = split.targets("test").only_users(split.cold_users)
    warm = split.targets("test").only_users(np.setdiff1d(np.arange(1, dataset.n_users + 1), split.cold_users))
    models = {"pop": MODELS["pop"](), "twotower": build("twotower", {}),
              "twotower (no attributes)": None}
    out: dict = {"cold_users": len(split.cold_users), "cold_targets": int(cold.lengths().sum()), "models": {}}
    results = {}
    for label, model in models.items():
        if model is None:  # the same tower without the attributes: what they add
            model = build("twotower", {})
            fit_data = split.train_data(dataset.item_text, None)
        else:
            fit_data = train
        start = time.perf_counter()
        model.fit(fit_data)
        fit_s = time.perf_counter() - start
        results[label] = full_ranking_eval(model, histories, cold, ks=(10,))
        out["models"][label] = {"cold_ndcg@10": round(results[label]["ndcg@10"], 5),
                                "cold_hr@10": round(results[label]["hr@10"], 5),
                                "warm_ndcg@10": round(full_ranking_eval(model, histories, warm, ks=(10,))["ndcg@10"], 5),
                                "fit_s": round(fit_s, 1)}
        print(f"cold users: {label} {out['models'][label]}", flush=True)
    out["twotower_vs_pop"] = paired_test(results["twotower"], results["pop"], "ndcg@10")
    return out


def markdown(doc: dict) -> str:
    lines = ["# Deep collaborative models against tuned simple ones", "",
             "Generated by `benchmarks/deep_cf.py`; do not edit by hand. Leave-one-out, full ranking over every "
             "item. Hyperparameters chosen on the validation targets only; the chosen configuration is fitted "
             "on train + validation (the neural models: early stopping on validation, then a refit on both for "
             "the chosen epochs) and evaluated once on test. `fit s` is that final fit.", ""]
    for ds in doc["datasets"]:
        lines += [f"## {ds['dataset']} ({ds['users']:,} users, {ds['items']:,} items, {ds['interactions']:,} interactions)", "",
                  "| model | kind | chosen | valid NDCG@10 | test NDCG@10 | test HR@10 | fit s |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for name, m in ds["models"].items():
            chosen = ", ".join(f"{k}={v}" for k, v in m["params"].items() if k != "train")
            lr = m["params"].get("train", {}).get("lr")
            chosen = ", ".join(x for x in (chosen, f"lr={lr}" if lr else "") if x) or "defaults"
            lines.append(f"| {name} | {m['kind']} | {chosen} | {m['valid_ndcg@10']:.4f} | {m['test']['ndcg@10']:.4f} "
                         f"| {m['test']['hr@10']:.4f} | {m['fit_s']:.0f} |")
        c = ds.get("comparison")
        if c:
            verdict = ("better" if c["mean_diff"] > 0 else "worse") if min(c["t_test_p"], c["wilcoxon_p"]) < 0.05 else "not significantly different"
            lines += ["", f"Best deep ({c['deep']}) against best simple ({c['simple']}), both chosen on validation: "
                      f"mean NDCG@10 difference {c['mean_diff']:+.4f} over {c['n_users']:,} users, paired t-test p = "
                      f"{c['t_test_p']:.3g}, Wilcoxon p = {c['wilcoxon_p']:.3g}: **{verdict}**."]
        lines.append("")
    cold = doc.get("cold_users")
    if cold:
        lines += ["## ml-100k, cold users", "",
                  f"{cold['cold_users']} users (10%, seed 0) held out of training entirely; their "
                  f"{cold['cold_targets']:,} interactions are the targets, ranked with an empty history. "
                  "Warm users: leave-one-out.", "",
                  "| model | cold NDCG@10 | cold HR@10 | warm NDCG@10 | fit s |", "|---|---:|---:|---:|---:|"]
        for label, m in cold["models"].items():
            lines.append(f"| {label} | {m['cold_ndcg@10']:.4f} | {m['cold_hr@10']:.4f} | {m['warm_ndcg@10']:.4f} | {m['fit_s']:.0f} |")
        t = cold["twotower_vs_pop"]
        lines += ["", f"two-tower against popularity on cold users: {t['mean_diff']:+.4f}, paired t-test p = "
                  f"{t['t_test_p']:.3g}, Wilcoxon p = {t['wilcoxon_p']:.3g}.", ""]
    lines += [f"Command: `{doc['command']}`; code {doc['code']}; machine: {doc['machine']['cpus']} CPUs, "
              f"torch {doc['machine']['torch']}, {doc['machine']['torch_threads']} threads.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--datasets", default="ml-100k,beauty,scientific")
    parser.add_argument("--models", default=",".join(SIMPLE + DEEP))
    parser.add_argument("--quick", action="store_true", help="one configuration per model (a smoke run)")
    parser.add_argument("--no-cold", action="store_true", help="skip the ml-100k cold-user protocol")
    parser.add_argument("--out", default=str(HERE / "results" / "deep_cf.json"))
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"{data_dir}: no such folder; pass --data-dir (the folder holding ml-100k/, s3rec/ ...)", file=sys.stderr)
        return 2
    grids = QUICK if args.quick else GRIDS
    doc = {"command": "python benchmarks/deep_cf.py " + " ".join(sys.argv[1:]), "code": code_version("benchmarks/deep_cf.py"),
           "machine": machine(), "datasets": []}
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.no_cold:
        doc["cold_users"] = run_cold_users(data_dir, args.quick)
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        doc["datasets"].append(run_dataset(name, data_dir, grids, models))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(doc, indent=2))
        atomic_write_text(HERE / "DEEP_CF.md", markdown(doc))
    atomic_write_text(args.out, json.dumps(doc, indent=2))
    atomic_write_text(HERE / "DEEP_CF.md", markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
