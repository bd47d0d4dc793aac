"""Automatic model selection: profile the data, pick candidate models from its traits, search each one's
hyperparameters with Optuna on the validation split within a time budget (bad trials of the models that
train in epochs are pruned from their validation curve), then train the best configuration as
`omnirec train` would and evaluate it once on the test split.

The test split is never seen during selection: the profile that picks the candidates is of the train
and validation rows only (`selection_dataset`), and the search works on a copy of the split whose test
part is empty (`selection_split`), so nothing either computes can depend on test items.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from omnirec.config import from_dict, to_dict
from omnirec.data.dataset import Dataset
from omnirec.data.datasets import DataConfig
from omnirec.data.histories import Histories
from omnirec.data.schema import TIME, USER
from omnirec.data.split import Split, split_dataset
from omnirec.data.train_data import TrainData
from omnirec.evaluate.ranking import full_ranking_eval
from omnirec.models import MODELS
from omnirec.models.base import Recommender
from omnirec.profile import profile_dataset
from omnirec.utils import atomic_write, atomic_write_text

QUIET_TRAIN = {"progress": False}


@dataclass(frozen=True)
class Candidate:
    """A model worth trying on this data, why, and its share of the search time (relative weight)."""

    model: str
    reason: str
    weight: float
    max_trials: int


def choose_candidates(traits: dict[str, Any], budget_minutes: float) -> list[Candidate]:
    """Models worth trying, from the data's traits, each with the reason; cheap ones first."""
    out = [Candidate("pop", "the floor every model must beat", 0.0, 1),
           Candidate("itemknn", "item-to-item similarity: strong on sparse implicit data", 1.0, 12)]
    if traits["items"] <= 30_000:
        out.append(Candidate("ease", f"{traits['items']:,} items: the closed-form EASE fits in memory", 2.0, 6))
    else:
        out.append(Candidate("als", f"{traits['items']:,} items: too many for EASE; matrix factorisation scales", 1.0, 10))
    seq = traits["sequence_length"]["median"]
    if traits["sequential_signal"] >= 0.02 and seq >= 3:
        out.append(Candidate("markov", f"order matters ({traits['sequential_signal']:.1%} more recurring "
                                       "transitions than shuffled)", 0.0, 1))
        if budget_minutes >= 10:
            out.append(Candidate("sasrec", f"sequential signal and {seq:g} events per user (median): a "
                                           "Transformer over the history", 8.0, 30))
    if traits["user_attributes"] and traits["user_attribute_coverage"] >= 0.5 and budget_minutes >= 10:
        out.append(Candidate("twotower", "user attributes (" + ", ".join(traits["user_attributes"]) + ") "
                                         "that a user tower can read", 4.0, 20))
    elif budget_minutes >= 20 and not any(c.model == "sasrec" for c in out):
        out.append(Candidate("twotower", "no strong order in the data: a neural two-tower over IDs and history",
                             4.0, 20))
    if traits["item_text_coverage"] >= 0.5:
        out.append(Candidate("tfidf", f"{traits['item_text_coverage']:.0%} of items have text", 0.0, 1))
    return out


def selection_split(split: Split) -> Split:
    """The split the search sees: train and validation only (the test part is emptied)."""
    return dataclasses.replace(split, test=split.test.head(0))


def selection_dataset(dataset: Dataset, split: Split) -> Dataset:
    """The dataset as the profile sees it: the split's train and validation rows (every column), in (user,
    time) order; the catalogue and id maps stay whole, the test rows are gone."""
    seen = pl.concat([split.train, split.valid]).sort([USER, TIME], maintain_order=True)
    return dataclasses.replace(dataset, interactions=seen)


def build(name: str, params: dict[str, Any], max_minutes: float = 0.0, trial: bool = False) -> Recommender:
    """Model `name` from a `[models.<name>]` table, with progress off and a time cap on training; a search
    `trial` skips the refit on train + validation (the trial is scored on validation)."""
    cls = MODELS[name]
    table = _quiet(cls.Config, json.loads(json.dumps(params)), max_minutes, trial)
    return cls(from_dict(cls.Config, table, where=f"[models.{name}]"))


def _quiet(config: type, table: dict[str, Any], max_minutes: float, trial: bool) -> dict[str, Any]:
    """`table` with progress bars off, the time cap and the trial's no-refit set in its `train` and
    `encoder` tables, and in those of any model config nested in it (a hybrid's text model)."""
    for f in dataclasses.fields(config):
        if f.name == "train":
            table["train"] = {**table.get("train", {}), **QUIET_TRAIN}
            if max_minutes:
                table["train"]["max_minutes"] = round(max_minutes, 2)
            if trial:
                table["train"]["refit"] = False
        elif f.name == "encoder":
            table["encoder"] = {**table.get("encoder", {}), "progress": False}
        elif dataclasses.is_dataclass(f.default_factory() if callable(f.default_factory) else None):
            inner = type(f.default_factory())
            if any(g.name in ("train", "encoder") for g in dataclasses.fields(inner)):
                table[f.name] = _quiet(inner, table.get(f.name, {}), max_minutes, trial)
    return table


def _validation_reporter(trial: Any) -> Callable[[int, float], None]:
    """Reports each validation to Optuna and stops the trial when the pruner says so."""
    import optuna

    def report(step: int, value: float) -> None:
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at validation {step} (NDCG@10 {value:.4f})")

    return report


@dataclass
class SearchResult:
    """Every trial of every model, in the order run."""

    trials: list[dict[str, Any]] = field(default_factory=list)

    def best(self) -> dict[str, Any]:
        done = [t for t in self.trials if t["state"] == "complete"]
        if not done:
            raise RuntimeError("no trial completed within the budget; give more time")
        return max(done, key=lambda t: t["valid_ndcg@10"])

    def leaderboard(self) -> list[dict[str, Any]]:
        """One row per model: its best trial, its number of trials and of pruned trials."""
        rows = []
        for model, group in itertools.groupby(sorted(self.trials, key=lambda t: t["model"]), key=lambda t: t["model"]):
            group = list(group)
            done = [t for t in group if t["state"] == "complete"]
            best = max(done, key=lambda t: t["valid_ndcg@10"]) if done else None
            rows.append({"model": model, "best_valid_ndcg@10": best["valid_ndcg@10"] if best else None,
                         "params": best["params"] if best else None, "trials": len(group),
                         "pruned": sum(t["state"] == "pruned" for t in group),
                         "seconds": round(sum(t["seconds"] for t in group), 1)})
        return sorted(rows, key=lambda r: -(r["best_valid_ndcg@10"] or -1))


def search(
    dataset: Dataset, split: Split, candidates: list[Candidate], budget_s: float, seed: int = 0,
    log: Callable[[str], None] = print,
) -> SearchResult:
    """Optuna studies, one per candidate, sharing `budget_s` by weight; unused time passes to the next."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if split.test.height:
        raise ValueError("search got a split with test rows; pass selection_split(split)")
    train = split.train_data(dataset.item_text, dataset.user_attributes)
    histories, targets = split.histories("valid"), split.targets("valid")
    result, began = SearchResult(), time.perf_counter()
    weights = [c.weight for c in candidates]
    for i, cand in enumerate(candidates):
        left = budget_s - (time.perf_counter() - began)
        if left <= 0 and cand.weight > 0:
            log(f"  {cand.model}: skipped, the search budget is spent")
            continue
        rest = sum(weights[i:]) or 1.0
        share = left * cand.weight / rest if cand.weight else 0.0
        deadline = time.perf_counter() + share

        objective = _objective(cand.model, deadline, train, (histories, targets), result, began, log)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
        study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
        if MODELS[cand.model].default_trial:  # the defaults first, so the search can only improve on them
            study.enqueue_trial(MODELS[cand.model].default_trial)
        study.optimize(objective, n_trials=cand.max_trials, timeout=None if not cand.weight else max(1.0, share))
    return result


def _objective(model_name: str, deadline: float, train: TrainData, valid: tuple[Histories, Histories],
               result: SearchResult, began: float, log: Callable[[str], None]) -> Callable[[Any], float]:
    """Optuna's objective for one candidate: a trial's validation NDCG@10 (its epochs reported for
    pruning), recorded in `result` whether it completes or is pruned."""
    import optuna

    histories, targets = valid

    def objective(trial: optuna.Trial) -> float:
        params = MODELS[model_name].search_space(trial)
        remaining = max(0.2, (deadline - time.perf_counter()) / 60)
        model = build(model_name, params, max_minutes=remaining, trial=True)
        if MODELS[model_name].trains_in_epochs:
            model.on_validation = _validation_reporter(trial)
        start = time.perf_counter()
        state, value = "complete", math.nan
        try:
            model.fit(train)
            value = full_ranking_eval(model, histories, targets, ks=(10,))["ndcg@10"]
        except optuna.TrialPruned:
            state = "pruned"
            raise
        finally:
            result.trials.append({"model": model_name, "number": trial.number, "params": params, "state": state,
                                  "valid_ndcg@10": None if math.isnan(value) else round(value, 5),
                                  "seconds": round(time.perf_counter() - start, 1),
                                  "at_s": round(time.perf_counter() - began, 1)})
            shown = f"{value:.4f}" if state == "complete" else "pruned"
            log(f"  {model_name} #{trial.number} {params}: valid NDCG@10 {shown} "
                f"({time.perf_counter() - start:.0f} s)")
        return value

    return objective


def chosen_toml(model: str, params: dict[str, Any], data: dict[str, Any], out: str) -> str:
    """The chosen configuration as a training config that `omnirec train --config` accepts."""
    import tomli_w

    table = json.loads(json.dumps(params))
    if MODELS[model].trains_in_epochs and "train" in table:
        table["train"] = {k: v for k, v in table["train"].items() if k not in ("progress", "max_minutes")} or None
        if table["train"] is None:
            del table["train"]
    document = {"model": model, "out": out, "data": {k: v for k, v in data.items() if v}, "models": {model: table}}
    return tomli_w.dumps(document)


def plot_search(result: SearchResult, path: str | Path) -> None:
    """Validation NDCG@10 of every trial against the time it finished, per model, with the running best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    done = [t for t in result.trials if t["state"] == "complete"]
    for model in sorted({t["model"] for t in result.trials}):
        mine = [t for t in done if t["model"] == model]
        ax.scatter([t["at_s"] / 60 for t in mine], [t["valid_ndcg@10"] for t in mine], label=model, s=28)
        pruned = [t for t in result.trials if t["model"] == model and t["state"] == "pruned"]
        if pruned:
            ax.scatter([t["at_s"] / 60 for t in pruned], [0] * len(pruned), marker="x", color="grey", s=20)
    if done:
        order = sorted(done, key=lambda t: t["at_s"])
        ax.step([t["at_s"] / 60 for t in order], np.maximum.accumulate([t["valid_ndcg@10"] for t in order]),
                where="post", color="black", lw=1, label="best so far")
    ax.set(xlabel="minutes into the search", ylabel="validation NDCG@10", title="hyperparameter search (x: pruned)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def run_auto(
    dataset: Dataset, out: str | Path, budget_minutes: float, data_source: dict[str, Any], seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Profile, choose candidates, search within the budget, train the best, test once; write the report."""
    from omnirec.run import RunConfig, train_bundle

    began = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split = split_dataset(dataset, "loo", short_users="train")
    traits = profile_dataset(selection_dataset(dataset, split))  # chosen from what the search may see
    candidates = choose_candidates(traits, budget_minutes)
    log("candidates: " + "; ".join(f"{c.model} ({c.reason})" for c in candidates))
    # the search gets 60% of the budget; training the winner on train + validation takes the rest
    result = search(dataset, selection_split(split), candidates, 0.6 * budget_minutes * 60, seed, log)
    best = result.best()
    log(f"chosen: {best['model']} {best['params']} (valid NDCG@10 {best['valid_ndcg@10']:.4f})")
    search_s = time.perf_counter() - began
    # the model's own budget covers early stopping and the refit on train + validation; a tenth of what
    # is left (at least 5 s) stays for the test and the bundle
    left_min = max(0.5, budget_minutes - search_s / 60)
    model = build(best["model"], best["params"], max_minutes=left_min - max(0.1 * left_min, 5 / 60))
    bundle_dir = out / "bundle"
    run = RunConfig(best["model"], str(bundle_dir), data=from_dict(DataConfig, data_source, where="[data]"),
                    models={best["model"]: json.loads(json.dumps(best["params"]))})
    bundle, report = train_bundle(run, model, dataset, split, progress=False,
                                  extra={"auto": {"params": best["params"], "valid_ndcg@10": best["valid_ndcg@10"]}})
    test = report.to_json()["results"][best["model"]]
    bundle.save(bundle_dir)
    board = result.leaderboard()
    document = {
        "profile": traits,
        "candidates": [dataclasses.asdict(c) for c in candidates],
        "budget_minutes": budget_minutes,
        "leaderboard": board,
        "trials": result.trials,
        "chosen": {"model": best["model"], "params": best["params"], "valid_ndcg@10": best["valid_ndcg@10"],
                   "config": to_dict(model.config), "why": _why(best, board, candidates)},
        "test": {k: round(float(v), 5) for k, v in test.items()},
        "seconds": {"search": round(search_s, 1), "total": round(time.perf_counter() - began, 1)},
        "bundle": str(bundle_dir),
    }
    atomic_write_text(out / "report.json", json.dumps(document, indent=2))
    atomic_write_text(out / "chosen.toml", chosen_toml(best["model"], best["params"], data_source, str(out / "retrained")))
    atomic_write_text(out / "report.md", report_markdown(document))
    plot_search(result, out / "search.png")
    return document


def _why(best: dict[str, Any], board: list[dict[str, Any]], candidates: list[Candidate]) -> str:
    """Why the chosen model: its validation NDCG@10 against the next best model's, and why it was tried."""
    chosen_reason = next(c.reason for c in candidates if c.model == best["model"])
    runner_up = next((r for r in board if r["model"] != best["model"] and r["best_valid_ndcg@10"] is not None), None)
    return (f"{best['model']} had the best validation NDCG@10 ({best['valid_ndcg@10']:.4f}"
            + (f", against {runner_up['best_valid_ndcg@10']:.4f} for {runner_up['model']}, the next best"
               if runner_up else "") + f"); it was tried because: {chosen_reason}.")


def report_markdown(doc: dict[str, Any]) -> str:
    """The auto report as Markdown: the choice and why, the leaderboard, the test result."""
    from omnirec.profile import format_profile

    lines = ["# omnirec auto", "", "```", format_profile(doc["profile"]), "```", "",
             f"Budget {doc['budget_minutes']:g} minutes; search {doc['seconds']['search'] / 60:.1f} min, "
             f"total {doc['seconds']['total'] / 60:.1f} min.", "", "## Candidates", ""]
    lines += [f"- **{c['model']}**: {c['reason']}" for c in doc["candidates"]]
    lines += ["", "## Leaderboard (validation)", "", "| model | best valid NDCG@10 | trials | pruned | seconds | best params |",
              "|---|---:|---:|---:|---:|---|"]
    for r in doc["leaderboard"]:
        score = f"{r['best_valid_ndcg@10']:.4f}" if r["best_valid_ndcg@10"] is not None else "-"
        lines.append(f"| {r['model']} | {score} | {r['trials']} | {r['pruned']} | {r['seconds']:.0f} | "
                     f"`{json.dumps(r['params'])}` |")
    test = doc["test"]
    lines += ["", "## Choice", "", doc["chosen"]["why"], "",
              f"Trained as `omnirec train --config chosen.toml` would, then evaluated once on the test split: "
              f"NDCG@10 {test.get('ndcg@10', float('nan')):.4f}, HR@10 {test.get('hr@10', float('nan')):.4f}.",
              "", "![search](search.png)", ""]
    return "\n".join(lines)
