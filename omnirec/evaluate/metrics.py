"""Metrics as pure functions returning per-user values.

Accuracy metrics take `hits` (n, K) booleans (whether the item ranked at position r is relevant, best
first) and `n_relevant` (n,) the size of each user's held-out set. Beyond-accuracy metrics take the
(n, K) recommended ids.

>>> import numpy as np
>>> hits = np.array([[False, True, False]]); n_rel = np.array([1])
>>> float(ndcg(hits, n_rel, 3)[0]), float(mrr(hits, 3)[0]), float(hit_rate(hits, 1)[0])
(0.6309297535714575, 0.5, 0.0)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def hit_rate(hits: np.ndarray, k: int) -> np.ndarray:
    """1 if any relevant item is in the top k."""
    return hits[:, :k].any(axis=1).astype(np.float64)


def recall(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Relevant items in the top k / all relevant items."""
    return hits[:, :k].sum(axis=1) / np.maximum(n_relevant, 1)


def precision(hits: np.ndarray, k: int) -> np.ndarray:
    """Relevant items in the top k / k."""
    return hits[:, :k].sum(axis=1) / k


def f1(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Harmonic mean of precision@k and recall@k (0 where both are 0)."""
    p, r = precision(hits, k), recall(hits, n_relevant, k)
    total = p + r
    return np.divide(2 * p * r, total, out=np.zeros_like(total), where=total > 0)


def ndcg(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """DCG of the top k (binary gains, log2 discount) over the DCG of an ideal ranking."""
    disc = _discounts(k)
    dcg = (hits[:, :k] * disc[: hits[:, :k].shape[1]]).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(n_relevant, k)]
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)


def mrr(hits: np.ndarray, k: int) -> np.ndarray:
    """1 / rank of the first relevant item in the top k, 0 if none."""
    top = hits[:, :k]
    first = top.argmax(axis=1)
    return np.where(top.any(axis=1), 1.0 / (first + 1), 0.0)


def average_precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@k: mean of precision@i at each relevant position i <= k, over min(n_relevant, k)."""
    top = hits[:, :k].astype(np.float64)
    prec_at = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    return (prec_at * top).sum(axis=1) / np.maximum(np.minimum(n_relevant, k), 1)


ACCURACY = ("hr", "recall", "precision", "f1", "ndcg", "mrr", "map")


def accuracy_metrics(hits: np.ndarray, n_relevant: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Every accuracy metric at every k, per user: {'ndcg@10': (n,), ...}."""
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate(hits, k)
        out[f"recall@{k}"] = recall(hits, n_relevant, k)
        out[f"precision@{k}"] = precision(hits, k)
        out[f"f1@{k}"] = f1(hits, n_relevant, k)
        out[f"ndcg@{k}"] = ndcg(hits, n_relevant, k)
        out[f"mrr@{k}"] = mrr(hits, k)
        out[f"map@{k}"] = average_precision(hits, n_relevant, k)
    return out


# ------------------------------------------------------------------------ beyond accuracy


def coverage(recommended: np.ndarray, n_items: int) -> float:
    """Share of the catalogue (items 1..n_items) that appears in at least one list."""
    ids = np.unique(recommended)
    return float(np.count_nonzero(ids > 0) / n_items)


def gini(recommended: np.ndarray, n_items: int) -> float:
    """Gini index of how often each catalogue item is recommended: 0 = all equally, 1 = one item only."""
    counts = np.sort(np.bincount(recommended.ravel(), minlength=n_items + 1)[1:].astype(np.float64))
    total = counts.sum()
    if total == 0:
        return 0.0
    ranks = np.arange(1, n_items + 1)
    return float(((2 * ranks - n_items - 1) * counts).sum() / (n_items * total))


def novelty(recommended: np.ndarray, item_users: np.ndarray, n_users: int) -> np.ndarray:
    """Per user, the mean self-information -log2(share of users who had the item) of the list.

    `item_users` (I + 1,) counts the distinct users of each item; id 0 in a list is an empty slot.
    """
    share = np.clip(np.maximum(item_users, 1.0) / max(n_users, 1), None, 1.0)
    info = (-np.log2(share))[recommended]  # (n, K)
    filled = recommended > 0
    return np.divide((info * filled).sum(axis=1), filled.sum(axis=1), out=np.zeros(len(recommended)),
                     where=filled.any(axis=1))


def intra_list_diversity(recommended: np.ndarray, item_vectors: np.ndarray | sp.spmatrix) -> np.ndarray:
    """Per user, 1 - mean pairwise cosine similarity of the listed items' vectors.

    Vectors are L2-normalised here; id 0 (an empty slot) and items with a zero vector (nothing known
    about them) are left out of the pairs. Uses
    |sum of unit vectors|^2 = K + 2 * (sum of pairwise cosines), so no pair is formed explicitly.
    """
    n, k = recommended.shape
    if k < 2:
        return np.zeros(n)
    if sp.issparse(item_vectors):
        unit = normalize(sp.csr_matrix(item_vectors, dtype=np.float64))
        unit = sp.diags((np.arange(unit.shape[0]) > 0).astype(np.float64)) @ unit
        picks = sp.csr_matrix(
            (np.ones(n * k), recommended.ravel(), np.arange(0, n * k + 1, k)), shape=(n, unit.shape[0])
        )
        summed = picks @ unit  # (n, D)
        sq_norm = np.asarray(summed.multiply(summed).sum(axis=1)).ravel()
        self_sim = np.asarray(picks @ np.asarray(unit.multiply(unit).sum(axis=1))).ravel()
        filled = np.round(self_sim).astype(np.int64)  # listed items that have a (unit) vector
    else:
        unit = normalize(np.asarray(item_vectors, dtype=np.float64))
        unit[0] = 0.0
        summed = np.zeros((n, unit.shape[1]))  # (n, D), accumulated one list position at a time
        for position in range(k):
            summed += unit[recommended[:, position]]
        sq_norm = np.square(summed).sum(axis=1)
        self_sim = np.square(unit).sum(axis=1)[recommended].sum(axis=1)
        filled = np.round(self_sim).astype(np.int64)  # listed items that have a (unit) vector
    pairs = filled * (filled - 1)
    mean_sim = np.divide(sq_norm - self_sim, pairs, out=np.zeros(n), where=pairs > 0)
    return np.where(pairs > 0, 1.0 - mean_sim, 0.0)


# ------------------------------------------------------------------------ rating prediction


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error."""
    predicted, actual = _check_pair(predicted, actual)
    return float(np.sqrt(np.mean((predicted - actual) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean absolute error."""
    predicted, actual = _check_pair(predicted, actual)
    return float(np.mean(np.abs(predicted - actual)))


def per_user_error(users: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user RMSE and MAE (users in sorted order), for paired comparisons of rating models."""
    predicted, actual = _check_pair(predicted, actual)
    if np.shape(users) != predicted.shape:
        raise ValueError(f"users has shape {np.shape(users)}; the predictions have {predicted.shape}")
    order = np.argsort(users, kind="stable")
    uniq, starts = np.unique(np.asarray(users)[order], return_index=True)
    err = (predicted - actual)[order]
    counts = np.diff(np.append(starts, len(err)))
    return {
        "users": uniq,
        "rmse": np.sqrt(np.add.reduceat(err**2, starts) / counts),
        "mae": np.add.reduceat(np.abs(err), starts) / counts,
    }


def _check_pair(predicted: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predicted, actual = np.asarray(predicted, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if predicted.shape != actual.shape or predicted.size == 0:
        raise ValueError(f"need two non-empty arrays of one shape; got {predicted.shape} and {actual.shape}")
    return predicted, actual
