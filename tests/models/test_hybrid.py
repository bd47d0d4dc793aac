"""hybrid: channel weights chosen on validation (the grid grows past its edge), new items' stand-in, refit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnirec.data.dataset import Dataset
from omnirec.data.split import Split, cold_items
from omnirec.data.train_data import TrainData
from omnirec.features.text import TextEncoderConfig, encode_texts
from omnirec.models.hybrid import NEW_GOALS, Hybrid, HybridConfig
from omnirec.models.textseq import TextSeqConfig, standardize
from omnirec.train.loop import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def text_config(**train: object) -> TextSeqConfig:
    return TextSeqConfig(d_model=16, max_len=20, train=TrainConfig(**{"epochs": 2, "batch_size": 64, "progress": False,
                                                                      **train}))


def fitted(data: TrainData, n_items: int, **changes: object) -> Hybrid:
    model = Hybrid(HybridConfig(text=text_config(**changes)))
    vectors = np.random.default_rng(0).normal(size=(n_items + 1, 8)).astype(np.float32)
    vectors[0] = 0
    model.item_vectors = vectors
    return model.fit(data)


def test_weights_are_the_best_on_validation_and_the_grid_grows_past_its_edge(tiny_split: Split, tiny_dataset: Dataset,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = tiny_split.train_data(tiny_dataset.item_text)
    targets = data.valid

    def channels(self, batch):  # noqa: ANN001, ANN202 - text is noise, words a weak and neighbours a perfect signal
        rows = torch.arange(len(batch.users))
        wanted = torch.from_numpy(targets.items[targets.indptr[batch.users]])
        noise = torch.from_numpy(np.random.default_rng(1).normal(size=(len(batch.users), self.n_items + 1)))
        perfect = torch.zeros_like(noise)
        perfect[rows, wanted] = 1.0
        return noise.float(), (noise * 0.5).float(), perfect.float()

    monkeypatch.setattr(Hybrid, "_channels", channels)
    model = fitted(data, tiny_dataset.n_items, refit=False)
    assert model.weights["neighbours"] == 8.0, "the best weight sat on the grid's edge: the grid must grow to 8"
    tried = model.training["weights_tried"]
    assert max(t["weights"][1] for t in tried) == 8.0
    assert model.training["best_valid_ndcg@10"] == max(t["valid_ndcg@10"] for t in tried) > 0.9


def test_items_without_training_interactions_get_their_text_in_the_neighbours_channel(tiny_dataset: Dataset) -> None:
    split = cold_items(tiny_dataset.interactions, tiny_dataset.n_users, tiny_dataset.n_items, item_frac=0.2, seed=0)
    model = fitted(split.train_data(tiny_dataset.item_text), tiny_dataset.n_items, refit=False)
    assert model.untrained[split.cold].all() and model.untrained.sum() >= len(split.cold)
    text, _, neighbours = model._channels(split.histories("test").batch(np.arange(1, 9)))
    torch.testing.assert_close(neighbours[:, split.cold], text[:, split.cold])
    warm = ~model.untrained
    assert not torch.equal(neighbours[:, warm], text[:, warm])


def test_the_refit_learns_from_the_validation_items(tiny_split: Split, tiny_dataset: Dataset) -> None:
    data = tiny_split.train_data(tiny_dataset.item_text)
    model = fitted(data, tiny_dataset.n_items)
    assert model.training["refit_epochs"] == model.training["best_epoch"]
    both = data.with_validation()
    assert len(both.sequences.items) == len(data.sequences.items) + len(data.valid.items)
    rebuilt = type(model.neighbours)(model.config.neighbours).fit(both).similarity
    assert np.abs(model.neighbours.similarity - rebuilt).sum() == 0, "neighbours not rebuilt from train + valid"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        HybridConfig(grid=(-1.0, 1.0))
    with pytest.raises(ValueError, match="choice_users"):
        HybridConfig(choice_users=-1)


def test_it_starts_from_a_pretrained_textseq_and_reads_requests(tiny_split: Split, tiny_dataset: Dataset) -> None:
    data = tiny_split.train_data(tiny_dataset.item_text)
    real = encode_texts(list(tiny_dataset.item_text), TextEncoderConfig(cache_dir="-", progress=False))
    first = Hybrid(HybridConfig(text=text_config(refit=False)))
    first.item_vectors = real
    first.fit(data)
    model = Hybrid(HybridConfig(text=text_config(refit=False))).start_from(first)
    model.item_vectors = real
    model.fit(data)
    assert model.pretrained is first.text
    with pytest.raises(ValueError, match="textseq or a hybrid"):
        Hybrid().start_from(model.neighbours)
    batch = tiny_split.histories("test").batch(np.array([1, 2]))
    plain, _ = model.recommend(batch, k=5, query="anything", query_weight=0.0)
    assert (plain == model.recommend(batch, k=5)[0]).all()


def test_new_items_can_inherit_the_neighbours_of_their_nearest_known_items(tiny_dataset: Dataset) -> None:
    split = cold_items(tiny_dataset.interactions, tiny_dataset.n_users, tiny_dataset.n_items, item_frac=0.2, seed=0)
    data = split.train_data(tiny_dataset.item_text)
    model = Hybrid(HybridConfig(text=text_config(refit=False), inherit=3))
    vectors = np.random.default_rng(0).normal(size=(tiny_dataset.n_items + 1, 8)).astype(np.float32)
    vectors[0] = 0
    model.item_vectors = vectors
    model.fit(data)
    batch = split.histories("test").batch(np.arange(1, 9))
    raw = model.neighbours.score(batch).numpy()
    _, _, neighbours = model._channels(batch)
    new = split.cold[0]
    heirs = model._heirs()[:, new]
    assert heirs.nnz == 3 and np.isclose(heirs.sum(), 1.0)
    inherited = torch.from_numpy((raw @ model._heirs().toarray()).astype(np.float32))
    torch.testing.assert_close(neighbours, standardize(inherited))
    assert inherited[:, new].abs().sum() > 0, "the new item inherited no co-occurrence"
    trained = ~model.untrained
    torch.testing.assert_close(inherited[:, trained], torch.from_numpy(raw)[:, trained])


def test_the_refit_shares_the_budget_with_early_stopping(tiny_split: Split, tiny_dataset: Dataset,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from omnirec.models import hybrid as module
    from omnirec.train.loop import Deadline

    data = tiny_split.train_data(tiny_dataset.item_text)
    full = fitted(data, tiny_dataset.n_items, epochs=3)
    assert full.training["refit_plan"]["epochs"] == full.training["best_epoch"]  # no budget: the whole refit
    assert full.training["refit_epochs"] == full.training["best_epoch"]
    spent = []  # a budget already spent when the refit is planned: it is skipped, the early-stopped net kept
    monkeypatch.setattr(module, "fit_deadlines",
                        lambda minutes, growth: spent.append(minutes) or (Deadline(), Deadline(0.0)))
    skipped = fitted(data, tiny_dataset.n_items, epochs=3, max_minutes=5.0)
    assert spent == [5.0] and skipped.training["refit_plan"]["epochs"] == 0
    assert "refit_epochs" not in skipped.training and not any(row.get("refit") for row in skipped.history)


def known_by_text_new_by_words(monkeypatch: pytest.MonkeyPatch, dataset: Dataset) -> tuple[Split, TrainData]:
    """A cold-items split of `dataset` (20% of its items without training data) whose channels are
    constructed: the text channel knows the known validation targets only, the words channel the new ones
    only, the neighbours are noise. At least 10 new targets suffice to calibrate."""
    from omnirec.models import hybrid as module

    split = cold_items(dataset.interactions, dataset.n_users, dataset.n_items, item_frac=0.2, seed=0)
    data = split.train_data(dataset.item_text)
    targets = data.valid

    def channels(self, batch):  # noqa: ANN001, ANN202
        rows = torch.arange(len(batch.users))
        wanted = torch.from_numpy(targets.items[targets.indptr[batch.users]])
        rng = np.random.default_rng(int(batch.users[0]))
        text, words, neighbours = (torch.from_numpy(rng.normal(size=(len(batch.users), self.n_items + 1))).float()
                                   for _ in range(3))
        new = self.untrained[wanted]
        text[rows[~new], wanted[~new]] += 4.0
        words[rows[new], wanted[new]] += 4.0
        return text, words, neighbours

    monkeypatch.setattr(module, "MIN_NEW_TARGETS", 10)
    monkeypatch.setattr(Hybrid, "_channels", channels)
    return split, data


def test_new_items_are_scored_as_calibrated_on_items_held_out_of_the_search_fit(
        tiny_dataset: Dataset, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """20% of the catalogue has no training data, so the search fit holds a fifth of the trained items out.
    The text channel knows the known targets only and the words channel the new ones only: the stand-in
    (text for neighbours) ranks new targets by noise, the calibrated formula by their words."""
    split, data = known_by_text_new_by_words(monkeypatch, tiny_dataset)
    model = fitted(data, tiny_dataset.n_items, refit=False)
    record = model.training["new_items"]
    held = model.untrained.numpy().copy()
    held[split.cold] = False
    held[0] = False
    assert record["held_out"] == held.sum() == round(0.2 * (tiny_dataset.n_items - len(split.cold)))
    assert not np.isin(np.flatnonzero(held), data.without_items(np.flatnonzero(held)).sequences.items).any()
    stand_in, best = record["tried"][0], max(t["valid_ndcg@10"] for t in record["tried"])
    assert model.new_params == next(t["params"] for t in record["tried"] if t["valid_ndcg@10"] == best)
    assert model.new_params["words_weight"] > model.new_params["text_weight"]
    assert best > stand_in["valid_ndcg@10"] + 0.05, "calibrating new items did not beat the stand-in"
    model.save(tmp_path / "m")
    loaded = Hybrid.load(tmp_path / "m")
    assert loaded.new_params == model.new_params
    batch = split.histories("test").batch(np.arange(1, 9))
    torch.testing.assert_close(loaded._score(batch), model._score(batch))


def test_the_balanced_goal_places_new_items_higher_than_the_all_targets_goal(
        tiny_dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """New targets are a minority (about a fifth): over all targets alike the best formula gives up some of
    them for the known ones; the balanced goal counts both groups as halves, so it chooses a formula that
    serves the new targets better and the known ones no better."""
    _, data = known_by_text_new_by_words(monkeypatch, tiny_dataset)
    chosen = {}
    for goal in NEW_GOALS:
        model = Hybrid(HybridConfig(text=text_config(refit=False), new_items_goal=goal))
        model.item_vectors = np.random.default_rng(0).normal(size=(tiny_dataset.n_items + 1, 8)).astype(np.float32)
        tried = model.fit(data).training["new_items"]["tried"]
        chosen[goal] = next(t for t in tried if t["params"] == model.new_params)
        goal_value = {"all": lambda t: t["valid_ndcg@10"], "balanced": lambda t: t["new_ndcg@10"] + t["known_ndcg@10"]}
        assert goal_value[goal](chosen[goal]) == max(map(goal_value[goal], tried))
    assert chosen["balanced"]["new_ndcg@10"] > chosen["all"]["new_ndcg@10"]
    assert chosen["balanced"]["known_ndcg@10"] <= chosen["all"]["known_ndcg@10"]
    with pytest.raises(ValueError, match="new_items_goal must be one of all, balanced"):
        HybridConfig(new_items_goal="new")


def test_no_items_are_held_out_where_the_catalogue_has_no_new_items(tiny_split: Split, tiny_dataset: Dataset) -> None:
    data = tiny_split.train_data(tiny_dataset.item_text)
    assert not data.sequences.items.size or untrained_share(data) < 0.05
    model = fitted(data, tiny_dataset.n_items, refit=False)
    assert "new_items" not in model.training and model.new_params is None


def untrained_share(data: TrainData) -> float:
    return float((np.bincount(data.sequences.items, minlength=data.n_items + 1)[1:] == 0).mean())


def test_the_items_held_out_are_the_latest_first_seen_where_times_are_a_clock_else_random(
        tiny_dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    import polars as pl

    from omnirec.models import hybrid as module

    monkeypatch.setattr(module, "MIN_NEW_TARGETS", 1)
    split = cold_items(tiny_dataset.interactions, tiny_dataset.n_users, tiny_dataset.n_items, item_frac=0.2, seed=0)
    data = split.train_data(tiny_dataset.item_text)
    held = Hybrid(HybridConfig(text=text_config()))._held_out(data)
    first = data.interactions.group_by("item_id").agg(pl.col("timestamp").min())
    held_first = first.filter(pl.col("item_id").is_in(held))["timestamp"]
    others = first.filter(~pl.col("item_id").is_in(held))["timestamp"]
    assert len(held) == round(0.2 * (tiny_dataset.n_items - len(split.cold))) and held_first.min() >= others.max()
    positions = data.interactions.with_columns(pl.int_range(pl.len()).over("user_id").alias("timestamp"))
    data = TrainData(positions, data.n_users, data.n_items, data.item_text, data.valid)
    drawn = [Hybrid(HybridConfig(text=text_config(seed=s)))._held_out(data) for s in (0, 0, 1)]
    assert len(drawn[0]) == len(held) and np.array_equal(drawn[0], drawn[1]) and not np.array_equal(drawn[0], drawn[2])


def test_loop_options_reach_the_text_model_and_its_refit_checkpoints_apart(tiny_split: Split, tiny_dataset: Dataset,
                                                                           tmp_path) -> None:  # noqa: ANN001
    model = Hybrid(HybridConfig(text=text_config(progress=True))).with_loop_options(False, str(tmp_path))
    assert not model.config.text.train.progress and model.config.text.train.checkpoint_dir == str(tmp_path)
    assert not model.config.text.encoder.progress
    vectors = np.random.default_rng(0).normal(size=(tiny_dataset.n_items + 1, 8)).astype(np.float32)
    model.item_vectors = vectors
    model.fit(tiny_split.train_data(tiny_dataset.item_text))
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "refit" / "checkpoint.pt").exists()
