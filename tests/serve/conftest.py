"""A real PostgreSQL server for the store tests, started when PostgreSQL is installed (skipped otherwise)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import pytest


def _tool(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """postgresql:// URL of a throw-away server (a fresh cluster in a temporary folder)."""
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (no initdb / pg_ctl): PostgreSQL store tests skipped")
    pytest.importorskip("psycopg", reason="psycopg is not installed: PostgreSQL store tests skipped")
    base = tempfile.mkdtemp(prefix="omnirec-pg-")
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the `postgres` system user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(base, "data"), free_port()
    subprocess.run([*prefix, initdb, "-D", data, "-A", "trust", "-U", "omnirec", "--no-sync"], check=True,
                   capture_output=True)
    subprocess.run([*prefix, pg_ctl, "-D", data, "-w", "-l", os.path.join(base, "log"), "-o",
                    f"-p {port} -k {base} -c listen_addresses='' -c fsync=off", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://omnirec@/postgres?host={base}&port={port}"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def start_server(bundle, store, port: int, api_key: str) -> subprocess.Popen:
    """`omnirec serve` in a process of its own, once /health answers."""
    env = {**os.environ, "OMNIREC_API_KEY": api_key}
    proc = subprocess.Popen([sys.executable, "-m", "omnirec.cli", "serve", "--bundle", str(bundle), "--store", str(store),
                             "--port", str(port), "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start within 120 s")
