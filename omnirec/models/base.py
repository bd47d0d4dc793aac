"""The model contract. Masking of seen items and top-k are written once, here.

Every model: `fit(data) -> self`, `score(batch, items=None) -> (B, I) scores`,
`recommend(batch, k, exclude_seen=True) -> (ids, scores)`, `save(path)` / `load(path)`.
Scores are torch tensors with one column per dense item id; column 0 is padding.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> from omnirec.models.popularity import Popularity
>>> split = split_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=30, n_items=20))))
>>> model = Popularity().fit(split.train_data())
>>> ids, scores = model.recommend(split.histories("test").batch([1, 2]), k=5)
>>> ids.shape
(2, 5)
"""

from __future__ import annotations

import json
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from omnirec.compress import decompress_state
from omnirec.config import config_hash, from_dict, to_dict
from omnirec.data.dataset import TrainData
from omnirec.features.sequences import Histories, UserBatch
from omnirec.utils import atomic_savez, atomic_write_text, file_sha256

FORMAT = "omnirec.model/1"


class NotFittedError(RuntimeError):
    """`score` or `save` called before `fit`."""


def mask_seen(scores: torch.Tensor, batch: UserBatch) -> torch.Tensor:
    """Set the padding column and every item in each row's history to -inf, in place."""
    scores[:, 0] = -torch.inf
    rows = np.repeat(np.arange(len(batch.users)), batch.lengths())
    if len(rows):
        scores[torch.from_numpy(rows).to(scores.device), torch.from_numpy(batch.items).to(scores.device)] = -torch.inf
    return scores


SCORE_BUDGET_BYTES = 512 * 2**20  # the most a (users x items) float32 score block may take


def rows_per_block(n_items: int, most: int = 2048, budget: int = SCORE_BUDGET_BYTES) -> int:
    """How many users to score at once so that their (B, I + 1) float32 scores fit in `budget`: the full
    `most` on small catalogues, fewer on large ones (1,000,000 items: 134 users per 512 MiB).

    >>> rows_per_block(12_000), rows_per_block(1_000_000)
    (2048, 134)
    """
    return int(max(1, min(most, budget // (4 * (n_items + 1)))))


def first_target_ndcg(
    score: Callable[[UserBatch], torch.Tensor], histories: Histories, targets: Histories, users: np.ndarray,
    n_items: int, k: int = 10, batch_size: int = 1024,
) -> float:
    """Mean NDCG@k of each of `users`' first target, ranked by `score` against every item not in the history.

    Ties are broken as the test evaluation breaks them (`top_k`, used by `full_ranking_eval`): at random
    by (user id, item, seed 0), so the target ranks behind every item scoring higher and behind the tied
    items whose key comes first. This is the same number `full_ranking_eval` reports on the validation
    split, which an expected rank among ties (#better + #tied / 2) would not be: early stopping then
    picks the epoch the test protocol would. Counting only strictly better items put the target first
    among its ties, so a model scoring every item equally got a perfect NDCG.
    A target in the history is masked and gains 0, as in the test. Any non-finite score (NaN or inf,
    as from a diverged epoch) makes the whole validation fail: it returns -inf, which never counts as
    the best, and warns how many scores were not finite.

    >>> none = Histories(np.zeros(202, dtype=np.int64), np.array([], dtype=np.int64))  # 200 users, no history
    >>> wanted = Histories(np.arange(-1, 201).clip(0), np.ones(200, dtype=np.int64))  # each wants item 1
    >>> flat = lambda batch: torch.zeros(len(batch.users), 101)  # 100 items, all tied: a random ranking
    >>> round(first_target_ndcg(flat, none, wanted, np.arange(1, 201), n_items=100), 2)  # 0.045 expected
    0.03
    >>> right = lambda batch: torch.eye(101)[[1] * len(batch.users)]  # item 1 first for everyone
    >>> first_target_ndcg(right, none, wanted, np.arange(1, 201), n_items=100)
    1.0
    """
    batch_size = rows_per_block(n_items, batch_size)
    gains, n_bad, n_scores = [], 0, 0
    for start in range(0, len(users), batch_size):
        batch = histories.batch(users[start : start + batch_size])
        raw = score(batch).float().cpu()  # (B, I + 1)
        n_bad += int((~torch.isfinite(raw[:, 1:])).sum())
        n_scores += raw[:, 1:].numel()
        if n_bad:
            continue  # the validation has failed; only the count is still wanted
        scores = mask_seen(raw, batch)
        wanted = torch.from_numpy(targets.items[targets.indptr[batch.users]])  # (B,)
        rank = _target_rank(scores, wanted, torch.from_numpy(batch.users))  # (B,)
        reachable = torch.isfinite(scores.gather(1, wanted[:, None]))[:, 0]  # (B,) False: target in the history
        gains.append(torch.where(reachable & (rank < k), 1.0 / torch.log2(rank.double() + 2.0), 0.0))
    if n_bad:
        warnings.warn(f"validation failed: {n_bad} of {n_scores} scores are not finite (NaN or inf); it counts "
                      "as NDCG -inf, so these weights are never kept as the best", RuntimeWarning, stacklevel=2)
        return -math.inf
    return float(torch.cat(gains).mean()) if gains else 0.0


def _target_rank(scores: torch.Tensor, wanted: torch.Tensor, row_keys: torch.Tensor) -> torch.Tensor:
    """(B,) items ahead of each row's `wanted` item in `top_k`'s order: those scoring higher, then the tied
    ones with a smaller tie key. Keys are computed only for the rows with ties (few, for a trained model)."""
    target = scores.gather(1, wanted[:, None])  # (B, 1)
    rank = (scores > target).sum(1)  # (B,)
    # rows where another item ties a reachable target (a masked one, -inf, ties the other masked items)
    tied = (((scores == target).sum(1) > 1) & torch.isfinite(target[:, 0])).nonzero().squeeze(1)
    if len(tied):
        keys = tie_keys(row_keys[tied, None], torch.arange(scores.shape[1])[None, :])  # (b, I + 1)
        before = keys < keys.gather(1, wanted[tied, None])
        rank[tied] += ((scores[tied] == target[tied]) & before).sum(1)
    return rank


def reported(model: object, validate: Callable[[Any], float] | None) -> Callable[[Any], float] | None:
    """`validate`, also handing each result to `model.on_validation(count, value)` where the model has that
    hook (a hyperparameter search sets it to prune bad trials; raising there stops training)."""
    hook = getattr(model, "on_validation", None)
    if validate is None or hook is None:
        return validate
    count = iter(range(1, 1 << 30))

    def wrapped(module: Any) -> float:
        value = validate(module)
        hook(next(count), value)
        return value

    return wrapped


_PRIME = 2_147_483_647  # 2**31 - 1


def _mix(x: torch.Tensor) -> torch.Tensor:
    mask = 0x7FFFFFFF
    for mult in (0x2C1B3C6D, 0x297A2D39):
        x = ((x ^ (x >> 15)) * mult) & mask
    return x ^ (x >> 16)


def tie_keys(rows: torch.Tensor, items: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Pseudo-random int64 keys, a pure function of (row key, item id, seed): the tie-break order.

    rows: (B, 1) and items: (B, W) or (1, W), broadcast together. Each row orders items by an affine
    map (a * item + b) mod (2**31 - 1) with (a, b) hashed from the row key: a different scramble
    per user, at three integer operations per item.
    """
    a = _mix(rows * 0x9E3779B1 + seed * 0xC2B2AE3D) % (_PRIME - 1) + 1  # (B, 1), never 0
    b = _mix(rows * 0x85EBCA77 + seed + 1)  # (B, 1)
    return (items * a + b) % _PRIME


def top_k(
    scores: torch.Tensor, k: int, row_keys: torch.Tensor | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, k) item ids and scores, best first; equal scores are ordered at random.

    `torch.topk` orders ties by position, which would favour low ids; ids follow first appearance
    and so correlate with popularity, so a fixed order would flatter models that tie a lot. The
    random order depends only on (row key, item, seed): pass user ids as `row_keys` and a user's
    list does not depend on the other users in the batch.
    Slots left without a finite score (fewer than k unmasked items) hold id 0 and score -inf.
    """
    n_rows, n_cols = scores.shape
    kept = min(k, n_cols)
    rows = (torch.arange(n_rows) if row_keys is None else torch.as_tensor(row_keys)).to(scores.device)[:, None]
    # One wider top-k holds, for almost every row, all the items tied with the k-th best.
    values, ids = torch.topk(scores, min(2 * kept + 64, n_cols), dim=1)  # (B, W)
    head = values[:, : kept + 1]
    if ((head[:, :-1] == head[:, 1:]) & torch.isfinite(head[:, 1:])).any():
        values, ids = _order_ties(values, ids, tie_keys(rows, ids, seed))
        overflow = (values[:, -1] == values[:, kept - 1]) & (values.shape[1] < n_cols)  # tie group cut off
        if overflow.any():  # a tie group larger than the window: choose among all its members
            at = overflow.nonzero().squeeze(1)
            ids[at, :kept] = _big_tie_group(scores[at], values[at], ids[at], rows[at], kept, seed)
    values, ids = values[:, :kept], ids[:, :kept]
    if k > kept:
        values = torch.nn.functional.pad(values, (0, k - kept), value=-torch.inf)
        ids = torch.nn.functional.pad(ids, (0, k - kept), value=0)
    return ids.masked_fill(torch.isneginf(values), 0), values


def _big_tie_group(
    scores: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, k: int, seed: int
) -> torch.Tensor:
    """(B, k) ids where the k-th best value b is shared by more items than the window holds.

    Items scoring above b all lie in the window (it ends inside the tie group); the rest of the list
    is the tied items with the smallest keys, drawn from every column.
    """
    boundary = values[:, k - 1 : k]  # (B, 1)
    n_above = (values > boundary).sum(dim=1, keepdim=True)  # (B, 1), < k
    items = torch.arange(scores.shape[1], device=scores.device)[None, :]
    keys = tie_keys(rows, items, seed).masked_fill(scores != boundary, torch.iinfo(torch.int64).max)
    tied = torch.topk(keys, k, dim=1, largest=False).indices  # (B, k) tied items, smallest keys first
    slot = torch.arange(k, device=scores.device)[None, :]
    from_tied = tied.gather(1, (slot - n_above).clamp(min=0))
    return torch.where(slot < n_above, ids[:, :k], from_tied)


def _order_ties(values: torch.Tensor, ids: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-sort (B, W) top lists by value, breaking ties by `keys` (B, W)."""
    by_key = torch.argsort(keys, dim=1)
    values, ids = values.gather(1, by_key), ids.gather(1, by_key)
    by_value = torch.argsort(values, dim=1, descending=True, stable=True)
    return values.gather(1, by_value), ids.gather(1, by_value)


def as_scores(values: np.ndarray | sp.spmatrix | torch.Tensor) -> torch.Tensor:
    """Any score matrix as a float32 torch tensor (zero-copy for float32 numpy)."""
    if sp.issparse(values):
        values = values.toarray()
    if isinstance(values, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return values.float()


@dataclass(frozen=True)
class NoConfig:
    """Models without hyperparameters."""


class Recommender(ABC):
    """Base class of every model. Subclasses set `name` and `Config`, and implement the four hooks."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type] = NoConfig
    # What the model does with `TrainData.valid`. True: it stops early on the validation targets and then
    # refits itself on train + validation (the neural models). False: it ignores them, so the test protocol
    # fits it on train + validation instead (`Split.refit_data`), and every model has learnt from the same
    # items when it ranks the test targets.
    learns_from_validation: ClassVar[bool] = False

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(self.config).__name__}")
        self.n_users = 0
        self.n_items = 0

    # -- hooks ---------------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, data: TrainData) -> None:
        """Learn from the training data."""

    @abstractmethod
    def _score(self, batch: UserBatch) -> np.ndarray | sp.spmatrix | torch.Tensor:
        """(B, n_items + 1) scores for the batch, a fresh array the caller may modify."""

    @abstractmethod
    def _get_state(self) -> dict[str, np.ndarray]:
        """The learned arrays, by name."""

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `_get_state` returned."""

    # -- the contract --------------------------------------------------------------------------
    def fit(self, data: TrainData) -> Self:
        """Train on `data` and return self."""
        if data.interactions.height == 0:
            raise ValueError(f"{self.name}: no training interactions")
        self.n_users, self.n_items = data.n_users, data.n_items
        self._fit(data)
        return self

    def _check_fitted(self) -> None:
        if self.n_items == 0:
            raise NotFittedError(f"{self.name}: call fit() or load() first")

    def score(self, batch: UserBatch, items: np.ndarray | None = None) -> torch.Tensor:
        """(B, n_items + 1) scores; with `items` (B, C) candidate ids, only those: (B, C)."""
        self._check_fitted()
        if len(batch.users) == 0:
            scores = torch.empty((0, self.n_items + 1))
        else:
            scores = as_scores(self._score(batch))
        if scores.shape != (len(batch.users), self.n_items + 1):
            raise RuntimeError(f"{self.name} scored shape {tuple(scores.shape)}; expected ({len(batch.users)}, {self.n_items + 1})")
        if items is not None:
            return scores.gather(1, torch.as_tensor(items, dtype=torch.int64, device=scores.device))
        return scores

    def recommend(self, batch: UserBatch, k: int = 10, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) dense item ids and their scores, best first; history items are excluded by default.

        Where fewer than k items are left to recommend, the empty slots hold id 0 and score -inf.
        """
        scores = self.score(batch)
        if exclude_seen:
            mask_seen(scores, batch)
        else:
            scores[:, 0] = -torch.inf
        ids, values = top_k(scores, k, row_keys=torch.from_numpy(batch.users))
        return ids.cpu().numpy(), values.cpu().numpy()

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write `model.json` (name, config, hash, sizes) and `state.npz` into the folder `path`."""
        self._check_fitted()
        path = Path(path)
        state = self._get_state()
        atomic_savez(path / "state.npz", state)
        meta = {  # written last, with the state's checksum: a torn save is detected at load
            "format": FORMAT, "model": self.name, "config": to_dict(self.config),
            "config_hash": config_hash(self.config), "n_users": self.n_users, "n_items": self.n_items,
            "state_sha256": file_sha256(path / "state.npz"),
        }
        atomic_write_text(path / "model.json", json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a folder written by `save` of this same model class."""
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        if meta.get("format") != FORMAT or meta.get("model") != cls.name:
            raise ValueError(f"{path}: holds model {meta.get('model')!r}, not {cls.name!r}")
        if file_sha256(path / "state.npz") != meta.get("state_sha256"):
            raise ValueError(f"{path}: state.npz does not match model.json (an interrupted save?)")
        config = from_dict(cls.Config, meta["config"])
        if config_hash(config) != meta.get("config_hash"):
            raise ValueError(f"{path}: config does not match its recorded hash")
        model = cls(config)
        model.n_users, model.n_items = meta["n_users"], meta["n_items"]
        with np.load(path / "state.npz", allow_pickle=False) as npz:
            model._set_state(decompress_state({k: npz[k] for k in npz.files}))  # a no-op unless compressed
        return model


def sparse_state(prefix: str, matrix: sp.spmatrix) -> dict[str, np.ndarray]:
    """A CSR matrix as plain arrays for `_get_state`."""
    m = sp.csr_matrix(matrix)
    return {f"{prefix}.data": m.data, f"{prefix}.indices": m.indices, f"{prefix}.indptr": m.indptr,
            f"{prefix}.shape": np.array(m.shape)}


def sparse_from_state(prefix: str, state: dict[str, np.ndarray]) -> sp.csr_matrix:
    """Inverse of `sparse_state`."""
    shape = tuple(int(x) for x in state[f"{prefix}.shape"])
    return sp.csr_matrix((state[f"{prefix}.data"], state[f"{prefix}.indices"], state[f"{prefix}.indptr"]), shape=shape)
