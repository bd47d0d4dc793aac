"""The HTTP API: recommendations with reasons, feedback used at once, deletion, auth, bounds, reload."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from omnirec.bundle import Bundle
from omnirec.models import ItemKNN, Markov
from omnirec.serve.app import ServeConfig, create_app
from omnirec.serve.store import open_store

KEY = "test-key-0123456789"
WRITE = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def bundles(tiny_dataset, tiny_split, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundles")
    Bundle.create(Markov().fit(tiny_split.train_data()), tiny_dataset).save(folder / "markov")
    Bundle.create(ItemKNN().fit(tiny_split.train_data()), tiny_dataset).save(folder / "itemknn")
    return folder


@pytest.fixture
def client(bundles, tmp_path):
    app = create_app(ServeConfig(bundle=str(bundles / "markov"), store=str(tmp_path / "events.db"), api_key=KEY))
    with TestClient(app) as c:
        yield c


def test_recommend_lists_items_with_reasons(client, tiny_dataset):
    user = tiny_dataset.users.labels[0]
    r = client.post("/recommend", json={"user": user, "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "markov" and len(body["items"]) == 5
    assert all(row["reason"] and row["sources"] for row in body["items"])
    anonymous = client.post("/recommend", json={"k": 3}).json()  # no history: the fallback chain
    assert len(anonymous["items"]) == 3 and all(row["sources"] == ["popular"] for row in anonymous["items"])


def test_feedback_counts_at_once_and_is_idempotent(client, tiny_dataset):
    user = tiny_dataset.users.labels[1]
    before = [row["item"] for row in client.post("/recommend", json={"user": user, "k": 10}).json()["items"]]
    clicked = before[0]
    event = {"user": user, "item": clicked, "type": "click", "key": "evt-1"}
    r = client.post("/feedback", json={"events": [event]}, headers=WRITE)
    assert r.json() == {"stored": 1, "duplicates": 0}
    assert client.post("/feedback", json={"events": [event]}, headers=WRITE).json() == {"stored": 0, "duplicates": 1}
    after = [row["item"] for row in client.post("/recommend", json={"user": user, "k": 10}).json()["items"]]
    assert clicked not in after and after != before  # now the last item of the history
    bundle = client.app.state.service.current.bundle  # the same list from the full history, recomputed
    u = bundle.users.encode([user])[0]
    history = bundle.items.decode(bundle.histories.items[bundle.histories.indptr[u] : bundle.histories.indptr[u + 1]])
    recomputed = client.post("/recommend", json={"items": [*history, clicked], "k": 10}).json()
    assert after == [row["item"] for row in recomputed["items"]]


def test_a_new_user_is_served_from_fresh_feedback(client, tiny_dataset):
    item = tiny_dataset.items.labels[5]
    client.post("/feedback", json={"events": [{"user": "brand-new", "item": item}]}, headers=WRITE)
    body = client.post("/recommend", json={"user": "brand-new", "k": 5}).json()
    assert item not in [row["item"] for row in body["items"]]
    assert all("model" in row["sources"] for row in body["items"])  # the model read the one fresh event
    title = client.get(f"/items/{item}").json()["title"]
    assert title and any(f"“{title}”" in row["reason"] for row in body["items"])  # and reasons cite it by title


def test_writes_need_the_key(client, tiny_dataset):
    event = {"events": [{"user": "u", "item": tiny_dataset.items.labels[0]}]}
    assert client.post("/feedback", json=event).status_code == 401
    assert client.post("/feedback", json=event, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.delete("/users/u").status_code == 401
    assert client.post("/admin/reload").status_code == 401


def test_bad_requests_get_clear_4xx(client):
    assert client.post("/recommend", json={"k": 0}).status_code == 422
    assert client.post("/recommend", json={"k": 10_000}).status_code == 422
    assert client.post("/recommend", json={"k": 3, "nonsense": 1}).status_code == 422
    r = client.post("/recommend", json={"scenario": "nope"})
    assert r.status_code == 404 and "known: home, similar" in r.json()["detail"]
    assert client.get("/items/no-such-item").status_code == 404
    big = client.post("/recommend", content=b"{" + b" " * 300_000 + b"}", headers={"content-type": "application/json"})
    assert big.status_code == 413
    r = client.post("/feedback", json={"events": [{"user": "u", "item": "x", "type": "stare"}]}, headers=WRITE)
    assert r.status_code == 422 and "Traceback" not in r.text


def test_delete_user_forgets_everything(client, tiny_dataset, tmp_path):
    user = tiny_dataset.users.labels[2]
    items = tiny_dataset.items.labels
    client.post("/feedback", json={"events": [{"user": user, "item": items[7]}, {"user": user, "item": items[8]}]}, headers=WRITE)
    r = client.delete(f"/users/{user}", headers=WRITE)
    assert r.json() == {"user": user, "events_removed": 2}
    body = client.post("/recommend", json={"user": user, "k": 5}).json()
    assert all(row["sources"] == ["popular"] for row in body["items"])  # no history left: the fallback
    service = client.app.state.service
    assert service.store.is_deleted(user) and service.store.events_of(user) == []


def test_items_similar_health_metrics_openapi(client, tiny_dataset):
    item = tiny_dataset.items.labels[3]
    info = client.get(f"/items/{item}").json()
    assert info["item"] == item and info["interactions"] > 0 and info["text"]
    similar = client.get(f"/items/{item}/similar", params={"k": 4}).json()
    assert len(similar["items"]) == 4 and item not in [row["item"] for row in similar["items"]]
    assert client.get("/health").json()["status"] == "ok"
    metrics = client.get("/metrics").text
    assert "omnirec_requests_total" in metrics and "omnirec_request_seconds_bucket" in metrics
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/feedback", "/users/{user_id}", "/admin/reload", "/health"} <= set(paths)
    assert "omnirec" in client.get("/").text


def test_reload_swaps_the_model_with_no_failed_request(client, bundles, tiny_dataset):
    user = tiny_dataset.users.labels[0]
    failures, answers = [], []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            r = client.post("/recommend", json={"user": user, "k": 5})
            (answers if r.status_code == 200 else failures).append(r.json().get("model") if r.status_code == 200 else r.status_code)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    r = client.post("/admin/reload", json={"bundle": str(bundles / "itemknn")}, headers=WRITE)
    stop.set()
    for t in threads:
        t.join()
    assert r.status_code == 200 and r.json()["model"] == "itemknn"
    assert failures == [] and len(answers) > 0
    assert client.post("/recommend", json={"user": user}).json()["model"] == "itemknn"
    bad = client.post("/admin/reload", json={"bundle": "/no/such/folder"}, headers=WRITE)
    assert bad.status_code == 404 and client.get("/health").json()["model"] == "itemknn"


def test_writes_refused_without_a_configured_key(bundles, tmp_path, tiny_dataset):
    app = create_app(ServeConfig(bundle=str(bundles / "markov"), store=str(tmp_path / "e.db")))
    with TestClient(app) as c:
        r = c.post("/feedback", json={"events": [{"user": "u", "item": tiny_dataset.items.labels[0]}]}, headers=WRITE)
        assert r.status_code == 403


def test_server_processes_sharing_a_store_follow_reloads_and_deletions(bundles, tmp_path, tiny_dataset):
    from omnirec.serve.service import Service

    url = str(tmp_path / "shared.db")
    a = Service(bundles / "markov", open_store(url), follow_every=0.0)
    b = Service(bundles / "markov", open_store(url), follow_every=0.0)
    user = tiny_dataset.users.labels[4]
    assert b.recommend(user, k=3)["items"][0]["sources"] != ["popular"]
    a.delete_user(user)  # deleted through one process: the other forgets the user at once
    assert all(row["sources"] == ["popular"] for row in b.recommend(user, k=3)["items"])
    a.reload(bundles / "itemknn")
    loading = b.follow()  # b sees the new bundle in the store and loads it in the background
    loading.join()
    assert b.recommend(user, k=3)["model"] == "itemknn"
    c = Service(bundles / "markov", open_store(url))  # a process started later serves what the others serve
    assert c.current.bundle.model.name == "itemknn"


def test_a_vanished_shared_bundle_falls_back_to_the_given_one(bundles, tmp_path):
    from omnirec.serve.service import Service

    store = open_store(str(tmp_path / "s.db"))
    store.set_setting("bundle", str(tmp_path / "removed-since"))
    assert Service(bundles / "markov", store).current.bundle.model.name == "markov"
