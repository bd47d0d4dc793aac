"""Scale: peak memory and throughput of each stage on large synthetic logs.

    python benchmarks/scale.py                       # 100k items / 2M interactions, then 1M / 20M
    python benchmarks/scale.py --sizes 100000:2000000

Stages, each in a process of its own so that its peak memory (max RSS) is its own:
1. generate: the synthetic log written to Parquet chunk by chunk (`omnirec.data.synthetic.write_large`);
2. preprocess: read the Parquet file, clean (duplicates, types), map ids, leave-one-out split;
3. train: one epoch of sasrec (d_model 64, sampled softmax with 256 shared negatives, batch 1024);
4. evaluate: full ranking of the whole catalogue for a sample of 2,000 users (score blocks bounded).

Writes benchmarks/results/scale.json and benchmarks/SCALE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def stage(name: str, folder: str, n_users: int, n_items: int, n_interactions: int) -> dict:
    """Run one stage here (in the child process) and return its figures."""
    import numpy as np

    start = time.perf_counter()
    out: dict = {}
    if name == "generate":
        from omnirec.data.synthetic import write_large

        out["interactions"] = write_large(f"{folder}/log.parquet", n_users, n_items, n_interactions)
    elif name == "preprocess":
        from omnirec.data.dataset import Dataset
        from omnirec.data.io import ColumnMap, read_interactions
        from omnirec.data.split import split_dataset

        ds = Dataset.from_frames(read_interactions(f"{folder}/log.parquet", ColumnMap()), name="large")
        split = split_dataset(ds, "loo")
        train, test = split.histories("valid"), split.targets("test")
        np.savez(f"{folder}/data.npz", indptr=train.indptr, items=train.items, t_indptr=test.indptr, t_items=test.items,
                 h_indptr=split.histories("test").indptr, h_items=split.histories("test").items, n_items=ds.n_items)
        out.update(users=ds.n_users, items=ds.n_items, interactions=ds.interactions.height)
    else:
        import torch

        from omnirec.data.histories import Histories
        from omnirec.models.sasrec import SASRec, SASRecConfig
        from omnirec.train.loop import TrainConfig

        data = np.load(f"{folder}/data.npz")
        n = int(data["n_items"])
        config = SASRecConfig(d_model=64, loss="sampled", n_negatives=256, train=TrainConfig(
            epochs=1, batch_size=1024, refit=False, ema_epochs=0.0, progress=False, amp=False))
        model = SASRec(config)
        if name == "train":
            from omnirec.features.sequences import windows
            from omnirec.models.sequential import fit_next_item

            model.module = model._build(n)
            sequences = Histories(data["indptr"], data["items"])
            fit_next_item(model.module, sequences, config.max_len, model._loss(sequences), None, config.train)
            out["windows"] = int(len(windows(sequences, config.max_len).lengths()))
            out["windows_per_s"] = round(out["windows"] / (time.perf_counter() - start), 1)
            torch.save(model.module.state_dict(), f"{folder}/model.pt")
        else:  # evaluate
            from omnirec.evaluate.ranking import full_ranking_eval

            model.module = model._build(n)
            model.module.load_state_dict(torch.load(f"{folder}/model.pt"))
            model.n_items, model.n_users = n, len(data["h_indptr"]) - 2
            histories, targets = Histories(data["h_indptr"], data["h_items"]), Histories(data["t_indptr"], data["t_items"])
            users = np.flatnonzero(targets.lengths() > 0)
            sample = np.random.default_rng(0).choice(users, size=min(2000, len(users)), replace=False)
            keep = np.zeros(len(targets.indptr) - 1, dtype=bool)
            keep[sample] = True
            lengths = np.where(keep, targets.lengths(), 0)
            indptr = np.concatenate([[0], np.cumsum(lengths)])
            chosen = np.repeat(keep, targets.lengths())
            result = full_ranking_eval(model, histories, Histories(indptr, targets.items[chosen]), ks=(10,))
            out.update(users_evaluated=len(sample), ndcg_at_10=round(result.summary["ndcg@10"], 5),
                       users_per_s=round(len(sample) / (time.perf_counter() - start), 1))
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["peak_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def run_size(n_items: int, n_interactions: int) -> dict:
    n_users = max(1000, n_interactions // 20)
    folder = tempfile.mkdtemp(prefix=f"omnirec-scale-{n_items}-")
    row: dict = {"items": n_items, "interactions_target": n_interactions, "users_target": n_users}
    for name in ("generate", "preprocess", "train", "evaluate"):
        done = subprocess.run([sys.executable, __file__, "--stage", name, "--folder", folder, "--users", str(n_users),
                               "--items", str(n_items), "--interactions", str(n_interactions)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            row[name] = {"error": done.stderr[-1500:]}
            print(name, "failed:", done.stderr[-1500:], flush=True)
            break
        row[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(n_items, name, row[name], flush=True)
    return row


def markdown(doc: dict) -> str:
    lines = ["# Scale: large synthetic catalogues", "", "Generated by `benchmarks/scale.py`; do not edit by hand. Each "
             "stage runs in its own process; `peak MiB` is its maximum resident memory. Synthetic log: Zipf item "
             "popularity, one likely successor per item, about 20 interactions per user. sasrec: d_model 64, sampled "
             "softmax (256 shared negatives), batch 1,024, one epoch, float32.", "",
             "| items | interactions | stage | seconds | peak MiB | throughput |", "|---:|---:|---|---:|---:|---|"]
    for row in doc["rows"]:
        inter = row.get("preprocess", {}).get("interactions", row["interactions_target"])
        for name in ("generate", "preprocess", "train", "evaluate"):
            r = row.get(name)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {row['items']:,} | {inter:,} | {name} | failed | | |")
                continue
            rate = {"generate": f"{r.get('interactions', 0) / max(r['seconds'], 1e-9):,.0f} interactions/s",
                    "preprocess": f"{inter / max(r['seconds'], 1e-9):,.0f} interactions/s",
                    "train": f"{r.get('windows_per_s', 0):,.0f} sequences/s",
                    "evaluate": f"{r.get('users_per_s', 0):,.1f} users/s (full ranking)"}[name]
            lines.append(f"| {row['items']:,} | {inter:,} | {name} | {r['seconds']:.1f} | {r['peak_mib']:,.0f} | {rate} |")
    lines += ["", f"Command: `{doc['command']}`; code {doc['code']}; machine: {doc['machine']}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000:2000000,1000000:20000000", help="items:interactions, comma-separated")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--users", type=int, help=argparse.SUPPRESS)
    p.add_argument("--items", type=int, help=argparse.SUPPRESS)
    p.add_argument("--interactions", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, args.folder, args.users, args.items, args.interactions)))
        return
    rows = [run_size(*(int(x) for x in size.split(":"))) for size in args.sizes.split(",")]
    from baselines import code_version

    doc = {"rows": rows, "code": code_version("benchmarks/scale.py"), "command": "python benchmarks/scale.py " + f"--sizes {args.sizes}",
           "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"}
    sys.path.insert(0, str(HERE.parent))
    from omnirec.utils import atomic_write_text

    atomic_write_text(HERE / "results" / "scale.json", json.dumps(doc, indent=2))
    atomic_write_text(HERE / "SCALE.md", markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
