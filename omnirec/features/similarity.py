"""Similarity between items: the cosine of their user columns (item-kNN, the co-occurrence source), a
per-row top-k, low-dimensional item vectors for diversity (intra-list similarity, MMR), and what an item
without interactions inherits from its nearest items by text.

>>> import scipy.sparse as sp
>>> m = sp.csr_matrix(np.array([[0, 0, 0], [0, 1, 1], [0, 1, 0]], dtype=np.float32))  # (U + 1, I + 1)
>>> cosine_similarity(m, shrink=0.0).toarray().astype(float).round(2).tolist()
[[0.0, 0.0, 0.0], [0.0, 0.0, 0.71], [0.0, 0.71, 0.0]]
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.preprocessing import normalize

from omnirec.data.histories import Histories


def cosine_similarity(matrix: sp.csr_matrix, shrink: float) -> sp.csr_matrix:
    """(I, I) item-item cosine of the columns of a (U, I) matrix: x_i.x_j / (|x_i| |x_j| + shrink), diagonal 0."""
    x = sp.csc_matrix(matrix, dtype=np.float32)
    co = (x.T @ x).tocsr()  # (I, I) co-occurrence
    norms = np.sqrt(co.diagonal()).astype(np.float32)
    co.setdiag(0)
    co.eliminate_zeros()
    rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
    co.data = co.data / (norms[rows] * norms[co.indices] + shrink + 1e-12)
    return co


def keep_top_k(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of each row of a CSR matrix."""
    matrix = matrix.tocsr(copy=True)
    lengths = np.diff(matrix.indptr)
    for row in np.flatnonzero(lengths > k):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        values = matrix.data[start:end]
        drop = np.argpartition(-values, k)[k:]
        values[drop] = 0.0
    matrix.eliminate_zeros()
    return matrix


def item_vectors_from_matrix(matrix: sp.csr_matrix, dim: int = 64, seed: int = 0) -> np.ndarray:
    """(I + 1, dim) unit item vectors for intra-list diversity: a truncated SVD of the item x user matrix.

    Cosine in this space approximates cosine of the items' user columns, at a fraction of the cost;
    an item whose column lies outside the kept dimensions can get a (near) zero vector.
    """
    items = normalize(sp.csr_matrix(matrix.T, dtype=np.float32))  # (I, U)
    dim = max(1, min(dim, min(items.shape) - 1))
    vectors = TruncatedSVD(n_components=dim, random_state=seed).fit_transform(items)
    return normalize(vectors).astype(np.float32)


def untrained_items(sequences: Histories, n_items: int) -> np.ndarray:
    """(I + 1,) True for the items no sequence of `sequences` holds (index 0, padding, included).

    >>> untrained_items(Histories(np.array([0, 2]), np.array([1, 3])), 3).tolist()
    [True, False, True, False]
    """
    return np.bincount(sequences.items, minlength=n_items + 1) == 0


def text_inheritance(vectors: np.ndarray, untrained: np.ndarray, m: int, chunk: int = 1024) -> sp.csr_matrix:
    """(I + 1, I + 1) column map M, scores @ M: the identity on trained items; an untrained item's column is
    its `m` nearest trained items by text cosine, weighted by their positive cosines (summing to 1; none
    where no trained item's cosine is positive). Row and column 0 (padding) are empty.

    >>> v = np.array([[0, 0], [1, 0], [0, 1], [1, 0.1]], dtype=np.float32)  # item 3 is like item 1
    >>> text_inheritance(v, np.array([True, False, False, True]), m=1).toarray().tolist()
    [[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    n = len(vectors)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    trained = np.flatnonzero(~untrained[1:]) + 1
    heirs = np.flatnonzero(untrained[1:]) + 1
    rows, cols, values = [trained], [trained], [np.ones(len(trained), dtype=np.float32)]
    m = min(m, len(trained))
    for start in range(0, len(heirs), chunk):
        part = heirs[start:start + chunk]
        sims = unit[part] @ unit[trained].T  # (c, T)
        nearest = np.argpartition(-sims, m - 1, axis=1)[:, :m]  # (c, m)
        weights = np.clip(np.take_along_axis(sims, nearest, axis=1), 0.0, None)
        weights = weights / np.maximum(weights.sum(1, keepdims=True), 1e-12)
        rows.append(trained[nearest].ravel())
        cols.append(np.repeat(part, m))
        values.append(weights.ravel().astype(np.float32))
    matrix = sp.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    matrix.eliminate_zeros()
    return matrix
