"""The text model on a catalogue given the way users give one: an interaction log (CSV) and an item file
with text columns, run through the commands a user runs, and checked against the text model's bars.

1. `omnirec evaluate --split loo`: the text model (`--text-model`, default hybrid) against EASE, TF-IDF
   and SASRec on every test target;
2. `omnirec evaluate --split cold-items` (a time cut-off where the log has a clock, else `--cold-frac` of
   the items at random; `--cold-by` chooses): the same models on cold and warm test targets;
3. with `--pretrained BUNDLE` (the text model trained on another catalogue): `omnirec train` from scratch
   and `omnirec train --init-from BUNDLE`, their test NDCG@10 and the epochs each took to its best.

The bars (checked and written down, never tuned for): the text model beats each of the others on loo,
cold and warm targets, and TF-IDF by at least 1.25x on cold targets.

    python benchmarks/catalogue_check.py --log interactions.csv --items items.csv --text-cols title,brand \
        --out runs/catalogue [--user-col user --item-col item --time-col ts] [--pretrained BUNDLE]
    python benchmarks/catalogue_check.py --export ml-100k --data-dir ../shared/data --to runs/ml-100k-csv

`--export` writes a named benchmark dataset in that form (`interactions.csv`, `items.csv` with a `text`
column), so that the path users take can be run on data at hand. Writes `<out>/check.json`: every
command, its result document, the bars and whether each is met.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from baselines import code_version, machine  # noqa: E402

from omnirec.data.datasets import load_dataset  # noqa: E402
from omnirec.data.schema import TIME, USER  # noqa: E402
from omnirec.data.train_data import has_clock as times_are_a_clock  # noqa: E402
from omnirec.utils import atomic_write_text  # noqa: E402

PEERS = ("ease", "tfidf", "sasrec")
COLD_RATIO = 1.25  # the text model over TF-IDF on cold targets


def export(name: str, data_dir: Path, to: Path) -> None:
    """A named benchmark dataset as `interactions.csv` (user_id, item_id, timestamp) and `items.csv`
    (item_id, text), with the dataset's own ids."""
    dataset = load_dataset(name, data_dir)
    if dataset.item_text is None:
        raise SystemExit(f"error: {name} has no item text to export")
    users, items = dataset.users.labels, dataset.items.labels
    frame = dataset.interactions
    log = pl.DataFrame({"user_id": [users[u - 1] for u in frame["user_id"].to_list()],
                        "item_id": [items[i - 1] for i in frame["item_id"].to_list()],
                        "timestamp": frame["timestamp"]})
    to.mkdir(parents=True, exist_ok=True)
    log.write_csv(to / "interactions.csv")
    pl.DataFrame({"item_id": items, "text": dataset.item_text[1:]}).write_csv(to / "items.csv")
    print(f"wrote {to / 'interactions.csv'} ({log.height} rows) and {to / 'items.csv'} ({len(items)} items)")


def has_clock(log: pl.DataFrame, user: str, when: str) -> bool:
    """Whether the time column is a clock rather than positions in each user's sequence."""
    return times_are_a_clock(log.select(pl.col(user).alias(USER), pl.col(when).alias(TIME)))


def run(command: list[str], log_to: Path) -> float:
    """Run one omnirec command (`omnirec ...`, as this Python's `omnirec.cli`, so no PATH is needed), its
    output to `log_to`; a failure stops the check with the command's tail."""
    start = time.perf_counter()
    with open(log_to, "w") as out:
        done = subprocess.run([sys.executable, "-m", "omnirec.cli", *command[1:]], stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = log_to.read_text()[-2000:]
        raise SystemExit(f"error: {' '.join(command)} exited {done.returncode}:\n{tail}")
    return round(time.perf_counter() - start, 1)


def data_flags(args: argparse.Namespace) -> list[str]:
    return ["--path", args.log, "--format", "csv", "--user-col", args.user_col, "--item-col", args.item_col,
            "--time-col", args.time_col, "--items", args.items, "--text-cols", args.text_cols]


def evaluate(args: argparse.Namespace, out: Path, split: str, extra: list[str]) -> dict:
    models = ",".join([args.text_model, *PEERS])
    path = out / f"evaluate-{split}.json"
    command = ["omnirec", "evaluate", *data_flags(args), "--models", models, "--split", split, "--quiet",
               "--json", str(path), *extra, *(["--config", args.config] if args.config else [])]
    seconds = run(command, out / f"evaluate-{split}.log")
    return {"command": " ".join(command), "seconds": seconds, "result": json.loads(path.read_text())}


def train(args: argparse.Namespace, out: Path, name: str, init_from: str | None) -> dict:
    """`omnirec train` of the text model on the catalogue (leave-one-out test), optionally from a bundle."""
    config = out / "train.toml"
    atomic_write_text(config, "\n".join([
        f'model = "{args.text_model}"', "[data]", f'path = "{args.log}"', 'format = "csv"',
        f'user_col = "{args.user_col}"', f'item_col = "{args.item_col}"', f'time_col = "{args.time_col}"',
        f'items = "{args.items}"', f'text_cols = "{args.text_cols}"', "",
        Path(args.config).read_text() if args.config else ""]))
    command = ["omnirec", "train", "--config", str(config), "--out", str(out / name), "--quiet",
               *(["--init-from", init_from] if init_from else [])]
    seconds = run(command, out / f"train-{name}.log")
    bundle = json.loads((out / name / "bundle.json").read_text())
    curve = [row["valid_ndcg@10"] for row in bundle.get("history", []) if "valid_ndcg@10" in row]
    return {"command": " ".join(command), "seconds": seconds, "ndcg@10": bundle["metrics"].get("ndcg@10"),
            "best_epoch": bundle["training"].get("best_epoch"), "valid_curve": [round(v, 5) for v in curve]}


def bars(doc: dict, text: str) -> list[dict]:
    """Each bar: what is compared, the two figures, whether it is met."""
    out = []
    loo = doc["loo"]["result"]["results"]
    for peer in PEERS:
        out.append({"bar": f"loo: {text} > {peer}", "text": loo[text]["ndcg@10"], "peer": loo[peer]["ndcg@10"],
                    "met": loo[text]["ndcg@10"] > loo[peer]["ndcg@10"]})
    groups = doc["cold"]["result"].get("groups", {})
    for group in ("cold", "warm"):
        rows = groups.get(group, {})
        for peer in PEERS:
            if text in rows and peer in rows:
                out.append({"bar": f"{group} targets: {text} > {peer}", "text": rows[text]["ndcg@10"],
                            "peer": rows[peer]["ndcg@10"], "met": rows[text]["ndcg@10"] > rows[peer]["ndcg@10"]})
    cold = groups.get("cold", {})
    if text in cold and "tfidf" in cold:
        t, p = cold[text]["ndcg@10"], cold["tfidf"]["ndcg@10"]
        out.append({"bar": f"cold targets: {text} >= {COLD_RATIO} x tfidf", "text": t, "peer": p,
                    "ratio": round(t / p, 3) if p else None, "met": t > 0 and t >= COLD_RATIO * p})
    return out


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", help="write this named benchmark dataset as CSV files to --to, and stop")
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--to", help="--export: the folder to write")
    parser.add_argument("--log", help="interaction log (CSV)")
    parser.add_argument("--items", help="item catalogue (CSV) keyed by --item-col")
    parser.add_argument("--text-cols", default="text", help="catalogue columns that make the item text")
    parser.add_argument("--user-col", default="user_id")
    parser.add_argument("--item-col", default="item_id")
    parser.add_argument("--time-col", default="timestamp")
    parser.add_argument("--text-model", default="hybrid")
    parser.add_argument("--cold-by", choices=("auto", "time", "random"), default="auto",
                        help="cold items: the latest first seen (time), or --cold-frac of them at random; auto: "
                             "time where the log has a clock")
    parser.add_argument("--cold-frac", type=float, default=0.2, help="the fraction of items cold at random")
    parser.add_argument("--pretrained", help="a bundle of the text model trained on another catalogue (--init-from)")
    parser.add_argument("--config", help="TOML of [models.<name>] tables for every command (default: the defaults)")
    parser.add_argument("--out", default="runs/catalogue")
    return parser


def main() -> int:
    args = parser().parse_args()
    if args.export:
        if not args.to:
            raise SystemExit("error: --export needs --to FOLDER")
        export(args.export, Path(args.data_dir), Path(args.to))
        return 0
    if not (args.log and args.items):
        raise SystemExit("error: give --log and --items (or --export NAME --to FOLDER)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = pl.read_csv(args.log, columns=[args.user_col, args.time_col])
    by_time = args.cold_by == "time" or (args.cold_by == "auto" and has_clock(log, args.user_col, args.time_col))
    cold_extra = [] if by_time else ["--cold-frac", str(args.cold_frac)]
    doc = {"log": args.log, "items": args.items, "text_cols": args.text_cols, "text_model": args.text_model,
           "command": " ".join(["python", *sys.argv]), "code": code_version("benchmarks/catalogue_check.py"),
           "machine": machine()}
    doc["loo"] = evaluate(args, out, "loo", [])
    doc["cold"] = evaluate(args, out, "cold-items", cold_extra)
    if args.pretrained:
        doc["transfer"] = {"scratch": train(args, out, "scratch", None),
                           "init_from": train(args, out, "init-from", args.pretrained)}
    doc["bars"] = bars(doc, args.text_model)
    atomic_write_text(out / "check.json", json.dumps(doc, indent=2) + "\n")
    for bar in doc["bars"]:
        print(f"{'met    ' if bar['met'] else 'NOT met'}  {bar['bar']}: {bar['text']:.4f} vs {bar['peer']:.4f}")
    if "transfer" in doc:
        t = doc["transfer"]
        print(f"transfer: scratch {t['scratch']['ndcg@10']:.4f} (best epoch {t['scratch']['best_epoch']}), "
              f"--init-from {t['init_from']['ndcg@10']:.4f} (best epoch {t['init_from']['best_epoch']})")
    print(f"wrote {out / 'check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
