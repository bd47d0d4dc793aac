"""Item text through a pretrained sentence encoder: text-aware sequential models, cold items, transfer.

Four parts, each optional (`--parts`):

- encode: time to embed the whole catalogue's text, first with an empty cache, then from the cache.
- loo: leave-one-out, full ranking, all users: `textseq` in both modes against `sasrec`, `tfidf`, `itemknn`
  and `pop`, default configs.
- cold: the cold-items protocol (`cold_items` split): cold items never occur in training; each user's last
  item is the test target, ranked against the whole catalogue, reported for cold and warm targets apart.
  Data whose times are positions in each sequence (no clock) draws 20% of the items at random as cold.
- transfer: `textseq` (text mode) pretrained on `--pretrain`, then evaluated zero-shot on the dataset, and
  fine-tuned from the pretrained weights, against training from scratch (validation curves as a PNG).

Writes `benchmarks/results/text_cold_start/<dataset>.json`, the PNG beside it, and `benchmarks/TEXT.md`.

    python benchmarks/text_cold_start.py --data-dir ../shared/data
    python benchmarks/text_cold_start.py --dataset scientific --parts loo,cold
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from baselines import code_version, machine, rewrite_results

from omnirec.data.dataset import Dataset, TrainData
from omnirec.data.datasets import DATASETS, load_dataset
from omnirec.data.split import Split, cold_items, split_dataset
from omnirec.evaluate.ranking import full_ranking_eval
from omnirec.features import text
from omnirec.features.sequences import UserBatch
from omnirec.features.text import TextEncoderConfig, encode_texts
from omnirec.models import MODELS
from omnirec.models.base import Recommender
from omnirec.models.textseq import TextSeq, TextSeqConfig, standardize
from omnirec.utils import atomic_write_text

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "text_cold_start"
KS = (10, 20)

# Published on a close version of the data (the note below is printed with them): (model, metrics, source).
PUBLISHED = {
    "scientific": [
        ("SASRec", {"ndcg@10": 0.0797, "hr@10": 0.1305}, "Recformer (Li et al., KDD 2023), Table 2"),
        ("UniSRec", {"ndcg@10": 0.0862, "hr@10": 0.1255}, "Recformer (Li et al., KDD 2023), Table 2"),
        ("Recformer", {"ndcg@10": 0.1027, "hr@10": 0.1448}, "Recformer (Li et al., KDD 2023), Table 2"),
    ],
}
PUBLISHED_NOTE = {
    "scientific": "The published rows are not on this data: Recformer built its own version of Amazon Industrial & "
                  "Scientific (about 11k users and 5.3k items, against UniSRec's 8,442 and 4,385 here), pretrained "
                  "its language model on seven other Amazon categories and fine-tuned it end to end. Ours use no "
                  "other data and a frozen sentence encoder.",
}


class Hybrid(Recommender):
    """An ID model and a text model, each standardized per user, averaged; on items without training
    interactions the text model's score stands in for the ID model's. `fit` fits both parts; parts that
    are fitted already can be combined with `Hybrid.of`."""

    name = "hybrid"

    def __init__(self, ids: Recommender, text: Recommender):
        super().__init__()
        self.ids, self.text = ids, text

    @classmethod
    def of(cls, ids: Recommender, text: Recommender, data: TrainData) -> Hybrid:
        """The hybrid of two parts already fitted on `data`."""
        model = cls(ids, text)
        model.n_users, model.n_items = data.n_users, data.n_items
        model._note_trained(data)
        return model

    def _note_trained(self, data: TrainData) -> None:
        seen = data.sequences.items if data.valid is None else data.sequences.extend(data.valid).items
        self.untrained = torch.from_numpy(np.bincount(seen, minlength=data.n_items + 1) == 0)

    def _fit(self, data: TrainData) -> None:
        self.ids.fit(data)
        self.text.fit(data)
        self._note_trained(data)  # the refit of sequence models trains on validation items too

    def _score(self, batch: UserBatch) -> torch.Tensor:
        text = standardize(self.text.score(batch))
        ids = torch.where(self.untrained, text, standardize(self.ids.score(batch)))
        return 0.5 * (ids + text)

    def _get_state(self) -> dict:
        raise TypeError("Hybrid is saved as its two parts")

    def _set_state(self, state: dict) -> None:
        raise TypeError("Hybrid is saved as its two parts")


def metrics_of(model: Recommender, split: Split, targets=None) -> dict[str, float]:
    targets = split.targets("test") if targets is None else targets
    result = full_ranking_eval(model, split.histories("test"), targets, ks=KS)
    return {k: round(v, 5) for k, v in result.summary.items() if k.split("@")[0] in ("ndcg", "hr", "mrr", "coverage")}


def make_model(name: str, vectors: np.ndarray | None, max_minutes: float, **options: object) -> Recommender:
    """A default-config model by name; "textseq-text" / "textseq-id+text" pick textseq's mode."""
    if name.startswith("textseq"):
        config = TextSeqConfig(mode=name.split("-", 1)[1], **options)
        model: Recommender = TextSeq(config)
        model.item_vectors = vectors
    else:
        model = MODELS[name]()
    train = getattr(model.config, "train", None)
    if train is not None and max_minutes:
        model.config = dataclasses.replace(model.config, train=dataclasses.replace(train, max_minutes=max_minutes))
    return model


def fit_timed(model: Recommender, split: Split, dataset: Dataset) -> tuple[Recommender, float]:
    start = time.perf_counter()
    model.fit(split.train_data(dataset.item_text))
    return model, round(time.perf_counter() - start, 1)


def training_of(model: Recommender) -> dict:
    return getattr(model, "training", {}) or {}


def part_encode(dataset: Dataset) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        config = TextEncoderConfig(cache_dir=cache, progress=False)
        text._load_encoder.cache_clear()  # the first run includes loading the model
        start = time.perf_counter()
        first = encode_texts(dataset.item_text, config)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        again = encode_texts(dataset.item_text, config)
        cached_s = time.perf_counter() - start
    if not np.array_equal(first, again):
        raise RuntimeError("the cached embeddings differ from the encoded ones")
    n_texts = sum(1 for t in dataset.item_text if t)
    print(f"encode: {n_texts} texts in {first_s:.1f} s, from the cache in {cached_s:.2f} s", flush=True)
    return {"texts": n_texts, "dim": int(first.shape[1]), "first_s": round(first_s, 2), "cached_s": round(cached_s, 3),
            "threads": torch.get_num_threads()}


def part_loo(dataset: Dataset, vectors: np.ndarray, models: list[str], max_minutes: float) -> dict:
    split = split_dataset(dataset, "loo")
    out = {}
    for name in models:
        model, fit_s = fit_timed(make_model(name, vectors, max_minutes), split, dataset)
        out[name] = {"metrics": metrics_of(model, split), "fit_s": fit_s, "training": training_of(model)}
        print(f"loo {name}: ndcg@10 {out[name]['metrics']['ndcg@10']:.4f} hr@10 {out[name]['metrics']['hr@10']:.4f} "
              f"fit {fit_s:.0f} s", flush=True)
    return out


def cold_split(dataset: Dataset) -> Split:
    """Time cut-off where the data has a clock; else 20% of the items at random."""
    times = dataset.interactions["timestamp"]
    positions_only = int(times.max()) < 10 * dataset.interactions.group_by("user_id").len()["len"].max()
    options = {"item_frac": 0.2} if positions_only else {"cutoff_quantile": 0.8}
    return cold_items(dataset.interactions, dataset.n_users, dataset.n_items, **options)


def part_cold(dataset: Dataset, vectors: np.ndarray, models: list[str], max_minutes: float) -> dict:
    split = cold_split(dataset)
    targets = split.targets("test")
    warm = np.setdiff1d(np.arange(1, dataset.n_items + 1), split.cold)
    groups = {"cold": targets.only(split.cold), "warm": targets.only(warm)}
    fitted, out = {}, {"notes": list(split.notes), "n_cold_items": len(split.cold),
                       "targets": {g: int((t.lengths() > 0).sum()) for g, t in groups.items()}, "results": {}}
    for name in models:
        fitted[name], fit_s = fit_timed(make_model(name, vectors, max_minutes), split, dataset)
        out["results"][name] = {"fit_s": fit_s, **{g: metrics_of(fitted[name], split, t) for g, t in groups.items()}}
    if {"sasrec", "textseq-text"} <= fitted.keys():
        hybrid = Hybrid.of(fitted["sasrec"], fitted["textseq-text"], split.train_data(dataset.item_text))
        out["results"]["hybrid (sasrec + textseq-text)"] = {"fit_s": 0.0, **{g: metrics_of(hybrid, split, t)
                                                                             for g, t in groups.items()}}
    for name, row in out["results"].items():
        print(f"cold {name}: cold ndcg@10 {row['cold']['ndcg@10']:.4f}, warm ndcg@10 {row['warm']['ndcg@10']:.4f}",
              flush=True)
    return out


def part_transfer(dataset: Dataset, vectors: np.ndarray, pretrain: str, data_dir: Path, max_minutes: float) -> dict:
    source = load_dataset(pretrain, data_dir)
    source_split = split_dataset(source, "loo")
    source_vectors = encode_texts(source.item_text, TextEncoderConfig(progress=False))
    pretrained, pre_s = fit_timed(make_model("textseq-text", source_vectors, max_minutes), source_split, source)
    split = split_dataset(dataset, "loo")
    zero = TextSeq.zero_shot(pretrained, vectors, dataset.n_users)
    out = {"pretrain": pretrain, "pretrain_fit_s": pre_s, "pretrain_metrics": metrics_of(pretrained, source_split),
           "zero_shot": metrics_of(zero, split), "pop": metrics_of(MODELS["pop"]().fit(split.train_data()), split)}
    for label, start in (("scratch", None), ("fine-tuned", pretrained)):
        model = make_model("textseq-text", vectors, max_minutes)
        if start is not None:
            model.start_from(start)
        model, fit_s = fit_timed(model, split, dataset)
        curve = [row["valid_ndcg@10"] for row in model.history if "valid_ndcg@10" in row]
        out[label] = {"metrics": metrics_of(model, split), "fit_s": fit_s, "training": training_of(model),
                      "valid_curve": [round(v, 5) for v in curve]}
    best = max(out["scratch"]["valid_curve"])
    for label in ("scratch", "fine-tuned"):
        curve = out[label]["valid_curve"]
        out[label]["epochs_to_scratch_best"] = next((i + 1 for i, v in enumerate(curve) if v >= best), None)
    print(f"transfer from {pretrain}: zero-shot ndcg@10 {out['zero_shot']['ndcg@10']:.4f} (pop "
          f"{out['pop']['ndcg@10']:.4f}); epochs to the from-scratch best: scratch "
          f"{out['scratch']['epochs_to_scratch_best']}, fine-tuned {out['fine-tuned']['epochs_to_scratch_best']}",
          flush=True)
    return out


def plot_transfer(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = doc["transfer"]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for label, style in (("scratch", "o-"), ("fine-tuned", "s-")):
        curve = t[label]["valid_curve"]
        ax.plot(range(1, len(curve) + 1), curve, style, ms=3, label=f"textseq (text), {label}")
    ax.axhline(t["zero_shot"]["ndcg@10"], color="grey", ls="--", lw=1, label=f"zero-shot from {t['pretrain']} (test)")
    ax.axhline(t["pop"]["ndcg@10"], color="grey", ls=":", lw=1, label="popularity (test)")
    ax.set(xlabel="epoch", ylabel="validation NDCG@10", title=f"{doc['dataset']}: pretrained on {t['pretrain']} vs scratch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp.name)
    Path(tmp.name).replace(path)
    plt.close(fig)


def markdown(docs: list[dict]) -> str:
    """TEXT.md: one section per dataset benchmarked."""
    lines = ["# Item text: text-aware sequential models, cold items, transfer", "",
             "Generated by `benchmarks/text_cold_start.py`; do not edit by hand. Full ranking over the whole",
             "catalogue, history items masked, default configs. Text encoder: all-MiniLM-L6-v2 (frozen, 384-d).", ""]
    for doc in docs:
        lines += dataset_markdown(doc)
    return "\n".join(lines)


def dataset_markdown(doc: dict) -> list[str]:
    lines = [f"## `{doc['dataset']}`", "", f"Command: `{doc['command']}`.",
             f"{doc['n_users']:,} users, {doc['n_items']:,} items, "
             f"{doc['n_interactions']:,} interactions. Code {doc['code']}; {doc['machine']['cpus']} CPUs, "
             f"torch {doc['machine']['torch']}.", ""]
    if "encode" in doc:
        e = doc["encode"]
        lines += ["### Encoding the catalogue", "", f"{e['texts']:,} item texts -> {e['dim']}-d vectors: "
                  f"{e['first_s']:.1f} s with an empty cache (model loading included), {e['cached_s']:.2f} s from "
                  f"the cache; {e['threads']} torch threads.", ""]
    if "loo" in doc:
        lines += ["### Leave-one-out", "", "| model | ndcg@10 | hr@10 | ndcg@20 | hr@20 | fit s |", "|---|---:|---:|---:|---:|---:|"]
        for name, row in doc["loo"].items():
            m = row["metrics"]
            lines.append(f"| {name} | {m['ndcg@10']:.4f} | {m['hr@10']:.4f} | {m['ndcg@20']:.4f} | {m['hr@20']:.4f} | "
                         f"{row['fit_s']:.0f} |")
        for model, m, source in PUBLISHED.get(doc["dataset"], []):
            lines.append(f"| *{model}* ({source}) | {m['ndcg@10']:.4f} | {m['hr@10']:.4f} | | | |")
        lines += ["", PUBLISHED_NOTE[doc["dataset"]], ""] if doc["dataset"] in PUBLISHED_NOTE else [""]
    if "cold" in doc:
        c = doc["cold"]
        lines += ["### Cold items", "", "; ".join(c["notes"]) + f". Test targets: {c['targets']['cold']:,} cold, "
                  f"{c['targets']['warm']:,} warm.", "",
                  "| model | cold ndcg@10 | cold hr@10 | warm ndcg@10 | warm hr@10 | fit s |", "|---|---:|---:|---:|---:|---:|"]
        for name, row in c["results"].items():
            lines.append(f"| {name} | {row['cold']['ndcg@10']:.4f} | {row['cold']['hr@10']:.4f} | "
                         f"{row['warm']['ndcg@10']:.4f} | {row['warm']['hr@10']:.4f} | {row['fit_s']:.0f} |")
        lines.append("")
    if "transfer" in doc:
        t = doc["transfer"]
        lines += ["### Transfer", "", f"`textseq` (text mode) pretrained on `{t['pretrain']}` (its own test NDCG@10 "
                  f"{t['pretrain_metrics']['ndcg@10']:.4f}), then used on `{doc['dataset']}`.", "",
                  "| run | test ndcg@10 | test hr@10 | epochs to the from-scratch best validation | fit s |",
                  "|---|---:|---:|---:|---:|",
                  f"| popularity | {t['pop']['ndcg@10']:.4f} | {t['pop']['hr@10']:.4f} | | |",
                  f"| zero-shot | {t['zero_shot']['ndcg@10']:.4f} | {t['zero_shot']['hr@10']:.4f} | 0 (no training) | 0 |"]
        for label in ("scratch", "fine-tuned"):
            row = t[label]
            lines.append(f"| {label} | {row['metrics']['ndcg@10']:.4f} | {row['metrics']['hr@10']:.4f} | "
                         f"{row['epochs_to_scratch_best'] or 'not reached'} | {row['fit_s']:.0f} |")
        lines += ["", f"![validation curves](results/text_cold_start/{doc['dataset']}_transfer.png)", ""]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--dataset", default="scientific")
    parser.add_argument("--pretrain", default="ml-100k", help="dataset textseq is pretrained on for the transfer part")
    parser.add_argument("--parts", default="encode,loo,cold,transfer")
    parser.add_argument("--loo-models", default="pop,itemknn,tfidf,sasrec,textseq-id+text,textseq-text")
    parser.add_argument("--cold-models", default="tfidf,sasrec,textseq-id+text,textseq-text")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="training budget per model (0 = none)")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"benchmark data not found at {data_dir}; pass --data-dir", file=sys.stderr)
        return 2
    if args.dataset not in DATASETS:
        print(f"unknown dataset {args.dataset!r}; known: {', '.join(DATASETS)}", file=sys.stderr)
        return 2
    dataset = load_dataset(args.dataset, data_dir)
    if dataset.item_text is None:
        print(f"dataset {args.dataset!r} has no item text", file=sys.stderr)
        return 2
    parts = set(args.parts.split(","))
    path = OUT / f"{args.dataset}.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc.update({"dataset": args.dataset, "n_users": dataset.n_users, "n_items": dataset.n_items,
                "n_interactions": dataset.interactions.height, "code": code_version(), "machine": machine(),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])})
    if "encode" in parts:
        doc["encode"] = part_encode(dataset)
    vectors = encode_texts(dataset.item_text, TextEncoderConfig(progress=False))
    if "loo" in parts:
        doc["loo"] = part_loo(dataset, vectors, args.loo_models.split(","), args.max_minutes)
    if "cold" in parts:
        doc["cold"] = part_cold(dataset, vectors, args.cold_models.split(","), args.max_minutes)
    if "transfer" in parts:
        doc["transfer"] = part_transfer(dataset, vectors, args.pretrain, data_dir, args.max_minutes)
        plot_transfer(doc, OUT / f"{args.dataset}_transfer.png")
    atomic_write_text(path, json.dumps(doc, indent=2))
    atomic_write_text(HERE / "TEXT.md", markdown([json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]))
    rewrite_results()
    return 0


if __name__ == "__main__":
    sys.exit(main())
