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
