"""ANN retrieval benchmark: recall@10 against exact search and single-query latency over synthetic item
vectors (a mixture of Gaussian clusters, unit-normalised, as embeddings of a large catalogue are).

    python benchmarks/ann.py                  # 1,000,000 items, 64 dimensions
    python benchmarks/ann.py --items 100000   # quicker

Writes benchmarks/results/ann.json and benchmarks/ANN.md. Latency: one query per call (as a live request
makes), median and p99 over the queries, after a warm-up; build time includes training the IVF lists.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from omnirec.pipeline.ann import IndexConfig, VectorIndex, exact_search, recall_at_k
from omnirec.utils import atomic_write_text

HERE = Path(__file__).resolve().parent


def synthetic_vectors(n: int, centres: np.ndarray, rng: np.random.Generator, noise: float = 1.0) -> np.ndarray:
    """(n, dim) unit vectors: a random centre plus Gaussian noise (`noise` per dimension) each."""
    n_clusters, dim = centres.shape
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        out[lo:hi] = centres[rng.integers(0, n_clusters, hi - lo)]
        out[lo:hi] += noise * rng.standard_normal((hi - lo, dim)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def measure(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, k: int) -> dict[str, float]:
    """Recall@k over all queries and per-query latency (one query per call)."""
    for q in queries[:20]:
        index.search(q[None], k)
    found, times = [], []
    for q in queries:
        start = time.perf_counter()
        ids, _ = index.search(q[None], k)
        times.append(time.perf_counter() - start)
        found.append(ids[0])
    ms = np.array(times) * 1000
    return {"recall@10": round(recall_at_k(np.array(found), truth), 4), "p50_ms": round(float(np.median(ms)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "mean_ms": round(float(ms.mean()), 3)}


def index_bytes(index: VectorIndex) -> int:
    """Size of the faiss index when serialised (vectors, graph or lists, codes)."""
    import faiss

    return int(faiss.serialize_index(index._faiss).size)


def set_search_width(index: VectorIndex, value: int) -> None:
    if index.kind.startswith("hnsw"):
        index._faiss.hnsw.efSearch = value
    else:
        index._faiss.nprobe = value


def run(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
    vectors = synthetic_vectors(args.items, centres, rng, args.noise)
    queries = synthetic_vectors(args.queries, centres, rng, args.noise)  # same clusters, new points
    start = time.perf_counter()
    truth, _ = exact_search(torch.from_numpy(vectors), torch.from_numpy(queries), args.k)
    exact_s = time.perf_counter() - start
    exact = VectorIndex(vectors, config=IndexConfig(kind="exact"))
    rows = [{"index": "exact (torch matmul)", "build_s": 0.0, "width": "-", "mib": round(vectors.nbytes / 2**20, 1),
             **measure(exact, queries[: args.exact_queries], truth[: args.exact_queries], args.k)}]
    for kind, widths in (("hnsw", (16, 32, 64, 128, 256)), ("ivf", (16, 32, 64, 128)), ("hnsw_sq8", (64, 128)),
                         ("ivf_sq8", (16, 32))):
        start = time.perf_counter()
        index = VectorIndex(vectors, config=IndexConfig(kind=kind, hnsw_m=args.hnsw_m))
        build_s = time.perf_counter() - start
        memory = index_bytes(index)
        print(f"{kind}: built in {build_s:.1f} s, {memory / 2**20:.0f} MiB", flush=True)
        for width in widths:
            set_search_width(index, width)
            row = {"index": kind, "build_s": round(build_s, 1), "width": width, "mib": round(memory / 2**20, 1),
                   **measure(index, queries, truth, args.k)}
            print(row, flush=True)
            rows.append(row)
        del index
    return {"items": args.items, "dim": args.dim, "clusters": args.clusters, "noise": args.noise, "queries": args.queries, "k": args.k,
            "exact_batch_s": round(exact_s, 2), "rows": rows, "code": _commit(), "machine": _machine(),
            "command": "python benchmarks/ann.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out")}


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=HERE, check=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> str:
    import os

    return f"{os.cpu_count()} CPUs, {platform.platform()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def markdown(doc: dict) -> str:
    lines = [
        "# ANN retrieval: recall and latency", "",
        "Generated by `benchmarks/ann.py`; do not edit by hand.",
        f"{doc['items']:,} synthetic unit vectors of {doc['dim']} dimensions ({doc['clusters']:,} Gaussian clusters, "
        f"noise {doc['noise']} per dimension around centres of unit variance per dimension); "
        f"{doc['queries']:,} queries from the same clusters; recall@{doc['k']} against exact inner-product search. "
        "Latency: one query per call, after a warm-up. `width` is efSearch (HNSW) or nprobe (IVF); `_sq8` indexes store "
        "each dimension in 8 bits. MiB: the serialised index. "
        "The exact row is timed on the first queries only.", "",
        "| index | width | recall@10 | p50 ms | p99 ms | build s | MiB |", "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        lines.append(f"| {r['index']} | {r['width']} | {r['recall@10']:.4f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{r['build_s']:.1f} | {r.get('mib', float('nan')):.0f} |")
    lines += ["", f"Command: `{doc['command']}`", "", f"Code {doc['code']}; machine: {doc['machine']}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--clusters", type=int, default=2000)
    p.add_argument("--noise", type=float, default=1.0, help="noise per dimension around the cluster centres")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--exact-queries", type=int, default=50)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "ann.json"))
    args = p.parse_args()
    doc = run(args)
    atomic_write_text(args.out, json.dumps(doc, indent=2))
    atomic_write_text(HERE / "ANN.md", markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
