"""Validation evidence for the text models' options: what `hybrid`, `textseq` and their switches score
when no test target is read, on two protocols.

- loo: the leave-one-out split; each variant is fitted on the training items (early stopping, no refit)
  and reported by its best validation NDCG@10 (the hybrid's is its blend's, weights chosen on the same
  validation targets).
- nested-cold: new items as validation can have them. The cold-items split of the benchmarks keeps every
  cold item out of train and validation, so its validation targets are all warm and cannot tell how a
  model ranks new items. Here the test part of that split is dropped, and the same protocol is played
  again on what is left (`nested_cold`): on data with a clock, the interactions before the real cut-off,
  the latest items of that period pseudo-new; each user's last remaining item is the target, reported for
  pseudo-new and known targets apart. Each variant is fitted as the benchmark fits it for its test
  (`fit_for_test`: early stopping on the nested validation targets, then the refit on train + validation).
  The real test targets are never read.

Writes `benchmarks/results/text_validation.json` (one entry per variant, with the command and code).

    python benchmarks/text_validation.py --data-dir ../shared/data
    python benchmarks/text_validation.py --variants 'cold|hybrid|{"inherit": 10}'
    python benchmarks/text_validation.py --variants 'cold|hybrid|{"text": {"mode": "text"}}' --frontier
    python benchmarks/text_validation.py --ceiling    # what text alone tells about new items
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from sklearn.metrics import roc_auc_score

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from baselines import code_version, machine  # noqa: E402
from text_cold_start import COLD_QUANTILE, cold_split, has_clock  # noqa: E402

from omnirec.auto import build  # noqa: E402
from omnirec.data.dataset import Dataset  # noqa: E402
from omnirec.data.datasets import load_dataset  # noqa: E402
from omnirec.data.histories import Histories  # noqa: E402
from omnirec.data.schema import TIME, USER  # noqa: E402
from omnirec.data.split import Split, cold_items, split_dataset  # noqa: E402
from omnirec.evaluate.ranking import full_ranking_eval  # noqa: E402
from omnirec.experiment import fit_for_test  # noqa: E402
from omnirec.features.similarity import untrained_items  # noqa: E402
from omnirec.features.text import TextEncoderConfig, encode_texts  # noqa: E402
from omnirec.models.base import Recommender  # noqa: E402
from omnirec.models.content import TfidfConfig, TfidfContent, recency_weights  # noqa: E402
from omnirec.models.textseq import standardize  # noqa: E402
from omnirec.topk import mask_seen  # noqa: E402
from omnirec.utils import atomic_write_text  # noqa: E402

RESULT = HERE / "results" / "text_validation.json"
# protocol | model | its settings: what was measured to choose the text models' options (issue of the
# language model's place): the blend itself, each textseq mode under it, new items' stand-in or inheritance
VARIANTS = (
    'loo|textseq|{}', 'loo|hybrid|{}',
    'cold|textseq|{}', 'cold|textseq|{"mode": "text"}', 'cold|tfidf|{}',
    'cold|hybrid|{}', 'cold|hybrid|{"text": {"mode": "text"}}',
    'cold|hybrid|{"inherit": 10}', 'cold|hybrid|{"text": {"mode": "text"}, "inherit": 10}',
    'cold|textseq|{"id_dropout": 0.3}', 'cold|textseq|{"inherit_ids": 10}',
    'cold|hybrid|{"new_items_goal": "balanced"}',
    'cold|hybrid|{"text": {"mode": "text"}, "new_items_goal": "balanced"}',
)


FRONTIER_OFFSETS = (-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)  # `--frontier`


def nested_cold(dataset: Dataset) -> Split:
    """The benchmark's cold-items split (`text_cold_start.cold_split`) played again inside its own known
    part, so that its test targets are validation targets. With a clock: the interactions before the real
    cut-off (where no real cold item exists yet), and the items first seen after the median of their times
    pseudo-new (new in the same way as the real ones, the latest; the median rather than the real 0.8
    quantile so that enough of them are targets to measure). Without one: 20% of the known items at random
    (seed 1)."""
    outer = cold_split(dataset)
    known = pl.concat([outer.train, outer.valid])
    if not has_clock(dataset):
        return cold_items(known.sort([USER, TIME], maintain_order=True), dataset.n_users, dataset.n_items,
                          item_frac=0.2, seed=1)
    cut = np.quantile(dataset.interactions[TIME].to_numpy(), COLD_QUANTILE, method="lower")
    before = known.filter(pl.col(TIME) < cut).sort([USER, TIME], maintain_order=True)
    return cold_items(before, dataset.n_users, dataset.n_items, cutoff_quantile=0.5)


def among_new_ndcg(model: Recommender, histories: Histories, targets: Histories, known: np.ndarray) -> float:
    """NDCG@10 of the new-item targets when only new items are ranked (every known item removed): how well
    the model orders new items among themselves, apart from how it places them against known ones. Ties
    count at their expected position."""
    users = np.flatnonzero(targets.lengths() > 0)
    gains = []
    for lo in range(0, len(users), 1024):
        batch = histories.batch(users[lo:lo + 1024])
        with torch.inference_mode():
            scores = mask_seen(model.score(batch).float(), batch)
            scores[:, torch.from_numpy(known)] = -torch.inf
            scores[:, 0] = -torch.inf
        wanted = torch.from_numpy(targets.items[targets.indptr[batch.users]])
        hit = scores.gather(1, wanted[:, None])
        above, tied = (scores > hit).sum(1).numpy(), (scores == hit).sum(1).numpy()
        gain = np.zeros(len(wanted))
        for position in range(10):
            gain += ((above <= position) & (position < above + tied)) / np.log2(position + 2) / tied
        gains.append(gain)
    return float(np.concatenate(gains).mean())


def offset_frontier(model: Recommender, split: Split, known: np.ndarray) -> list[dict]:
    """The trade a calibrated hybrid's new-item offset makes: the nested test's new, known and all-target
    NDCG@10 with the offset moved over a fixed range, the other new-item weights as chosen. Read-only
    evidence of what placement alone can buy; nothing is chosen by it."""
    chosen, rows = dict(model.new_params), []
    try:
        for offset in FRONTIER_OFFSETS:
            model.new_params = {**chosen, "offset": offset}
            rows.append({"offset": offset, **group_ndcg(model, split, known)})
    finally:
        model.new_params = chosen
    return rows


def group_ndcg(model: Recommender, split: Split, known: np.ndarray) -> dict[str, float]:
    """The nested test's NDCG@10 on its new targets, its known targets and all of them."""
    targets = split.targets("test")
    return {f"{group}_ndcg@10": round(full_ranking_eval(model, split.histories("test"), part, ks=(10,))["ndcg@10"], 5)
            for group, part in (("new", targets.only(split.cold)), ("known", targets.only(known)), ("all", targets))}


CEILING_RECENCY = (1.0, 0.8, 0.5)  # `--ceiling`: the content rankers' history weighting (TF-IDF's default 0.8)


class SentenceProfile:
    """A content ranker for `content_ceiling`: (B, I + 1) cosine of each user's recency-weighted sum of
    their history's sentence vectors with every item's."""

    def __init__(self, vectors: np.ndarray, recency: float):
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.unit, self.recency = torch.from_numpy(unit.astype(np.float32)), recency

    def score(self, batch) -> torch.Tensor:
        weights = recency_weights(batch, self.recency, len(self.unit) - 1)  # (B, I + 1), as TF-IDF's profile
        return torch.from_numpy(np.asarray(weights @ self.unit.numpy(), dtype=np.float32)) @ self.unit.T


class StandardizedSum:
    """Content rankers' scores standardized per user and summed (`content_ceiling`)."""

    def __init__(self, *parts: object):
        self.parts = parts

    def score(self, batch) -> torch.Tensor:
        return sum(standardize(part.score(batch).float()) for part in self.parts)


def content_ceiling(dataset: Dataset, vectors: np.ndarray) -> dict:
    """What text alone can tell about new items, on the nested cold split (validation targets only):
    `among_new`, the NDCG@10 of the new-item targets with only new items ranked, for TF-IDF and sentence-
    vector profiles of the history and their standardized sum at several recency weights (how well
    content orders new items); `newness_auc`, the ROC AUC with which a user's history tells that the next
    item is new (the best new item's score above the best known one's, by TF-IDF and by sentence vectors;
    the history's length): 0.5 is no signal, and without one a new item's placement against known items
    is a single trade for every user (`--frontier`)."""
    split = nested_cold(dataset)
    data = split.refit_data(dataset.item_text)
    histories, targets = split.histories("test"), split.targets("test")
    known = np.setdiff1d(np.arange(1, dataset.n_items + 1), split.cold)
    rankers: dict[str, object] = {}
    for recency in CEILING_RECENCY:
        words, sentences = TfidfContent(TfidfConfig(recency=recency)).fit(data), SentenceProfile(vectors, recency)
        rankers |= {f"tfidf, recency {recency}": words, f"sentence vectors, recency {recency}": sentences,
                    f"tfidf + sentence vectors, recency {recency}": StandardizedSum(words, sentences)}
    among = {name: round(among_new_ndcg(ranker, histories, targets.only(split.cold), known), 5)
             for name, ranker in rankers.items()}
    users = np.flatnonzero(targets.lengths() > 0)
    is_new = np.isin(targets.items[targets.indptr[users]], split.cold)
    new = torch.zeros(dataset.n_items + 1, dtype=torch.bool)
    new[torch.from_numpy(split.cold)] = True
    trained = torch.from_numpy(~untrained_items(data.sequences, dataset.n_items))
    features: dict[str, list[np.ndarray]] = {"tfidf: best new item above best known": [],
                                             "sentence vectors: best new item above best known": []}
    for lo in range(0, len(users), 1024):
        batch = histories.batch(users[lo:lo + 1024])
        for name, ranker in zip(features, (rankers["tfidf, recency 0.8"], rankers["sentence vectors, recency 0.8"])):
            with torch.inference_mode():
                scores = mask_seen(ranker.score(batch).float().clone(), batch)
            gap = scores[:, new].max(1).values - scores[:, trained].max(1).values
            features[name].append(gap.numpy())
    auc = {name: round(float(roc_auc_score(is_new, np.concatenate(parts))), 4) for name, parts in features.items()}
    auc["history length"] = round(float(roc_auc_score(is_new, histories.lengths()[users])), 4)
    out = {"protocol": "cold", "model": "content-ceiling", "params": {}, "nested_split": list(split.notes),
           "new_targets": int(is_new.sum()), "targets": len(users), "among_new": among, "newness_auc": auc}
    print(json.dumps(out), flush=True)
    return out


def measure(variant: str, dataset: Dataset, vectors: np.ndarray, frontier: bool = False) -> dict:
    protocol, name, settings = variant.split("|", 2)
    params = json.loads(settings)
    split = split_dataset(dataset, "loo") if protocol == "loo" else nested_cold(dataset)
    model = build(name, params, trial=protocol == "loo")  # the nested test is scored as the benchmark's: refitted
    if hasattr(model, "item_vectors"):
        model.item_vectors = vectors
    start = time.perf_counter()
    if protocol == "loo":
        model.fit(split.train_data(dataset.item_text))
    else:
        fit_for_test(model, split, dataset.item_text)
    out = {"protocol": protocol, "model": name, "params": params, "fit_s": round(time.perf_counter() - start, 1),
           "valid_ndcg@10": model.training.get("best_valid_ndcg@10"),
           **{k: model.training[k] for k in ("weights", "text_valid_ndcg@10", "best_epoch") if k in model.training}}
    if "new_items" in model.training:  # how new items are scored, as calibrated on held-out items (hybrid)
        record = model.training["new_items"]
        out["new_items"] = {k: v for k, v in record.items() if k != "tried"}
        chosen = next(t for t in record["tried"] if t["params"] == record["params"])
        out["new_items"]["search_valid"] = {k: v for k, v in chosen.items() if k != "params"}  # its validation figures
    if protocol == "cold":
        out["nested_split"] = list(split.notes)
        targets = split.targets("test")
        known = np.setdiff1d(np.arange(1, dataset.n_items + 1), split.cold)
        out.update(group_ndcg(model, split, known))
        out["new_among_new_ndcg@10"] = round(among_new_ndcg(model, split.histories("test"), targets.only(split.cold),
                                                            known), 5)
        if frontier and "new_items" in model.training:
            out["offset_frontier"] = offset_frontier(model, split, known)
    print(json.dumps(out), flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--dataset", default="scientific")
    parser.add_argument("--variants", default=";".join(VARIANTS), help="protocol|model|json settings, ';'-separated")
    parser.add_argument("--ceiling", action="store_true", help="only the content ceiling on the nested cold split: "
                        "how well text orders new items, and whether a history tells that a new item comes next")
    parser.add_argument("--frontier", action="store_true", help="for each calibrated hybrid, the nested test's "
                        "figures with its new-item offset moved over a fixed range (what placement alone can buy)")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset, Path(args.data_dir))
    vectors = encode_texts(list(dataset.item_text), TextEncoderConfig(progress=False))
    doc = json.loads(RESULT.read_text()) if RESULT.exists() else {"runs": []}
    provenance = {"dataset": args.dataset, "command": " ".join(["python", *sys.argv]),
                  "code": code_version("benchmarks/text_validation.py"), "machine": machine()}
    rows = ([lambda: content_ceiling(dataset, vectors)] if args.ceiling else
            [lambda v=v: measure(v, dataset, vectors, args.frontier) for v in args.variants.split(";")])
    for run in rows:
        row = {**run(), **provenance}
        doc["runs"] = [r for r in doc["runs"] if (r["dataset"], r["protocol"], r["model"], r["params"]) !=
                       (row["dataset"], row["protocol"], row["model"], row["params"])] + [row]
        atomic_write_text(RESULT, json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
