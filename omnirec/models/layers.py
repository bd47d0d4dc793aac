"""Network blocks shared by the sequence models: the causal attention mask, a pre-norm Transformer block
and `CausalEncoder` (item representations + positions -> blocks -> norm), used by SASRec and the text-aware
model; HSTU shares the mask.

>>> attention_mask(torch.tensor([[0, 5, 7]]))[0, 0].int().tolist()  # row 0 is padding: reads itself only
[[1, 0, 0], [0, 1, 0], [0, 1, 1]]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class EncoderShape(Protocol):
    """What `CausalEncoder.add_encoder` reads from a model's config (SASRecConfig, TextSeqConfig...)."""

    d_model: int
    n_layers: int
    n_heads: int
    ffn_mult: int
    max_len: int
    dropout: float


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

    def add_encoder(self, cfg: EncoderShape) -> None:
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
