"""Matrix factorisation through the `implicit` library: ALS (Hu, Koren & Volinsky 2008) and BPR
(Rendle et al. 2009). The library does the learning; this file adapts it to the model contract."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from omnirec.data.histories import UserBatch
from omnirec.data.train_data import TrainData
from omnirec.models.base import Recommender


@dataclass(frozen=True)
class ALSConfig:
    """Implicit-feedback ALS: confidence = 1 + alpha * count."""

    factors: int = 64
    regularization: float = 10.0
    alpha: float = 10.0
    iterations: int = 15
    seed: int = 0


@dataclass(frozen=True)
class BPRConfig:
    """Bayesian personalised ranking with SGD over (user, positive, negative) triples."""

    factors: int = 64
    learning_rate: float = 0.05
    regularization: float = 0.01
    iterations: int = 100
    seed: int = 0
    # implicit's BPR runs lock-free SGD (Hogwild) across threads, which makes results vary from run to
    # run; one thread keeps a seeded fit reproducible. 0 = all cores, faster but not repeatable.
    num_threads: int = 1


class _FactorModel(Recommender):
    """Scores are user factors times item factors; only the factors are saved."""

    def _fit(self, data: TrainData) -> None:
        # implicit parallelises itself; a second BLAS thread pool underneath only slows it down.
        with threadpool_limits(1, "blas"):
            model = self._make()
            model.fit(data.matrix.tocsr(), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)  # (U + 1, F)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)  # (I + 1, F)

    @abstractmethod
    def _make(self) -> object:
        """The unfitted `implicit` model."""

    def _score(self, batch: UserBatch) -> torch.Tensor:
        users = torch.from_numpy(self.user_factors[batch.users])  # (B, F)
        return users @ torch.from_numpy(self.item_factors).T  # (B, I)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.user_factors, self.item_factors = state["user_factors"], state["item_factors"]


class ALS(_FactorModel):
    """Alternating least squares (implicit.als).

    >>> ALS(ALSConfig(factors=8)).config.factors
    8
    """

    name = "als"
    quick = True
    default_trial = {"factors": ALSConfig.factors, "regularization": ALSConfig.regularization, "alpha": ALSConfig.alpha}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"factors": trial.suggest_categorical("factors", [32, 64, 128]),
                "regularization": trial.suggest_float("regularization", 0.1, 100.0, log=True),
                "alpha": trial.suggest_float("alpha", 1.0, 50.0, log=True)}
    Config = ALSConfig

    def _make(self) -> object:
        from implicit.als import AlternatingLeastSquares

        c = self.config
        return AlternatingLeastSquares(
            factors=c.factors, regularization=c.regularization, alpha=c.alpha, iterations=c.iterations,
            random_state=c.seed, use_gpu=False,  # the factors are read back as numpy arrays
        )


class BPR(_FactorModel):
    """Bayesian personalised ranking (implicit.bpr).

    >>> BPR().name
    'bpr'
    """

    name = "bpr"
    quick = True
    Config = BPRConfig

    def _make(self) -> object:
        from implicit.bpr import BayesianPersonalizedRanking

        c = self.config
        return BayesianPersonalizedRanking(
            factors=c.factors, learning_rate=c.learning_rate, regularization=c.regularization,
            iterations=c.iterations, random_state=c.seed, num_threads=c.num_threads,
            use_gpu=False,
        )
