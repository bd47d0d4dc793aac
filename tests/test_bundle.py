"""Bundles: a trained model with its id maps and histories, saved atomically and verified on load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from omnirec.bundle import Bundle
from omnirec.data.dataset import Dataset
from omnirec.data.ids import UnknownIdError
from omnirec.data.split import Split
from omnirec.models.popularity import Popularity
from omnirec.models.sasrec import SASRec, SASRecConfig
from omnirec.train.loop import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sasrec(tiny_split: Split) -> SASRec:
    config = SASRecConfig(d_model=16, n_layers=1, n_heads=1, max_len=10,
                          train=TrainConfig(epochs=2, batch_size=64, progress=False, threads=1))
    return SASRec(config).fit(tiny_split.train_data())


@pytest.fixture
def saved(sasrec: SASRec, tiny_dataset: Dataset, tmp_path) -> tuple[Bundle, object]:
    bundle = Bundle.create(sasrec, tiny_dataset, {"ndcg@10": 0.5}, {"note": "test"})
    bundle.save(tmp_path / "bundle")
    return bundle, tmp_path / "bundle"


def test_a_loaded_bundle_recommends_and_scores_identically(saved, tiny_dataset):
    bundle, folder = saved
    loaded = Bundle.load(folder)
    for user in tiny_dataset.users.labels[:20]:
        assert loaded.recommend(user, k=10) == bundle.recommend(user, k=10)
    batch = loaded.histories.batch(np.arange(1, tiny_dataset.n_users + 1))
    assert torch.equal(loaded.model.score(batch), bundle.model.score(batch))
    assert loaded.users == bundle.users and loaded.items == bundle.items
    assert np.array_equal(loaded.histories.times, bundle.histories.times)
    assert loaded.meta["metrics"] == {"ndcg@10": 0.5} and loaded.meta["note"] == "test"
    assert json.loads((folder / "bundle.json").read_text())["model"] == "sasrec"
    assert loaded.item_titles == tiny_dataset.item_titles and loaded.item_text == tiny_dataset.item_text


def test_titles_are_read_by_dense_id_and_none_where_missing(saved, tiny_dataset):
    _, folder = saved
    loaded = Bundle.load(folder)
    first = int(tiny_dataset.items.encode([tiny_dataset.items.labels[0]])[0])
    assert loaded.title(first) == tiny_dataset.item_titles[first] and loaded.title(first)
    assert loaded.title(0) is None and loaded.title(10**6) is None
    loaded.item_titles = None
    assert loaded.titles([first, 2]) == [None, None]


def test_recommendations_are_labels_outside_the_users_whole_history(saved, tiny_dataset):
    bundle, _ = saved
    frame = tiny_dataset.interactions
    for dense in (1, 7, 42):
        label = tiny_dataset.users.labels[dense - 1]
        seen = set(tiny_dataset.items.decode(frame.filter(frame["user_id"] == dense)["item_id"].to_list()))
        rows = bundle.recommend(label, k=8)
        assert len(rows) == 8 and not seen & {item for item, _ in rows}
        assert [s for _, s in rows] == sorted((s for _, s in rows), reverse=True)


def test_a_changed_file_is_refused_and_named(saved):
    _, folder = saved
    path = folder / "histories.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="histories.npz"):
        Bundle.load(folder)


def test_saving_over_a_bundle_replaces_it_and_leaves_no_temporaries(saved, tiny_split, tiny_dataset):
    _, folder = saved
    (folder / "stale.txt").write_text("from the old bundle")
    Bundle.create(Popularity().fit(tiny_split.train_data()), tiny_dataset).save(folder)
    assert not (folder / "stale.txt").exists()
    assert [p.name for p in folder.parent.iterdir()] == ["bundle"]
    loaded = Bundle.load(folder)
    assert loaded.model.name == "pop" and loaded.meta["metrics"] == {}


def test_a_failed_swap_keeps_the_old_bundle(saved, tiny_split, tiny_dataset, monkeypatch):
    _, folder = saved
    real_rename = Path.rename

    def rename(self, target):
        if Path(target) == folder and ".old." not in self.name:  # the new bundle moving into place
            raise OSError("simulated failure")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        Bundle.create(Popularity().fit(tiny_split.train_data()), tiny_dataset).save(folder)
    monkeypatch.undo()
    assert Bundle.load(folder).model.name == "sasrec"
    assert [p.name for p in folder.parent.iterdir()] == ["bundle"]


def test_an_unknown_user_raises_unknown_id_error(saved):
    bundle, _ = saved
    with pytest.raises(UnknownIdError, match="nobody"):
        bundle.recommend("nobody")


def test_a_folder_without_bundle_json_is_not_a_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="bundle.json"):
        Bundle.load(tmp_path)


def test_a_bundle_of_an_unknown_model_is_refused(saved):
    _, folder = saved
    with pytest.raises(ValueError, match="'sasrec' is not known"):
        Bundle.load(folder, models={"pop": Popularity})
