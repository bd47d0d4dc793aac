"""Nearest-neighbour search over item vectors by inner product: exact below a size threshold, faiss
(HNSW graph or IVF lists) above it. Callers pass unit vectors when they want cosine similarity.

>>> import numpy as np
>>> vectors = np.eye(4, dtype=np.float32)
>>> index = VectorIndex(vectors, ids=np.array([10, 11, 12, 13]))
>>> ids, scores = index.search(vectors[[2]], k=2)
>>> int(ids[0, 0]), float(scores[0, 0]), index.kind
(12, 1.0, 'exact')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("auto", "exact", "hnsw", "ivf", "hnsw_sq8", "ivf_sq8")  # *_sq8: vectors stored as 8-bit scalars, 4x smaller


@dataclass(frozen=True)
class IndexConfig:
    """kind: "auto" (exact below `exact_below` vectors, HNSW above), "exact", "hnsw" or "ivf", or their
    compressed forms "hnsw_sq8" / "ivf_sq8" (each dimension stored in 8 bits: a quarter of the memory).
    hnsw_m / ef_construction / ef_search: graph degree and beam widths; nlist / nprobe: IVF lists
    (0 = 4 * sqrt(n)) and lists searched per query."""

    kind: str = "auto"
    exact_below: int = 50_000
    hnsw_m: int = 32
    ef_construction: int = 64
    ef_search: int = 64
    nlist: int = 0
    nprobe: int = 24
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}; expected one of {', '.join(KINDS)}")
        if min(self.hnsw_m, self.ef_construction, self.ef_search, self.nprobe) < 1 or self.nlist < 0:
            raise ValueError("hnsw_m, ef_construction, ef_search and nprobe must be >= 1, nlist >= 0")


def exact_search(vectors: torch.Tensor, queries: torch.Tensor, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(B, k) row numbers of `vectors` with the largest inner products with each query, and those products."""
    k = min(k, vectors.shape[0])
    rows, values = [], []
    for lo in range(0, queries.shape[0], chunk):
        top = torch.topk(queries[lo : lo + chunk] @ vectors.T, k, dim=1)  # (b, k)
        rows.append(top.indices.numpy())
        values.append(top.values.numpy())
    if not rows:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.concatenate(rows), np.concatenate(values)


class VectorIndex:
    """Top-k inner-product search over (N, D) vectors whose rows are named by `ids` (default 0..N-1)."""

    def __init__(self, vectors: np.ndarray, ids: np.ndarray | None = None, config: IndexConfig = IndexConfig()):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise ValueError(f"expected a non-empty (N, D) array of vectors, got shape {vectors.shape}")
        self.ids = np.arange(len(vectors)) if ids is None else np.asarray(ids, dtype=np.int64)
        if len(self.ids) != len(vectors):
            raise ValueError(f"{len(self.ids)} ids for {len(vectors)} vectors")
        self.config = config
        self.dim = vectors.shape[1]
        self.kind = config.kind
        if self.kind == "auto":
            self.kind = "exact" if len(vectors) < config.exact_below else "hnsw"
        self._vectors = torch.from_numpy(vectors)
        self._faiss = None if self.kind == "exact" else self._build(vectors)

    def __len__(self) -> int:
        return len(self.ids)

    def _build(self, vectors: np.ndarray):  # noqa: ANN202 - a faiss index
        import faiss

        c = self.config
        rng = np.random.default_rng(c.seed)
        if self.kind.startswith("hnsw"):
            if self.kind == "hnsw":
                index = faiss.IndexHNSWFlat(self.dim, c.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            else:
                index = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_8bit, c.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                index.train(vectors[rng.choice(len(vectors), size=min(len(vectors), 100_000), replace=False)])
            index.hnsw.efConstruction = c.ef_construction
            index.hnsw.efSearch = c.ef_search
            index.add(vectors)
            return index
        nlist = c.nlist or int(4 * np.sqrt(len(vectors)))
        nlist = max(1, min(nlist, len(vectors) // 39))  # faiss wants >= 39 training points per list
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        sample = vectors[rng.choice(len(vectors), size=min(len(vectors), 256 * nlist), replace=False)]
        index.cp.seed = c.seed
        index.train(sample)
        index.add(vectors)
        index.nprobe = min(c.nprobe, nlist)
        return index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) ids and inner products, best first; slots the index could not fill hold id 0 and -inf."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have {queries.shape[1]} dimensions, the index {self.dim}")
        if self._faiss is None:
            rows, values = exact_search(self._vectors, torch.from_numpy(queries), k)
        else:
            values, rows = self._faiss.search(queries, min(k, len(self)))
        out_ids = np.where(rows >= 0, self.ids[np.maximum(rows, 0)], 0)
        out_values = np.where(rows >= 0, values, -np.inf).astype(np.float32)
        if out_ids.shape[1] < k:  # fewer vectors than k
            pad = k - out_ids.shape[1]
            out_ids = np.pad(out_ids, ((0, 0), (0, pad)))
            out_values = np.pad(out_values, ((0, 0), (0, pad)), constant_values=-np.inf)
        return out_ids, out_values

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of row numbers `rows`."""
        return self._vectors[torch.as_tensor(rows)].numpy()


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true top-k ids (B, k) that the search returned (B, k).

    >>> recall_at_k(np.array([[1, 2]]), np.array([[2, 3]]))
    0.5
    """
    hits = [len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))
