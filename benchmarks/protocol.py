"""What every benchmark shares so that its figures survive review: seeds, grids that end inside, one test.

- **Seeds.** Every headline figure is the mean ± sample std over `SEEDS`. A model with no seed (item-kNN,
  EASE, Markov, TF-IDF, popularity) is deterministic: it is fitted once and its std is 0.
- **The pre-declared test.** Two models are compared with `TEST` only: a two-sided paired t-test over
  users of per-user NDCG@10, each user's value the mean over the seeds, at `ALPHA` = 0.01. No second test
  is consulted, so no smaller p-value can be picked after the fact.
- **Grids.** `search` scores a grid on the validation targets and, where the best point lies on the edge
  of a numeric axis, extends that axis one step beyond it (the grid's own ratio) until the best point is
  inside, or the axis meets the bound of its domain (a shrinkage of 0, a dropout of 0). Each axis's
  outcome is recorded, and the report says it.

>>> [grid_edges([{"l2": 50.0}, {"l2": 200.0}], {"l2": 50.0}, {"l2": Axis(low=0.0)})]
[{'l2': 'edge'}]
>>> next_value([50.0, 200.0, 500.0], 50.0, Axis(low=0.0))
12.5
>>> next_value([0.1, 0.3], 0.1, Axis(high=0.9, scale="linear"))  # a dropout: down to 0, its bound
0.0
>>> fmt_mean_std(mean_std([0.0571, 0.0575, 0.0566]))
'0.0571 ± 0.0005'
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from readme_figures import half_up, seed_count

from omnirec.evaluate.ranking import EvalResult
from omnirec.models import MODELS
from omnirec.utils import atomic_write_text

SEEDS = (0, 1, 2)
ALPHA = 0.01
TEST = "two-sided paired t-test over users of per-user NDCG@10 (each user's value the mean over the seeds), α = 0.01"
MAX_EXTENSIONS = 4  # per axis; a grid still on an edge after these says so in its report


# --------------------------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------------------------

def seeded(model: str, params: dict, seed: int) -> dict | None:
    """`params` with `seed` set where `model`'s config has one (the neural models under `train`, ALS and
    BPR at the top); None for a deterministic model, which needs only one fit."""
    fields = {f.name for f in dataclasses.fields(MODELS[model].Config)} if dataclasses.is_dataclass(MODELS[model].Config) else set()
    table = json.loads(json.dumps(params))
    if "train" in fields:
        table["train"] = {**table.get("train", {}), "seed": seed}
    elif "text" in fields:  # a model around a textseq (hybrid): the seed is its text model's
        inner = table.setdefault("text", {})
        inner["train"] = {**inner.get("train", {}), "seed": seed}
    elif "seed" in fields:
        table["seed"] = seed
    else:
        return None
    return table


def exit_with_parent(parent: int, poll_s: float = 5.0) -> None:
    """End this process once `parent` (the benchmark that spawned it) is gone: a run whose benchmark was
    killed must not train on as an orphan, taking the cores from whatever is measured next."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def mean_std(values: list[float], digits: int = 5) -> dict:
    """{"mean", "std" (sample, ddof 1; 0 for one value), "values"}."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": round(float(arr.mean()), digits), "std": round(std, digits), "values": [round(float(v), digits) for v in arr]}


def fmt_mean_std(stat: dict | float, digits: int = 4) -> str:
    """'0.0571 ± 0.0004' for a mean_std dict; a plain number as it is. Rounded half up from the decimal
    the result file holds, as README's figures are (`readme_figures.half_up`), so a report and the README
    never show one figure two ways.

    A summary of one seed is its value (a spread needs two).

    >>> fmt_mean_std({"mean": 0.05975, "std": 0.00072}), fmt_mean_std(0.05975)
    ('0.0598 ± 0.0007', '0.0598')
    >>> fmt_mean_std({"mean": 0.0335, "std": 0.0, "values": [0.0335]})
    '0.0335'
    """
    if not isinstance(stat, dict):
        return str(half_up(stat, digits))
    if seed_count(stat) == 1:
        return str(half_up(stat["mean"], digits))
    return f"{half_up(stat['mean'], digits)} ± {half_up(stat['std'], digits)}"


def summary_over_seeds(results: list[EvalResult], metrics: tuple[str, ...]) -> dict[str, dict]:
    """Each metric's mean ± std over the seeds' results."""
    return {m: mean_std([r.summary[m] for r in results]) for m in metrics}


# --------------------------------------------------------------------------------------------------------
# the one test
# --------------------------------------------------------------------------------------------------------

def per_user_mean(results: list[EvalResult], metric: str = "ndcg@10") -> tuple[np.ndarray, np.ndarray]:
    """(users, each user's `metric` averaged over the seeds' results), checking they share the users."""
    users = results[0].users
    for r in results[1:]:
        if not np.array_equal(r.users, users):
            raise ValueError("the seeds' results cover different users; a paired test needs the same users")
    return users, np.mean([r.per_user[metric] for r in results], axis=0)


def paired(a: list[EvalResult], b: list[EvalResult], metric: str = "ndcg@10") -> dict:
    """The pre-declared test (`TEST`) of `a` against `b`, each a list of per-seed results on the same users.

    >>> from omnirec.evaluate.ranking import EvalResult
    >>> users = np.arange(1, 201)
    >>> res = lambda x: EvalResult("loo", users, {"ndcg@10": x}, {"ndcg@10": float(x.mean())}, 0.0)
    >>> rng = np.random.default_rng(0)
    >>> base = rng.random(200)
    >>> paired([res(base + 0.05 + rng.normal(0, 0.1, 200))], [res(base)])["verdict"]
    'better'
    >>> paired([res(base)], [res(base)])["verdict"]
    'not significantly different'
    """
    users, x = per_user_mean(a, metric)
    users_b, y = per_user_mean(b, metric)
    if not np.array_equal(users, users_b):
        raise ValueError("the two models were evaluated on different users; a paired test needs the same users")
    diff = x - y
    if np.allclose(diff, diff[0], rtol=0.0, atol=1e-12):  # no spread: the t statistic is undefined
        p = 0.0 if abs(diff[0]) > 1e-12 else 1.0
    else:
        p = float(stats.ttest_rel(x, y).pvalue)
    verdict = ("better" if diff.mean() > 0 else "worse") if p < ALPHA else "not significantly different"
    return {"metric": metric, "test": TEST, "alpha": ALPHA, "mean_diff": round(float(diff.mean()), 5), "p": p,
            "n_users": int(len(x)), "seeds": [len(a), len(b)], "verdict": verdict}


def describe_test(c: dict) -> str:
    """One sentence: the difference, the p-value, the verdict."""
    return (f"mean NDCG@10 difference {c['mean_diff']:+.4f} over {c['n_users']:,} users, paired t-test "
            f"p = {c['p']:.3g} (α = {c['alpha']}): **{c['verdict']}**")


# --------------------------------------------------------------------------------------------------------
# grids whose optimum is inside
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Axis:
    """A numeric hyperparameter: the bounds of its domain (inclusive), whether it is an integer, and its
    scale: "log" steps by the grid's ratio (a learning rate, a penalty), "linear" by its difference (a
    dropout rate, which should reach 0 rather than creep towards it)."""

    low: float = 0.0
    high: float = math.inf
    integer: bool = False
    scale: str = "log"


def _get(params: dict, path: str) -> float | None:
    node: object = params
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node  # type: ignore[return-value]


def _set(params: dict, path: str, value: float) -> dict:
    out = json.loads(json.dumps(params))
    node = out
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return out


def next_value(values: list[float], edge: float, axis: Axis) -> float | None:
    """The next point beyond `edge` (the largest or the smallest of `values`), by the ratio (or, from 0,
    the difference) of the two outermost values; None where the domain ends there."""
    ordered = sorted(set(values))
    up = edge == ordered[-1]
    inner = ordered[-2] if up else ordered[1]
    if axis.scale == "log" and edge > 0 and inner > 0:
        new = float(f"{edge * (edge / inner):.3g}")  # three significant digits: a value a person would write
    else:
        new = round(edge + (edge - inner), 10)
    if axis.integer:
        new = float(round(new))
    if new == edge or not axis.low <= new <= axis.high:
        new = axis.high if up else axis.low  # one last point on the bound itself
        if new == edge or math.isinf(new):
            return None
    return int(new) if axis.integer else new


def grid_edges(trials: list[dict], best: dict, axes: dict[str, Axis]) -> dict[str, str]:
    """For each axis the grid varies: 'interior', or 'edge' where `best` holds its largest or smallest value."""
    out = {}
    for path in axes:
        values = [v for t in trials if (v := _get(t, path)) is not None]
        if len(set(values)) < 2 or _get(best, path) is None:
            continue
        out[path] = "edge" if _get(best, path) in (min(values), max(values)) else "interior"
    return out


def search(evaluate: Callable[[dict], float], grid: list[dict], axes: dict[str, Axis]) -> tuple[dict, list[dict], dict]:
    """Score every point of `grid` with `evaluate` (validation NDCG@10), then extend each axis whose best
    value is on an edge until it is inside (at most `MAX_EXTENSIONS` points an axis). Returns the best
    point, the trials ({"params", "valid_ndcg@10", "added"}) and each axis's outcome: 'interior',
    'bound' (the best is on the domain's bound: nothing lies beyond) or 'edge' (still on an edge)."""
    trials = [{"params": p, "valid_ndcg@10": evaluate(p), "added": False} for p in grid]
    added = dict.fromkeys(axes, 0)
    while True:
        best = max(trials, key=lambda t: t["valid_ndcg@10"])["params"]
        params = [t["params"] for t in trials]
        proposals = []
        for path, state in grid_edges(params, best, axes).items():
            if state == "interior" or added[path] >= MAX_EXTENSIONS:
                continue
            new = next_value([_get(p, path) for p in params if _get(p, path) is not None], _get(best, path), axes[path])
            candidate = None if new is None else _set(best, path, new)
            if candidate is not None and candidate not in params:
                proposals.append((path, candidate))
        if not proposals:
            break
        for path, candidate in proposals:
            added[path] += 1
            trials.append({"params": candidate, "valid_ndcg@10": evaluate(candidate), "added": True})
    best = max(trials, key=lambda t: t["valid_ndcg@10"])["params"]
    outcome = {}
    for path, state in grid_edges([t["params"] for t in trials], best, axes).items():
        bound = _get(best, path) in (axes[path].low, axes[path].high)
        outcome[path] = "bound" if state == "edge" and bound else state
    return best, trials, outcome


def describe_grid(outcome: dict[str, str]) -> str:
    """'interior' when every axis is; else which axes are not, and why."""
    if all(v == "interior" for v in outcome.values()):
        return "interior"
    parts = [f"{k} at its domain's bound" if v == "bound" else f"{k} still on an edge" for k, v in outcome.items() if v != "interior"]
    return "; ".join(parts)


# --- finished runs, kept so that a stopped benchmark continues ---------------------------------------


def library_tree(paths: tuple[str, ...] = ("omnirec",)) -> str | None:
    """The git objects of `paths` at HEAD (the library's tree, a script's blob), which change exactly when
    they do; None when one has uncommitted changes or git is not at hand (then nothing is kept or reused)."""
    root = Path(__file__).resolve().parents[1]
    try:
        objects = [subprocess.run(["git", "rev-parse", f"HEAD:{p}"], cwd=root, capture_output=True, text=True,
                                  check=True).stdout.strip() for p in paths]
        dirty = subprocess.run(["git", "status", "--porcelain", *paths], cwd=root, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return None if dirty else "+".join(objects)


@dataclass(frozen=True)
class RunCache:
    """Finished runs as JSON files under `folder` (None: keep nothing), each reused only while `code` (the
    library, and the scripts whose logic makes a run) is what made it (`library_tree`); a change to any
    makes every run fresh again. The tree is read once, when the cache is made (as the run starts, with
    the code it imports): a commit while the run goes on must not label its results as the new code's."""

    folder: Path | None
    code: tuple[str, ...] = ("omnirec",)
    tree: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tree", library_tree(self.code) if self.folder else None)

    def _path(self, key: tuple[str, ...]) -> Path:
        return self.folder.joinpath(*key[:-1], key[-1] + ".json")

    def get(self, *key: str) -> Any | None:
        tree = self.tree
        if tree is None or not self._path(key).exists():
            return None
        saved = json.loads(self._path(key).read_text())
        return saved["run"] if saved["library_tree"] == tree else None

    def put(self, value: Any, *key: str) -> None:
        tree = self.tree
        if tree is not None:
            self._path(key).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self._path(key), json.dumps({"library_tree": tree, "run": value}))


def results_to_json(results: list[EvalResult], metric: str = "ndcg@10") -> list[dict]:
    """What `paired` and `summary_over_seeds` read of each seed's result: the users, their `metric`, the summary."""
    return [{"users": r.users.tolist(), metric: r.per_user[metric].tolist(), "summary": r.summary} for r in results]


def results_from_json(rows: list[dict], metric: str = "ndcg@10") -> list[EvalResult]:
    return [EvalResult("loo", np.asarray(r["users"]), {metric: np.asarray(r[metric])}, r["summary"], 0.0) for r in rows]
