"""Every baseline on the public benchmark datasets: leave-one-out, full ranking.

Writes `benchmarks/results/<dataset>.json` (with the command, machine and library versions) and
`benchmarks/RESULTS.md` (tables, with published numbers of the same protocol beside ours).

    python benchmarks/baselines.py --data-dir ../shared/data
    python benchmarks/baselines.py --data-dir ../shared/data --datasets beauty --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from omnirec.data.datasets import DATASETS, load_dataset
from omnirec.data.split import split_dataset
from omnirec.evaluate.ranking import full_ranking_eval
from omnirec.experiment import markdown_table, run_experiment
from omnirec.models import MODELS
from omnirec.utils import atomic_write_text

HERE = Path(__file__).resolve().parent
BASELINES = ("pop", "itemknn", "als", "bpr", "markov")
TEXT_MODELS = ("tfidf",)

# Published numbers under the same protocol (leave-one-out, full ranking over all items).
# Each entry: (model, {metric: value}, citation). Only numbers read in the cited source are listed.
PUBLISHED = {
    "beauty": [
        ("BPR-MF", {"hr@10": 0.0296, "ndcg@10": 0.0147},
         "ICSRec (Qin et al., WSDM 2024), main table; read in a secondary copy of the table"),
        ("GRU4Rec", {"hr@10": 0.0283, "ndcg@10": 0.0137}, "P5 (Geng et al., RecSys 2022), Table 3"),
        ("Caser", {"hr@10": 0.0347, "ndcg@10": 0.0176}, "P5 (Geng et al., RecSys 2022), Table 3"),
        ("BERT4Rec", {"hr@10": 0.0347, "ndcg@10": 0.0170}, "P5 (Geng et al., RecSys 2022), Table 3"),
        ("SASRec", {"hr@10": 0.0605, "ndcg@10": 0.0318}, "P5 (Geng et al., RecSys 2022), Table 3"),
        ("S3-Rec", {"hr@10": 0.0647, "ndcg@10": 0.0327}, "P5 (Geng et al., RecSys 2022), Table 3"),
    ],
}
NO_PUBLISHED = {
    "ml-100k": "no leave-one-out full-ranking numbers found for ML-100K (RecBole publishes ML-1M only).",
    "beauty-bert4rec": "BERT4Rec reports 100 sampled negatives only: not the same protocol, so not shown.",
    "scientific": "UniSRec reports sequential models only; none of these baselines.",
}


def code_version(*scripts: str) -> str:
    """The commit the benchmark ran on, with '+dirty' when the library or the benchmark `scripts` (default:
    this one) had changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                                check=True).stdout.strip()
        paths = ["omnirec", *(scripts or ["benchmarks/baselines.py"])]
        dirty = subprocess.run(["git", "status", "--porcelain", *paths], cwd=HERE.parent, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def machine() -> dict[str, object]:
    """What ran the benchmark."""
    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
    }


def models_for(dataset) -> dict:
    names = list(BASELINES) + (list(TEXT_MODELS) if dataset.item_text is not None else [])
    return {name: MODELS[name]() for name in names}


def eval_timing(report, repeats: int) -> dict[str, dict[str, float]]:
    """Median (and all) wall seconds of the test-set full-ranking evaluation per model, over `repeats` runs."""
    histories, targets = report.split.histories("test"), report.split.targets("test")
    out = {}
    for name, model in report.models.items():
        times = [full_ranking_eval(model, histories, targets).eval_s for _ in range(repeats)]
        out[name] = {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times]}
    return out


def run_one(name: str, data_dir: Path, repeats: int) -> dict:
    start = time.perf_counter()
    dataset = load_dataset(name, data_dir)
    load_s = time.perf_counter() - start
    report = run_experiment(dataset, models_for(dataset), split=split_dataset(dataset, "loo"), progress=True)
    document = report.to_json()
    document.update({
        "load_s": round(load_s, 3),
        "eval_timing": eval_timing(report, repeats) if repeats else {},
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "code": code_version(),
        "machine": machine(),
        "published": [{"model": m, "metrics": v, "source": s} for m, v, s in PUBLISHED.get(name, [])],
        "description": DATASETS[name][2],
    })
    return document


def published_table(document: dict) -> str:
    rows = document["published"]
    if not rows:
        return f"Published: {NO_PUBLISHED.get(document['dataset'], 'none found.')}"
    lines = ["Published, same protocol:", "", "| model | hr@10 | ndcg@10 | source |", "|---|---:|---:|---|"]
    for row in rows:
        m = row["metrics"]
        lines.append(f"| {row['model']} | {m.get('hr@10', float('nan')):.4f} | {m.get('ndcg@10', float('nan')):.4f} | {row['source']} |")
    return "\n".join(lines)


# The protocol every benchmark of this folder follows; RESULTS.md and the README say it in these words.
PROTOCOL = [
    "## Protocol (every model, every benchmark)",
    "",
    "- **Split**: leave-one-out: each user's last item is the test target, the second-last the validation",
    "  target, the rest is training (other splits are named where used).",
    "- **Choices on validation only**: every hyperparameter, epoch count, re-ranking weight and default is",
    "  chosen on the validation targets with models fitted on the training items. Test figures decide nothing.",
    "- **One fit for the test, the same for every model**: each model has learnt from train + validation.",
    "  The neural models stop early on the validation targets, then refit from scratch on train + validation",
    "  for the chosen number of epochs; the others (popularity, item-kNN, EASE, ALS, BPR, Markov, TF-IDF)",
    "  fit on train + validation directly. The test history (model input and mask) is train + validation.",
    "- **Full ranking**: every item of the catalogue is ranked, history items masked, ties in a random",
    "  order that is the same in validation and test.",
    "- **Seeds and tests**: headline tables give mean ± sample std over 3 seeds (a model with no seed is",
    "  fitted once). A claim of \"better\" rests on one pre-declared test: a two-sided paired t-test over",
    "  users of per-user NDCG@10 (each user's value the mean over the seeds), α = 0.01.",
    "- **Grids**: a grid whose best point lies on its edge is extended until that point is inside; each",
    "  report says where that was not possible (a bound of the domain, such as a shrinkage of 0).",
]


def write_markdown(documents: list[dict], path: Path, appendix: list[str] = ()) -> None:
    parts = [
        "# Results: the protocol, and the baselines",
        "",
        "Generated by `benchmarks/baselines.py`; do not edit by hand.",
        "",
        *PROTOCOL,
        "",
        "## Baselines",
        "",
        "Default hyperparameters, one seed. At test time the history (model input and mask) is training +",
        "validation items, and every model here has been fitted on both (none of them stops early).",
        "`eval_s` is one full-ranking pass over all test users; the timing table gives the median of repeats.",
        "ILD uses 64-d SVD item vectors of the training matrix; novelty is mean self-information in bits.",
        "",
    ]
    for doc in documents:
        parts += [
            f"### {doc['dataset']}",
            "",
            f"{doc['description']}. {doc['n_users']:,} users, {doc['n_items']:,} items, "
            f"{doc['n_interactions']:,} interactions.",
            "",
            markdown_table(doc),
            "",
            published_table(doc),
            "",
        ]
        if doc["eval_timing"]:
            timing = ", ".join(f"{m} {t['median_s']:.2f} s" for m, t in doc["eval_timing"].items())
            parts += [f"Full-ranking evaluation time, median of {len(next(iter(doc['eval_timing'].values()))['runs_s'])} runs: {timing}.", ""]
        parts += [f"Code {doc.get('code', 'unknown')}; machine: {doc['machine']['cpus']} CPUs, "
                  f"{doc['machine']['platform']}, torch {doc['machine']['torch']}.", ""]
    atomic_write_text(path, "\n".join([*parts, *appendix]))


def _ndcg(rows: dict, name: str, group: str | None = "metrics") -> str:
    """NDCG@10 of `rows[name][group]` (or of `rows[name]`) as a table cell; empty where not measured."""
    row = rows.get(name, {})
    value = (row if group is None else row.get(group, {})).get("ndcg@10")
    if isinstance(value, dict):  # mean ± std over seeds (`protocol.mean_std`)
        return f"{value['mean']:.4f} ± {value['std']:.4f}"
    return "" if value is None else f"{value:.4f}"


def text_section(folder: Path) -> list[str]:
    """RESULTS.md's summary of the item-text benchmark (`text_cold_start.py`; details in TEXT.md)."""
    docs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    if not docs:
        return []
    lines = ["## Item text, cold items, transfer", "",
             "From `benchmarks/text_cold_start.py`; the full tables, the protocol and the transfer curves are in",
             "[TEXT.md](TEXT.md). NDCG@10, full ranking; mean ± std over the seeds where the run has seeds.", "",
             "| dataset | sasrec | tfidf | textseq id+text | textseq text | cold targets: tfidf | cold: textseq text "
             "| zero-shot transfer | pop |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for d in docs:
        loo, cold, t = d.get("loo", {}), d.get("cold", {}).get("results", {}), d.get("transfer", {})
        lines.append(f"| {d['dataset']} | {_ndcg(loo, 'sasrec')} | {_ndcg(loo, 'tfidf')} | "
                     f"{_ndcg(loo, 'textseq-id+text')} | {_ndcg(loo, 'textseq-text')} | {_ndcg(cold, 'tfidf', 'cold')} | "
                     f"{_ndcg(cold, 'textseq-text', 'cold')} | {_ndcg(t, 'zero_shot', None)} | "
                     f"{_ndcg(t, 'pop', None)} |")
    return [*lines, ""]


def rewrite_results(folder: Path = HERE / "results") -> None:
    """RESULTS.md from the saved JSON documents (the baselines' and the text benchmark's summary)."""
    docs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.stem in DATASETS]
    order = {name: i for i, name in enumerate(DATASETS)}
    write_markdown(sorted(docs, key=lambda d: order.get(d["dataset"], 99)), HERE / "RESULTS.md",
                   text_section(folder / "text_cold_start"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--datasets", default="ml-100k,beauty,beauty-bert4rec,scientific")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each evaluation (0 = none)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"benchmark data not found at {data_dir}; pass --data-dir", file=sys.stderr)
        return 2
    documents = []
    for name in args.datasets.split(","):
        document = run_one(name, data_dir, args.repeats)
        atomic_write_text(Path(args.out) / f"{name}.json", json.dumps(document, indent=2))
        print(f"\n{name}\n{markdown_table(document)}\n", flush=True)
        documents.append(document)
    rewrite_results(Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
