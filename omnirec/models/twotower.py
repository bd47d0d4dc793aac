"""Two-tower retrieval (Covington et al. 2016; Yi et al. 2019): a user tower and an item tower, each an
MLP over what is known, scored by the cosine of their outputs.

- **User tower:** the user's ID embedding, the mean embedding of the user's most recent items, and the
  user's attributes (age, gender, occupation... one embedding per value, summed).
- **Item tower:** the item's ID embedding and, where the data has item text, a projection of its frozen
  sentence-encoder vector.
- **Cold users:** a user without training data is scored without an ID (and, with an empty history,
  from attributes alone). So the tower learns to do that, `cold_dropout` of the training rows drop the
  ID and the history.
- **Loss:** "inbatch" (softmax over the batch's distinct items, log-Q corrected) or "bpr" (one uniform
  negative per pair).

The item tower's outputs (`item_vectors()`) feed the pipeline's ANN retrieval.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> from omnirec.models.collaborative import pair_training
>>> split = split_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=40, n_items=30))))
>>> model = TwoTower(TwoTowerConfig(d_model=8, item_text=False, train=pair_training(epochs=2, progress=False)))
>>> ids, _ = model.fit(split.train_data()).recommend(split.histories("test").batch([1, 2]), k=5)
>>> ids.shape
(2, 5)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnirec.data.attributes import Attributes
from omnirec.data.histories import UserBatch
from omnirec.data.train_data import TrainData
from omnirec.features.text import TextEncoderConfig, encode_texts
from omnirec.models.collaborative import PairData, PairRecommender, PairStep, pair_training
from omnirec.train import losses
from omnirec.train.loop import TrainConfig

LOSSES = ("inbatch", "bpr")


@dataclass(frozen=True)
class TwoTowerConfig:
    """d_model: output size of both towers (and of every input embedding); hidden: width of the towers'
    hidden layer; history: how many of the user's most recent items the user tower averages (0 = none);
    causal: a training pair's history is the items before it (as at test time, where the history is
    everything before the target), else every other item of the user; last_item: the most recent
    item of the history also enters on its own (a Markov-like signal); user_ids: whether the user tower has ID embeddings; item_text: whether the item tower reads item
    text vectors (when the data has text); temperature: scores are cosines divided by it."""

    d_model: int = 64
    hidden: int = 256
    history: int = 50
    causal: bool = True
    last_item: bool = True
    user_ids: bool = True
    item_text: bool = True
    dropout: float = 0.1
    cold_dropout: float = 0.1
    temperature: float = 0.05
    loss: str = "inbatch"
    encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    train: TrainConfig = field(default_factory=lambda: pair_training(batch_size=1024))

    def __post_init__(self) -> None:
        if min(self.d_model, self.hidden) < 1 or self.history < 0:
            raise ValueError("d_model and hidden must be >= 1 and history >= 0")
        if not (0 <= self.dropout < 1 and 0 <= self.cold_dropout < 1) or self.temperature <= 0:
            raise ValueError("dropout and cold_dropout must be in [0, 1); temperature > 0")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}; expected one of {', '.join(LOSSES)}")


def tower(width: int, hidden: int, out: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out))


class TwoTowerNet(nn.Module):
    """users(ids, history, attributes) -> (B, D) and items(ids) -> (N, D), both of unit length."""

    def __init__(self, n_users: int, n_items: int, cfg: TwoTowerConfig, cardinalities: list[int],
                 text: torch.Tensor | None):
        super().__init__()
        d = cfg.d_model
        self.user_ids = nn.Embedding(n_users + 1, d, padding_idx=0) if cfg.user_ids else None
        self.history = nn.Embedding(n_items + 1, d, padding_idx=0) if cfg.history else None
        self.last = nn.Embedding(n_items + 1, d, padding_idx=0) if cfg.history and cfg.last_item else None
        self.attributes = nn.ModuleList(nn.Embedding(c, d, padding_idx=0) for c in cardinalities)
        parts = int(cfg.user_ids) + int(bool(cfg.history)) + int(self.last is not None) + int(bool(cardinalities))
        self.user_tower = tower(max(parts, 1) * d, cfg.hidden, d, cfg.dropout)
        self.item_ids = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.text_proj = None
        if text is not None:
            self.register_buffer("text", text, persistent=False)  # (I + 1, E) frozen sentence vectors (saved apart)
            self.text_proj = nn.Linear(text.shape[1], d)
        self.item_tower = tower(d * (1 + int(text is not None)), cfg.hidden, d, cfg.dropout)
        for table in [self.user_ids, self.history, self.last, self.item_ids, *self.attributes]:
            if table is not None:
                nn.init.normal_(table.weight, std=0.05)
                table.weight.data[0] = 0.0

    def users(self, ids: torch.Tensor, history: torch.Tensor, attributes: torch.Tensor | None) -> torch.Tensor:
        """ids (B,) (0 = unknown), history (B, H) item ids (0 = none), attributes (B, F) codes."""
        parts = []
        if self.user_ids is not None:
            parts.append(self.user_ids(ids))
        if self.history is not None:
            mask = (history > 0).unsqueeze(-1).float()  # (B, H, 1)
            parts.append((self.history(history) * mask).sum(1) / mask.sum(1).clamp(min=1.0))
        if self.last is not None:
            parts.append(self.last(history[:, -1]))  # the most recent item (0 = none: a zero row)
        if len(self.attributes):
            parts.append(sum(table(attributes[:, f]) for f, table in enumerate(self.attributes)))
        x = torch.cat(parts, dim=-1) if parts else torch.zeros(len(ids), self.item_ids.weight.shape[1], device=ids.device)
        return F.normalize(self.user_tower(x), dim=-1)

    def items(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.item_ids(ids)
        if self.text_proj is not None:
            x = torch.cat([x, self.text_proj(self.text[ids])], dim=-1)
        return F.normalize(self.item_tower(x), dim=-1)


def recent_items(indptr: np.ndarray, items: np.ndarray, rows: np.ndarray, most: int,
                 skip: np.ndarray | None = None, ends: np.ndarray | None = None) -> np.ndarray:
    """(B, most) the last `most` items of each row of a ragged array (0-padded on the left); `skip` (B,)
    positions in `items` to leave out (a training pair's own item), -1 for none; `ends` (B,) positions
    the windows end before (default: each row's end).

    >>> indptr, items = np.array([0, 3, 4]), np.array([5, 6, 7, 8])
    >>> recent_items(indptr, items, np.array([0, 1]), 2, skip=np.array([2, -1])).tolist()
    [[6, 0], [0, 8]]
    >>> recent_items(indptr, items, np.array([0, 0]), 2, ends=np.array([2, 0])).tolist()
    [[5, 6], [0, 0]]
    """
    starts = indptr[rows]
    ends = indptr[rows + 1] if ends is None else ends
    at = ends[:, None] - most + np.arange(most)[None, :]  # (B, most) positions in items
    keep = at >= starts[:, None]
    if skip is not None:
        keep &= at != skip[:, None]
    return np.where(keep, items[np.clip(at, 0, max(len(items) - 1, 0))] if len(items) else 0, 0)


class TwoTower(PairRecommender):
    """User tower x item tower; see the module docstring."""

    name = "twotower"
    has_item_embeddings = True
    Config = TwoTowerConfig
    default_trial = {"temperature": TwoTowerConfig.temperature, "dropout": TwoTowerConfig.dropout,
                     "lr": TwoTowerConfig().train.lr}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"temperature": trial.suggest_float("temperature", 0.03, 0.2, log=True),
                "dropout": trial.suggest_float("dropout", 0.0, 0.4),
                "train": {"lr": trial.suggest_float("lr", 3e-4, 3e-3, log=True)}}
    item_vectors: np.ndarray | None = None  # (I + 1, E) the item text vectors, when the towers read text

    def _prepare(self, data: TrainData) -> None:
        self.item_vectors = None
        if self.config.item_text and data.item_text is not None and any(data.item_text[1:]):
            self.item_vectors = encode_texts(list(data.item_text), self.config.encoder)
        self.attributes = data.user_attributes
        self.trained_users = (data.sequences.lengths() > 0) if data.sequences is not None else None

    def _net(self, n_users: int, n_items: int) -> TwoTowerNet:
        text = None if self.item_vectors is None else torch.from_numpy(np.asarray(self.item_vectors, dtype=np.float32))
        cards = self.attributes.cardinalities() if self.attributes is not None else []
        return TwoTowerNet(n_users, n_items, self.config, cards, text)

    def _build(self, data: PairData) -> nn.Module:
        return self._net(data.n_users, data.n_items)

    def _user_inputs(self, users: np.ndarray, history: np.ndarray, known: np.ndarray,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        ids = torch.from_numpy(np.where(known, users, 0)).to(device)
        attrs = None
        if self.attributes is not None:
            rows = np.where(users < len(self.attributes.codes), users, 0)
            attrs = torch.from_numpy(self.attributes.codes[rows]).to(device)
        return ids, torch.from_numpy(history).to(device), attrs

    def _step(self, data: PairData) -> PairStep:
        cfg = self.config
        seq = data.sequences
        items_all = torch.from_numpy(np.array(seq.items, dtype=np.int64))
        log_q = losses.log_target_share(items_all, data.n_items)

        def step(module: nn.Module, users: torch.Tensor, at: np.ndarray, generator: torch.Generator) -> torch.Tensor:
            device = users.device
            rows = users.cpu().numpy()
            if not cfg.history:
                history = np.zeros((len(rows), 0), np.int64)
            elif cfg.causal:  # the items before the pair's own
                history = recent_items(seq.indptr, seq.items, rows, cfg.history, ends=at)
            else:  # every other item of the user
                history = recent_items(seq.indptr, seq.items, rows, cfg.history, skip=at)
            known = np.ones(len(rows), dtype=bool)
            if cfg.cold_dropout:
                cold = torch.rand(len(rows), generator=generator).numpy() < cfg.cold_dropout
                known &= ~cold
                history = np.where(cold[:, None], 0, history)
            u = module.users(*self._user_inputs(rows, history, known, device))  # (B, D)
            targets = items_all[at].to(device)
            if cfg.loss == "bpr":
                negatives = losses.other_items(targets.cpu(), data.n_items, generator).to(device)
                gap = (u * (module.items(targets) - module.items(negatives))).sum(-1) / cfg.temperature
                return F.softplus(-gap).mean()
            candidates, column = torch.unique(targets, return_inverse=True)
            logits = u @ module.items(candidates).T / cfg.temperature - log_q.to(device)[candidates].unsqueeze(0)
            return F.cross_entropy(logits, column)

        return step

    def _user_vectors(self, module: nn.Module, batch: UserBatch) -> torch.Tensor:
        """(B, D) the user tower's output for the batch (IDs only for users seen in training)."""
        device = next(module.parameters()).device
        users = np.asarray(batch.users, dtype=np.int64)
        known = np.zeros(len(users), dtype=bool)
        if self.trained_users is not None:
            inside = users < len(self.trained_users)
            known[inside] = self.trained_users[users[inside]]
        history = (recent_items(batch.indptr, batch.items, np.arange(len(users)), self.config.history)
                   if self.config.history else np.zeros((len(users), 0), np.int64))
        return module.users(*self._user_inputs(users, history, known, device))

    def _score_with(self, module: nn.Module, batch: UserBatch) -> torch.Tensor:
        """During training (validation): the item tower is run for the current weights."""
        items = module.items(torch.arange(self.n_items + 1, device=next(module.parameters()).device))
        return (self._user_vectors(module, batch) @ items.T / self.config.temperature).float()

    def _finish(self, data: PairData) -> None:
        self._cache_items()

    def _cache_items(self) -> None:
        """The item tower's output for every item, once the weights are final: scoring a request then
        runs only the user tower (the item tower over the whole catalogue costs far more)."""
        self.module.eval()
        with torch.no_grad():
            device = next(self.module.parameters()).device
            self.item_table = self.module.items(torch.arange(self.n_items + 1, device=device))

    @torch.no_grad()
    def _score(self, batch: UserBatch) -> torch.Tensor:
        self.module.eval()
        return (self._user_vectors(self.module, batch) @ self.item_table.T / self.config.temperature).float().cpu()

    def item_embeddings(self) -> np.ndarray:
        """(I + 1, D) the item tower's unit vectors (row 0 is padding): what ANN retrieval indexes."""
        self._check_fitted()
        return self.item_table.cpu().numpy()

    def _get_state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}
        state["trained_users"] = np.asarray(self.trained_users, dtype=bool)
        if self.attributes is not None:
            state.update(self.attributes.to_state("attributes"))
        if self.item_vectors is not None:
            state["item_vectors"] = np.asarray(self.item_vectors, dtype=np.float32)
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.trained_users = np.asarray(state["trained_users"], dtype=bool)
        self.attributes = Attributes.from_state("attributes", state)
        self.item_vectors = state.get("item_vectors")
        self.module = self._net(self.n_users, self.n_items)
        weights = {k[4:]: torch.from_numpy(np.asarray(v)) for k, v in state.items() if k.startswith("net.")}
        self.module.load_state_dict(weights)
        self._cache_items()
