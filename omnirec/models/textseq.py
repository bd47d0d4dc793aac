"""Text-aware sequential recommender: SASRec whose items are represented by their text.

Each item's text (title, categories, brand...) is embedded once by a pretrained sentence encoder
(`omnirec.features.text`, frozen); a trained adaptor maps it into the model's space. Two modes:

- "id+text": item = adaptor(text) + an ID embedding. Best on items with a history.
- "text": item = adaptor(text) only. Inductive: any item with text can be scored, including items that
  never occurred in training (cold start), because nothing item-specific is learned.

Only items that occur in the training data are softmax candidates during training: items that appear
later (cold items) are not pushed down as negatives they never had the chance to be positives for.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> from omnirec.train.loop import TrainConfig
>>> import numpy as np
>>> ds = Dataset.from_frames(*generate(SyntheticConfig(n_users=40, n_items=30)))
>>> split = split_dataset(ds)
>>> vectors = np.random.default_rng(0).normal(size=(ds.n_items + 1, 8)).astype(np.float32)
>>> model = TextSeq(TextSeqConfig(d_model=16, train=TrainConfig(epochs=2, progress=False)))
>>> model.item_vectors = vectors  # normally the sentence encoder's output for ds.item_text
>>> ids, _ = model.fit(split.train_data(ds.item_text)).recommend(split.histories("test").batch([1, 2]), k=5)
>>> ids.shape
(2, 5)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnirec.data.histories import Histories, UserBatch
from omnirec.data.train_data import TrainData
from omnirec.features.similarity import text_inheritance, untrained_items
from omnirec.features.text import TextEncoderConfig, encode_texts
from omnirec.features.text_tuning import TunedLayers, TuningConfig, consecutive_pairs, encode_tuned, tune_encoder
from omnirec.models.layers import CausalEncoder
from omnirec.models.sequential import SequentialRecommender, check_sequence_config
from omnirec.train import losses
from omnirec.train.loop import LossFn, TrainConfig

MODES = ("id+text", "text")


@dataclass(frozen=True)
class TextSeqConfig:
    """mode: "id+text" | "text" (see the module docstring). text_dropout: dropout on the text vectors
    before the adaptor. adaptor_layers: 1 = a linear map of the text vector, more = an MLP.
    temperature: > 0 = scores are cosine similarities divided by it (as in UniSRec); 0 = dot products
    (as in SASRec). Cosines let the frozen text geometry through. The default 0.02 was chosen on
    validation NDCG@10 across datasets (`benchmarks/defaults.py`, DEFAULTS.md). id_dropout: the chance
    that an item's ID is left out in a training step (it is then its text alone, as a new item is).
    inherit_ids: after training, an item never seen in training takes the mean ID embedding of its
    `inherit_ids` nearest seen items by text (0 = it keeps none). The other fields are SASRec's; encoder:
    the sentence encoder and its cache; tune_encoder and tuning: the encoder's top layers trained on the
    training sequences first (`omnirec.features.text_tuning`)."""

    mode: str = "id+text"
    d_model: int = 128
    n_layers: int = 1
    n_heads: int = 1
    ffn_mult: int = 4
    max_len: int = 50
    dropout: float = 0.2
    text_dropout: float = 0.2
    adaptor_layers: int = 1
    temperature: float = 0.02
    id_dropout: float = 0.0
    inherit_ids: int = 0
    loss: str = "ce"
    n_negatives: int = 256
    encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    tune_encoder: bool = False
    tuning: TuningConfig = field(default_factory=TuningConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_sequence_config(self, (self.ffn_mult, self.adaptor_layers), heads=self.n_heads)
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}; expected one of {', '.join(MODES)}")
        for name in ("text_dropout", "id_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = dot products), got {self.temperature}")
        if self.inherit_ids < 0:
            raise ValueError(f"inherit_ids must be >= 0 (0 = off), got {self.inherit_ids}")


class TextSeqNet(CausalEncoder):
    """SASRec's encoder over items represented by their text (and IDs): (B, T) items -> (B, T, D)."""

    def __init__(self, text: torch.Tensor, cfg: TextSeqConfig):
        super().__init__()
        n_rows, width = text.shape
        self.register_buffer("text", text)  # (I + 1, E) frozen sentence embeddings; row 0 = padding
        layers: list[nn.Module] = [nn.Dropout(cfg.text_dropout)]
        for _ in range(cfg.adaptor_layers - 1):  # hidden layers of the adaptor, ffn_mult * d wide
            layers += [nn.Linear(width, cfg.ffn_mult * cfg.d_model), nn.GELU()]
            width = cfg.ffn_mult * cfg.d_model
        self.adaptor = nn.Sequential(*layers, nn.Linear(width, cfg.d_model), nn.LayerNorm(cfg.d_model))
        self.ids = nn.Embedding(n_rows, cfg.d_model, padding_idx=0) if cfg.mode == "id+text" else None
        if self.ids is not None:
            nn.init.zeros_(self.ids.weight)  # an item starts as its text; its ID learns what text misses
        self.add_encoder(cfg)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.temperature, self.id_dropout = cfg.temperature, cfg.id_dropout

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        x = self.adaptor(self.text[items])
        if self.ids is not None:
            ids = self.ids(items)
            if self.training and self.id_dropout:  # the item as a new item would be: its text alone
                kept = torch.rand(items.shape, device=items.device) >= self.id_dropout
                ids = ids * kept.unsqueeze(-1)
            x = x + ids
        return x.masked_fill((items == 0).unsqueeze(-1), 0.0)

    def forward(self, items: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        x = super().forward(items, times)  # (B, T, D)
        return x if not self.temperature else F.normalize(x, dim=-1) / self.temperature

    def item_table(self) -> torch.Tensor:
        """(I + 1, D) output item embeddings, computed from the text for every item (unit length when
        scores are cosines: the states carry the temperature)."""
        table = self.embed(torch.arange(self.text.shape[0], device=self.text.device))
        return table if not self.temperature else F.normalize(table, dim=-1)


def softmax_over(known: torch.Tensor) -> LossFn:
    """Full-softmax cross-entropy restricted to the item ids in `known` (K,), sorted, without 0."""
    position = torch.full((int(known.max()) + 1,), -1, dtype=torch.long)
    position[known] = torch.arange(1, len(known) + 1)

    def loss(hidden: torch.Tensor, targets: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([torch.zeros(1, dtype=torch.long, device=table.device), known.to(table.device)])
        return losses.full_softmax(hidden, position.to(targets.device)[targets], table[rows])

    return loss


def standardize(scores: torch.Tensor) -> torch.Tensor:
    """Each row shifted and scaled to mean 0, standard deviation 1 over its finite entries."""
    finite = torch.isfinite(scores)
    values = torch.where(finite, scores, 0.0)
    n = finite.sum(1, keepdim=True).clamp(min=1)
    mean = values.sum(1, keepdim=True) / n
    std = (torch.where(finite, (scores - mean) ** 2, 0.0).sum(1, keepdim=True) / n).sqrt().clamp(min=1e-6)
    return torch.where(finite, (scores - mean) / std, scores)


ARCHITECTURE = ("d_model", "n_layers", "n_heads", "ffn_mult", "max_len", "adaptor_layers", "temperature")  # what pretrained weights fix


class TextSeq(SequentialRecommender):
    """Text-aware SASRec; see the module docstring. `item_vectors` (I + 1, E) may be set before `fit` to
    skip the encoder (row 0 is padding); otherwise `fit` encodes `TrainData.item_text`."""

    name = "textseq"
    needs_text = True
    reads_text_queries = True
    can_warm_start = True
    adds_items = True
    Config = TextSeqConfig
    item_vectors: np.ndarray | None = None
    init_state: dict[str, torch.Tensor] | None = None  # weights training starts from (`start_from`)
    tuned: TunedLayers | None = None  # the encoder's top layers tuned on the training pairs (`tune_encoder`)

    def _fit(self, data: TrainData) -> None:
        if self.item_vectors is None or self.config.tune_encoder:
            if data.item_text is None:
                raise ValueError("textseq needs item text: the dataset has none (give an items file with a text column)")
            texts = list(data.item_text)
            if self.config.tune_encoder:
                pairs = consecutive_pairs(data.sequences)
                self.tuned = tune_encoder(texts, pairs, self.config.encoder, self.config.tuning)
                self.item_vectors = encode_tuned(texts, self.tuned, self.config.encoder)
            else:
                self.item_vectors = encode_texts(texts, self.config.encoder)
        if self.item_vectors.shape[0] != data.n_items + 1:
            raise ValueError(f"item_vectors has {self.item_vectors.shape[0]} rows; expected n_items + 1 = {data.n_items + 1}")
        super()._fit(data)

    def _finish_fit(self, data: TrainData, sequences: Histories) -> None:
        """With `inherit_ids`, each item the final network never saw gets the ID embedding of its nearest
        seen items by text (their weighted mean) instead of none: a new variant of a known product starts
        where that product is."""
        if self.config.inherit_ids and self.module.ids is not None:
            self._inherit_ids(untrained_items(sequences, data.n_items))

    def add_items(self, texts: list[str]) -> None:
        """New items embedded by this model's encoder (tuned where it was) and scored from their text; in
        id+text mode with an empty ID embedding, or with `inherit_ids` their nearest known items' mean."""
        self._check_fitted()
        new = self.encode(list(texts))
        net, before = self.module, self.n_items + 1
        self.item_vectors = np.concatenate([np.asarray(self.item_vectors, dtype=np.float32), new])
        net.text = torch.cat([net.text, torch.from_numpy(new).to(net.text)])  # (I + 1 + N, E)
        if net.ids is not None:
            grown = nn.Embedding(before + len(texts), net.ids.embedding_dim, padding_idx=0).to(net.ids.weight)
            with torch.no_grad():
                grown.weight.zero_()
                grown.weight[:before] = net.ids.weight
            net.ids = grown
        self.n_items += len(texts)
        if self.config.inherit_ids and net.ids is not None:  # from the known items, as after training
            unseen = np.zeros(self.n_items + 1, dtype=bool)
            unseen[0], unseen[before:] = True, True
            self._inherit_ids(unseen)

    def _inherit_ids(self, unseen: np.ndarray) -> None:
        heirs = text_inheritance(self.item_vectors, unseen, self.config.inherit_ids)
        ids = self.module.ids.weight
        with torch.no_grad():
            inherited = torch.from_numpy(heirs.T.toarray()).to(ids) @ ids  # (I + 1, D)
            ids[torch.from_numpy(unseen)] = inherited[torch.from_numpy(unseen)]

    def _loss(self, sequences: Histories) -> LossFn:
        if self.config.loss != "ce":
            return super()._loss(sequences)
        return softmax_over(torch.from_numpy(np.unique(sequences.items[sequences.items > 0])))

    def _build(self, n_items: int) -> nn.Module:
        net = TextSeqNet(torch.from_numpy(np.asarray(self.item_vectors, dtype=np.float32)), self.config)
        if self.init_state is not None:
            net.load_state_dict(self.init_state, strict=False)
        return net

    def _get_state(self) -> dict[str, np.ndarray]:
        return {**super()._get_state(), **(self.tuned.to_state() if self.tuned is not None else {})}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.tuned = TunedLayers.from_state(state)
        state = {k: v for k, v in state.items() if not k.startswith("tuned.")}
        self.item_vectors = np.asarray(state["text"])
        super()._set_state(state)

    # -- transfer ------------------------------------------------------------------------------
    def start_from(self, pretrained: TextSeq) -> TextSeq:
        """Start training from `pretrained`'s weights (on another catalogue): everything but its items'
        text vectors and ID embeddings, which belong to its catalogue. Returns self."""
        pretrained._check_fitted()
        mine, theirs = self.config, pretrained.config
        differ = [f for f in ARCHITECTURE if getattr(mine, f) != getattr(theirs, f)]
        if differ:
            raise ValueError(f"cannot start from the pretrained textseq: {', '.join(differ)} differ "
                             f"({', '.join(f'{f}={getattr(theirs, f)}' for f in differ)} there)")
        if theirs.encoder.model != mine.encoder.model:
            raise ValueError(f"pretrained with text encoder {theirs.encoder.model!r}, this one uses {mine.encoder.model!r}")
        self.init_state = {k: v.detach().clone() for k, v in pretrained.module.state_dict().items()
                           if k != "text" and not k.startswith("ids.")}
        return self

    @classmethod
    def zero_shot(cls, pretrained: TextSeq, item_vectors: np.ndarray, n_users: int) -> TextSeq:
        """`pretrained`'s network on a new catalogue (its text vectors, row 0 padding), without training:
        items are represented by their text only."""
        model = cls(replace(pretrained.config, mode="text")).start_from(pretrained)
        model.item_vectors = np.asarray(item_vectors, dtype=np.float32)
        model.n_users, model.n_items = n_users, len(item_vectors) - 1
        model.module = model._build(model.n_items)
        model.module.eval()
        model.history, model.training = [], {"zero_shot_from": pretrained.name}
        return model

    def text_vectors(self) -> np.ndarray | None:
        self._check_fitted()
        return self.module.text.detach().cpu().numpy()

    def encode(self, texts: list[str]) -> np.ndarray:
        """(N, E) `texts` embedded as this model's items were: by its encoder, with the tuned top layers
        where it tuned them (new items, requests). Nothing is cached: requests are not kept."""
        encoder = replace(self.config.encoder, cache_dir="-", progress=False)
        return encode_texts(texts, encoder) if self.tuned is None else encode_tuned(texts, self.tuned, encoder)

    # -- natural-language requests ---------------------------------------------------------------
    def query_scores(self, query: str) -> torch.Tensor:
        """(I + 1,) cosine similarity of the query's text embedding to every item's; padding -inf."""
        self._check_fitted()
        if not query.strip():
            raise ValueError("query is empty")
        q = torch.from_numpy(self.encode([query])[0])
        items = torch.from_numpy(np.asarray(self.item_vectors, dtype=np.float32))
        sims = items @ q / (items.norm(dim=1) * q.norm()).clamp(min=1e-12)
        sims[0] = -torch.inf
        return sims

    def _score_with_query(self, batch: UserBatch, query: str, weight: float) -> torch.Tensor:
        """The user's sequential scores and the query's text similarity, each standardized per user:
        (1 - weight) * seq + weight * text. Users with no history get the text similarity alone (semantic
        search over the catalogue)."""
        text = standardize(self.query_scores(query).expand(len(batch.users), -1).clone())
        seq = standardize(self.score(batch))
        known = torch.from_numpy(batch.lengths() > 0)[:, None]
        scores = torch.where(known, (1 - weight) * seq + weight * text, text)
        scores[:, 0] = -torch.inf
        return scores
