"""The neural collaborative models and EASE beyond the conformance suite: their maths against direct
computations, and two-tower's lists for users known only by their attributes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from omnirec.data.attributes import Attributes
from omnirec.data.dataset import Dataset
from omnirec.data.split import split_dataset
from omnirec.evaluate.ranking import full_ranking_eval
from omnirec.models import EASE, LightGCN, NeuMF, Popularity, TwoTower
from omnirec.models.collaborative import pair_training
from omnirec.models.ease import EASEConfig
from omnirec.models.lightgcn import LightGCNConfig, LightGCNNet, normalized_adjacency
from omnirec.models.neumf import NeuMFConfig, NeuMFNet
from omnirec.models.twotower import TwoTowerConfig

QUIET = pair_training(epochs=3, progress=False, batch_size=64)


def test_lightgcn_propagation_is_the_layer_mean_of_normalised_adjacency_powers():
    indptr, items = np.array([0, 0, 2, 3, 5]), np.array([1, 2, 2, 1, 3])  # users 1..3, items 1..3
    a = normalized_adjacency(indptr, items, n_users=3, n_items=3).to_dense().numpy()
    dense = np.zeros((8, 8))
    for user, item in [(1, 1), (1, 2), (2, 2), (3, 1), (3, 3)]:
        dense[user, 4 + item] = dense[4 + item, user] = 1.0
    degree = dense.sum(1)
    scale = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1)), 0)
    np.testing.assert_allclose(a, scale[:, None] * dense * scale[None, :], rtol=1e-6)
    net = LightGCNNet(3, 3, LightGCNConfig(d_model=4, n_layers=2), torch.from_numpy(a).float().to_sparse())
    e0 = net.embedding.weight.detach().double().numpy()
    expected = (e0 + a @ e0 + a @ a @ e0) / 3
    users, item_table = net.propagate()
    np.testing.assert_allclose(torch.cat([users, item_table]).detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_neumf_scores_for_every_item_equal_its_pair_logits():
    torch.manual_seed(0)
    net = NeuMFNet(5, 7, NeuMFConfig(d_gmf=4, d_mlp=3, layers=(6, 4)))
    users = torch.tensor([1, 3, 5])
    full = net.all_logits(users)  # (3, 8)
    pairs = net.logits(users.repeat_interleave(8), torch.arange(8).repeat(3)).view(3, 8)
    torch.testing.assert_close(full, pairs)


def test_ease_equals_the_closed_form():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 6)) < 0.4).astype(float)
    users, items = np.nonzero(x)
    frame = pl.DataFrame({"user_id": users + 1, "item_id": items + 1, "timestamp": np.arange(len(users))})
    from omnirec.data.train_data import TrainData

    model = EASE(EASEConfig(l2=3.0)).fit(TrainData(frame, 30, 6))
    p = np.linalg.inv(x.T @ x + 3.0 * np.eye(6))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.weights[1:, 1:].numpy(), b, rtol=1e-4, atol=1e-6)


def _grouped_data(seed: int = 0) -> Dataset:
    """Users in two groups by a 'club' attribute; each group buys mostly from its own half of 20 items."""
    rng = np.random.default_rng(seed)
    rows, users = [], []
    for u in range(1, 241):
        club = "red" if u % 2 else "blue"
        users.append({"user_id": str(u), "club": club, "age": str(20 + u % 40)})
        own = np.arange(1, 11) if club == "red" else np.arange(11, 21)
        other = np.arange(11, 21) if club == "red" else np.arange(1, 11)
        picks = np.concatenate([rng.choice(own, 6, replace=False), rng.choice(other, 1)])
        rows += [(str(u), str(i), t) for t, i in enumerate(rng.permutation(picks))]
    # a popularity skew towards the blue half, so popularity alone serves red users badly
    rows += [(str(1000 + j), str(11 + j % 4), 0) for j in range(60)]
    inter = pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64}, orient="row")
    return Dataset.from_frames(inter, users=pl.DataFrame(users))


def test_twotower_gives_cold_users_lists_from_their_attributes_and_beats_popularity():
    ds = _grouped_data()
    split = split_dataset(ds, "cold-users", user_frac=0.2, seed=1)
    assert split.cold_users is not None and len(split.cold_users) == 60  # of 300 users
    train = split.train_data(None, ds.user_attributes)
    config = TwoTowerConfig(d_model=16, hidden=32, item_text=False, cold_dropout=0.3,
                            train=pair_training(epochs=30, batch_size=128, lr=3e-3, progress=False, refit=False))
    model = TwoTower(config).fit(train)
    cold_targets = split.targets("test").only_users(split.cold_users)
    histories = split.histories("test")
    assert (histories.lengths()[split.cold_users] == 0).all()
    ours = full_ranking_eval(model, histories, cold_targets, ks=(10,))["ndcg@10"]
    pop = full_ranking_eval(Popularity().fit(train), histories, cold_targets, ks=(10,))["ndcg@10"]
    assert ours > pop + 0.05, (ours, pop)
    # two cold users of different clubs get different lists; each list leans to the user's own half
    club = ds.user_attributes.codes[:, ds.user_attributes.names.index("club")]
    red = next(u for u in split.cold_users if club[u] and ds.user_attributes.vocab[0][club[u] - 1] == "red")
    blue = next(u for u in split.cold_users if club[u] and ds.user_attributes.vocab[0][club[u] - 1] == "blue")
    ids, _ = model.recommend(histories.batch(np.array([red, blue])), k=5)
    labels = [[int(x) for x in ds.items.decode(row)] for row in ids]
    assert sum(i <= 10 for i in labels[0]) >= 4 and sum(i > 10 for i in labels[1]) >= 4, labels


def test_twotower_without_attributes_or_text_still_fits_and_saves(tmp_path, tiny_split):
    model = TwoTower(TwoTowerConfig(d_model=8, hidden=16, item_text=False, loss="bpr", train=QUIET))
    model.fit(tiny_split.train_data())
    batch = tiny_split.histories("test").batch(np.array([1, 2, 3]))
    model.save(tmp_path / "m")
    assert torch.equal(TwoTower.load(tmp_path / "m").score(batch), model.score(batch))
    vectors = model.item_embeddings()
    assert vectors.shape == (model.n_items + 1, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors[1:], axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("cls,config", [
    (NeuMF, NeuMFConfig(d_gmf=8, d_mlp=8, layers=(16, 8), train=QUIET)),
    (LightGCN, LightGCNConfig(d_model=8, train=QUIET)),
])
def test_refit_trains_on_validation_items_for_the_chosen_epochs(cls, config, tiny_split):
    model = cls(config).fit(tiny_split.train_data())
    refit_rows = [row for row in model.history if row.get("refit")]
    assert len(refit_rows) == model.training["best_epoch"] == model.training["refit_epochs"]


def test_cold_users_split_holds_out_whole_users(tiny_dataset):
    split = split_dataset(tiny_dataset, "cold-users", user_frac=0.1, seed=3)
    held = split.cold_users
    assert len(held) == 30
    for part in (split.train, split.valid):
        assert not part["user_id"].is_in(held.tolist()).any()
    everything = tiny_dataset.interactions.filter(pl.col("user_id").is_in(held.tolist()))
    assert split.test.filter(pl.col("user_id").is_in(held.tolist())).height == everything.height
    warm_test = split.test.filter(~pl.col("user_id").is_in(held.tolist()))
    assert warm_test.group_by("user_id").len()["len"].max() == 1  # leave-one-out for the others
    again = split_dataset(tiny_dataset, "cold-users", user_frac=0.1, seed=3)
    assert np.array_equal(again.cold_users, held)


def test_attributes_bucket_many_valued_numbers_and_reject_duplicates():
    from omnirec.data.ids import IdMap

    ids = IdMap([str(i) for i in range(1, 101)])
    frame = pl.DataFrame({"user_id": [str(i) for i in range(1, 101)], "age": list(range(10, 110)),
                          "plan": ["a", "b"] * 50})
    attrs = Attributes.from_frame(frame, "user_id", ids)
    assert attrs.cardinalities() == [9, 3]  # 8 age buckets + unknown, 2 plans + unknown
    assert (attrs.codes[1:] > 0).all() and (attrs.codes[0] == 0).all()
    with pytest.raises(ValueError, match="more than one row"):
        Attributes.from_frame(pl.concat([frame, frame.head(1)]), "user_id", ids)
    with pytest.raises(ValueError, match="no column 'region'"):
        Attributes.from_frame(frame, "user_id", ids, columns=["region"])
    back = Attributes.from_state("a", attrs.to_state("a"))
    assert back.names == attrs.names and back.vocab == attrs.vocab and np.array_equal(back.codes, attrs.codes)


def test_two_tower_resumes_from_a_checkpoint_as_if_never_stopped(tiny_split, tmp_path):
    """The collaborative models train in the one loop, so they checkpoint and resume like the sequence
    models: two epochs, a stop, two more equal four in one go (the step's negatives and dropped users
    come from the generator the checkpoint keeps)."""
    def fit(epochs: int, folder: str = "") -> TwoTower:
        train = pair_training(epochs=epochs, progress=False, batch_size=64, refit=False, checkpoint_dir=folder)
        return TwoTower(TwoTowerConfig(d_model=8, item_text=False, cold_dropout=0.3, train=train)).fit(tiny_split.train_data())

    whole = fit(4)
    fit(2, str(tmp_path))
    resumed = fit(4, str(tmp_path))
    timings = ("train_s", "eval_s")
    assert [{k: v for k, v in r.items() if k not in timings} for r in resumed.history] == \
           [{k: v for k, v in r.items() if k not in timings} for r in whole.history]
    batch = tiny_split.histories("test").batch(np.arange(1, 20))
    assert torch.equal(resumed.score(batch), whole.score(batch))
