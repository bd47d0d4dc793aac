"""Next-item losses over a shared item embedding table. Row 0 of the table is padding and never a target.

Every loss takes `hidden` (N, D), the model's state at the N supervised positions, `targets` (N,) the
item that came next, and `table` (I + 1, D) the output item embeddings.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> hidden, table = torch.randn(4, 8, generator=g), torch.randn(11, 8, generator=g)
>>> targets = torch.tensor([1, 2, 3, 10])
>>> bool(full_softmax(hidden, targets, table) > 0)
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "sampled", "inbatch", "bce")


def full_softmax(hidden: torch.Tensor, targets: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the whole catalogue (the padding column excluded)."""
    logits = hidden @ table[1:].T  # (N, I): column j is item j + 1
    return F.cross_entropy(logits.float(), targets - 1)


def sampled_softmax(
    hidden: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, n_negatives: int,
    generator: torch.Generator | None = None, log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of the target against `n_negatives` items shared by the batch.

    Negatives are drawn uniformly, or, when `log_q` (I + 1,) holds log sampling probabilities, from that
    distribution with the logit correction `logit - log q` so the estimate stays consistent. A negative
    equal to a row's target is masked out of that row.
    """
    n_items = table.shape[0] - 1
    if log_q is None:
        negatives = torch.randint(1, n_items + 1, (n_negatives,), generator=generator, device="cpu")
    else:
        negatives = torch.multinomial(log_q[1:].exp(), n_negatives, replacement=True, generator=generator) + 1
    negatives = negatives.to(table.device)
    positive = (hidden * table[targets]).sum(-1, keepdim=True)  # (N, 1)
    negative = hidden @ table[negatives].T  # (N, M)
    if log_q is not None:
        positive = positive - log_q[targets].unsqueeze(1)
        negative = negative - log_q[negatives].unsqueeze(0)
    negative = negative.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), -torch.inf)
    logits = torch.cat([positive, negative], dim=1).float()  # (N, 1 + M); the target is column 0
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))


def in_batch_softmax(hidden: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each target against the batch's distinct targets (the in-batch negatives), each
    logit corrected by - log q (the item's share of training targets), since popular items are drawn as
    negatives more often (Yi et al., RecSys 2019). Memory: (N, distinct targets), whatever the catalogue.

    >>> h, t = torch.tensor([[4.0, 0.0], [0.0, 4.0]]), torch.tensor([1, 2])
    >>> table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # when the batch holds every item: full softmax
    >>> float(in_batch_softmax(h, t, table, torch.zeros(3))) == float(full_softmax(h, t, table))
    True
    """
    candidates, column = torch.unique(targets, return_inverse=True)  # (M,), (N,)
    logits = hidden @ table[candidates].T - log_q[candidates].unsqueeze(0)  # (N, M)
    return F.cross_entropy(logits.float(), column)


def log_target_share(targets: torch.Tensor, n_items: int) -> torch.Tensor:
    """(I + 1,) log of each item's share of the training targets (items never a target: log of a tiny share)."""
    counts = torch.bincount(targets, minlength=n_items + 1).double()
    return torch.log((counts + 1e-3) / counts.sum()).float()


def other_items(targets: torch.Tensor, n_items: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One item per target drawn uniformly from the n_items - 1 items other than that target.

    >>> other_items(torch.tensor([1, 2]), 2).tolist()
    [2, 1]
    """
    if n_items < 2:
        raise ValueError("drawing a negative needs at least 2 items")
    draw = torch.randint(1, n_items, targets.shape, generator=generator, device="cpu").to(targets.device)
    return draw + (draw >= targets).long()  # the draw-th item once the target is skipped


def binary_cross_entropy(
    hidden: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The original SASRec loss: the target against one uniformly drawn negative per position."""
    n_items = table.shape[0] - 1
    negatives = other_items(targets, n_items, generator)
    positive = (hidden * table[targets]).sum(-1).float()
    negative = (hidden * table[negatives]).sum(-1).float()
    return (F.softplus(-positive) + F.softplus(negative)).mean()
