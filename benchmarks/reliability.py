"""Reliability of `omnirec serve` on real server processes over loopback: capacity, a long soak, and faults.

    python benchmarks/reliability.py --data-dir ../shared/data                  # everything, the 20-minute soak last
    python benchmarks/reliability.py --data-dir ../shared/data --quick          # a 1-minute soak, shorter capacity runs
    python benchmarks/reliability.py --data-dir ../shared/data --parts faults   # one part; the others' figures are kept

1. capacity: closed-loop saturation with `wrk` of the soak's mix (a Lua script: 4 in 5 POST /recommend for
   known users in turn, 1 in 5 POST /feedback with a keyed event); then what the soak's own generator
   sustains: open-loop steps at rising shares of the wrk figure, until one has errors or p99 over 500 ms.
   The Python generator shares the CPUs with the server, so it sustains less than wrk (a small C program)
   measures; the soak's rate is taken from what it sustains.
2. soak: 70% of the rate the soak's generator sustained, for --soak-minutes, open loop: Poisson arrivals, and each request's
   latency counted from its scheduled send time, so a stalled server shows as latency instead of as fewer
   requests (no coordinated omission); 80% POST /recommend, 20% POST /feedback with keyed events. Errors,
   the server's RSS every 10 s (growth after a 2-minute warm-up), p50 / p99 per minute.
3. faults: (a) the SQLite store on a 2 MB tmpfs that fills up, then grows; (b) corrupted and half-written
   bundles given to POST /admin/reload; (c) PostgreSQL restarted (fast, then immediate) under keyed writes;
   (d) `omnirec serve --workers 4` on one PostgreSQL and on one SQLite store, 8 writers sending overlapping
   idempotency keys.

The bundle is ItemKNN on ml-100k (synthetic data when ml-100k is absent). The load generator shares the
machine's CPUs with the server. Writes benchmarks/results/reliability.json, benchmarks/results/reliability_p99.png
and benchmarks/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import platform
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import loadgen  # noqa: E402
from loadgen import Pool, cpu_s, free_port, pcts, poisson_schedule, rss_kb, run_schedule, run_wrk, stop_server  # noqa: E402

from omnirec.bundle import Bundle  # noqa: E402
from omnirec.data.dataset import Dataset  # noqa: E402
from omnirec.data.datasets import load_dataset  # noqa: E402
from omnirec.data.split import split_dataset  # noqa: E402
from omnirec.data.synthetic import SyntheticConfig, generate  # noqa: E402
from omnirec.models import ItemKNN  # noqa: E402
from omnirec.serve.store import open_store  # noqa: E402
from omnirec.utils import atomic_write_text  # noqa: E402

KEY = "reliability-key"
HEADERS = {"X-API-Key": KEY}
RESULTS = HERE / "results" / "reliability.json"
PLOT = HERE / "results" / "reliability_p99.png"
start_server = partial(loadgen.start_server, api_key=KEY)


# ---- servers ---------------------------------------------------------------------------------------------

class Postgres:
    """A throw-away PostgreSQL cluster (fsync on), run as the `postgres` user when this runs as root."""

    def __init__(self) -> None:
        def tool(name: str) -> str | None:
            return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)

        initdb, self.pg_ctl = tool("initdb"), tool("pg_ctl")
        if initdb is None or self.pg_ctl is None:
            raise FileNotFoundError("PostgreSQL is not installed (no initdb / pg_ctl)")
        self.base = Path(tempfile.mkdtemp(prefix="omnirec-reliability-pg-"))
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        port = free_port()
        self.options = f"-p {port} -k {self.base} -c listen_addresses=''"
        subprocess.run([*self.prefix, initdb, "-D", str(self.base / "data"), "-A", "trust", "-U", "omnirec"],
                       check=True, capture_output=True)
        self.ctl("start")
        self.url = f"postgresql://omnirec@/postgres?host={self.base}&port={port}"

    def ctl(self, action: str, mode: str = "fast") -> float:
        """Run `pg_ctl action` and wait for it; seconds it took."""
        start = time.perf_counter()
        subprocess.run([*self.prefix, self.pg_ctl, "-D", str(self.base / "data"), "-w", "-m", mode, "-l",
                        str(self.base / "log"), "-o", self.options, action], check=True, capture_output=True)
        return time.perf_counter() - start

    def close(self) -> None:
        subprocess.run([*self.prefix, self.pg_ctl, "-D", str(self.base / "data"), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def make_bundle(data_dir: str, folder: Path) -> dict:
    """ItemKNN on ml-100k (synthetic when ml-100k is absent), saved to `folder`; the ids to send."""
    try:
        ds = load_dataset("ml-100k", data_dir)
    except FileNotFoundError:
        inter, items = generate(SyntheticConfig(n_users=1000, n_items=1000, seed=0))
        ds = Dataset.from_frames(inter, items, name="synthetic")
    Bundle.create(ItemKNN().fit(split_dataset(ds, "loo").train_data()), ds).save(folder)
    return {"dataset": ds.name, "users": list(ds.users.labels), "items": list(ds.items.labels)}


def event(ids: dict, key: str, n: int) -> dict:
    """A keyed event whose payload follows from `n` alone, so every sender of a key sends the same event."""
    return {"user": ids["users"][n % len(ids["users"])], "item": ids["items"][(n * 7) % len(ids["items"])],
            "type": "click", "key": key}


# ---- capacity --------------------------------------------------------------------------------------------

LUA = """local bodies = {%s}
local users = {%s}
local items = {%s}
local n = 0
local run = "warm"
init = function(args) run = args[1] or run end  -- each run's keys are its own
request = function()
  n = n + 1
  if n %% 5 == 0 then  -- one request in five: a keyed feedback event, as in the soak
    local event = string.format('{"events": [{"user": "%%s", "item": "%%s", "type": "click", "key": "cap-%%s-%%d"}]}',
      users[(n %% #users) + 1], items[((n * 7) %% #items) + 1], run, n)
    return wrk.format("POST", "/feedback", {["Content-Type"] = "application/json", ["X-API-Key"] = "%s"}, event)
  end
  return wrk.format("POST", "/recommend", {["Content-Type"] = "application/json"}, bodies[(n %% #bodies) + 1])
end
"""


def capacity(bundle: Path, ids: dict, folder: Path, seconds: int) -> dict:
    """Closed-loop saturation with the soak's own mix (a mixed request costs the server more than a
    /recommend alone) at a few connection counts; the best is the capacity."""
    rng = np.random.default_rng(0)
    bodies = [json.dumps({"user": u, "k": 10}) for u in rng.choice(ids["users"], size=min(500, len(ids["users"])), replace=False)]
    script = folder / "mixed.lua"
    quoted = [", ".join(f"[[{v}]]" for v in values) for values in (bodies, ids["users"][:500], ids["items"][:500])]
    script.write_text(LUA % (*quoted, KEY))
    proc, base, _ = start_server(bundle, str(folder / "capacity.db"), folder / "capacity.log")
    try:
        run_wrk(script, base, 8, 3)  # warm-up
        runs = []
        for connections in (4, 16, 64):
            runs.append(run_wrk(script, base, connections, seconds, f"c{connections}"))
            print("capacity", runs[-1], flush=True)
    finally:
        stop_server(proc)
    best = max(runs, key=lambda r: r["requests_per_s"])
    return {"requests_per_s": best["requests_per_s"], "at_connections": best["connections"], "seconds_per_run": seconds,
            "runs": runs, "tool": "wrk -t1 (closed loop), the soak's mix: 4 in 5 POST /recommend {user, k: 10} "
                                  "(500 known users in turn), 1 in 5 POST /feedback (one keyed event)"}


LADDER = (0.3, 0.45, 0.6, 0.75, 0.9)  # shares of the wrk capacity offered open loop, in turn
SUSTAINED_P99_MS = 500.0  # a step is kept up with when it has no errors and p99 at most this
SOAK_SHARE = 0.7  # the soak's rate: this share of the highest rate kept up with


def open_loop_capacity(bundle: Path, ids: dict, folder: Path, wrk_rate: float, seconds: float) -> dict:
    """The rate the soak's own generator (Poisson arrivals, latency from the scheduled send time) sustains:
    steps of `seconds` at LADDER shares of `wrk_rate` on one fresh server, up to the first step with errors
    or p99 over SUSTAINED_P99_MS (`loadgen.sustained_rate`)."""
    proc, base, _ = start_server(bundle, str(folder / "ladder.db"), folder / "ladder.log")
    steps = []
    try:
        for j, share in enumerate(LADDER):
            rate = share * wrk_rate
            raw = asyncio.run(open_loop(int(base.rsplit(":", 1)[1]), proc.pid, ids, rate, seconds, seed=10_000 + j))
            errors = int((raw["status"] != 200).sum())
            steps.append({"share_of_wrk": share, "rate_per_s": round(rate, 1), "requests": int(raw["status"].size),
                          "errors": errors, **pcts(raw["latency"] * 1000, (50, 99, 99.9))})
            print("open loop", steps[-1], flush=True)
            if loadgen.sustained_rate(steps[-1:], SUSTAINED_P99_MS) is None:
                break
    finally:
        stop_server(proc)
    return {"requests_per_s": loadgen.sustained_rate(steps, SUSTAINED_P99_MS), "p99_limit_ms": SUSTAINED_P99_MS,
            "seconds_per_step": seconds, "steps": steps}


def soak_rate(capacity_doc: dict) -> float:
    """SOAK_SHARE of what the soak's generator sustained; of the wrk capacity for a result saved before the
    open-loop steps existed; of the first step's rate when not even that was kept up with."""
    steps = capacity_doc.get("open_loop")
    if steps is None:
        return SOAK_SHARE * capacity_doc["requests_per_s"]
    return SOAK_SHARE * (steps["requests_per_s"] or steps["steps"][0]["rate_per_s"])


# ---- soak ------------------------------------------------------------------------------------------------

async def open_loop(port: int, pid: int, ids: dict, rate: float, seconds: float, seed: int) -> dict:
    """Poisson arrivals at `rate` for `seconds` (`loadgen.run_schedule`: latency from each request's scheduled
    time); the server's RSS and CPU every 10 s."""
    rng = np.random.default_rng(seed)
    at = poisson_schedule(rate, seconds, rng)
    feedback = rng.random(len(at)) < 0.2
    users = rng.integers(len(ids["users"]), size=len(at))
    pool, loop, samples = Pool(port), asyncio.get_running_loop(), []
    key_header = f"X-API-Key: {KEY}\r\n"

    async def send(i: int) -> int:
        if feedback[i]:
            path, head, body = "/feedback", key_header, {"events": [event(ids, f"soak-{seed}-{i}", int(users[i]) * 31 + i)]}
        else:
            path, head, body = "/recommend", "", {"user": ids["users"][users[i]], "k": 10}
        return (await pool.post(path, json.dumps(body).encode(), head))[0]

    def take() -> None:
        now, cpu = loop.time(), cpu_s(pid)
        share = (cpu - samples[-1]["cpu_s"]) / (now - samples[-1]["at"]) if samples else None
        samples.append({"t_s": round(now - start, 1), "rss_kb": rss_kb(pid), "load_1min": os.getloadavg()[0],
                        "server_cpu": None if share is None else round(share, 3), "cpu_s": cpu, "at": now})

    async def sample() -> None:
        while True:
            take()
            await asyncio.sleep(10)

    start = loop.time() + 0.2
    sampler = asyncio.create_task(sample())
    sent = await run_schedule(at, send, start)
    take()
    sampler.cancel()
    for sample_ in samples:
        del sample_["cpu_s"], sample_["at"]
    return {"at": at, "feedback": feedback, "latency": sent.latency, "lag": sent.lag, "status": sent.status,
            "samples": samples, "failures": dict(sent.failures)}


def summarise_soak(raw: dict, rate: float, minutes: float, warmup_s: float) -> dict:
    at, ms, ok, fb = raw["at"], raw["latency"] * 1000, raw["status"] == 200, raw["feedback"]
    per_minute = []
    for m in range(int(np.ceil(minutes))):
        inside = (at >= 60 * m) & (at < 60 * (m + 1))
        per_minute.append({"minute": m + 1, **pcts(ms[inside]), "recommend_p99_ms": pcts(ms[inside & ~fb])["p99_ms"],
                           "feedback_p99_ms": pcts(ms[inside & fb])["p99_ms"]})
    samples = raw["samples"]
    base = next((s for s in samples if s["t_s"] >= warmup_s), samples[-1])
    after = [s["rss_kb"] for s in samples if s["t_s"] >= base["t_s"]]
    codes = Counter(int(c) for c in raw["status"][~ok])
    return {"rate_per_s": round(rate, 1), "minutes": minutes, "requests": int(at.size), "feedback_requests": int(fb.sum()),
            "errors": int((~ok).sum()), "error_statuses": {str(k): v for k, v in sorted(codes.items()) if k != -1},
            "client_side_failures": raw["failures"],
            "all": pcts(ms), "recommend": pcts(ms[~fb]), "feedback": pcts(ms[fb]), "max_ms": round(float(ms.max()), 2),
            "per_minute": per_minute, "warmup_s": warmup_s, "rss_at_warmup_mb": round(base["rss_kb"] / 1024, 1),
            "rss_end_mb": round(samples[-1]["rss_kb"] / 1024, 1), "rss_max_after_warmup_mb": round(max(after) / 1024, 1),
            "rss_growth_pct": round(100 * (samples[-1]["rss_kb"] - base["rss_kb"]) / base["rss_kb"], 2),
            "generator_lag_ms": {"p99": round(float(np.percentile(raw["lag"] * 1000, 99)), 2),
                                 "max": round(float(np.max(raw["lag"]) * 1000), 2)},
            "server_cpu_mean": round(float(np.mean([x["server_cpu"] for x in samples if x["server_cpu"] is not None])), 3),
            "load_1min_mean": round(float(np.mean([x["load_1min"] for x in samples])), 2),
            "rss_samples": samples}


def soak(bundle: Path, ids: dict, folder: Path, rate: float, minutes: float, seed: int) -> dict:
    store = folder / "soak.db"
    proc, base, _ = start_server(bundle, str(store), folder / "soak.log")
    try:
        raw = asyncio.run(open_loop(int(base.rsplit(":", 1)[1]), proc.pid, ids, rate, 60 * minutes, seed))
    finally:
        stop_server(proc)
    result = summarise_soak(raw, rate, minutes, warmup_s=min(120.0, 15 * minutes))
    acked = {f"soak-{seed}-{i}" for i in np.flatnonzero(raw["feedback"] & (raw["status"] == 200))}
    with contextlib.closing(open_store(str(store))) as opened:
        stored = {e.key for e in opened.all_events()}
    result["acknowledged_events"], result["acknowledged_lost"] = len(acked), len(acked - stored)
    return result


# ---- faults ----------------------------------------------------------------------------------------------

def fill_and_recover(client: httpx.Client, ids: dict, recommend_user: str, make_room) -> dict:
    """Keyed batches until the store refuses one; what reads do meanwhile; writes once `make_room()` ran."""
    acked, refused, codes, detail, retry_after, n = [], [], Counter(), None, None, 0
    while detail is None and n < 400_000:
        keys = [f"full-{n + j}" for j in range(100)]
        r = client.post("/feedback", json={"events": [event(ids, k, n + j) for j, k in enumerate(keys)]}, headers=HEADERS)
        codes[r.status_code] += 1
        (acked if r.status_code == 200 else refused).extend(keys)
        if r.status_code != 200:
            detail, retry_after = r.json()["detail"], r.headers.get("retry-after")
        n += 100
    while_full = Counter()
    for j in range(10):
        key = f"full-{n + j}"
        r = client.post("/feedback", json={"events": [event(ids, key, n + j)]}, headers=HEADERS)
        while_full[r.status_code] += 1
        (acked if r.status_code == 200 else refused).append(key)
    n += 10
    reads = Counter(client.post("/recommend", json={"user": recommend_user, "k": 10}).status_code for _ in range(20))
    health = client.get("/health").status_code
    make_room()
    after = Counter()
    for j in range(10):
        keys = [f"full-{n + 100 * j + i}" for i in range(100)]
        r = client.post("/feedback", json={"events": [event(ids, k, n + 100 * j + i) for i, k in enumerate(keys)]}, headers=HEADERS)
        after[r.status_code] += 1
        (acked if r.status_code == 200 else refused).extend(keys)
    return {"filling_statuses": dict(codes), "refusal": {"detail": detail, "retry_after": retry_after},
            "writes_while_full": dict(while_full), "recommends_while_full": dict(reads), "health_while_full": health,
            "writes_after_space_returned": dict(after),
            "acked": acked, "refused": refused}


def check_store(url: str, result: dict) -> dict:
    """Every acknowledged key is stored, no refused key is."""
    store = open_store(url)
    stored = {e.key for e in store.all_events()}
    store.close()
    acked, refused = set(result.pop("acked")), set(result.pop("refused"))
    return {**result, "acknowledged": len(acked), "acknowledged_lost": len(acked - stored),
            "refused": len(refused), "refused_but_stored": len(refused & stored)}


def fault_disk_full(bundle: Path, ids: dict, folder: Path) -> dict:
    """The store's folder on a 2 MB tmpfs, filled, then grown to 16 MB; with no mount allowed, SQLite's
    max_page_count on an in-process server stands in for the full disk."""
    small = folder / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True).returncode != 0:
        return fault_disk_full_in_process(bundle, ids, small)
    try:
        proc, base, _ = start_server(bundle, str(small / "events.db"), folder / "disk_full.log")
        try:
            with httpx.Client(base_url=base, timeout=60) as client:
                result = fill_and_recover(client, ids, ids["users"][0], lambda: subprocess.run(
                    ["mount", "-o", "remount,size=16m", str(small)], check=True))
        finally:
            stop_server(proc)
        checked = check_store(str(small / "events.db"), result)
        with contextlib.closing(sqlite3.connect(small / "events.db")) as db:
            checked["integrity_check"] = db.execute("PRAGMA integrity_check").fetchone()[0]
        return {"method": "tmpfs of 2 MB, remounted at 16 MB", **checked}
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


def fault_disk_full_in_process(bundle: Path, ids: dict, folder: Path) -> dict:
    from fastapi.testclient import TestClient

    from omnirec.serve.app import ServeConfig, create_app

    app = create_app(ServeConfig(bundle=str(bundle), store=str(folder / "events.db"), api_key=KEY))
    with TestClient(app) as client:
        db = app.state.service.store._db
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0] + 20}")
        result = fill_and_recover(client, ids, ids["users"][0], lambda: db.execute("PRAGMA max_page_count = 1000000"))
    return {"method": "mounting a tmpfs was not permitted: SQLite max_page_count, in-process server", **check_store(str(folder / "events.db"), result)}


def fault_bundles(bundle: Path, ids: dict, folder: Path) -> dict:
    """Broken bundles given to POST /admin/reload: each refused with a 4xx while the old bundle serves on."""
    biggest = max((f for f in bundle.iterdir() if f.is_file() and f.name != "bundle.json"), key=lambda f: f.stat().st_size)
    variants = {name: shutil.copytree(bundle, folder / name) for name in ("corrupted", "no_bundle_json", "truncated", "good")}
    data = bytearray((variants["corrupted"] / biggest.name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (variants["corrupted"] / biggest.name).write_bytes(bytes(data))
    (variants["no_bundle_json"] / "bundle.json").unlink()
    with open(variants["truncated"] / biggest.name, "r+b") as f:
        f.truncate(biggest.stat().st_size // 2)
    proc, base, _ = start_server(bundle, str(folder / "bundles.db"), folder / "bundles.log")
    out = {"changed_file": biggest.name}
    try:
        with httpx.Client(base_url=base, timeout=60, headers=HEADERS) as client:
            serving = client.post("/recommend", json={"user": ids["users"][0], "k": 10}).json()["bundle"]
            for name, path in variants.items():
                r = client.post("/admin/reload", json={"bundle": str(path)})
                rec = client.post("/recommend", json={"user": ids["users"][0], "k": 10})
                now = rec.json().get("bundle") if rec.status_code == 200 else None
                out[name] = {"reload_status": r.status_code, "detail": str(r.json().get("detail", "")).replace(str(folder), "<tmp>"),
                             "health": client.get("/health").status_code, "recommend": rec.status_code,
                             "serving": "the old bundle" if now == serving else "the new bundle" if now == str(path.resolve()) else now}
    finally:
        stop_server(proc)
    return out


def keyed_writers(base: str, ids: dict, prefix: str, stop: threading.Event, threads: int) -> tuple[list, list, Counter, list]:
    """`threads` writers, one keyed event per request, until `stop`: (threads, acknowledged (key, time), statuses,
    [the slowest answer in seconds])."""
    acked, codes, lock, slowest = [], Counter(), threading.Lock(), [0.0]

    def write(w: int) -> None:
        with httpx.Client(base_url=base, headers=HEADERS, timeout=30) as client:
            i = 0
            while not stop.is_set():
                key, i, sent = f"{prefix}-{w}-{i}", i + 1, time.perf_counter()
                try:
                    status = client.post("/feedback", json={"events": [event(ids, key, i * threads + w)]}).status_code
                except httpx.HTTPError:
                    status = "connection error"
                with lock:
                    slowest[0] = max(slowest[0], time.perf_counter() - sent)
                    codes[status] += 1
                    if status == 200:
                        acked.append((key, time.time()))

    workers = [threading.Thread(target=write, args=(w,)) for w in range(threads)]
    for t in workers:
        t.start()
    return workers, acked, codes, slowest


def fault_postgres_restart(bundle: Path, ids: dict, folder: Path, pg: Postgres) -> dict:
    proc, base, _ = start_server(bundle, pg.url, folder / "pg_restart.log")
    stop = threading.Event()
    try:
        workers, acked, codes, slowest = keyed_writers(base, ids, "pg", stop, threads=4)
        time.sleep(3)
        restarts = []
        for mode in ("fast", "immediate"):
            began = time.time()
            restarts.append({"mode": mode, "pg_ctl_restart_s": round(pg.ctl("restart", mode), 2), "at": began})
            time.sleep(3)
        stop.set()
        for t in workers:
            t.join()
    finally:
        stop.set()
        stop_server(proc)
    with contextlib.closing(open_store(pg.url)) as store:
        stored = {e.key for e in store.all_events() if e.key and e.key.startswith("pg-")}
    keys = {k for k, _ in acked}
    last = restarts[-1]["at"] + restarts[-1]["pg_ctl_restart_s"]
    return {"writers": 4, "restarts": [{k: v for k, v in r.items() if k != "at"} for r in restarts], "statuses": dict(codes),
            "acknowledged": len(keys), "acknowledged_lost": len(keys - stored),
            "acknowledged_after_last_restart": sum(t > last for _, t in acked), "slowest_answer_s": round(slowest[0], 2)}


def fault_workers(bundle: Path, ids: dict, folder: Path, store: str, name: str, n_keys: int = 1000) -> dict:
    """8 writers send the same `n_keys` keyed events in their own orders, batches of 5, to 4 server processes."""
    log = folder / f"workers_{name}.log"
    out = {"store": name, "server_processes": 4, "writers": 8, "keys": n_keys}
    try:
        proc, base, out["start_s"] = start_server(bundle, store, log, workers=4, wait_s=300)
    except TimeoutError as error:
        return {**out, "started": False, "reason": str(error), "workers_replaced": log.read_text().count("died")}
    keys = [f"w-{name}-{i}" for i in range(n_keys)]
    codes, new, lock = Counter(), [0], threading.Lock()

    def write(w: int) -> None:
        order = np.random.default_rng(w).permutation(n_keys)
        with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as client:
            for start in range(0, n_keys, 5):
                batch = [event(ids, keys[i], int(i)) for i in order[start:start + 5]]
                try:
                    r = client.post("/feedback", json={"events": batch})
                    status, stored = r.status_code, r.json().get("stored", 0) if r.status_code == 200 else 0
                except httpx.HTTPError:
                    status, stored = "connection error", 0
                with lock:
                    codes[status] += 1
                    new[0] += stored

    try:
        threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop_server(proc)
    with contextlib.closing(open_store(store)) as opened:
        rows = Counter(e.key for e in opened.all_events() if e.key and e.key.startswith(f"w-{name}-"))
    return {**out, "started": True, "workers_replaced": log.read_text().count("died"), "requests": sum(codes.values()),
            "statuses": {str(k): v for k, v in codes.items()}, "reported_new": new[0], "rows": sum(rows.values()),
            "distinct_keys": len(rows), "exactly_once": len(rows) == n_keys and set(rows.values()) == {1} and new[0] == n_keys}


def faults(bundle: Path, ids: dict, folder: Path) -> dict:
    out = {"disk_full": fault_disk_full(bundle, ids, folder)}
    print("disk full", out["disk_full"], flush=True)
    out["bad_bundles"] = fault_bundles(bundle, ids, folder)
    print("bad bundles", out["bad_bundles"], flush=True)
    try:
        pg = Postgres()
    except (FileNotFoundError, KeyError, subprocess.CalledProcessError) as error:
        pg, out["postgres_restart"] = None, {"skipped": str(error)}
    out["workers"] = []
    try:
        if pg is not None:
            out["postgres_restart"] = fault_postgres_restart(bundle, ids, folder, pg)
            print("postgres restart", out["postgres_restart"], flush=True)
            out["workers"].append(fault_workers(bundle, ids, folder, pg.url, "postgresql"))
            print("workers", out["workers"][-1], flush=True)
    finally:
        if pg is not None:
            pg.close()
    out["workers"].append(fault_workers(bundle, ids, folder, str(folder / "workers.db"), "sqlite"))
    print("workers", out["workers"][-1], flush=True)
    return out


# ---- report ----------------------------------------------------------------------------------------------

def provenance(args: argparse.Namespace) -> dict:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.machine())
    return {"command": "python benchmarks/reliability.py " + " ".join(sys.argv[1:]),
            "code": git("rev-parse", "--short", "HEAD") + (" with uncommitted changes" if git(  # its own outputs aside
                "status", "--porcelain", "--", ".", ":!benchmarks/results", ":!benchmarks/RELIABILITY.md") else ""),
            "machine": f"{os.cpu_count()}-core CPU ({cpu}), {platform.system()}, Python {platform.python_version()}",
            "load_1min_at_start": round(os.getloadavg()[0], 2), "seed": args.seed,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def plot(soak_result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = soak_result["per_minute"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    minutes = [r["minute"] for r in rows]
    for field, label in (("p99_ms", "p99, all"), ("recommend_p99_ms", "p99, /recommend"), ("feedback_p99_ms", "p99, /feedback"),
                         ("p50_ms", "p50, all")):
        ax.plot(minutes, [r[field] for r in rows], marker=".", label=label)
    ax.set(xlabel="minute of the soak", ylabel="latency from scheduled send (ms)", yscale="log",
           title=f"Soak: {soak_result['rate_per_s']:.0f} requests/s, open loop (80% /recommend, 20% /feedback)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)
    plt.close(fig)


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def report_capacity(c: dict) -> list[str]:
    lines = ["## Capacity", "", f"{c['tool']}; {c['seconds_per_run']} s per run. **Capacity: {c['requests_per_s']:.0f} "
             f"requests/s** (at {c['at_connections']} connections).", "",
             "| connections | requests | requests/s | p50 ms | p99 ms | non-2xx | socket errors |", "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [_row(r["connections"], f"{r['requests']:,}", f"{r['requests_per_s']:.1f}", r["p50_ms"], r["p99_ms"], r["non_2xx"],
                   r["socket_errors"]) for r in c["runs"]]
    if "open_loop" in c:
        o = c["open_loop"]
        held = f"{o['requests_per_s']:.0f} requests/s" if o["requests_per_s"] else "not even the first step"
        lines += ["", f"What the soak's own generator sustains (open loop, Poisson arrivals, latency from the scheduled send "
                  f"time; {o['seconds_per_step']:g} s per step, up to the first step with errors or p99 over "
                  f"{o['p99_limit_ms']:g} ms): **{held}**. The soak runs at {SOAK_SHARE:.0%} of it.", "",
                  "| share of wrk | offered requests/s | requests | errors | p50 ms | p99 ms | p99.9 ms |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [_row(f"{s['share_of_wrk']:.0%}", s["rate_per_s"], f"{s['requests']:,}", s["errors"], s["p50_ms"], s["p99_ms"],
                       s["p99.9_ms"]) for s in o["steps"]]
    return lines + [""]


def report_soak(s: dict) -> list[str]:
    p99 = [r["p99_ms"] for r in s["per_minute"] if r["p99_ms"] is not None]
    lines = ["## Soak", "",
             f"{s['minutes']:g} minutes at {s['rate_per_s']:.1f} requests/s ({s['share_of_capacity'] or 0:.0%} of the wrk capacity"
             + (f", {s['share_of_sustained']:.0%} of what the soak's generator sustained" if s.get("share_of_sustained") else "")
             + "), Poisson arrivals, latency "
             "from each request's scheduled send time; 80% POST /recommend, 20% POST /feedback (one keyed event each).", "",
             f"- requests: {s['requests']:,} ({s['feedback_requests']:,} feedback); **errors: {s['errors']}** "
             f"(statuses {s['error_statuses']}, no answer {s['client_side_failures']})",
             f"- latency, all: p50 {s['all']['p50_ms']} ms, p99 {s['all']['p99_ms']} ms, max {s['max_ms']} ms; /recommend p50 "
             f"{s['recommend']['p50_ms']} / p99 {s['recommend']['p99_ms']} ms; /feedback p50 {s['feedback']['p50_ms']} / p99 "
             f"{s['feedback']['p99_ms']} ms",
             f"- p99 per minute: {min(p99)} to {max(p99)} ms (plot: `results/reliability_p99.png`)",
             f"- the generator itself sent late by at most {s['generator_lag_ms']['max']} ms (p99 {s['generator_lag_ms']['p99']} ms), "
             f"so the latency is the server's; server CPU {s['server_cpu_mean']:.0%} of one core on average (the 1-minute "
             f"load average, all processes on the machine: {s['load_1min_mean']})",
             f"- server RSS: {s['rss_at_warmup_mb']} MB after the {s['warmup_s']:g} s warm-up, {s['rss_end_mb']} MB at the end "
             f"(max {s['rss_max_after_warmup_mb']} MB): **growth {s['rss_growth_pct']}%** (target < 10%)",
             f"- acknowledged feedback events: {s['acknowledged_events']:,}, missing from the store afterwards: "
             f"**{s['acknowledged_lost']}**", "",
             "| minute | requests | p50 ms | p99 ms | /recommend p99 | /feedback p99 |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [_row(r["minute"], r["n"], r["p50_ms"], r["p99_ms"], r["recommend_p99_ms"], r["feedback_p99_ms"]) for r in s["per_minute"]]
    return lines + ["", "![p99 per minute](results/reliability_p99.png)", ""]


def report_faults(f: dict) -> list[str]:
    d, b, pg = f["disk_full"], f["bad_bundles"], f["postgres_restart"]
    lines = ["## Faults", "", f"### (a) Disk full ({d['method']})", "",
             f"- filling (batches of 100 keyed events): statuses {d['filling_statuses']}; the refusal: "
             f"\"{d['refusal']['detail']}\" (Retry-After: {d['refusal']['retry_after']})",
             f"- while full: 10 single-event writes {d['writes_while_full']} (a small write can still fit); 20 POST /recommend "
             f"{d['recommends_while_full']}; GET /health {d['health_while_full']}",
             f"- after space returned: 10 batches {d['writes_after_space_returned']}",
             f"- acknowledged events {d['acknowledged']:,}, lost **{d['acknowledged_lost']}**; refused {d['refused']:,}, of which "
             f"stored anyway **{d['refused_but_stored']}**" + (f"; integrity_check: {d['integrity_check']}" if "integrity_check" in d else ""),
             "", f"### (b) Broken bundles given to POST /admin/reload (changed file: `{b['changed_file']}`)", "",
             "| bundle | reload status | detail | /health | /recommend | serving afterwards |", "|---|---:|---|---:|---:|---|"]
    lines += [_row(name, v["reload_status"], v["detail"], v["health"], v["recommend"], v["serving"])
              for name, v in b.items() if name != "changed_file"]
    lines += ["", "### (c) PostgreSQL restarted under keyed writes", ""]
    if "skipped" in pg:
        lines.append(f"Skipped: {pg['skipped']}.")
    else:
        lines += [f"- {pg['writers']} writers, one keyed event per request; restarts: " +
                  ", ".join(f"{r['mode']} ({r['pg_ctl_restart_s']} s)" for r in pg["restarts"]),
                  f"- statuses: {pg['statuses']}; the slowest answer took {pg['slowest_answer_s']} s (the store waits up to 5 s "
                  "for the database to come back, then retries the transaction once)",
                  f"- acknowledged {pg['acknowledged']:,}, missing from the database afterwards **{pg['acknowledged_lost']}**; "
                  f"acknowledged after the last restart: {pg['acknowledged_after_last_restart']:,}"]
    lines += ["", "### (d) 4 server processes on one store, 8 writers sending the same keys", "",
              "| store | keys | requests | statuses | reported new | rows | distinct keys | exactly once |", "|---|---:|---:|---|---:|---:|---:|---|"]
    for w in f["workers"]:
        if w["started"]:
            lines.append(_row(w["store"], w["keys"], w["requests"], w["statuses"], w["reported_new"], w["rows"], w["distinct_keys"],
                              "yes" if w["exactly_once"] else "**no**"))
        else:
            lines.append(_row(w["store"], w["keys"], f"did not start: {w['reason']}", "", "", "", "", ""))
    lines += ["", "Worker processes uvicorn replaced (judged hung by its 5 s health check, or died): " +
              ", ".join(f"{w['store']} {w['workers_replaced']}" + (f" (up after {w['start_s']:.0f} s)" if w.get("start_s") else "")
                        for w in f["workers"])]
    return lines + [""]


def markdown(doc: dict) -> str:
    lines = ["# Reliability of `omnirec serve`", "", "Generated by `benchmarks/reliability.py` from "
             "`results/reliability.json`; do not edit by hand. Real server processes (`omnirec serve`, uvicorn) over "
             f"loopback; bundle: ItemKNN on {doc['bundle']}; SQLite store unless said otherwise. The load generator and "
             "the server share the machine's CPUs.", ""]
    for part, write in (("capacity", report_capacity), ("soak", report_soak), ("faults", report_faults)):
        if part in doc:
            lines += write(doc[part])
            p = doc[part + "_provenance"]
            lines += [f"Command: `{p['command']}`; code {p['code']}; machine: {p['machine']}; 1-minute load average at the "
                      f"start {p['load_1min_at_start']}; seed {p['seed']}; run {p['when']}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data", help="holds ml-100k/ (synthetic data when it does not)")
    p.add_argument("--parts", default="capacity,faults,soak", help="comma-separated, run in this order: capacity, faults, soak")
    p.add_argument("--soak-minutes", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=None, help="soak requests/s (default: 70%% of what the soak's generator "
                   "sustained in the capacity part)")
    p.add_argument("--capacity-seconds", type=int, default=20, help="length of each wrk run")
    p.add_argument("--quick", action="store_true", help="a 1-minute soak and 5-second capacity runs, to try it out")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    minutes, seconds = (1.0, 5) if args.quick else (args.soak_minutes, args.capacity_seconds)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    folder = Path(tempfile.mkdtemp(prefix="omnirec-reliability-"))
    try:
        ids = make_bundle(args.data_dir, folder / "bundle")
        doc["bundle"] = ids["dataset"]
        for part in parts:
            started = provenance(args)
            if part == "capacity":
                doc["capacity"] = capacity(folder / "bundle", ids, folder, seconds)
                doc["capacity"]["open_loop"] = open_loop_capacity(folder / "bundle", ids, folder,
                                                                  doc["capacity"]["requests_per_s"], seconds)
            elif part == "soak":
                if "capacity" not in doc and args.rate is None:
                    raise SystemExit("the soak's rate comes from the capacity part: run --parts capacity first, or give --rate")
                rate = args.rate or soak_rate(doc["capacity"])
                doc["soak"] = soak(folder / "bundle", ids, folder, rate, minutes, args.seed)
                doc["soak"]["share_of_capacity"] = round(rate / doc["capacity"]["requests_per_s"], 3) if "capacity" in doc else None
                sustained = doc.get("capacity", {}).get("open_loop", {}).get("requests_per_s")
                doc["soak"]["share_of_sustained"] = round(rate / sustained, 3) if sustained else None
                plot(doc["soak"])
            elif part == "faults":
                doc["faults"] = faults(folder / "bundle", ids, folder)
            else:
                raise SystemExit(f"unknown part {part!r}; known: capacity, soak, faults")
            doc[part + "_provenance"] = started
            atomic_write_text(RESULTS, json.dumps(doc, indent=1))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    atomic_write_text(HERE / "RELIABILITY.md", markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
