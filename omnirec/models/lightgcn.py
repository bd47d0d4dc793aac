"""LightGCN (He et al., SIGIR 2020): ID embeddings of users and items smoothed over the user-item graph,
E = mean(E0, A E0, A^2 E0, ...) with A the symmetrically normalised adjacency D^-1/2 [[0, R], [R^T, 0]]
D^-1/2, trained with BPR (one uniform negative per pair) and an L2 penalty on the batch's E0 rows.
Propagation is a `torch.sparse.mm` per layer; no graph library is needed.

Only the propagated embeddings are saved: scoring is their dot product.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> from omnirec.models.collaborative import pair_training
>>> split = split_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=40, n_items=30))))
>>> model = LightGCN(LightGCNConfig(d_model=8, train=pair_training(epochs=2, progress=False)))
>>> ids, _ = model.fit(split.train_data()).recommend(split.histories("test").batch([1, 2]), k=5)
>>> ids.shape
(2, 5)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from omnirec.data.histories import UserBatch
from omnirec.models.collaborative import PairData, PairRecommender, PairStep, pair_training
from omnirec.train import losses
from omnirec.train.loop import TrainConfig


@dataclass(frozen=True)
class LightGCNConfig:
    """d_model: embedding size; n_layers: propagation steps; reg: weight of the L2 penalty on the
    batch's layer-0 embeddings (the paper's lambda, 1e-4)."""

    d_model: int = 64
    n_layers: int = 3
    reg: float = 1e-4
    # BPR with one negative converges slowly and validation is noisy: validate every 3 epochs, patience 5
    train: TrainConfig = field(default_factory=lambda: pair_training(batch_size=2048, lr=5e-3, eval_every=3))

    def __post_init__(self) -> None:
        if self.d_model < 1 or self.n_layers < 0 or self.reg < 0:
            raise ValueError("d_model >= 1, n_layers >= 0 and reg >= 0 are required")


def normalized_adjacency(sequences_indptr: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """The (U + I + 2) square sparse matrix D^-1/2 A D^-1/2 of the user-item graph (repeats count once);
    user u is node u, item i is node n_users + 1 + i. Nodes without edges get zero rows.

    >>> a = normalized_adjacency(np.array([0, 0, 1]), np.array([1]), 1, 1).to_dense()
    >>> a[1, 3].item(), a[3, 1].item(), a.sum().item()
    (1.0, 1.0, 2.0)
    """
    users = np.repeat(np.arange(len(sequences_indptr) - 1), np.diff(sequences_indptr))
    r = sp.csr_matrix((np.ones(len(items), dtype=np.float32), (users, items)), shape=(n_users + 1, n_items + 1))
    r.data[:] = 1.0  # duplicates were summed: one edge each
    a = sp.bmat([[None, r], [r.T, None]], format="csr")
    degree = np.asarray(a.sum(axis=1)).ravel()
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0).astype(np.float32)
    a = (sp.diags(scale) @ a @ sp.diags(scale)).tocoo()
    index = torch.from_numpy(np.vstack([a.row, a.col]).astype(np.int64))
    return torch.sparse_coo_tensor(index, torch.from_numpy(a.data.astype(np.float32)), a.shape,
                                   check_invariants=False).coalesce()


class _SymmetricProduct(torch.autograd.Function):
    """A @ x for a symmetric sparse A, whose gradient is A @ grad: no transposed copy of A (twice as fast as
    autograd through `torch.sparse.mm` on CPU)."""

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.adjacency = adjacency
        return adjacency @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # noqa: ANN001
        return None, ctx.adjacency @ grad


class LightGCNNet(nn.Module):
    """propagate() -> (users (U + 1, D), items (I + 1, D)): the layer mean of the smoothed embeddings."""

    def __init__(self, n_users: int, n_items: int, cfg: LightGCNConfig, adjacency: torch.Tensor):
        super().__init__()
        self.n_users, self.n_layers = n_users, cfg.n_layers
        self.embedding = nn.Embedding(n_users + n_items + 2, cfg.d_model)
        nn.init.normal_(self.embedding.weight, std=0.1)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
            warnings.simplefilter("ignore", UserWarning)
            self.adjacency = adjacency.to_sparse_csr()  # not a parameter nor saved: rebuilt from the data

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embedding.weight
        total = x
        for _ in range(self.n_layers):
            x = _SymmetricProduct.apply(self.adjacency, x)
            total = total + x
        total = total / (self.n_layers + 1)
        return total[: self.n_users + 1], total[self.n_users + 1 :]


class LightGCN(PairRecommender):
    """Graph-smoothed MF with BPR; see the module docstring."""

    name = "lightgcn"
    has_item_embeddings = True
    Config = LightGCNConfig

    def _build(self, data: PairData) -> nn.Module:
        adjacency = normalized_adjacency(data.sequences.indptr, data.sequences.items, data.n_users, data.n_items)
        return LightGCNNet(data.n_users, data.n_items, self.config, adjacency)

    def _step(self, data: PairData) -> PairStep:
        items = torch.from_numpy(np.array(data.sequences.items, dtype=np.int64))
        offset = data.n_users + 1

        def step(module: nn.Module, users: torch.Tensor, at: np.ndarray, generator: torch.Generator) -> torch.Tensor:
            module.adjacency = module.adjacency.to(users.device)
            positives = items[at]
            negatives = losses.other_items(positives, data.n_items, generator)
            positives, negatives = positives.to(users.device), negatives.to(users.device)
            user_table, item_table = module.propagate()
            u = user_table[users]
            gap = (u * (item_table[positives] - item_table[negatives])).sum(-1)
            base = module.embedding.weight
            penalty = (base[users].pow(2).sum() + base[offset + positives].pow(2).sum()
                       + base[offset + negatives].pow(2).sum()) / (2 * len(at))
            return F.softplus(-gap).mean() + self.config.reg * penalty

        return step

    def _score_with(self, module: nn.Module, batch: UserBatch) -> torch.Tensor:
        users, items = module.propagate()
        rows = torch.from_numpy(np.asarray(batch.users, dtype=np.int64)).clamp(max=users.shape[0] - 1).to(users.device)
        return (users[rows] @ items.T).float()

    def _finish(self, data: PairData) -> None:
        with torch.no_grad():
            self.user_table, self.item_table = (t.detach().cpu() for t in self.module.propagate())

    @torch.no_grad()
    def _score(self, batch: UserBatch) -> torch.Tensor:
        rows = torch.from_numpy(np.asarray(batch.users, dtype=np.int64)).clamp(max=self.user_table.shape[0] - 1)
        return self.user_table[rows] @ self.item_table.T

    def item_embeddings(self) -> np.ndarray:
        """(I + 1, D) the propagated item embeddings (row 0 is padding): what ANN retrieval indexes."""
        self._check_fitted()
        return self.item_table.numpy()

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"user_table": self.user_table.numpy(), "item_table": self.item_table.numpy()}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.user_table = torch.from_numpy(np.asarray(state["user_table"], dtype=np.float32))
        self.item_table = torch.from_numpy(np.asarray(state["item_table"], dtype=np.float32))
