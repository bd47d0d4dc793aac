"""GRU4Rec: a recurrent network reads a user's items in order and predicts the next one (Hidasi et al.,
ICLR 2016), here trained like the other sequence models: on every position of every sequence window,
with the full-softmax cross-entropy by default (the loss that also makes GRU4Rec competitive in the
replications of Klenitskiy & Vasilev, RecSys 2023, and Hidasi & Czapp, RecSys 2023). The item
embeddings are shared by the input and the output layer.

The GRU's state is bounded by tanh, and the item embeddings are kept small by weight decay, so their dot
products, the logits of the full softmax, cannot grow large enough to be sharp: the model underfits. A
LayerNorm on the GRU's output (`output_norm`, as SASRec's last layer has one) lifts that cap; validation
chose it on every dataset tried (`benchmarks/DEFAULTS.md`).

Histories are left-padded; the GRU runs over each row's real items only (packed sequences), so a
user's state never depends on how much padding shares its batch.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> from omnirec.train.loop import TrainConfig
>>> split = split_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=40, n_items=30))))
>>> model = GRU4Rec(GRU4RecConfig(d_model=16, train=TrainConfig(epochs=2, progress=False)))
>>> ids, _ = model.fit(split.train_data()).recommend(split.histories("test").batch([1, 2]), k=5)
>>> ids.shape
(2, 5)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from omnirec.models.sequential import SequentialRecommender, check_sequence_config
from omnirec.train.loop import TrainConfig


@dataclass(frozen=True)
class GRU4RecConfig:
    """d_model: embedding and hidden size; n_layers: stacked GRU layers; max_len: items of history read;
    dropout: on the embeddings and the GRU's output; output_norm: a LayerNorm on the GRU's output (see the
    module docstring); loss: "ce" | "sampled" | "inbatch" | "bce" (see `omnirec.train.losses`); n_negatives:
    for "sampled"."""

    d_model: int = 64
    n_layers: int = 1
    max_len: int = 50
    dropout: float = 0.2
    output_norm: bool = True
    loss: str = "ce"
    n_negatives: int = 256
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_sequence_config(self, ())


class GRU4RecNet(nn.Module):
    """(B, T) left-padded items -> (B, T, D) GRU states; `item_table()` is the shared item embedding."""

    def __init__(self, n_items: int, cfg: GRU4RecConfig):
        super().__init__()
        self.items = nn.Embedding(n_items + 1, cfg.d_model, padding_idx=0)
        self.gru = nn.GRU(cfg.d_model, cfg.d_model, cfg.n_layers, batch_first=True,
                          dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model) if cfg.output_norm else nn.Identity()
        nn.init.normal_(self.items.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, items: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        B, T = items.shape
        lengths = (items != 0).sum(1).clamp(min=1)  # (B,) an empty row runs over one padding item
        # left padding -> right padding: row b's real items move to the front, in order
        shift = (torch.arange(T, device=items.device)[None, :] + (T - lengths)[:, None]) % T  # (B, T)
        x = self.drop(self.items(items.gather(1, shift)))  # (B, T, D)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, D), right-padded
        back = (torch.arange(T, device=items.device)[None, :] - (T - lengths)[:, None]) % T  # undo the shift
        return self.norm(self.drop(out.gather(1, back[:, :, None].expand(-1, -1, out.shape[2]))))  # (B, T, D)

    def item_table(self) -> torch.Tensor:
        return self.items.weight


class GRU4Rec(SequentialRecommender):
    """Recurrent next-item recommendation; see the module docstring."""

    name = "gru4rec"
    Config = GRU4RecConfig

    def _build(self, n_items: int) -> nn.Module:
        return GRU4RecNet(n_items, self.config)
