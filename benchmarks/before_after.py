"""Every headline NDCG@10 of the saved results, before (a git revision) and now: a Markdown table.

Walks the headline result files (sequential, text, deep_cf, pipeline, compression) at `--before` and in
the working tree and lines up every NDCG@10 figure by its place in the document (list items that name a
dataset or a model are keyed by that name, so a reordering does not misalign them). A figure is a number
or a summary over seeds ({"mean", "std", ...}). Search trials, training histories and per-seed runs are
left out: they are not headline figures.

    python benchmarks/before_after.py --before c5d3071
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from readme_figures import half_up  # the README's rounding, so a figure reads the same everywhere

HERE = Path(__file__).resolve().parent
HEADLINES = ("sequential/*.json", "text_cold_start/*.json", "deep_cf.json", "pipeline/*.json", "compression.json")
SKIP = {"trials", "history", "runs", "curve", "published", "config", "sasrec_config", "values", "per_repetition"}
METRICS = ("ndcg@10", "cold_ndcg@10", "warm_ndcg@10")


def figures(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(path, figure) for every headline NDCG@10 in a result document.

    >>> dict(figures({"datasets": [{"dataset": "x", "models": {"ease": {"test": {"ndcg@10": 0.05}}}}]}))
    {'datasets/x/models/ease/test/ndcg@10': 0.05}
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SKIP:
                continue
            if key in METRICS and (isinstance(value, (int, float)) or (isinstance(value, dict) and "mean" in value)):
                yield "/".join((*path, key)), value
            else:
                yield from figures(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            name = next((value[k] for k in ("dataset", "model", "name", "bundle") if isinstance(value, dict) and k in value), i)
            yield from figures(value, (*path, str(name)))


def documents(revision: str | None) -> dict[str, Any]:
    """The headline result files at `revision` (None: the working tree), by path under results/."""
    out = {}
    results = HERE / "results"
    if revision is None:
        for pattern in HEADLINES:
            for p in sorted(results.glob(pattern)):
                out[p.relative_to(results).as_posix()] = json.loads(p.read_text())
        return out
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", revision, "benchmarks/results/"], cwd=HERE.parent,
                             capture_output=True, text=True, check=True).stdout.split()
    for name in listing:
        rel = name.removeprefix("benchmarks/results/")
        if name.endswith(".json") and any(Path(rel).match(p) for p in HEADLINES):
            text = subprocess.run(["git", "show", f"{revision}:{name}"], cwd=HERE.parent, capture_output=True,
                                  text=True, check=True).stdout
            out[rel] = json.loads(text)
    return out


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return f"{half_up(value['mean'], 4)} ± {half_up(value['std'], 4)}"
    return str(half_up(value, 4))


def table(before: dict[str, Any], after: dict[str, Any]) -> str:
    lines = ["| file | figure | before | now |", "|---|---|---:|---:|"]
    for name in sorted(set(before) | set(after)):
        old, new = dict(figures(before.get(name, {}))), dict(figures(after.get(name, {})))
        for key in sorted(set(old) | set(new)):
            lines.append(f"| {name} | {key} | {cell(old.get(key))} | {cell(new.get(key))} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the git revision to compare with (e.g. a commit)")
    args = parser.parse_args()
    print(table(documents(args.before), documents(None)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
