"""Next-item losses checked against naive per-row reference code."""

from __future__ import annotations

import math

import pytest
import torch

from omnirec.train import losses


def draw(n_rows: int = 6, n_items: int = 9, d: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n_rows, d, generator=g, dtype=torch.float64)
    table = torch.randn(n_items + 1, d, generator=g, dtype=torch.float64)
    targets = torch.randint(1, n_items + 1, (n_rows,), generator=g)
    return hidden, targets, table


def naive_softmax_ce(hidden, targets, table, candidates, log_q=None) -> float:
    """Mean over rows of -log p(target) among {target} + the candidates other than the target."""

    def logit(h: list[float], j: int) -> float:
        value = sum(a * b for a, b in zip(h, table[j].tolist(), strict=True))
        return value - (0.0 if log_q is None else float(log_q[j]))

    total = 0.0
    for h, t in zip(hidden.tolist(), targets.tolist(), strict=True):
        logits = [logit(h, t)] + [logit(h, j) for j in candidates if j != t]
        top = max(logits)
        total += top + math.log(sum(math.exp(x - top) for x in logits)) - logits[0]
    return total / len(targets)


def test_full_softmax_equals_naive_log_softmax_over_real_items():
    hidden, targets, table = draw()
    n_items = table.shape[0] - 1
    expected = naive_softmax_ce(hidden, targets, table, range(1, n_items + 1))
    assert float(losses.full_softmax(hidden, targets, table)) == pytest.approx(expected, rel=1e-6)


def test_full_softmax_ignores_the_padding_row():
    hidden, targets, table = draw()
    table.requires_grad_(True)
    base = losses.full_softmax(hidden, targets, table)
    base.backward()
    assert torch.equal(table.grad[0], torch.zeros_like(table.grad[0]))
    bumped = table.detach().clone()
    bumped[0] = 1e3  # a huge padding logit would dominate the softmax if it were a column
    assert float(losses.full_softmax(hidden, targets, bumped)) == pytest.approx(base.item(), rel=1e-12)


def test_sampled_softmax_equals_naive_with_the_same_draw():
    hidden, targets, table = draw()
    n_items, m = table.shape[0] - 1, 7
    got = losses.sampled_softmax(hidden, targets, table, m, generator=torch.Generator().manual_seed(3))
    negatives = torch.randint(1, n_items + 1, (m,), generator=torch.Generator().manual_seed(3)).tolist()
    assert float(got) == pytest.approx(naive_softmax_ce(hidden, targets, table, negatives), rel=1e-6)


def test_sampled_softmax_masks_negatives_equal_to_the_target():
    hidden, _, table = draw(n_items=2)
    targets = torch.tensor([1, 2, 1, 2, 1, 2])
    got = losses.sampled_softmax(hidden, targets, table, 16, generator=torch.Generator().manual_seed(1))
    negatives = torch.randint(1, 3, (16,), generator=torch.Generator().manual_seed(1)).tolist()
    assert {1, 2} <= set(negatives), "the draw must contain both items for this test to mean anything"
    assert float(got) == pytest.approx(naive_softmax_ce(hidden, targets, table, negatives), rel=1e-6)


def test_sampled_softmax_with_only_the_target_to_draw_is_zero():
    hidden, _, table = draw(n_items=1)
    targets = torch.ones(6, dtype=torch.long)
    assert float(losses.sampled_softmax(hidden, targets, table, 4)) == 0.0


def test_sampled_softmax_applies_the_log_q_correction():
    hidden, targets, table = draw(n_items=9)
    q = torch.arange(1, 11, dtype=torch.float64)
    q[0] = 0.0  # padding is never drawn
    log_q = (q / q.sum()).log()
    m = 12
    got = losses.sampled_softmax(hidden, targets, table, m, generator=torch.Generator().manual_seed(5), log_q=log_q)
    negatives = (torch.multinomial(log_q[1:].exp(), m, replacement=True, generator=torch.Generator().manual_seed(5)) + 1).tolist()
    expected = naive_softmax_ce(hidden, targets, table, negatives, log_q=log_q)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(naive_softmax_ce(hidden, targets, table, negatives), rel=1e-3)


def test_sampled_softmax_with_log_q_never_draws_zero_probability_items():
    hidden, targets, table = draw(n_items=4)
    log_q = torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0], dtype=torch.float64).log()  # -inf where q = 0
    targets = torch.full_like(targets, 2)
    got = losses.sampled_softmax(hidden, targets, table, 20, generator=torch.Generator().manual_seed(0), log_q=log_q)
    negatives = (torch.multinomial(log_q[1:].exp(), 20, replacement=True, generator=torch.Generator().manual_seed(0)) + 1).tolist()
    assert set(negatives) == {2, 3}
    # 2 is the target (masked); every draw of 3 counts, as an unbiased sampled softmax needs
    assert float(got) == pytest.approx(naive_softmax_ce(hidden, targets, table, negatives, log_q=log_q), rel=1e-6)
    assert torch.isfinite(got)


def test_binary_cross_entropy_equals_the_naive_formula():
    hidden, targets, table = draw(n_rows=8, n_items=30)
    n_items = table.shape[0] - 1
    got = losses.binary_cross_entropy(hidden, targets, table, generator=torch.Generator().manual_seed(2))
    drawn = torch.randint(1, n_items, targets.shape, generator=torch.Generator().manual_seed(2)).tolist()
    total = 0.0
    for h, t, n in zip(hidden, targets.tolist(), drawn, strict=True):
        n = n if n < t else n + 1  # the n-th item among those other than the target
        sigmoid_pos = 1 / (1 + math.exp(-float(h @ table[t])))
        sigmoid_neg = 1 / (1 + math.exp(-float(h @ table[n])))
        total += -math.log(sigmoid_pos) - math.log(1 - sigmoid_neg)
    assert float(got) == pytest.approx(total / len(drawn), rel=1e-6)


def test_other_items_are_uniform_over_the_items_other_than_the_target():
    """Regression: a clash with the target used to move the draw to target + 1, doubling its chance."""
    n_items, n = 5, 40_000
    negatives = losses.other_items(torch.full((n,), 3), n_items, torch.Generator().manual_seed(0))
    seen = torch.bincount(negatives, minlength=n_items + 1).tolist()
    assert seen[0] == 0 and seen[3] == 0  # never padding, never the target
    shares = [seen[i] / n for i in (1, 2, 4, 5)]
    assert max(shares) - min(shares) < 0.02, shares


def test_other_items_needs_two_items():
    with pytest.raises(ValueError, match="at least 2 items"):
        losses.other_items(torch.tensor([1]), 1)


def test_binary_cross_entropy_never_uses_the_target_as_its_negative():
    """With two items the only valid negative of a target is the other item."""
    hidden, _, table = draw(n_rows=40, n_items=2)
    targets = torch.tensor([1, 2] * 20)
    got = losses.binary_cross_entropy(hidden, targets, table, generator=torch.Generator().manual_seed(0))
    positive = (hidden * table[targets]).sum(-1)
    negative = (hidden * table[3 - targets]).sum(-1)
    expected = (-torch.log(torch.sigmoid(positive)) - torch.log(1 - torch.sigmoid(negative))).mean()
    assert float(got) == pytest.approx(float(expected), rel=1e-6)


GRADIENT_LOSSES = {
    "ce": lambda h, t, w: losses.full_softmax(h, t, w),
    "sampled": lambda h, t, w: losses.sampled_softmax(h, t, w, 8, generator=torch.Generator().manual_seed(0)),
    "sampled-logq": lambda h, t, w: losses.sampled_softmax(h, t, w, 8, generator=torch.Generator().manual_seed(0),
                                                           log_q=torch.full((w.shape[0],), -math.log(w.shape[0] - 1))),
    "bce": lambda h, t, w: losses.binary_cross_entropy(h, t, w, generator=torch.Generator().manual_seed(0)),
}


# bce on a one-item catalogue is no case of this test: it has no negative to draw, and refuses
# (test_binary_cross_entropy_refuses_a_one_item_catalogue)
@pytest.mark.parametrize(
    ("loss", "n_items"),
    [pytest.param(GRADIENT_LOSSES[name], n, id=f"{name}-{n}") for n in (1, 2, 9) for name in GRADIENT_LOSSES
     if (name, n) != ("bce", 1)],
)
def test_gradients_are_finite_and_nonzero(loss, n_items):
    hidden, _, table = draw(n_items=n_items, seed=4)
    hidden, table = hidden.float().mul(10).requires_grad_(True), table.float().mul(10).requires_grad_(True)
    targets = torch.arange(6) % n_items + 1
    value = loss(hidden, targets, table)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(hidden.grad).all() and torch.isfinite(table.grad).all()
    if n_items > 1:
        assert hidden.grad.abs().sum() > 0


def test_binary_cross_entropy_refuses_a_one_item_catalogue():
    hidden, _, table = draw(n_items=1, seed=4)
    with pytest.raises(ValueError, match="at least 2 items"):
        GRADIENT_LOSSES["bce"](hidden, torch.ones(6, dtype=torch.int64), table)


def test_in_batch_softmax_equals_naive_over_the_batch_targets_with_log_q():
    hidden, targets, table = draw(n_rows=8, n_items=6, seed=4)  # repeated targets share a column
    log_q = torch.log(torch.rand(table.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.1)
    expected = naive_softmax_ce(hidden, targets, table, sorted(set(targets.tolist())), log_q=log_q)
    assert float(losses.in_batch_softmax(hidden, targets, table, log_q)) == pytest.approx(expected, rel=1e-6)


def test_log_target_share_sums_to_one_over_targets():
    share = losses.log_target_share(torch.tensor([1, 1, 2, 3]), n_items=4).exp()
    assert share[1] == pytest.approx(0.5, abs=1e-3) and share[4] < 1e-3 and float(share.sum()) == pytest.approx(1.0, abs=1e-2)
