"""One conformance suite run over every model in MODELS: the contract of models/base.py, and a quality
bar that a model which learned nothing fails."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from omnirec.config import from_dict
from omnirec.data.dataset import Dataset
from omnirec.data.histories import UserBatch
from omnirec.data.split import Split, split_dataset
from omnirec.data.synthetic import SyntheticConfig, generate
from omnirec.data.train_data import TrainData
from omnirec.evaluate.ranking import full_ranking_eval
from omnirec.models import MODELS, Popularity
from omnirec.models.base import NotFittedError, Recommender

TINY_TRAIN = {"epochs": 2, "batch_size": 64, "progress": False}
FAST = {
    "als": {"iterations": 3, "factors": 8},
    "bpr": {"iterations": 5, "factors": 8},
    "sasrec": {"d_model": 16, "max_len": 20, "train": TINY_TRAIN},
    "hstu": {"d_model": 16, "d_attention": 8, "max_len": 20, "train": TINY_TRAIN},
    "gru4rec": {"d_model": 16, "max_len": 20, "train": TINY_TRAIN},
    "textseq": {"d_model": 16, "max_len": 20, "encoder": {"cache_dir": "-", "progress": False}, "train": TINY_TRAIN},
    "hybrid": {"text": {"d_model": 16, "max_len": 20, "encoder": {"cache_dir": "-", "progress": False}, "train": TINY_TRAIN}},
    "twotower": {"d_model": 16, "hidden": 32, "encoder": {"cache_dir": "-", "progress": False}, "train": TINY_TRAIN},
    "neumf": {"d_gmf": 8, "d_mlp": 8, "layers": [16, 8], "train": TINY_TRAIN},
    "lightgcn": {"d_model": 16, "train": TINY_TRAIN},
}


def make(name: str, **changes) -> Recommender:
    cls = MODELS[name]
    return cls(from_dict(cls.Config, {**FAST.get(name, {}), **changes}))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: a second torch thread only adds hand-offs (and on a busy machine, waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


# -- quality: every model beats popularity on a catalogue built to reward what it claims to learn -------------

CLUSTER_WORDS = ("kitchen", "garden", "camping", "cycling", "guitar", "skincare")
ADJECTIVES = ("classic", "compact", "deluxe", "eco", "premium", "travel", "vintage", "modern")


def clusters(zipf: float = 0.8, n_users: int = 500, per_cluster: int = 20, length: int = 10, p_in: float = 0.85,
             seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(interactions, items): each user draws `length` distinct items, from one cluster of the catalogue
    with probability `p_in`, else from all of it, by a Zipf(`zipf`) popularity and in no particular
    order; an item's text names its cluster. The held-out item is told by what co-occurs with the
    history (or by the text), not by the order of the history."""
    rng = np.random.default_rng(seed)
    n_items = len(CLUSTER_WORDS) * per_cluster
    popularity = (1.0 / np.arange(1, n_items + 1) ** zipf)[rng.permutation(n_items)]
    cluster = np.arange(n_items) // per_cluster
    users, items = [], []
    for user in range(n_users):
        mine = cluster == rng.integers(len(CLUSTER_WORDS))
        weights = popularity * np.where(mine, p_in / popularity[mine].sum(), (1 - p_in) / popularity[~mine].sum())
        users += [f"u{user}"] * length
        items += [f"i{i}" for i in rng.choice(n_items, size=length, replace=False, p=weights)]
    texts = [f"{ADJECTIVES[rng.integers(len(ADJECTIVES))]} {CLUSTER_WORDS[c]} item {i}" for i, c in enumerate(cluster)]
    interactions = pl.DataFrame({"user_id": users, "item_id": items, "timestamp": np.tile(np.arange(length), n_users)})
    return interactions, pl.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "text": texts})


def successors() -> tuple[pl.DataFrame, pl.DataFrame]:
    """The synthetic catalogue with its order made strong and its popularity flat: each item has two
    likely successors, followed 80% of the time (no category taste), popularity Zipf 0.5."""
    return generate(SyntheticConfig(n_users=400, n_items=200, mean_length=12, p_follow=0.8, p_taste=0.0,
                                    n_successors=2, popularity_exponent=0.5, seed=7))


# text: the clusters again with flatter popularity, so that the cluster is the whole story and what reads it
# from the text wins (the text cannot tell the popular items of a cluster from the others)
CATALOGUES = {"order": successors, "co-occurrence": clusters, "text": lambda: clusters(zipf=0.3)}
SEQ_TRAIN = {"epochs": 10, "batch_size": 64, "lr": 1e-2, "refit": False, "progress": False}
PAIR_TRAIN = {"epochs": 20, "batch_size": 256, "lr": 5e-3, "refit": False, "progress": False}
# (model, the catalogue that rewards what it claims to learn, its settings beyond FAST: enough training to learn)
QUALITY = [
    ("markov", "order", {}), ("sasrec", "order", {"train": SEQ_TRAIN}), ("hstu", "order", {"train": SEQ_TRAIN}),
    ("gru4rec", "order", {"train": {**SEQ_TRAIN, "epochs": 20}}),  # a GRU needs more steps than attention here
    ("textseq", "order", {"train": SEQ_TRAIN}),
    ("itemknn", "co-occurrence", {}), ("ease", "co-occurrence", {}), ("als", "co-occurrence", {}),
    ("bpr", "co-occurrence", {"iterations": 50}), ("twotower", "co-occurrence", {"train": PAIR_TRAIN}),
    ("neumf", "co-occurrence", {"train": PAIR_TRAIN}), ("lightgcn", "co-occurrence", {"train": PAIR_TRAIN}),
    ("tfidf", "text", {}), ("textseq", "text", {"mode": "text", "train": SEQ_TRAIN}),
    ("hybrid", "text", {"text": {**FAST["hybrid"]["text"], "mode": "text", "train": SEQ_TRAIN}}),
]


def bar(popularity: float) -> float:
    """The NDCG@10 a model must reach: twice popularity's, and at least 0.10 above it. A model that learned
    nothing beyond popularity scores about popularity's NDCG; 0.10 is more than four standard errors of
    the difference between two models' means over these 400-500 test users (measured: 0.009 to 0.021)."""
    return max(2 * popularity, popularity + 0.10)


class RandomScores(Recommender):
    """Scores that ignore the data (seeded, fixed per user): a model that learned nothing at all."""

    name = "random"

    def _fit(self, data: TrainData) -> None:
        self.table = np.random.default_rng(0).random((data.n_users + 1, data.n_items + 1), dtype=np.float32)

    def _score(self, batch: UserBatch) -> torch.Tensor:
        return torch.from_numpy(self.table[batch.users])

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"table": self.table}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.table = state["table"]


@pytest.fixture(scope="module")
def catalogue():
    """name -> (train data, test split, popularity's test NDCG@10), each built once."""
    built: dict[str, tuple[TrainData, Split, float]] = {}

    def get(name: str) -> tuple[TrainData, Split, float]:
        if name not in built:
            dataset = Dataset.from_frames(*CATALOGUES[name](), name=name)
            split = split_dataset(dataset, "loo")
            data = split.train_data(dataset.item_text)
            built[name] = data, split, ndcg10(Popularity().fit(data), split)
        return built[name]

    return get


def ndcg10(model: Recommender, split: Split) -> float:
    """Full-ranking NDCG@10 of the leave-one-out test targets."""
    return full_ranking_eval(model, split.histories("test"), split.targets("test"), ks=(10,))["ndcg@10"]




def test_every_model_has_a_quality_case():
    assert {name for name, _, _ in QUALITY} | {"pop"} == set(MODELS)


@pytest.mark.parametrize(("name", "kind", "changes"), QUALITY, ids=[f"{n}-{k}" for n, k, _ in QUALITY])
def test_beats_popularity_on_what_it_learns(name, kind, changes, catalogue):
    data, split, popularity = catalogue(kind)
    ndcg = ndcg10(make(name, **changes).fit(data), split)
    assert ndcg >= bar(popularity), f"{name} on the {kind} catalogue: NDCG@10 {ndcg:.4f}, popularity {popularity:.4f}"


@pytest.mark.parametrize("kind", list(CATALOGUES))
def test_a_model_that_learned_nothing_fails_the_bar(kind, catalogue):
    data, split, popularity = catalogue(kind)
    for model in (RandomScores(), Popularity()):
        ndcg = ndcg10(model.fit(data), split)
        assert ndcg < bar(popularity), f"{model.name} passed the bar on the {kind} catalogue ({ndcg:.4f})"


def test_a_model_saved_before_its_config_gained_an_option_loads_with_the_default(tiny_split, tmp_path):
    """A saved model's config is checked against its own recorded hash, so a model saved before
    TrainConfig gained `valid_users` (or any later option) still loads, the new option at its default."""
    import json

    from omnirec.config import recorded_hash
    from omnirec.models import SASRec
    from omnirec.models.sasrec import SASRecConfig
    from omnirec.train.loop import TrainConfig

    SASRec(SASRecConfig(d_model=8, train=TrainConfig(epochs=1, progress=False))).fit(tiny_split.train_data()).save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["config"]["train"]["valid_users"]  # as written before the option existed
    meta["config_hash"] = recorded_hash("SASRecConfig", meta["config"])
    (tmp_path / "model.json").write_text(json.dumps(meta))
    assert SASRec.load(tmp_path).config.train.valid_users == 0
    meta["config"]["d_model"] = 16  # an edited record no longer matches its hash
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="recorded hash"):
        SASRec.load(tmp_path)


@pytest.mark.parametrize("name", [n for n, cls in MODELS.items() if cls.adds_items])
def test_added_items_are_scored_and_saved(name, tiny_split, tiny_dataset, batch, tmp_path):
    """A model that takes new items scores them at once, keeps the old items' scores, and saves and loads
    with them; where the score comes from the text alone (tfidf, textseq in text mode), a new item with an
    old item's text scores exactly like it."""
    model = make(name, **({"mode": "text"} if name == "textseq" else {}))
    model.fit(tiny_split.train_data(tiny_dataset.item_text))
    before = model.score(batch)
    model.add_items([tiny_dataset.item_text[5], "an item like no other"])
    after = model.score(batch)
    n = tiny_dataset.n_items
    assert after.shape == (4, n + 3) and torch.isfinite(after).all()
    if name in ("tfidf", "textseq"):
        torch.testing.assert_close(after[:, n + 1], after[:, 5], atol=1e-5, rtol=1e-5)
    if name != "hybrid":  # the hybrid standardizes over the grown catalogue, so every score moves a little
        torch.testing.assert_close(after[:, : n + 1], before)
    model.save(tmp_path / name)
    assert torch.equal(type(model).load(tmp_path / name).score(batch), after)


def test_a_model_without_text_refuses_new_items(fitted):
    with pytest.raises(ValueError, match="cannot take new items"):
        fitted["sasrec"].add_items(["a new item"])
