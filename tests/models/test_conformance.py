"""One conformance suite run over every model in MODELS: the contract of models/base.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnirec.config import from_dict
from omnirec.data.split import Split
from omnirec.evaluate.ranking import full_ranking_eval
from omnirec.models import MODELS
from omnirec.models.base import NotFittedError, Recommender

TINY_TRAIN = {"epochs": 2, "batch_size": 64, "progress": False}
FAST = {
    "als": {"iterations": 3, "factors": 8},
    "bpr": {"iterations": 5, "factors": 8},
    "sasrec": {"d_model": 16, "max_len": 20, "train": TINY_TRAIN},
    "hstu": {"d_model": 16, "d_attention": 8, "max_len": 20, "train": TINY_TRAIN},
    "textseq": {"d_model": 16, "max_len": 20, "encoder": {"cache_dir": "-", "progress": False}, "train": TINY_TRAIN},
    "twotower": {"d_model": 16, "hidden": 32, "encoder": {"cache_dir": "-", "progress": False}, "train": TINY_TRAIN},
    "neumf": {"d_gmf": 8, "d_mlp": 8, "layers": [16, 8], "train": TINY_TRAIN},
    "lightgcn": {"d_model": 16, "train": TINY_TRAIN},
}


def make(name: str) -> Recommender:
    cls = MODELS[name]
    return cls(from_dict(cls.Config, FAST.get(name, {})))


@pytest.fixture(scope="module")
def fitted(tiny_split: Split, tiny_dataset) -> dict[str, Recommender]:
    data = tiny_split.train_data(tiny_dataset.item_text)
    return {name: make(name).fit(data) for name in MODELS}


@pytest.fixture(scope="module")
def batch(tiny_split: Split):
    return tiny_split.histories("test").batch(np.array([1, 5, 9, 42]))


@pytest.mark.parametrize("name", list(MODELS))
def test_score_shape_dtype_and_finite(name, fitted, batch):
    scores = fitted[name].score(batch)
    assert isinstance(scores, torch.Tensor)
    assert scores.shape == (4, fitted[name].n_items + 1)
    assert scores.dtype == torch.float32
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_score_with_candidates_matches_full_scores(name, fitted, batch):
    candidates = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]])
    full = fitted[name].score(batch)
    part = fitted[name].score(batch, items=candidates)
    assert torch.equal(part, full.gather(1, torch.from_numpy(candidates)))


@pytest.mark.parametrize("name", list(MODELS))
def test_recommend_excludes_history_and_padding(name, fitted, batch):
    ids, scores = fitted[name].recommend(batch, k=10)
    assert ids.shape == scores.shape == (4, 10)
    assert (np.diff(scores, axis=1) <= 0).all(), "scores must be sorted best first"
    for row in range(4):
        history = set(batch.items[batch.indptr[row] : batch.indptr[row + 1]].tolist())
        assert not history & set(ids[row].tolist())
        assert 0 not in ids[row]


@pytest.mark.parametrize("name", list(MODELS))
def test_recommend_can_include_history(name, fitted, batch):
    ids, _ = fitted[name].recommend(batch, k=fitted[name].n_items, exclude_seen=False)
    assert 0 not in ids
    history = set(batch.items[: batch.indptr[1]].tolist())
    assert history <= set(ids[0].tolist())


@pytest.mark.parametrize("name", list(MODELS))
def test_score_does_not_depend_on_batch_company(name, fitted, tiny_split):
    histories = tiny_split.histories("test")
    together = fitted[name].score(histories.batch(np.array([3, 4])))
    alone = fitted[name].score(histories.batch(np.array([4])))
    torch.testing.assert_close(together[1:], alone)


@pytest.mark.parametrize("name", list(MODELS))
def test_save_load_roundtrip_gives_identical_scores(name, fitted, batch, tmp_path):
    fitted[name].save(tmp_path / name)
    loaded = type(fitted[name]).load(tmp_path / name)
    assert loaded.config == fitted[name].config
    assert torch.equal(loaded.score(batch), fitted[name].score(batch))
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files may be left behind"


@pytest.mark.parametrize("name", list(MODELS))
def test_unfitted_model_refuses_to_score(name, batch):
    with pytest.raises(NotFittedError):
        make(name).score(batch)


@pytest.mark.parametrize("name", list(MODELS))
def test_load_refuses_another_models_folder(name, fitted, tmp_path):
    other = "pop" if name != "pop" else "markov"
    fitted[other].save(tmp_path / other)
    with pytest.raises(ValueError, match="holds model"):
        MODELS[name].load(tmp_path / other)


@pytest.mark.parametrize("name", list(MODELS))
def test_fit_is_deterministic(name, tiny_split, tiny_dataset, batch):
    data = tiny_split.train_data(tiny_dataset.item_text)
    a = make(name).fit(data).score(batch)
    b = make(name).fit(data).score(batch)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", list(MODELS))
def test_learns_better_than_chance(name, fitted, tiny_split):
    """On the synthetic data every model must beat a random ranking by a wide margin."""
    res = full_ranking_eval(fitted[name], tiny_split.histories("test"), tiny_split.targets("test"), ks=(10,))
    chance = 10 / fitted[name].n_items
    assert res["hr@10"] > 1.5 * chance, (name, res["hr@10"], chance)


def test_wrong_config_type_is_rejected():
    with pytest.raises(TypeError, match="takes a"):
        MODELS["itemknn"](MODELS["markov"].Config())


@pytest.mark.parametrize("name", list(MODELS))
def test_recommend_marks_empty_slots_when_k_exceeds_what_is_left(name, fitted, batch):
    model = fitted[name]
    ids, scores = model.recommend(batch, k=model.n_items + 5)
    lengths = [len(set(batch.items[batch.indptr[r] : batch.indptr[r + 1]].tolist())) for r in range(4)]
    for row, seen in enumerate(lengths):
        available = model.n_items - seen
        assert (ids[row, :available] > 0).all() and (ids[row, available:] == 0).all()
        assert np.isneginf(scores[row, available:]).all()


@pytest.mark.parametrize("name", ["pop", "itemknn"])
def test_load_detects_a_torn_save(name, fitted, tmp_path):
    fitted[name].save(tmp_path / "m")
    (tmp_path / "m" / "state.npz").write_bytes((tmp_path / "m" / "state.npz").read_bytes()[:-7])
    with pytest.raises(ValueError, match="does not match model.json"):
        MODELS[name].load(tmp_path / "m")


@pytest.mark.parametrize("name", list(MODELS))
def test_empty_batch_gives_empty_results(name, fitted, tiny_split):
    empty = tiny_split.histories("test").batch(np.array([], dtype=np.int64))
    assert fitted[name].score(empty).shape == (0, fitted[name].n_items + 1)
    ids, scores = fitted[name].recommend(empty, k=5)
    assert ids.shape == scores.shape == (0, 5)
