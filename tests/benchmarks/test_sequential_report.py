"""sequential.py's report: a run cut by an epoch cap says so, a run stopped by patience or a budget says that."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
_SPEC = importlib.util.spec_from_file_location("sequential", BENCH / "sequential.py")
sequential = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sequential)


def row(stopped: str, epochs: int | None) -> dict:
    config = {} if epochs is None else {"train": {"epochs": epochs}}
    return {"training": {"stopped": stopped}, "config": config}


def test_an_epoch_cap_below_the_models_own_reads_as_a_cap() -> None:
    assert sequential.stopped_by(row("epochs", 10)) == "epoch cap 10"


def test_other_reasons_and_the_models_own_bound_read_as_recorded() -> None:
    assert sequential.stopped_by(row("patience", 10)) == "patience"
    assert sequential.stopped_by(row("time budget", 200)) == "time budget"
    assert sequential.stopped_by(row("epochs", 200)) == "epochs"  # the model's own upper bound, not a cap
    assert sequential.stopped_by(row("epochs", None)) == "epochs"  # an old result without its config


def config(seed: int, epochs: int = 10, d_model: int = 64) -> dict:
    return {"d_model": d_model, "train": {"epochs": epochs, "seed": seed, "checkpoint_dir": f"ckpt/seed{seed}"}}


def saved_row() -> dict:
    return {"config": config(0), "runs": [{"seed": 0, "metrics": {"ndcg@10": 0.03}, "code": "aaa"},
                                          {"seed": 1, "metrics": {"ndcg@10": 0.031}, "code": "bbb"}]}


def test_saved_seeds_of_the_same_setting_join_a_new_seed() -> None:
    new = [{"seed": 2, "config": config(2), "metrics": {"ndcg@10": 0.032}}]
    joined = sequential.saved_seeds(saved_row(), new)
    assert [r["seed"] for r in joined] == [0, 1]
    assert [r["code"] for r in joined] == ["aaa", "bbb"]  # each keeps the code that made it
    assert joined[1]["config"]["train"]["seed"] == 1


def test_a_seed_run_again_replaces_its_saved_run() -> None:
    new = [{"seed": 1, "config": config(1), "metrics": {"ndcg@10": 0.029}}]
    assert [r["seed"] for r in sequential.saved_seeds(saved_row(), new)] == [0]


def test_saved_seeds_of_another_setting_are_not_mixed_in() -> None:
    for other in (config(2, epochs=20), config(2, d_model=128)):
        assert sequential.saved_seeds(saved_row(), [{"seed": 2, "config": other}]) == []
    assert sequential.saved_seeds(None, [{"seed": 2, "config": config(2)}]) == []
    assert sequential.saved_seeds({"config": config(0)}, [{"seed": 2, "config": config(2)}]) == []  # no runs kept


def test_the_reports_know_the_models_own_epoch_bound() -> None:
    from omnirec.train.loop import TrainConfig

    assert sequential.readme_figures.MODEL_EPOCHS == TrainConfig().epochs  # below it, an epoch limit is a cap
