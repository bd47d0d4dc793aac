"""Load on the HTTP API over loopback: latency and throughput of POST /recommend with the `beauty` bundle
(sasrec, the default `home` scenario: sasrec top-200 + co-occurrence + popular, ranked by sasrec, with
reasons), bounded by request count and by time.

    python benchmarks/serve_load.py --data-dir ../shared/data

1. Closed loop at concurrency 1, 8 and 32: each worker sends its next request when the last answer
   arrives (throughput at saturation; p50 / p99 latency).
2. Open loop at a fixed rate (default 200 requests/s): requests start on schedule whatever the answers
   do, so a slow server shows up as latency, not as a lower rate.

The server runs in its own process (`omnirec serve`, one worker); the load generator shares the 2 CPUs.
Writes benchmarks/results/serve_load.json and benchmarks/SERVE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from baselines import code_version  # noqa: E402
from pipeline import fit_or_load, sasrec_folder  # noqa: E402 - the pipeline benchmark's cached sasrec

from omnirec.bundle import Bundle  # noqa: E402
from omnirec.data.datasets import load_dataset  # noqa: E402
from omnirec.data.split import split_dataset  # noqa: E402
from omnirec.models import SASRec  # noqa: E402
from omnirec.models.sasrec import SASRecConfig  # noqa: E402
from omnirec.train.loop import TrainConfig  # noqa: E402
from omnirec.utils import atomic_write_text  # noqa: E402


def make_bundle(args: argparse.Namespace, folder: Path) -> list[str]:
    """The beauty bundle (sasrec from the pipeline benchmark's cache, trained there if missing); user ids."""
    ds = load_dataset("beauty", args.data_dir)
    config = SASRecConfig(train=TrainConfig(max_minutes=15.0, progress=False))
    model, _ = fit_or_load(SASRec(config), split_dataset(ds, "loo").train_data(), Path(args.cache) / "beauty" / sasrec_folder("sasrec", config))
    Bundle.create(model, ds).save(folder)
    return ds.users.labels


def start_server(bundle: Path, store: Path, port: int, workers: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "omnirec.cli", "serve", "--bundle", str(bundle), "--store", str(store),
                             "--port", str(port), "--workers", str(workers), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start")


async def one(client: httpx.AsyncClient, user: str, out: list, errors: list) -> None:
    start = time.perf_counter()
    try:
        r = await client.post("/recommend", json={"user": user, "k": 10})
        ok = r.status_code == 200 and len(r.json()["items"]) == 10
    except httpx.HTTPError:
        ok = False
    (out if ok else errors).append(time.perf_counter() - start)


async def closed_loop(base: str, users: list[str], concurrency: int, count: int, seconds: float) -> dict:
    rng = np.random.default_rng(concurrency)
    latencies: list[float] = []
    errors: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        async def worker(n: int) -> None:
            for _ in range(n):
                if time.perf_counter() > deadline:
                    return
                await one(client, users[int(rng.integers(len(users)))], latencies, errors)
        start = time.perf_counter()
        await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return summarise(latencies, errors, wall, {"mode": "closed", "concurrency": concurrency})


async def open_loop(base: str, users: list[str], rate: float, count: int) -> dict:
    rng = np.random.default_rng(7)
    latencies: list[float] = []
    errors: list[float] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        start = time.perf_counter()
        tasks = []
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, users[int(rng.integers(len(users)))], latencies, errors)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    return summarise(latencies, errors, wall, {"mode": "open", "rate": rate})


def summarise(latencies: list[float], errors: list[float], wall: float, extra: dict) -> dict:
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {**extra, "requests": len(latencies) + len(errors), "errors": len(errors), "wall_s": round(wall, 2),
            "throughput": round((len(latencies) + len(errors)) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2)}


def markdown(doc: dict) -> str:
    lines = ["# Serving: load on POST /recommend", "", "Generated by `benchmarks/serve_load.py`; do not edit by hand.",
             f"Bundle: beauty ({doc['items']:,} items, {doc['users']:,} users), sasrec, scenario `home` (sasrec top-200, "
             "co-occurrence, popular; ranked by sasrec; reasons on), k = 10, random known users. "
             f"{doc.get('workers', 1)} server process(es) (uvicorn, one torch thread each); the load generator runs on the same "
             "machine.", "",
             "| mode | concurrency / rate | requests | errors | throughput (req/s) | p50 ms | p99 ms | max ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        load = r.get("concurrency", f"{r.get('rate', 0):g}/s")
        lines.append(f"| {r['mode']} | {load} | {r['requests']:,} | {r['errors']} | {r['throughput']:.1f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['max_ms']:.2f} |")
    lines += ["", f"Command: `{doc['command']}`; code {doc['code']}; machine: {doc['machine']}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--cache", default="runs/pipeline-models")
    p.add_argument("--count", type=int, default=2000, help="requests per closed-loop run")
    p.add_argument("--seconds", type=float, default=30.0, help="time limit per closed-loop run")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--rate-count", type=int, default=3000, help="requests of the fixed-rate run")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--workers", type=int, default=1, help="server processes (omnirec serve --workers)")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="omnirec-load-"))
    users = make_bundle(args, folder / "bundle")
    server = start_server(folder / "bundle", folder / "events.db", args.port, args.workers)
    base = f"http://127.0.0.1:{args.port}"
    try:
        runs = [asyncio.run(closed_loop(base, users, 1, 200, 10))]  # warm-up, not reported
        runs = []
        for concurrency in (1, 8, 32):
            runs.append(asyncio.run(closed_loop(base, users, concurrency, args.count, args.seconds)))
            print(runs[-1], flush=True)
        runs.append(asyncio.run(open_loop(base, users, args.rate, args.rate_count)))
        print(runs[-1], flush=True)
    finally:
        server.terminate()
        server.wait()
    doc = {"runs": runs, "items": 12101, "users": len(users), "code": code_version("benchmarks/serve_load.py"),
           "workers": args.workers,
           "command": "python benchmarks/serve_load.py --data-dir ../shared/data" + (f" --workers {args.workers}" if args.workers > 1 else ""),
           "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"}
    atomic_write_text(HERE / "results" / "serve_load.json", json.dumps(doc, indent=2))
    atomic_write_text(HERE / "SERVE.md", markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
