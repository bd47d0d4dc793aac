"""SASRec: causal self-attention over a user's item history predicts the next item (Kang & McAuley 2018).

Trained on every position of every sequence at once. The item embeddings are shared by the input and
the output layer. Losses: full-softmax cross-entropy (default; the strongest, see Klenitskiy & Vasilev,
RecSys 2023), sampled softmax with N shared negatives (catalogues too large for a full softmax), or the
paper's binary cross-entropy with one negative per position.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> from omnirec.train.loop import TrainConfig
>>> split = split_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=40, n_items=30))))
>>> model = SASRec(SASRecConfig(d_model=16, train=TrainConfig(epochs=2, progress=False)))
>>> ids, _ = model.fit(split.train_data()).recommend(split.histories("test").batch([1, 2]), k=5)
>>> ids.shape
(2, 5)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from omnirec.models.layers import CausalEncoder
from omnirec.models.sequential import SequentialRecommender, check_sequence_config
from omnirec.train.loop import TrainConfig


@dataclass(frozen=True)
class SASRecConfig:
    """d_model: embedding size (the default 64 was chosen on validation NDCG@10 across datasets:
    `benchmarks/defaults.py`, DEFAULTS.md); ffn_mult: width of the feed-forward layer in multiples of d_model;
    max_len: items of history read; dropout: on embeddings, attention and residual branches;
    loss: "ce" | "sampled" | "inbatch" (the batch's targets as negatives, log-Q corrected) | "bce";
    n_negatives: for "sampled"."""

    d_model: int = 64
    n_layers: int = 1
    n_heads: int = 1
    ffn_mult: int = 4
    max_len: int = 50
    dropout: float = 0.2
    loss: str = "ce"
    n_negatives: int = 256
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_sequence_config(self, (self.ffn_mult,), heads=self.n_heads)


class SASRecNet(CausalEncoder):
    """SASRec's network: one learned embedding per item, shared by the input and the output layer."""

    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        self.items = nn.Embedding(n_items + 1, cfg.d_model, padding_idx=0)
        self.add_encoder(cfg)
        nn.init.normal_(self.items.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        return self.items(items)

    def item_table(self) -> torch.Tensor:
        return self.items.weight


class SASRec(SequentialRecommender):
    """Self-attentive sequential recommendation; see the module docstring."""

    name = "sasrec"
    Config = SASRecConfig
    default_trial = {"d_model": SASRecConfig.d_model, "n_layers": SASRecConfig.n_layers,
                     "dropout": SASRecConfig.dropout, "lr": TrainConfig.lr}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"d_model": trial.suggest_categorical("d_model", [64, 128]),
                "n_layers": trial.suggest_int("n_layers", 1, 2),
                "dropout": trial.suggest_float("dropout", 0.1, 0.5),
                "train": {"lr": trial.suggest_float("lr", 3e-4, 3e-3, log=True)}}

    def _build(self, n_items: int) -> nn.Module:
        return SASRecNet(n_items, self.config)
