"""One experiment: split a dataset, fit models, evaluate them by full ranking, report and save.

The CLI and the benchmark scripts call this; it turns no names into classes (models arrive built).

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.models import Popularity, Markov
>>> ds = Dataset.from_frames(*generate(SyntheticConfig(n_users=60, n_items=40)), name="demo")
>>> report = run_experiment(ds, {"pop": Popularity(), "markov": Markov()}, ks=(10,))
>>> sorted(report.results)
['markov', 'pop']
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from omnirec.config import config_hash, to_dict
from omnirec.data.dataset import Dataset
from omnirec.data.split import Split, split_dataset
from omnirec.evaluate.ranking import EvalResult, full_ranking_eval
from omnirec.features.similarity import item_vectors_from_matrix
from omnirec.models.base import Recommender
from omnirec.utils import atomic_savez, atomic_write, atomic_write_text

TABLE_COLUMNS = ("ndcg@10", "hr@10", "mrr@10", "ndcg@20", "hr@20", "coverage@10", "novelty@10", "ild@10")


@dataclass
class ExperimentReport:
    """Everything one experiment produced."""

    dataset: Dataset
    split: Split
    models: dict[str, Recommender]
    results: dict[str, EvalResult]
    fit_s: dict[str, float]
    ks: tuple[int, ...]
    notes: list[str] = field(default_factory=list)
    groups: dict[str, dict[str, EvalResult]] = field(default_factory=dict)  # e.g. cold / warm test targets

    def to_json(self) -> dict[str, Any]:
        """The result document (schema in the README)."""
        results = {}
        for name, res in self.results.items():
            row = {metric: round(float(v), 6) for metric, v in sorted(res.summary.items())}
            results[name] = {**row, "fit_s": round(self.fit_s[name], 3), "eval_s": round(res.eval_s, 3)}
        return {
            "dataset": self.dataset.name,
            "protocol": f"{_protocol_tag(self.split.protocol)}-full",
            "n_users": self.dataset.n_users,
            "n_items": self.dataset.n_items,
            "n_interactions": self.dataset.interactions.height,
            "results": results,
            "configs": {name: {"model": m.name, "config": to_dict(m.config), "config_hash": config_hash(m.config)}
                        for name, m in self.models.items()},
            "significance": self.significance(),
            "notes": self.notes,
            **({"groups": {group: {name: {m: round(float(v), 6) for m, v in sorted(res.summary.items())}
                                   for name, res in by_model.items()} for group, by_model in self.groups.items()}}
               if self.groups else {}),
        }

    def significance(self, metric: str = "ndcg@10") -> dict[str, dict[str, float]]:
        """Paired tests of the best model (by `metric`) against each other model, over the same users."""
        if metric not in next(iter(self.results.values())).per_user or len(self.results) < 2:
            return {}
        best = max(self.results, key=lambda m: self.results[m].summary[metric])
        return {f"{best} vs {name}": paired_test(self.results[best], res, metric)
                for name, res in self.results.items() if name != best}


def _protocol_tag(protocol: str) -> str:
    return {"leave-one-out": "loo"}.get(protocol, protocol.split("(")[0])


def paired_test(a: EvalResult, b: EvalResult, metric: str) -> dict[str, float]:
    """Paired t-test and Wilcoxon signed-rank test of per-user `metric` values of two results."""
    if not np.array_equal(a.users, b.users):
        raise ValueError("the two results were computed on different users; a paired test needs the same users")
    x, y = a.per_user[metric], b.per_user[metric]
    diff = x - y
    t_p = float(stats.ttest_rel(x, y).pvalue) if diff.any() else 1.0
    w_p = float(stats.wilcoxon(x, y, zero_method="zsplit").pvalue) if diff.any() else 1.0
    return {"metric": metric, "mean_diff": float(diff.mean()), "t_test_p": t_p, "wilcoxon_p": w_p, "n_users": len(x)}


def fit_for_test(
    model: Recommender, split: Split, item_text: list[str] | None = None, user_attributes: Any = None,
) -> Recommender:
    """Fit `model` the way the test protocol does for every model: on train + validation. A model that
    stops early on the validation targets gets them beside the training data and refits itself on both;
    any other model is fitted on both at once.

    >>> from omnirec.data.synthetic import SyntheticConfig, generate
    >>> from omnirec.models.popularity import Popularity
    >>> split = split_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=30, n_items=20))))
    >>> model = fit_for_test(Popularity(), split)
    >>> int(model.counts.sum()) == split.train.height + split.valid.height
    True
    """
    if model.learns_from_validation:
        return model.fit(split.train_data(item_text, user_attributes))
    return model.fit(split.refit_data(item_text, user_attributes))


def run_experiment(
    dataset: Dataset, models: dict[str, Recommender], ks: tuple[int, ...] = (10, 20), split: Split | None = None,
    progress: bool = False,
) -> ExperimentReport:
    """Leave-one-out split (unless `split` is given), fit every model on train + validation
    (`fit_for_test`), evaluate on test.

    Test histories include the validation item. The neural models stop early on the validation targets
    and then refit on train + validation; the others fit on train + validation directly.
    """
    split = split or split_dataset(dataset, "loo")
    train = split.train_data(dataset.item_text, dataset.user_attributes)
    both = split.refit_data(dataset.item_text, dataset.user_attributes)  # built once: see `fit_for_test`
    histories, targets = split.histories("test"), split.targets("test")
    item_vectors = item_vectors_from_matrix(train.matrix)
    results, fit_s = {}, {}
    for name, model in tqdm(models.items(), desc="models", unit="model", disable=not progress):
        start = time.perf_counter()
        model.fit(train if model.learns_from_validation else both)  # as `fit_for_test` does
        fit_s[name] = time.perf_counter() - start
        results[name] = full_ranking_eval(
            model, histories, targets, ks=ks, item_users=train.item_users, item_vectors=item_vectors,
            progress=progress,
        )
    notes = list(split.notes) + _merge_notes(results)
    groups, parts = {}, {}
    if split.cold is not None:  # the cold-items protocol: cold and warm targets reported apart too
        warm = np.setdiff1d(np.arange(1, dataset.n_items + 1), split.cold)
        parts = {"cold": targets.only(split.cold), "warm": targets.only(warm)}
    if split.cold_users is not None:  # the cold-users protocol: users without training data apart
        warm_users = np.setdiff1d(np.arange(1, dataset.n_users + 1), split.cold_users)
        parts = {"cold users": targets.only_users(split.cold_users), "warm users": targets.only_users(warm_users)}
    for group, part in parts.items():
        if (part.lengths() > 0).any():
            groups[group] = {name: full_ranking_eval(model, histories, part, ks=ks) for name, model in models.items()}
    return ExperimentReport(dataset, split, models, results, fit_s, ks, notes, groups)


def _merge_notes(results: dict[str, EvalResult]) -> list[str]:
    """Each distinct evaluation note once, with the models that raised it."""
    by_note: dict[str, list[str]] = {}
    for name, res in results.items():
        for note in res.notes:
            by_note.setdefault(note, []).append(name)
    return [f"{note} ({'all models' if len(names) == len(results) else ', '.join(names)})"
            for note, names in by_note.items()]


def _present(rows: dict[str, dict[str, float]], columns: tuple[str, ...]) -> list[str]:
    return [c for c in columns if any(c in r for r in rows.values())] + ["fit_s", "eval_s"]


def format_table(document: dict[str, Any], columns: tuple[str, ...] = TABLE_COLUMNS) -> str:
    """A fixed-width text table of a result document (one row per model)."""
    rows = document["results"]
    present = _present(rows, columns)
    width = max(len("model"), *(len(m) for m in rows))
    head = f"{'model':<{width}}  " + "  ".join(f"{c:>11}" for c in present)
    lines = [head, "-" * len(head)]
    for name, row in rows.items():
        cells = "  ".join(f"{row[c]:>11.4f}" if c in row else f"{'-':>11}" for c in present)
        lines.append(f"{name:<{width}}  {cells}")
    return "\n".join(lines)


def format_significance(document: dict[str, Any]) -> str:
    """The paired tests of a result document (`significance`), one line per pair, below the table.

    >>> doc = {"significance": {"markov vs pop": {"metric": "ndcg@10", "mean_diff": 0.0386, "t_test_p": 1e-5,
    ...                                           "wilcoxon_p": 0.002, "n_users": 60}}}
    >>> print(format_significance(doc))
    paired tests of the best model against each other one, per-user values over the same users:
      markov vs pop: ndcg@10 mean diff +0.0386, t-test p=1e-05, Wilcoxon p=0.002 (60 users)
    """
    lines = ["paired tests of the best model against each other one, per-user values over the same users:"]
    for pair, test in document.get("significance", {}).items():
        lines.append(f"  {pair}: {test['metric']} mean diff {test['mean_diff']:+.4f}, t-test p={test['t_test_p']:.3g}, "
                     f"Wilcoxon p={test['wilcoxon_p']:.3g} ({test['n_users']:,} users)")
    return "\n".join(lines)


_MASKED_NOTE = re.compile(r"(\d+) target\(s\) were in the user's history and masked(.*)")


def explain_note(note: str) -> str:
    """An evaluation note in words for the printed summary (the document keeps the short form).

    >>> explain_note("3 target(s) were in the user's history and masked (all models)")  # doctest: +NORMALIZE_WHITESPACE
    "3 test target(s) were already in the user's history (all models): full ranking masks every history
    item, so these targets can never be ranked and count as misses (their users stay in every mean)"
    """
    masked = _MASKED_NOTE.fullmatch(note)
    if masked is None:
        return note
    return (f"{masked[1]} test target(s) were already in the user's history{masked[2]}: full ranking masks every "
            "history item, so these targets can never be ranked and count as misses (their users stay in every mean)")


def markdown_table(document: dict[str, Any], columns: tuple[str, ...] = TABLE_COLUMNS) -> str:
    """The same table in Markdown."""
    rows = document["results"]
    present = _present(rows, columns)
    lines = ["| model | " + " | ".join(present) + " |", "|---|" + "---:|" * len(present)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.4f}" if c in row else "-" for c in present) + " |")
    return "\n".join(lines)


def save_report(report: ExperimentReport, out: str | Path, plot: bool = True) -> dict[str, Path]:
    """Write results.json, results.md, per-user values, id maps, every model and (optionally) a plot."""
    out = Path(out)
    document = report.to_json()
    paths = {"results": out / "results.json", "table": out / "results.md", "per_user": out / "per_user.npz"}
    atomic_write_text(paths["results"], json.dumps(document, indent=2))
    atomic_write_text(paths["table"], markdown_table(document) + "\n")
    arrays = {f"{m}/{k}": v for m, r in report.results.items() for k, v in r.per_user.items()}
    arrays["users"] = next(iter(report.results.values())).users
    atomic_savez(paths["per_user"], arrays, compress=True)
    report.dataset.users.save(out / "users.json")
    report.dataset.items.save(out / "items.json")
    for name, model in report.models.items():
        model.save(out / "models" / name)
    if plot:
        paths["plot"] = out / "results.png"
        plot_results(document, paths["plot"])
    return paths


def plot_results(document: dict[str, Any], path: str | Path, metrics: tuple[str, ...] = ("ndcg@10", "hr@10")) -> None:
    """A grouped bar chart of `metrics` per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(document["results"])
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names)), 3.5))
    width = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        values = [document["results"][n].get(metric, 0.0) for n in names]
        ax.bar(np.arange(len(names)) + j * width, values, width, label=metric)
    ax.set_xticks(np.arange(len(names)) + width * (len(metrics) - 1) / 2, names)
    ax.set_title(f"{document['dataset']}: {document['protocol']} ({document['n_users']:,} users)")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def format_summary(dataset: Dataset, report_doc: dict[str, Any]) -> str:
    """What `omnirec evaluate` and `train` print: the data, its cleaning, the results table (per target group
    too), the significance tests and the notes."""
    lines = [f"\n{dataset.name}: {dataset.n_users:,} users, {dataset.n_items:,} items, "
             f"{dataset.interactions.height:,} interactions; protocol {report_doc['protocol']}",
             f"cleaning: {'; '.join(str(dataset.report).splitlines())}", format_table(report_doc)]
    for group, rows in report_doc.get("groups", {}).items():
        lines += [f"\n{group} test targets only:", format_table({**report_doc, "results": rows})]
    if report_doc.get("significance"):
        lines.append(f"\n{format_significance(report_doc)}")
    lines += [f"note: {explain_note(note)}" for note in report_doc["notes"]]
    return "\n".join(lines)
