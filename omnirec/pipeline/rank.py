"""Rankers order the merged candidates of a batch: (B, C) scores, higher first, -inf on empty slots.

`FusionRanker` needs nothing trained (reciprocal rank fusion of the sources' lists), `ModelRanker` uses
one model's scores, `LearnedRanker` is a logistic regression over candidate features (each source's
rank and score, popularity, the model's score) fitted on validation targets.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from omnirec.data.histories import Histories, UserBatch

RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009)


class Candidates(NamedTuple):
    """Merged candidates of a batch; C is the most any row has, empty slots hold id 0."""

    ids: np.ndarray  # (B, C)
    ranks: np.ndarray  # (B, C, S) 1-based rank of the item in each source's list, 0 = not proposed
    scores: np.ndarray  # (B, C, S) each source's score, nan = not proposed
    cited: np.ndarray  # (B, C, S) each source's evidence item (or category), 0 = none
    strength: np.ndarray  # (B, C, S) each source's evidence value


class Ranker(Protocol):
    """Scores merged candidates: (B, C) scores, higher first; -inf for empty slots."""

    def rank(self, batch: UserBatch, candidates: Candidates) -> torch.Tensor: ...


class FusionRanker:
    """Reciprocal rank fusion of the sources' lists: sum over sources of weight / (60 + rank)."""

    def __init__(self, weights: np.ndarray | None = None):
        self.weights = weights

    def rank(self, batch: UserBatch, candidates: Candidates) -> torch.Tensor:
        weights = np.ones(candidates.ranks.shape[2]) if self.weights is None else self.weights
        fused = np.where(candidates.ranks > 0, weights / (RRF_K + candidates.ranks), 0.0).sum(axis=2)
        return torch.from_numpy(np.where(candidates.ids > 0, fused, -np.inf).astype(np.float32))


class ModelRanker:
    """Orders candidates by a model's scores (it scores any item of the catalogue)."""

    def __init__(self, model):  # noqa: ANN001 - any Recommender
        self.model = model

    def rank(self, batch: UserBatch, candidates: Candidates) -> torch.Tensor:
        with torch.inference_mode():
            scores = self.model.score(batch, items=candidates.ids).float().cpu()
        # Without a history the model has nothing to go on: its scores would order the list arbitrarily (and
        # against the sources' own reasons); equal scores leave the order to the sources' consensus.
        scores = scores.masked_fill(torch.from_numpy(batch.lengths() == 0)[:, None], 0.0)
        return scores.masked_fill(torch.from_numpy(candidates.ids == 0), -torch.inf)




class LearnedRanker:
    """Logistic regression over candidate features, fitted where the truth is known (validation targets).

    Features per candidate: for each source, whether it proposed the item, 1 / rank and its score (the
    similarity for co-occurrence and content sources, the decayed count for popular...); log(1 +
    popularity); any per-item features given (for example the age of the item); and, with a model, its
    score and that score standardised within the user's candidates.
    """

    def __init__(self, popularity: np.ndarray, model=None, item_features: np.ndarray | None = None,  # noqa: ANN001
                 negatives: int = 20, seed: int = 0):
        self.popularity = np.log1p(np.asarray(popularity, dtype=np.float64))
        self.item_features = item_features  # (I + 1, F) or None
        self.model, self.negatives, self.seed = model, negatives, seed
        self.classifier = None

    def features(self, batch: UserBatch, candidates: Candidates) -> np.ndarray:
        """(B, C, F) candidate features."""
        proposed = (candidates.ranks > 0).astype(np.float32)  # (B, C, S)
        inverse_rank = np.where(candidates.ranks > 0, 1.0 / np.maximum(candidates.ranks, 1), 0.0)
        source_scores = np.nan_to_num(candidates.scores, nan=0.0, neginf=0.0, posinf=0.0)
        parts = [proposed, inverse_rank, source_scores, self.popularity[candidates.ids][:, :, None]]
        if self.item_features is not None:
            parts.append(self.item_features[candidates.ids])
        if self.model is not None:
            with torch.inference_mode():
                score = self.model.score(batch, items=candidates.ids).float().cpu().numpy()  # (B, C)
            real = candidates.ids > 0
            mean = np.where(real, score, 0).sum(1, keepdims=True) / np.maximum(real.sum(1, keepdims=True), 1)
            std = np.sqrt(np.where(real, (score - mean) ** 2, 0).sum(1, keepdims=True) / np.maximum(real.sum(1, keepdims=True), 1))
            parts += [score[:, :, None], ((score - mean) / (std + 1e-6))[:, :, None]]
        return np.concatenate(parts, axis=2).astype(np.float32)

    def fit(self, batches: list[tuple[UserBatch, Candidates, Histories]]) -> LearnedRanker:
        """Fit on (batch, its candidates, its targets) triples: each target among the candidates is a
        positive, `negatives` random other candidates of the same user are negatives."""
        rng = np.random.default_rng(self.seed)
        xs, ys = [], []
        for batch, cands, targets in batches:
            feats = self.features(batch, cands)
            wanted = targets.batch(batch.users)
            base = int(max(cands.ids.max(initial=0), wanted.items.max(initial=0))) + 1
            target_keys = np.repeat(np.arange(len(batch)), wanted.lengths()) * base + wanted.items
            positive = np.isin(np.arange(len(batch))[:, None] * base + cands.ids, target_keys) & (cands.ids > 0)
            for row in np.flatnonzero(positive.any(axis=1)):
                negative = np.flatnonzero(~positive[row] & (cands.ids[row] > 0))
                negative = rng.choice(negative, size=min(self.negatives, len(negative)), replace=False)
                xs += [feats[row, positive[row]], feats[row, negative]]
                ys += [np.ones(int(positive[row].sum())), np.zeros(len(negative))]
        if not xs:
            raise ValueError("no validation target is among the candidates; cannot fit a ranker")
        self.classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        self.classifier.fit(np.concatenate(xs), np.concatenate(ys))
        return self

    def rank(self, batch: UserBatch, candidates: Candidates) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("LearnedRanker: call fit() first")
        feats = self.features(batch, candidates)
        logits = self.classifier.decision_function(feats.reshape(-1, feats.shape[2])).reshape(candidates.ids.shape)
        return torch.from_numpy(np.where(candidates.ids > 0, logits, -np.inf).astype(np.float32))
