"""RecBole 1.2.1's SASRec on `beauty` in a process of its own, for `speed_vs_recbole.py` (which launches it).

Runs inside RecBole's own virtual environment (made by `speed_vs_recbole.py`), never omnirec's:

    benchmarks/.recbole-venv/bin/python benchmarks/recbole_sasrec.py --data-dir DIR --spec '{...}' \
        --budget-minutes 8 --seed 0 --threads 2 --export-dir E --out r.json

`DIR/beauty/beauty.inter` is the atomic file `omnirec_sasrec.py prepare` writes, so both libraries train
and validate on the same split. Training is RecBole's own `Trainer.fit` with `eval_step` 1 (a full-ranking
validation after every epoch) and no early stopping, for `--budget-minutes` of wall time: the epoch under
way when the budget runs out stops after its current batch and is validated, as omnirec's loop does.

After each validation the network's states of the validation users (captured as RecBole's own validation
computes them) and the item table go to `--export-dir/epochNNN.npz` in omnirec's ids; writing them is timed
and left out of the wall-clock curve. RecBole writes its logs and tensorboard events under the current
folder; this script runs it in `--work-dir` (a temporary folder unless given).
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
clock = time.perf_counter
warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")

# Notes on RecBole 1.2.1 with the versions in its venv (see speed_vs_recbole.RECBOLE_PACKAGES):
# - Config() aliases np.float = np.float_ etc. for its own code; that works on numpy 1.26 (pinned).
# - Trainer.evaluate(load_best_model=True) calls torch.load on a pickled checkpoint, which the default
#   weights_only=True of torch >= 2.6 refuses; `fit(saved=False)` never writes or reads one.
# - Its chained `df[col].fillna(..., inplace=True)` (a no-op here: the data has no missing values) and its
#   `torch.cuda.amp.GradScaler` warn with FutureWarning on every run; those warnings are silenced.
# - `recbole.quick_start` imports ray, and ray 2.6.3 does not import here (it needs pkg_resources, which
#   this venv lacks); nothing here imports quick_start.
# - For sequential models RecBole's full ranking does not mask a user's history items (only padding).
CONFIG: dict[str, object] = {
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "TIME_FIELD": "timestamp",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    # The data is already 5-core: RecBole filters nothing.
    "user_inter_num_interval": "[0,inf)",
    "item_inter_num_interval": "[0,inf)",
    "hidden_act": "gelu",
    "train_neg_sample_args": None,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["NDCG", "Hit"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "eval_step": 1,
    "epochs": 100_000,
    "stopping_step": 100_000,  # no early stopping: the budget ends training, as on omnirec's side
    "enable_amp": False,
    "use_gpu": False,
    "worker": 0,
    "show_progress": False,
}


def spec_config(spec: dict) -> dict[str, object]:
    """RecBole's names for the sizes both sides share."""
    if spec["loss"] != "ce":
        raise ValueError("this benchmark compares full cross-entropy")
    return {"n_layers": spec["n_layers"], "n_heads": spec["n_heads"], "hidden_size": spec["hidden"],
            "inner_size": spec["inner"], "MAX_ITEM_LIST_LENGTH": spec["max_len"],
            "hidden_dropout_prob": spec["dropout"], "attn_dropout_prob": spec["dropout"], "loss_type": "CE",
            "train_batch_size": spec["batch_size"], "learning_rate": spec["lr"], "learner": spec["optimizer"],
            "weight_decay": spec["weight_decay"]}


class BudgetExhausted(Exception):
    """Raised from the epoch callback once the time budget is spent: it ends `Trainer.fit`."""


class Budgeted:
    """The training loader, ending an epoch after the batch during which the deadline passed; every other
    attribute is the loader's own."""

    def __init__(self, loader, deadline: float):
        self.loader, self.deadline, self.batches, self.cut = loader, deadline, 0, False

    def __iter__(self):
        self.batches = 0
        for batch in self.loader:
            yield batch
            self.batches += 1
            if clock() >= self.deadline:
                self.cut = True
                return

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


class Capture:
    """Keeps, while RecBole validates, each batch's user and target ids and the network's output states:
    wrappers around the model's own `forward` and `full_sort_predict` that change nothing they return."""

    def __init__(self, model: SASRec):
        self.users, self.targets, self.hidden = [], [], []
        forward, predict = model.forward, model.full_sort_predict

        def capturing_forward(item_seq, item_seq_len):
            out = forward(item_seq, item_seq_len)
            if not model.training:
                self.hidden.append(out.detach())
            return out

        def capturing_predict(interaction):
            self.users.append(interaction[model.USER_ID])
            self.targets.append(interaction[model.ITEM_ID])
            return predict(interaction)

        model.forward, model.full_sort_predict = capturing_forward, capturing_predict

    def take(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = torch.cat(self.users), torch.cat(self.targets), torch.cat(self.hidden)
        self.users, self.targets, self.hidden = [], [], []
        return out


class Recorder:
    """The callback after each validation: records (wall seconds since the data was ready, NDCG@10) and
    exports the states in omnirec's ids; the export's time is left out of the curve."""

    def __init__(self, dataset, model: SASRec, capture: Capture, train: Budgeted, ready: float, export_dir: Path):
        self.model, self.capture, self.train, self.ready, self.export_dir = model, capture, train, ready, export_dir
        self.user_ids = np.array([0] + [int(t) for t in dataset.field2id_token["user_id"][1:]])
        self.item_ids = np.array([0] + [int(t) for t in dataset.field2id_token["item_id"][1:]])  # RecBole id -> omnirec id
        if not np.array_equal(np.sort(self.item_ids), np.arange(len(self.item_ids))):
            raise ValueError("RecBole's item tokens are not omnirec's ids 1..I")
        self.item_order = np.argsort(self.item_ids)  # row i of the reordered table is omnirec's item i
        self.excluded, self.curve, self.epoch_starts = 0.0, [], []

    def __call__(self, epoch_idx: int, valid_score: float) -> None:
        now = clock()
        users, targets, hidden = self.capture.take()
        table = self.model.item_embedding.weight.detach()[torch.from_numpy(self.item_order)]
        np.savez(self.export_dir / f"epoch{epoch_idx + 1:03d}.npz", users=self.user_ids[users.numpy()],
                 targets=self.item_ids[targets.numpy()], hidden=hidden.float().numpy(), table=table.float().numpy())
        spent = clock() - now
        share = 1.0 if not self.train.cut else round(self.train.batches / len(self.train), 4)
        self.curve.append({"epoch": epoch_idx + 1, "t": round(now - self.ready - self.excluded, 3),
                           "native_ndcg@10": float(valid_score), "export_s": round(spent, 3), "epoch_share": share})
        self.excluded += spent
        if self.train.cut:
            raise BudgetExhausted


def timed_method(owner, name: str, seconds: list[float]) -> None:
    """Replace `owner.name` by a wrapper that appends each call's wall seconds to `seconds`."""
    method = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = clock()
        try:
            return method(*args, **kwargs)
        finally:
            seconds.append(round(clock() - start, 3))

    setattr(owner, name, wrapper)


def run(args: argparse.Namespace) -> dict:
    """Load, fit within the budget with a validation after every epoch; return the run's document."""
    torch.set_num_threads(args.threads)
    spec = json.loads(args.spec)
    config = Config(model="SASRec", dataset=DATASET,
                    config_dict={**CONFIG, **spec_config(spec), "seed": args.seed,
                                 "data_path": str(args.data_dir.resolve())})
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    ready, ready_wall = clock(), time.time()

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    train_s, valid_s = [], []
    timed_method(trainer, "_train_epoch", train_s)
    timed_method(trainer, "_valid_epoch", valid_s)
    budgeted = Budgeted(train_data, ready + 60 * args.budget_minutes)
    recorder = Recorder(dataset, model, Capture(model), budgeted, ready, args.export_dir)
    try:
        trainer.fit(budgeted, valid_data, verbose=True, saved=False, show_progress=False, callback_fn=recorder)
        stopped = "epochs"
    except BudgetExhausted:
        stopped = "time budget"
    for point, train_seconds, valid_seconds in zip(recorder.curve, train_s, valid_s, strict=True):
        point.update(train_s=train_seconds, valid_s=valid_seconds)
    return {
        "library": "recbole", "precision": "fp32", "seed": args.seed, "amp": config["enable_amp"],
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(), "nice": os.nice(0),
        "startup_s": round(ready_wall - args.spawned_at, 2) if args.spawned_at else None,
        "curve": recorder.curve, "stopped": stopped,
        "train_instances": len(train_data._dataset), "train_batches": len(train_data),
        "dataset": {"users": dataset.user_num - 1, "items": dataset.item_num - 1, "sequence_instances": dataset.inter_num},
        "parameters": sum(p.numel() for p in model.parameters()),
        "peak_rss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "spec": spec,
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__, "scipy": scipy.__version__, "python": platform.python_version()},
        "config": {key: config.final_config_dict[key] if key != "data_path" else "(a temporary folder)"
                   for key in sorted(config.final_config_dict)},  # no machine paths in the saved result
    }


def main(argv: list[str] | None = None) -> int:
    """Run in `--work-dir` and write the JSON document to `--out`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help=f"folder holding {DATASET}/{DATASET}.inter")
    parser.add_argument("--spec", required=True, help="the model and optimiser sizes, as JSON")
    parser.add_argument("--budget-minutes", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--export-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--spawned-at", type=float, default=0.0, help="time.time() when the launcher started this process")
    parser.add_argument("--work-dir", type=Path, help="where RecBole writes log/ and log_tensorboard/")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads `--key=value` options from sys.argv: give it none.
    args.data_dir, args.out, args.export_dir = args.data_dir.resolve(), args.out.resolve(), args.export_dir.resolve()
    args.export_dir.mkdir(parents=True, exist_ok=True)
    home = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="recbole-work-") as tmp:
        work = (args.work_dir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        os.chdir(work)
        try:
            result = run(args)
        finally:
            os.chdir(home)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
