"""Evaluation protocols. `full_ranking_eval` (the default everywhere) ranks every item of the catalogue
for every evaluated user, with the user's history masked, in chunks so memory stays bounded.
`sampled_ranking_eval` ranks the target among sampled negatives; it exists only to compare with
papers that used it, and its results are labelled as such.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> from omnirec.models.popularity import Popularity
>>> split = split_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=40, n_items=30))))
>>> model = Popularity().fit(split.train_data())
>>> result = full_ranking_eval(model, split.histories("test"), split.targets("test"), ks=(5,))
>>> result.protocol, len(result.users)
('full', 40)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from omnirec.data.histories import Histories, UserBatch
from omnirec.evaluate import metrics
from omnirec.models.base import Recommender
from omnirec.topk import mask_seen, rows_per_block, tie_keys, top_k


@dataclass
class EvalResult:
    """Per-user metric values (aligned with `users`) and their summary."""

    protocol: str
    users: np.ndarray
    per_user: dict[str, np.ndarray]
    summary: dict[str, float]
    eval_s: float
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, metric: str) -> float:
        return self.summary[metric]


def _padded_targets(batch: UserBatch, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, T) distinct target ids per row, right-padded with -1, and (B,) their counts."""
    csr = batch.to_csr(n_items)  # sums repeats: one column per distinct target
    counts = np.diff(csr.indptr)
    padded = np.full((len(counts), max(int(counts.max(initial=0)), 1)), -1, dtype=np.int64)
    rows = np.repeat(np.arange(len(counts)), counts)
    padded[rows, np.arange(len(rows)) - np.repeat(csr.indptr[:-1], counts)] = csr.indices
    return padded, counts


@dataclass
class _Collected:
    ids: list[np.ndarray] = field(default_factory=list)
    hits: list[np.ndarray] = field(default_factory=list)
    n_relevant: list[np.ndarray] = field(default_factory=list)
    unreachable: int = 0


def _rank_chunk(model: Recommender, batch: UserBatch, targets: UserBatch, k: int, out: _Collected) -> None:
    padded, counts = _padded_targets(targets, model.n_items)  # (B, T), (B,)
    with torch.inference_mode():
        scores = mask_seen(model.score(batch), batch)  # (B, I)
        wanted = torch.from_numpy(padded).to(scores.device)  # (B, T)
        valid = wanted >= 0
        target_scores = scores.gather(1, wanted.clamp(min=0))  # (B, T)
        out.unreachable += int((valid & torch.isneginf(target_scores)).sum())
        ids, _ = top_k(scores, k, row_keys=torch.from_numpy(batch.users))  # (B, K); empty slots are 0
        hits = (ids[:, :, None] == wanted[:, None, :]).any(dim=2)  # (B, K)
    out.hits.append(hits.cpu().numpy())
    out.n_relevant.append(counts)
    out.ids.append(ids.cpu().numpy().astype(np.int32))


def full_ranking_eval(
    model: Recommender,
    histories: Histories,
    targets: Histories,
    ks: tuple[int, ...] = (10, 20),
    batch_size: int = 2048,
    item_users: np.ndarray | None = None,
    item_vectors: np.ndarray | sp.spmatrix | None = None,
    progress: bool = False,
) -> EvalResult:
    """Rank the whole catalogue for every user with targets; history items are masked (they cannot be hit).

    `item_users` (distinct training users per item) enables novelty; `item_vectors` enables intra-list
    diversity. Targets that are also in the history are counted in `notes` as unreachable.
    """
    users = np.flatnonzero(targets.lengths() > 0)
    if len(users) == 0:
        raise ValueError("no user has a target item to evaluate")
    k = max(ks)
    out = _Collected()
    start = time.perf_counter()
    batch_size = rows_per_block(model.n_items, batch_size)  # the score block stays bounded on large catalogues
    chunks = range(0, len(users), batch_size)
    for lo in tqdm(chunks, desc=f"eval {model.name}", unit="chunk", disable=not progress or len(chunks) < 3, leave=False):
        chunk = users[lo : lo + batch_size]
        _rank_chunk(model, histories.batch(chunk), targets.batch(chunk), k, out)
    per_user, summary = _summarise(out, ks, model.n_items, item_users, item_vectors, histories.n_users)
    notes = [f"{out.unreachable} target(s) were in the user's history and masked"] if out.unreachable else []
    return EvalResult("full", users, per_user, summary, time.perf_counter() - start, notes)


def list_eval(
    recommend: Callable[[UserBatch], np.ndarray],
    histories: Histories,
    targets: Histories,
    n_items: int,
    ks: tuple[int, ...] = (10, 20),
    batch_size: int = 1024,
    item_users: np.ndarray | None = None,
    item_vectors: np.ndarray | sp.spmatrix | None = None,
    progress: bool = False,
    label: str = "lists",
) -> EvalResult:
    """The metrics of `full_ranking_eval` for final lists made by anything (a pipeline with re-ranking and
    fallback, not only a model's top-k): `recommend(batch)` returns (B, max(ks)) dense ids, 0 = empty slot.
    Listed items that are in the history count as misses, as they would be for the user."""
    users = np.flatnonzero(targets.lengths() > 0)
    if len(users) == 0:
        raise ValueError("no user has a target item to evaluate")
    k = max(ks)
    out = _Collected()
    start = time.perf_counter()
    chunks = range(0, len(users), batch_size)
    for lo in tqdm(chunks, desc=f"eval {label}", unit="chunk", disable=not progress, leave=False):
        chunk = users[lo : lo + batch_size]
        ids = np.asarray(recommend(histories.batch(chunk)), dtype=np.int64)
        if ids.shape != (len(chunk), k):
            raise ValueError(f"recommend returned shape {ids.shape}; expected ({len(chunk)}, {k})")
        padded, counts = _padded_targets(targets.batch(chunk), n_items)
        out.hits.append(((ids[:, :, None] == padded[:, None, :]) & (ids[:, :, None] > 0)).any(axis=2))
        out.ids.append(ids)
        out.n_relevant.append(counts)
    per_user, summary = _summarise(out, ks, n_items, item_users, item_vectors, histories.n_users)
    return EvalResult("full-lists", users, per_user, summary, time.perf_counter() - start)


def _summarise(
    out: _Collected, ks: tuple[int, ...], n_items: int, item_users: np.ndarray | None,
    item_vectors: np.ndarray | sp.spmatrix | None, n_users: int,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-user metric values and their summary (means, plus catalogue-level coverage and Gini)."""
    ids, hits, n_relevant = np.concatenate(out.ids), np.concatenate(out.hits), np.concatenate(out.n_relevant)
    per_user = metrics.accuracy_metrics(hits, n_relevant, ks)
    summary = _beyond_accuracy(ids, ks, n_items, per_user, item_users, item_vectors, n_users)
    summary.update({name: float(values.mean()) for name, values in per_user.items()})
    return per_user, summary


def _beyond_accuracy(
    ids: np.ndarray, ks: tuple[int, ...], n_items: int, per_user: dict[str, np.ndarray],
    item_users: np.ndarray | None, item_vectors: np.ndarray | sp.spmatrix | None, n_users: int,
) -> dict[str, float]:
    summary: dict[str, float] = {}
    for k in ks:
        top = ids[:, :k]
        summary[f"coverage@{k}"] = metrics.coverage(top, n_items)
        summary[f"gini@{k}"] = metrics.gini(top, n_items)
        if item_users is not None:
            per_user[f"novelty@{k}"] = metrics.novelty(top, item_users, n_users)
        if item_vectors is not None:
            per_user[f"ild@{k}"] = metrics.intra_list_diversity(top, item_vectors)
    return summary


def _draw_unseen(seen: set[int], n_items: int, n: int, probabilities: np.ndarray | None,
                 rng: np.random.Generator) -> list[int]:
    """`n` distinct items not in `seen`: rejection sampling while it is cheap, then an exact draw."""
    chosen: list[int] = []
    taken = set(seen)
    for _ in range(8):
        for item in rng.choice(np.arange(1, n_items + 1), size=2 * n, p=probabilities).tolist():
            if item not in taken:
                taken.add(item)
                chosen.append(item)
                if len(chosen) == n:
                    return chosen
    allowed = np.setdiff1d(np.arange(1, n_items + 1), np.fromiter(taken, dtype=np.int64))
    weights = None if probabilities is None else probabilities[allowed - 1]
    if weights is not None and np.count_nonzero(weights) < n - len(chosen):
        weighted = len(chosen) + np.count_nonzero(weights)  # those drawn already had a weight too
        raise ValueError(f"only {weighted} unseen items have a sampling weight; cannot sample {n}")
    p = None if weights is None else weights / weights.sum()
    return chosen + rng.choice(allowed, size=n - len(chosen), replace=False, p=p).tolist()


def sample_negatives(
    histories: Histories, users: np.ndarray, targets: np.ndarray, n_items: int, n: int,
    probabilities: np.ndarray | None, rng: np.random.Generator,
) -> np.ndarray:
    """(len(users), n) items the user never interacted with and that are not the target, drawn without replacement.

    `probabilities` (n_items,) weights items 1..n_items; None draws uniformly.
    """
    out = np.zeros((len(users), n), dtype=np.int64)
    for row, user in enumerate(users):
        seen = set(histories.items[histories.indptr[user] : histories.indptr[user + 1]].tolist()) | {int(targets[row])}
        if n_items - len(seen) < n:
            raise ValueError(f"user {user} has only {n_items - len(seen)} unseen items; cannot sample {n}")
        out[row] = _draw_unseen(seen, n_items, n, probabilities, rng)
    return out


def sampled_ranking_eval(
    model: Recommender, histories: Histories, targets: Histories, n_negatives: int = 99,
    sampling: str = "uniform", item_counts: np.ndarray | None = None, ks: tuple[int, ...] = (10,),
    seed: int = 0, batch_size: int = 2048,
) -> EvalResult:
    """The target ranked among `n_negatives` sampled unseen items (ties ordered at random, as in full ranking).

    Labelled `sampled-<n>-<sampling>`: not comparable with full-ranking numbers.
    """
    if sampling not in ("uniform", "popularity"):
        raise ValueError(f"sampling={sampling!r}; expected 'uniform' or 'popularity'")
    if (targets.lengths() > 1).any():
        raise ValueError("sampled evaluation takes one target per user (leave-one-out)")
    probabilities = None
    if sampling == "popularity":
        if item_counts is None:
            raise ValueError("popularity sampling needs item_counts")
        weights = np.asarray(item_counts[1:], dtype=np.float64)
        probabilities = weights / weights.sum()
    start = time.perf_counter()
    users = np.flatnonzero(targets.lengths() > 0)
    target_items = targets.items[targets.indptr[users]]
    negatives = sample_negatives(histories, users, target_items, model.n_items, n_negatives, probabilities,
                                 np.random.default_rng(seed))
    ranks = np.zeros(len(users), dtype=np.int64)
    batch_size = rows_per_block(model.n_items, batch_size)
    with torch.inference_mode():
        for lo in range(0, len(users), batch_size):
            sl = slice(lo, lo + batch_size)
            candidates = np.concatenate([target_items[sl, None], negatives[sl]], axis=1)  # (B, 1 + N)
            scores = model.score(histories.batch(users[sl]), items=candidates).cpu()
            keys = tie_keys(torch.from_numpy(users[sl])[:, None], torch.from_numpy(candidates), seed)
            ahead = (scores[:, 1:] > scores[:, :1]) | ((scores[:, 1:] == scores[:, :1]) & (keys[:, 1:] < keys[:, :1]))
            ranks[sl] = ahead.sum(dim=1).numpy()
    k = max(ks)
    hits = np.arange(k)[None, :] == ranks[:, None]
    per_user = metrics.accuracy_metrics(hits, np.ones(len(users), dtype=np.int64), ks)
    summary = {name: float(v.mean()) for name, v in per_user.items()}
    return EvalResult(f"sampled-{n_negatives}-{sampling}", users, per_user, summary, time.perf_counter() - start)
