"""A real server process, killed with SIGKILL during a stream of writes: every acknowledged event survives."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import httpx
import pytest

from omnirec.bundle import Bundle
from omnirec.models import Markov
from omnirec.serve.store import open_store
from tests.serve.conftest import free_port, start_server

KEY = "durability-key"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_during_writes_loses_no_acknowledged_event(tmp_path, tiny_dataset, tiny_split):
    bundle, store = tmp_path / "bundle", tmp_path / "events.db"
    Bundle.create(Markov().fit(tiny_split.train_data()), tiny_dataset).save(bundle)
    port = free_port()
    server = start_server(bundle, store, port, KEY)
    acked: list[str] = []
    items = tiny_dataset.items.labels

    def write() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}, timeout=5) as client:
            for i in range(100_000):
                event = {"user": f"u{i % 7}", "item": items[i % len(items)], "type": "click", "key": f"evt-{i}"}
                try:
                    r = client.post("/feedback", json={"events": [event]})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    acked.append(event["key"])

    writers = [threading.Thread(target=write) for _ in range(1)]
    for w in writers:
        w.start()
    while len(acked) < 200 and server.poll() is None:
        time.sleep(0.01)
    os.kill(server.pid, signal.SIGKILL)  # mid-stream: writes are in flight
    server.wait()
    for w in writers:
        w.join()
    stored = {e.key for e in open_store(str(store)).all_events()}
    assert len(acked) >= 200
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged events lost"
    restarted = start_server(bundle, store, port, KEY)  # and the server comes back on the same store
    try:
        body = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"user": "u1", "k": 3}, timeout=10).json()
        assert len(body["items"]) == 3
    finally:
        restarted.kill()
        restarted.wait()
