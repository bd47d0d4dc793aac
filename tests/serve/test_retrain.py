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
