"""Text hybrid: the text-aware sequence model, exact words and co-occurrence, blended per user.

Three channels score every item for a user:

- text: `textseq`, a Transformer over the history whose items are their sentence-encoder text (and IDs);
- words: the TF-IDF profile of the history (`tfidf`). Exact terms (a brand, a product line, a size) tell a
  variant of a known item apart better than a sentence embedding, which blurs them;
- neighbours: item-kNN over the training interactions (`itemknn`): what is bought with what, the signal
  the sequence model learns slowest on sparse data.

Each channel's scores are standardized per user (mean 0, standard deviation 1 over the catalogue) and
summed, text with weight 1 and the others with weights chosen on the validation targets while fitting, as
the network's epochs are; then the network is retrained on train + validation for that many epochs and the
neighbours rebuilt from both. An item with no training interaction (a new item) has no neighbours: its
text channel stands in for that channel, so new items compete on what they have.

How a new item should be placed against known ones cannot be read from known items alone, so it is learnt
the way a new item is met (`calibrate_new`): the fit that chooses the epochs and weights holds a share of
the trained items out of training (the latest first seen where the data has a clock, else at random), as
large as the share of the catalogue that has no training data (so about as many validation targets are
new to it as the test's will be), and chooses on the validation targets how new items are scored:
`text_weight * text + words_weight * words + offset`, each channel standardized per user as above. The
refit then trains on every item; the items still without data (and any added later) are scored by that
formula.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> from omnirec.data.split import split_dataset
>>> from omnirec.train.loop import TrainConfig
>>> ds = Dataset.from_frames(*generate(SyntheticConfig(n_users=60, n_items=30)))
>>> split = split_dataset(ds)
>>> text = TextSeqConfig(d_model=16, train=TrainConfig(epochs=2, progress=False))
>>> model = Hybrid(HybridConfig(text=text))
>>> model.item_vectors = np.random.default_rng(0).normal(size=(ds.n_items + 1, 8)).astype(np.float32)
>>> ids, _ = model.fit(split.train_data(ds.item_text)).recommend(split.histories("test").batch([1, 2]), k=5)
>>> ids.shape, sorted(model.weights)
((2, 5), ['neighbours', 'words'])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from omnirec.data.histories import UserBatch
from omnirec.data.schema import ITEM, TIME
from omnirec.data.train_data import TrainData, has_clock
from omnirec.features.similarity import text_inheritance, untrained_items
from omnirec.models.base import Recommender
from omnirec.models.content import TfidfConfig, TfidfContent
from omnirec.models.itemknn import ItemKNN, ItemKNNConfig
from omnirec.models.neural import validation_users
from omnirec.models.textseq import TextSeq, TextSeqConfig, standardize
from omnirec.train.loop import TrainResult, fit_deadlines, plan_refit, refit_growth, search_minutes
from omnirec.train.validation import first_target_gains, first_target_ndcg

CHANNELS = ("words", "neighbours")  # weighed against the text channel (weight 1)
NEW_PARAMS = ("text_weight", "words_weight", "offset")  # how a new item is scored (`calibrate_new`)
MIN_NEW_TARGETS = 50  # fewer held-out items among the validation targets than this: too few to calibrate on
NEW_GOALS = ("all", "balanced")  # what the new-item formula maximizes (`new_items_goal`)


@dataclass(frozen=True)
class HybridConfig:
    """text: the textseq model (its training settings are the hybrid's). words: the TF-IDF channel.
    neighbours: the item-kNN channel. grid: the weights tried for each channel on validation (extended
    upwards while the best is its largest). choice_users: validation users the weights are chosen on
    (a seeded sample; 0 = all). weights: used as they are when there are no validation targets.
    inherit: an item without training interactions takes the neighbours of its `inherit` nearest trained
    items by text (their co-occurrence, weighted by text cosine); 0 = its text score stands in for them.
    calibrate_new: choose how new items are scored on items held out of the search fit (module docstring);
    off, or with fewer than `MIN_NEW_TARGETS` of them among the validation targets, new items get the
    blend with their text standing in for their neighbours. new_items_goal: what that choice maximizes on
    the validation targets: "all" (NDCG@10 over every target alike, new items as often as the log has them)
    or "balanced" (the mean of the new targets' NDCG@10 and the known targets': new items count as much as
    known ones, against a log in which they were shown less)."""

    text: TextSeqConfig = field(default_factory=TextSeqConfig)
    words: TfidfConfig = field(default_factory=TfidfConfig)
    neighbours: ItemKNNConfig = field(default_factory=ItemKNNConfig)
    grid: tuple[float, ...] = (0.0, 0.125, 0.25, 0.5, 1.0)
    choice_users: int = 4096
    weights: tuple[float, float] = (0.25, 0.25)
    inherit: int = 0
    calibrate_new: bool = True
    new_items_goal: str = "all"

    def __post_init__(self) -> None:
        if self.new_items_goal not in NEW_GOALS:
            raise ValueError(f"new_items_goal must be one of {', '.join(NEW_GOALS)}; got {self.new_items_goal!r}")
        if not self.grid or min(self.grid) < 0 or min(self.weights) < 0 or len(self.weights) != len(CHANNELS):
            raise ValueError(f"grid and weights ({', '.join(CHANNELS)}) must be non-negative; got {self.grid}, "
                             f"{self.weights}")
        if self.choice_users < 0 or self.inherit < 0:
            raise ValueError(f"choice_users and inherit must be >= 0, got {self.choice_users}, {self.inherit}")


class Hybrid(Recommender):
    """textseq + TF-IDF + item-kNN, standardized per user and blended; see the module docstring."""

    name = "hybrid"
    Config = HybridConfig
    learns_from_validation = True
    trains_in_epochs = True
    needs_text = True
    reads_text_queries = True
    can_warm_start = True
    adds_items = True
    item_vectors: np.ndarray | None = None  # set before `fit` to skip the sentence encoder (textseq's)
    pretrained: TextSeq | None = None  # the textseq training starts from (`start_from`)
    new_params: dict[str, float] | None = None  # how new items are scored where calibrated (NEW_PARAMS)
    _heir_map: sp.csr_matrix | None = None  # `_heirs()`, once computed

    def _fit(self, data: TrainData) -> None:
        cfg, train = self.config, self.config.text.train
        has_valid = data.valid is not None and data.valid.items.size > 0
        growth = refit_growth(data.sequences, data.valid) if train.refit and has_valid else 0.0
        # one budget for early stopping and the refit, shared as the other neural models share it
        search_share = search_minutes(train.max_minutes, growth) if train.max_minutes and growth else train.max_minutes
        self._budget = fit_deadlines(train.max_minutes, growth)[1]
        held = self._held_out(data) if cfg.calibrate_new and has_valid else np.array([], dtype=np.int64)
        search = data.without_items(held) if len(held) else data
        text = self._textseq(replace(train, refit=False, max_minutes=search_share))
        text.item_vectors = self.item_vectors
        text.on_validation = self.on_validation
        text.fit(search)
        self.words = TfidfContent(cfg.words).fit(search)
        self.neighbours = ItemKNN(cfg.neighbours).fit(search)
        self.text, self._heir_map, self.new_params = text, None, None
        self.untrained = torch.from_numpy(untrained_items(search.sequences, data.n_items))
        users = np.array([], dtype=np.int64)
        if data.valid is not None:
            users = validation_users(search.sequences, data.valid, cfg.choice_users, cfg.text.train.seed)
        if not len(users):
            self.weights, self.training = dict(zip(CHANNELS, cfg.weights)), dict(text.training)
            self.history = list(text.history)
            return
        channels = self._cached_channels()
        self.weights, tried = self._choose(search, users, channels)
        best = max(t["valid_ndcg@10"] for t in tried)  # the blend's, which early stopping's textseq figure is not
        self.training = {**text.training, "text_valid_ndcg@10": text.training.get("best_valid_ndcg@10"),
                         "best_valid_ndcg@10": best, "weights": dict(self.weights), "weights_tried": tried}
        if len(held):
            self.new_params, tried_new = self._choose_new(search, users, held, channels)
            self.training["best_valid_ndcg@10"] = max(best, *(t["valid_ndcg@10"] for t in tried_new))
            self.training["new_items"] = {"held_out": len(held), "params": dict(self.new_params), "tried": tried_new}
        self.history = list(text.history)
        if cfg.text.train.refit and text.training.get("best_epoch"):
            self._refit(data, text)
        elif len(held):  # no refit: the held-out items stay new to this model, and are scored as new
            self.training["new_items"]["kept_out_of_training"] = True

    def _held_out(self, data: TrainData) -> np.ndarray:
        """Trained items to hold out of the search fit, as large a share of the trained items as the share of
        the catalogue without training data: the latest first seen where the times are a clock (new items
        are the latest), else drawn at random (seeded); none where fewer than `MIN_NEW_TARGETS` validation
        targets would be among them."""
        untrained = untrained_items(data.sequences, data.n_items)
        trained = np.flatnonzero(~untrained)
        n = int(round(untrained[1:].sum() / data.n_items * len(trained)))
        if n == 0:
            return np.array([], dtype=np.int64)
        if has_clock(data.interactions):
            first = data.interactions.group_by(ITEM).agg(pl.col(TIME).min()).sort([TIME, ITEM])
            held = np.sort(first[ITEM].to_numpy()[-n:])
        else:
            held = np.sort(np.random.default_rng(self.config.text.train.seed).choice(trained, size=n, replace=False))
        firsts = data.valid.items[data.valid.indptr[:-1][data.valid.lengths() > 0]]
        return held if np.isin(firsts, held).sum() >= MIN_NEW_TARGETS else np.array([], dtype=np.int64)

    def _textseq(self, train: Any) -> TextSeq:
        text = TextSeq(replace(self.config.text, train=train))
        return text if self.pretrained is None else text.start_from(self.pretrained)

    def with_loop_options(self, progress: bool | None = None, checkpoint_dir: str | None = None) -> Hybrid:
        """This hybrid, unfitted, with its textseq's progress bars and checkpoint folder changed where given
        (the refit checkpoints in its `refit` subfolder, as every neural model's does)."""
        text = TextSeq(self.config.text).with_loop_options(progress, checkpoint_dir).config
        return type(self)(replace(self.config, text=text))

    def start_from(self, pretrained: Recommender) -> Hybrid:
        """Start the text model from `pretrained`'s (a textseq, or a hybrid's textseq, fitted on another
        catalogue); the words and neighbours belong to this catalogue and are fitted afresh. Returns self."""
        source = pretrained.text if isinstance(pretrained, Hybrid) else pretrained
        if not isinstance(source, TextSeq):
            raise ValueError(f"hybrid starts from a textseq or a hybrid, not from {pretrained.name!r}")
        source._check_fitted()
        self.pretrained = source
        return self

    def _refit(self, data: TrainData, search: TextSeq) -> None:
        """textseq trained afresh on train + validation for its best epoch count (as many as fit what early
        stopping left of the budget: `plan_refit`; none, and the early-stopped one is kept, when too few
        fit), the neighbours rebuilt."""
        growth = refit_growth(data.sequences, data.valid)
        result = TrainResult([row for row in search.history if "train_s" in row], int(search.training["best_epoch"]))
        plan = plan_refit(result, growth, self._budget)
        self.training["refit_plan"] = {"wanted": plan.wanted, "epochs": plan.epochs}
        if not plan.epochs:
            return
        both = data.with_validation()
        left = self._budget.left()
        minutes = left / 60 if math.isfinite(left) else 0.0
        checkpoints = self.config.text.train.checkpoint_dir
        folder = str(Path(checkpoints) / "refit") if checkpoints else ""
        text = self._textseq(replace(self.config.text.train, refit=False, epochs=plan.epochs, max_minutes=minutes,
                                     checkpoint_dir=folder))
        text.config = replace(text.config, tune_encoder=False)  # the tuned encoder is the search's
        text.item_vectors, text.tuned = search.item_vectors, search.tuned
        text.fit(both)
        self.text, self.neighbours = text, ItemKNN(self.config.neighbours).fit(both)
        self.untrained, self._heir_map = torch.from_numpy(untrained_items(both.sequences, data.n_items)), None
        self.history += [{**row, "refit": True} for row in text.history]
        self.training["refit_epochs"] = len(text.history)

    def _cached_channels(self) -> Callable[[UserBatch], tuple[torch.Tensor, ...]]:
        """`_channels`, each validation batch's computed once for every weight tried."""
        cached: dict[bytes, tuple[torch.Tensor, ...]] = {}

        def channels(batch: UserBatch) -> tuple[torch.Tensor, ...]:
            key = np.asarray(batch.users, dtype=np.int64).tobytes()  # the batch's users, not only its first
            if key not in cached:
                cached[key] = self._channels(batch)
            return cached[key]

        return channels

    def _channels(self, batch: UserBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, I + 1) each: the text, words and neighbours channels, standardized per user."""
        text = standardize(self.text.score(batch).float())
        words = standardize(self.words.score(batch).float())
        raw = self.neighbours.score(batch).float()
        if self.config.inherit:
            heirs = self._heirs()
            raw = torch.from_numpy(np.asarray(heirs.T @ raw.numpy().T, dtype=np.float32).T.copy())
            return text, words, standardize(raw)
        return text, words, torch.where(self.untrained, text, standardize(raw))

    def _heirs(self) -> sp.csr_matrix:
        """(I + 1, I + 1) neighbours' columns: each trained item keeps its own, each untrained one takes its
        nearest trained items' by text (computed once per fit)."""
        if self._heir_map is None:
            self._heir_map = text_inheritance(self.text.item_vectors, self.untrained.numpy(), self.config.inherit)
        return self._heir_map

    def _choose(self, data: TrainData, users: np.ndarray, channels: Callable[[UserBatch], tuple[torch.Tensor, ...]],
                ) -> tuple[dict[str, float], list[dict[str, float]]]:
        """The channel weights with the best validation NDCG@10 on `users`; a weight at the top of the grid
        is doubled until it is not."""
        grid, tried, best = sorted(set(self.config.grid)), [], None
        while True:
            for w in itertools.product(grid, repeat=len(CHANNELS)):
                if any(t["weights"] == list(w) for t in tried):
                    continue
                score = lambda b, w=w: self._blend(channels(b), dict(zip(CHANNELS, w)))  # noqa: E731
                value = first_target_ndcg(score, data.sequences, data.valid, users, data.n_items)
                tried.append({"weights": list(w), "valid_ndcg@10": round(value, 5)})
                if best is None or value > best[1]:
                    best = (w, value)
            if max(best[0]) < grid[-1] or grid[-1] >= 8:
                break
            grid.append(grid[-1] * 2)
        return dict(zip(CHANNELS, best[0])), tried

    def _choose_new(self, data: TrainData, users: np.ndarray, held: np.ndarray,
                    channels: Callable[[UserBatch], tuple[torch.Tensor, ...]]) -> tuple[dict[str, float], list[dict]]:
        """How new items are scored (NEW_PARAMS), by the validation NDCG@10 on `users` (those whose first target
        is one of the `held` items make the new group, the others the known group; combined as
        `new_items_goal` says) with the channel weights fixed: coordinate ascent from the stand-in's values
        (the blend with text for neighbours), two rounds, each parameter over its grid, a grid widened while
        its best value is at an edge."""
        grids = {"text_weight": [0.0, 0.25, 0.5, 1.0, 2.0], "words_weight": [0.0, 0.25, 0.5, 1.0, 2.0],
                 "offset": [-1.0, -0.5, 0.0, 0.5, 1.0]}
        current = {"text_weight": 1.0 + (0.0 if self.config.inherit else self.weights["neighbours"]),
                   "words_weight": self.weights["words"], "offset": 0.0}
        is_new = np.isin(data.valid.items[data.valid.indptr[users]], held)  # (U,) the first target is held out
        tried: dict[tuple[float, ...], dict[str, float]] = {}  # (NEW_PARAMS values) -> validation NDCG@10s

        def value(params: dict[str, float]) -> float:
            key = tuple(params[p] for p in NEW_PARAMS)
            if key not in tried:
                score = lambda b: self._blend(channels(b), self.weights, params)  # noqa: E731
                gains = first_target_gains(score, data.sequences, data.valid, users, data.n_items)
                parts = {"all": slice(None), "new": is_new, "known": ~is_new}
                tried[key] = {g: -math.inf if gains is None else round(float(gains[part].mean()), 5)
                              if gains[part].size else 0.0 for g, part in parts.items()}
            got = tried[key]
            return got["all"] if self.config.new_items_goal == "all" else (got["new"] + got["known"]) / 2

        best = value(current)
        for _ in range(2):
            for name in NEW_PARAMS:
                explored = sorted({*grids[name], current[name]})
                for v in explored:
                    if (got := value({**current, name: v})) > best:
                        best, current = got, {**current, name: v}
                while True:  # widen while the best is at an edge: weights up (doubling), the offset both ways
                    lo, hi, at = explored[0], explored[-1], current[name]
                    if at == hi and hi < 8:
                        v = hi + (0.5 if name == "offset" else hi)
                    elif at == lo and name == "offset" and lo > -8:
                        v = lo - 0.5
                    else:
                        break
                    explored = sorted({*explored, v})
                    if (got := value({**current, name: v})) > best:
                        best, current = got, {**current, name: v}
        return current, [{"params": dict(zip(NEW_PARAMS, k)), "valid_ndcg@10": v["all"], "new_ndcg@10": v["new"],
                          "known_ndcg@10": v["known"]} for k, v in tried.items()]

    def _blend(self, channels: tuple[torch.Tensor, ...], weights: dict[str, float],
               new: dict[str, float] | None = None) -> torch.Tensor:
        """(B, I + 1) the channels weighted by `weights` (CHANNELS; text 1); the untrained items by the
        new-item formula where given."""
        text, words, neighbours = channels
        scores = text + weights["words"] * words + weights["neighbours"] * neighbours
        if new is None:
            return scores
        fresh = new["text_weight"] * text + new["words_weight"] * words + new["offset"]
        if self.config.inherit:  # inherited neighbours are the new item's own evidence
            fresh = fresh + weights["neighbours"] * neighbours
        new_items = self.untrained.clone()
        new_items[0] = False  # padding keeps its score
        return torch.where(new_items, fresh, scores)

    def _score(self, batch: UserBatch) -> torch.Tensor:
        return self._blend(self._channels(batch), self.weights, self.new_params)

    def add_items(self, texts: list[str]) -> None:
        """New items in every channel: textseq embeds them, TF-IDF weighs their words, and, having no
        interactions, they inherit neighbours (or their text stands in for them)."""
        self._check_fitted()
        for part in (self.text, self.words, self.neighbours):
            part.add_items(texts)
        self.untrained = torch.cat([self.untrained, torch.ones(len(texts), dtype=torch.bool)])
        self._heir_map, self.n_items = None, self.n_items + len(texts)

    def _score_with_query(self, batch: UserBatch, query: str, weight: float) -> torch.Tensor:
        """The blend and the query's text similarity, each standardized per user: (1 - weight) * blend +
        weight * query. Users with no history get the query alone (semantic search)."""
        asked = standardize(self.text.query_scores(query).expand(len(batch.users), -1).clone())
        known = torch.from_numpy(batch.lengths() > 0)[:, None]
        scores = torch.where(known, (1 - weight) * standardize(self.score(batch)) + weight * asked, asked)
        scores[:, 0] = -torch.inf
        return scores

    def text_vectors(self) -> np.ndarray | None:
        return self.text.text_vectors()

    def _get_state(self) -> dict[str, np.ndarray]:
        parts = {"text": self.text._get_state(), "words": self.words._get_state(),
                 "neighbours": self.neighbours._get_state()}
        state = {f"{part}/{k}": v for part, values in parts.items() for k, v in values.items()}
        new = {} if self.new_params is None else {
            "new_params": np.array([self.new_params[p] for p in NEW_PARAMS], dtype=np.float64)}
        return {**state, "weights": np.array([self.weights[c] for c in CHANNELS], dtype=np.float64),
                "untrained": self.untrained.numpy(), **new}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        def part(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + "/")}

        cfg = self.config
        self.text, self.words, self.neighbours = TextSeq(cfg.text), TfidfContent(cfg.words), ItemKNN(cfg.neighbours)
        for model, prefix in ((self.text, "text"), (self.words, "words"), (self.neighbours, "neighbours")):
            model.n_users, model.n_items = self.n_users, self.n_items
            model._set_state(part(prefix))
        self.weights = dict(zip(CHANNELS, np.asarray(state["weights"]).tolist()))
        self.untrained = torch.from_numpy(np.asarray(state["untrained"], dtype=bool))
        self.new_params = (dict(zip(NEW_PARAMS, np.asarray(state["new_params"]).tolist()))
                           if "new_params" in state else None)
        self._heir_map = None
