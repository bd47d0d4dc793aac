"""Neural matrix factorisation (He et al., WWW 2017): a generalised MF branch (the element-wise product
of user and item embeddings) and an MLP branch (over the concatenated embeddings of its own), fused by a
last linear layer into one logit, trained with binary cross-entropy against `n_negatives` uniformly
drawn items per positive, as published.

Scoring every item runs the MLP once per (user, item) pair; the first layer is split into a user part
and an item part so it is computed once per user and once per item, and users are scored in blocks.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> from omnirec.models.collaborative import pair_training
>>> split = split_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=40, n_items=30))))
>>> model = NeuMF(NeuMFConfig(d_gmf=8, d_mlp=8, layers=(16, 8), train=pair_training(epochs=2, progress=False)))
>>> ids, _ = model.fit(split.train_data()).recommend(split.histories("test").batch([1, 2]), k=5)
>>> ids.shape
(2, 5)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnirec.data.histories import UserBatch
from omnirec.models.collaborative import PairData, PairRecommender, PairStep, pair_training
from omnirec.train import losses
from omnirec.train.loop import TrainConfig

SCORE_BLOCK_BYTES = 16 * 2**20  # (users x items x first layer) activations per block: small blocks stay in cache (3x faster than 256 MiB)


@dataclass(frozen=True)
class NeuMFConfig:
    """d_gmf: embedding size of the MF branch; d_mlp: of the MLP branch; layers: the MLP's widths
    (the first takes the two concatenated embeddings); n_negatives: sampled items per positive."""

    d_gmf: int = 32
    d_mlp: int = 32
    layers: tuple[int, ...] = (64, 32, 16)
    n_negatives: int = 4
    dropout: float = 0.0
    # scoring every item runs the MLP per (user, item): validate less often, on fewer users
    train: TrainConfig = field(default_factory=lambda: pair_training(batch_size=1024, eval_every=2,
                                                                           patience=3))

    def __post_init__(self) -> None:
        if min(self.d_gmf, self.d_mlp, self.n_negatives, *self.layers, 1) < 1 or not self.layers:
            raise ValueError("d_gmf, d_mlp, n_negatives and every layer width must be >= 1 (and layers not empty)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class NeuMFNet(nn.Module):
    """logits(users, items) for pairs, and all_logits(users) against every item."""

    def __init__(self, n_users: int, n_items: int, cfg: NeuMFConfig):
        super().__init__()
        self.gmf_user, self.gmf_item = nn.Embedding(n_users + 1, cfg.d_gmf), nn.Embedding(n_items + 1, cfg.d_gmf)
        self.mlp_user, self.mlp_item = nn.Embedding(n_users + 1, cfg.d_mlp), nn.Embedding(n_items + 1, cfg.d_mlp)
        for table in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(table.weight, std=0.01)
        self.first = nn.Linear(2 * cfg.d_mlp, cfg.layers[0])
        rest: list[nn.Module] = []
        for a, b in zip(cfg.layers, cfg.layers[1:]):
            rest += [nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(a, b)]
        self.rest = nn.Sequential(*rest, nn.ReLU())
        self.out = nn.Linear(cfg.d_gmf + cfg.layers[-1], 1)

    def _fuse(self, gmf: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([gmf, self.rest(first)], dim=-1)).squeeze(-1)

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        gmf = self.gmf_user(users) * self.gmf_item(items)
        return self._fuse(gmf, self.first(torch.cat([self.mlp_user(users), self.mlp_item(items)], dim=-1)))

    def all_logits(self, users: torch.Tensor) -> torch.Tensor:
        """(B, I + 1), in user blocks. Both linear maps are split by their inputs so nothing is computed per
        (user, item) pair but the MLP itself: W [p; q] + b = W_u p + (W_i q + b), and the output layer's
        GMF part w_g . (p * q) = (p * w_g) . q is one matrix product."""
        d, g = self.mlp_user.weight.shape[1], self.gmf_user.weight.shape[1]
        w_user, w_item = self.first.weight[:, :d], self.first.weight[:, d:]
        w_gmf, w_mlp = self.out.weight[0, :g], self.out.weight[0, g:]
        item_part = self.mlp_item.weight @ w_item.T + self.first.bias  # (I + 1, H)
        n_rows, width = item_part.shape
        step = max(1, SCORE_BLOCK_BYTES // (4 * n_rows * width))
        out = []
        for lo in range(0, len(users), step):
            u = users[lo : lo + step]
            first = (self.mlp_user(u) @ w_user.T)[:, None, :] + item_part[None, :, :]  # (b, I + 1, H)
            gmf = (self.gmf_user(u) * w_gmf) @ self.gmf_item.weight.T  # (b, I + 1)
            out.append(gmf + self.rest(first) @ w_mlp + self.out.bias)
        return torch.cat(out) if out else torch.empty((0, n_rows), device=users.device)


class NeuMF(PairRecommender):
    """GMF + MLP fusion; see the module docstring."""

    name = "neumf"
    Config = NeuMFConfig

    def _build(self, data: PairData) -> nn.Module:
        return NeuMFNet(data.n_users, data.n_items, self.config)

    def _step(self, data: PairData) -> PairStep:
        items = torch.from_numpy(np.array(data.sequences.items, dtype=np.int64))
        m = self.config.n_negatives

        def step(module: nn.Module, users: torch.Tensor, at: np.ndarray, generator: torch.Generator) -> torch.Tensor:
            positives = items[at]
            negatives = losses.other_items(positives.repeat(m), data.n_items, generator)  # (m B,)
            all_users = users.repeat(m + 1)
            all_items = torch.cat([positives, negatives]).to(users.device)
            labels = torch.cat([torch.ones(len(at)), torch.zeros(m * len(at))]).to(users.device)
            return F.binary_cross_entropy_with_logits(module.logits(all_users, all_items), labels)

        return step

    def _score_with(self, module: nn.Module, batch: UserBatch) -> torch.Tensor:
        device = next(module.parameters()).device
        users = torch.from_numpy(np.asarray(batch.users, dtype=np.int64)).clamp(max=self.n_users).to(device)
        return module.all_logits(users).float()

    def _get_state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.module = NeuMFNet(self.n_users, self.n_items, self.config)
        self.module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        self.module.eval()
