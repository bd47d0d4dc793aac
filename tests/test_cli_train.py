"""`omnirec train` (TOML config -> bundle) and `omnirec recommend` (bundle -> top-k), and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omnirec.bundle import Bundle
from omnirec.cli import main
from omnirec.train.loop import CHECKPOINT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_seq(path, n_users=40, n_items=20, seed=0) -> dict[str, list[str]]:
    """A seq-format file where items follow each other in a cycle; returns each user's items."""
    rng = np.random.default_rng(seed)
    histories = {}
    for u in range(n_users):
        start = int(rng.integers(n_items))
        histories[f"user{u}"] = [f"it{(start + j) % n_items}" for j in range(int(rng.integers(4, 9)))]
    path.write_text("".join(f"{user} {' '.join(items)}\n" for user, items in histories.items()))
    return histories


def write_config(tmp_path, extra_top: str = "", extra_model: str = "", extra_train: str = "") -> str:
    config = tmp_path / "train.toml"
    config.write_text(f"""model = "sasrec"
out = "{tmp_path / 'bundle'}"
{extra_top}
[data]
path = "{tmp_path / 'data.txt'}"
format = "seq"

[models.sasrec]
d_model = 16
n_layers = 1
n_heads = 1
max_len = 8
{extra_model}
[models.sasrec.train]
epochs = 2
batch_size = 16
threads = 1
progress = false
{extra_train}
""")
    return str(config)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple:
    """(folder, the users' histories): one `omnirec train` run shared by the tests that only read its bundle."""
    tmp_path = tmp_path_factory.mktemp("train")
    histories = write_seq(tmp_path / "data.txt")
    assert main(["train", "--config", write_config(tmp_path), "--quiet"]) == 0
    return tmp_path, histories


def test_train_writes_a_bundle_with_test_metrics(trained):
    folder, _ = trained
    doc = json.loads((folder / "bundle" / "bundle.json").read_text())
    assert doc["model"] == "sasrec" and doc["config"]["d_model"] == 16 and doc["config"]["train"]["epochs"] == 2
    assert 0 <= doc["metrics"]["ndcg@10"] <= 1 and "hr@20" in doc["metrics"]
    assert doc["n_users"] == 40 and doc["n_items"] == 20 and doc["protocol"] == "loo-full"
    assert doc["training"]["epochs_run"] == 2 and len([r for r in doc["history"] if not r.get("refit")]) == 2


def test_recommend_prints_unseen_items_as_json(trained, capsys):
    folder, histories = trained
    capsys.readouterr()
    assert main(["recommend", "--bundle", str(folder / "bundle"), "--user", "user3", "-k", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    items = [row["item"] for row in doc["items"]]
    assert doc["user"] == "user3" and len(items) == len(set(items)) == 5
    assert not set(items) & set(histories["user3"])
    assert all(item.startswith("it") for item in items)


def test_recommend_prints_a_ranked_table(trained, capsys):
    folder, _ = trained
    capsys.readouterr()
    assert main(["recommend", "--bundle", str(folder / "bundle"), "--user", "user0", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]


def test_recommend_for_an_unknown_user_gives_the_fallback_and_says_why(trained, capsys):
    folder, _ = trained
    capsys.readouterr()
    assert main(["recommend", "--bundle", str(folder / "bundle"), "--user", "nobody", "-k", "5"]) == 0
    out, err = capsys.readouterr()
    assert "note:" in err and "'nobody'" in err and "not known" in err
    assert len(out.splitlines()) == 5 and all("popular" in line for line in out.splitlines())
    assert main(["recommend", "--bundle", str(folder / "bundle"), "--user", "nobody", "-k", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["personalized"] is False and "'nobody'" in doc["reason"] and len(doc["items"]) == 5


def test_recommend_lists_the_models_own_top_k_with_reasons(trained, capsys):
    folder, _ = trained
    bundle = Bundle.load(folder / "bundle")
    capsys.readouterr()
    assert main(["recommend", "--bundle", str(folder / "bundle"), "--user", "user3", "-k", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [row["item"] for row in doc["items"]] == [item for item, _ in bundle.recommend("user3", k=5)]
    assert doc["personalized"] is True and all(row["reason"].startswith("sasrec ranks it #") for row in doc["items"])


def test_recommend_from_a_folder_that_is_no_bundle(tmp_path, capsys):
    assert main(["recommend", "--bundle", str(tmp_path), "--user", "user0"]) == 2
    assert "no bundle.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"extra_top": "epochs = 3"}, "unknown key 'epochs'"),
        ({"extra_model": "hidden = 32"}, "unknown key 'hidden' in [models.sasrec]"),
        ({"extra_train": "epoch = 2"}, "unknown key 'epoch' in [models.sasrec].train"),
        ({"extra_model": "dropout = 1.0"}, "dropout must be in [0, 1)"),
    ],
    ids=["top-level", "model", "train", "bad-value"],
)
def test_a_bad_config_gives_a_clear_error(tmp_path, capsys, extra, message):
    write_seq(tmp_path / "data.txt")
    assert main(["train", "--config", write_config(tmp_path, **extra), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()


def test_a_scalar_k_is_taken_as_the_one_cutoff(tmp_path):
    """`k = 10` means `k = [10]`: the bundle's test metrics are at 10 only (the default is 10 and 20)."""
    write_seq(tmp_path / "data.txt")
    assert main(["train", "--config", write_config(tmp_path, extra_top="k = 10"), "--quiet"]) == 0
    cutoffs = {name.split("@")[1] for name in json.loads((tmp_path / "bundle" / "bundle.json").read_text())["metrics"]
               if "@" in name}
    assert cutoffs == {"10"}


def test_an_unknown_model_name_is_refused(tmp_path, capsys):
    write_seq(tmp_path / "data.txt")
    config = tmp_path / "train.toml"
    config.write_text(Path(write_config(tmp_path)).read_text().replace('model = "sasrec"', 'model = "nosuch"'))
    assert main(["train", "--config", str(config), "--quiet"]) == 2
    assert "unknown model 'nosuch'" in capsys.readouterr().err


def test_checkpoint_dir_option_writes_a_checkpoint_there(tmp_path):
    write_seq(tmp_path / "data.txt")
    checkpoints = tmp_path / "checkpoints"
    assert main(["train", "--config", write_config(tmp_path), "--quiet", "--checkpoint-dir", str(checkpoints),
                 "--out", str(tmp_path / "elsewhere")]) == 0
    assert (checkpoints / CHECKPOINT).is_file()
    assert (tmp_path / "elsewhere" / "bundle.json").is_file() and not (tmp_path / "bundle").exists()


def write_recbole(folder: Path, name: str, n_users: int, words: list[str], seed: int) -> None:
    """A RecBole-style catalogue: `<name>.inter` (user, item, time) and `<name>.text` (item, text)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(n_users):
        start = int(rng.integers(len(words)))
        rows += [f"u{u}\t{name}{(start + j) % len(words)}\t{j}" for j in range(int(rng.integers(4, 8)))]
    (folder / f"{name}.inter").write_text("\n".join(rows) + "\n")
    texts = ["item_id:token\ttext:token_seq"] + [f"{name}{i}\t{w} for the {name} shop" for i, w in enumerate(words)]
    (folder / f"{name}.text").write_text("\n".join(texts) + "\n")


def textseq_config(tmp_path: Path, name: str, d_model: int = 16) -> str:
    config = tmp_path / f"{name}.toml"
    config.write_text(f"""model = "textseq"
out = "{tmp_path / name}-bundle"
[data]
path = "{tmp_path / name / name}.inter"
format = "recbole"
[models.textseq]
mode = "text"
d_model = {d_model}
max_len = 8
[models.textseq.encoder]
cache_dir = "-"
progress = false
[models.textseq.train]
epochs = 2
batch_size = 16
threads = 1
progress = false
""")
    return str(config)


def test_textseq_trains_on_a_recbole_catalogue_and_transfers(tmp_path, capsys):
    write_recbole(tmp_path / "garden", "garden", 30, ["rake", "spade", "hose", "gloves", "seeds", "pots"], seed=1)
    write_recbole(tmp_path / "kitchen", "kitchen", 30, ["knife", "pan", "whisk", "kettle", "ladle", "grater", "sieve", "apron", "mug", "tongs"], seed=2)
    assert main(["train", "--config", textseq_config(tmp_path, "garden"), "--quiet"]) == 0
    pretrained = str(tmp_path / "garden-bundle")
    assert main(["train", "--config", textseq_config(tmp_path, "kitchen"), "--quiet", "--init-from", pretrained]) == 0
    bundle = json.loads((tmp_path / "kitchen-bundle" / "bundle.json").read_text())
    assert bundle["model"] == "textseq" and bundle["n_items"] == 10 and "ndcg@10" in bundle["metrics"]
    capsys.readouterr()
    assert main(["recommend", "--bundle", str(tmp_path / "kitchen-bundle"), "--user", "u3", "-k", "3", "--json"]) == 0
    items = [row["item"] for row in json.loads(capsys.readouterr().out)["items"]]
    assert len(items) == 3 and all(i.startswith("kitchen") for i in items)
    kitchen = str(tmp_path / "kitchen-bundle")
    assert main(["recommend", "--bundle", kitchen, "--query", "a kettle to boil water", "-k", "2", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["user"] is None and answer["items"][0]["item"] == "kitchen3"  # "kettle for the kitchen shop"
    assert main(["recommend", "--bundle", kitchen, "--user", "u3", "--query", "kettle", "--json"]) == 0
    capsys.readouterr()
    assert main(["recommend", "--bundle", kitchen]) == 2
    assert "give --user, --query, or both" in capsys.readouterr().err
    assert main(["recommend", "--bundle", kitchen, "--query", "kettle", "--query-weight", "3"]) == 2
    assert "argument --query-weight" in capsys.readouterr().err
    assert main(["train", "--config", textseq_config(tmp_path, "kitchen", d_model=32), "--quiet",
                 "--init-from", pretrained]) == 2
    assert "d_model differ" in capsys.readouterr().err


def test_query_on_a_model_without_text_is_a_clear_error(trained, capsys):
    folder, _ = trained
    assert main(["recommend", "--bundle", str(folder / "bundle"), "--user", "user1", "--query", "shoes"]) == 2
    assert "does not read text queries" in capsys.readouterr().err


def test_init_from_refuses_models_without_transfer(tmp_path, trained, capsys):
    folder, _ = trained
    (tmp_path / "data.txt").write_text((folder / "data.txt").read_text())
    assert main(["train", "--config", write_config(tmp_path), "--quiet", "--init-from", str(folder / "bundle")]) == 2
    assert "cannot start from pretrained weights" in capsys.readouterr().err
