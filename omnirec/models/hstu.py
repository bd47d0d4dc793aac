"""HSTU: the Hierarchical Sequential Transduction Unit of "Actions Speak Louder than Words" (Zhai et al.,
ICML 2024), the layer of Meta's generative recommenders, as a next-item model.

Each layer: U, V, Q, K = split(SiLU(W1 norm(X))); A = SiLU(Q K^T / sqrt(d) + rab(position, time)) / L,
causal; Y = W2 (norm(A V) * U); X + dropout(Y). Attention is pointwise (no softmax), so the weight of a
past item does not shrink when the history grows; U gates the result. The relative attention bias rab
adds a learned value per bucket of distance in positions and per bucket of log elapsed time between the
query's event and the key's. Output and item embeddings are L2-normalised and compared at a temperature.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> from omnirec.train.loop import TrainConfig
>>> split = split_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=40, n_items=30))))
>>> model = HSTU(HSTUConfig(d_model=16, train=TrainConfig(epochs=2, progress=False)))
>>> ids, _ = model.fit(split.train_data()).recommend(split.histories("test").batch([1, 2]), k=5)
>>> ids.shape
(2, 5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from omnirec.models.layers import attention_mask
from omnirec.models.sequential import SequentialRecommender, check_sequence_config
from omnirec.train.loop import TrainConfig


@dataclass(frozen=True)
class HSTUConfig:
    """d_model: embedding size; d_attention: per-head size of Q and K (V and U are d_model / n_heads);
    time_buckets: buckets of log2 elapsed seconds for the time bias (0 = no time bias);
    temperature: of the cosine similarity between output and item embeddings."""

    d_model: int = 256
    n_layers: int = 2
    n_heads: int = 2
    d_attention: int = 64
    max_len: int = 50
    dropout: float = 0.2
    time_buckets: int = 64
    temperature: float = 0.05
    loss: str = "ce"
    n_negatives: int = 256
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_sequence_config(self, (self.d_attention,), heads=self.n_heads)
        if self.temperature <= 0 or self.time_buckets < 0:
            raise ValueError("temperature must be > 0 and time_buckets >= 0")


class RelativeBias(nn.Module):
    """(B, 1, T, T) learned bias from the position distance and the log2 time gap of each (query, key)."""

    def __init__(self, max_len: int, time_buckets: int):
        super().__init__()
        self.position = nn.Parameter(torch.zeros(max_len))  # by distance 0 .. max_len - 1
        self.time_buckets = time_buckets
        self.time = nn.Parameter(torch.zeros(time_buckets + 1)) if time_buckets else None

    def forward(self, T: int, times: torch.Tensor | None) -> torch.Tensor:
        idx = torch.arange(T, device=self.position.device)
        distance = (idx[:, None] - idx[None, :]).clamp(0, len(self.position) - 1)  # (T, T), keys after: masked
        bias = self.position[distance][None, None]  # (1, 1, T, T)
        if self.time is not None and times is not None:
            gap = (times[:, :, None] - times[:, None, :]).clamp(min=1).float()  # (B, T, T) seconds
            bucket = torch.log2(gap).long().clamp(0, self.time_buckets)
            bias = bias + self.time[bucket].unsqueeze(1)
        return bias


class HSTULayer(nn.Module):
    """One HSTU layer: gated, pointwise-attention sequential transduction."""

    def __init__(self, d: int, heads: int, d_attention: int, max_len: int, dropout: float):
        super().__init__()
        self.heads, self.d_attention, self.max_len = heads, d_attention, max_len
        self.norm_in, self.norm_att = nn.LayerNorm(d), nn.LayerNorm(d)
        self.uvqk = nn.Linear(d, 2 * d + 2 * heads * d_attention)
        self.out = nn.Linear(d, d)
        self.drop, self.att_drop = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H, A = self.heads, self.d_attention
        u, v, q, k = F.silu(self.uvqk(self.norm_in(x))).split([D, D, H * A, H * A], dim=-1)
        q, k = q.view(B, T, H, A).transpose(1, 2), k.view(B, T, H, A).transpose(1, 2)  # (B, H, T, A)
        v = v.view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, D / H)
        scores = q @ k.transpose(-1, -2) / math.sqrt(A) + bias  # (B, H, T, T)
        weights = self.att_drop(F.silu(scores).masked_fill(~mask, 0.0) / self.max_len)
        att = (weights @ v).transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return x + self.drop(self.out(self.norm_att(att) * u))


class HSTUNet(nn.Module):
    """Item + position embeddings -> HSTU layers -> L2-normalised states: (B, T) items -> (B, T, D)."""

    def __init__(self, n_items: int, cfg: HSTUConfig):
        super().__init__()
        self.scale = 1.0 / math.sqrt(cfg.temperature)  # applied to both sides: cosine / temperature
        self.items = nn.Embedding(n_items + 1, cfg.d_model, padding_idx=0)
        self.positions = nn.Embedding(cfg.max_len, cfg.d_model)  # position 0 = the most recent item
        self.bias = RelativeBias(cfg.max_len, cfg.time_buckets)
        self.layers = nn.ModuleList(
            HSTULayer(cfg.d_model, cfg.n_heads, cfg.d_attention, cfg.max_len, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.drop, self.norm = nn.Dropout(cfg.dropout), nn.LayerNorm(cfg.d_model)
        nn.init.normal_(self.items.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def item_table(self) -> torch.Tensor:
        """(I + 1, D) L2-normalised item embeddings divided by sqrt(temperature)."""
        return F.normalize(self.items.weight, dim=-1) * self.scale

    def forward(self, items: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        T = items.shape[1]
        back = torch.arange(T - 1, -1, -1, device=items.device)  # (T,) distance from the newest item
        x = self.drop(self.items(items) + self.positions(back))  # (B, T, D)
        pad = (items == 0).unsqueeze(-1)  # (B, T, 1)
        mask, bias = attention_mask(items), self.bias(T, times)
        for layer in self.layers:
            x = layer(x.masked_fill(pad, 0.0), mask, bias)
        return F.normalize(self.norm(x), dim=-1) * self.scale  # (B, T, D)


class HSTU(SequentialRecommender):
    """HSTU next-item model; see the module docstring."""

    name = "hstu"
    Config = HSTUConfig

    def _build(self, n_items: int) -> nn.Module:
        return HSTUNet(n_items, self.config)
