"""Time to quality: omnirec's SASRec against RecBole 1.2.1's SASRec on `beauty`, same model, data and budget.

Each run is a fresh process launched the same way, with the same torch threads and priority:
`benchmarks/omnirec_sasrec.py` (omnirec, float32, and a labelled bfloat16-autocast row) and
`benchmarks/recbole_sasrec.py` (RecBole in a virtual environment of its own, `benchmarks/.recbole-venv`, made
on first use; never a dependency of omnirec). Runs are interleaved (omnirec fp32, RecBole, omnirec bf16,
then again) for `--repeats` repetitions, each for a fixed wall-time budget, validating with full ranking
after every epoch. Both read the same leave-one-out split: omnirec's, written as a RecBole atomic file.

The quality measure is computed the same way for both: after each validation each side exports its
network's state for every validation user and its item table (that export is timed and left out of the
clock), and one evaluation here ranks all items for every user and takes NDCG@10 of the validation
target, once as RecBole ranks for sequential models (history not masked; the headline) and once as omnirec
does (history masked). The clock counts wall seconds from the moment a process has its data in memory
(imports and data loading are left out, on both sides): model construction, training and validation.

Headline: time_to_recbole_best_ratio = RecBole's time to its own best validation NDCG@10 within the budget,
divided by the time omnirec first reaches that NDCG@10 (median over repetitions). Peak RSS is each
process's own (`os.wait4`); this launcher imports nothing heavy, because a child's peak starts at its
parent's size when it is launched.

Writes `benchmarks/results/speed_vs_recbole.json`, `benchmarks/results/speed_vs_recbole.png` and
`benchmarks/SPEED.md`.

    python benchmarks/speed_vs_recbole.py --budget-minutes 8 --bf16-budget-minutes 4 --repeats 3
    python benchmarks/speed_vs_recbole.py --report-only      # SPEED.md and the plot from the saved JSON
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = HERE / ".recbole-venv"
OMNIREC_SCRIPT, RECBOLE_SCRIPT = HERE / "omnirec_sasrec.py", HERE / "recbole_sasrec.py"
RESULT, PLOT, REPORT = HERE / "results" / "speed_vs_recbole.json", HERE / "results" / "speed_vs_recbole.png", HERE / "SPEED.md"
DATASET = "beauty"
TARGET_RATIO = 10.0  # the goal: omnirec reaches RecBole's best validation NDCG@10 at least 10x sooner

# The model, loss, batch and optimiser both sides train: RecBole's SASRec defaults for the sizes, its
# Adam with weight decay 0 (omnirec's AdamW with weight decay 0 is the same update), full cross-entropy.
SPEC = {"n_layers": 2, "n_heads": 2, "hidden": 64, "inner": 256, "max_len": 50, "dropout": 0.5, "loss": "ce",
        "batch_size": 256, "lr": 0.001, "optimizer": "adam", "weight_decay": 0.0}
SIDES = ("omnirec-fp32", "recbole-fp32", "omnirec-bf16")  # the order within each repetition
# An extra, labelled side: omnirec with 44 user windows a batch, which makes 512 optimiser steps an epoch
# of about 257 targets each, as RecBole's 514 steps of 256 prefixes do (at 256 windows omnirec makes 88).
EQUAL_STEPS, EQUAL_STEPS_BATCH = "omnirec-fp32-equal-steps", 44
ALL_SIDES = (*SIDES, EQUAL_STEPS)
OTHER_BENCHMARKS = r"benchmarks/(reliability|serve_load)\.py"

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


# --------------------------------------------------------------------------------------------------------
# launching: a quiet machine, the same environment, each child's own rusage
# --------------------------------------------------------------------------------------------------------

def others_running() -> list[str]:
    """Command lines of the other benchmarks that would share the CPUs (`pgrep -f`)."""
    found = subprocess.run(["pgrep", "-af", OTHER_BENCHMARKS], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if line.strip()]


def wait_quiet(load_below: float, load_wait_s: float, poll_s: float = 30.0) -> dict[str, object]:
    """Wait until none of the other benchmarks runs, then until the 1-minute load is below `load_below`
    or `load_wait_s` seconds have passed; return how long it waited and the load when it stopped."""
    start = time.monotonic()
    busy_at_start = others_running()
    if busy_at_start:
        print(f"{time.strftime('%H:%M:%S')} waiting for: {'; '.join(busy_at_start)}", flush=True)
    while others_running():
        time.sleep(poll_s)
    quiet_since = time.monotonic()
    while os.getloadavg()[0] >= load_below and time.monotonic() - quiet_since < load_wait_s:
        time.sleep(poll_s)
    return {"waited_s": round(time.monotonic() - start, 1), "others_running_when_called": len(busy_at_start),
            "load_wait_timed_out": os.getloadavg()[0] >= load_below,
            "load_avg_before": [round(x, 2) for x in os.getloadavg()]}


def launch(cmd: list[str], log: Path, threads: int) -> dict[str, object]:
    """Run `cmd` with `threads` CPU threads, at this process's priority, its output in `log`; return its
    exit code, wall seconds, CPU seconds and its own peak RSS (from `os.wait4`, which reports that child
    alone, unlike RUSAGE_CHILDREN, the maximum over every child so far)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    launcher_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen([*cmd, "--spawned-at", repr(time.time())], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # stopped (Ctrl-C, SIGTERM): take the child down too
            proc.kill()
            proc.wait()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return {"rc": proc.returncode, "process_wall_s": round(time.monotonic() - start, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "launcher_peak_rss_mib": round(launcher_rss, 1), "load_avg_after": [round(x, 2) for x in os.getloadavg()]}


def side_command(side: str, data_dir: Path, atomic_dir: Path, budget: float, seed: int, threads: int,
                 export_dir: Path, out: Path) -> list[str]:
    """The child's command line: the same options on both sides."""
    spec = {**SPEC, "batch_size": EQUAL_STEPS_BATCH} if side == EQUAL_STEPS else SPEC
    common = ["--spec", json.dumps(spec), "--budget-minutes", str(budget), "--seed", str(seed),
              "--threads", str(threads), "--export-dir", str(export_dir), "--out", str(out)]
    if side == "recbole-fp32":
        return [str(venv_python()), str(RECBOLE_SCRIPT), "--data-dir", str(atomic_dir), *common]
    precision = side.split("-")[1]  # omnirec-fp32, omnirec-bf16, omnirec-fp32-equal-steps
    return [sys.executable, str(OMNIREC_SCRIPT), "train", "--data-dir", str(data_dir), "--precision", precision, *common]


def run_side(side: str, repetition: int, args: argparse.Namespace, work: Path) -> dict:
    """Wait for a quiet machine, run one side once, evaluate its exports; return the run's record."""
    name = f"{side}-{repetition}"
    budget = args.bf16_budget_minutes if side == "omnirec-bf16" else args.budget_minutes
    out, exports = work / f"{name}.json", work / name
    cmd = side_command(side, args.data_dir, work / "data", budget, repetition, args.threads, exports, out)
    quiet = wait_quiet(args.load_below, 60 * args.load_wait_minutes)
    quiet["library_sha256"] = source_digest(launcher=False)
    print(f"{time.strftime('%H:%M:%S')} {name}: budget {budget} min, load {quiet['load_avg_before']}", flush=True)
    process = launch(cmd, work / f"{name}.log", args.threads)
    if process["rc"] != 0:
        raise RuntimeError(f"{name} failed (exit {process['rc']}):\n" + (work / f"{name}.log").read_text()[-4000:])
    record = {"side": side, "repetition": repetition, "budget_minutes": budget, **quiet, **process,
              **json.loads(out.read_text())}
    common = evaluate_exports(exports, work)
    for point in record["curve"]:
        point.update(common[point["epoch"]])
    record.update(summarise_run(record))
    print(f"  {record['epochs']} epochs, {record['s_per_epoch']} s/epoch, best NDCG@10 {record['best_ndcg@10']:.4f}, "
          f"peak {record['peak_rss_mib']:.0f} MiB", flush=True)
    return record


def evaluate_exports(exports: Path, work: Path) -> dict[int, dict[str, float]]:
    """The common NDCG@10 of every exported epoch, computed in a child process (this one stays small)."""
    out = work / f"{exports.name}-common.json"
    subprocess.run([sys.executable, str(Path(__file__)), "--evaluate", str(exports), "--reference",
                    str(work / "reference.npz"), "--out", str(out)], check=True, cwd=REPO)
    return {int(epoch): values for epoch, values in json.loads(out.read_text()).items()}


# --------------------------------------------------------------------------------------------------------
# the common evaluation (run as `--evaluate`, in a process of its own)
# --------------------------------------------------------------------------------------------------------

def common_ndcg(export: Path, reference) -> dict[str, float]:
    """NDCG@10 of each validation user's target ranked against every item (padding excluded), once with
    the history in the ranking (RecBole's protocol for sequential models) and once with it masked
    (omnirec's). Rank = the number of items scoring strictly higher; exact ties are counted and reported."""
    import numpy as np
    import torch

    data = np.load(export)
    order = np.argsort(data["users"], kind="stable")
    users, targets = data["users"][order], data["targets"][order]
    if not (np.array_equal(users, reference["users"]) and np.array_equal(targets, reference["targets"])):
        raise ValueError(f"{export.name}: validation users or targets differ from the reference split")
    hidden, table = torch.from_numpy(data["hidden"][order]), torch.from_numpy(data["table"])
    indptr, items = reference["indptr"], reference["items"]
    gains = {"ndcg@10": [], "ndcg@10_masked": []}
    ties = 0
    for start in range(0, len(users), 2048):
        rows = slice(start, start + 2048)
        scores = hidden[rows] @ table.T  # (b, I + 1)
        scores[:, 0] = -torch.inf
        wanted = torch.from_numpy(targets[rows])[:, None]
        target_score = scores.gather(1, wanted)  # (b, 1)
        ties += int((scores == target_score).sum()) - len(wanted)
        gains["ndcg@10"].append(_gain((scores > target_score).sum(1)))
        batch = users[rows]
        lengths = indptr[batch + 1] - indptr[batch]
        seen_rows = np.repeat(np.arange(len(batch)), lengths)
        seen_items = items[np.concatenate([np.arange(indptr[u], indptr[u + 1]) for u in batch])]
        scores[torch.from_numpy(seen_rows), torch.from_numpy(seen_items)] = -torch.inf
        in_history = torch.isinf(scores.gather(1, wanted))[:, 0]
        gains["ndcg@10_masked"].append(torch.where(in_history, 0.0, _gain((scores > target_score).sum(1))))
    return {**{k: float(torch.cat(v).mean()) for k, v in gains.items()}, "exact_ties": ties}


def _gain(rank):
    """1 / log2(rank + 2) for ranks below 10, else 0 (one relevant item: NDCG@10 is this gain)."""
    import torch

    return torch.where(rank < 10, 1.0 / torch.log2(rank.double() + 2.0), 0.0)


def evaluate_main(exports: Path, reference_path: Path, out: Path) -> None:
    """`--evaluate`: the common NDCG@10 of every `epochNNN.npz` in `exports`, written as JSON by epoch."""
    import numpy as np

    reference = dict(np.load(reference_path))
    result = {int(path.stem.removeprefix("epoch")): common_ndcg(path, reference)
              for path in sorted(exports.glob("epoch*.npz"))}
    out.write_text(json.dumps(result, indent=1) + "\n")
    for path in exports.glob("epoch*.npz"):
        path.unlink()  # about 9 MB an epoch; nothing reads them again


# --------------------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------------------

def summarise_run(run: dict) -> dict[str, object]:
    """One run's seconds per epoch (median over whole epochs: training only, and its validation) and its best."""
    curve = run["curve"]
    whole = [p for p in curve if p.get("epoch_share", 1.0) == 1.0] or curve
    best = max(curve, key=lambda p: p["ndcg@10"])
    return {"epochs": len(curve), "whole_epochs": len(whole),
            "s_per_epoch": round(statistics.median(p["train_s"] for p in whole), 2),
            "valid_s": round(statistics.median(p["valid_s"] for p in curve), 2),
            "best_ndcg@10": best["ndcg@10"], "best_t": best["t"], "best_epoch": best["epoch"],
            "best_ndcg@10_masked": max(p["ndcg@10_masked"] for p in curve),
            "max_native_minus_common": max(abs(p["native_ndcg@10"] - p[native_key(run)]) for p in curve)}


def native_key(run: dict) -> str:
    """Which common measure each library's own validation reports: RecBole's does not mask the history."""
    return "ndcg@10" if run["library"] == "recbole" else "ndcg@10_masked"


def first_reach(curve: list[dict], level: float, key: str = "ndcg@10") -> float | None:
    """Wall seconds of the first validation at or above `level` (None when never)."""
    return next((p["t"] for p in curve if p[key] >= level), None)


OMNIREC_SIDES = ("omnirec-fp32", "omnirec-bf16", EQUAL_STEPS)


def time_to_quality(runs: list[dict], key: str = "ndcg@10") -> dict[str, object]:
    """Per repetition: RecBole's best `key` and its time to it, each omnirec side's time to reach it and
    the ratio (RecBole's time / omnirec's); the median ratio per omnirec side."""
    by = {(r["side"], r["repetition"]): r for r in runs}
    rows = []
    for (side, rep), recbole in sorted(by.items()):
        if side != "recbole-fp32":
            continue
        best = max(recbole["curve"], key=lambda p: p[key])
        row = {"repetition": rep, "recbole_best": round(best[key], 4), "recbole_t": best["t"]}
        for other in OMNIREC_SIDES:
            if (other, rep) in by:
                t = first_reach(by[other, rep]["curve"], best[key], key)
                row[f"{other}_t"] = t
                row[f"{other}_ratio"] = None if t is None else round(best["t"] / t, 2)
        rows.append(row)
    medians = {}
    for other in OMNIREC_SIDES:  # a repetition where omnirec never got there counts as 0
        ratios = [row[f"{other}_ratio"] or 0.0 for row in rows if f"{other}_ratio" in row]
        medians[other] = round(statistics.median(ratios), 2) if ratios else None
    return {"per_repetition": rows, "median_ratio": medians}


def side_summary(runs: list[dict], side: str) -> dict[str, object]:
    """The medians over one side's repetitions, and what it ran with."""
    mine = [r for r in runs if r["side"] == side]
    if not mine:
        return {}
    first = mine[0]
    median = lambda key, digits=2: round(statistics.median(r[key] for r in mine), digits)  # noqa: E731
    return {"library": first["library"], "precision": first["precision"], "threads": first["threads"],
            "nice": first["nice"], "budget_minutes": first["budget_minutes"], "repetitions": len(mine),
            "s_per_epoch": median("s_per_epoch"), "valid_s": median("valid_s"), "peak_rss_mib": median("peak_rss_mib"),
            "epochs": median("epochs"), "best_ndcg@10": median("best_ndcg@10", 5), "parameters": first["parameters"],
            "train_instances": first["train_instances"], "startup_s": median("startup_s"),
            "s_per_epoch_each": [r["s_per_epoch"] for r in mine], "peak_rss_mib_each": [r["peak_rss_mib"] for r in mine],
            **({"bf16_autocast_on": first["bf16_autocast_on"], "precision_probe": first["precision_probe"]}
               if first["library"] == "omnirec" else {})}


LAYERS_NOT_USED = ("serve", "pipeline")  # nothing the benchmark runs imports them


def source_digest(launcher: bool = True) -> str:
    """sha256 over omnirec's sources (but the layers it never imports), the two training scripts and,
    with `launcher`, this one: shows whether they changed during the run."""
    digest = hashlib.sha256()
    library = [p for p in (REPO / "omnirec").rglob("*.py") if p.parent.name not in LAYERS_NOT_USED]
    for path in sorted([*library, OMNIREC_SCRIPT, RECBOLE_SCRIPT, *([Path(__file__)] if launcher else [])]):
        digest.update(path.relative_to(REPO).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def code_version() -> str:
    """`baselines.code_version` for the library and this benchmark's scripts ('+dirty' if any changed)."""
    from baselines import code_version as version  # imported late: it loads torch, which would swell this process

    versions = [version(f"benchmarks/{p.name}") for p in (Path(__file__), OMNIREC_SCRIPT, RECBOLE_SCRIPT)]
    dirty = any(v.endswith("+dirty") for v in versions)
    return versions[0].removesuffix("+dirty") + ("+dirty" if dirty else "")


def finish(doc: dict) -> None:
    """Add the summaries to `doc`, write the JSON, the plot and the report."""
    runs = doc["runs"]
    doc["sides"] = {side: side_summary(runs, side) for side in ALL_SIDES if side_summary(runs, side)}
    doc["time_to_recbole_best"] = time_to_quality(runs)
    doc["time_to_recbole_best_masked"] = time_to_quality(runs, "ndcg@10_masked")
    each = [row.get("omnirec-fp32_ratio") for row in doc["time_to_recbole_best"]["per_repetition"]]
    median = doc["time_to_recbole_best"]["median_ratio"].get("omnirec-fp32")
    doc["time_to_recbole_best_ratio"] = {"median": median, "each": each}
    doc["target"] = {"ratio_at_least": TARGET_RATIO, "met": median is not None and median >= TARGET_RATIO}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(doc, indent=2) + "\n")
    if runs:
        plot(doc)
    REPORT.write_text(markdown(doc))


# --------------------------------------------------------------------------------------------------------
# plot and report
# --------------------------------------------------------------------------------------------------------

COLOURS = {"omnirec-fp32": "tab:blue", "recbole-fp32": "tab:red", "omnirec-bf16": "tab:green", EQUAL_STEPS: "tab:purple"}


def plot(doc: dict) -> None:
    """Validation NDCG@10 (common evaluation, RecBole's protocol) against wall time, every run; linear and
    logarithmic time axes; RecBole's best of each repetition dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for run in doc["runs"]:
        t = [p["t"] / 60 for p in run["curve"]]
        y = [p["ndcg@10"] for p in run["curve"]]
        label = f"{run['side']} ({doc['sides'][run['side']]['s_per_epoch']:.1f} s/epoch)" if run["repetition"] == 0 else None
        for ax in axes:
            ax.plot(t, y, color=COLOURS[run["side"]], marker=".", markersize=4, linewidth=1, alpha=0.8, label=label)
    for row in doc["time_to_recbole_best"]["per_repetition"]:
        for ax in axes:
            ax.axhline(row["recbole_best"], color=COLOURS["recbole-fp32"], linestyle=":", linewidth=0.8)
            if row.get("omnirec-fp32_t"):
                ax.plot(row["omnirec-fp32_t"] / 60, row["recbole_best"], "o", color=COLOURS["omnirec-fp32"],
                        fillstyle="none", markersize=9)
    axes[1].set_xscale("log")
    for ax, title in zip(axes, ("wall time", "wall time, log scale"), strict=True):
        ax.set_xlabel("minutes since the data was loaded (training + validation)")
        ax.set_ylabel("validation NDCG@10 (full ranking)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    ratio = doc["time_to_recbole_best_ratio"]["median"]
    fig.suptitle(f"SASRec on beauty, {doc['threads']} threads: RecBole's best (dotted) reached {ratio}x sooner by "
                 "omnirec fp32 (circles), median of repetitions", fontsize=10)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


def fmt(value: float | None, spec: str = ".1f") -> str:
    """A number for a table; "not reached" for None."""
    return "not reached" if value is None else format(value, spec)


def side_table(doc: dict) -> list[str]:
    lines = ["| side | precision | threads | nice | budget min | s / epoch (train) | validation s | epochs in budget "
             "| best valid NDCG@10 | peak RSS MiB | parameters |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for side, s in doc["sides"].items():
        precision = s["precision"] + (" (autocast on)" if s.get("bf16_autocast_on") else "")
        lines.append(f"| {side} | {precision} | {s['threads']} | {s['nice']} | {s['budget_minutes']:g} | {s['s_per_epoch']:.1f} "
                     f"| {s['valid_s']:.1f} | {s['epochs']:g} | {s['best_ndcg@10']:.4f} | {s['peak_rss_mib']:.0f} "
                     f"| {s['parameters']:,} |")
    return lines


def ratio_table(result: dict) -> list[str]:
    lines = ["| repetition | RecBole best NDCG@10 | RecBole time to it (s) | omnirec fp32 time (s) | ratio "
             "| omnirec bf16 time (s) | ratio |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["per_repetition"]:
        lines.append(f"| {row['repetition']} | {row['recbole_best']:.4f} | {row['recbole_t']:.0f} "
                     f"| {fmt(row.get('omnirec-fp32_t'))} | {fmt(row.get('omnirec-fp32_ratio'))} "
                     f"| {fmt(row.get('omnirec-bf16_t'))} | {fmt(row.get('omnirec-bf16_ratio'))} |")
    medians = result["median_ratio"]
    lines.append(f"| median | | | | **{fmt(medians.get('omnirec-fp32'))}** | | {fmt(medians.get('omnirec-bf16'))} |")
    return lines


def probe_lines(doc: dict) -> list[str]:
    """What the bf16 row ran on: the CPU's bf16 support and the same-process fp32 against bf16 timings."""
    side = doc["sides"].get("omnirec-bf16") or doc["sides"].get("omnirec-fp32")
    if not side:
        return []
    p = side["precision_probe"]
    flags = ", ".join(f"`{k}` {'yes' if v else 'no'}" for k, v in p["flags"].items())
    autocast = doc["sides"].get("omnirec-bf16", {}).get("bf16_autocast_on")
    return [
        f"CPU: torch capability `{p['cpu_capability']}`; {flags}; oneDNN bf16 "
        f"{'supported' if p['mkldnn_bf16_supported'] else 'not supported'}. The training loop turns bf16 autocast "
        f"{'on' if p['loop_uses_bf16_when_amp'] else 'off'} here when `amp=True` (the bf16 row: autocast "
        f"{'on' if autocast else 'off'}); a linear layer under autocast returns `{p['autocast_linear_output_dtype']}`.",
        "",
        "Measured in the same process before training (median of 7):", "",
        "| product | fp32 ms | bf16 ms | fp32 / bf16 |", "|---|---:|---:|---:|",
        f"| logits 1536 x 64 x 12,102 | {p['logits_1536x64x12102_fp32_ms']} | {p['logits_1536x64x12102_bf16_ms']} "
        f"| {p['bf16_speedup_logits']} |",
        f"| linear 12,800 x 64 -> 256 (autocast) | {p['linear_12800x64x256_fp32_ms']} "
        f"| {p['linear_12800x64x256_autocast_bf16_ms']} | {p['bf16_speedup_linear']} |",
    ]


def run_lines(doc: dict) -> list[str]:
    lines = ["| run | seed | load before | load after | waited s | process s | startup s | CPU s | peak RSS MiB "
             "| epochs | s / epoch | best NDCG@10 | max abs(native - common) |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        lines.append(f"| {r['side']} #{r['repetition']} | {r['seed']} | {r['load_avg_before'][0]:.2f} "
                     f"| {r['load_avg_after'][0]:.2f} | {r['waited_s']:.0f} | {r['process_wall_s']:.0f} | {r['startup_s']:.1f} "
                     f"| {r['cpu_s']:.0f} | {r['peak_rss_mib']:.0f} | {r['epochs']} | {r['s_per_epoch']:.1f} "
                     f"| {r['best_ndcg@10']:.4f} | {r['max_native_minus_common']:.5f} |")
    return lines


def markdown(doc: dict) -> str:
    """SPEED.md: the verdict, the tables, the plot, what is equal on both sides and what is not."""
    ratio, target = doc["time_to_recbole_best_ratio"], doc["target"]
    verdict = "met" if target["met"] else "not met"
    each = ", ".join(fmt(x) for x in ratio["each"])
    fp32, rb = doc["sides"].get("omnirec-fp32", {}), doc["sides"].get("recbole-fp32", {})
    text = [
        "# Training speed and time to quality against RecBole 1.2.1", "",
        "Generated by `benchmarks/speed_vs_recbole.py`; do not edit by hand.", "",
        f"**Target:** omnirec's SASRec reaches the best validation NDCG@10 that RecBole's SASRec reaches within the "
        f"budget at least {target['ratio_at_least']:g}x sooner in wall time. **{verdict.capitalize()}: median ratio "
        f"{fmt(ratio['median'], '.2f')}** (repetitions: {each}).", "",
        f"`{doc['command']}` at {doc['code_version']} ({doc['started']}); {doc['machine']['cpus']} CPUs, "
        f"{doc['threads']} torch threads on both sides, torch {doc['torch']}, RecBole {doc['recbole']}. "
        f"{doc['repeats']} repetitions, interleaved ({', '.join(doc['order'])}), each run a fresh process launched "
        f"the same way, none under `nice`. Budget per run: {doc['budget_minutes']:g} min (fp32 sides), "
        f"{doc['bf16_budget_minutes']:g} min (the bf16 row); the runs took {sum(r['process_wall_s'] for r in doc['runs']) / 60:.0f} min of wall time in all.", "",
        "## Per side (medians over repetitions)", "", *side_table(doc), "",
        f"s / epoch is training only (whole epochs); validation s is one full-ranking validation of all "
        f"{doc['data']['valid_users']:,} users with each library's own code. Peak RSS is each process's own "
        f"(`os.wait4`); the launcher was at most {max(r['launcher_peak_rss_mib'] for r in doc['runs']):.0f} MiB when it "
        f"started them."
        + (f" RecBole s/epoch / omnirec fp32 s/epoch: {rb['s_per_epoch'] / fp32['s_per_epoch']:.1f}." if rb and fp32 else ""),
        "",
        "## Time to RecBole's best validation NDCG@10", "", *ratio_table(doc["time_to_recbole_best"]), "",
        "Times are wall seconds since the process had its data in memory (model construction, training, every "
        "validation; not imports, data loading or the benchmark's exports), at the end of the validation that "
        "first reached the level. Ratio = RecBole's time to its own best / omnirec's time to reach it.", "",
        "The same with the history masked in the ranking (omnirec's protocol), for reference:", "",
        *ratio_table(doc["time_to_recbole_best_masked"]), "",
        f"![validation NDCG@10 against wall time]({PLOT.relative_to(HERE).as_posix()})", "",
        "## bf16", "", *probe_lines(doc), "",
        "## What is the same on both sides", "", *[f"- {line}" for line in SAME], "",
        "## What differs", "", *[f"- {line}" for line in DIFFERENT], "",
        "## Runs", "", *run_lines(doc), "",
    ]
    return "\n".join(text)


SAME = [
    "Data: omnirec's leave-one-out split of `beauty`, written as a RecBole atomic file whose timestamps are each "
    "user's positions, so RecBole's own leave-one-out split is the same split; the 131,413 supervised (history, next "
    "item) targets per epoch are checked equal, and each export's validation users and targets are checked against "
    "the reference split.",
    "Model sizes: 2 layers, 2 heads, hidden 64, feed-forward 256, GELU, max length 50, dropout 0.5 (RecBole's hidden "
    "and attention dropout; omnirec's one dropout, which it applies to embeddings, attention and residual branches).",
    "Loss: full-softmax cross-entropy over the catalogue. Batch size 256. Adam, learning rate 0.001, weight decay 0 "
    "(omnirec's AdamW with weight decay 0 is Adam). No moving average of weights, no early stopping, no refit, no "
    "gradient clipping, no checkpoints written.",
    "Precision float32 on both sides (omnirec `amp=False`, RecBole `enable_amp=False`); the bf16 row is separate.",
    "Threads: `torch.set_num_threads` equal on both sides, `OMP_NUM_THREADS`/`MKL_NUM_THREADS` equal; same priority "
    "(no `nice`); each run a fresh process launched by the same code, after the other benchmarks on the machine had "
    "finished and the 1-minute load was below the threshold (or ten minutes had passed).",
    "Validation after every epoch, full ranking of all items for all validation users, each library's own code "
    "(its time counts); the epoch under way when the budget runs out stops after its current batch and is validated.",
    "Quality is scored by one evaluation for both: the exported states of every validation, ranked against all "
    "items. The native numbers agree with it (last column of the runs table: RecBole's against the unmasked "
    "measure, omnirec's against the masked one).",
]

DIFFERENT = [
    "What a batch of 256 holds: RecBole's are 256 (prefix, next item) instances, one target each; omnirec's are 256 "
    "user windows of up to 51 items, every position a target (about 6 targets a window here). omnirec therefore makes "
    "about 90 optimiser steps an epoch, RecBole 514, over the same targets. This is how each library trains SASRec; "
    "equalising it would change one of the two methods.",
    "Network details: RecBole's SASRec is post-norm (LayerNorm after each residual, eps 1e-12, plus a LayerNorm on the "
    "embeddings), positions counted from the oldest item, right padding; omnirec's is pre-norm with a final "
    "LayerNorm, positions counted from the newest item, left padding, `scaled_dot_product_attention`. Initialisation: "
    "RecBole draws every linear and embedding weight from N(0, 0.02); omnirec only its embeddings (linear layers "
    "keep torch's default). RecBole's softmax also includes the padding item's column; omnirec's does not.",
    "Optimiser kernel: omnirec uses torch's fused AdamW; RecBole torch's default Adam.",
    "Seeds: the same number on both sides, but the two libraries draw their initial weights and batch orders "
    "differently, so the runs are not draw-for-draw the same.",
    "Each library's own validation protocol differs (RecBole does not mask history items for sequential models, "
    "omnirec does); the time each takes is its own, the quality measure is the common one.",
]


def prepare(args: argparse.Namespace, work: Path) -> dict:
    """The atomic file and reference arrays, written by omnirec's side in a child process."""
    subprocess.run([sys.executable, str(OMNIREC_SCRIPT), "prepare", "--data-dir", str(args.data_dir),
                    "--out-dir", str(work)], check=True, cwd=REPO)
    return json.loads((work / "prepare.json").read_text())


def check_same_data(doc: dict) -> None:
    """RecBole read what omnirec wrote, and both train on the same number of targets."""
    data = doc["data"]
    expected = {"users": data["users"], "items": data["items"], "sequence_instances": data["interactions"] - data["users"]}
    instances = {r["side"]: r["train_instances"] for r in doc["runs"]}
    for r in doc["runs"]:
        if r["library"] == "recbole" and r["dataset"] != expected:
            raise RuntimeError(f"RecBole read {r['dataset']}; from what omnirec wrote ({data}) it should be {expected}")
    if len(set(instances.values())) > 1:
        raise RuntimeError(f"the sides train on different numbers of targets: {instances}")


def header(args: argparse.Namespace, argv: list[str] | None, data: dict) -> dict:
    return {
        "benchmark": "speed_vs_recbole", "dataset": DATASET, "spec": SPEC, "data": data,
        "command": shlex.join(["python", "benchmarks/speed_vs_recbole.py", *(sys.argv[1:] if argv is None else argv)]),
        "budget_minutes": args.budget_minutes, "bf16_budget_minutes": args.bf16_budget_minutes, "repeats": args.repeats,
        "threads": args.threads, "order": list(args.sides), "target_ratio": TARGET_RATIO,
        "load_threshold": args.load_below, "load_wait_minutes": args.load_wait_minutes,
        "clock": "wall seconds from the moment the process has its data in memory; imports, data loading and the "
                 "benchmark's own exports are left out, on both sides",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "source_sha256_start": source_digest(), "runs": [],
    }


def stop(signum: int, frame: object) -> None:
    """SIGTERM: end like Ctrl-C does, so the run under way is stopped and the temporary folder removed."""
    raise SystemExit(f"{time.strftime('%H:%M:%S')} stopped by signal {signum}")


RESUME_KEYS = ("spec", "budget_minutes", "bf16_budget_minutes", "threads", "data")


def resumed(doc: dict, args: argparse.Namespace) -> dict:
    """`doc` with the runs of the interrupted invocation saved in RESULT, when its settings are the same."""
    if not RESULT.exists():
        return doc
    saved = json.loads(RESULT.read_text())
    if any(saved.get(key) != doc[key] for key in RESUME_KEYS):
        raise SystemExit(f"{RESULT.relative_to(REPO)} has other settings: nothing to resume")
    print(f"resuming: {len(saved['runs'])} runs kept from {saved['started']}", flush=True)
    order = [*saved["order"], *(side for side in doc["order"] if side not in saved["order"])]
    return {**doc, "runs": saved["runs"], "started": saved["started"], "source_sha256_start": saved["source_sha256_start"],
            "invocations": [*saved.get("invocations", [saved["command"]]), doc["command"]], "order": order,
            "repeats": max(saved["repeats"], doc["repeats"]), "minutes_before": saved.get("total_minutes", 0.0)}


def main(argv: list[str] | None = None) -> int:
    """Run every side `--repeats` times, interleaved, and write the result, the plot and the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="wall-time budget of each fp32 run")
    parser.add_argument("--bf16-budget-minutes", type=float, default=4.0, help="budget of each omnirec bf16 run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same on both sides")
    parser.add_argument("--sides", type=lambda s: tuple(s.split(",")), default=SIDES)
    parser.add_argument("--load-below", type=float, default=1.5, help="start a run once the 1-minute load is below this")
    parser.add_argument("--load-wait-minutes", type=float, default=10.0, help="... or once this long has passed")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs of an interrupted invocation with the same settings (its saved JSON)")
    parser.add_argument("--report-only", action="store_true", help="rewrite SPEED.md and the plot from the saved JSON")
    parser.add_argument("--evaluate", type=Path, help=argparse.SUPPRESS)  # internal: the common evaluation
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.evaluate:
        evaluate_main(args.evaluate, args.reference, args.out)
        return 0
    if args.report_only:
        finish(json.loads(RESULT.read_text()))
        return 0
    unknown = set(args.sides) - set(ALL_SIDES)
    if unknown:
        parser.error(f"unknown sides {sorted(unknown)}; expected some of {', '.join(ALL_SIDES)}")
    ensure_recbole_venv()
    signal.signal(signal.SIGTERM, stop)
    with tempfile.TemporaryDirectory(prefix="speed-vs-recbole-") as tmp:
        work = Path(tmp)
        doc = header(args, argv, prepare(args, work))
        began = time.monotonic()
        if args.resume:
            doc = resumed(doc, args)
        done = {(r["side"], r["repetition"]) for r in doc["runs"]}
        for repetition in range(args.repeats):
            for side in args.sides:
                if (side, repetition) in done:
                    continue
                doc["runs"].append(run_side(side, repetition, args, work))
                check_same_data(doc)
                RESULT.write_text(json.dumps({**doc, "complete": False}, indent=2) + "\n")
    have = {(r["side"], r["repetition"]) for r in doc["runs"]}
    missing = [(side, rep) for rep in range(doc["repeats"]) for side in doc["order"] if (side, rep) not in have]
    if missing:  # an invocation that ran only some sides or repetitions: keep the result open for --resume
        RESULT.write_text(json.dumps({**doc, "complete": False}, indent=2) + "\n")
        print(f"{len(missing)} runs still missing ({', '.join(f'{s} #{r}' for s, r in missing)}): "
              f"run again with --resume; {RESULT.relative_to(REPO)} stays incomplete")
        return 0
    versions = {r["library"]: r["versions"] for r in doc["runs"]}
    doc.update(complete=True, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), total_minutes=(time.monotonic() - began) / 60,
               source_sha256_end=source_digest(), code_version=code_version(),
               torch=next(iter(versions.values()))["torch"], recbole=versions.get("recbole", {}).get("recbole"))
    doc["source_changed_during_run"] = doc["source_sha256_start"] != doc["source_sha256_end"]
    finish(doc)
    print(markdown(doc))
    print(f"\nwrote {RESULT.relative_to(REPO)}, {PLOT.relative_to(REPO)} and {REPORT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
