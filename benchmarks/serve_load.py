"""Load on the HTTP API over loopback: latency and capacity of POST /recommend with the `beauty` bundle (sasrec,
the default `home` scenario: sasrec top-200 + co-occurrence + popular, ranked by sasrec, with reasons).

    python benchmarks/serve_load.py --data-dir ../shared/data                       # the figures in SERVE.md
    python benchmarks/serve_load.py --data-dir ../shared/data --dataset ml-100k --train-minutes 0.2 \\
        --rates 20 --seconds 3 --warmup-seconds 1 --wrk-connections 1,8 --wrk-seconds 2 --out /tmp/smoke.json  # a try
    python benchmarks/serve_load.py --report-only                                   # SERVE.md again from the JSON

1. Open loop (latency), no coordinated omission: Poisson arrivals at each target rate (default 100, 200 and
   300 requests/s, 30 s each, after a warm-up), every request's latency counted from its *scheduled* send
   time (`loadgen.run_schedule`), so a stalled server shows as latency instead of as fewer requests. Per rate:
   requests, errors by kind, achieved rate, p50 / p99 / p99.9 / max, and how late the generator itself sent.
2. Saturation (capacity), closed loop with `wrk` (Debian package `wrk`): a Lua script POSTs /recommend for
   random known users at 1, 8 and 32 connections; its requests/s, latency percentiles and errors.

One server process (`omnirec serve`); the load generator runs on the same CPUs. Writes --out (default
benchmarks/results/serve_load.json) and its report: benchmarks/SERVE.md for the default --out, else --out
with the suffix .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from baselines import code_version  # noqa: E402
from loadgen import (Pool, Sent, cpu_s, pcts, poisson_schedule, run_schedule, run_wrk, start_server,  # noqa: E402
                     stop_server, wrk_version)
from pipeline import DEFAULT_MINUTES, fit_or_load, sasrec_cache, sasrec_config  # noqa: E402 - the pipeline benchmark's cached sasrec

from omnirec.bundle import Bundle  # noqa: E402
from omnirec.data.datasets import load_dataset  # noqa: E402
from omnirec.data.ids import IdMap  # noqa: E402
from omnirec.data.split import split_dataset  # noqa: E402
from omnirec.models import SASRec  # noqa: E402
from omnirec.utils import atomic_write_text  # noqa: E402

DEFAULT_OUT = HERE / "results" / "serve_load.json"
K = 10

# wrk: POST /recommend for a random user of the list; 200 answers without K items are counted and printed.
LUA = """local bodies = {%s}
local threads = {}
wrk.method = "POST"
wrk.path = "/recommend"
wrk.headers["Content-Type"] = "application/json"
setup = function(thread) table.insert(threads, thread) end
init = function(args) wrong = 0; math.randomseed(%d) end
request = function() return wrk.format(nil, nil, nil, bodies[math.random(#bodies)]) end
response = function(status, headers, body)
  if status == 200 then
    local _, n = string.gsub(body, '"sources":', '')  -- one "sources" key per listed item
    if n ~= %d then wrong = wrong + 1 end
  end
end
done = function(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("wrong") end
  io.write(string.format("wrong item count: %%d\\n", total))
end
"""


def make_bundle(args: argparse.Namespace, folder: Path) -> dict:
    """sasrec on the dataset (the pipeline benchmark's cached model, trained there if missing), bundled into
    `folder`; the catalogue size, user count and user ids as the saved bundle records them."""
    ds = load_dataset(args.dataset, args.data_dir)
    config = sasrec_config(args.train_minutes)
    model, _ = fit_or_load(SASRec(config), split_dataset(ds, "loo").train_data(), sasrec_cache(args.cache, args.dataset, config))
    Bundle.create(model, ds).save(folder)
    meta = json.loads((folder / "bundle.json").read_text())
    return {"dataset": meta["dataset"], "n_items": meta["n_items"], "n_users": meta["n_users"],
            "users": IdMap.load(folder / "users.json").labels}


# ---- open loop -------------------------------------------------------------------------------------------

async def open_loop(port: int, users: list[str], rate: float, seconds: float, seed: int) -> tuple[Sent, np.ndarray, np.ndarray]:
    """POST /recommend for random known users at Poisson arrivals: (what run_schedule measured, the schedule,
    which 200 answers listed other than K items)."""
    rng = np.random.default_rng(seed)
    at = poisson_schedule(rate, seconds, rng)
    bodies = [json.dumps({"user": users[u], "k": K}).encode() for u in rng.integers(len(users), size=len(at))]
    wrong, pool = np.zeros(len(at), dtype=bool), Pool(port)

    async def send(i: int) -> int:
        status, answer = await pool.post("/recommend", bodies[i])
        wrong[i] = status == 200 and len(json.loads(answer).get("items", ())) != K
        return status

    try:
        return await run_schedule(at, send), at, wrong
    finally:
        pool.close()


def summarise(sent: Sent, at: np.ndarray, wrong: np.ndarray, rate: float, seconds: float) -> dict:
    """One rate's row. Latency percentiles are over every request, failed ones included (time from its
    scheduled send to its answer or failure), so no slow request drops out of them."""
    ok = (sent.status == 200) & ~wrong
    http = Counter(int(s) for s in sent.status[(sent.status != 200) & (sent.status != -1)])
    ms, lag_ms = sent.latency * 1000, sent.lag * 1000
    return {"target_per_s": rate, "seconds": seconds, "requests": int(at.size), "offered_per_s": round(at.size / seconds, 1),
            "ok": int(ok.sum()), "errors": int((~ok).sum()),
            "errors_by_kind": {"http_status": {str(k): v for k, v in sorted(http.items())},
                               "wrong_item_count": int(wrong.sum()), "no_answer": dict(sent.failures)},
            "achieved_per_s": round(float(ok.sum() / np.nanmax(sent.done)), 1),
            **{k: v for k, v in pcts(ms, (50, 99, 99.9)).items() if k != "n"}, "max_ms": round(float(np.nanmax(ms)), 2),
            "generator_late_ms": {"p50": round(float(np.percentile(lag_ms, 50)), 2),
                                  "p99": round(float(np.percentile(lag_ms, 99)), 2), "max": round(float(lag_ms.max()), 2)}}


def run_open(proc_pid: int | None, port: int, users: list[str], rate: float, seconds: float, seed: int) -> dict:
    """One rate, with the server process's CPU share over it (None with several worker processes)."""
    cpu0, t0 = (cpu_s(proc_pid) if proc_pid else None), time.perf_counter()
    sent, at, wrong = asyncio.run(open_loop(port, users, rate, seconds, seed))
    share = (cpu_s(proc_pid) - cpu0) / (time.perf_counter() - t0) if proc_pid else None
    return {**summarise(sent, at, wrong, rate, seconds), "server_cpu": None if share is None else round(share, 3), "seed": seed}


# ---- saturation ------------------------------------------------------------------------------------------

def saturation(folder: Path, base: str, users: list[str], connections: list[int], seconds: int, seed: int) -> list[dict]:
    """wrk at each connection count, POST /recommend for random users (up to 2,000 known users, drawn once)."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(users), size=min(2000, len(users)), replace=False)
    script = folder / "recommend.lua"
    script.write_text(LUA % (", ".join(f"[==[{json.dumps({'user': users[u], 'k': K})}]==]" for u in chosen), seed, K))
    runs = []
    for c in connections:
        runs.append(run_wrk(script, base, c, seconds))
        print("wrk", runs[-1], flush=True)
    return runs


# ---- report ----------------------------------------------------------------------------------------------

def _errors(r: dict) -> str:
    kinds = r["errors_by_kind"]
    parts = [f"HTTP {k}: {v}" for k, v in kinds["http_status"].items()] + [f"{k}: {v}" for k, v in kinds["no_answer"].items()]
    parts += [f"wrong item count: {kinds['wrong_item_count']}"] if kinds["wrong_item_count"] else []
    return f"{r['errors']:,}" + (f" ({'; '.join(parts)})" if parts else "")


def report_open(doc: dict) -> list[str]:
    o = doc["open_loop"]
    lines = ["## Latency: open loop, no coordinated omission", "",
             f"Poisson arrivals (exponential gaps, schedule drawn in advance, seed per rate) at each target rate for "
             f"{o['seconds']:g} s, after a {o['warmup_s']:g} s warm-up at {o['warmup_rate']:g} requests/s (not reported). "
             "Each request's latency runs from its **scheduled** send time to its answer, so a server that stalls shows as "
             "latency of every request due meanwhile, not as fewer requests; percentiles are over every request, failed ones "
             "included. Errors: HTTP status other than 200, a 200 without k items, or no answer (connection error, or none "
             "within 30 s). *Achieved*: good answers per second until the last answer. *Generator late*: p99 of actual "
             "send - scheduled send; when it is small beside the latency, the latency is the server's. Generator: one "
             "Python process, asyncio, raw keep-alive HTTP/1.1 connections (`benchmarks/loadgen.py`).", "",
             "| target req/s | requests | offered req/s | achieved req/s | errors | p50 ms | p99 ms | p99.9 ms | max ms "
             "| generator late p99 ms | server CPU |", "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in o["runs"]:
        cpu = f"{r['server_cpu']:.0%}" if r["server_cpu"] is not None else "n/a"
        lines.append(f"| {r['target_per_s']:g} | {r['requests']:,} | {r['offered_per_s']:.1f} | {r['achieved_per_s']:.1f} | "
                     f"{_errors(r)} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p99.9_ms']:.2f} | {r['max_ms']:.2f} | "
                     f"{r['generator_late_ms']['p99']:.2f} | {cpu} |")
    return lines + ["", "Server CPU: the server process's CPU time over the run's wall time (1.0 = one core).", ""]


def report_wrk(doc: dict) -> list[str]:
    w = doc["saturation"]
    lines = ["## Capacity: closed loop, wrk", "",
             f"`{w['wrk_version']}`, `wrk -t1 -c<connections> -d{w['seconds']}s --latency -s recommend.lua`: one thread; each "
             f"connection sends its next request when its last answer came. The Lua script POSTs /recommend "
             f"{{user, k: {K}}} for a random user out of {w['users_in_script']:,} known users and counts 200 answers "
             "without k items. Closed loop: use its requests/s as the capacity; its latencies are those of a queue of "
             "<connections> requests (coordinated omission by design), the open-loop table is the latency.", "",
             "| connections | requests | requests/s | p50 ms | p75 ms | p90 ms | p99 ms | max ms | non-2xx "
             "| socket errors (connect/read/write/timeout) | wrong item count |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in w["runs"]:
        socket = "/".join(str(r["socket_errors_by_kind"].get(k, 0)) for k in ("connect", "read", "write", "timeout"))
        lines.append(f"| {r['connections']} | {r['requests']:,} | {r['requests_per_s']:.1f} | {r['p50_ms']} | {r['p75_ms']} | "
                     f"{r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['non_2xx']} | {socket} | "
                     f"{r.get('wrong_item_count', 'n/a')} |")
    return lines + [""]


def trained_minutes(doc: dict) -> float:
    """sasrec's training budget: recorded, or read from the command of a result that did not record it."""
    if "train_minutes" in doc:
        return float(doc["train_minutes"])
    given = re.search(r"--train-minutes[ =](\S+)", doc["command"])
    return float(given.group(1)) if given else DEFAULT_MINUTES


def trained_for(minutes: float) -> str:
    """How sasrec's training was bounded, in words.

    >>> trained_for(0), trained_for(1), trained_for(2.5)
    ('trained until early stopping', 'trained for at most 1 minute', 'trained for at most 2.5 minutes')
    """
    if minutes <= 0:
        return "trained until early stopping"
    return f"trained for at most {minutes:g} minute{'' if minutes == 1 else 's'}"


def markdown(doc: dict) -> str:
    b = doc["bundle"]
    lines = ["# Serving: load on POST /recommend", "",
             f"Generated by `benchmarks/serve_load.py` from `{doc['json']}`; do not edit by hand.", "",
             f"Bundle: {b['dataset']} ({b['n_items']:,} items, {b['n_users']:,} users, read from the bundle), sasrec "
             f"(default config, {trained_for(trained_minutes(doc))}: the weights do not change the work "
             "a request does), "
             f"scenario `home` (sasrec top-200, co-occurrence, popular; ranked by sasrec; reasons on), k = {K}, random "
             f"known users. {doc['workers']} server process(es) (`omnirec serve`, uvicorn, one torch thread each) over "
             f"loopback; the load generator (and wrk) run on the same machine and share its {doc['cpus']} CPUs with the "
             "server.", ""]
    lines += report_open(doc) + report_wrk(doc)
    lines += [f"Command: `{doc['command']}`; code {doc['code']}; machine: {doc['machine']}; 1-minute load average at the "
              f"start {doc['load_1min_at_start']}; run {doc['when']}.", ""]
    return "\n".join(lines)


# ---- main ------------------------------------------------------------------------------------------------

def report_path(out: Path) -> Path:
    """SERVE.md for the committed results, else beside --out, so a trial run leaves the committed report alone."""
    return HERE / "SERVE.md" if out.resolve() == DEFAULT_OUT else out.with_suffix(".md")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--dataset", default="beauty", choices=["beauty", "ml-100k"], help="ml-100k: for a quick trial")
    p.add_argument("--cache", default="runs/pipeline-models", help="trained models are kept here and reused")
    p.add_argument("--train-minutes", type=float, default=DEFAULT_MINUTES, help="sasrec's training budget when not cached")
    p.add_argument("--rates", default="100,200,300", help="open-loop target rates, requests/s, comma-separated")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each open-loop rate")
    p.add_argument("--warmup-seconds", type=float, default=5.0, help="open loop at the first rate before measuring")
    p.add_argument("--wrk-connections", default="1,8,32", help="wrk's connection counts, comma-separated")
    p.add_argument("--wrk-seconds", type=int, default=20, help="length of each wrk run")
    p.add_argument("--workers", type=int, default=1, help="server processes (omnirec serve --workers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON; its report: SERVE.md for the default, "
                                                                 "else the same path with .md")
    p.add_argument("--report-only", action="store_true", help="write the report from --out again; measure nothing")
    return p.parse_args()


def measure(args: argparse.Namespace, folder: Path) -> dict:
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    connections = [int(c) for c in args.wrk_connections.split(",") if c.strip()]
    version = wrk_version()  # before the bundle: without wrk there is nothing to measure the capacity with
    bundle = make_bundle(args, folder / "bundle")
    users = bundle.pop("users")
    proc, base, start_s = start_server(folder / "bundle", str(folder / "events.db"), folder / "server.log", args.workers, 300)
    port, pid = int(base.rsplit(":", 1)[1]), proc.pid if args.workers == 1 else None
    try:
        run_open(pid, port, users, rates[0], args.warmup_seconds, args.seed + 1000)
        runs = []
        for n, rate in enumerate(rates):
            runs.append(run_open(pid, port, users, rate, args.seconds, args.seed + n))
            print("open loop", runs[-1], flush=True)
        wrk_runs = saturation(folder, base, users, connections, args.wrk_seconds, args.seed)
    finally:
        stop_server(proc)
    return {"bundle": bundle, "server_start_s": round(start_s, 1),
            "open_loop": {"seconds": args.seconds, "warmup_s": args.warmup_seconds, "warmup_rate": rates[0], "runs": runs},
            "saturation": {"wrk_version": version, "seconds": args.wrk_seconds, "users_in_script": min(2000, len(users)),
                           "runs": wrk_runs}}


def main() -> None:
    args = parse_args()
    out = args.out.resolve()
    if not args.report_only:
        with tempfile.TemporaryDirectory(prefix="omnirec-load-") as folder:
            started = {"command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
                       "code": code_version("benchmarks/serve_load.py", "benchmarks/loadgen.py"),
                       "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
                       "cpus": os.cpu_count(), "load_1min_at_start": round(os.getloadavg()[0], 2),
                       "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "workers": args.workers,
                       "train_minutes": args.train_minutes}
            doc = {**started, **measure(args, Path(folder))}
        atomic_write_text(out, json.dumps(doc, indent=1))
    elif not out.exists():
        raise SystemExit(f"--report-only: {out} does not exist; run the benchmark first")
    doc = json.loads(out.read_text())
    if "open_loop" not in doc:
        raise SystemExit(f"{out} was written by an older serve_load.py (closed-loop Python client); run the benchmark again")
    doc["json"] = os.path.relpath(out, HERE) if out.is_relative_to(HERE) else str(out)
    atomic_write_text(report_path(out), markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
