"""The sentence encoder tuned on behaviour: its top transformer layers trained so that items bought one
after the other get close embeddings, then frozen and used for every later encoding.

A pretrained sentence encoder places texts by what they say; a shop needs them placed by what people buy
together (a filament and the nozzle that prints it say little alike). `tune_encoder` trains the top
`layers` of the encoder (all-MiniLM-L6-v2: 6 layers) with a contrastive loss over (item, next item) pairs
of the training sequences, the other items of the batch as negatives (in-batch softmax, as in
sentence-transformers' MultipleNegativesRankingLoss). The layers below stay frozen, so their output is
computed once per text and cached in memory: a step costs the top layers only. The result is a small
delta, `TunedLayers` (the top layers' weights, a few MiB), that a model saves beside its own weights, so
that texts added after training (new items) are encoded the same way.

Tuned layers are cached on disk by (base model, texts, pairs, tuning config): a second fit on the same
data, another seed of the recommender for instance, reuses them.

>>> TuningConfig().layers
1
>>> consecutive_pairs(Histories(np.array([0, 3, 5]), np.array([1, 2, 2, 4, 3]))).tolist()
[[1, 2], [4, 3]]
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from omnirec.data.histories import Histories
from omnirec.features.text import (
    EmbeddingCache,
    TextEncoderConfig,
    cache_root,
    load_encoder,
    model_fingerprint,
    text_keys,
    through_cache,
)
from omnirec.utils import atomic_savez


@dataclass(frozen=True)
class TuningConfig:
    """layers: how many of the encoder's top transformer layers are trained. epochs: passes over the
    (item, next item) pairs. batch_size: pairs per step (their items are each other's negatives).
    lr: AdamW learning rate. temperature: of the contrastive softmax over cosine similarities.
    max_minutes: a wall-clock cap on tuning (0 = none). seed: the pairs' order."""

    layers: int = 1
    epochs: float = 1.0
    batch_size: int = 128
    lr: float = 5e-5
    temperature: float = 0.05
    max_minutes: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.layers < 1 or self.batch_size < 2 or self.epochs <= 0 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError(f"tuning needs layers >= 1, batch_size >= 2 and positive epochs, lr and temperature; "
                             f"got {self}")
        if self.max_minutes < 0:
            raise ValueError(f"max_minutes must be >= 0 (0 = no cap), got {self.max_minutes}")


@dataclass(frozen=True)
class TunedLayers:
    """The tuned top `layers` of encoder `base` (its fingerprint): their weights by parameter name."""

    base: str
    layers: int
    state: dict[str, np.ndarray]

    @property
    def fingerprint(self) -> str:
        """A short hash of the base model and the tuned weights: keys the embedding cache."""
        digest = hashlib.sha256(f"{self.base}/{self.layers}".encode())
        for name in sorted(self.state):
            digest.update(name.encode() + np.ascontiguousarray(self.state[name]).tobytes())
        return digest.hexdigest()[:16]

    def to_state(self, prefix: str = "tuned.") -> dict[str, np.ndarray]:
        """Flat arrays for a model's saved state (`from_state` reads them back)."""
        meta = json.dumps({"base": self.base, "layers": self.layers})
        return {f"{prefix}meta": np.array(meta), **{f"{prefix}{k}": v for k, v in self.state.items()}}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], prefix: str = "tuned.") -> TunedLayers | None:
        if f"{prefix}meta" not in state:
            return None
        meta = json.loads(str(state[f"{prefix}meta"]))
        weights = {k[len(prefix):]: np.asarray(v) for k, v in state.items()
                   if k.startswith(prefix) and k != f"{prefix}meta"}
        return cls(meta["base"], int(meta["layers"]), weights)


def consecutive_pairs(sequences: Histories) -> np.ndarray:
    """(P, 2) every (item, next item) of the users' sequences, repeats of the same item left out."""
    items, starts = sequences.items, sequences.indptr
    same_user = np.ones(len(items), dtype=bool)
    same_user[starts[1:-1] - 1] = False  # the last item of a user is not followed by the next user's first
    pairs = np.stack([items[:-1], items[1:]], axis=1)[same_user[:-1]]
    return pairs[pairs[:, 0] != pairs[:, 1]]


class TopLayers(torch.nn.Module):
    """The encoder split where tuning starts: each text's token states below the cut, computed once, and
    the top layers above it, then mean pooling and unit length (all-MiniLM-L6-v2's own head)."""

    def __init__(self, encoder: TextEncoderConfig, layers: int):
        super().__init__()
        model = load_encoder(encoder)
        self.bert, self.tokenizer = model[0].auto_model, model.tokenizer
        n = len(self.bert.encoder.layer)
        if layers > n:
            raise ValueError(f"tuning {layers} layers, but the encoder {encoder.model!r} has {n}")
        self.cut = n - layers
        self.top = copy.deepcopy(self.bert.encoder.layer[self.cut:])
        self.max_tokens = encoder.max_tokens or None

    def below(self, texts: list[str], batch_size: int = 64) -> list[torch.Tensor]:
        """Each text's (T_i, H) token states entering the top layers (frozen part; no gradients)."""
        ids = self.tokenizer(texts, truncation=self.max_tokens is not None, max_length=self.max_tokens)["input_ids"]
        out: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths together: little padding
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                tokens, mask = _padded([torch.tensor(ids[r]) for r in rows], self.tokenizer.pad_token_id or 0)
                embedded = self.bert.embeddings(input_ids=tokens)
                states = self._layers(embedded, mask.bool(), self.bert.encoder.layer[:self.cut])
                for j, r in enumerate(rows):
                    out[r] = states[j, : len(ids[r])].clone()
        return out

    @staticmethod
    def _layers(x: torch.Tensor, mask: torch.Tensor, layers: torch.nn.ModuleList) -> torch.Tensor:
        """(B, T, H) token states through `layers`, padding (False in the (B, T) `mask`) masked out."""
        additive = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(~mask, torch.finfo(x.dtype).min)
        for layer in layers:
            x = layer(x, additive[:, None, None, :])
        return x

    def forward(self, states: list[torch.Tensor]) -> torch.Tensor:
        """(B, H) unit-length embeddings of texts given by their token states below the cut."""
        lengths = torch.tensor([len(s) for s in states])
        x = torch.nn.utils.rnn.pad_sequence(states, batch_first=True)  # (B, T, H)
        mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]  # (B, T)
        x = self._layers(x, mask, self.top)
        pooled = (x * mask[..., None]).sum(1) / lengths[:, None].to(x.dtype)
        return F.normalize(pooled, dim=-1)

    def load_tuned(self, tuned: TunedLayers) -> None:
        self.top.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in tuned.state.items()})


def _padded(rows: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad)
    mask = (torch.arange(tokens.shape[1])[None, :] < torch.tensor([len(r) for r in rows])[:, None]).long()
    return tokens, mask


def pair_loss(embedded: torch.Tensor, pairs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric in-batch softmax: each pair's item must pick its partner among the batch's items.
    embedded: (U, H) unit vectors of the batch's distinct items; pairs: (B, 2) rows of `embedded`."""
    loss = embedded.new_zeros(())
    for a, b in ((0, 1), (1, 0)):
        logits = embedded[pairs[:, a]] @ embedded.T / temperature  # (B, U)
        logits[torch.arange(len(pairs)), pairs[:, a]] = -torch.inf  # an item is not its own partner
        loss = loss + F.cross_entropy(logits, pairs[:, b]) / 2
    return loss


def tune_encoder(texts: list[str], pairs: np.ndarray, encoder: TextEncoderConfig = TextEncoderConfig(),
                 tuning: TuningConfig = TuningConfig()) -> TunedLayers:
    """The top `tuning.layers` layers of `encoder` trained on `pairs` (P, 2) of rows of `texts` (cached on
    disk where `encoder`'s cache is on). Texts that are empty or in no pair are never encoded."""
    if len(pairs) == 0:
        raise ValueError("encoder tuning needs (item, next item) pairs: the training data has none")
    base = model_fingerprint(encoder.model, encoder.max_tokens, encoder.normalize)
    path = _cache_path(encoder, base, texts, pairs, tuning)
    if path is not None and path.is_file():
        with np.load(path) as saved:
            return TunedLayers(base, tuning.layers, {k: saved[k] for k in saved.files})
    torch.manual_seed(tuning.seed)
    net = TopLayers(encoder, tuning.layers)
    used = np.unique(pairs)
    states = dict(zip(used.tolist(), net.below([texts[i] for i in used]), strict=True))
    _train(net, states, pairs, tuning, encoder.progress)
    tuned = TunedLayers(base, tuning.layers, {k: v.detach().cpu().numpy() for k, v in net.top.state_dict().items()})
    if path is not None:
        atomic_savez(path, tuned.state)
    return tuned


def _train(net: TopLayers, states: dict[int, torch.Tensor], pairs: np.ndarray, tuning: TuningConfig,
           progress: bool) -> None:
    rng = np.random.default_rng(tuning.seed)
    steps = math.ceil(len(pairs) * tuning.epochs / tuning.batch_size)
    order = np.concatenate([rng.permutation(len(pairs)) for _ in range(math.ceil(tuning.epochs))])
    optimiser = torch.optim.AdamW(net.top.parameters(), lr=tuning.lr, weight_decay=0.01)
    deadline = time.monotonic() + tuning.max_minutes * 60 if tuning.max_minutes else math.inf
    net.top.train()
    with tqdm(total=steps, desc="tune encoder", unit="step", disable=not progress) as bar:
        for step in range(steps):
            batch = pairs[order[step * tuning.batch_size:(step + 1) * tuning.batch_size]]
            items, rows = np.unique(batch, return_inverse=True)
            embedded = net([states[i] for i in items.tolist()])
            loss = pair_loss(embedded, torch.from_numpy(rows.reshape(-1, 2)), tuning.temperature)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if time.monotonic() > deadline:
                break
    net.top.eval()


def _cache_path(encoder: TextEncoderConfig, base: str, texts: list[str], pairs: np.ndarray,
                tuning: TuningConfig) -> Path | None:
    root = cache_root(encoder)
    if root is None:
        return None
    digest = hashlib.sha256(json.dumps({"base": base, **asdict(tuning)}, sort_keys=True).encode())
    digest.update(text_keys(texts).tobytes())
    digest.update(np.ascontiguousarray(pairs, dtype=np.int64).tobytes())
    return root.parent / "tuned" / f"{digest.hexdigest()[:24]}.npz"


def encode_tuned(texts: list[str], tuned: TunedLayers, encoder: TextEncoderConfig = TextEncoderConfig()) -> np.ndarray:
    """(N, H) float32 unit embeddings of `texts` by the base encoder with its top layers replaced by the
    tuned ones; empty texts get a zero vector. Cached like the base encoder's (`encoder.cache_dir`), under
    the tuned layers' fingerprint: only texts not encoded by these layers before are encoded."""
    base = model_fingerprint(encoder.model, encoder.max_tokens, encoder.normalize)
    if base != tuned.base:
        raise ValueError(f"the tuned layers belong to another encoder (fingerprint {tuned.base}); "
                         f"{encoder.model!r} has {base}")
    root = cache_root(encoder)
    store = EmbeddingCache(root, f"tuned-{tuned.fingerprint}") if root else None

    def encode(missing: list[str]) -> np.ndarray:
        net = TopLayers(encoder, tuned.layers)
        net.load_tuned(tuned)
        net.eval()
        with torch.no_grad():
            parts = [net(net.below(missing[start:start + 256])).numpy() for start in
                     tqdm(range(0, len(missing), 256), desc="encode (tuned)", disable=not encoder.progress)]
        return np.concatenate(parts)

    width = None if any(texts) else load_encoder(encoder).get_sentence_embedding_dimension()
    return through_cache(texts, store, encode, width)
