"""reliability.py: the soak's rate comes from what its own open-loop generator sustained, not from wrk."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
_SPEC = importlib.util.spec_from_file_location("reliability", BENCH / "reliability.py")
reliability = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(reliability)


def step(rate: float, errors: int, p99_ms: float) -> dict:
    return {"rate_per_s": rate, "errors": errors, "p99_ms": p99_ms}


def test_the_soak_runs_below_what_the_generator_sustained_not_below_wrk() -> None:
    capacity = {"requests_per_s": 300.0, "open_loop": {"requests_per_s": 180.0, "steps": [
        step(90.0, 0, 12.0), step(135.0, 0, 30.0), step(180.0, 0, 250.0), step(225.0, 40, 4000.0)]}}
    assert reliability.soak_rate(capacity) == reliability.SOAK_SHARE * 180.0
    assert reliability.soak_rate(capacity) < reliability.SOAK_SHARE * 300.0


def test_a_generator_that_kept_up_with_nothing_soaks_below_its_first_step() -> None:
    capacity = {"requests_per_s": 300.0, "open_loop": {"requests_per_s": None, "steps": [step(90.0, 5, 2000.0)]}}
    assert reliability.soak_rate(capacity) == reliability.SOAK_SHARE * 90.0


def test_a_result_saved_before_the_open_loop_steps_keeps_its_old_rule() -> None:
    assert reliability.soak_rate({"requests_per_s": 300.0}) == reliability.SOAK_SHARE * 300.0


def test_the_ladder_stops_counting_at_the_first_step_not_kept_up_with() -> None:
    steps = [step(90.0, 0, 12.0), step(135.0, 0, 700.0), step(180.0, 0, 40.0)]  # a lucky step above a failed one
    assert reliability.loadgen.sustained_rate(steps, reliability.SUSTAINED_P99_MS) == 90.0
