"""RecBole 1.2.1's SASRec on `beauty`: wall time of each training epoch, evaluation time, peak memory.

Runs inside RecBole's own virtual environment (made by `speed_vs_recbole.py`), never omnirec's:

    benchmarks/.recbole-venv/bin/python benchmarks/recbole_sasrec.py --data-dir DIR --epochs 1 --out r.json

`DIR/beauty/beauty.inter` is the atomic file `speed_vs_recbole.py` writes from omnirec's loader, so both
libraries see the same interactions. RecBole writes its logs, tensorboard events and checkpoints under the
current folder; this script runs it in `--work-dir` (a temporary folder unless given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import recbole
import scipy
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_logger, init_seed

DATASET = "beauty"
THREADS = 2
warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")

# Notes on RecBole 1.2.1 with the versions in its venv (see speed_vs_recbole.RECBOLE_PACKAGES):
# - Config() aliases np.float = np.float_ etc. for its own code; that works on numpy 1.26 (pinned).
# - Trainer.evaluate(load_best_model=True) calls torch.load on a pickled checkpoint, which the default
#   weights_only=True of torch >= 2.6 refuses. This script never saves or loads a checkpoint: it trains
#   with `_train_epoch` and evaluates the model as it stands after the last epoch (load_best_model=False).
# - Its chained `df[col].fillna(..., inplace=True)` (a no-op here: the data has no missing values) and its
#   `torch.cuda.amp.GradScaler` warn with FutureWarning on every run; those warnings are silenced.
# - `recbole.quick_start` imports ray, and ray 2.6.3 does not import here (it needs pkg_resources, which
#   this venv lacks); nothing here imports quick_start.
CONFIG: dict[str, object] = {
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "TIME_FIELD": "timestamp",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    # The data is already 5-core: RecBole filters nothing.
    "user_inter_num_interval": "[0,inf)",
    "item_inter_num_interval": "[0,inf)",
    "MAX_ITEM_LIST_LENGTH": 50,
    "n_layers": 2,
    "n_heads": 2,
    "hidden_size": 64,
    "inner_size": 256,
    "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5,
    "loss_type": "CE",
    "train_neg_sample_args": None,
    "train_batch_size": 256,
    "learning_rate": 0.001,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["NDCG", "Hit"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "use_gpu": False,
    "seed": 2020,
    "worker": 0,
    "show_progress": False,
}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def metrics(result: dict) -> dict[str, float]:
    """RecBole's result dict as plain floats."""
    return {key: float(value) for key, value in result.items()}


def run(data_dir: Path, epochs: int) -> dict:
    """Load, train `epochs` epochs, evaluate on valid and test; return the result document."""
    torch.set_num_threads(THREADS)
    t0 = time.perf_counter()
    config = Config(model="SASRec", dataset=DATASET,
                    config_dict={**CONFIG, "epochs": epochs, "data_path": str(data_dir.resolve())})
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    load_s = time.perf_counter() - t0
    rss_after_load = peak_rss_mib()

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    trainer.eval_collector.data_collect(train_data)

    epoch_s, epoch_cpu_s, load_avg, losses = [], [], [], []
    for epoch in range(epochs):
        start, cpu = time.perf_counter(), time.process_time()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        epoch_s.append(time.perf_counter() - start)
        epoch_cpu_s.append(time.process_time() - cpu)
        load_avg.append(list(os.getloadavg()))
        losses.append(float(loss))
        print(f"recbole epoch {epoch}: {epoch_s[-1]:.1f} s wall, {epoch_cpu_s[-1]:.1f} s CPU, loss {loss:.2f}",
              flush=True)

    start = time.perf_counter()
    valid = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    valid_s = time.perf_counter() - start
    start = time.perf_counter()
    test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    test_s = time.perf_counter() - start

    return {
        "library": "recbole",
        "epoch_s": epoch_s,
        "epoch_cpu_s": epoch_cpu_s,  # CPU seconds of all threads (spinning included); beside wall time, a load hint
        "load_avg_after_epoch": load_avg,
        "train_loss": losses,
        "train_instances": len(train_data._dataset),
        "train_batches": len(train_data),
        "eval_s": valid_s + test_s,
        "valid_eval_s": valid_s,
        "test_eval_s": test_s,
        "load_s": load_s,
        "valid": metrics(valid),
        "test": metrics(test),
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_after_load_mib": rss_after_load,
        "dataset": {"users": dataset.user_num - 1, "items": dataset.item_num - 1,
                    "sequence_instances": dataset.inter_num},
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__, "scipy": scipy.__version__, "python": platform.python_version()},
        "config": {key: config.final_config_dict[key] if key != "data_path" else "(a temporary folder)"
                   for key in sorted(config.final_config_dict)},  # no machine paths in the saved result
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark in `--work-dir` and write the JSON document to `--out`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help=f"folder holding {DATASET}/{DATASET}.inter")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, help="where RecBole writes log/, log_tensorboard/, saved/")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads `--key=value` options from sys.argv: give it none.
    data_dir, out = args.data_dir.resolve(), args.out.resolve()
    home = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="recbole-work-") as tmp:
        work = (args.work_dir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        os.chdir(work)
        try:
            result = run(data_dir, args.epochs)
        finally:
            os.chdir(home)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
