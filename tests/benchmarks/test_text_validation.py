"""benchmarks/text_validation.py: the offset frontier of a calibrated hybrid (what placement alone buys)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from omnirec.data.dataset import Dataset
from omnirec.data.split import cold_items
from omnirec.models import hybrid as hybrid_module
from omnirec.models.hybrid import Hybrid, HybridConfig
from omnirec.models.textseq import TextSeqConfig
from omnirec.train.loop import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
_SPEC = importlib.util.spec_from_file_location("text_validation", ROOT / "benchmarks" / "text_validation.py")
validation = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(validation)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_raising_the_offset_lifts_new_targets_and_lowers_known_ones_and_the_chosen_offset_is_kept(
        tiny_dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hybrid_module, "MIN_NEW_TARGETS", 5)
    split = cold_items(tiny_dataset.interactions, tiny_dataset.n_users, tiny_dataset.n_items, item_frac=0.2, seed=0)
    text = TextSeqConfig(d_model=16, max_len=20, train=TrainConfig(epochs=2, batch_size=64, progress=False))
    model = Hybrid(HybridConfig(text=text))
    model.item_vectors = np.random.default_rng(0).normal(size=(tiny_dataset.n_items + 1, 8)).astype(np.float32)
    model.fit(split.train_data(tiny_dataset.item_text))
    assert model.new_params is not None, "the tiny split must be calibrated for this test to mean anything"
    chosen = dict(model.new_params)
    known = np.setdiff1d(np.arange(1, tiny_dataset.n_items + 1), split.cold)
    monkeypatch.setattr(validation, "FRONTIER_OFFSETS", (-20.0, -1.0, 0.0, 1.0, 20.0))  # far below to far above
    rows = validation.offset_frontier(model, split, known)
    assert [r["offset"] for r in rows] == [-20.0, -1.0, 0.0, 1.0, 20.0]
    new, old = [r["new_ndcg@10"] for r in rows], [r["known_ndcg@10"] for r in rows]
    assert new == sorted(new) and old == sorted(old, reverse=True)
    assert new[-1] > new[0] and old[-1] < old[0], "moving new items from far below to far above changed nothing"
    assert model.new_params == chosen


def test_the_content_ceiling_finds_the_signal_of_the_text_and_none_in_random_vectors(
        tiny_dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "nested_cold", lambda d: cold_items(d.interactions, d.n_users, d.n_items,
                                                                          item_frac=0.2, seed=0))
    categories = [text.split(". ")[-1] if text else "" for text in tiny_dataset.item_text]  # "Pets > Dogs"
    names = sorted(set(categories))
    by_category = np.zeros((tiny_dataset.n_items + 1, len(names)), dtype=np.float32)
    by_category[np.arange(len(categories)), [names.index(c) for c in categories]] = 1.0
    noise = np.random.default_rng(0).normal(size=by_category.shape).astype(np.float32)
    told, untold = (validation.content_ceiling(tiny_dataset, v) for v in (by_category, noise))
    sentences, words = "sentence vectors, recency 0.8", "tfidf, recency 0.8"
    assert told["among_new"][sentences] > untold["among_new"][sentences] + 0.05
    assert untold["among_new"][words] > untold["among_new"][sentences] + 0.05, "TF-IDF reads the same text"
    assert told["new_targets"] > 0 and told["targets"] > told["new_targets"]
    assert len(told["newness_auc"]) == 3 and all(0 <= auc <= 1 for auc in told["newness_auc"].values())
