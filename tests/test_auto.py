"""omnirec profile and omnirec auto: traits, candidate choice, the search within its budget, and a test
split that the selection never reads."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest

from omnirec.auto import choose_candidates, run_auto, search, selection_split
from omnirec.cli import main
from omnirec.config import from_dict
from omnirec.data.split import Split
from omnirec.models import MODELS, SASRec
from omnirec.models.sasrec import SASRecConfig
from omnirec.profile import gini, profile_dataset
from omnirec.train.loop import TrainConfig


def test_profile_of_the_synthetic_catalogue(tiny_dataset):
    traits = profile_dataset(tiny_dataset)
    assert (traits["users"], traits["items"]) == (300, 120)
    assert traits["interactions"] == tiny_dataset.interactions.height
    assert traits["sequential_signal"] > 0.05  # the generator gives each item a likely successor
    assert traits["item_text_coverage"] == 1.0 and traits["user_attributes"] == []
    counts = np.bincount(tiny_dataset.interactions["item_id"].to_numpy())[1:]
    assert traits["popularity_gini"] == round(gini(counts), 4)
    json.dumps(traits)  # plain JSON


def test_candidates_follow_the_traits(tiny_dataset):
    traits = profile_dataset(tiny_dataset)
    names = [c.model for c in choose_candidates(traits, budget_minutes=30)]
    assert names[:2] == ["pop", "itemknn"] and "sasrec" in names and "markov" in names and "tfidf" in names
    assert "twotower" not in names  # no user attributes, and order matters here
    short = [c.model for c in choose_candidates(traits, budget_minutes=5)]
    assert "sasrec" not in short  # a Transformer does not fit in a 5-minute budget
    with_attrs = dict(traits, user_attributes=["age"], user_attribute_coverage=1.0)
    assert "twotower" in [c.model for c in choose_candidates(with_attrs, budget_minutes=30)]
    for c in choose_candidates(traits, 30):
        assert c.reason


def test_search_refuses_a_split_with_test_rows_and_skips_weighted_models_without_budget(tiny_dataset, tiny_split):
    candidates = choose_candidates(profile_dataset(tiny_dataset), budget_minutes=30)
    with pytest.raises(ValueError, match="test rows"):
        search(tiny_dataset, tiny_split, candidates, budget_s=60, log=lambda _: None)
    result = search(tiny_dataset, selection_split(tiny_split), candidates, budget_s=0, log=lambda _: None)
    assert {t["model"] for t in result.trials} == {"pop", "markov", "tfidf"}  # the untuned ones only


def test_auto_never_reads_the_test_split_before_the_final_evaluation(tiny_dataset, tmp_path, monkeypatch):
    import omnirec.auto as auto

    reads, searching = [], {"on": False}
    original_targets, original_histories, original_search = Split.targets, Split.histories, auto.search

    def targets(self, phase):
        reads.append((phase, searching["on"], self.test.height))
        return original_targets(self, phase)

    def histories(self, phase):
        reads.append((phase, searching["on"], self.test.height))
        return original_histories(self, phase)

    def watched_search(*args, **kwargs):
        searching["on"] = True
        try:
            return original_search(*args, **kwargs)
        finally:
            searching["on"] = False

    monkeypatch.setattr(Split, "targets", targets)
    monkeypatch.setattr(Split, "histories", histories)
    monkeypatch.setattr(auto, "search", watched_search)
    doc = run_auto(tiny_dataset, tmp_path / "auto", budget_minutes=0.3, data_source={}, log=lambda _: None)
    during = [r for r in reads if r[1]]
    assert during and all(phase == "valid" and test_rows == 0 for phase, _, test_rows in during)
    assert any(phase == "test" and not on for phase, on, _ in reads)  # the one final evaluation
    assert doc["chosen"]["model"] in {r["model"] for r in doc["leaderboard"]}


def test_auto_profiles_train_and_validation_only(tiny_dataset, tmp_path, monkeypatch):
    """The candidates are chosen from a profile; it must not see a test row (the README says so)."""
    import omnirec.auto as auto

    seen, original_split = {}, auto.split_dataset

    class Profiled(Exception):
        pass

    def split(*args, **kwargs):
        seen["split"] = original_split(*args, **kwargs)
        return seen["split"]

    def profile(dataset):
        seen["profiled"] = dataset.interactions
        raise Profiled  # the search after it is not what this test is about

    monkeypatch.setattr(auto, "split_dataset", split)
    monkeypatch.setattr(auto, "profile_dataset", profile)
    with pytest.raises(Profiled):
        run_auto(tiny_dataset, tmp_path / "auto", budget_minutes=0.3, data_source={}, log=lambda _: None)
    assert "split" in seen, "the profile was taken before the split, so of every row, test rows included"
    test, profiled, key = seen["split"].test, seen["profiled"], ["user_id", "item_id", "timestamp"]
    assert test.height and profiled.join(test.select(key), on=key, how="semi").height == 0
    assert profiled.height == tiny_dataset.interactions.height - test.height  # train and validation, all of them
    assert profile_dataset(auto.selection_dataset(tiny_dataset, seen["split"]))["interactions"] == profiled.height


def test_auto_cli_writes_report_bundle_and_a_config_that_train_accepts(tmp_path, tiny_dataset):
    data = tmp_path / "log.csv"
    tiny_dataset.interactions.with_columns().write_csv(data)
    out = tmp_path / "auto"
    assert main(["auto", "--path", str(data), "--format", "csv", "--budget-minutes", "0.3", "--out", str(out)]) == 0
    for name in ("report.json", "report.md", "search.png", "chosen.toml", "bundle/model/model.json"):
        assert (out / name).exists(), name
    doc = json.loads((out / "report.json").read_text())
    pop_valid = next(r["best_valid_ndcg@10"] for r in doc["leaderboard"] if r["model"] == "pop")
    assert doc["chosen"]["valid_ndcg@10"] >= pop_valid
    assert json.loads((out / "bundle" / "bundle.json").read_text())["metrics"]["ndcg@10"] == pytest.approx(doc["test"]["ndcg@10"], abs=1e-5)
    config = tomllib.loads((out / "chosen.toml").read_text())
    assert config["model"] == doc["chosen"]["model"] and config["data"]["format"] == "csv"
    again = tmp_path / "again"
    (tmp_path / "again.toml").write_text((out / "chosen.toml").read_text().replace(str(out / "retrained"), str(again)))
    assert main(["train", "--config", str(tmp_path / "again.toml"), "--quiet"]) == 0
    # the chosen config trains to the same test result as the bundle auto wrote
    assert json.loads((again / "bundle.json").read_text())["metrics"]["ndcg@10"] == pytest.approx(doc["test"]["ndcg@10"], abs=1e-5)


def test_validation_hook_sees_every_validation_and_can_stop_training(tiny_split):
    seen = []
    model = SASRec(SASRecConfig(d_model=16, max_len=20, train=TrainConfig(epochs=3, progress=False, refit=False)))
    model.on_validation = lambda step, value: seen.append((step, value))
    model.fit(tiny_split.train_data())
    assert [s for s, _ in seen] == [1, 2, 3]
    assert [v for _, v in seen] == [row["valid_ndcg@10"] for row in model.history]

    class Stop(Exception):
        pass

    stopper = SASRec(SASRecConfig(d_model=16, max_len=20, train=TrainConfig(epochs=5, progress=False, refit=False)))
    stopper.on_validation = lambda step, value: (_ for _ in ()).throw(Stop()) if step == 2 else None
    with pytest.raises(Stop):
        stopper.fit(tiny_split.train_data())


def test_profile_cli_writes_json_and_png(tmp_path, tiny_dataset, capsys):
    data = tmp_path / "log.csv"
    tiny_dataset.interactions.write_csv(data)
    assert main(["profile", "--path", str(data), "--format", "csv", "--out", str(tmp_path / "p")]) == 0
    assert "sequential signal" in capsys.readouterr().out
    assert json.loads((tmp_path / "p" / "profile.json").read_text())["users"] == 300
    assert (tmp_path / "p" / "profile.png").stat().st_size > 10_000


@pytest.mark.parametrize("name", [n for n, cls in MODELS.items() if cls.default_trial])
def test_each_default_trial_is_a_point_of_its_search_space_and_builds_the_default_config(name):
    """The search's first trial is the model's defaults: replaying it through the model's own search
    space must give a table that builds exactly the default configuration (a default changed in the
    Config and not in the search would make the first trial something else)."""
    import optuna

    cls = MODELS[name]
    table = cls.search_space(optuna.trial.FixedTrial(cls.default_trial))
    assert from_dict(cls.Config, table) == cls.Config()


def test_capabilities_are_declared_on_the_classes():
    assert {n for n, cls in MODELS.items() if cls.needs_text} == {"tfidf", "textseq", "hybrid"}
    assert all(cls.trains_in_epochs == cls.learns_from_validation for cls in MODELS.values())
    assert {n for n, cls in MODELS.items() if cls.quick} >= {"pop", "itemknn", "markov"}
