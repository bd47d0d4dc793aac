"""The final-list pipeline evaluated like a model: leave-one-out, full catalogue, the same metrics.

    python benchmarks/pipeline.py --data-dir ../shared/data                 # both parts
    python benchmarks/pipeline.py --data-dir ../shared/data --parts beauty  # the trade-off only
    python benchmarks/pipeline.py --report-only                             # PIPELINE.md + PNG from the JSON
    python benchmarks/pipeline.py --data-dir ../shared/data --seeds 0,1 --max-minutes 0.2 --ranker-users 300 \
        --max-users 2000 --cache /tmp/pm --out /tmp/pipeline-smoke          # a smoke run

Parts:
- beauty: single models (sasrec, itemknn, markov, pop) against the pipeline (sources: sasrec top-200,
  co-occurrence of recent items, neighbours in sasrec's embedding space, popular; ranked by sasrec, by
  rank fusion, or by a logistic-regression ranker fitted on validation targets), and, for the sasrec and
  the learned ranker, a sweep of the MMR diversity weight: NDCG@10 against intra-list diversity and
  coverage (tables + PNG).
- cold: the cold-items split of `scientific` (20% of items held out of training, seeded): the fallback
  chain for new users (empty histories: popular + new items) and a content-aware scenario for new items.

Protocol (`protocol.py`): choices on validation only. For the test every model has learnt from train +
validation (`fit_for_test`: sasrec stops early on the validation targets, then refits on both; item-kNN,
Markov and popularity fit on both), and the pipeline's sources know the same interactions. For each seed of
`--seeds`, a second sasrec trained without the refit (`sasrec_valid`, validation targets unseen) serves
validation: the learned ranker is fitted on `--ranker-users` validation users with its features, and the
other validation users choose, per ranker, the MMR weight by the rule "most ILD@10 within 5% NDCG@10 of
weight 0" (means over the seeds) and the best single model (validation NDCG@10). The test sweep is a
description of the trade-off; nothing is chosen from it. Figures are mean ± std over the seeds (item-kNN,
Markov and popularity have no seed: one fit); the pipelines are compared with the best single model by
the one pre-declared test (`protocol.paired`). The cold part has no seed anywhere (its models and sources
are deterministic): one run.

Trained sasrec models are kept in --cache (one folder per seed) and reused.
Writes benchmarks/results/pipeline/*.json, the PNG and benchmarks/PIPELINE.md (with --out elsewhere: the
JSON, PNG and PIPELINE.md all in that folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from baselines import code_version
from protocol import SEEDS, describe_test, fmt_mean_std, paired, summary_over_seeds
from sequential import KEPT

from omnirec.data.dataset import Dataset
from omnirec.data.datasets import load_dataset
from omnirec.data.histories import Histories
from omnirec.data.split import Split, split_dataset
from omnirec.data.train_data import TrainData
from omnirec.evaluate.ranking import EvalResult, full_ranking_eval, list_eval
from omnirec.experiment import fit_for_test
from omnirec.features.similarity import item_vectors_from_matrix
from omnirec.features.text import TextEncoderConfig, encode_texts
from omnirec.models import ItemKNN, Markov, Popularity, SASRec, TfidfContent
from omnirec.models.base import Recommender
from omnirec.models.sasrec import SASRecConfig
from omnirec.pipeline.pipeline import Pipeline
from omnirec.pipeline.rank import LearnedRanker
from omnirec.pipeline.rerank import RerankConfig
from omnirec.pipeline.scenario import PipelineData, ScenarioConfig, build_pipeline, source
from omnirec.train.loop import TrainConfig
from omnirec.utils import atomic_write, atomic_write_text

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "pipeline"
METRICS = ("ndcg@10", "hr@10", "ild@10", "coverage@10", "novelty@10")
DIVERSITY = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7)
WEIGHTS = tuple(f"{w:g}" for w in DIVERSITY)
RERANKS = {name: RerankConfig(diversity=w) for name, w in zip(WEIGHTS, DIVERSITY, strict=True)}
RANKERS = ("sasrec ranker", "learned ranker")
NDCG_LOSS = 0.05  # the rule: the weight with the most ILD@10 among those within 5% NDCG@10 of weight 0
DEFAULT_MINUTES = 0.0  # sasrec's budget: none, early stopping on validation decides, so the figures do not depend
# on how busy the machine is; serve_load.py and compression.py reuse the models it caches
RANKER_USERS = 8000
FIXED = {"itemknn": ItemKNN, "markov": Markov, "pop": Popularity}  # the single models with no seed
PIPELINES = {"pipeline, sasrec ranker": ("sweep", "sasrec ranker", "0"), "pipeline, fusion ranker (RRF)": ("fusion",),
             "pipeline, learned ranker": ("sweep", "learned ranker", "0")}


def adopt(model: Recommender, folder: Path) -> None:
    """Copy into `folder` the model sequential.py fitted on the same dataset and split with the same config
    (progress bars aside), when it kept one: the same seed trains the same weights, so they are not trained
    twice."""
    kept = KEPT / folder.parent.name / f"{model.name}-seed{model.config.train.seed}"
    if folder.exists() or not (kept / "model.json").exists():
        return
    def comparable(config: dict) -> dict:
        return {**config, "train": {**config["train"], "progress": None}}
    saved = json.loads((kept / "model.json").read_text())["config"]
    if comparable(saved) == comparable(json.loads(json.dumps(dataclasses.asdict(model.config)))):
        shutil.copytree(kept, folder)
        print(f"{folder}: sequential.py's fit of the same config, {kept}", flush=True)


def fit_or_load(model: Recommender, train, folder: Path) -> tuple[Recommender, float]:  # noqa: ANN001
    """The model fitted on `train`, or loaded from `folder` when a previous run saved it there (or
    sequential.py fitted the same one)."""
    adopt(model, folder)
    if (folder / "model.json").exists():
        return type(model).load(folder), float(json.loads((folder / "fit_s.json").read_text()))
    start = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - start
    model.save(folder)
    atomic_write_text(folder / "fit_s.json", json.dumps(fit_s))
    return model, fit_s


def sasrec_folder(name: str, config: SASRecConfig) -> str:
    """Cache folder of a model; sasrec's also names whether it was refitted on validation items and its seed.

    >>> sasrec_folder("sasrec", sasrec_config(seed=2, refit=False))
    'sasrec-refit-false-seed2'
    """
    return name if name != "sasrec" else f"sasrec-refit-{config.train.refit}-seed{config.train.seed}".lower()


def sasrec_config(max_minutes: float = DEFAULT_MINUTES, seed: int = 0, refit: bool = True) -> SASRecConfig:
    """The default sasrec (under a training budget when `max_minutes` > 0), with `seed`; `refit=False` keeps
    validation targets unseen."""
    return SASRecConfig(train=TrainConfig(max_minutes=max_minutes, progress=False, seed=seed, refit=refit))


def sasrec_cache(cache: str | Path, dataset: str, config: SASRecConfig) -> Path:
    """Where sasrec trained on `dataset` with `config` is kept: a budget other than the default is named, as
    serve_load.py names it, so a short smoke run never stands in for the real model."""
    minutes = config.train.max_minutes
    budget = "" if minutes == DEFAULT_MINUTES else f"-{minutes:g}min"
    return Path(cache) / dataset / (sasrec_folder("sasrec", config) + budget)


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
        sources=(source("model", n=200), source("cooccurrence", n=100),
                 source("embedding", n=50), source("popular", n=50)),
        k=10, ranker=ranker, fallback=("popular",), candidates=200)


# --------------------------------------------------------------------------------------------------------
# beauty: what the seeds share, one seed, the document
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Phase:
    """A phase's view: model input and mask, targets, what the pipeline and the ranker know then."""

    histories: Histories
    targets: Histories
    counts: np.ndarray  # (I + 1,) interactions per item: the learned ranker's popularity feature


@dataclass(frozen=True)
class Beauty:
    """What every seed shares: the data, the validation phase (train only; the targets of the users held
    out of the ranker's fit), the test phase (train + validation) and the ILD / novelty references."""

    ds: Dataset
    split: Split
    train: TrainData  # train, validation targets riding along for early stopping
    valid: Phase
    test: Phase
    ranker_targets: Histories  # validation targets of the users the learned ranker is fitted on
    item_vectors: np.ndarray  # (I + 1, 64) SVD of the training matrix: ILD
    item_users: np.ndarray  # (I + 1,) distinct training users per item: novelty


def beauty_data(args: argparse.Namespace) -> Beauty:
    """Split `beauty`; draw (seed 0) the validation users the ranker is fitted on, the others choose."""
    ds = load_dataset("beauty", args.data_dir)
    split = split_dataset(ds, "loo")
    train = split.train_data(ds.item_text)
    valid_histories, valid_targets, test_targets = split.histories("valid"), split.targets("valid"), split.targets("test")
    users = np.flatnonzero((valid_targets.lengths() > 0) & (valid_histories.lengths() > 0))
    if args.max_users:  # a smoke run: a sample of the users, in validation and test alike
        users = np.sort(np.random.default_rng(0).permutation(users)[: args.max_users])
        test_targets = test_targets.only_users(users)
    fit_on = np.sort(np.random.default_rng(0).permutation(users)[: args.ranker_users])
    held_out = np.setdiff1d(users, fit_on)
    if len(held_out) == 0:
        raise SystemExit(f"--ranker-users {args.ranker_users} leaves no validation user to choose the MMR weight "
                         f"on ({len(users):,} users); lower it")
    return Beauty(ds, split, train, Phase(valid_histories, valid_targets.only_users(held_out), train.item_counts),
                  Phase(split.histories("test"), test_targets, split.refit_data().item_counts),
                  valid_targets.only_users(fit_on), item_vectors_from_matrix(train.matrix), train.item_users)


def evaluate(b: Beauty, phase: Phase, model: Recommender) -> EvalResult:
    return full_ranking_eval(model, phase.histories, phase.targets, ks=(10,), item_users=b.item_users,
                             item_vectors=b.item_vectors)


def evaluate_lists(b: Beauty, phase: Phase, lists: np.ndarray, label: str) -> EvalResult:
    return list_eval(precomputed(lists), phase.histories, phase.targets, b.ds.n_items, ks=(10,),
                     item_users=b.item_users, item_vectors=b.item_vectors, label=label)


def fixed_singles(b: Beauty) -> tuple[dict[tuple, EvalResult], dict[str, float]]:
    """The single models with no seed, fitted once: on train for validation (the choice of the best single
    model), for the test on train + validation (`fit_for_test`)."""
    results, fit_s = {}, {}
    for name, cls in FIXED.items():
        results["valid", "single", name] = evaluate(b, b.valid, cls().fit(b.train))
        start = time.perf_counter()
        model = fit_for_test(cls(), b.split, b.ds.item_text)
        fit_s[name] = round(time.perf_counter() - start, 1)
        results["test", "single", name] = evaluate(b, b.test, model)
        print(name, row(results["test", "single", name]), flush=True)
    return results, fit_s


def fit_learned_ranker(b: Beauty, sasrec_valid: Recommender) -> tuple[LearnedRanker, int]:
    """The logistic-regression ranker, fitted as a deployed one would be: on validation targets, with
    sources and features from a sasrec that never saw them (no refit). `ranker_on` then points its
    features at another model (the refitted sasrec for the test)."""
    pipe = build_pipeline(home_scenario(), PipelineData(sasrec_valid, b.valid.histories, b.ds.items))
    users = np.flatnonzero(b.ranker_targets.lengths() > 0)
    batches = []
    for lo in range(0, len(users), 512):
        batch = b.valid.histories.batch(users[lo : lo + 512])
        batches.append((batch, pipe.candidates(batch), b.ranker_targets))
    return LearnedRanker(b.valid.counts, model=sasrec_valid).fit(batches), len(users)


def ranker_on(ranker: LearnedRanker, model: Recommender, counts: np.ndarray) -> LearnedRanker:
    """The fitted `ranker` with its features from `model` and the popularity `counts` of its phase."""
    out = LearnedRanker(counts, model=model, item_features=ranker.item_features, negatives=ranker.negatives,
                        seed=ranker.seed)
    out.classifier = ranker.classifier
    return out


def pipelines(b: Beauty, phase: Phase, model: Recommender, ranker: LearnedRanker) -> dict[str, Pipeline]:
    """The home pipeline over `model` and the phase's histories, ranked by the model, by the learned ranker
    (pointed at `model`) and by rank fusion; MMR on SVD vectors of the interactions the pipeline knows."""
    data = PipelineData(model, phase.histories, b.ds.items)
    pipes = {name: build_pipeline(home_scenario(), data) for name in RANKERS}
    pipes["learned ranker"].ranker = ranker_on(ranker, model, phase.counts)
    vectors = torch.from_numpy(data.vectors("interactions"))
    for pipe in pipes.values():
        pipe.item_vectors = vectors
    return {**pipes, "fusion": build_pipeline(home_scenario("fusion"), data)}


def sweeps(b: Beauty, phase: Phase, name: str, pipes: dict[str, Pipeline]) -> tuple[dict[tuple, EvalResult], dict]:
    """Every MMR weight of both rankers on `phase` ("valid" or "test"; the test adds the fusion ranker)."""
    users = np.flatnonzero(phase.targets.lengths() > 0)
    results, seconds = {}, {}
    for ranker in RANKERS:
        start = time.perf_counter()
        lists = pipeline_lists(pipes[ranker], RERANKS, phase.histories, users, 10)
        seconds[ranker] = round(time.perf_counter() - start, 1)
        for w in WEIGHTS:
            results[name, "sweep", ranker, w] = evaluate_lists(b, phase, lists[w], f"mmr {w}")
        print(name, ranker, {w: round(results[name, "sweep", ranker, w]["ndcg@10"], 4) for w in WEIGHTS}, flush=True)
    if name == "test":
        lists = pipeline_lists(pipes["fusion"], {"0": RerankConfig()}, phase.histories, users, 10)["0"]
        results["test", "fusion"] = evaluate_lists(b, phase, lists, "fusion")
    return results, seconds


def beauty_seed(b: Beauty, seed: int, args: argparse.Namespace) -> tuple[dict[tuple, EvalResult], dict]:
    """One seed: sasrec refitted on train + validation (the test) and sasrec_valid (no refit: validation),
    the learned ranker, the validation sweep on the held-out users, every test figure."""
    config, valid_config = sasrec_config(args.max_minutes, seed), sasrec_config(args.max_minutes, seed, refit=False)
    sasrec_valid, _ = fit_or_load(SASRec(valid_config), b.train, sasrec_cache(args.cache, "beauty", valid_config))
    sasrec, fit_s = fit_or_load(SASRec(config), b.train, sasrec_cache(args.cache, "beauty", config))
    results = {("valid", "single", "sasrec"): evaluate(b, b.valid, sasrec_valid),
               ("test", "single", "sasrec"): evaluate(b, b.test, sasrec)}
    print(f"seed {seed}: sasrec", row(results["test", "single", "sasrec"]), flush=True)
    start = time.perf_counter()
    ranker, fitted_on = fit_learned_ranker(b, sasrec_valid)
    timing = {"sasrec_fit_s": round(fit_s, 1), "ranker_fit_s": round(time.perf_counter() - start, 1),
              "ranker_fitted_on_users": fitted_on}
    for name, phase, model in (("valid", b.valid, sasrec_valid), ("test", b.test, sasrec)):
        found, seconds = sweeps(b, phase, name, pipelines(b, phase, model, ranker))
        results.update(found)
        timing[f"{name}_sweep_s"] = seconds
    return results, timing


def beauty_part(args: argparse.Namespace) -> dict:
    b = beauty_data(args)
    fixed, fixed_fit_s = fixed_singles(b)
    runs, timings = zip(*(beauty_seed(b, seed, args) for seed in args.seeds), strict=True)
    results = {key: [run[key] for run in runs] for key in runs[0]}
    results.update({key: [r] for key, r in fixed.items()})  # no seed: one fit is every seed's
    doc = beauty_doc(results, fixed_fit_s, list(timings))
    return {"dataset": "beauty", "n_users": b.ds.n_users, "n_items": b.ds.n_items, "seeds": list(args.seeds),
            "valid_users": int((b.valid.targets.lengths() > 0).sum()), "test_users": int((b.test.targets.lengths() > 0).sum()),
            "ranker_fitted_on_users": timings[0]["ranker_fitted_on_users"],
            "sasrec_config": dataclasses.asdict(sasrec_config(args.max_minutes)), **doc}


def beauty_doc(results: dict[tuple, list[EvalResult]], fixed_fit_s: dict[str, float], timings: list[dict]) -> dict:
    """Every figure as mean ± std over the seeds (per-seed values kept), the choices made on validation and
    the pre-declared tests of the pipelines against the best single model."""
    def summary(*key: str) -> dict:
        return summary_over_seeds(results[key], METRICS)

    singles = ("sasrec", *FIXED)
    single = {n: summary("test", "single", n) for n in singles}
    for name in singles:
        single[name]["fit_s"] = [t["sasrec_fit_s"] for t in timings] if name == "sasrec" else fixed_fit_s[name]
    valid_single = {n: summary("valid", "single", n) for n in singles}
    best = max(singles, key=lambda n: valid_single[n]["ndcg@10"]["mean"])
    sweep = {r: {w: summary("test", "sweep", r, w) for w in WEIGHTS} for r in RANKERS}
    valid_sweep = {r: {w: summary("valid", "sweep", r, w) for w in WEIGHTS} for r in RANKERS}
    tests = {label: paired(results[("test", *key)], results["test", "single", best]) for label, key in PIPELINES.items()}
    verdicts = {r: verdict(single[best], valid_sweep[r], sweep[r], best) for r in RANKERS}
    return {"single": single, "valid_single": valid_single, "best_single": best, "best_single_chosen_on": "validation",
            "pipelines": {label: summary("test", *key) for label, key in PIPELINES.items()},
            "chosen": {r: sweep[r][verdicts[r]["weight_with_most_ild_at_5pct_loss"]] for r in RANKERS},
            "sweeps": sweep, "valid_sweeps": valid_sweep, "tests": tests, "verdict": verdicts,
            "sweep_s": {r: [t["test_sweep_s"][r] for t in timings] for r in RANKERS},
            "valid_sweep_s": {r: [t["valid_sweep_s"][r] for t in timings] for r in RANKERS},
            "ranker_fit_s": [t["ranker_fit_s"] for t in timings]}


def mean(value: dict | float) -> float:
    """A figure's mean over the seeds (a JSON of one run holds the number itself)."""
    return float(value["mean"]) if isinstance(value, dict) else float(value)


def chosen_weight(sweep: dict[str, dict]) -> str:
    """The rule, on the means: the weight with the most ILD@10 among those within 5% NDCG@10 of weight 0.

    >>> chosen_weight({"0": {"ndcg@10": 0.1, "ild@10": 0.5}, "0.1": {"ndcg@10": 0.096, "ild@10": 0.6},
    ...                "0.2": {"ndcg@10": 0.09, "ild@10": 0.7}})
    '0.1'
    """
    base = mean(sweep["0"]["ndcg@10"])
    within = [w for w in sweep if mean(sweep[w]["ndcg@10"]) >= (1 - NDCG_LOSS) * base]
    return max(within, key=lambda w: mean(sweep[w]["ild@10"]))


def change(new: dict | float, old: dict | float) -> float:
    return round(mean(new) / mean(old) - 1, 4)


def verdict(best: dict, valid_sweep: dict, test_sweep: dict, best_name: str) -> dict:
    """The weight chosen on validation by the rule, its validation trade-off, and what it does on the test
    (ILD and NDCG@10 against weight 0); NDCG@10 at weight 0 against the best single model (means)."""
    weight = chosen_weight(valid_sweep)
    base, top, valid_base, valid_top = test_sweep["0"], test_sweep[weight], valid_sweep["0"], valid_sweep[weight]
    return {"best_single": best_name, "pipeline_vs_best": change(base["ndcg@10"], best["ndcg@10"]),
            "weight_with_most_ild_at_5pct_loss": weight, "chosen_on": "validation",
            "weight_is_grid_max": weight == WEIGHTS[-1],
            "valid_ild_gain": change(valid_top["ild@10"], valid_base["ild@10"]),
            "valid_ndcg_change": change(valid_top["ndcg@10"], valid_base["ndcg@10"]),
            "ild_gain": change(top["ild@10"], base["ild@10"]), "ndcg_change": change(top["ndcg@10"], base["ndcg@10"])}


# --------------------------------------------------------------------------------------------------------
# cold items and users: no seed anywhere, one run
# --------------------------------------------------------------------------------------------------------

def cold_part(args: argparse.Namespace) -> dict:
    """Every model and source here is deterministic (the split's cold items are drawn with seed 0): one run.
    The single models and the pipelines know train + validation, like the test histories."""
    ds = load_dataset("scientific", args.data_dir)
    split = split_dataset(ds, "cold-items", item_frac=0.2)
    histories, targets = split.histories("test"), split.targets("test")
    if args.max_users:  # a smoke run: a sample of the users
        users = np.flatnonzero(targets.lengths() > 0)
        targets = targets.only_users(np.sort(np.random.default_rng(0).permutation(users)[: args.max_users]))
    text = encode_texts(ds.item_text, TextEncoderConfig(progress=False))
    warm = np.setdiff1d(np.arange(1, ds.n_items + 1), split.cold)
    groups = {"all": targets, "cold": targets.only(split.cold), "warm": targets.only(warm)}
    out: dict = {"dataset": "scientific", "split": "cold-items, 20% of items at random (seed 0)", "seeds": None,
                 "deterministic": True, "n_cold_items": len(split.cold),
                 "targets": {g: int(t.lengths().sum()) for g, t in groups.items()}}
    singles = {"pop": Popularity(), "itemknn": ItemKNN(), "tfidf": TfidfContent()}
    for name, model in singles.items():
        singles[name] = fit_for_test(model, split, ds.item_text)
    empty = Histories(np.zeros(histories.n_users + 2, dtype=np.int64), np.zeros(0, dtype=np.int64))
    data = PipelineData(singles["itemknn"], histories, ds.items, text_vectors=text)  # train + validation: no cold item
    new_user = {  # no time decay: this data's times are positions in each sequence, not a clock
        "new_user: popular": ScenarioConfig(sources=(source("popular", n=50),), ranker="fusion",
                                            fallback=("popular", "new_items")),
        "new_user: popular + new items": ScenarioConfig(
            sources=(source("popular", n=50), source("new_items", n=50)), ranker="fusion"),
    }
    home = ScenarioConfig(sources=(source("cooccurrence", n=100), source("content", n=100),
                                   source("new_items", n=100), source("popular", n=50)),
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


# --------------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------------

def plot(doc: dict, path: Path) -> None:
    """The test trade-off (means over the seeds), each ranker's weight chosen on validation circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("ild@10", "coverage@10"), strict=True):
        for ranker, sweep in doc["sweeps"].items():
            weights = list(sweep)
            xs, ys = [mean(sweep[w][metric]) for w in weights], [mean(sweep[w]["ndcg@10"]) for w in weights]
            line, = ax.plot(xs, ys, "o-", ms=4, label=f"pipeline, {ranker} (MMR weight)")
            for w, x, y in zip(weights, xs, ys, strict=True):
                ax.annotate(w, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7,
                            color=line.get_color())
            ax.axhline(0.95 * mean(sweep["0"]["ndcg@10"]), color=line.get_color(), ls=":", lw=1)
            chosen = doc["verdict"][ranker]["weight_with_most_ild_at_5pct_loss"]
            if doc["verdict"][ranker].get("chosen_on") == "validation":
                ax.plot(mean(sweep[chosen][metric]), mean(sweep[chosen]["ndcg@10"]), "o", ms=11, mfc="none",
                        color=line.get_color(), label=f"{ranker}: weight {chosen}, chosen on validation")
        for name, r in doc["single"].items():
            ax.plot(mean(r[metric]), mean(r["ndcg@10"]), "s", label=name)
        ax.set_xlabel(metric)
        ax.set_ylabel("ndcg@10")
        ax.legend(fontsize=7)
    fig.suptitle("beauty, test: accuracy against diversity and coverage (dotted: 5% below each pipeline at weight 0)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def cell(value: object) -> str:
    if isinstance(value, dict):
        return fmt_mean_std(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def table(rows: dict, columns: tuple[str, ...]) -> list[str]:
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(r.get(c, "-")) for c in columns) + " |")
    return lines


def beauty_markdown(doc: dict, image: str) -> list[str]:
    seeds = ", ".join(map(str, doc["seeds"]))
    chosen = {f"pipeline, {r}, MMR weight {v['weight_with_most_ild_at_5pct_loss']} (chosen on validation)": doc["chosen"][r]
              for r, v in doc["verdict"].items()}
    lines = ["## beauty: pipeline against single models", "",
             f"{doc['n_users']:,} users, {doc['n_items']:,} items; test figures over {doc['test_users']:,} users, mean ± "
             f"sample std over seeds {seeds} (item-kNN, Markov and popularity have no seed: one fit, std 0). For the "
             "test every model has learnt from train + validation: sasrec (default config) stops early on the "
             "validation targets and refits on both; the others fit on both. The learned ranker is fitted on "
             f"the validation targets of {doc['ranker_fitted_on_users']:,} users with features from a sasrec "
             "trained without the refit, then applied with the refitted one. The other "
             f"{doc['valid_users']:,} validation users choose (with the same sasrec without refit): the best "
             f"single model ({doc['best_single']}) and each ranker's MMR weight.", ""]
    lines += table({**doc["single"], **doc["pipelines"], **chosen}, METRICS)
    lines += ["", f"Each pipeline against the best single model ({doc['best_single']}, chosen on validation):", ""]
    lines += [f"- {label}: {describe_test(t)}." for label, t in doc["tests"].items()]
    for ranker in RANKERS:
        lines += ["", *sweep_markdown(doc, ranker)]
    lines += ["", f"![trade-off]({image})", "", _provenance(doc), ""]
    return lines


def sweep_markdown(doc: dict, ranker: str) -> list[str]:
    """A ranker's MMR weights: the validation sweep that chooses, the test sweep that describes."""
    v = doc["verdict"][ranker]
    weight = v["weight_with_most_ild_at_5pct_loss"]
    edge = (f" **The chosen weight is the grid's largest ({WEIGHTS[-1]}): the grid does not show whether a larger "
            "one would meet the rule.**" if v["weight_is_grid_max"] else "")
    return [f"## beauty: the diversity trade-off (MMR weight), pipeline with the {ranker}", "",
            "Validation (the held-out validation users; this sweep chooses the weight):", "",
            *table(doc["valid_sweeps"][ranker], METRICS), "",
            f"Chosen by the rule (most ILD@10 within 5% NDCG@10 of weight 0, on the means): weight {weight}; on "
            f"validation ILD {100 * v['valid_ild_gain']:+.1f}%, NDCG@10 {100 * v['valid_ndcg_change']:+.1f}%.{edge}", "",
            "Test (a description of the trade-off; nothing is chosen from it):", "",
            *table(doc["sweeps"][ranker], METRICS), "",
            f"At weight 0 against the best single model ({v['best_single']}): {100 * v['pipeline_vs_best']:+.1f}% "
            f"NDCG@10. At the weight chosen on validation ({weight}): ILD {100 * v['ild_gain']:+.1f}%, NDCG@10 "
            f"{100 * v['ndcg_change']:+.1f}% against weight 0."]


def cold_markdown(cold: dict) -> list[str]:
    lines = ["## New users and new items: scientific, cold-items split", "",
             f"{cold['split']}; {cold['n_cold_items']:,} cold items; test targets: "
             + ", ".join(f"{g} {n:,}" for g, n in cold["targets"].items()) + ". No model or source sees a cold "
             "item's interactions; `new_items` ranks items without interactions by text similarity "
             "(all-MiniLM-L6-v2) to the user's recent items. Models and sources have learnt from train + "
             "validation. One run: nothing here has a seed (popularity, item-kNN, TF-IDF, the sources and rank "
             "fusion are deterministic).", "",
             "New users (every test user served with an empty history):", ""]
    lines += _group_table(cold["new_users"])
    lines += ["", "Known users (their history), by target group:", ""]
    lines += _group_table(cold["known_users"])
    return [*lines, "", _provenance(cold), ""]


def markdown(beauty: dict | None, cold: dict | None, image: str = "results/pipeline/beauty_tradeoff.png") -> str:
    lines = ["# The final-list pipeline, evaluated like a model", "",
             "Generated by `benchmarks/pipeline.py`; do not edit by hand. Leave-one-out, every item of the catalogue",
             "can be listed, history items are never listed; metrics on the final lists (after merging, ranking,",
             "re-ranking and fallback). ILD: 1 - mean pairwise cosine of 64-d SVD item vectors of the training",
             "matrix; MMR uses the same kind of vectors (SVD of the interactions the pipeline knows).", ""]
    if beauty:
        lines += beauty_markdown(beauty, image)
    if cold:
        lines += cold_markdown(cold)
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


def _meta(args: argparse.Namespace) -> dict:
    """The command (as typed from the repository root, without local paths) and what ran it."""
    words = ["python benchmarks/pipeline.py --data-dir ../shared/data --parts", args.parts]
    if tuple(args.seeds) != SEEDS:
        words += ["--seeds", ",".join(map(str, args.seeds))]
    if args.max_minutes != DEFAULT_MINUTES:
        words += ["--max-minutes", f"{args.max_minutes:g}"]
    if args.ranker_users != RANKER_USERS:
        words += ["--ranker-users", str(args.ranker_users)]
    if args.max_users:
        words += ["--max-users", str(args.max_users)]
    return {"command": " ".join(words), "code": code_version("benchmarks/pipeline.py"),
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    p.add_argument("--parts", default="beauty,cold")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), type=lambda s: tuple(int(x) for x in s.split(",")),
                   help="sasrec's seeds (comma-separated)")
    p.add_argument("--cache", default="runs/pipeline-models", help="trained models are kept here and reused")
    p.add_argument("--max-minutes", type=float, default=DEFAULT_MINUTES, help="sasrec's training budget in minutes (0: none)")
    p.add_argument("--report-only", action="store_true", help="rewrite PIPELINE.md and the plot from the saved results")
    p.add_argument("--ranker-users", type=int, default=RANKER_USERS, help="validation users the learned ranker is fitted on")
    p.add_argument("--max-users", type=int, default=0, help="evaluate a sample of this many users (smoke runs)")
    p.add_argument("--out", type=Path, default=OUT, help="folder of the JSON and the PNG (and of PIPELINE.md if not the default)")
    args = p.parse_args()
    parts = [] if args.report_only else args.parts.split(",")
    report = HERE / "PIPELINE.md" if args.out.resolve() == OUT.resolve() else args.out / "PIPELINE.md"
    meta = _meta(args)
    beauty = cold = None
    if "beauty" in parts:
        beauty = {**beauty_part(args), **meta}
        atomic_write_text(args.out / "beauty.json", json.dumps(beauty, indent=2))
    elif (args.out / "beauty.json").exists():
        beauty = json.loads((args.out / "beauty.json").read_text())
        if "valid_sweeps" not in beauty:
            raise SystemExit(f"{args.out / 'beauty.json'} is of the old protocol (one seed, the MMR weight chosen on "
                             "test figures); rerun the beauty part: --parts beauty")
    if beauty:
        plot(beauty, args.out / "beauty_tradeoff.png")
    if "cold" in parts:
        cold = {**cold_part(args), **meta}
        atomic_write_text(args.out / "cold.json", json.dumps(cold, indent=2))
    elif (args.out / "cold.json").exists():
        cold = json.loads((args.out / "cold.json").read_text())
    text = markdown(beauty, cold, os.path.relpath(args.out / "beauty_tradeoff.png", report.parent))
    atomic_write_text(report, text)
    print(text)


if __name__ == "__main__":
    main()
