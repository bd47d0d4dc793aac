"""Re-ranking of a scored candidate list: exclusions, boosts and freshness, MMR diversity, per-category caps
and pins, for a whole batch at once.

MMR (Carbonell & Goldstein 1998) picks, step by step, the candidate maximising
(1 - w) * relevance - w * (largest cosine to an item already picked); w = `diversity`. Relevance is the
ranker's score scaled to [0, 1] within each user's candidates, so w means the same for every ranker.

>>> import torch
>>> rel = torch.tensor([[1.0, 0.9, 0.1]])
>>> vecs = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
>>> mmr(rel, vecs, k=2, diversity=0.0).tolist(), mmr(rel, vecs, k=2, diversity=0.6).tolist()
([[0, 1]], [[0, 2]])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class RerankConfig:
    """diversity: MMR weight in [0, 1) (0 = order by relevance); category_cap: most items of one category
    in a list (0 = no cap); exclude_seen: drop items of the user's history; blocked / out_of_stock: item
    ids never shown; boost_items + boost: added to the scaled relevance of those items; freshness:
    added relevance times 2 ** (-age / freshness_half_life) for items first seen `age` ago;
    pins: item id -> 1-based position, placed there whatever their score."""

    diversity: float = 0.0
    category_cap: int = 0
    exclude_seen: bool = True
    blocked: tuple[str, ...] = ()
    out_of_stock: tuple[str, ...] = ()
    boost_items: tuple[str, ...] = ()
    boost: float = 0.0
    freshness: float = 0.0
    freshness_half_life: float = 0.0
    pins: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.diversity < 1:
            raise ValueError(f"diversity must lie in [0, 1), got {self.diversity}")
        if self.category_cap < 0:
            raise ValueError(f"category_cap must be >= 0, got {self.category_cap}")
        if self.freshness and self.freshness_half_life <= 0:
            raise ValueError("freshness needs freshness_half_life > 0 (in the data's time unit)")
        bad = {item: pos for item, pos in self.pins.items() if not isinstance(pos, int) or pos < 1}
        if bad:
            raise ValueError(f"pins: positions are 1-based integers, got {bad}")


def scale_scores(scores: torch.Tensor) -> torch.Tensor:
    """(B, C) scores scaled to [0, 1] per row (min-max over the finite ones); -inf stays -inf."""
    finite = torch.isfinite(scores)
    hi = scores.masked_fill(~finite, -torch.inf).amax(dim=1, keepdim=True)
    lo = scores.masked_fill(~finite, torch.inf).amin(dim=1, keepdim=True)
    span = (hi - lo).clamp(min=1e-12)
    scaled = ((scores - lo) / span).nan_to_num(0.0)
    return scaled.masked_fill(~finite, -torch.inf)


def mmr(rel: torch.Tensor, vectors: torch.Tensor | None, k: int, diversity: float,
        categories: torch.Tensor | None = None, cap: int = 0) -> torch.Tensor:
    """(B, k) positions into the candidates, in list order; -1 where nothing is left to pick.

    rel: (B, C) relevance, -inf for candidates that may not be shown; vectors: (B, C, D) unit item
    vectors (needed when diversity > 0); categories: (B, C) category ids (0 = none, never capped).
    """
    n_rows, n_cands = rel.shape
    rows = torch.arange(n_rows)
    picked = torch.full((n_rows, k), -1, dtype=torch.int64)
    available = torch.isfinite(rel)
    closest = torch.zeros_like(rel)  # largest cosine to an already picked item
    counts = None
    if categories is not None and cap > 0:
        counts = torch.zeros((n_rows, int(categories.max()) + 1), dtype=torch.int64)
    for step in range(min(k, n_cands)):
        gain = (1 - diversity) * rel - diversity * closest if diversity > 0 and step else rel.clone()
        gain = gain.masked_fill(~available, -torch.inf)
        best = gain.argmax(dim=1)  # (B,)
        ok = torch.isfinite(gain[rows, best])
        picked[ok, step] = best[ok]
        available[rows[ok], best[ok]] = False
        if diversity > 0:
            sim = torch.einsum("bcd,bd->bc", vectors, vectors[rows, best])  # (B, C) cosine to the new pick
            closest = torch.where(ok[:, None], torch.maximum(closest, sim), closest)
        if counts is not None:
            cat = categories[rows, best]
            counts[rows[ok], cat[ok]] += 1
            full = (counts.gather(1, categories) >= cap) & (categories > 0)  # (B, C)
            available &= ~full
    return picked


def place_pins(ids: np.ndarray, pins: dict[int, int], k: int) -> np.ndarray:
    """A list of dense ids with each pinned item moved (or inserted) at its 1-based position; length k.

    >>> place_pins(np.array([5, 6, 7]), {9: 1, 6: 3}, k=3).tolist()
    [9, 5, 6]
    """
    rest = [int(i) for i in ids if i not in pins and i != 0]
    out: list[int] = []
    by_position = sorted(pins.items(), key=lambda kv: kv[1])
    for item, position in by_position:
        while len(out) < position - 1 and rest:
            out.append(rest.pop(0))
        out.append(item)
    out += rest
    return np.array(out[:k], dtype=np.int64)
