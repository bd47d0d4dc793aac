"""Deep collaborative models (two-tower, NeuMF, LightGCN) against tuned simple ones (item-kNN, ALS, EASE).

Protocol, per dataset: leave-one-out, full ranking. Each model's hyperparameters are chosen on the
validation targets only (fit on train, rank every item for each user's validation item); the chosen
configuration is then fitted on train + validation (the neural models refit on it for the epochs early
stopping chose; the others simply fit on it) and evaluated once on test, so every model has seen each
user's validation item before ranking the test item. A grid whose best point is on an edge is extended
until it is inside (`protocol.search`). The final fits are repeated for 3 seeds (mean ± std). The best
deep and the best simple model (by validation) are compared with the one pre-declared test of
`protocol.TEST` (a paired t-test over users, α = 0.01).

On `ml-100k` a second protocol holds 10% of the users out of training entirely (`cold-users`): only their
attributes (age, gender, occupation, zip region) are known, and two-tower is compared with popularity.

Writes `benchmarks/results/deep_cf.json` and `benchmarks/DEEP_CF.md`.

    python benchmarks/deep_cf.py --data-dir ../shared/data
    python benchmarks/deep_cf.py --data-dir ../shared/data --datasets ml-100k --quick
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from omnirec.auto import build
from omnirec.data.datasets import load_dataset
from omnirec.data.split import split_dataset
from omnirec.evaluate.ranking import full_ranking_eval
from omnirec.experiment import fit_for_test
from omnirec.models import MODELS
from omnirec.utils import atomic_write_text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from baselines import code_version, machine  # noqa: E402
from protocol import (  # noqa: E402
    SEEDS, TEST, Axis, RunCache, describe_grid, describe_test, fmt_mean_std, mean_std, paired, results_from_json,
    results_to_json, search, seeded, summary_over_seeds,
)

SIMPLE = ("itemknn", "als", "ease")
DEEP = ("twotower", "neumf", "lightgcn")

# The starting grid of each model: small grids around each method's published or library defaults.
# `protocol.search` extends any axis whose best value lies on the grid's edge until it is inside.
GRIDS: dict[str, list[dict]] = {
    "itemknn": [{"k": k, "shrink": s} for k in (50, 200) for s in (0.0, 10.0)],
    "als": [{"factors": f, "regularization": r, "alpha": a} for f in (64, 128) for r in (1.0, 10.0) for a in (1.0, 10.0)],
    "ease": [{"l2": x} for x in (50.0, 200.0, 500.0, 1500.0)],
    "twotower": [{"temperature": t, "dropout": d} for t, d in ((0.05, 0.1), (0.05, 0.3), (0.1, 0.1))]
    + [{"temperature": 0.05, "item_text": False}],
    "neumf": [{"train": {"lr": lr}} for lr in (1e-3, 3e-3)],
    "lightgcn": [{"reg": r, "train": {"lr": lr}} for r, lr in ((1e-4, 5e-3), (1e-3, 5e-3), (1e-4, 1e-2))],
}
AXES: dict[str, dict[str, Axis]] = {
    "itemknn": {"k": Axis(low=1, integer=True), "shrink": Axis()},
    "als": {"factors": Axis(low=1, integer=True), "regularization": Axis(), "alpha": Axis()},
    "ease": {"l2": Axis()},
    "twotower": {"temperature": Axis(), "dropout": Axis(high=0.9, scale="linear")},
    "neumf": {"train.lr": Axis()},
    "lightgcn": {"reg": Axis(), "train.lr": Axis()},
}
QUICK = {name: grid[:1] for name, grid in GRIDS.items()}


def tune(name: str, grid: list[dict], dataset, split) -> tuple[dict, list[dict], dict]:
    """Fit each configuration on train (no refit) and score it on the validation targets, extending the
    grid where its best point is on an edge (`protocol.search`)."""
    train = split.train_data(dataset.item_text, dataset.user_attributes)
    histories, targets = split.histories("valid"), split.targets("valid")
    fit_seconds = {}

    def evaluate(params: dict) -> float:
        start = time.perf_counter()
        model = build(name, params, trial=True).fit(train)  # the neural models: no refit while tuning
        fit_seconds[json.dumps(params, sort_keys=True)] = round(time.perf_counter() - start, 1)
        valid = round(full_ranking_eval(model, histories, targets, ks=(10,))["ndcg@10"], 5)
        print(f"  {name} {params}: valid NDCG@10 {valid:.4f} ({fit_seconds[json.dumps(params, sort_keys=True)]:.0f} s)", flush=True)
        return valid

    best, trials, outcome = search(evaluate, grid, AXES.get(name, {}) if len(grid) > 1 else {})
    for t in trials:
        t["fit_s"] = fit_seconds[json.dumps(t["params"], sort_keys=True)]
    print(f"  {name}: chosen {best}; grid {describe_grid(outcome)}", flush=True)
    return best, trials, outcome


def fit_seeds(name: str, params: dict, split, dataset, histories, targets, seeds: tuple[int, ...]) -> tuple[list, list]:
    """The chosen configuration fitted for the test (`fit_for_test`) once per seed (once for a model with
    no seed), each evaluated on the test targets: the results and the fit seconds."""
    results, fit_s = [], []
    for seed in seeds:
        table = seeded(name, params, seed)
        if table is None and results:
            break  # deterministic: one fit is every seed's fit
        start = time.perf_counter()
        model = fit_for_test(build(name, params if table is None else table), split, dataset.item_text,
                             dataset.user_attributes)
        fit_s.append(round(time.perf_counter() - start, 1))
        results.append(full_ranking_eval(model, histories, targets, ks=(10, 20)))
        print(f"  {name} seed {seed}: test NDCG@10 {results[-1]['ndcg@10']:.4f} ({fit_s[-1]:.0f} s)", flush=True)
    return results, fit_s


CODE = ("omnirec", "benchmarks/deep_cf.py", "benchmarks/protocol.py")  # what makes a kept model's figures


def digest(grid: list[dict]) -> str:
    """A short name for a starting grid, so that a kept model is reused only for the grid it was tuned on."""
    return hashlib.sha1(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:10]


def run_dataset(name: str, data_dir: Path, grids: dict[str, list[dict]], models: list[str], seeds: tuple[int, ...],
                cache: RunCache = RunCache(None)) -> dict:
    dataset = load_dataset(name, data_dir)
    split = split_dataset(dataset, "loo")
    histories, targets = split.histories("test"), split.targets("test")
    out: dict = {"dataset": name, "users": dataset.n_users, "items": dataset.n_items,
                 "interactions": dataset.interactions.height, "seeds": list(seeds), "models": {}}
    results = {}
    for model_name in models:
        # a finished model is kept (its row and per-user test results) and reused while omnirec/ is unchanged
        key = (name, f"{model_name}-{digest(grids[model_name])}-seeds{'_'.join(map(str, seeds))}")
        kept = cache.get(*key)
        if kept is not None:
            out["models"][model_name], results[model_name] = kept["row"], results_from_json(kept["results"])
            print(f"{name}: {model_name} reused from {cache.folder} (code {kept['row']['code']})", flush=True)
            continue
        print(f"{name}: tuning {model_name}", flush=True)
        params, trials, outcome = tune(model_name, grids[model_name], dataset, split)
        results[model_name], fit_s = fit_seeds(model_name, params, split, dataset, histories, targets, seeds)
        out["models"][model_name] = {
            "kind": "deep" if model_name in DEEP else "simple", "params": params, "trials": trials,
            "grid": outcome, "valid_ndcg@10": max(t["valid_ndcg@10"] for t in trials),
            "deterministic": seeded(model_name, params, 0) is None, "fit_s": fit_s,
            "test": summary_over_seeds(results[model_name], ("ndcg@10", "hr@10", "ndcg@20", "hr@20")),
            "code": code_version("benchmarks/deep_cf.py"),
        }
        cache.put({"row": out["models"][model_name], "results": results_to_json(results[model_name])}, *key)
        print(f"{name}: {model_name} test NDCG@10 {fmt_mean_std(out['models'][model_name]['test']['ndcg@10'])}", flush=True)
    by_valid = {kind: max((m for m in out["models"] if out["models"][m]["kind"] == kind),
                          key=lambda m: out["models"][m]["valid_ndcg@10"], default=None) for kind in ("deep", "simple")}
    if by_valid["deep"] and by_valid["simple"]:
        test = paired(results[by_valid["deep"]], results[by_valid["simple"]])
        out["comparison"] = {"deep": by_valid["deep"], "simple": by_valid["simple"], **test}
    return out


def run_cold_users(data_dir: Path, seeds: tuple[int, ...]) -> dict:
    """ml-100k with 10% of users held out of training: two-tower (attributes) against popularity."""
    dataset = load_dataset("ml-100k", data_dir)
    split = split_dataset(dataset, "cold-users", user_frac=0.1, seed=0)
    histories = split.histories("test")
    cold = split.targets("test").only_users(split.cold_users)
    warm = split.targets("test").only_users(np.setdiff1d(np.arange(1, dataset.n_users + 1), split.cold_users))
    # label: (model, attributes it may read); the tower without attributes shows what they add
    models = {"pop": ("pop", dataset.user_attributes), "twotower": ("twotower", dataset.user_attributes),
              "twotower (no attributes)": ("twotower", None)}
    out: dict = {"cold_users": len(split.cold_users), "cold_targets": int(cold.lengths().sum()), "seeds": list(seeds),
                 "models": {}}
    results = {}
    for label, (name, attributes) in models.items():
        results[label], warm_ndcg, fit_s = [], [], []
        for seed in seeds:
            table = seeded(name, {}, seed)
            if table is None and results[label]:
                break
            start = time.perf_counter()
            model = fit_for_test(MODELS[name]() if table is None else build(name, table), split, dataset.item_text, attributes)
            fit_s.append(round(time.perf_counter() - start, 1))
            results[label].append(full_ranking_eval(model, histories, cold, ks=(10,)))
            warm_ndcg.append(full_ranking_eval(model, histories, warm, ks=(10,))["ndcg@10"])
        out["models"][label] = {**{f"cold_{m}": s for m, s in summary_over_seeds(results[label], ("ndcg@10", "hr@10")).items()},
                                "warm_ndcg@10": mean_std(warm_ndcg), "fit_s": fit_s}
        print(f"cold users: {label} {out['models'][label]}", flush=True)
    out["twotower_vs_pop"] = paired(results["twotower"], results["pop"])
    return out


def grid_note(m: dict) -> str:
    """The grid column: 'interior', or what is not, with the number of points added beyond the start."""
    added = sum(t.get("added", False) for t in m["trials"])
    text = describe_grid(m.get("grid", {})) if m.get("grid") else "one point"
    return f"{text} (+{added} points)" if added else text


def model_rows(models: dict) -> list[str]:
    rows = ["| model | kind | chosen | grid | valid NDCG@10 | test NDCG@10 | test HR@10 | fit s |",
            "|---|---|---|---|---:|---:|---:|---:|"]
    for name, m in models.items():
        chosen = ", ".join(f"{k}={v}" for k, v in m["params"].items() if k != "train")
        lr = m["params"].get("train", {}).get("lr")
        chosen = ", ".join(x for x in (chosen, f"lr={lr:g}" if lr else "") if x) or "defaults"
        seeds = " (no seed)" if m.get("deterministic") else ""
        rows.append(f"| {name} | {m['kind']} | {chosen} | {grid_note(m)} | {m['valid_ndcg@10']:.4f} "
                    f"| {fmt_mean_std(m['test']['ndcg@10'])}{seeds} | {fmt_mean_std(m['test']['hr@10'])} "
                    f"| {float(np.median(m['fit_s'])):.0f} |")
    return rows


def markdown(doc: dict) -> str:
    lines = ["# Deep collaborative models against tuned simple ones", "",
             "Generated by `benchmarks/deep_cf.py`; do not edit by hand. Leave-one-out, full ranking over every "
             "item. Hyperparameters chosen on the validation targets only (fitted on train, one seed); a grid "
             "whose best point lies on an edge is extended until the best point is inside (the `grid` column "
             "says so, or why not). For the test, every model is fitted on train + validation: the neural "
             "models stop early on validation and then refit on both for the chosen epochs; the others fit on "
             f"both at once. Test figures are mean ± sample std over seeds {', '.join(map(str, doc.get('seeds', SEEDS)))} "
             "(item-kNN and EASE have no seed: one fit). `fit s` is the median final fit. "
             f"Pre-declared test: {doc.get('test', TEST)}.", ""]
    for ds in doc["datasets"]:
        lines += [f"## {ds['dataset']} ({ds['users']:,} users, {ds['items']:,} items, {ds['interactions']:,} interactions)", "",
                  *model_rows(ds["models"])]
        c = ds.get("comparison")
        if c:
            lines += ["", f"Best deep ({c['deep']}) against best simple ({c['simple']}), both chosen on validation: "
                      f"{describe_test(c)}."]
        if ds.get("command"):  # run in its own invocation, then merged with --merge
            lines += ["", f"{ds['dataset']}: `{ds['command']}`; code {ds['code']}."]
        lines.append("")
    cold = doc.get("cold_users")
    if cold:
        lines += ["## ml-100k, cold users", "",
                  f"{cold['cold_users']} users (10%, split seed 0) held out of training entirely; their "
                  f"{cold['cold_targets']:,} interactions are the targets, ranked with an empty history. "
                  "Warm users: leave-one-out.", "",
                  "| model | cold NDCG@10 | cold HR@10 | warm NDCG@10 | fit s |", "|---|---:|---:|---:|---:|"]
        for label, m in cold["models"].items():
            lines.append(f"| {label} | {fmt_mean_std(m['cold_ndcg@10'])} | {fmt_mean_std(m['cold_hr@10'])} "
                         f"| {fmt_mean_std(m['warm_ndcg@10'])} | {float(np.median(m['fit_s'])):.0f} |")
        lines += ["", f"two-tower against popularity on cold users: {describe_test(cold['twotower_vs_pop'])}.", ""]
        if cold.get("command"):  # run apart from the datasets (its own process), then merged with --merge
            lines += [f"Cold users: `{cold['command']}`; code {cold['code']}.", ""]
    asked = re.search(r"--datasets[ =](\S*)", doc["command"])
    missing = [d for d in (asked.group(1).split(",") if asked else []) if d and d not in {x["dataset"] for x in doc["datasets"]}]
    if missing:
        lines += [f"Not in this result: {', '.join(missing)} (the run ended before finishing it).", ""]
    lines += [f"Command: `{doc['command']}`; code {doc['code']}; machine: {doc['machine']['cpus']} CPUs, "
              f"torch {doc['machine']['torch']}, {doc['machine']['torch_threads']} threads.", ""]
    return "\n".join(lines)


def merge(doc: dict, other: dict) -> None:
    """Take the parts `other` (another invocation's result) has into `doc`, each keeping its own provenance."""
    provenance = {"command": other["command"], "code": other["code"]}
    for ds in other["datasets"]:  # in the place of the dataset it replaces, so reports keep their order
        names = [d["dataset"] for d in doc["datasets"]]
        if ds["dataset"] in names:
            doc["datasets"][names.index(ds["dataset"])] = {**ds, **provenance}
        else:
            doc["datasets"].append({**ds, **provenance})
    if other.get("cold_users"):
        doc["cold_users"] = {**other["cold_users"], **provenance}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--datasets", default="ml-100k,beauty,scientific")
    parser.add_argument("--models", default=",".join(SIMPLE + DEEP))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="seeds of the final fits (comma-separated)")
    parser.add_argument("--quick", action="store_true", help="one configuration per model (a smoke run)")
    parser.add_argument("--no-cold", action="store_true", help="skip the ml-100k cold-user protocol")
    parser.add_argument("--report-only", action="store_true", help="rewrite DEEP_CF.md from the saved JSON")
    parser.add_argument("--out", default=str(HERE / "results" / "deep_cf.json"))
    parser.add_argument("--cache", default="runs/deep_cf", help="each finished model is kept here and reused while the "
                        "library is unchanged, so a stopped run continues ('' = none)")
    parser.add_argument("--merge", help="put the datasets (replacing those of the same name) and the cold-user part of "
                        "this result JSON of another invocation into --out, each with its command and code; then rewrite the report")
    args = parser.parse_args()
    if args.report_only or args.merge:
        doc = json.loads(Path(args.out).read_text())
        if args.merge:
            merge(doc, json.loads(Path(args.merge).read_text()))
            atomic_write_text(args.out, json.dumps(doc, indent=2))
        atomic_write_text(HERE / "DEEP_CF.md", markdown(doc))
        return 0
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"{data_dir}: no such folder; pass --data-dir (the folder holding ml-100k/, s3rec/ ...)", file=sys.stderr)
        return 2
    grids = QUICK if args.quick else GRIDS
    seeds = tuple(int(x) for x in args.seeds.split(","))
    doc = {"command": "python benchmarks/deep_cf.py " + " ".join(sys.argv[1:]), "code": code_version("benchmarks/deep_cf.py"),
           "machine": machine(), "seeds": list(seeds), "test": TEST, "datasets": []}
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    report = HERE / "DEEP_CF.md" if Path(args.out).resolve() == (HERE / "results" / "deep_cf.json").resolve() else Path(args.out).with_suffix(".md")
    cache = RunCache(Path(args.cache) if args.cache else None, CODE)  # the code as the run starts
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        doc["datasets"].append(run_dataset(name, data_dir, grids, models, seeds, cache))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(doc, indent=2))
        atomic_write_text(report, markdown(doc))
    if not args.no_cold:
        doc["cold_users"] = run_cold_users(data_dir, seeds)
    atomic_write_text(args.out, json.dumps(doc, indent=2))
    atomic_write_text(report, markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
