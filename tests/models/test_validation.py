"""The validation NDCG that early stopping keeps the best epoch by (`train.validation.first_target_ndcg`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omnirec.data.histories import UserBatch
from omnirec.evaluate.ranking import full_ranking_eval
from omnirec.features.pairs import pair_batches
from omnirec.models.base import Recommender
from omnirec.models.collaborative import pair_training
from omnirec.train.loop import fit
from omnirec.train.validation import first_target_ndcg


class FixedScores(Recommender):
    """Scores every user's items with `item_score(items)`: no learning, any pattern of ties."""

    name = "fixed"

    def __init__(self, item_score, n_items: int):
        super().__init__()
        self.item_score, self.n_users, self.n_items = item_score, 1, n_items

    def _fit(self, data) -> None:
        raise NotImplementedError

    def _score(self, batch: UserBatch) -> torch.Tensor:
        return self.item_score(torch.arange(self.n_items + 1)).float().expand(len(batch.users), -1).clone()

    def _get_state(self) -> dict:
        return {}

    def _set_state(self, state: dict) -> None:
        pass


def valid_users(split) -> np.ndarray:
    return np.flatnonzero((split.targets("valid").lengths() > 0) & (split.histories("valid").lengths() > 0))


def validation(model: Recommender, split) -> float:
    return first_target_ndcg(model.score, split.histories("valid"), split.targets("valid"), valid_users(split),
                             model.n_items)


def test_validation_ties_do_not_go_to_the_target(tiny_split):
    flat = FixedScores(torch.zeros_like, tiny_split.n_items)
    value = validation(flat, tiny_split)
    lengths = tiny_split.histories("valid").lengths()[valid_users(tiny_split)]
    discounts = 1 / np.log2(np.arange(2, 12))
    chance = float(np.mean(discounts.sum() / (tiny_split.n_items - lengths)))  # NDCG@10 of a random order
    assert value == pytest.approx(chance, abs=0.03), (value, chance)  # was 1.0: every tie went to the target
    # ties are broken exactly as the test protocol breaks them: the same number as a full-ranking evaluation
    for model in (flat, FixedScores(lambda items: items % 3, tiny_split.n_items)):
        full = full_ranking_eval(model, tiny_split.histories("valid"), tiny_split.targets("valid"), ks=(10,))
        assert validation(model, tiny_split) == pytest.approx(full["ndcg@10"], abs=1e-9)


def weight_decay_only():
    """Batches over 8 pairs and a step whose loss only shrinks the weight: the loop's arguments."""
    batches = lambda rng, shard: pair_batches(np.arange(8), 4, rng, shard)  # noqa: E731
    return batches, 2, lambda m, batch, device, generator: (m.weight ** 2).sum() + m.bias.sum() * 0


def test_non_finite_validation_scores_never_count_as_the_best(tiny_split):
    for bad in (math.nan, math.inf, -math.inf):
        broken = FixedScores(lambda items, bad=bad: torch.where(items == 7, bad, items.float()), tiny_split.n_items)
        with pytest.warns(RuntimeWarning, match=rf"{len(valid_users(tiny_split))} of \d+ scores are not finite"):
            assert validation(broken, tiny_split) == -math.inf  # NaN scores gave 1.0 before

    # through the training loop: epoch 2 diverges, so epoch 1 stays the best and its weights are kept
    sane = FixedScores(lambda items: -items.float(), tiny_split.n_items)
    diverged = FixedScores(lambda items: torch.full(items.shape, math.nan), tiny_split.n_items)
    module = torch.nn.Linear(1, 1)
    epochs, weights = iter([sane, diverged, diverged]), []

    def validate(m: torch.nn.Module) -> float:
        weights.append(m.weight.detach().clone())
        return validation(next(epochs), tiny_split)

    with pytest.warns(RuntimeWarning, match="not finite"):
        result = fit(module, *weight_decay_only(), validate, pair_training(epochs=3, progress=False))
    assert result.best_epoch == 1 and result.best_metric == pytest.approx(validation(sane, tiny_split))
    assert [row["valid_ndcg@10"] for row in result.history][1:] == [-math.inf, -math.inf]
    assert torch.equal(module.weight, weights[0]) and not torch.equal(weights[0], weights[2])


def test_training_whose_every_validation_diverged_is_refused(tiny_split):
    diverged = FixedScores(lambda items: torch.full(items.shape, math.nan), tiny_split.n_items)
    module = torch.nn.Linear(1, 1)

    with pytest.warns(RuntimeWarning, match="not finite"), pytest.raises(ValueError, match="training diverged: all 2"):
        fit(module, *weight_decay_only(), lambda m: validation(diverged, tiny_split), pair_training(epochs=2, progress=False))
