"""The training loop: what each epoch supervises, batch layout, early stopping, time budget, resume."""

from __future__ import annotations

from collections import Counter
from itertools import chain

import numpy as np
import pytest
import torch

from omnirec.data.dataset import Dataset
from omnirec.data.histories import Histories
from omnirec.data.split import split_dataset
from omnirec.data.synthetic import SyntheticConfig, generate
from omnirec.features.sequences import batches_per_epoch, make_batch, training_batches
from omnirec.models.sasrec import SASRecConfig, SASRecNet
from omnirec.models.sequential import fit_next_item, make_loss, validation_ndcg
from omnirec.train.loop import CHECKPOINT, TrainConfig
from omnirec.train.losses import full_softmax

MAX_LEN = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ragged(lengths: list[int]) -> tuple[Histories, list[list[int]]]:
    """Histories whose items are unique across users (user u's j-th item is 100 u + j + 1); times = 7 * item."""
    seqs = [[100 * u + j + 1 for j in range(n)] for u, n in enumerate(lengths)]
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = np.array(list(chain.from_iterable(seqs)), dtype=np.int64)
    return Histories(indptr, items, items * 7), seqs


def random_lengths(n_users: int, high: int, seed: int = 0) -> list[int]:
    return [0] + np.random.default_rng(seed).integers(0, high + 1, n_users).tolist()  # row 0 is padding


def one_epoch(histories: Histories, batch_size: int = 3, seed: int = 0) -> list:
    return list(training_batches(histories, MAX_LEN, batch_size, np.random.default_rng(seed)))


def supervised(batches) -> list[tuple[int, int, torch.Tensor]]:
    """(target, item just before it, the row's items up to that position) for every supervised position."""
    out = []
    for b in batches:
        for row, col in (b.targets != 0).nonzero().tolist():
            out.append((int(b.targets[row, col]), int(b.items[row, col]), b.items[row, : col + 1]))
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 7, 500])
def test_batches_per_epoch_counts_the_batches_training_yields(batch_size):
    histories, _ = ragged(random_lengths(300, 3 * MAX_LEN))  # long histories: several windows per user
    assert batches_per_epoch(histories, MAX_LEN, batch_size) == len(one_epoch(histories, batch_size))


def test_every_item_but_the_first_is_a_target_exactly_once():
    histories, seqs = ragged(random_lengths(120, MAX_LEN + 1))  # 120 users, batch 3: several length-sorted chunks
    targets = Counter(t for t, _, _ in supervised(one_epoch(histories)))
    expected = Counter(chain.from_iterable(s[1:] for s in seqs))
    assert len(expected) > 200
    assert targets == expected


def test_long_sequences_supervise_every_target_exactly_once():
    histories, seqs = ragged([0, 9, 2, MAX_LEN + 2, 1, 12, MAX_LEN + 1, 2 * MAX_LEN + 1])
    targets = Counter(t for t, _, _ in supervised(one_epoch(histories)))
    assert targets == Counter(chain.from_iterable(s[1:] for s in seqs))


def test_each_target_reads_exactly_the_items_before_it():
    histories, seqs = ragged(random_lengths(60, 2 * MAX_LEN, seed=1))
    where = {item: (u, j) for u, s in enumerate(seqs) for j, item in enumerate(s)}
    rows = supervised(one_epoch(histories))
    assert rows
    for target, before, prefix in rows:
        user, j = where[target]
        seq = seqs[user]
        assert before == seq[j - 1]
        window_end = len(seq) - ((len(seq) - 1 - j) // MAX_LEN) * MAX_LEN  # windows are cut from the end
        window_start = max(0, window_end - MAX_LEN - 1)
        context = prefix[prefix != 0].tolist()
        assert context == seq[window_start:j]
        assert (prefix[: len(prefix) - len(context)] == 0).all(), "padding only on the left"


def test_padding_never_has_a_target_and_batches_respect_batch_size():
    histories, _ = ragged(random_lengths(80, 2 * MAX_LEN, seed=2))
    batches = one_epoch(histories, batch_size=5)
    assert any((b.items == 0).any() for b in batches), "the data must produce padded rows"
    for b in batches:
        assert b.items.shape == b.targets.shape == b.times.shape and b.items.shape[0] <= 5
        assert (b.targets[b.items == 0] == 0).all()
        assert (b.targets != 0).any(dim=1).all(), "every row supervises something"


def test_windows_cover_each_target_once_with_up_to_max_len_items_before_it():
    from omnirec.features.sequences import windows

    histories, seqs = ragged([0, 1, 2, 5, 6, 9, 13])
    rows = windows(histories, MAX_LEN)
    got = [rows.items[rows.indptr[r] : rows.indptr[r + 1]].tolist() for r in range(len(rows.indptr) - 1)]
    expected = []
    for seq in seqs:
        ends = list(range(len(seq), 1, -MAX_LEN))[::-1]
        expected += [seq[max(0, e - MAX_LEN - 1) : e] for e in ends]
    assert got == expected
    assert np.array_equal(rows.times, rows.items * 7)


def test_users_with_fewer_than_two_items_never_appear():
    lengths = [0, 1, 3, 0, 1, 2, 1]
    histories, seqs = ragged(lengths)
    batches = one_epoch(histories, batch_size=2)
    assert sum(len(b.items) for b in batches) == 2  # users 2 and 5
    seen = set(chain.from_iterable(b.items.flatten().tolist() + b.targets.flatten().tolist() for b in batches))
    for u, n in enumerate(lengths):
        if n == 1:
            assert seqs[u][0] not in seen


def test_epoch_order_depends_on_the_rng_but_not_the_supervision():
    histories, _ = ragged(random_lengths(50, MAX_LEN + 1, seed=3))
    a, b = one_epoch(histories, seed=0), one_epoch(histories, seed=1)
    assert [x.targets.tolist() for x in a] != [x.targets.tolist() for x in b]
    assert Counter(t for t, _, _ in supervised(a)) == Counter(t for t, _, _ in supervised(b))


def test_make_batch_shapes_and_aligned_times():
    histories, seqs = ragged([0, 2, 6, 3])
    batch = make_batch(histories, np.array([1, 2, 3]), MAX_LEN)
    assert batch.items.shape == batch.times.shape == batch.targets.shape == (3, MAX_LEN)  # 6 items -> last 5 -> 4 inputs
    assert batch.items[1].tolist() == seqs[2][-5:-1] and batch.targets[1].tolist() == seqs[2][-4:]
    assert batch.items[0].tolist() == [0, 0, 0, seqs[1][0]] and batch.targets[0].tolist() == [0, 0, 0, seqs[1][1]]
    assert torch.equal(batch.times, batch.items * 7), "each input's time is its own item's time; padding 0"


def test_make_batch_is_as_wide_as_its_longest_row_only():
    histories, _ = ragged([0, 2, 3])
    batch = make_batch(histories, np.array([1, 2]), max_len=50)
    assert batch.items.shape == (2, 2)
    no_times = Histories(histories.indptr, histories.items)
    assert make_batch(no_times, np.array([1, 2]), 50).times is None


# ----------------------------------------------------------------------------------------- fit

@pytest.fixture(scope="module")
def toy():
    """(train sequences, validation targets, n_items) of a tiny synthetic catalogue."""
    dataset = Dataset.from_frames(*generate(SyntheticConfig(n_users=60, n_items=30, mean_length=8, seed=1)))
    split = split_dataset(dataset)
    return split.train_data().sequences, split.targets("valid"), dataset.n_items


def tiny_net(n_items: int, seed: int = 0) -> SASRecNet:
    torch.manual_seed(seed)
    return SASRecNet(n_items, SASRecConfig(d_model=8, n_layers=1, n_heads=2, max_len=6, dropout=0.3))


def config(**changes) -> TrainConfig:
    return TrainConfig(**{"epochs": 4, "batch_size": 16, "lr": 1e-2, "progress": False, "threads": 1,
                           "ema_epochs": 0.0, **changes})


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in history]


def test_early_stopping_keeps_the_best_epochs_weights(toy):
    sequences, _, n_items = toy
    net, values, states = tiny_net(n_items), iter([0.1, 0.3, 0.2, 0.25, 0.9, 0.9]), []

    def validate(module):
        assert not module.training and not torch.is_grad_enabled()
        states.append(state_of(module))
        return next(values)

    result = fit_next_item(net, sequences, 6, full_softmax, validate, config(epochs=10, patience=2))
    assert result.stopped == "patience"
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert [r["valid_ndcg@10"] for r in result.history] == [0.1, 0.3, 0.2, 0.25]
    assert (result.best_epoch, result.best_metric) == (2, 0.3)
    assert not same_state(states[3], states[1]), "training must move the weights for this test to mean anything"
    assert same_state(state_of(net), states[1])
    assert not net.training


def test_validation_runs_every_eval_every_epochs_and_after_the_last(toy):
    sequences, _, n_items = toy
    result = fit_next_item(tiny_net(n_items), sequences, 6, full_softmax, lambda m: 0.5, config(epochs=7, eval_every=3))
    assert [r["epoch"] for r in result.history if "valid_ndcg@10" in r] == [3, 6, 7]
    assert result.best_epoch == 3 and result.stopped == "epochs"


def test_time_budget_stops_after_one_epoch(toy):
    sequences, _, n_items = toy
    result = fit_next_item(tiny_net(n_items), sequences, 6, full_softmax, lambda m: 0.5, config(epochs=50, max_minutes=1e-9))
    assert result.stopped == "time budget"
    assert len(result.history) == 1 and result.history[0]["valid_ndcg@10"] == 0.5


def test_without_validate_trains_every_epoch_and_keeps_the_last_weights(toy):
    sequences, _, n_items = toy
    last = tiny_net(n_items)
    result = fit_next_item(last, sequences, 6, full_softmax, None, config(epochs=3))
    assert [r["epoch"] for r in result.history] == [1, 2, 3] and result.stopped == "epochs"
    assert result.best_epoch == 3 and all("valid_ndcg@10" not in r for r in result.history)  # the weights kept
    rising, falling = iter([0.1, 0.2, 0.3]), iter([0.3, 0.2, 0.1])
    best_is_last = tiny_net(n_items)
    fit_next_item(best_is_last, sequences, 6, full_softmax, lambda m: next(rising), config(epochs=3))
    best_is_first = tiny_net(n_items)
    fit_next_item(best_is_first, sequences, 6, full_softmax, lambda m: next(falling), config(epochs=3))
    assert same_state(state_of(last), state_of(best_is_last))
    assert not same_state(state_of(last), state_of(best_is_first))


def test_ema_returns_the_moving_average_of_the_weights(toy):
    sequences, _, n_items = toy
    plain, tracked, averaged = tiny_net(n_items), tiny_net(n_items), tiny_net(n_items)
    fit_next_item(plain, sequences, 6, full_softmax, None, config(epochs=2))
    fit_next_item(tracked, sequences, 6, full_softmax, None, config(epochs=2, ema_epochs=1e-9))  # the average: the last step
    fit_next_item(averaged, sequences, 6, full_softmax, None, config(epochs=2, ema_epochs=0.5))
    for name, weight in plain.state_dict().items():
        torch.testing.assert_close(tracked.state_dict()[name], weight)
    assert not same_state(state_of(plain), state_of(averaged))
    seen, rising = [], iter([0.1, 0.2])
    validated = tiny_net(n_items)
    fit_next_item(validated, sequences, 6, full_softmax, lambda m: seen.append(state_of(m)) or next(rising),
        config(epochs=2, ema_epochs=0.5))
    assert same_state(seen[1], state_of(averaged)), "validation sees the averaged weights"
    assert same_state(state_of(validated), state_of(averaged)), "and keeps them"


@pytest.mark.parametrize(("loss", "changes"), [("ce", {}), ("bce", {}), ("ce", {"ema_epochs": 0.5})])
def test_resume_from_a_checkpoint_equals_training_in_one_go(toy, tmp_path, loss, changes):  # bce: torch's RNG
    sequences, valid, n_items = toy
    loss_fn = make_loss(loss, 8)

    def run(epochs: int, checkpoint_dir: str = "") -> tuple[SASRecNet, object]:
        net = tiny_net(n_items)
        validate = lambda m: validation_ndcg(m, sequences, valid, 6)
        return net, fit_next_item(net, sequences, 6, loss_fn, validate, config(epochs=epochs, checkpoint_dir=checkpoint_dir, **changes),
                        "fp")

    whole, whole_result = run(4)
    _, first_half = run(2, str(tmp_path))
    assert (tmp_path / CHECKPOINT).exists()
    resumed, resumed_result = run(4, str(tmp_path))
    assert resumed_result.history[:2] == first_half.history, "epochs 1-2 come from the checkpoint, not rerun"
    assert without_timings(resumed_result.history) == without_timings(whole_result.history)
    assert resumed_result.best_epoch == whole_result.best_epoch
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not list(tmp_path.glob("*.tmp")), "checkpoints are written atomically"


def test_a_checkpoint_of_another_model_or_data_is_refused(toy, tmp_path):
    sequences, _, n_items = toy
    fit_next_item(tiny_net(n_items), sequences, 6, full_softmax, None, config(epochs=1, checkpoint_dir=str(tmp_path)), "model-a")
    with pytest.raises(ValueError, match="fingerprint"):
        fit_next_item(tiny_net(n_items), sequences, 6, full_softmax, None, config(epochs=2, checkpoint_dir=str(tmp_path)), "model-b")


def test_resuming_a_run_that_stopped_early_trains_no_further(toy, tmp_path):
    sequences, _, n_items = toy
    values = iter([0.3, 0.2, 0.1, 0.0, 0.0])
    first = fit_next_item(tiny_net(n_items), sequences, 6, full_softmax, lambda m: next(values),
                config(epochs=10, patience=2, checkpoint_dir=str(tmp_path)))
    assert first.stopped == "patience" and len(first.history) == 3
    again = fit_next_item(tiny_net(n_items), sequences, 6, full_softmax, lambda m: 0.0,
                config(epochs=10, patience=2, checkpoint_dir=str(tmp_path)))
    assert again.history == first.history
    assert again.stopped == "patience"


def test_resuming_after_the_time_budget_continues_training(toy, tmp_path):
    sequences, _, n_items = toy
    first = fit_next_item(tiny_net(n_items), sequences, 6, full_softmax, lambda m: 0.5,
                config(epochs=3, max_minutes=1e-9, checkpoint_dir=str(tmp_path)))
    assert first.stopped == "time budget" and len(first.history) == 1
    again = fit_next_item(tiny_net(n_items), sequences, 6, full_softmax, lambda m: 0.5, config(epochs=3, checkpoint_dir=str(tmp_path)))
    assert again.stopped == "epochs" and [r["epoch"] for r in again.history] == [1, 2, 3]
    assert again.history[0] == first.history[0]


@pytest.mark.parametrize("changes", [{"epochs": 0}, {"batch_size": 0}, {"patience": 0}, {"lr": 0.0},
                                     {"max_minutes": -1.0}, {"eval_every": 0}, {"ema_epochs": -0.1}])
def test_train_config_rejects_bad_values(changes):
    with pytest.raises(ValueError):
        TrainConfig(**changes)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_shards_split_every_global_batch_and_weigh_their_share(batch_size):
    histories, _ = ragged(random_lengths(30, 9, seed=3))
    whole = one_epoch(histories, batch_size)
    parts = [list(training_batches(histories, MAX_LEN, batch_size, np.random.default_rng(0), shard=(r, 2))) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == len(whole)  # every process takes part in every step
    for full, a, b in zip(whole, *parts, strict=True):
        assert a.scale + b.scale == pytest.approx(2.0)  # shares of the global batch's targets, times 2
        got = sorted(supervised([a]) * (a.scale > 0) + supervised([b]) * (b.scale > 0), key=lambda s: (s[0], s[1]))
        want = sorted(supervised([full]), key=lambda s: (s[0], s[1]))
        assert [(t, p) for t, p, _ in got] == [(t, p) for t, p, _ in want]  # the same targets, none twice
