"""`omnirec retrain`: base data + stored feedback, deleted users left out, and the swap into a server."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from omnirec.bundle import Bundle
from omnirec.cli import main
from omnirec.serve.app import ServeConfig, create_app
from omnirec.serve.store import Event, open_store


def test_retrain_adds_feedback_and_drops_deleted_users(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    lines = [f"user{u} " + " ".join(f"it{(int(rng.integers(20)) + j) % 20}" for j in range(6)) for u in range(30)]
    (tmp_path / "data.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "train.toml").write_text(f'model = "itemknn"\nout = "{tmp_path / "v1"}"\n'
                                         f'[data]\npath = "{tmp_path / "data.txt"}"\nformat = "seq"\n')
    assert main(["train", "--config", str(tmp_path / "train.toml"), "--quiet"]) == 0
    store = open_store(str(tmp_path / "events.db"))
    store.add([Event("newcomer", "it3", "purchase", time=10**9), Event("newcomer", "it4", "click", time=10**9 + 1),
               Event("newcomer", "it5", "skip", time=10**9 + 2)])
    store.delete_user("user0")
    store.close()
    app = create_app(ServeConfig(bundle=str(tmp_path / "v1"), store=str(tmp_path / "events.db"), api_key="k"))
    with TestClient(app) as client:
        monkeypatch.setenv("OMNIREC_API_KEY", "k")
        monkeypatch.setattr("omnirec.serve.retrain.urllib.request.urlopen", _via(client))
        assert main(["retrain", "--config", str(tmp_path / "train.toml"), "--store", str(tmp_path / "events.db"),
                     "--out", str(tmp_path / "v2"), "--reload", "http://testserver", "--quiet"]) == 0
        assert client.get("/health").json()["users"] == 30  # 30 - user0 + newcomer, served now
    v2 = Bundle.load(tmp_path / "v2")
    assert "user0" not in v2.users and "newcomer" in v2.users
    u = v2.users.encode(["newcomer"])[0]
    assert v2.items.decode(v2.histories.items[v2.histories.indptr[u] : v2.histories.indptr[u + 1]]) == ["it3", "it4"]
    assert v2.meta["retrain"]["events"] == 2 and v2.meta["retrain"]["deleted_users"] == 1


def _via(client):
    """urlopen replaced by the test client, so the reload request reaches the in-process app."""
    import io
    from contextlib import contextmanager

    @contextmanager
    def urlopen(request, timeout=None):  # noqa: ARG001
        r = client.request(request.get_method(), request.full_url.removeprefix("http://testserver"), content=request.data,
                           headers=dict(request.header_items()))
        assert r.status_code in (200, 204), r.text
        answer = io.BytesIO(r.content)
        answer.status = r.status_code
        yield answer

    return urlopen


def test_retrain_from_the_bundle_alone_keeps_the_run_and_the_user_attributes(tmp_path):
    """A bundle holds its run config and what the run read, so `retrain --bundle` needs no TOML and no
    data file: the new bundle has the same run, every user keeps their attributes (under new dense ids),
    and two-tower's user tower reads them again."""
    from omnirec.data.split import split_dataset
    from omnirec.run import RunConfig, train_bundle
    from tests.models.test_collaborative import _grouped_data

    ds = _grouped_data()
    run = RunConfig("twotower", str(tmp_path / "v1"), models={"twotower": {
        "d_model": 8, "hidden": 16, "item_text": False, "train": {"epochs": 2, "batch_size": 128, "progress": False}}})
    bundle, _ = train_bundle(run, dataset=ds, split=split_dataset(ds, "loo", short_users="train"), progress=False)
    bundle.save(run.out)
    open_store(str(tmp_path / "events.db")).close()
    store = open_store(str(tmp_path / "events.db"))
    store.delete_user("2")
    store.close()
    assert main(["retrain", "--bundle", run.out, "--store", str(tmp_path / "events.db"), "--out", str(tmp_path / "v2"),
                 "--quiet"]) == 0
    v1, v2 = Bundle.load(run.out), Bundle.load(tmp_path / "v2")
    assert v2.meta["run"] == {**v1.meta["run"], "out": str(tmp_path / "v2")}
    assert "2" not in v2.users and len(v2.users) == len(v1.users) - 1
    before, after = v1.user_attributes, v2.user_attributes
    assert after is not None and after.names == before.names and after.vocab == before.vocab
    labels = [u for u in v1.users.labels if u != "2"]
    np.testing.assert_array_equal(after.codes[v2.users.encode(labels)], before.codes[v1.users.encode(labels)])
    np.testing.assert_array_equal(v2.model.attributes.codes, after.codes)  # the model was trained with them
