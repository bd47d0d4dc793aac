"""`omnirec train` (TOML config -> bundle) and `omnirec recommend` (bundle -> top-k), and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

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


def test_recommend_for_an_unknown_user_exits_2_and_names_it(trained, capsys):
    folder, _ = trained
    assert main(["recommend", "--bundle", str(folder / "bundle"), "--user", "nobody", "-k", "5"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "'nobody'" in err


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


def test_a_scalar_k_is_accepted_or_clearly_refused(tmp_path, capsys):
    write_seq(tmp_path / "data.txt")
    code = main(["train", "--config", write_config(tmp_path, extra_top="k = 10"), "--quiet"])
    assert code == 0 or (code == 2 and "'k'" in capsys.readouterr().err)


def test_an_unknown_model_name_is_refused(tmp_path):
    write_seq(tmp_path / "data.txt")
    config = tmp_path / "train.toml"
    config.write_text(Path(write_config(tmp_path)).read_text().replace('model = "sasrec"', 'model = "nosuch"'))
    with pytest.raises(SystemExit, match="unknown model 'nosuch'"):
        main(["train", "--config", str(config), "--quiet"])


def test_checkpoint_dir_option_writes_a_checkpoint_there(tmp_path):
    write_seq(tmp_path / "data.txt")
    checkpoints = tmp_path / "checkpoints"
    assert main(["train", "--config", write_config(tmp_path), "--quiet", "--checkpoint-dir", str(checkpoints),
                 "--out", str(tmp_path / "elsewhere")]) == 0
    assert (checkpoints / CHECKPOINT).is_file()
    assert (tmp_path / "elsewhere" / "bundle.json").is_file() and not (tmp_path / "bundle").exists()
