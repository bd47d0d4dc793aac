"""The benchmarks' shared protocol (benchmarks/protocol.py): seeds, grids that end inside, the one test."""

from __future__ import annotations

import doctest
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np

from omnirec.evaluate.ranking import EvalResult

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))  # protocol imports its sibling readme_figures, also when this file runs alone
_SPEC = importlib.util.spec_from_file_location("protocol", BENCH / "protocol.py")
protocol = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("protocol", protocol)  # its dataclasses look their module up by name
_SPEC.loader.exec_module(protocol)


def test_docstring_examples() -> None:
    assert doctest.testmod(protocol).failed == 0


def test_a_grid_whose_best_point_is_on_its_edge_is_extended_until_it_is_inside() -> None:
    """The validation score peaks at l2 = 20, below the grid's smallest point (50): the grid grows down."""
    score = lambda p: -(math.log(p["l2"]) - math.log(20.0)) ** 2  # noqa: E731
    best, trials, outcome = protocol.search(score, [{"l2": x} for x in (50.0, 200.0, 500.0)], {"l2": protocol.Axis()})
    assert best == {"l2": 12.5} and outcome == {"l2": "interior"}
    assert [t["params"]["l2"] for t in trials if t["added"]] == [12.5, 3.12]


def test_an_axis_at_its_domain_bound_says_so_and_nested_axes_are_extended() -> None:
    score = lambda p: -p["shrink"] - abs(math.log10(p["train"]["lr"]) + 2)  # noqa: E731 - best: shrink 0, lr 0.01
    grid = [{"shrink": s, "train": {"lr": lr}} for s in (0.0, 10.0) for lr in (1e-3, 3e-3)]
    best, trials, outcome = protocol.search(score, grid, {"shrink": protocol.Axis(), "train.lr": protocol.Axis()})
    assert best["shrink"] == 0.0 and outcome["shrink"] == "bound"
    assert outcome["train.lr"] == "interior" and math.isclose(best["train"]["lr"], 9e-3)
    assert "shrink at its domain's bound" in protocol.describe_grid(outcome)


def test_an_axis_still_on_its_edge_after_the_extensions_is_reported() -> None:
    best, _, outcome = protocol.search(lambda p: p["k"], [{"k": 10}, {"k": 20}], {"k": protocol.Axis(low=1, integer=True)})
    assert outcome == {"k": "edge"} and best == {"k": 20 * 2 ** protocol.MAX_EXTENSIONS}
    assert protocol.describe_grid(outcome) == "k still on an edge"


def test_seeds_go_where_each_model_reads_them() -> None:
    assert protocol.seeded("sasrec", {"train": {"lr": 0.01}}, 2) == {"train": {"lr": 0.01, "seed": 2}}
    assert protocol.seeded("als", {"factors": 64}, 1) == {"factors": 64, "seed": 1}
    assert protocol.seeded("ease", {"l2": 50.0}, 1) is None  # deterministic: one fit serves every seed


def test_the_paired_test_averages_seeds_per_user_and_decides_at_alpha() -> None:
    rng = np.random.default_rng(0)
    users = np.arange(1, 501)
    res = lambda x: EvalResult("loo", users, {"ndcg@10": x}, {"ndcg@10": float(x.mean())}, 0.0)  # noqa: E731
    base = rng.random(500)
    small = [res(base + rng.normal(0.01, 0.3, 500)) for _ in range(3)]  # a small gain drowned in noise
    large = [res(base + rng.normal(0.2, 0.3, 500)) for _ in range(3)]
    assert protocol.paired(large, [res(base)])["verdict"] == "better"
    assert protocol.paired([res(base)], large)["verdict"] == "worse"
    out = protocol.paired(small, [res(base)])
    assert out["verdict"] == "not significantly different" and out["p"] > protocol.ALPHA and out["seeds"] == [3, 1]


def test_a_linear_axis_such_as_dropout_steps_to_its_bound_instead_of_creeping_towards_it() -> None:
    score = lambda p: -p["dropout"]  # noqa: E731 - less dropout is always better here
    best, trials, outcome = protocol.search(score, [{"dropout": 0.1}, {"dropout": 0.3}],
                                            {"dropout": protocol.Axis(high=0.9, scale="linear")})
    assert best == {"dropout": 0.0} and outcome == {"dropout": "bound"} and len(trials) == 3


def test_a_kept_run_is_reused_only_while_the_code_that_made_it_is_unchanged(tmp_path, monkeypatch) -> None:
    code = {"tree": "a1"}
    monkeypatch.setattr(protocol, "library_tree", lambda paths: code["tree"])
    cache = protocol.RunCache(tmp_path)
    cache.put({"ndcg@10": 0.05}, "beauty", "sasrec-seed0")
    assert (tmp_path / "beauty" / "sasrec-seed0.json").exists()
    assert cache.get("beauty", "sasrec-seed0") == {"ndcg@10": 0.05}
    assert cache.get("beauty", "sasrec-seed1") is None
    code["tree"] = "b2"  # a commit while the run goes on: what it finishes is still the code it started with
    cache.put({"ndcg@10": 0.06}, "beauty", "sasrec-seed1")
    assert protocol.RunCache(tmp_path).get("beauty", "sasrec-seed1") is None  # a later run, on the new code
    assert cache.get("beauty", "sasrec-seed1") == {"ndcg@10": 0.06}
    code["tree"] = "a1"
    assert protocol.RunCache(tmp_path).get("beauty", "sasrec-seed1") == {"ndcg@10": 0.06}
    code["tree"] = None  # uncommitted changes: nothing is kept or reused
    dirty = protocol.RunCache(tmp_path)
    dirty.put({"ndcg@10": 0.07}, "beauty", "sasrec-seed2")
    assert not (tmp_path / "beauty" / "sasrec-seed2.json").exists()
    assert dirty.get("beauty", "sasrec-seed0") is None
    assert protocol.RunCache(None).get("beauty", "sasrec-seed0") is None


def test_results_survive_the_round_trip_through_json_for_the_paired_test() -> None:
    rng = np.random.default_rng(0)
    users = np.arange(1, 41)
    results, other = ([EvalResult("loo", users, {"ndcg@10": rng.random(40)}, {"ndcg@10": 0.5, "hr@10": 0.7}, 0.0)
                       for _ in range(3)] for _ in range(2))
    back = protocol.results_from_json(json.loads(json.dumps(protocol.results_to_json(results))))
    assert [r.summary for r in back] == [r.summary for r in results]
    assert protocol.paired(back, other) == protocol.paired(results, other)


def test_a_child_run_ends_when_the_benchmark_that_started_it_is_gone(tmp_path):
    import subprocess
    import sys
    import time

    child = (f"import os, sys, time; sys.path.insert(0, {str(BENCH)!r}); from protocol import exit_with_parent; "
             "exit_with_parent(int(sys.argv[1]), poll_s=0.05); print('watching', flush=True); time.sleep(60)")
    parent = ("import os, subprocess, sys; "
              f"p = subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid())], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True); "
              "p.stdout.readline(); print(p.pid, flush=True)")  # the parent ends here, its child still sleeping
    # (the child holds none of the parent's pipes, so this returns as soon as the parent ends)
    pid = int(subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=120).stdout)

    def alive() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state != "Z"  # a zombie has exited; only its parent's reaping is left

    deadline = time.monotonic() + 20
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(), "the orphaned child kept running"
