"""The model contract. Masking of seen items and top-k are written once, in `omnirec.topk`.

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
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from omnirec.compress import decompress_state
from omnirec.config import config_hash, from_dict, recorded_hash, to_dict
from omnirec.data.histories import UserBatch
from omnirec.data.train_data import TrainData
from omnirec.topk import mask_seen, top_k
from omnirec.utils import atomic_savez, atomic_write_text, file_sha256

FORMAT = "omnirec.model/1"


class NotFittedError(RuntimeError):
    """`score` or `save` called before `fit`."""


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
    # What the model needs and can do, declared here and read by the other layers (never probed):
    needs_text: ClassVar[bool] = False  # `fit` needs `TrainData.item_text`
    trains_in_epochs: ClassVar[bool] = False  # validates every few epochs through `reported` (a search may prune it)
    quick: ClassVar[bool] = False  # fits in seconds, no training loop: the quickstart's models
    has_item_embeddings: ClassVar[bool] = False  # `item_embeddings()`: (I + 1, D) vectors an ANN source can index
    reads_text_queries: ClassVar[bool] = False  # `recommend(..., query=...)` blends in a natural-language request
    can_warm_start: ClassVar[bool] = False  # `start_from(pretrained)`: training starts from another fit's weights
    adds_items: ClassVar[bool] = False  # `add_items(texts)`: new items scored from their text, without retraining
    default_trial: ClassVar[dict[str, Any]] = {}  # the search's first trial (its Config's defaults), by search name

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """The hyperparameters of one search trial (Optuna `suggest_*` calls on `trial`), as a
        `[models.<name>]` table; {} where nothing is worth tuning."""
        return {}

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(self.config).__name__}")
        self.n_users = 0
        self.n_items = 0
        self.training: dict[str, Any] = {}  # what the last fit did (epochs, budget, seed); empty for closed forms
        self.history: list[dict[str, float]] = []  # one row per epoch of the last fit
        # Called with (validation count, validation NDCG@10) after each validation of a model that trains in
        # epochs; a search sets it to prune a bad trial (raising there stops training).
        self.on_validation: Callable[[int, float], None] | None = None

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

    def recommend(
        self, batch: UserBatch, k: int = 10, exclude_seen: bool = True, *, query: str | None = None,
        query_weight: float = 0.5,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) dense item ids and their scores, best first; history items are excluded by default.

        With `query` (models that `reads_text_queries`), the request's words are blended into the scores
        with weight `query_weight` (see the model's `_score_with_query`).
        Where fewer than k items are left to recommend, the empty slots hold id 0 and score -inf.
        """
        if query is None:
            scores = self.score(batch)
        elif not self.reads_text_queries:
            raise ValueError(f"model {self.name!r} does not read text queries (textseq does)")
        elif not 0 <= query_weight <= 1:
            raise ValueError(f"query_weight must be in [0, 1], got {query_weight}")
        else:
            scores = self._score_with_query(batch, query, query_weight)
        if exclude_seen:
            mask_seen(scores, batch)
        else:
            scores[:, 0] = -torch.inf
        ids, values = top_k(scores, k, row_keys=torch.from_numpy(batch.users))
        return ids.cpu().numpy(), values.cpu().numpy()

    def _score_with_query(self, batch: UserBatch, query: str, weight: float) -> torch.Tensor:
        """(B, I + 1) scores blending the batch's and the query's (models that read text queries)."""
        raise NotImplementedError(f"{self.name} declares reads_text_queries without _score_with_query")

    def item_embeddings(self) -> np.ndarray:
        """(I + 1, D) item vectors (row 0 padding) that the model scores with: what ANN sources index."""
        raise ValueError(f"model {self.name!r} has no item embeddings (sasrec, hstu, textseq, twotower and lightgcn "
                         "have)")

    def text_vectors(self) -> np.ndarray | None:
        """(I + 1, E) the item text vectors the model scores with (None for models that do not read text)."""
        return None

    def add_items(self, texts: list[str]) -> None:
        """Grow the catalogue by `len(texts)` items, given by their text, that the model scores from then on
        (their dense ids follow the last one); no retraining (models that `adds_items`)."""
        raise ValueError(f"model {self.name!r} cannot take new items without retraining (textseq, hybrid, tfidf "
                         "and itemknn can)")

    def start_from(self, pretrained: Recommender) -> Self:
        """Start the next `fit` from `pretrained`'s weights (fitted on another catalogue); returns self."""
        raise ValueError(f"model {self.name!r} cannot start from pretrained weights (textseq can)")

    def with_loop_options(self, progress: bool | None = None, checkpoint_dir: str | None = None) -> Self:
        """This model, unfitted, with how its training runs changed where given (progress bars, checkpoint
        folder); models that do not train in epochs have no such options and come back as they are."""
        return self

    def _reported(self, validate: Callable[[Any], float] | None) -> Callable[[Any], float] | None:
        """`validate`, also handing each result to `on_validation(count, value)` where a search has set it."""
        hook = self.on_validation
        if validate is None or hook is None:
            return validate
        count = iter(range(1, 1 << 30))

        def wrapped(module: Any) -> float:
            value = validate(module)
            hook(next(count), value)
            return value

        return wrapped

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
        if recorded_hash(cls.Config.__name__, meta["config"]) != meta.get("config_hash"):
            raise ValueError(f"{path}: config does not match its recorded hash")
        config = from_dict(cls.Config, meta["config"])  # options added since the save take their defaults
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
