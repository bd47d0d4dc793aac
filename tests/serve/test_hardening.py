"""Regression tests for what a new user's trial of the server found: each is named after its bug."""

from __future__ import annotations

import json
import re
import select
import socket
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from omnirec.bundle import Bundle
from omnirec.data.split import split_dataset
from omnirec.models import Markov
from omnirec.serve.app import ServeConfig, create_app
from omnirec.serve.retrain import with_feedback
from tests.serve.conftest import free_port, start_server

KEY = "hardening-key-0123"
WRITE = {"X-API-Key": KEY}
GONE = "zq-deleted-user-7731"  # an id no other string contains, so a byte search finds only it


@pytest.fixture(scope="module")
def bundle(tiny_dataset, tiny_split, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hardening") / "markov"
    Bundle.create(Markov().fit(tiny_split.train_data()), tiny_dataset).save(folder)
    return folder


@pytest.fixture
def client(bundle, tmp_path):
    app = create_app(ServeConfig(bundle=str(bundle), store=str(tmp_path / "store" / "events.db"), api_key=KEY))
    with TestClient(app) as c:
        yield c


def test_a_deleted_user_does_not_come_back(client, tiny_dataset, tmp_path):
    items = tiny_dataset.items.labels
    base_user = tiny_dataset.users.labels[5]
    for user in (GONE, base_user):
        events = [{"user": user, "item": items[i], "key": f"{user}-{i}"} for i in (3, 4, 5)]
        assert client.post("/feedback", json={"events": events}, headers=WRITE).status_code == 200
        assert client.delete(f"/users/{user}", headers=WRITE).status_code == 200
        again = client.post("/feedback", json={"events": [{"user": user, "item": items[9]}]}, headers=WRITE)
        assert again.status_code == 410 and "deleted" in again.json()["detail"]
        body = client.post("/recommend", json={"user": user, "k": 5}).json()
        assert body["personalized"] is False and "deleted" in body["reason"] and body["history"] == []
        assert all(row["sources"] == ["popular"] for row in body["items"])
    service = client.app.state.service
    data, summary = with_feedback(tiny_dataset, service.store)  # what `omnirec retrain` trains on
    assert summary["deleted_users"] == 1 and GONE not in data.users and base_user not in data.users
    retrained = tmp_path / "retrained"
    Bundle.create(Markov().fit(split_dataset(data, "loo", short_users="train").train_data()), data).save(retrained)
    assert base_user not in json.loads((retrained / "users.json").read_text())["labels"]
    store_files = [p for p in (tmp_path / "store").iterdir() if p.is_file()]
    assert store_files, "the store wrote no file"
    for path in [*retrained.rglob("*"), *store_files]:
        if path.is_file():
            assert GONE.encode() not in path.read_bytes(), f"{path.name} still holds the deleted id"


def test_idempotency_key_reused_with_a_different_payload_answers_409(client, tiny_dataset):
    items = tiny_dataset.items.labels
    event = {"user": "u-409", "item": items[1], "key": "order-17"}
    assert client.post("/feedback", json={"events": [event]}, headers=WRITE).json() == {"stored": 1, "duplicates": 0}
    assert client.post("/feedback", json={"events": [event]}, headers=WRITE).json() == {"stored": 0, "duplicates": 1}
    r = client.post("/feedback", json={"events": [{**event, "item": items[2]}]}, headers=WRITE)
    assert r.status_code == 409 and "order-17" in r.json()["detail"]
    assert [e.item for e in client.app.state.service.store.events_of("u-409")] == [items[1]]


def test_unknown_user_gets_the_fallback_and_is_told(client, tiny_dataset):
    body = client.post("/recommend", json={"user": "never-seen", "k": 4}).json()
    assert body["personalized"] is False and "never-seen" in body["reason"] and "not known" in body["reason"]
    assert len(body["items"]) == 4 and all(row["sources"] == ["popular"] for row in body["items"])
    known = client.post("/recommend", json={"user": tiny_dataset.users.labels[0], "k": 4}).json()
    assert known["personalized"] is True and known["reason"] is None and known["history"]


def test_fallback_order_follows_its_reasons(client):
    body = client.post("/recommend", json={"k": 20}).json()  # anonymous: ranked by nothing but popularity
    counts = [float(re.search(r"\(([\d.]+) interactions\)", row["reason"]).group(1)) for row in body["items"]]
    assert len(counts) == 20 and counts == sorted(counts, reverse=True)


def test_titles_in_lists_reasons_and_item_pages(client, tiny_dataset):
    user = tiny_dataset.users.labels[2]
    body = client.post("/recommend", json={"user": user, "k": 10}).json()
    assert all(row["title"] for row in body["items"]) and all(seen["title"] for seen in body["history"])
    titles = set(tiny_dataset.item_titles[1:])
    cited = [t for row in body["items"] for t in re.findall(r"“([^”]+)”", row["reason"])]
    assert cited and set(cited) <= titles  # reasons name titles, never bare ids
    item = tiny_dataset.items.labels[3]
    info = client.get(f"/items/{item}").json()
    assert info["title"] == tiny_dataset.item_titles[tiny_dataset.items.encode([item])[0]]
    page = client.get(f"/items/{item}/similar", params={"k": 5}).json()
    assert page["items"] and all("this item" in row["reason"] for row in page["items"])
    assert not any("which you interacted with" in row["reason"] for row in page["items"])


def test_docs_load_offline_and_are_labelled_in_metrics(client):
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/docs/static/") for s in sources), sources
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert client.get(f"/docs/static/{name}").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    metrics = client.get("/metrics").text
    for path in ("/docs", "/docs/static", "/openapi.json"):
        assert f'path="{path}"' in metrics
    assert 'path="unmatched"' not in metrics


def test_admin_key_says_whether_a_key_is_right(client):
    assert client.get("/admin/key", headers=WRITE).status_code == 204
    assert client.get("/admin/key", headers={"X-API-Key": "wrong"}).status_code == 401


# -- a real server process: limits that only show on the wire -------------------------------------------
@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    port = free_port()
    proc = start_server(bundle, tmp_path_factory.mktemp("served") / "events.db", port, KEY)
    yield port, proc
    proc.kill()
    proc.wait()


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("no /proc: cannot read the server's memory")
    return int(re.search(r"VmRSS:\s+(\d+)", status.read_text()).group(1))


def status_line(sock: socket.socket) -> str:
    sock.settimeout(10)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_a_chunked_body_is_limited_as_it_streams(server):
    port, proc = server
    before = rss_kib(proc.pid)
    chunk, sent, answer = b"[" + b" " * 65_535, 0, ""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while sent < 100 * 2**20:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                if select.select([sock], [], [], 0)[0]:  # the server answered before the body ended
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = status_line(sock)
    assert answer.startswith("HTTP/1.1 413"), answer
    assert sent < 100 * 2**20  # it stopped reading long before the 100 MB were sent
    time.sleep(0.2)
    assert rss_kib(proc.pid) - before < 20 * 1024


def test_a_declared_length_over_the_limit_is_refused_before_reading(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 104857600\r\n\r\n{")
        assert status_line(sock).startswith("HTTP/1.1 413")


def test_an_oversized_request_head_is_refused(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n")
        answer = status_line(sock)
    assert answer == "" or answer.split()[1] in ("400", "413", "431"), answer  # refused or closed, never served
