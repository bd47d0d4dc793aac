"""Speed benchmark: omnirec's SASRec against RecBole 1.2.1's SASRec on `beauty`, same data, same sizes.

RecBole runs in a virtual environment of its own (`benchmarks/.recbole-venv`, made on first use; it is
never a dependency of omnirec) through `benchmarks/recbole_sasrec.py`. Both sides read the interactions
that `omnirec.data.datasets.load_dataset("beauty", ...)` returns: this script writes them out as a RecBole
atomic file, so the two libraries train on identical sequences.

Writes `benchmarks/results/speed_vs_recbole.json` (both sides, the machine, the command, the commit) and
prints a markdown table.

    python benchmarks/speed_vs_recbole.py --epochs 1
    python benchmarks/speed_vs_recbole.py --skip-omnirec --epochs 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

import baselines
from omnirec.data.datasets import load_dataset
from omnirec.data.schema import ITEM, TIME, USER
from omnirec.data.split import split_dataset
from omnirec.evaluate.ranking import full_ranking_eval
from omnirec.models.sasrec import SASRec, SASRecConfig
from omnirec.train.loop import TrainConfig, windows
from omnirec.utils import atomic_write_text

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = HERE / ".recbole-venv"
RECBOLE_SCRIPT = HERE / "recbole_sasrec.py"
DATASET = "beauty"

# torch must stay at exactly this version: pip takes it from a local CPU wheel; any other version would
# pull gigabytes of CUDA wheels. A constraints file holds it there through every install step.
TORCH_PIN = "torch==2.13.0"
# RecBole 1.2.1 and the versions of its dependencies that work with it on Python 3.11:
# - numpy 1.x: RecBole's Config aliases np.float = np.float_ (and np.int, np.bool, ...), and its metrics
#   use np.float; np.float_ is gone in numpy 2, so Config() fails there.
# - pandas 2.x: RecBole fills missing values with chained `df[col].fillna(..., inplace=True)`, which is a
#   silent no-op under pandas 3's copy-on-write.
# - scipy 1.13.1: a release that supports numpy 1.26; pinned, like the others, so every machine gets the same set.
# Everything else (ray<=2.6.3, colorlog==4.7.2, colorama==0.4.4, tensorboard, thop, ...) is left to pip.
RECBOLE_PACKAGES = ("recbole==1.2.1", "numpy==1.26.4", "pandas==2.3.3", "scipy==1.13.1")


def venv_python() -> Path:
    """The interpreter of RecBole's virtual environment."""
    return VENV / "bin" / "python"


def ensure_recbole_venv() -> Path:
    """Create `benchmarks/.recbole-venv` with torch 2.13.0 and RecBole 1.2.1 unless it is already complete."""
    marker = VENV / "omnirec-installed.txt"
    wanted = "\n".join((TORCH_PIN, *RECBOLE_PACKAGES)) + "\n"
    if marker.is_file() and marker.read_text() == wanted:
        return venv_python()
    if not venv_python().exists():
        print(f"creating {VENV.relative_to(REPO)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    constraints = VENV / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    pip = [str(venv_python()), "-m", "pip", "install", "-c", str(constraints)]
    subprocess.run([*pip, TORCH_PIN], check=True)
    subprocess.run([*pip, *RECBOLE_PACKAGES], check=True)
    found = subprocess.run([str(venv_python()), "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if found.split("+")[0] != TORCH_PIN.split("==")[1]:
        raise RuntimeError(f"{VENV}: torch {found} after install; expected {TORCH_PIN}")
    marker.write_text(wanted)
    return venv_python()


def write_atomic_files(data_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write omnirec's `beauty` interactions as RecBole's `<out_dir>/beauty/beauty.inter`; return its sizes."""
    ds = load_dataset(DATASET, data_dir)
    folder = out_dir / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    frame = ds.interactions.select(
        pl.col(USER).alias("user_id:token"), pl.col(ITEM).alias("item_id:token"),
        pl.col(TIME).cast(pl.Float64).alias("timestamp:float"),
    )
    frame.write_csv(folder / f"{DATASET}.inter", separator="\t", quote_style="never")
    return {"users": ds.n_users, "items": ds.n_items, "interactions": ds.interactions.height}


def run_recbole(data_dir: Path, epochs: int) -> dict:
    """Train and evaluate RecBole's SASRec in its own venv (under `nice -n 10`); return its JSON document."""
    python = ensure_recbole_venv()
    with tempfile.TemporaryDirectory(prefix="recbole-bench-") as tmp:
        tmp_path = Path(tmp)
        sizes = write_atomic_files(data_dir, tmp_path / "data")
        out = tmp_path / "recbole.json"
        cmd = ["nice", "-n", "10", str(python), str(RECBOLE_SCRIPT), "--data-dir", str(tmp_path / "data"),
               "--epochs", str(epochs), "--out", str(out), "--work-dir", str(tmp_path / "work")]
        subprocess.run(cmd, check=True)
        result = json.loads(out.read_text())
    seen = result["dataset"]
    # RecBole turns a user's n interactions into n - 1 (prefix, next item) instances as it loads them.
    expected = {"users": sizes["users"], "items": sizes["items"],
                "sequence_instances": sizes["interactions"] - sizes["users"]}
    if seen != expected:
        raise RuntimeError(f"RecBole read {seen}; from what omnirec wrote ({sizes}) it should be {expected}")
    result["dataset"] = {**sizes, **seen}
    return result


# --------------------------------------------------------------------------------------------------------
# omnirec side
# --------------------------------------------------------------------------------------------------------

def run_omnirec(data_dir: Path, epochs: int) -> dict:
    """Train omnirec's SASRec (2 layers, d=64, max_len 50, CE loss) on `beauty`; the same keys as RecBole.

    Same supervision as RecBole's prefix instances: every item but a user's first is a target once
    (`omnirec.train.loop.windows`); the count is checked against RecBole's instance count in `main`.
    """
    dataset = load_dataset(DATASET, data_dir)
    split = split_dataset(dataset, "loo")
    train = split.train_data()
    config = SASRecConfig(d_model=64, n_layers=2, n_heads=2, ffn_mult=4, max_len=50, dropout=0.5, loss="ce",
                          train=TrainConfig(epochs=epochs, eval_every=epochs, patience=epochs, refit=False,
                                            progress=False))
    cpu = time.process_time()
    model = SASRec(config).fit(train)
    fit_cpu_s = time.process_time() - cpu
    result = full_ranking_eval(model, split.histories("test"), split.targets("test"), ks=(10,))
    valid_eval_s = sum(row.get("eval_s", 0.0) for row in model.history)
    instances = int((windows(train.sequences, config.max_len).lengths() - 1).sum())
    return {
        "library": "omnirec", "epoch_s": [row["train_s"] for row in model.history],
        "fit_cpu_s": round(fit_cpu_s, 1), "train_instances": instances,
        "eval_s": round(valid_eval_s + result.eval_s, 2), "valid_eval_s": round(valid_eval_s, 2),
        "test_eval_s": round(result.eval_s, 2),
        "test": {"ndcg@10": round(result["ndcg@10"], 4), "hit@10": round(result["hr@10"], 4)},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "config": dataclasses.asdict(config),
    }


# --------------------------------------------------------------------------------------------------------


def machine() -> dict[str, object]:
    """What ran the benchmark, and how busy the machine was (1/5/15-minute load averages)."""
    return {**baselines.machine(), "load_avg_start": list(os.getloadavg())}


def mean_epoch_s(side: dict) -> float:
    """Mean wall seconds of one training epoch."""
    return statistics.mean(side["epoch_s"])


def markdown(doc: dict) -> str:
    """A table of both sides, and the speed ratio when both ran."""
    header = ("library", "s / epoch", "CPU s / epoch", "train instances", "eval s (valid+test)", "peak RSS MiB",
              "test NDCG@10", "test HR@10")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name in ("omnirec", "recbole"):
        side = doc.get(name)
        if side is None:
            continue
        cpu = f"{statistics.mean(side['epoch_cpu_s']):.1f}" if side.get("epoch_cpu_s") else "–"
        lines.append(f"| {name} | {mean_epoch_s(side):.1f} | {cpu} | {side['train_instances']:,} "
                     f"| {side['eval_s']:.1f} | {side['peak_rss_mib']:.0f} | {side['test']['ndcg@10']:.4f} "
                     f"| {side['test']['hit@10']:.4f} |")
    if "ratio_recbole_over_omnirec_epoch_s" in doc:
        lines.append(f"\nRecBole s/epoch ÷ omnirec s/epoch: {doc['ratio_recbole_over_omnirec_epoch_s']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the result document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "speed_vs_recbole.json")
    parser.add_argument("--skip-omnirec", action="store_true", help="run the RecBole side only")
    args = parser.parse_args(argv)

    doc: dict[str, object] = {
        "dataset": DATASET, "epochs": args.epochs, "machine": machine(), "commit": baselines.code_version(),
        "command": shlex.join(["python", "benchmarks/speed_vs_recbole.py", *(sys.argv[1:] if argv is None else argv)]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if not args.skip_omnirec:
        doc["omnirec"] = run_omnirec(args.data_dir, args.epochs)
    doc["recbole"] = run_recbole(args.data_dir, args.epochs)
    doc["machine"]["load_avg_end"] = list(os.getloadavg())
    if "omnirec" in doc:
        doc["ratio_recbole_over_omnirec_epoch_s"] = mean_epoch_s(doc["recbole"]) / mean_epoch_s(doc["omnirec"])
        doc["same_supervision"] = doc["omnirec"]["train_instances"] == doc["recbole"]["train_instances"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=2, default=str) + "\n")
    print(markdown(doc))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
