"""The load generator the serving benchmarks share (benchmarks/loadgen.py): its pure parts, fast."""

from __future__ import annotations

import asyncio
import doctest
import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location("loadgen", Path(__file__).resolve().parents[2] / "benchmarks" / "loadgen.py")
loadgen = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(loadgen)

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:8765
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    29.65ms   10.20ms    1.55s    90.00%
    Req/Sec   267.60     20.00   300.00     70.00%
  Latency Distribution
     50%   29.65ms
     75%  833.00us
     90%   40.00ms
     99%    1.20s
  535 requests in 2.00s, 1.20MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:    267.50
Transfer/sec:    600.00KB
wrong item count: 4
"""


def test_poisson_schedule_has_mean_gap_one_over_rate_and_exponential_spread() -> None:
    rate, seconds = 200.0, 100.0
    at = loadgen.poisson_schedule(rate, seconds, np.random.default_rng(3))
    gaps = np.diff(at)
    assert (gaps > 0).all() and at[0] >= 0 and at[-1] < seconds
    assert abs(at.size - rate * seconds) < 5 * np.sqrt(rate * seconds)  # Poisson count: sd = sqrt(mean)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential; a fixed interval would give 0


def test_poisson_schedule_covers_the_whole_duration() -> None:
    at = loadgen.poisson_schedule(1.0, 2000.0, np.random.default_rng(0))
    assert at[-1] > 1990.0


def test_poisson_schedule_rejects_a_rate_of_zero() -> None:
    with pytest.raises(ValueError, match="rate"):
        loadgen.poisson_schedule(0.0, 1.0, np.random.default_rng(0))


def test_latency_is_counted_from_the_scheduled_time_so_it_includes_the_generators_lateness() -> None:
    """Request 0 blocks the generator's loop for 300 ms: requests 1 and 2, due 50 and 60 ms in, go out late,
    and their latency must include that wait although the server (here: nothing) answered them at once.
    The gaps are wide so that a busy machine cannot send 1 and 2 before 0 has blocked."""
    async def send(i: int) -> int:
        if i == 0:
            time.sleep(0.3)  # blocking on purpose: the generator itself stalls
        return 200

    sent = asyncio.run(loadgen.run_schedule(np.array([0.0, 0.05, 0.06]), send, timeout=5))
    assert (sent.status == 200).all()
    assert sent.lag[1] > 0.2 and sent.lag[2] > 0.2
    assert (sent.latency[1:] >= sent.lag[1:]).all() and sent.latency[1] > 0.2


def test_open_loop_does_not_wait_for_slow_answers_and_counts_failures_by_kind() -> None:
    async def send(i: int) -> int:
        if i == 1:
            raise ConnectionResetError("closed")
        await asyncio.sleep(0.1)
        return 503 if i == 2 else 200

    sent = asyncio.run(loadgen.run_schedule(np.array([0.0, 0.01, 0.02, 0.03]), send, timeout=5))
    assert sent.done.max() < 0.25  # the three 0.1 s answers overlapped; one after another they would end at 0.3 s
    assert sent.status.tolist() == [200, -1, 503, 200]
    assert dict(sent.failures) == {"ConnectionResetError": 1}
    assert (sent.latency[[0, 2, 3]] >= 0.1).all()


def test_pcts_match_numpy_and_give_none_when_empty() -> None:
    ms = np.random.default_rng(0).exponential(5.0, 1000)
    out = loadgen.pcts(ms, (50, 99, 99.9))
    assert out["n"] == 1000
    assert out["p99.9_ms"] == round(float(np.percentile(ms, 99.9)), 2)
    assert loadgen.pcts(np.array([]), (50, 99)) == {"n": 0, "p50_ms": None, "p99_ms": None}


def test_parse_wrk_reads_every_figure_with_its_unit() -> None:
    out = loadgen.parse_wrk(WRK_OUTPUT)
    assert out["requests"] == 535 and out["requests_per_s"] == 267.5
    assert (out["p50_ms"], out["p75_ms"], out["p90_ms"], out["p99_ms"], out["max_ms"]) == (29.65, 0.833, 40.0, 1200.0, 1550.0)
    assert out["non_2xx"] == 3 and out["wrong_item_count"] == 4
    assert out["socket_errors"] == 3 and out["socket_errors_by_kind"] == {"connect": 0, "read": 1, "write": 0, "timeout": 2}


def test_parse_wrk_without_errors_reports_zeros() -> None:
    dropped = ("Socket errors", "Non-2xx", "wrong item count")
    clean = "\n".join(line for line in WRK_OUTPUT.splitlines() if not any(d in line for d in dropped))
    out = loadgen.parse_wrk(clean)
    assert out["non_2xx"] == 0 and out["socket_errors"] == 0 and "wrong_item_count" not in out


def test_docstring_examples_run() -> None:
    assert doctest.testmod(loadgen).failed == 0
