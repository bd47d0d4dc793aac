"""The Transformer next-item models (SASRec, HSTU): causality, padding, batching, time bias, losses,
learning, validation, persistence."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import polars as pl
import pytest
import torch

from omnirec.data.histories import Histories
from omnirec.data.schema import ITEM, TIME, USER
from omnirec.data.split import Split
from omnirec.data.train_data import TrainData
from omnirec.evaluate.ranking import full_ranking_eval
from omnirec.models.hstu import HSTU, HSTUConfig, HSTUNet
from omnirec.models.popularity import Popularity
from omnirec.models.sasrec import SASRec, SASRecConfig, SASRecNet
from omnirec.models.sequential import encode_last, fit_next_item, make_loss, validation_ndcg
from omnirec.train.loop import TrainConfig

N_ITEMS, MAX_LEN = 20, 8
KINDS = {"sasrec": (SASRec, SASRecConfig, SASRecNet), "hstu": (HSTU, HSTUConfig, HSTUNet)}
SMALL = {"d_model": 16, "n_layers": 2, "n_heads": 2, "max_len": MAX_LEN, "dropout": 0.2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def net(kind: str, **changes) -> torch.nn.Module:
    """A fresh network in eval mode; HSTU's relative biases (zero at init) are randomised so they matter."""
    _, config_cls, net_cls = KINDS[kind]
    torch.manual_seed(0)
    module = net_cls(N_ITEMS, config_cls(**{**SMALL, **changes})).eval()
    if kind == "hstu":
        with torch.no_grad():
            for p in module.bias.parameters():
                p.normal_()
    return module


def assert_near(a: torch.Tensor, b: torch.Tensor, atol: float) -> None:
    """Elementwise |a - b| <= atol (torch.testing's first call costs half a second of imports)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    worst = float((a - b).abs().max())
    assert worst <= atol, f"max |a - b| = {worst:.3g} > {atol}"


def random_sequences(n: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, length) items in 1..N_ITEMS and increasing times (seconds, gaps of minutes to weeks)."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (n, length), generator=g)
    times = 1_600_000_000 + torch.cumsum(torch.randint(60, 1_000_000, (n, length), generator=g), dim=1)
    return items, times


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_state_does_not_see_later_items(kind):
    module = net(kind)
    items, times = random_sequences(3, MAX_LEN)
    with torch.no_grad():
        base = module(items, times)
        for t in range(MAX_LEN - 1):
            other_items, other_times = random_sequences(3, MAX_LEN, seed=t + 1)
            changed_items = torch.cat([items[:, : t + 1], other_items[:, t + 1 :]], dim=1)
            changed_times = torch.cat([times[:, : t + 1], times[:, t : t + 1] + other_times[:, t + 1 :] - 1_599_000_000], 1)
            out = module(changed_items, changed_times)
            assert_near(out[:, : t + 1], base[:, : t + 1], 1e-6)
            assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :], atol=1e-4), "later states must change"


@pytest.mark.parametrize("kind", list(KINDS))
def test_left_padding_does_not_change_the_states(kind):
    module = net(kind)
    items, times = random_sequences(2, 5)
    padded_items = torch.cat([torch.zeros(2, 3, dtype=torch.long), items], dim=1)
    padded_times = torch.cat([torch.zeros(2, 3, dtype=torch.long), times], dim=1)
    with torch.no_grad():
        plain, padded = module(items, times), module(padded_items, padded_times)
    assert_near(padded[:, 3:], plain, 1e-5)


def ragged_histories(lengths: list[int], seed: int = 0) -> Histories:
    rng = np.random.default_rng(seed)
    indptr = np.concatenate([[0, 0], np.cumsum(lengths)])  # row 0 is padding
    n = int(indptr[-1])
    return Histories(indptr, rng.integers(1, N_ITEMS + 1, n), 1_600_000_000 + np.cumsum(rng.integers(60, 10**6, n)))


@pytest.mark.parametrize("kind", list(KINDS))
def test_encode_last_of_a_batch_equals_each_user_alone_and_the_naive_forward(kind):
    module = net(kind)
    lengths = [3, 1, MAX_LEN + 4, 6, MAX_LEN, 2]
    histories = ragged_histories(lengths)
    users = np.array([3, 1, 5, 2, 6, 4])
    with torch.no_grad():
        together = encode_last(module, histories.batch(users), MAX_LEN, chunk=4)
        alone = torch.cat([encode_last(module, histories.batch([u]), MAX_LEN) for u in users])
        naive = []
        for u in users:
            lo, hi = histories.indptr[u], histories.indptr[u + 1]
            lo = max(lo, hi - MAX_LEN)  # the last max_len items, unpadded
            items = torch.from_numpy(histories.items[lo:hi])[None]
            times = torch.from_numpy(histories.times[lo:hi])[None]
            naive.append(module(items, times)[:, -1])
    assert_near(together, alone, 1e-5)
    assert_near(together, torch.cat(naive), 1e-5)


def test_hstu_time_bias_uses_times_only_when_it_has_buckets():
    items, times = random_sequences(2, 6)
    slower = times[:, :1] + (times - times[:, :1]) * 50  # the same order, much longer gaps
    with torch.no_grad():
        timed = net("hstu", time_buckets=64)  # log2 seconds: buckets up to 2^64 s, none saturate here
        assert not torch.allclose(timed(items, times), timed(items, slower), atol=1e-4)
        untimed = net("hstu", time_buckets=0)
        assert torch.equal(untimed(items, times), untimed(items, slower))
        assert torch.equal(untimed(items, times), untimed(items, None))


# ------------------------------------------------------------------------------ training


def cyclic_data(n_users: int = 80, seed: int = 0) -> TrainData:
    """Each user walks a cycle of the catalogue: item i is always followed by item i + 1 (mod N)."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(1, n_users + 1):
        start, n = int(rng.integers(N_ITEMS)), int(rng.integers(6, 11))
        users += [u] * n
        items += [(start + j) % N_ITEMS + 1 for j in range(n)]
        times += [1000 * j for j in range(n)]
    return TrainData(pl.DataFrame({USER: users, ITEM: items, TIME: times}), n_users, N_ITEMS)


def train(**changes) -> TrainConfig:
    return TrainConfig(**{"batch_size": 32, "lr": 1e-2, "progress": False, "threads": 1, **changes})


@pytest.mark.parametrize("loss", ["ce", "sampled", "inbatch", "bce"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_loss_learns_a_cyclic_pattern(kind, loss):
    model_cls, config_cls, _ = KINDS[kind]
    config = config_cls(**{**SMALL, "n_layers": 1, "dropout": 0.1}, loss=loss, n_negatives=5, train=train(epochs=8))
    model = model_cls(config).fit(cyclic_data())
    losses = [row["loss"] for row in model.history]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("change", [{"progress": True}, {"max_minutes": 30.0}, {"epochs": 4}, {"checkpoint_dir": "moved"}],
                         ids=["progress", "max_minutes", "epochs", "moved"])
def test_a_checkpoint_resumes_when_only_loop_options_change(tmp_path, change):
    data = cyclic_data()
    small = {**SMALL, "n_layers": 1}
    first_train = train(epochs=2, checkpoint_dir=str(tmp_path / "checkpoints"), refit=False)
    first = SASRec(SASRecConfig(**small, train=first_train)).fit(data)
    if "checkpoint_dir" in change:
        shutil.copytree(tmp_path / "checkpoints", tmp_path / "moved")
        change = {"checkpoint_dir": str(tmp_path / "moved")}
    second = SASRec(SASRecConfig(**small, train=dataclasses.replace(first_train, **change))).fit(data)
    assert second.history[:2] == first.history, "epochs 1-2 come from the checkpoint"


FITTED = {**SMALL, "d_model": 32, "n_layers": 1, "n_heads": 1, "max_len": 20}
FIT_EPOCHS = 20


@pytest.fixture(scope="module")
def fitted(tiny_split: Split) -> dict:
    """Each kind trained with early stopping and without the refit, so the kept weights are the best epoch's."""
    data = tiny_split.train_data()
    return {kind: model_cls(config_cls(**FITTED, train=train(epochs=FIT_EPOCHS, batch_size=64, refit=False))).fit(data)
            for kind, (model_cls, config_cls, _) in KINDS.items()}


def ndcg10(model, split: Split, phase: str) -> float:
    return full_ranking_eval(model, split.histories(phase), split.targets(phase), ks=(10,))["ndcg@10"]


def test_sasrec_beats_popularity_on_sequential_synthetic_data(fitted, tiny_split):
    """The synthetic catalogue's next item depends on the current one; a sequence model must find that."""
    pop = Popularity().fit(tiny_split.train_data())
    sasrec = fitted["sasrec"]
    assert sasrec.training["best_valid_ndcg@10"] > 1.3 * ndcg10(pop, tiny_split, "valid")
    assert ndcg10(sasrec, tiny_split, "test") > 1.3 * ndcg10(pop, tiny_split, "test")


@pytest.mark.parametrize("kind", list(KINDS))
def test_validation_ndcg_equals_the_full_ranking_evaluation(kind, fitted, tiny_split):
    model = fitted[kind]
    fast = validation_ndcg(model.module, tiny_split.histories("valid"), tiny_split.targets("valid"), model.config.max_len,
                           batch_size=100)
    assert fast == pytest.approx(ndcg10(model, tiny_split, "valid"), abs=1e-9)
    assert model.training["best_valid_ndcg@10"] == pytest.approx(fast, abs=1e-9), "the kept weights are the best ones"


@pytest.mark.parametrize("kind", list(KINDS))
def test_fit_records_training_and_history(kind, fitted):
    model = fitted[kind]
    assert set(model.training) >= {"best_epoch", "best_valid_ndcg@10", "epochs_run", "stopped", "threads", "seed"}
    assert model.training["epochs_run"] == len(model.history) == FIT_EPOCHS and model.training["stopped"] == "epochs"
    assert 1 <= model.training["best_epoch"] <= FIT_EPOCHS and model.training["threads"] == 1
    assert [row["epoch"] for row in model.history] == list(range(1, FIT_EPOCHS + 1))
    assert all({"loss", "train_s", "valid_ndcg@10", "eval_s"} <= set(row) for row in model.history)
    best = max(row["valid_ndcg@10"] for row in model.history)
    assert model.training["best_valid_ndcg@10"] == best


def test_refit_retrains_from_scratch_on_train_and_validation_items_for_the_best_epochs(tiny_split):
    data = tiny_split.train_data()
    config = SASRecConfig(**FITTED, train=train(epochs=6, batch_size=64, lr=0.1))
    assert config.train.refit, "refit is the default"
    model = SASRec(config).fit(data)
    best = model.training["best_epoch"]
    assert best < 6, "this seed and lr peak early, so refitting for all epochs would be caught"
    assert len([r for r in model.history if not r.get("refit")]) == 6
    assert [r["epoch"] for r in model.history if r.get("refit")] == list(range(1, best + 1))
    assert model.training["refit_epochs"] == best
    torch.manual_seed(config.train.seed)
    reference = SASRecNet(data.n_items, config)
    fit_next_item(reference, data.sequences.extend(data.valid), config.max_len, make_loss("ce", 1), None,
        dataclasses.replace(config.train, epochs=best))
    for (name, a), b in zip(reference.state_dict().items(), model.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_refit_sequences_are_each_users_train_items_then_validation_items(tiny_split):
    data = tiny_split.train_data()
    both = data.sequences.extend(data.valid)
    for u in range(data.n_users + 1):
        parts = [(h.items[h.indptr[u] : h.indptr[u + 1]], h.times[h.indptr[u] : h.indptr[u + 1]])
                 for h in (data.sequences, data.valid, both)]
        assert parts[2][0].tolist() == parts[0][0].tolist() + parts[1][0].tolist()
        assert parts[2][1].tolist() == parts[0][1].tolist() + parts[1][1].tolist()


@pytest.mark.parametrize("kind", list(KINDS))
def test_save_load_gives_identical_scores(kind, fitted, tiny_split, tmp_path):
    model = fitted[kind]
    model.save(tmp_path / kind)
    loaded = KINDS[kind][0].load(tmp_path / kind)
    batch = tiny_split.histories("test").batch(np.arange(1, 40))
    assert loaded.config == model.config
    assert torch.equal(loaded.score(batch), model.score(batch))


@pytest.mark.parametrize(
    "changes",
    [{"d_model": 10, "n_heads": 4}, {"loss": "softmax"}, {"dropout": 1.0}, {"dropout": -0.1}, {"max_len": 0},
     {"n_negatives": 0}],
    ids=["heads", "loss", "dropout-1", "dropout-neg", "max_len", "negatives"],
)
@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_configs_raise(kind, changes):
    with pytest.raises(ValueError):
        KINDS[kind][1](**changes)


@pytest.mark.parametrize("changes", [{"temperature": 0.0}, {"time_buckets": -1}, {"d_attention": 0}])
def test_bad_hstu_configs_raise(changes):
    with pytest.raises(ValueError):
        HSTUConfig(**changes)
