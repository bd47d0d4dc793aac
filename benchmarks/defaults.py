"""Model defaults chosen on validation, across every dataset at hand.

Some defaults were once justified by test figures on the very datasets the benchmarks report (SASRec's
`d_model`, textseq's `temperature`). This script chooses them again the honest way: each candidate value
is fitted on the training items only (seed 0, early stopping on the validation targets, no refit) and
scored by its best validation NDCG@10; the value chosen maximises the mean over datasets of
log(validation NDCG@10), a geometric mean, so that no dataset outweighs another by its scale. The grid
is extended wherever the best value lies on its edge (`protocol.search`). Test targets are never read.

Writes `benchmarks/results/defaults.json` (every evaluation, so `--resume` continues an interrupted run)
and `benchmarks/DEFAULTS.md`.

    python benchmarks/defaults.py --data-dir ../shared/data
    python benchmarks/defaults.py --data-dir ../shared/data --only sasrec.d_model --resume
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import time
from pathlib import Path

from omnirec.auto import build
from omnirec.data.datasets import load_dataset
from omnirec.data.split import split_dataset
from omnirec.models import MODELS
from omnirec.utils import atomic_write_text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from baselines import code_version, machine  # noqa: E402
from protocol import Axis, describe_grid, search  # noqa: E402

RESULT = HERE / "results" / "defaults.json"
REPORT = HERE / "DEFAULTS.md"

# name: (model, hyperparameter, its domain, the starting grid, the datasets it is chosen on)
QUESTIONS: dict[str, tuple[str, str, Axis, tuple[float, ...], tuple[str, ...]]] = {
    "sasrec.d_model": ("sasrec", "d_model", Axis(low=8, integer=True), (64, 128, 256), ("ml-100k", "scientific", "beauty")),
    "textseq.temperature": ("textseq", "temperature", Axis(low=0.0), (0.02, 0.05, 0.1), ("ml-100k", "scientific")),
    "textseq.id_dropout": ("textseq", "id_dropout", Axis(low=0.0, high=0.9, scale="linear"), (0.0, 0.15, 0.3),
                           ("ml-100k", "scientific")),
}

# name: (model, a yes/no field of its config, the datasets it is chosen on, the behaviour before the switch
# existed): both values are fitted on every dataset
SWITCHES: dict[str, tuple[str, str, tuple[str, ...], bool]] = {
    "gru4rec.output_norm": ("gru4rec", "output_norm", ("ml-100k", "scientific"), False),
    "textseq.tune_encoder": ("textseq", "tune_encoder", ("ml-100k", "scientific"), False),
}


def shown(value: float | bool) -> str:
    """A question's value in words: on/off for a switch, else the number.

    >>> shown(True), shown(0.05), shown(64)
    ('on', '0.05', '64')
    """
    return ("on" if value else "off") if isinstance(value, bool) else f"{value:g}"


def current_default(model: str, field: str) -> float:
    return next(f.default for f in dataclasses.fields(MODELS[model].Config) if f.name == field)


def validation_ndcg(model: str, params: dict, dataset_name: str, data_dir: Path, max_minutes: float) -> dict:
    """One fit on the training items (no refit): its best validation NDCG@10, epoch and seconds."""
    dataset = load_dataset(dataset_name, data_dir)
    split = split_dataset(dataset, "loo")
    start = time.perf_counter()
    fitted = build(model, params, max_minutes=max_minutes, trial=True).fit(split.train_data(dataset.item_text))
    training = fitted.training
    return {"valid_ndcg@10": round(float(training["best_valid_ndcg@10"]), 5), "best_epoch": training["best_epoch"],
            "epochs_run": training["epochs_run"], "stopped": training["stopped"],
            "fit_s": round(time.perf_counter() - start, 1)}


def run_key(dataset: str, value: float | bool) -> str:
    return f"{dataset} {shown(value)}"


def choose(name: str, args: argparse.Namespace, doc: dict) -> dict:
    """Search one question's grid; every evaluation is saved as soon as it is made."""
    model, field, axis, grid, datasets = QUESTIONS[name]
    datasets = tuple(args.datasets.split(",")) if args.datasets else datasets
    runs = doc["questions"].setdefault(name, {"runs": {}})["runs"]

    def evaluate(params: dict) -> float:
        value = params[field]
        logs = []
        for ds in datasets:
            key = run_key(ds, value)
            if key not in runs:
                runs[key] = validation_ndcg(model, params, ds, Path(args.data_dir), args.max_minutes)
                print(f"{name} = {value:g} on {ds}: {runs[key]}", flush=True)
                save(doc)
            logs.append(math.log(max(runs[key]["valid_ndcg@10"], 1e-9)))
        return sum(logs) / len(logs)

    best, trials, outcome = search(evaluate, [{field: v} for v in grid], {field: axis})
    default = current_default(model, field)
    doc["questions"][name].update({
        "model": model, "field": field, "datasets": list(datasets), "default_before": default,
        "chosen": best[field], "grid": outcome, "changed": best[field] != default,
        "trials": [{"value": t["params"][field], "mean_log_valid_ndcg@10": round(t["valid_ndcg@10"], 5), "added": t["added"]}
                   for t in sorted(trials, key=lambda t: t["params"][field])],
    })
    save(doc)
    return doc["questions"][name]


def choose_switch(name: str, args: argparse.Namespace, doc: dict) -> dict:
    """Fit both values of a switch on every dataset; the chosen one has the larger mean log validation NDCG@10."""
    model, field, datasets, before = SWITCHES[name]
    datasets = tuple(args.datasets.split(",")) if args.datasets else datasets
    runs = doc["questions"].setdefault(name, {"runs": {}})["runs"]
    trials = []
    for value in (False, True):
        logs = []
        for ds in datasets:
            key = run_key(ds, value)
            if key not in runs:
                runs[key] = validation_ndcg(model, {field: value}, ds, Path(args.data_dir), args.max_minutes)
                print(f"{name} = {shown(value)} on {ds}: {runs[key]}", flush=True)
                save(doc)
            logs.append(math.log(max(runs[key]["valid_ndcg@10"], 1e-9)))
        trials.append({"value": value, "mean_log_valid_ndcg@10": round(sum(logs) / len(logs), 5), "added": False})
    best = max(trials, key=lambda t: t["mean_log_valid_ndcg@10"])["value"]
    doc["questions"][name].update({"model": model, "field": field, "datasets": list(datasets), "default_before": before,
                                   "chosen": best, "grid": None, "changed": best != before, "trials": trials,
                                   "default_now": current_default(model, field)})
    save(doc)
    return doc["questions"][name]


def save(doc: dict) -> None:
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULT, json.dumps(doc, indent=2))
    atomic_write_text(REPORT, markdown(doc))


def markdown(doc: dict) -> str:
    lines = ["# Defaults chosen on validation", "",
             "Generated by `benchmarks/defaults.py`; do not edit by hand. Each value is fitted on the training items "
             "only (seed 0, early stopping on the validation targets, no refit) and scored by its best validation "
             "NDCG@10; the chosen value maximises the mean over datasets of log(validation NDCG@10). Grids whose "
             "best value lies on an edge are extended. No test target is read.", ""]
    for name, q in doc["questions"].items():
        if "trials" not in q:
            lines += [f"## {name}: not finished", ""]
            continue
        lines += [f"## {name}", "", "| value | " + " | ".join(f"{ds} valid NDCG@10" for ds in q["datasets"])
                  + " | mean log |", "|---:|" + "---:|" * (len(q["datasets"]) + 1)]
        for t in q["trials"]:
            cells = " | ".join(f"{q['runs'][run_key(ds, t['value'])]['valid_ndcg@10']:.4f}" for ds in q["datasets"])
            mark = " **(chosen)**" if t["value"] == q["chosen"] else ""
            lines.append(f"| {shown(t['value'])}{mark} | {cells} | {t['mean_log_valid_ndcg@10']:.4f} |")
        verdict = "unchanged" if not q["changed"] else f"changed from {shown(q['default_before'])}"
        ranked = sorted(q["trials"], key=lambda t: -t["mean_log_valid_ndcg@10"])
        margin = ""
        if len(ranked) > 1:  # how decisive the choice is: one seed, so a small margin is within seed noise
            gap = ranked[0]["mean_log_valid_ndcg@10"] - ranked[1]["mean_log_valid_ndcg@10"]
            margin = (f"; ahead of the runner-up ({shown(ranked[1]['value'])}) by {gap:.4f} in mean log, a geometric mean "
                      f"{math.expm1(gap):.2%} higher")
        grid = "both values of a switch" if q["grid"] is None else describe_grid(q["grid"])
        lines += ["", f"Chosen: {shown(q['chosen'])} ({verdict}){margin}; grid: {grid}.", ""]
        if q.get("command"):  # answered in its own invocation and merged
            lines += [f"Command: `{q['command']}`; code {q['code']}.", ""]
    if doc.get("command"):
        lines += [f"Command: `{doc['command']}`; code {doc['code']}.", ""]
    lines += [f"Machine: {doc['machine']['cpus']} CPUs, torch {doc['machine']['torch']}.", ""]
    return "\n".join(lines)


def main() -> int:
    global RESULT, REPORT  # a smoke run writes elsewhere (--out)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--only", default=",".join([*QUESTIONS, *SWITCHES]),
                        help=f"questions to answer, of {', '.join([*QUESTIONS, *SWITCHES])}")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="training budget per fit (0 = none)")
    parser.add_argument("--resume", action="store_true", help="keep the evaluations of the saved result")
    parser.add_argument("--report-only", action="store_true", help="rewrite DEFAULTS.md from the saved result")
    parser.add_argument("--datasets", default="", help="only these datasets (a smoke run); default: each question's own")
    parser.add_argument("--out", type=Path, default=RESULT, help="the result JSON; a report .md is written beside it")
    parser.add_argument("--merge", type=Path, nargs="+", default=[], help="result JSONs of other invocations (e.g. one "
                        "question each, run side by side): their answered questions go into --out, each with its own "
                        "command and code; then the report is rewritten")
    args = parser.parse_args()
    if args.out.resolve() != RESULT.resolve():
        RESULT, REPORT = args.out, args.out.with_suffix(".md")
    if args.merge:
        doc = json.loads(RESULT.read_text()) if RESULT.exists() else {"questions": {}}
        for path in args.merge:
            other = json.loads(path.read_text())
            for name, q in other["questions"].items():
                command = re.sub(r" --out \S+", "", other["command"])  # where it wrote for the merge is beside the point
                doc["questions"][name] = {**q, "command": command, "code": other["code"]}
            doc.setdefault("machine", other["machine"])
        doc.update(command="", code="")  # each question carries its own
        save(doc)
        return 0
    if args.report_only:
        atomic_write_text(REPORT, markdown(json.loads(RESULT.read_text())))
        return 0
    doc = {"command": "python benchmarks/defaults.py " + " ".join(sys.argv[1:]), "code": code_version("benchmarks/defaults.py"),
           "machine": machine(), "questions": {}}
    if args.resume and RESULT.exists():
        doc["questions"] = json.loads(RESULT.read_text())["questions"]
    for name in [q.strip() for q in args.only.split(",") if q.strip()]:
        if name not in QUESTIONS and name not in SWITCHES:
            parser.error(f"unknown question {name!r}; expected some of {', '.join([*QUESTIONS, *SWITCHES])}")
        q = choose(name, args, doc) if name in QUESTIONS else choose_switch(name, args, doc)
        print(f"{name}: chosen {shown(q['chosen'])} (before: {shown(q['default_before'])})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
