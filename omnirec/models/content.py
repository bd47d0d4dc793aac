"""TF-IDF content-based recommender: a user profile built from the text of the items in the history."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from omnirec.data.histories import UserBatch
from omnirec.data.train_data import TrainData
from omnirec.models.base import Recommender, sparse_from_state, sparse_state


@dataclass(frozen=True)
class TfidfConfig:
    """Vectoriser settings; `recency`: weight of the i-th most recent history item is recency**i."""

    max_features: int = 50_000
    min_df: int = 1
    ngram_max: int = 1
    sublinear_tf: bool = True
    recency: float = 0.8

    def __post_init__(self) -> None:
        if not 0 < self.recency <= 1:
            raise ValueError("recency must lie in (0, 1]")


def recency_weights(batch: UserBatch, recency: float, n_items: int) -> sp.csr_matrix:
    """(B, I + 1) each user's history items weighted recency**i, i = 0 for the most recent: the profile of
    the history is this @ item vectors."""
    lengths = batch.lengths()
    age = np.repeat(batch.indptr[1:], lengths) - 1 - np.arange(len(batch.items))  # 0 = most recent
    weights = (recency ** age).astype(np.float32)
    return sp.csr_matrix((weights, batch.items, batch.indptr), shape=(len(batch.users), n_items + 1))


class TfidfContent(Recommender):
    """score(u, j) = cosine(profile(u), tfidf(j)), profile(u) = recency-weighted sum of tfidf of u's items.

    Needs item text; it can score items that no user has interacted with.

    >>> TfidfContent().name
    'tfidf'
    """

    name = "tfidf"
    quick = True
    needs_text = True
    adds_items = True
    Config = TfidfConfig
    vocabulary: np.ndarray | None = None  # (V,) the terms, and their (V,) idf: what new texts are weighed by
    idf: np.ndarray | None = None

    def _fit(self, data: TrainData) -> None:
        if data.item_text is None:
            raise ValueError("tfidf needs item text, and this dataset has none")
        c = self.config
        vectorizer = TfidfVectorizer(
            max_features=c.max_features, min_df=c.min_df, ngram_range=(1, c.ngram_max), sublinear_tf=c.sublinear_tf
        )
        texts = list(data.item_text)
        texts[0] = ""  # padding
        self.item_vectors = vectorizer.fit_transform(texts).astype(np.float32).tocsr()  # (I, V), rows L2-normalised
        self.vocabulary, self.idf = np.asarray(vectorizer.get_feature_names_out(), dtype=str), vectorizer.idf_

    def _vectorizer(self) -> TfidfVectorizer:
        """The fitted vectoriser again, from its vocabulary and idf."""
        c = self.config
        if self.vocabulary is None:
            raise ValueError("this tfidf model was saved without its vocabulary: refit it to add items")
        vectorizer = TfidfVectorizer(vocabulary={t: i for i, t in enumerate(self.vocabulary.tolist())},
                                     ngram_range=(1, c.ngram_max), sublinear_tf=c.sublinear_tf)
        vectorizer.idf_ = self.idf
        return vectorizer

    def add_items(self, texts: list[str]) -> None:
        """New items' TF-IDF vectors, by the training vocabulary and idf (words it never saw are not counted)."""
        self._check_fitted()
        new = self._vectorizer().transform(texts).astype(np.float32).tocsr()
        self.item_vectors = sp.vstack([self.item_vectors, new]).tocsr()
        self.n_items += len(texts)

    def _score(self, batch: UserBatch) -> torch.Tensor:
        weights = recency_weights(batch, self.config.recency, self.n_items)  # (B, I + 1)
        profiles = normalize(weights @ self.item_vectors).tocsc()  # (B, V)
        # Only the terms some profile uses matter. (I, V_used) sparse @ (V_used, B) dense, then one
        # transpose, is several times faster than the sparse (B, V) @ (V, I) product with its near-full result.
        used = np.flatnonzero(np.diff(profiles.indptr))
        dense_profiles = profiles[:, used].toarray().astype(np.float32)  # (B, V_used)
        by_item = self.item_vectors[:, used] @ dense_profiles.T  # (I, B)
        return torch.from_numpy(np.asarray(by_item, dtype=np.float32)).T.contiguous()  # (B, I)

    def _get_state(self) -> dict[str, np.ndarray]:
        words = {} if self.vocabulary is None else {"vocabulary": self.vocabulary, "idf": self.idf}
        return {**sparse_state("item_vectors", self.item_vectors), **words}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.item_vectors = sparse_from_state("item_vectors", state)
        self.vocabulary = np.asarray(state["vocabulary"], dtype=str) if "vocabulary" in state else None
        self.idf = np.asarray(state["idf"]) if "idf" in state else None
