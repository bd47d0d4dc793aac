"""Two CPU processes under torchrun (gloo) train the same model as one process, within float tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.test_cli import write_seq

CONFIG = """model = "sasrec"
[data]
path = "{data}"
format = "seq"
[models.sasrec]
d_model = 16
n_layers = 1
n_heads = 1
max_len = 8
dropout = 0.0
[models.sasrec.train]
epochs = 4
batch_size = 16
patience = 2
threads = 1
progress = false
amp = false
refit = false
"""


@pytest.mark.skipif(sys.platform == "win32", reason="gloo process groups on POSIX only here")
def test_two_process_training_equals_one_process(tmp_path):
    write_seq(tmp_path / "data.txt")
    (tmp_path / "train.toml").write_text(CONFIG.format(data=tmp_path / "data.txt"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train = ["-m", "omnirec.cli", "train", "--config", str(tmp_path / "train.toml"), "--quiet"]
    subprocess.run([sys.executable, *train, "--out", str(tmp_path / "one")], check=True, env=env, capture_output=True)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*launch, *train, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = np.load(tmp_path / "one/model/state.npz"), np.load(tmp_path / "two/model/state.npz")
    assert sorted(one.files) == sorted(two.files)
    for name in one.files:  # same averaged gradients, same steps: only summation order differs
        np.testing.assert_allclose(one[name], two[name], atol=2e-3, err_msg=name)
    meta_one, meta_two = (json.loads((tmp_path / f / "bundle.json").read_text()) for f in ("one", "two"))
    assert meta_one["training"]["best_epoch"] == meta_two["training"]["best_epoch"]
    assert meta_two["metrics"]["ndcg@10"] == pytest.approx(meta_one["metrics"]["ndcg@10"], abs=1e-3)
