"""The final-list pipeline evaluated like a model: leave-one-out, full catalogue, the same metrics.

    python benchmarks/pipeline.py --data-dir ../shared/data                 # both parts
    python benchmarks/pipeline.py --data-dir ../shared/data --parts beauty  # the trade-off only

Parts:
- beauty: single models (sasrec, itemknn, markov, pop) against the pipeline (sources: sasrec top-200,
  co-occurrence of recent items, neighbours in sasrec's embedding space, popular; ranked by sasrec, by
  rank fusion, or by a logistic-regression ranker fitted on validation targets), and, for the sasrec and
  the learned ranker, a sweep of the MMR diversity weight: NDCG@10 against intra-list diversity and
  coverage (tables + PNG).
- cold: the cold-items split of `scientific` (20% of items held out of training, seeded): the fallback
  chain for new users (empty histories: popular + new items) and a content-aware scenario for new items.

The learned ranker is fitted on validation targets with a second sasrec trained without the refit on
validation items (so those targets are unseen), then ranks test candidates with the refitted sasrec.
Trained models are kept in --cache and reused.
Writes benchmarks/results/pipeline/*.json, the PNG and benchmarks/PIPELINE.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from baselines import code_version
from omnirec.data.datasets import load_dataset
from omnirec.data.split import Split, split_dataset
from omnirec.evaluate.ranking import EvalResult, full_ranking_eval, item_vectors_from_matrix, list_eval
from omnirec.features.sequences import Histories
from omnirec.features.text import TextEncoderConfig, encode_texts
from omnirec.models import ItemKNN, Markov, Popularity, SASRec, TfidfContent
from omnirec.models.base import Recommender
from omnirec.models.sasrec import SASRecConfig
from omnirec.pipeline.pipeline import Pipeline
from omnirec.pipeline.rank import LearnedRanker
from omnirec.pipeline.rerank import RerankConfig
from omnirec.pipeline.scenario import PipelineData, ScenarioConfig, SourceConfig, build_pipeline
from omnirec.train.loop import TrainConfig
from omnirec.utils import atomic_write, atomic_write_text

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "pipeline"
METRICS = ("ndcg@10", "hr@10", "ild@10", "coverage@10", "novelty@10")
DIVERSITY = (0.0, 0.05, 0.1, 0.15, 0.2, 0.225, 0.25, 0.3, 0.4, 0.5, 0.7)


def fit_or_load(model: Recommender, train, folder: Path) -> tuple[Recommender, float]:  # noqa: ANN001
    """The model fitted on `train`, or loaded from `folder` when a previous run saved it there."""
    if (folder / "model.json").exists():
        return type(model).load(folder), float(json.loads((folder / "fit_s.json").read_text()))
    start = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - start
    model.save(folder)
    atomic_write_text(folder / "fit_s.json", json.dumps(fit_s))
    return model, fit_s


def sasrec_folder(name: str, config: SASRecConfig) -> str:
    """Cache folder of a model; sasrec's also names whether it was refitted on validation items."""
    return name if name != "sasrec" else f"sasrec-refit-{config.train.refit}".lower()


def row(result: EvalResult, **extra: object) -> dict:
    return {**{m: round(float(result.summary[m]), 5) for m in METRICS if m in result.summary}, **extra}


def precomputed(lists: np.ndarray):  # noqa: ANN201 - the recommend function of list_eval
    return lambda batch: lists[batch.users]


def pipeline_lists(pipe: Pipeline, reranks: dict[str, RerankConfig], histories: Histories, users: np.ndarray,
                   k: int, batch_size: int = 512) -> dict[str, np.ndarray]:
    """(n_users + 1, k) final lists of every user under each re-rank setting, candidates retrieved once."""
    out = {name: np.zeros((histories.n_users + 1, k), dtype=np.int64) for name in reranks}
    variants = {name: pipe.with_rerank(config) for name, config in reranks.items()}
    for lo in range(0, len(users), batch_size):
        batch = histories.batch(users[lo : lo + batch_size])
        cands = pipe.candidates(batch)
        for name, variant in variants.items():
            out[name][batch.users] = variant.recommend_ids(batch, k, candidates=cands)
        print(f"\r  lists {min(lo + batch_size, len(users)):,}/{len(users):,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def home_scenario(ranker: str = "model") -> ScenarioConfig:
    return ScenarioConfig(
        sources=(SourceConfig("model", n=200), SourceConfig("cooccurrence", n=100),
                 SourceConfig("embedding", n=50), SourceConfig("popular", n=50)),
        k=10, ranker=ranker, fallback=("popular",), candidates=200)


def beauty_part(args: argparse.Namespace) -> dict:
    ds = load_dataset("beauty", args.data_dir)
    split = split_dataset(ds, "loo")
    train = split.train_data(ds.item_text)
    histories, targets = split.histories("test"), split.targets("test")
    item_vectors = item_vectors_from_matrix(train.matrix)
    sasrec_config = SASRecConfig(train=TrainConfig(max_minutes=args.max_minutes, progress=False))
    models = {"sasrec": SASRec(sasrec_config), "itemknn": ItemKNN(), "markov": Markov(), "pop": Popularity()}
    rows, fitted = {}, {}
    for name, model in models.items():
        fitted[name], fit_s = fit_or_load(model, train, Path(args.cache) / "beauty" / sasrec_folder(name, sasrec_config))
        result = full_ranking_eval(fitted[name], histories, targets, ks=(10,), item_users=train.item_users,
                                   item_vectors=item_vectors)
        rows[name] = row(result, fit_s=round(fit_s, 1))
        print(name, rows[name], flush=True)
    best = max(rows, key=lambda n: rows[n]["ndcg@10"])
    sasrec = fitted["sasrec"]
    sasrec_valid_config = dataclasses.replace(sasrec_config, train=dataclasses.replace(sasrec_config.train, refit=False))
    sasrec_valid, _ = fit_or_load(SASRec(sasrec_valid_config), train,
                                  Path(args.cache) / "beauty" / sasrec_folder("sasrec", sasrec_valid_config))
    start = time.perf_counter()
    ranker, fitted_on = fit_learned_ranker(split, ds, sasrec_valid, sasrec, train, args)
    ranker_s = time.perf_counter() - start
    users = np.flatnonzero(targets.lengths() > 0)
    data = PipelineData(sasrec, histories, ds.items)
    pipes = {"sasrec ranker": build_pipeline(home_scenario(), data), "learned ranker": build_pipeline(home_scenario(), data)}
    pipes["learned ranker"].ranker = ranker
    reranks = {f"{w:g}": RerankConfig(diversity=w) for w in DIVERSITY}
    sweeps, sweep_s = {}, {}
    for ranker_name, pipe in pipes.items():
        pipe.item_vectors = torch.from_numpy(data.vectors("interactions"))
        start = time.perf_counter()
        lists = pipeline_lists(pipe, reranks, histories, users, 10)
        sweep_s[ranker_name] = round(time.perf_counter() - start, 1)
        sweeps[ranker_name] = {}
        for name in reranks:
            result = list_eval(precomputed(lists[name]), histories, targets, ds.n_items, ks=(10,),
                               item_users=train.item_users, item_vectors=item_vectors, label=f"mmr {name}")
            sweeps[ranker_name][name] = row(result)
            print(ranker_name, "diversity", name, sweeps[ranker_name][name], flush=True)
    fusion = build_pipeline(home_scenario("fusion"), data)
    fusion_lists = pipeline_lists(fusion, {"0": RerankConfig()}, histories, users, 10)["0"]
    rankers = {
        "pipeline, sasrec ranker": sweeps["sasrec ranker"]["0"],
        "pipeline, fusion ranker (RRF)": row(list_eval(precomputed(fusion_lists), histories, targets, ds.n_items,
                                                       ks=(10,), item_users=train.item_users, item_vectors=item_vectors)),
        "pipeline, learned ranker": sweeps["learned ranker"]["0"],
    }
    return {"dataset": "beauty", "n_users": ds.n_users, "n_items": ds.n_items, "single": rows, "best_single": best,
            "pipelines": rankers, "sweeps": sweeps, "sweep_s": sweep_s, "ranker_fit_s": round(ranker_s, 1),
            "ranker_fitted_on_users": fitted_on, "sasrec_config": dataclasses.asdict(sasrec_config),
            "verdict": {name: verdict(rows[best], sweep, best) for name, sweep in sweeps.items()}}


def fit_learned_ranker(split: Split, ds, sasrec_valid: Recommender, sasrec: Recommender, train,  # noqa: ANN001
                       args: argparse.Namespace) -> tuple[LearnedRanker, int]:
    """The logistic-regression ranker, fitted as a deployed one would be: on validation targets, with
    sources and features from a sasrec that never saw them (no refit); it then ranks with the features
    of the sasrec refitted on training + validation items."""
    valid_histories, valid_targets = split.histories("valid"), split.targets("valid")
    valid_pipe = build_pipeline(home_scenario(), PipelineData(sasrec_valid, valid_histories, ds.items))
    users = np.flatnonzero((valid_targets.lengths() > 0) & (valid_histories.lengths() > 0))
    users = np.sort(np.random.default_rng(0).permutation(users)[: args.ranker_users])
    batches = []
    for lo in range(0, len(users), 512):
        batch = valid_histories.batch(users[lo : lo + 512])
        batches.append((batch, valid_pipe.candidates(batch), valid_targets))
    ranker = LearnedRanker(train.item_counts, model=sasrec_valid).fit(batches)
    ranker.model = sasrec  # the same features, now from the refitted model
    return ranker, len(users)


def verdict(best: dict, sweep: dict, best_name: str) -> dict:
    """The two checks: NDCG at diversity 0 within 3% of the best model; the largest ILD gain with at most
    5% NDCG loss against diversity 0."""
    base = sweep["0"]
    within = [w for w in sweep if sweep[w]["ndcg@10"] >= 0.95 * base["ndcg@10"]]
    top = max(within, key=lambda w: sweep[w]["ild@10"])
    return {"best_single": best_name, "pipeline_vs_best": round(base["ndcg@10"] / best["ndcg@10"] - 1, 4),
            "weight_with_most_ild_at_5pct_loss": top, "ild_gain": round(sweep[top]["ild@10"] / base["ild@10"] - 1, 4),
            "ndcg_change": round(sweep[top]["ndcg@10"] / base["ndcg@10"] - 1, 4)}


def cold_part(args: argparse.Namespace) -> dict:
    ds = load_dataset("scientific", args.data_dir)
    split = split_dataset(ds, "cold-items", item_frac=0.2)
    train = split.train_data(ds.item_text)
    histories, targets = split.histories("test"), split.targets("test")
    text = encode_texts(ds.item_text, TextEncoderConfig(progress=False))
    warm = np.setdiff1d(np.arange(1, ds.n_items + 1), split.cold)
    groups = {"all": targets, "cold": targets.only(split.cold), "warm": targets.only(warm)}
    out: dict = {"dataset": "scientific", "split": "cold-items, 20% of items at random (seed 0)",
                 "n_cold_items": len(split.cold), "targets": {g: int(t.lengths().sum()) for g, t in groups.items()}}
    singles = {"pop": Popularity(), "itemknn": ItemKNN(), "tfidf": TfidfContent()}
    for model in singles.values():
        model.fit(train)
    empty = Histories(np.zeros(histories.n_users + 2, dtype=np.int64), np.zeros(0, dtype=np.int64))
    train_only = Histories.from_frame(split.train, ds.n_users)  # what the pipeline knows: no cold item
    data = PipelineData(singles["itemknn"], train_only, ds.items, text_vectors=text)
    new_user = {  # no time decay: this data's times are positions in each sequence, not a clock
        "new_user: popular": ScenarioConfig(sources=(SourceConfig("popular", n=50),), ranker="fusion",
                                            fallback=("popular", "new_items")),
        "new_user: popular + new items": ScenarioConfig(
            sources=(SourceConfig("popular", n=50), SourceConfig("new_items", n=50)), ranker="fusion"),
    }
    home = ScenarioConfig(sources=(SourceConfig("cooccurrence", n=100), SourceConfig("content", n=100),
                                   SourceConfig("new_items", n=100), SourceConfig("popular", n=50)),
                          ranker="fusion", fallback=("popular", "new_items"))
    new_user_pipes = {name: build_pipeline(config, data) for name, config in new_user.items()}
    home_pipe = build_pipeline(home, data)
    out["new_users"], out["known_users"] = {}, {}
    for group, part in groups.items():
        users = np.flatnonzero(part.lengths() > 0)
        for name, pipe in new_user_pipes.items():
            lists = pipeline_lists(pipe, {"x": RerankConfig()}, empty, users, 10)["x"]
            out["new_users"].setdefault(name, {})[group] = row(list_eval(precomputed(lists), empty, part, ds.n_items, ks=(10,)))
        out["new_users"].setdefault("pop (model)", {})[group] = row(full_ranking_eval(singles["pop"], empty, part, ks=(10,)))
        lists = pipeline_lists(home_pipe, {"x": RerankConfig()}, histories, users, 10)["x"]
        out["known_users"].setdefault("pipeline home (co-occurrence + content + new items + popular)", {})[group] = row(
            list_eval(precomputed(lists), histories, part, ds.n_items, ks=(10,)))
        for name, model in singles.items():
            out["known_users"].setdefault(name, {})[group] = row(full_ranking_eval(model, histories, part, ks=(10,)))
        print(group, json.dumps(out["known_users"], indent=None)[:400], flush=True)
    return out


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("ild@10", "coverage@10"), strict=True):
        for ranker, sweep in doc["sweeps"].items():
            weights = list(sweep)
            xs, ys = [sweep[w][metric] for w in weights], [sweep[w]["ndcg@10"] for w in weights]
            line, = ax.plot(xs, ys, "o-", ms=4, label=f"pipeline, {ranker} (MMR weight)")
            for w, x, y in zip(weights, xs, ys, strict=True):
                ax.annotate(w, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7,
                            color=line.get_color())
            ax.axhline(0.95 * sweep["0"]["ndcg@10"], color=line.get_color(), ls=":", lw=1)
        for name, r in doc["single"].items():
            ax.plot(r[metric], r["ndcg@10"], "s", label=name)
        ax.set_xlabel(metric)
        ax.set_ylabel("ndcg@10")
        ax.legend(fontsize=7)
    fig.suptitle("beauty: accuracy against diversity and coverage (dotted: 5% below each pipeline at weight 0)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def table(rows: dict, columns: tuple[str, ...]) -> list[str]:
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in columns) + " |")
    return lines


def markdown(beauty: dict | None, cold: dict | None) -> str:
    lines = ["# The final-list pipeline, evaluated like a model", "",
             "Generated by `benchmarks/pipeline.py`; do not edit by hand. Leave-one-out, every item of the catalogue",
             "can be listed, history items are never listed; metrics on the final lists (after merging, ranking,",
             "re-ranking and fallback). ILD: 1 - mean pairwise cosine of 64-d SVD item vectors of the training",
             "matrix; MMR uses the same kind of vectors (SVD of the interactions the pipeline knows).", ""]
    if beauty:
        lines += ["## beauty: pipeline against single models", "",
                  f"{beauty['n_users']:,} users, {beauty['n_items']:,} items. sasrec: default config (early stopping, "
                  "then refit on training + validation items). The learned ranker is fitted on validation targets "
                  "with features from a sasrec trained without the refit, then applied with the refitted one.", ""]
        lines += table({**beauty["single"], **beauty["pipelines"]}, METRICS)
        for ranker, sweep in beauty["sweeps"].items():
            v = beauty["verdict"][ranker]
            lines += ["", f"## beauty: the diversity trade-off (MMR weight), pipeline with the {ranker}", ""]
            lines += table(sweep, METRICS)
            lines += ["", f"At weight 0 against the best single model ({v['best_single']}): "
                      f"{100 * v['pipeline_vs_best']:+.1f}% NDCG@10. Largest ILD gain within 5% NDCG@10 loss: weight "
                      f"{v['weight_with_most_ild_at_5pct_loss']}, ILD {100 * v['ild_gain']:+.1f}%, NDCG@10 "
                      f"{100 * v['ndcg_change']:+.1f}%."]
        lines += ["", "![trade-off](results/pipeline/beauty_tradeoff.png)", "", _provenance(beauty), ""]
    if cold:
        lines += ["## New users and new items: scientific, cold-items split", "",
                  f"{cold['split']}; {cold['n_cold_items']:,} cold items; test targets: "
                  + ", ".join(f"{g} {n:,}" for g, n in cold["targets"].items()) + ". No model or source sees a cold "
                  "item's interactions; `new_items` ranks items without interactions by text similarity "
                  "(all-MiniLM-L6-v2) to the user's recent items.", "",
                  "New users (every test user served with an empty history):", ""]
        lines += _group_table(cold["new_users"])
        lines += ["", "Known users (their history), by target group:", ""]
        lines += _group_table(cold["known_users"])
        lines += ["", _provenance(cold), ""]
    return "\n".join(lines)


def _provenance(doc: dict) -> str:
    return f"Command: `{doc['command']}`; code {doc['code']}; machine: {doc['machine']}."


def _group_table(rows: dict) -> list[str]:
    groups = ("all", "cold", "warm")
    lines = ["| | " + " | ".join(f"{g} ndcg@10 | {g} hr@10" for g in groups) + " |", "|---|" + "---:|" * (2 * len(groups))]
    for name, by_group in rows.items():
        cells = " | ".join(f"{by_group[g]['ndcg@10']:.4f} | {by_group[g]['hr@10']:.4f}" for g in groups)
        lines.append(f"| {name} | {cells} |")
    return lines


def _meta(argv: list[str]) -> dict:
    code = code_version("benchmarks/pipeline.py")
    return {"command": "python benchmarks/pipeline.py " + " ".join(a for a in argv if not a.startswith("/")),
            "code": code, "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--parts", default="beauty,cold")
    p.add_argument("--cache", default="runs/pipeline-models", help="trained models are kept here and reused")
    p.add_argument("--max-minutes", type=float, default=15.0, help="sasrec's training budget")
    p.add_argument("--report-only", action="store_true", help="rewrite PIPELINE.md and the plot from the saved results")
    p.add_argument("--ranker-users", type=int, default=8000, help="validation users the learned ranker is fitted on")
    args = p.parse_args()
    parts = [] if args.report_only else args.parts.split(",")
    meta = _meta(["--data-dir", "../shared/data", "--parts", args.parts])
    beauty = cold = None
    if "beauty" in parts:
        beauty = {**beauty_part(args), **meta}
        atomic_write_text(OUT / "beauty.json", json.dumps(beauty, indent=2))
        plot(beauty, OUT / "beauty_tradeoff.png")
    elif (OUT / "beauty.json").exists():
        beauty = json.loads((OUT / "beauty.json").read_text())
        plot(beauty, OUT / "beauty_tradeoff.png")
    if "cold" in parts:
        cold = {**cold_part(args), **meta}
        atomic_write_text(OUT / "cold.json", json.dumps(cold, indent=2))
    elif (OUT / "cold.json").exists():
        cold = json.loads((OUT / "cold.json").read_text())
    atomic_write_text(HERE / "PIPELINE.md", markdown(beauty, cold))
    print(markdown(beauty, cold))


if __name__ == "__main__":
    main()
