"""Cleaning, IdMap and the splits."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from omnirec.data.clean import CleanConfig, clean, k_core
from omnirec.data.dataset import Dataset
from omnirec.data.ids import IdMap, UnknownIdError
from omnirec.data.split import SplitError, cold_items, leave_one_out, split_dataset, temporal

U, I, T = "user_id", "item_id", "timestamp"


def frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={U: pl.String, I: pl.String, T: pl.Int64}, orient="row")


def dense(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={U: pl.Int64, I: pl.Int64, T: pl.Int64}, orient="row")


# ------------------------------------------------------------------ clean


def test_clean_reports_every_drop_with_its_reason():
    f = frame([("u", "a", 1), ("u", "a", 1), ("u", None, 2), ("v", "b", None), (" ", "c", 3), ("u", "b", 4)])
    out, report = clean(f)
    assert out.height == 2
    reasons = dict(report.steps)
    assert reasons["missing user, item or timestamp"] == 2
    assert reasons["empty user or item id"] == 1
    assert reasons["exact duplicate rows"] == 1
    assert report.dropped() == 4 and report.rows_in == 6 and report.rows_out == 2
    assert "exact duplicate rows" in str(report)


def test_clean_sorts_users_by_first_appearance_and_time_stably():
    f = frame([("b", "x", 5), ("a", "y", 2), ("b", "z", 1), ("a", "w", 2)])
    out, _ = clean(f)
    assert out[U].to_list() == ["b", "b", "a", "a"]
    assert out[I].to_list() == ["z", "x", "y", "w"]  # ties (a: t=2) keep file order


def test_repeats_keep_first_or_last():
    f = frame([("u", "a", 1), ("u", "b", 2), ("u", "a", 3)])
    assert clean(f)[0].height == 3
    first, report = clean(f, CleanConfig(repeats="first"))
    assert first[T].to_list() == [1, 2]
    assert dict(report.steps)["repeated (user, item): kept the first"] == 1
    assert clean(f, CleanConfig(repeats="last"))[0][T].to_list() == [2, 3]


def test_k_core_iterates_to_a_fixed_point():
    # dropping item c (1 interaction) leaves user w with 1 interaction, which must go too
    f = frame([("u", "a", 1), ("u", "b", 2), ("v", "a", 1), ("v", "b", 2), ("w", "c", 1), ("w", "a", 2)])
    out = k_core(f, 2, 2)
    assert set(out[U].to_list()) == {"u", "v"}
    assert (out.group_by(U).len()["len"] >= 2).all() and (out.group_by(I).len()["len"] >= 2).all()


def test_clean_that_leaves_nothing_raises_with_the_report():
    with pytest.raises(ValueError, match="no interactions left"):
        clean(frame([("u", "a", 1)]), CleanConfig(min_user_interactions=5))


def test_bad_clean_config_raises():
    with pytest.raises(ValueError, match="repeats"):
        CleanConfig(repeats="sometimes")


# ------------------------------------------------------------------ IdMap


def test_idmap_roundtrip_and_padding(tmp_path):
    m = IdMap.from_values(["z", "x", "z", "y"])
    assert m.labels == ["z", "x", "y"] and len(m) == 3
    assert m.encode(["y", "z"]).tolist() == [3, 1]
    assert m.decode([1, 2, 3]) == ["z", "x", "y"]
    with pytest.raises(UnknownIdError, match="'q'"):
        m.encode(["q"])
    assert m.encode(["q", "x"], unknown="zero").tolist() == [0, 2]
    with pytest.raises(UnknownIdError):
        m.decode([0])
    m.save(tmp_path / "ids.json")
    assert IdMap.load(tmp_path / "ids.json") == m


def test_dataset_maps_ids_densely_from_one(tiny_dataset):
    inter = tiny_dataset.interactions
    assert inter[U].min() == 1 and inter[U].max() == tiny_dataset.n_users
    assert inter[I].min() == 1 and inter[I].max() == tiny_dataset.n_items
    assert len(tiny_dataset.item_text) == tiny_dataset.n_items + 1 and tiny_dataset.item_text[0] == ""


def test_dataset_text_follows_the_item_map():
    inter = frame([("u", "b", 1), ("u", "a", 2)])
    items = pl.DataFrame({I: ["a", "b"], "text": ["apple", "banana"]})
    ds = Dataset.from_frames(inter, items)
    assert ds.item_text == ["", "banana", "apple"]


# ------------------------------------------------------------------ splits


def test_leave_one_out_takes_last_two():
    f = dense([(1, 1, 0), (1, 2, 1), (1, 3, 2), (1, 4, 3), (2, 2, 0), (2, 1, 1), (2, 3, 2)])
    s = leave_one_out(f, 2, 4)
    assert s.test.sort(U)[I].to_list() == [4, 3]
    assert s.valid.sort(U)[I].to_list() == [3, 1]
    assert s.train.height == 3
    assert s.histories("test").batch([1]).items.tolist() == [1, 2, 3]
    assert s.histories("valid").batch([1]).items.tolist() == [1, 2]


def test_leave_one_out_refuses_users_with_too_little_history():
    f = dense([(1, 1, 0), (1, 2, 1), (1, 3, 2), (2, 1, 0), (2, 2, 1)])
    with pytest.raises(SplitError, match="dense user 2 has 2 interaction"):
        leave_one_out(f, 2, 3)
    s = leave_one_out(f, 2, 3, short_users="train")
    assert s.train.filter(pl.col(U) == 2).height == 2 and 2 not in s.test[U].to_list()


def test_temporal_split_uses_global_cutoffs(tiny_dataset):
    s = split_dataset(tiny_dataset, "temporal", cold_users="drop")
    assert s.train[T].max() < s.valid[T].min() <= s.valid[T].max() < s.test[T].min()


def test_temporal_split_raises_for_users_with_no_training_data():
    f = dense([(1, 1, 0), (1, 2, 1), (1, 3, 2), (1, 1, 3), (2, 2, 9)])
    with pytest.raises(SplitError, match="no training data"):
        temporal(f, 2, 3, valid_frac=0.2, test_frac=0.2)
    s = temporal(f, 2, 3, valid_frac=0.2, test_frac=0.2, cold_users="drop")
    assert 2 not in s.test[U].to_list() and s.notes and "dropped" in s.notes[0]


def test_random_split_keeps_training_data_for_everyone_and_is_seeded(tiny_dataset):
    a = split_dataset(tiny_dataset, "random", seed=3)
    b = split_dataset(tiny_dataset, "random", seed=3)
    assert a.test.equals(b.test)
    assert set(a.train[U].unique().to_list()) == set(tiny_dataset.interactions[U].unique().to_list())
    total = a.train.height + a.valid.height + a.test.height
    assert total == tiny_dataset.interactions.height


def test_cold_item_split_keeps_cold_items_out_of_training():
    rng = np.random.default_rng(0)
    rows = [(u, int(i), int(t)) for u in range(1, 41) for t, i in enumerate(rng.choice(30, 6, replace=False))]
    rows += [(u, 30 + u % 6, 100) for u in range(1, 41)]  # items 30..35 appear only late, as each user's last
    s = cold_items(dense(rows), 40, 36, cutoff_quantile=0.85)
    assert s.cold.tolist() == [30, 31, 32, 33, 34, 35]
    assert not set(s.train[I].to_list()) & set(s.cold.tolist())
    assert not set(s.valid[I].to_list()) & set(s.cold.tolist())
    assert set(s.test[I].to_list()) == set(range(30, 36)) and s.test.height == 40  # every last item is cold


def test_cold_item_split_by_item_fraction_reports_warm_and_cold_targets():
    rows = [(u, (u * 7 + t) % 50, t) for u in range(1, 61) for t in range(8)]
    s = cold_items(dense(rows), 60, 50, item_frac=0.2, seed=1)
    assert len(s.cold) == 10
    assert not set(s.train[I].to_list()) & set(s.cold.tolist())
    cold_targets = s.test.filter(pl.col(I).is_in(s.cold.tolist())).height
    assert 0 < cold_targets < s.test.height
    assert any("test targets are cold" in n for n in s.notes)
    with pytest.raises(ValueError, match="item_frac"):
        cold_items(dense(rows), 60, 50, item_frac=1.5)


def test_split_detects_leaks():
    f = dense([(1, 1, 0), (1, 2, 1), (1, 3, 2)])
    s = leave_one_out(f, 1, 3)
    with pytest.raises(SplitError, match="also appear in train"):
        type(s)(s.train, s.valid, s.train, 1, 3, "broken")


def test_unknown_split_name():
    with pytest.raises(ValueError, match="unknown split"):
        split_dataset(Dataset.from_frames(frame([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)])), "bogus")


def test_synthetic_is_seeded_and_sequential():
    from omnirec.data.synthetic import SyntheticConfig, generate

    a, items = generate(SyntheticConfig(n_users=50, n_items=40, seed=1))
    b, _ = generate(SyntheticConfig(n_users=50, n_items=40, seed=1))
    c, _ = generate(SyntheticConfig(n_users=50, n_items=40, seed=2))
    assert a.equals(b) and not a.equals(c)
    assert a.group_by(U).agg(pl.col(T).diff().min())[T].min() >= 0
    assert items["text"].str.contains(r"\. ").all()
    assert np.all(a.group_by(U).len()["len"].to_numpy() >= 5)


def test_leave_one_out_orders_by_time_whatever_the_row_order():
    f = dense([(1, 3, 2), (1, 1, 0), (1, 2, 1)])
    s = leave_one_out(f, 1, 3)
    assert s.test[I].to_list() == [3] and s.valid[I].to_list() == [2] and s.train[I].to_list() == [1]


def test_clean_refuses_text_timestamps_and_accepts_integer_ids():
    bad = pl.DataFrame({U: ["u", "u"], I: ["a", "b"], T: ["10", "9"]})
    with pytest.raises(ValueError, match="expected integers"):
        clean(bad)
    ints = pl.DataFrame({U: [1, 1], I: [5, 6], T: [1, 2]})
    assert clean(ints)[0][U].dtype == pl.String


def test_select_items_keeps_each_users_order_and_the_text_of_the_kept_items() -> None:
    inter = pl.DataFrame({"user_id": ["a"] * 5 + ["b"] * 3, "item_id": ["x", "p", "y", "q", "z", "p", "x", "q"],
                          "timestamp": [1, 2, 3, 4, 5, 1, 2, 3]})
    items = pl.DataFrame({"item_id": ["x", "y", "z", "p", "q"], "text": ["ex", "why", "zed", "pea", "queue"]})
    ds = Dataset.from_frames(inter, items, name="shop")
    keep = np.zeros(ds.n_items + 1, dtype=bool)
    keep[ds.items.encode(["x", "y", "z"])] = True
    part = ds.select_items(keep, "letters", CleanConfig(min_user_interactions=2))
    assert part.name == "letters" and part.users.labels == ["a"]  # b kept one item only
    assert part.items.decode(part.interactions["item_id"].to_list()) == ["x", "y", "z"]
    assert [part.item_text[i] for i in part.items.encode(["x", "y", "z"])] == ["ex", "why", "zed"]
    with pytest.raises(ValueError, match="one flag per dense item id"):
        ds.select_items(keep[1:], "short")
