"""New items while serving: added with their text, recommended at once, kept in the store, refused where
the model cannot score them."""

from __future__ import annotations

import polars as pl
import pytest

from omnirec.bundle import Bundle
from omnirec.data.dataset import Dataset
from omnirec.data.split import split_dataset
from omnirec.models import SASRec, TfidfContent
from omnirec.models.sasrec import SASRecConfig
from omnirec.serve.service import ItemExists, Service, open_store
from omnirec.serve.store import Event
from omnirec.train.loop import TrainConfig

TOPICS = ("garden hose nozzle", "espresso coffee grinder", "wool winter socks", "acrylic paint brushes")


def catalogue() -> Dataset:
    """Four topics of five items each; every user keeps to one topic."""
    items = [f"i{t}{k}" for t in range(4) for k in range(5)]
    texts = [f"{TOPICS[t]} model {k}" for t in range(4) for k in range(5)]
    users, bought, times = [], [], []
    for u in range(40):
        t = u % 4
        for step, k in enumerate((u // 4 + j) % 5 for j in range(4)):
            users.append(f"u{u}"), bought.append(f"i{t}{k}"), times.append(step)
    inter = pl.DataFrame({"user_id": users, "item_id": bought, "timestamp": times})
    return Dataset.from_frames(inter, pl.DataFrame({"item_id": items, "text": texts}), name="topics")


@pytest.fixture
def service(tmp_path) -> Service:
    ds = catalogue()
    model = TfidfContent().fit(split_dataset(ds).train_data(ds.item_text))
    Bundle.create(model, ds).save(tmp_path / "b")
    return Service(tmp_path / "b", store=open_store(str(tmp_path / "events.db")))


def test_an_added_item_is_recommended_to_a_user_whose_history_is_about_it(service, tmp_path) -> None:
    answer = service.add_item("new-nozzle", "garden hose nozzle model 9", title="Nozzle 9")
    assert answer["items"] == 21
    listed = [r["item"] for r in service.recommend(user="u0", k=3)["items"]]  # u0 buys garden hose nozzles
    assert "new-nozzle" in listed
    assert service.item("new-nozzle")["title"] == "Nozzle 9"
    again = Service(tmp_path / "b", store=open_store(str(tmp_path / "events.db")))  # another process, same store
    assert "new-nozzle" in [r["item"] for r in again.recommend(user="u0", k=3)["items"]]


def test_an_item_already_in_the_catalogue_or_without_text_is_refused(service) -> None:
    with pytest.raises(ItemExists):
        service.add_item("i00", "garden hose nozzle model 0")
    with pytest.raises(ValueError, match="needs text"):
        service.add_item("blank", "  ")


def test_a_model_that_cannot_score_new_items_refuses_them(tmp_path) -> None:
    ds = catalogue()
    config = SASRecConfig(d_model=8, train=TrainConfig(epochs=1, progress=False))
    model = SASRec(config).fit(split_dataset(ds).train_data())
    Bundle.create(model, ds).save(tmp_path / "b")
    service = Service(tmp_path / "b", store=open_store(":memory:"))
    with pytest.raises(ItemExists, match="cannot take new items"):
        service.add_item("new", "garden hose nozzle")


def test_put_items_needs_the_key_and_says_what_went_wrong(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from omnirec.serve.app import ServeConfig, create_app

    ds = catalogue()
    Bundle.create(TfidfContent().fit(split_dataset(ds).train_data(ds.item_text)), ds).save(tmp_path / "b")
    key = "test-key-0123456789"
    app = create_app(ServeConfig(bundle=str(tmp_path / "b"), store=str(tmp_path / "events.db"), api_key=key))
    with TestClient(app) as client:
        body = {"text": "espresso coffee grinder model 7", "title": "Grinder 7"}
        assert client.put("/items/new-grinder", json=body).status_code == 401
        r = client.put("/items/new-grinder", json=body, headers={"X-API-Key": key})
        assert r.status_code == 200 and r.json() == {"item": "new-grinder", "items": 21}
        assert client.put("/items/new-grinder", json=body, headers={"X-API-Key": key}).status_code == 409
        assert client.put("/items/x", json={"text": ""}, headers={"X-API-Key": key}).status_code == 422
        listed = client.post("/recommend", json={"user": "u1", "k": 3}).json()["items"]  # u1 grinds coffee
        assert "new-grinder" in [r["item"] for r in listed]


def test_a_retraining_keeps_the_items_added_while_serving(service, tmp_path) -> None:
    from omnirec.serve.retrain import retrain_data

    service.add_item("new-socks", "wool winter socks model 8")
    service.feedback([Event("u2", "new-socks", time=99)])  # u2 buys socks
    dataset, _, _ = retrain_data(Bundle.load(tmp_path / "b").dataset(), str(tmp_path / "events.db"))
    assert "new-socks" in dataset.items
    assert dataset.item_text[int(dataset.items.encode(["new-socks"])[0])] == "wool winter socks model 8"


def test_the_new_items_source_proposes_an_added_item_by_its_text(tmp_path) -> None:
    from omnirec.pipeline.scenario import ScenarioConfig, source

    ds = catalogue()
    Bundle.create(TfidfContent().fit(split_dataset(ds).train_data(ds.item_text)), ds).save(tmp_path / "b")
    fresh = ScenarioConfig(sources=(source("new_items", n=5),), k=3, fallback=())
    service = Service(tmp_path / "b", store=open_store(":memory:"), scenarios={"fresh": fresh})
    assert service.recommend(user="u3", scenario="fresh", k=3)["items"] == []  # no item is new yet
    service.add_item("new-socks", "wool winter socks model 8")
    service.add_item("new-brush", "acrylic paint brushes model 8")
    listed = service.recommend(user="u3", scenario="fresh", k=3)["items"]  # u3 paints
    assert [r["item"] for r in listed] == ["new-brush", "new-socks"]
    assert listed[0]["sources"] == ["new_items"]
    assert listed[0]["reason"].startswith("new item; its description is close to “i3")


def test_an_added_item_without_interactions_outlives_a_retraining(service, tmp_path) -> None:
    from omnirec.serve.retrain import retrain_data

    service.add_item("new-grinder", "espresso coffee grinder model 8")
    dataset, split, _ = retrain_data(Bundle.load(tmp_path / "b").dataset(), str(tmp_path / "events.db"))
    assert "new-grinder" not in dataset.items  # nobody has bought it: the retrained model does not know it
    model = TfidfContent().fit(split.train_data(dataset.item_text))
    Bundle.create(model, dataset).save(tmp_path / "b2")
    service.reload(tmp_path / "b2")  # the store still holds the item: it comes back, scored from its text
    assert "new-grinder" in [r["item"] for r in service.recommend(user="u1", k=3)["items"]]  # u1 grinds coffee
