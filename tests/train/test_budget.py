"""The time budget: `max_minutes` bounds early stopping and the refit together, the training record says
how it was spent, and the progress bars end at the epoch reached.

Time is simulated: the loops' clock is replaced by one that every optimiser step moves on by a fixed
number of seconds, so a "batch" costs exactly that and nothing else takes time.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from omnirec.data.histories import Histories
from omnirec.models import collaborative, sequential
from omnirec.models.collaborative import pair_training
from omnirec.models.neumf import NeuMF, NeuMFConfig
from omnirec.models.sasrec import SASRec, SASRecConfig, SASRecNet
from omnirec.models.sequential import fit_next_item
from omnirec.train import loop
from omnirec.train.loop import Deadline, RefitPlan, TrainConfig, TrainResult, plan_refit
from omnirec.train.losses import full_softmax

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BATCH_S = 1.0  # simulated seconds per optimiser step


class StepClock:
    """A clock that stands still except when an optimiser steps: then it moves on by `batch_s`."""

    def __init__(self, batch_s: float = BATCH_S):
        self.now, self.batch_s = 1000.0, batch_s

    def __call__(self) -> float:
        return self.now

    def step(self, *_: object) -> None:
        self.now += self.batch_s


@pytest.fixture
def step_clock(monkeypatch):
    fake = StepClock()
    monkeypatch.setattr(loop, "clock", fake)
    handle = register_optimizer_step_post_hook(fake.step)
    yield fake
    handle.remove()


@pytest.fixture
def rising_validation(monkeypatch):
    """Every validation better than the last: early stopping never stops, only the budget does (the
    longest refit: its best epoch is the last)."""
    count = itertools.count(1)
    monkeypatch.setattr(sequential, "validation_ndcg", lambda *a, **k: next(count) / 1000)
    monkeypatch.setattr(collaborative, "first_target_ndcg", lambda *a, **k: next(count) / 1000)


@pytest.fixture
def bars(monkeypatch):
    """Every progress bar the loops open, each remembering the totals it showed."""
    made = []

    class Recorded(loop.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.totals = []
            made.append(self)

        def set_postfix(self, *args, **kwargs):
            self.totals.append(self.total)
            super().set_postfix(*args, **kwargs)

    monkeypatch.setattr(loop, "tqdm", Recorded)
    return made


def sasrec(minutes: float, **train) -> SASRec:
    config = TrainConfig(epochs=1000, patience=1000, batch_size=64, max_minutes=minutes, progress=False)
    return SASRec(SASRecConfig(d_model=16, max_len=20, train=dataclasses.replace(config, **train)))


def neumf(minutes: float) -> NeuMF:
    train = pair_training(epochs=1000, patience=1000, batch_size=512, max_minutes=minutes, progress=False)
    return NeuMF(NeuMFConfig(d_gmf=8, d_mlp=8, layers=(16, 8), n_negatives=2, train=train))


def growth(data) -> float:
    return len(data.sequences.extend(data.valid).items) / len(data.sequences.items)


def timed_fit(model, data, clock: StepClock) -> float:
    began = clock()
    model.fit(data)
    return clock() - began


@pytest.mark.parametrize("make", [sasrec, neumf], ids=["sasrec", "neumf"])
def test_max_minutes_bounds_early_stopping_and_refit(make, tiny_split, step_clock, rising_validation):
    data = tiny_split.train_data()
    model = make(1.0)
    took = timed_fit(model, data, step_clock)
    spent = model.training["budget"]
    assert took <= 60 + BATCH_S, "early stopping and the refit together stay within the budget"
    assert spent["early_stopping_s"] <= 60 / (1 + growth(data)) + BATCH_S
    assert spent["early_stopping_cut"] and model.training["stopped"] == "time budget"
    assert model.training["refit_epochs"] >= 1 and spent["refit_s"] > 0
    assert spent["total_s"] == pytest.approx(took)


@pytest.mark.parametrize("make,state", [(sasrec, "full"), (neumf, "cut")], ids=["sasrec", "neumf"])
def test_training_record_says_how_the_budget_was_split(make, state, tiny_split, step_clock, rising_validation):
    # both searches stop at the deadline in their 5th epoch; the pair refit's epochs are longer (more
    # pairs, more batches), so its 5th stops at the deadline, while SASRec's (as many batches) all fit
    model = make(1.0)
    model.fit(tiny_split.train_data())
    spent, best = model.training["budget"], model.training["best_epoch"]
    assert spent["max_minutes"] == 1.0 and spent["early_stopping_cut"]
    assert spent["total_s"] == pytest.approx(spent["early_stopping_s"] + spent["refit_s"])
    refit_rows = [r for r in model.history if r.get("refit")]
    assert len(refit_rows) == model.training["refit_epochs"] == spent["refit_epochs_planned"] == best
    assert spent["refit"] == state and spent["refit_cut"] == (state == "cut")
    assert ("epoch_share" in refit_rows[-1]) == (state == "cut")
    assert spent["refit_s"] <= 60 - spent["early_stopping_s"] + BATCH_S
    assert spent["refit_projected_s"] > 0


def test_without_a_budget_the_record_shows_a_full_refit(tiny_split):
    model = sasrec(0.0, epochs=3)
    model.fit(tiny_split.train_data())
    spent = model.training["budget"]
    assert not spent["early_stopping_cut"] and spent["refit"] == "full" and not spent["refit_cut"]
    assert model.training["refit_epochs"] == spent["refit_epochs_planned"] == model.training["best_epoch"]


def test_a_refit_with_too_little_time_left_is_skipped_and_the_early_stopped_weights_stay(
    tiny_split, step_clock, rising_validation
):
    # early stopping gets about 7 of the 15 s: its first 10 s batch already overruns, and the 5 s left
    # are under half of what repeating that batch's work on the larger data takes
    step_clock.batch_s = 10.0
    model = sasrec(0.25)
    took = timed_fit(model, tiny_split.train_data(), step_clock)
    spent = model.training["budget"]
    assert took == 10.0 and spent["refit"] == "skipped" and spent["refit_cut"]
    assert model.training["refit_epochs"] == 0 and not any(r.get("refit") for r in model.history)
    assert model.history[0]["epoch_share"] < 1, "the first epoch stopped at the deadline"
    assert model.score(tiny_split.histories("test").batch(np.array([1, 2]))).shape == (2, model.n_items + 1)


def test_plan_refit_runs_what_fits_and_skips_a_refit_too_short_to_help(step_clock):
    history = [{"epoch": 1, "train_s": 4.0}, {"epoch": 2, "train_s": 4.0},
               {"epoch": 3, "train_s": 2.0, "epoch_share": 0.5}]
    search = TrainResult(history, best_epoch=3)  # 2.5 epochs' work to repeat, 4 s an epoch x growth 1.25
    assert plan_refit(search, 1.25, Deadline()) == RefitPlan(3, 3, float("inf"), 12.5, float("inf"))
    assert plan_refit(search, 1.25, Deadline(step_clock() + 12.5)).epochs == 3  # fits: the last epoch to the deadline
    short = plan_refit(search, 1.25, Deadline(step_clock() + 10.0))
    assert (short.epochs, short.fits) == (2, 2.0), "2 of 2.5 epochs' work fit: the second ends at the deadline"
    assert plan_refit(search, 1.25, Deadline(step_clock() + 9.0)).epochs == 0, "1.8 of 2.5 epochs: skipped"


def toy_net_and_sequences():
    items = np.random.default_rng(0).integers(1, 30, 200)
    indptr = np.concatenate([[0], np.arange(0, 201, 10)])  # row 0 is padding
    torch.manual_seed(0)
    return SASRecNet(30, SASRecConfig(d_model=8, max_len=6)), Histories(indptr, items)


def test_the_bar_ends_at_the_epoch_reached_saying_why(bars):
    net, sequences = toy_net_and_sequences()
    falling = iter([0.5, 0.4, 0.3, 0.2])
    fit_next_item(net, sequences, 6, full_softmax, lambda m: next(falling), TrainConfig(epochs=200, patience=2, batch_size=8))
    (bar,) = bars
    assert bar.n == bar.total == 3, "not 3/200"
    assert bar.postfix.endswith("stop=early stop, best epoch 1")


def test_with_a_budget_the_bars_count_the_epochs_that_fit(tiny_split, step_clock, rising_validation, bars):
    sasrec_model = sasrec(1.0, progress=True)
    sasrec_model.fit(tiny_split.train_data())
    train, refit = bars
    assert train.desc == "train" and refit.desc.startswith("refit")
    assert all(bar.n == bar.total for bar in bars)
    assert train.n == sasrec_model.training["epochs_run"] and refit.n == sasrec_model.training["refit_epochs"]
    assert max(train.totals) < 20, "the total is what fits in the budget, not the 1000-epoch bound"
    assert "stop=budget spent, best epoch" in train.postfix
