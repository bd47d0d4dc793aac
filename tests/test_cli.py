"""The `omnirec` command: quickstart, evaluate, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnirec.cli import main
from omnirec.models import MODELS


def write_seq(path, n_users=60, n_items=25, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(n_users):
        start = int(rng.integers(n_items))
        lines.append(" ".join([f"user{u}"] + [f"it{(start + j) % n_items}" for j in range(int(rng.integers(4, 9)))]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_quickstart_writes_artefacts_and_markov_beats_popularity(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path), "--users", "300", "--items", "120"]) == 0
    out = capsys.readouterr().out
    assert "markov beats popularity" in out
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["protocol"] == "loo-full" and doc["dataset"] == "synthetic"
    assert set(doc["results"]) == {"pop", "itemknn", "als", "bpr", "markov", "tfidf"}
    assert doc["results"]["markov"]["ndcg@10"] > doc["results"]["pop"]["ndcg@10"]
    saved = json.loads((tmp_path / "models" / "itemknn" / "model.json").read_text())
    assert doc["configs"]["itemknn"]["config_hash"] == saved["config_hash"]
    for name in doc["results"]:
        loaded = MODELS[name].load(tmp_path / "models" / name)
        assert loaded.n_items == doc["n_items"]
    assert (tmp_path / "results.png").stat().st_size > 1000
    per_user = np.load(tmp_path / "per_user.npz")
    assert len(per_user["users"]) == doc["n_users"] and "markov/ndcg@10" in per_user.files


def test_evaluate_on_a_seq_file(tmp_path, capsys):
    data = write_seq(tmp_path / "mine.txt")
    out = tmp_path / "out.json"
    code = main(["evaluate", "--path", str(data), "--format", "seq", "--models", "pop,markov,itemknn",
                 "--json", str(out), "--k", "5,10", "--quiet"])
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["n_users"] == 60 and doc["n_items"] == 25 and doc["protocol"] == "loo-full"
    row = doc["results"]["markov"]
    for key in ("ndcg@5", "hr@10", "mrr@10", "recall@10", "precision@10", "f1@10", "map@10",
                "coverage@10", "gini@10", "novelty@10", "ild@10", "fit_s", "eval_s"):
        assert key in row, key
    # items follow each other in a fixed cycle here: the Markov chain must find it
    assert row["hr@5"] > 0.9 > doc["results"]["pop"]["hr@5"]
    assert "markov" in capsys.readouterr().out


def test_evaluate_without_json_saves_in_the_working_folder_and_prints_cleaning_tests_and_notes(
        tmp_path, capsys, monkeypatch):
    data = write_seq(tmp_path / "mine.txt", n_users=40)
    with data.open("a") as fh:  # the last item repeats the first: a test target already in the history
        fh.write("".join(f"again{u} it1 it2 it3 it1\n" for u in range(5)))
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--path", str(data), "--format", "seq", "--models", "pop,markov", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert json.loads((tmp_path / "evaluate-results.json").read_text())["n_users"] == 45
    assert "saved to evaluate-results.json" in out and "cleaning: rows in: " in out
    assert "markov vs pop: ndcg@10 mean diff +" in out and "t-test p=" in out
    assert "5 test target(s) were already in the user's history (all models): full ranking masks" in out
    assert main(["evaluate", "--path", str(data), "--format", "seq", "--models", "pop", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
    assert f"saved to {tmp_path / 'run'}: results.json" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "results.json").read_text())["n_users"] == 45


def test_evaluate_reads_a_config(tmp_path):
    data = write_seq(tmp_path / "mine.txt")
    cfg = tmp_path / "exp.toml"
    cfg.write_text("[clean]\nmin_user_interactions = 5\n[models.itemknn]\nk = 5\n")
    assert main(["evaluate", "--path", str(data), "--format", "seq", "--models", "itemknn",
                 "--json", str(tmp_path / "o.json"), "--config", str(cfg), "--quiet"]) == 0
    assert json.loads((tmp_path / "o.json").read_text())["n_users"] < 60


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "pop,nosuch"], "unknown model 'nosuch'"),
        (["--models", "tfidf"], "needs item text"),
    ],
)
def test_evaluate_rejects_bad_model_lists(tmp_path, capsys, args, message):
    data = write_seq(tmp_path / "mine.txt")
    assert main(["evaluate", "--path", str(data), "--format", "seq", "--json", str(tmp_path / "o.json"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_unknown_config_key_names_it(tmp_path, capsys):
    data = write_seq(tmp_path / "mine.txt")
    cfg = tmp_path / "exp.toml"
    cfg.write_text("[models.itemknn]\nneighbours = 5\n")
    code = main(["evaluate", "--path", str(data), "--format", "seq", "--models", "itemknn",
                 "--json", str(tmp_path / "o.json"), "--config", str(cfg)])
    assert code == 2
    assert "unknown key 'neighbours' in [models.itemknn]" in capsys.readouterr().err


def test_malformed_file_gives_a_located_error(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("u1 a b c\nu2\n")
    assert main(["evaluate", "--path", str(bad), "--format", "seq", "--json", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "bad.txt, line 2" in err and "expected" in err


def test_evaluate_needs_a_source(tmp_path, capsys):
    assert main(["evaluate", "--json", str(tmp_path / "o.json")]) == 2
    assert "either --dataset" in capsys.readouterr().err
    assert main(["evaluate", "--path", "x.txt", "--json", str(tmp_path / "o.json")]) == 2
    assert "needs --format" in capsys.readouterr().err


def test_evaluate_with_a_csv_and_an_item_catalogue(tmp_path):
    rows = ["uid,sku,ts"]
    for u in range(40):
        rows += [f"u{u},s{(u + j) % 12},{1000 + j}" for j in range(5)]
    (tmp_path / "clicks.csv").write_text("\n".join(rows) + "\n")
    catalogue = ["sku,title,category"] + [f"s{i},Item {i},{'red' if i % 2 else 'blue'} things" for i in range(12)]
    (tmp_path / "items.csv").write_text("\n".join(catalogue) + "\n")
    out = tmp_path / "o.json"
    assert main(["evaluate", "--path", str(tmp_path / "clicks.csv"), "--format", "csv", "--user-col", "uid",
                 "--item-col", "sku", "--time-col", "ts", "--items", str(tmp_path / "items.csv"),
                 "--text-cols", "title,category", "--models", "pop,tfidf", "--json", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert doc["n_items"] == 12 and set(doc["results"]) == {"pop", "tfidf"}


def test_evaluate_cold_items_reports_cold_and_warm_targets(tmp_path, capsys):
    data = write_seq(tmp_path / "mine.txt", n_users=120, n_items=40)
    out = tmp_path / "out.json"
    code = main(["evaluate", "--path", str(data), "--format", "seq", "--models", "pop,markov", "--split", "cold-items",
                 "--cold-frac", "0.25", "--json", str(out), "--quiet"])
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["protocol"] == "cold-items-full" and set(doc["groups"]) == {"cold", "warm"}
    # neither model can recommend an item it never saw: zero on cold targets, above zero on warm ones
    assert doc["groups"]["cold"]["markov"]["hr@10"] == 0.0 < doc["groups"]["warm"]["markov"]["hr@10"]
    assert any("test targets are cold" in note for note in doc["notes"])
    assert "cold test targets only" in capsys.readouterr().out
    assert main(["evaluate", "--path", str(data), "--format", "seq", "--split", "cold-items", "--cold-frac", "1.0",
                 "--json", str(out), "--quiet"]) == 2
    assert "--split cold-items" in capsys.readouterr().err


def test_quiet_turns_off_the_text_encoders_progress_bar_too():
    model = MODELS["textseq"]().with_loop_options(progress=False)
    assert model.config.train.progress is False and model.config.encoder.progress is False
    loud = MODELS["textseq"]().with_loop_options()
    assert loud.config.encoder.progress is True
    assert MODELS["itemknn"]().with_loop_options(progress=False).config == MODELS["itemknn"]().config


def test_evaluate_deep_models_with_user_attributes_and_cold_users(tmp_path):
    """A CSV log plus a user table: the neural models run from the CLI, and cold users are reported apart."""
    rng = np.random.default_rng(0)
    log, users = ["user,item,time"], ["user,club,age"]
    for u in range(200):
        club = "red" if u % 2 else "blue"
        users.append(f"u{u},{club},{20 + u % 50}")
        own = range(0, 10) if club == "red" else range(10, 20)
        for t, i in enumerate(rng.choice(list(own), 6, replace=False)):
            log.append(f"u{u},i{i},{t}")
    (tmp_path / "log.csv").write_text("\n".join(log) + "\n")
    (tmp_path / "users.csv").write_text("\n".join(users) + "\n")
    out = tmp_path / "out.json"
    models = {"twotower": {"item_text": False, "train": {"epochs": 3}}, "neumf": {"train": {"epochs": 2}},
              "lightgcn": {"train": {"epochs": 2}}}
    cfg = tmp_path / "models.toml"
    cfg.write_text("".join(f"[models.{n}]\n" + "".join(f"{k} = {str(v).lower()}\n" for k, v in m.items() if k != "train")
                           + f"[models.{n}.train]\n" + "".join(f"{k} = {v}\n" for k, v in m["train"].items())
                           for n, m in models.items()))
    code = main(["evaluate", "--path", str(tmp_path / "log.csv"), "--format", "csv", "--user-col", "user",
                 "--item-col", "item", "--time-col", "time", "--user-attributes", str(tmp_path / "users.csv"),
                 "--models", "pop,twotower,neumf,lightgcn", "--split", "cold-users", "--cold-frac", "0.2",
                 "--config", str(cfg), "--json", str(out), "--quiet"])
    assert code == 0
    doc = json.loads(out.read_text())
    assert set(doc["groups"]) == {"cold users", "warm users"}
    assert set(doc["groups"]["cold users"]) == {"pop", "twotower", "neumf", "lightgcn"}
