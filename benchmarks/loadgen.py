"""The load generator the serving benchmarks share (`serve_load.py`, `reliability.py`): `omnirec serve` in a
process of its own, an open-loop Poisson generator without coordinated omission, and `wrk` for closed-loop
saturation.

Open loop: requests are sent on a schedule fixed in advance (Poisson arrivals) whatever the server does, and
each request's latency is counted from its *scheduled* send time. A server that stalls therefore shows as
latency of every request that should have gone out meanwhile, not as fewer requests (coordinated
omission). How late the generator itself was (actual send - scheduled send) is kept per request, so a
report can show that the latency is the server's and not the generator's.

>>> at = poisson_schedule(100.0, 2.0, np.random.default_rng(0))
>>> bool(at.size > 100 and at[-1] < 2.0 and (np.diff(at) > 0).all())
True
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np

WRK_MISSING = "wrk is not installed: it measures saturation. Install the Debian package `wrk` (apt-get install -y wrk)."


# ---- the server ------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle: Path, store: str, log: Path, workers: int = 1, wait_s: float = 180,
                 api_key: str | None = None) -> tuple[subprocess.Popen, str, float]:
    """`omnirec serve` in a session of its own, once /health answers: (process, base URL, seconds to start).
    Several workers log at INFO, so the log shows uvicorn replacing workers it judged hung."""
    port = free_port()
    command = [sys.executable, "-m", "omnirec.cli", "serve", "--bundle", str(bundle), "--store", store,
               "--port", str(port), "--workers", str(workers)] + (["--quiet"] if workers == 1 else [])
    env = {**os.environ, **({"OMNIREC_API_KEY": api_key} if api_key else {})}
    with open(log, "ab") as sink:
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=sink, start_new_session=True)
    base, start = f"http://127.0.0.1:{port}", time.time()
    while time.time() < start + wait_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base, time.time() - start
        except httpx.HTTPError:
            time.sleep(0.3)
    stop_server(proc)
    raise TimeoutError(f"server did not answer /health within {wait_s:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's whole session (its worker processes too), SIGKILL after 30 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)  # worker processes exit after the supervisor


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmRSS:")))


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- open loop -------------------------------------------------------------------------------------------

class Pool:
    """Keep-alive HTTP/1.1 connections to one server: a request takes an idle connection or opens one.
    Cheaper per request than a general client, so the generator keeps its schedule at a few hundred per second.
    Like any client it drops connections idle for over 2 s (the server closes them at 5 s) and sends a request
    again, once, on a fresh connection when a reused one turns out closed before any answer came."""

    def __init__(self, port: int):
        self.port, self.idle = port, []

    async def post(self, path: str, body: bytes, headers: str = "") -> tuple[int, bytes]:
        """(status, body of the answer)."""
        request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n{headers}\r\n").encode() + body
        now = time.monotonic()
        while self.idle:
            reader, writer, used = self.idle.pop()
            if now - used < 2.0:
                try:
                    return await self._exchange(reader, writer, request)
                except ConnectionError:
                    break  # closed by the server while idle: the request never reached it
            writer.close()
        return await self._exchange(*await asyncio.open_connection("127.0.0.1", self.port), request)

    def close(self) -> None:
        """Close the idle connections (those in use close when their answer fails)."""
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
        try:
            writer.write(request)
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionResetError("closed before answering")
            status, length, close = int(status_line.split()[1]), 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                length = int(value) if name.lower() == b"content-length" else length
                close = close or (name.lower() == b"connection" and b"close" in value.lower())
            answer = await reader.readexactly(length)
        except BaseException:
            writer.close()  # a half-read answer: the connection cannot be reused
            raise
        if close:
            writer.close()
        else:
            self.idle.append((reader, writer, time.monotonic()))
        return status, answer


def poisson_schedule(rate: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Send times (seconds from the start, increasing, all < `seconds`) of a Poisson process of `rate` per second:
    exponential gaps of mean 1 / rate.

    >>> at = poisson_schedule(200.0, 50.0, np.random.default_rng(1))
    >>> at.size, round(float(np.diff(at).mean() * 200), 2)  # about 200 x 50 sends, mean gap 1 / 200 s
    (9985, 1.0)
    """
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be positive, got rate={rate}, seconds={seconds}")
    at = np.cumsum(rng.exponential(1.0 / rate, int(rate * seconds * 1.2) + 100))
    while at[-1] < seconds:  # rarely: the draw fell short of the duration
        at = np.concatenate([at, at[-1] + np.cumsum(rng.exponential(1.0 / rate, int(rate * seconds * 0.2) + 100))])
    return at[at < seconds]


class Sent(NamedTuple):
    """What an open-loop run measured, one entry per scheduled request (seconds; loop clock)."""

    latency: np.ndarray  # (N,) answer time - scheduled send time: includes any lateness of the generator
    lag: np.ndarray  # (N,) actual send time - scheduled send time: the generator's own lateness
    status: np.ndarray  # (N,) HTTP status; -1 where no answer came (connection error or timeout)
    failures: Counter  # exception name -> requests that got no answer
    done: np.ndarray  # (N,) when each answer (or failure) came, seconds after the start


async def run_schedule(at: np.ndarray, send: Callable[[int], Awaitable[int]], start: float | None = None,
                       timeout: float = 30.0) -> Sent:
    """Call `send(i)` (returning an HTTP status) at loop time `start + at[i]` for every i, open loop: a request
    never waits for an earlier answer. Latency is counted from the scheduled time, not from when the coroutine
    got to run. `start`: a time of the running loop (default: 0.2 s from now)."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2 if start is None else start
    latency, lag, done = (np.full(len(at), np.nan) for _ in range(3))
    status, failures, tasks = np.zeros(len(at), dtype=np.int32), Counter(), set()

    async def one(i: int, due: float) -> None:
        lag[i] = loop.time() - due
        try:
            status[i] = await asyncio.wait_for(send(i), timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
            status[i] = -1
            failures[type(error).__name__] += 1
        now = loop.time()
        latency[i], done[i] = now - due, now - start

    for i, offset in enumerate(at):
        if (delay := start + offset - loop.time()) > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, start + float(offset)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return Sent(latency, lag, status, failures, done)


def pcts(ms: np.ndarray, qs: Sequence[float] = (50, 99)) -> dict:
    """Count and percentiles of `ms`, keys `p{q}_ms` rounded to 0.01 (None when `ms` is empty).

    >>> pcts(np.arange(1, 101.0), (50, 99.9))
    {'n': 100, 'p50_ms': 50.5, 'p99.9_ms': 99.9}
    """
    ms = np.asarray(ms, dtype=float)
    return {"n": int(ms.size), **{f"p{q:g}_ms": round(float(np.percentile(ms, q)), 2) if ms.size else None for q in qs}}


def sustained_rate(steps: Sequence[dict], p99_limit_ms: float) -> float | None:
    """The highest offered rate of an open-loop ladder that the server kept up with: no errors and p99 (from
    the scheduled send time) at most `p99_limit_ms`, with every lower step kept up with as well (a step
    that passes above a failed one is luck, not capacity). None when even the first step failed.

    >>> steps = [{"rate_per_s": 100, "errors": 0, "p99_ms": 20.0}, {"rate_per_s": 150, "errors": 0, "p99_ms": 80.0},
    ...          {"rate_per_s": 200, "errors": 3, "p99_ms": 900.0}, {"rate_per_s": 250, "errors": 0, "p99_ms": 60.0}]
    >>> sustained_rate(steps, 500.0)
    150
    """
    best = None
    for step in sorted(steps, key=lambda s: s["rate_per_s"]):
        if step["errors"] or step["p99_ms"] is None or step["p99_ms"] > p99_limit_ms:
            break
        best = step["rate_per_s"]
    return best


# ---- wrk (closed loop) -----------------------------------------------------------------------------------

def wrk_version() -> str:
    """`wrk -v`'s first line; SystemExit naming the package when wrk is absent."""
    if shutil.which("wrk") is None:
        raise SystemExit(WRK_MISSING)
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)  # exits 1 after printing its version
    return (out.stdout or out.stderr).splitlines()[0].split(" Copyright")[0].strip()


def _ms(value: str, unit: str) -> float:
    return round(float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit], 3)


def parse_wrk(out: str) -> dict:
    """Figures of `wrk --latency` output: requests, requests/s, latency percentiles (ms), errors by kind, and
    `wrong item count: N` where the Lua script's done() printed it."""
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    wrong = re.search(r"wrong item count: (\d+)", out)
    latency = re.search(r"^\s+Latency\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s|m)\s", out, re.M)
    pct = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()) if errors else (0, 0, 0, 0)))
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(socket_errors.values()), "socket_errors_by_kind": socket_errors,
            **({"wrong_item_count": int(wrong.group(1))} if wrong else {}),
            **{f"p{p}_ms": pct.get(p) for p in ("50", "75", "90", "99")},
            "max_ms": _ms(*latency.groups()) if latency else None}


def run_wrk(script: Path, base: str, connections: int, seconds: float, *script_args: str) -> dict:
    """One closed-loop wrk run (one thread; each connection sends its next request when the last is answered)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), base]
    out = subprocess.run(command + (["--", *script_args] if script_args else []), capture_output=True, text=True, check=True)
    return {"connections": connections, "seconds": seconds, **parse_wrk(out.stdout)}
