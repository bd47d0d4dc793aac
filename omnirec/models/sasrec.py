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

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

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
        check_sequence_config(self, (self.ffn_mult,))


def attention_mask(items: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) True where query t may read key s: s <= t and s is an item; padding reads itself."""
    T = items.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=items.device).tril()  # (T, T)
    real = (items != 0)[:, None, None, :]  # (B, 1, 1, T)
    eye = torch.eye(T, dtype=torch.bool, device=items.device)
    return (causal & real) | eye  # a padding query reads only itself, so no row is empty


class Block(nn.Module):
    """Pre-norm Transformer block: x + attention(norm(x)), then x + feed-forward(norm(x))."""

    def __init__(self, d: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_mult * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, T, D / H)
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.ffn(self.norm2(x)))


class CausalEncoder(nn.Module, ABC):
    """Item representations + position embeddings -> causal Transformer blocks -> final norm: (B, T) items
    -> (B, T, D). Subclasses say how items are represented (`embed`, `item_table`); `add_encoder` builds
    the shared layers, called where the subclass wants them in its initialisation order."""

    def add_encoder(self, cfg: SASRecConfig) -> None:
        self.positions = nn.Embedding(cfg.max_len, cfg.d_model)  # position 0 = the most recent item
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads, cfg.ffn_mult, cfg.dropout) for _ in range(cfg.n_layers))
        self.drop, self.norm = nn.Dropout(cfg.dropout), nn.LayerNorm(cfg.d_model)

    @abstractmethod
    def embed(self, items: torch.Tensor) -> torch.Tensor:
        """(B, T) item ids -> (B, T, D) item representations; padding -> 0."""

    @abstractmethod
    def item_table(self) -> torch.Tensor:
        """(I + 1, D) item embeddings, shared with the output layer."""

    def forward(self, items: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        T = items.shape[1]
        back = torch.arange(T - 1, -1, -1, device=items.device)  # (T,) distance from the newest item
        x = self.drop(self.embed(items) + self.positions(back))  # (B, T, D)
        pad = (items == 0).unsqueeze(-1)  # (B, T, 1)
        mask = attention_mask(items)
        for block in self.blocks:
            x = block(x.masked_fill(pad, 0.0), mask)
        return self.norm(x)  # (B, T, D)


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

    def _build(self, n_items: int) -> nn.Module:
        return SASRecNet(n_items, self.config)
