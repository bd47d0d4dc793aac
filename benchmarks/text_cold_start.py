"""Item text through a pretrained sentence encoder: text-aware sequential models, cold items, transfer.

Five parts, each optional (`--parts`):

- encode: time to embed the whole catalogue's text, first with an empty cache, then from the cache.
- loo: leave-one-out, full ranking, all users: `textseq` in both modes and `hybrid` (textseq + TF-IDF
  words + item-kNN neighbours) against `sasrec`, `ease`, `tfidf`, `itemknn` and `pop`; default configs,
  but EASE's `l2`, chosen here on validation (the grid extended past any edge its best lands on).
- cold: the cold-items protocol (`cold_items` split): cold items never occur in training; each user's last
  item is the test target, ranked against the whole catalogue, reported for cold and warm targets apart;
  `hybrid` over each textseq mode.
  Data whose times are positions in each sequence (no clock) draws 20% of the items at random as cold.
- transfer: `textseq` (text mode) pretrained on `--pretrain`, then evaluated zero-shot on the dataset, and
  fine-tuned from the pretrained weights, against training from scratch (validation curves as a PNG).
- domains (`scientific`): the same between two domains of the one catalogue, cut by item category
  (`category_domains`), each way: pretrained on "industrial", used on "lab & care", and back.

The protocol of every benchmark (`benchmarks/protocol.py`): every model is fitted for the test on train +
validation (`fit_for_test`: the neural models stop early on the validation targets, then refit on both);
each seeded model runs once per seed of `--seeds`, the others once; table cells are mean ± sample std over
the seeds, the JSON keeps each seed's value. Each table has one pre-declared test (`protocol.paired`):

- loo: the best sentence-encoder model (textseq modes, hybrids) by validation NDCG@10 against the best by
  validation of the ID-only and linear models (pop, itemknn, ease, tfidf, sasrec);
- cold: the best sentence-encoder model by validation against tfidf, on the cold targets (the cold split's
  validation targets are all warm: no cold item is in train or valid);
- transfer, domains: fine-tuned against from scratch, on the test targets.

Writes `<--out>/<dataset>.json` and the PNG beside it (default `benchmarks/results/text_cold_start/`), and
`benchmarks/TEXT.md` (RESULTS.md's summary too); with another `--out`, its own TEXT.md there and nothing else.

    python benchmarks/text_cold_start.py --data-dir ../shared/data
    python benchmarks/text_cold_start.py --parts loo,cold --seeds 0,1 --max-minutes 0.2 --out /tmp/text_smoke
    python benchmarks/text_cold_start.py --report-only    # TEXT.md and the PNG from the saved JSON
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from baselines import code_version, machine, rewrite_results
from protocol import (
    SEEDS,
    TEST,
    Axis,
    describe_test,
    fmt_mean_std,
    mean_std,
    paired,
    search,
    seeded,
    summary_over_seeds,
)

from omnirec.auto import build
from omnirec.data.clean import CleanConfig
from omnirec.data.dataset import Dataset
from omnirec.data.datasets import DATASETS, load_dataset
from omnirec.data.histories import Histories
from omnirec.data.split import Split, cold_items, split_dataset
from omnirec.data.train_data import has_clock as times_are_a_clock
from omnirec.evaluate.ranking import EvalResult, full_ranking_eval
from omnirec.experiment import fit_for_test
from omnirec.features import text
from omnirec.features.text import TextEncoderConfig, encode_texts
from omnirec.features.text_tuning import TuningConfig, consecutive_pairs, encode_tuned, tune_encoder
from omnirec.models.base import Recommender
from omnirec.models.hybrid import Hybrid
from omnirec.models.textseq import TextSeq
from omnirec.utils import atomic_write_text

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "text_cold_start"
KS = (10, 20)
METRICS = tuple(f"{m}@{k}" for m in ("ndcg", "hr", "mrr", "coverage") for k in KS)
# the sentence-encoder models each pre-declared test is about; "hybrid-text": the hybrid over textseq's text mode
TEXT_MODELS = ("textseq-id+text", "textseq-text", "hybrid", "hybrid-text")
# models whose hyperparameters are chosen here, on validation: (the starting grid, its axes)
TUNED = {"ease": ([{"l2": x} for x in (12.5, 50.0, 200.0)], {"l2": Axis()})}

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


# --------------------------------------------------------------------------------------------------------
# fits over seeds
# --------------------------------------------------------------------------------------------------------

@dataclass
class Fits:
    """One model fitted for the test once per seed (once, seeds empty, for a model without a seed)."""

    models: list[Recommender] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    fit_s: list[float] = field(default_factory=list)
    valid: list[float | None] = field(default_factory=list)  # validation NDCG@10, trained on train only
    search: dict | None = None  # where its parameters were chosen on validation: the search's record


def make_model(name: str, vectors: np.ndarray | None, max_minutes: float, seed: int,
               params: dict | None = None) -> tuple[Recommender, bool]:
    """A model by name with `seed` where it has one ("textseq-text" / "textseq-id+text" pick textseq's mode,
    "hybrid-text" the mode of the hybrid's textseq), with `params` (default: its defaults), and whether it
    has a seed."""
    base, _, mode = name.partition("-")
    if params is None:
        params = {} if not mode else {"text": {"mode": mode}} if base == "hybrid" else {"mode": mode}
    table = seeded(base, params, seed)
    model = build(base, params if table is None else table, max_minutes)
    if isinstance(model, (TextSeq, Hybrid)):
        model.item_vectors = vectors
    return model, table is not None


def tuned_params(name: str, split: Split, dataset: Dataset) -> tuple[dict | None, dict | None]:
    """For a model of `TUNED`: its parameters chosen on validation (fitted on train, the grid extended past
    any edge the best lands on) and the search's record; (None, None) for the others."""
    if name not in TUNED:
        return None, None
    grid, axes = TUNED[name]

    def evaluate(params: dict) -> float:
        model, _ = make_model(name, None, 0.0, 0, params)
        model.fit(split.train_data(dataset.item_text))
        return round(full_ranking_eval(model, split.histories("valid"), split.targets("valid"), ks=(10,))["ndcg@10"], 5)

    best, trials, outcome = search(evaluate, grid, axes)
    print(f"  {name}: chosen {best} on validation; grid {outcome}", flush=True)
    return best, {"params": best, "trials": trials, "grid": outcome}


def validation_ndcg(name: str, model: Recommender, split: Split, dataset: Dataset, vectors: np.ndarray | None,
                    max_minutes: float, params: dict | None = None) -> float | None:
    """Validation NDCG@10 of `model`'s configuration trained on train only: a neural model's early-stopping
    figure (its refit comes after it), else a second fit on train, ranked for the validation targets."""
    if model.learns_from_validation:
        value = model.training.get("best_valid_ndcg@10")
        return None if value is None else round(float(value), 5)
    trial, _ = make_model(name, vectors, max_minutes, 0, params)
    trial.fit(split.train_data(dataset.item_text))
    return round(full_ranking_eval(trial, split.histories("valid"), split.targets("valid"), ks=(10,))["ndcg@10"], 5)


def fit_seeds(name: str, split: Split, dataset: Dataset, vectors: np.ndarray | None, max_minutes: float,
              seeds: tuple[int, ...], start: list[TextSeq] | None = None) -> Fits:
    """`name` fitted for the test (`fit_for_test`) once per seed, or once where it has no seed; with
    `start`, each seed's textseq starts from the pretrained model of the same position."""
    params, record = tuned_params(name, split, dataset)
    fits = Fits(search=record)
    for i, seed in enumerate(seeds):
        model, has_seed = make_model(name, vectors, max_minutes, seed, params)
        if start is not None:
            model.start_from(start[i])
        begin = time.perf_counter()
        fit_for_test(model, split, dataset.item_text)
        fits.models.append(model)
        fits.fit_s.append(round(time.perf_counter() - begin, 1))
        fits.valid.append(validation_ndcg(name, model, split, dataset, vectors, max_minutes, params))
        if not has_seed:
            break  # deterministic: one fit is every seed's fit
        fits.seeds.append(seed)
    return fits


def evaluate(fits: Fits, split: Split, groups: dict[str, Histories]) -> dict[str, list[EvalResult]]:
    """Each fit ranked for each group of test targets, from the test histories (train + validation)."""
    histories = split.histories("test")
    return {g: [full_ranking_eval(m, histories, t, ks=KS) for m in fits.models] for g, t in groups.items()}


def training_of(model: Recommender) -> dict:
    return model.training if model.learns_from_validation else {}


def row(fits: Fits, results: dict[str, list[EvalResult]]) -> dict:
    """One model's row: each group's metrics as mean ± std over the fits (each seed's value kept), the
    validation NDCG@10 it is chosen by, its seeds, each fit's seconds and training record."""
    valid = [v for v in fits.valid if v is not None]
    return {**{group: summary_over_seeds(rs, METRICS) for group, rs in results.items()},
            "valid_ndcg@10": mean_std(valid) if valid else None, "seeds": fits.seeds,
            "deterministic": not fits.seeds, "fit_s": fits.fit_s,
            "training": [training_of(m) for m in fits.models], **({"search": fits.search} if fits.search else {})}


def declared_test(rows: dict, results: dict[str, list[EvalResult]], text_side: tuple[str, ...],
                  other_side: tuple[str, ...]) -> dict | None:
    """The pre-declared test: the best of `text_side` against the best of `other_side`, each chosen by
    validation NDCG@10 (mean over seeds); None where a side has no model with a validation figure."""
    def best(names: tuple[str, ...]) -> str | None:
        known = [n for n in names if n in rows and rows[n]["valid_ndcg@10"] is not None]
        return max(known, key=lambda n: rows[n]["valid_ndcg@10"]["mean"], default=None)

    a, b = best(text_side), best(other_side)
    if a is None or b is None:
        return None
    return {"a": a, "b": b, "chosen_by": "validation NDCG@10", **paired(results[a], results[b])}


# --------------------------------------------------------------------------------------------------------
# the parts
# --------------------------------------------------------------------------------------------------------

def part_encode(dataset: Dataset) -> dict:
    """Encoding the catalogue: with an empty cache, then from the cache; the encoder's top layer tuned on the
    leave-one-out training sequences (textseq's default tuning), and encoding with it against the base
    encoder, neither cached, alternated three times (medians)."""
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
    uncached, tuning = TextEncoderConfig(cache_dir="-", progress=False), TuningConfig()
    pairs = consecutive_pairs(split_dataset(dataset, "loo").train_data().sequences)
    start = time.perf_counter()
    tuned = tune_encoder(list(dataset.item_text), pairs, uncached, tuning)
    tune_s = time.perf_counter() - start
    base_s, tuned_s = [], []
    for _ in range(3):
        for runs, encode in ((base_s, lambda: encode_texts(dataset.item_text, uncached)),
                             (tuned_s, lambda: encode_tuned(list(dataset.item_text), tuned, uncached))):
            start = time.perf_counter()
            encode()
            runs.append(time.perf_counter() - start)
    ratio = statistics.median(tuned_s) / statistics.median(base_s)
    print(f"encoder tuning ({len(pairs):,} pairs, {tuning.layers} layer, {tuning.epochs:g} epoch): {tune_s:.0f} s; "
          f"encoding with it {statistics.median(tuned_s):.1f} s against {statistics.median(base_s):.1f} s "
          f"({ratio:.2f}x)", flush=True)
    return {"texts": n_texts, "dim": int(first.shape[1]), "first_s": round(first_s, 2), "cached_s": round(cached_s, 3),
            "threads": torch.get_num_threads(),
            "tuning": {"config": asdict(tuning), "pairs": len(pairs), "tune_s": round(tune_s, 1),
                       "base_encode_s": [round(x, 2) for x in base_s], "tuned_encode_s": [round(x, 2) for x in tuned_s],
                       "tuned_to_base": round(ratio, 3)}}


def part_loo(dataset: Dataset, vectors: np.ndarray, models: list[str], max_minutes: float,
             seeds: tuple[int, ...]) -> tuple[dict, dict | None, dict[str, Fits]]:
    """The leave-one-out rows, the pre-declared test, and the fits (the transfer part reuses textseq's)."""
    split = split_dataset(dataset, "loo")
    groups = {"metrics": split.targets("test")}
    rows, results, fits = {}, {}, {}
    for name in models:
        fits[name] = fit_seeds(name, split, dataset, vectors, max_minutes, seeds)
        results[name] = evaluate(fits[name], split, groups)["metrics"]
        rows[name] = row(fits[name], {"metrics": results[name]})
        m = rows[name]["metrics"]
        print(f"loo {name}: ndcg@10 {fmt_mean_std(m['ndcg@10'])} hr@10 {fmt_mean_std(m['hr@10'])} "
              f"valid {fmt_mean_std(rows[name]['valid_ndcg@10'] or float('nan'))} fit {fits[name].fit_s} s", flush=True)
    others = tuple(n for n in models if n not in TEXT_MODELS)
    test = declared_test(rows, results, TEXT_MODELS, others)
    if test:
        print(f"loo: {test['a']} against {test['b']}: {describe_test(test)}", flush=True)
    return rows, test, fits


COLD_QUANTILE = 0.8  # items first seen at or after this quantile of the interaction times are cold


def has_clock(dataset: Dataset) -> bool:
    """Whether the times are a clock rather than positions in each sequence."""
    return times_are_a_clock(dataset.interactions)


def cold_split(dataset: Dataset) -> Split:
    """Time cut-off where the data has a clock; else 20% of the items at random."""
    options = {"cutoff_quantile": COLD_QUANTILE} if has_clock(dataset) else {"item_frac": 0.2}
    return cold_items(dataset.interactions, dataset.n_users, dataset.n_items, **options)


def part_cold(dataset: Dataset, vectors: np.ndarray, models: list[str], max_minutes: float,
              seeds: tuple[int, ...]) -> dict:
    split = cold_split(dataset)
    targets = split.targets("test")
    warm = np.setdiff1d(np.arange(1, dataset.n_items + 1), split.cold)
    groups = {"cold": targets.only(split.cold), "warm": targets.only(warm)}
    out = {"notes": list(split.notes), "n_cold_items": len(split.cold), "seeds": list(seeds),
           "targets": {g: int((t.lengths() > 0).sum()) for g, t in groups.items()}, "results": {}}
    fits, results = {}, {}
    for name in models:
        fits[name] = fit_seeds(name, split, dataset, vectors, max_minutes, seeds)
    for name, f in fits.items():
        results[name] = evaluate(f, split, groups)
        out["results"][name] = row(f, results[name])
        r = out["results"][name]
        print(f"cold {name}: cold ndcg@10 {fmt_mean_std(r['cold']['ndcg@10'])}, warm ndcg@10 "
              f"{fmt_mean_std(r['warm']['ndcg@10'])}", flush=True)
    test = declared_test(out["results"], {n: r["cold"] for n, r in results.items()}, TEXT_MODELS, ("tfidf",))
    if test:
        out["comparison"] = test
        print(f"cold: {test['a']} against {test['b']} on cold targets: {describe_test(test)}", flush=True)
    return out


def valid_curve(model: Recommender) -> list[float]:
    return [round(r["valid_ndcg@10"], 5) for r in model.history if "valid_ndcg@10" in r]


def epochs_to(curve: list[float], best: float | None) -> int | None:
    """The first epoch whose validation reaches `best`; None where none does."""
    return None if best is None else next((i + 1 for i, v in enumerate(curve) if v >= best), None)


def category_of(text: str) -> str | None:
    """The category path of a `scientific` item text: what follows "Industrial & Scientific " up to the next
    sentence end ("Lab & Scientific Products Lab Supplies & Consumables ..."); None where the text has none."""
    match = re.search(r"(?:^|\. )Industrial & Scientific (.+?)\. ", text)
    return match.group(1) if match else None


# Two domains of `scientific` by top category (the start of the category path): laboratory, measurement,
# health and cleaning supplies ("lab & care") against everything else (electrical, additive manufacturing,
# tapes and adhesives, hydraulics, fasteners, tools, raw materials...: "industrial").
LAB_AND_CARE = ("Lab & Scientific", "Test, Measure", "Janitorial", "Professional Medical", "Professional Dental",
                "Occupational Health", "Food Service", "Science Education")


def category_domains(dataset: Dataset, vectors: np.ndarray) -> dict:
    """`dataset` cut in two by item category (items without a category path are in neither): each domain
    holds its items and each user's sub-sequence of them (order kept), users with at least 3 of its items
    (a leave-one-out split needs 3), item ids mapped anew; with each domain's rows of `vectors`."""
    categories = [None] + [category_of(t) for t in dataset.item_text[1:]]
    lab = np.array([c is not None and c.startswith(LAB_AND_CARE) for c in categories])
    industrial = np.array([c is not None and not c.startswith(LAB_AND_CARE) for c in categories])
    out = {}
    for name, keep in (("industrial", industrial), ("lab & care", lab)):
        part = dataset.select_items(keep, f"{dataset.name} {name}", CleanConfig(min_user_interactions=3))
        rows = dataset.items.encode(part.items.labels)
        out[name] = (part, np.concatenate([vectors[:1], vectors[rows]]))
    return out


DOMAIN_RULES = {"scientific": category_domains}  # dataset -> how it is cut in two domains


def part_domains(dataset: Dataset, vectors: np.ndarray, max_minutes: float, seeds: tuple[int, ...]) -> list[dict]:
    """Transfer between two category domains of the same catalogue, each way: pretrained on one domain,
    zero-shot and fine-tuned on the other."""
    domains = DOMAIN_RULES[dataset.name](dataset, vectors)
    rule = ("items by the start of their category path (the text after 'Industrial & Scientific '): "
            f"{', '.join(LAB_AND_CARE)} make 'lab & care', every other category 'industrial', items without a "
            "category path neither; each user's sub-sequence of a domain's items, users with at least 3")
    sizes = {name: {"users": d.n_users, "items": d.n_items, "interactions": d.interactions.height}
             for name, (d, _) in domains.items()}
    out = []
    for source_name, target_name in itertools.permutations(domains, 2):
        (source, source_vectors), (target, target_vectors) = domains[source_name], domains[target_name]
        run = part_transfer(target, target_vectors, source, source_vectors, max_minutes, seeds)
        out.append({**run, "pretrain": source_name, "target": target_name, "rule": rule, "sizes": sizes})
    return out


def part_transfer(dataset: Dataset, vectors: np.ndarray, source: Dataset, source_vectors: np.ndarray,
                  max_minutes: float, seeds: tuple[int, ...], scratch: Fits | None = None) -> dict:
    """Per seed: textseq (text) pretrained on `source`, zero-shot and fine-tuned on `dataset`, against from
    scratch (`scratch`: the leave-one-out part's textseq-text fits of the same seeds, where it ran)."""
    pretrain = source.name
    source_split = split_dataset(source, "loo")
    pretrained = fit_seeds("textseq-text", source_split, source, source_vectors, max_minutes, seeds)
    split = split_dataset(dataset, "loo")
    if scratch is None or scratch.seeds != list(seeds):
        scratch = fit_seeds("textseq-text", split, dataset, vectors, max_minutes, seeds)
    zero = [TextSeq.zero_shot(p, vectors, dataset.n_users) for p in pretrained.models]
    fits = {"zero_shot": Fits(zero, pretrained.seeds, [0.0] * len(zero), [None] * len(zero)),
            "pop": fit_seeds("pop", split, dataset, None, max_minutes, seeds), "scratch": scratch,
            "fine-tuned": fit_seeds("textseq-text", split, dataset, vectors, max_minutes, seeds, pretrained.models)}
    results = {label: evaluate(f, split, {"test": split.targets("test")})["test"] for label, f in fits.items()}
    on_source = evaluate(pretrained, source_split, {"test": source_split.targets("test")})["test"]
    out = {"pretrain": pretrain, "seeds": list(seeds), "pretrain_fit_s": pretrained.fit_s,
           "pretrain_metrics": summary_over_seeds(on_source, METRICS),
           **{label: summary_over_seeds(results[label], METRICS) for label in ("zero_shot", "pop")}}
    bests = [max(valid_curve(m), default=None) for m in scratch.models]
    for label in ("scratch", "fine-tuned"):
        curves = [valid_curve(m) for m in fits[label].models]
        out[label] = {**row(fits[label], {"metrics": results[label]}), "valid_curve": curves,
                      "epochs_to_scratch_best": [epochs_to(c, b) for c, b in zip(curves, bests)]}
    out["comparison"] = {"a": "fine-tuned", "b": "scratch", **paired(results["fine-tuned"], results["scratch"])}
    print(f"transfer from {pretrain}: zero-shot ndcg@10 {fmt_mean_std(out['zero_shot']['ndcg@10'])} (pop "
          f"{fmt_mean_std(out['pop']['ndcg@10'])}); epochs to the from-scratch best: scratch "
          f"{out['scratch']['epochs_to_scratch_best']}, fine-tuned {out['fine-tuned']['epochs_to_scratch_best']}; "
          f"fine-tuned against scratch: {describe_test(out['comparison'])}", flush=True)
    return out


# --------------------------------------------------------------------------------------------------------
# reports: the JSON of this protocol (mean ± std dicts, lists over seeds) and of the single runs before it
# --------------------------------------------------------------------------------------------------------

def mean(value: dict | float) -> float:
    return value["mean"] if isinstance(value, dict) else value


def per_seed(value: list | float | int | None) -> list:
    """A value recorded once per seed (a list) or once (an older single run)."""
    return value if isinstance(value, list) else [value]


def curves_of(run: dict) -> list[list[float]]:
    curve = run["valid_curve"]
    return curve if curve and isinstance(curve[0], list) else [curve]


def transfer_runs(doc: dict) -> list[tuple[str, dict]]:
    """(PNG name without suffix, run) of each transfer in `doc`: from another dataset, then between two
    domains of this one, each way."""
    runs = [(f"{doc['dataset']}_transfer", doc["transfer"])] if "transfer" in doc else []
    for t in doc.get("domains", []):
        slug = "_to_".join(re.sub(r"[^a-z]+", "-", t[k].lower()).strip("-") for k in ("pretrain", "target"))
        runs.append((f"{doc['dataset']}_domains_{slug}", t))
    return runs


def plot_transfer(doc: dict, path: Path, t: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = t.get("target", doc["dataset"])
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for label, style, color in (("scratch", "o-", "C0"), ("fine-tuned", "s-", "C1")):
        curves = curves_of(t[label])
        name = f"textseq (text), {label}" + (f", {len(curves)} seeds" if len(curves) > 1 else "")
        for i, curve in enumerate(curves):
            ax.plot(range(1, len(curve) + 1), curve, style, ms=3, color=color, alpha=1.0 if len(curves) == 1 else 0.6,
                    label=name if i == 0 else None)
    ax.axhline(mean(t["zero_shot"]["ndcg@10"]), color="grey", ls="--", lw=1,
               label=f"zero-shot from {t['pretrain']} (test)")
    ax.axhline(mean(t["pop"]["ndcg@10"]), color="grey", ls=":", lw=1, label="popularity (test)")
    ax.set(xlabel="epoch", ylabel="validation NDCG@10",
           title=f"{target}: pretrained on {t['pretrain']} vs scratch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp.name)
    Path(tmp.name).replace(path)
    plt.close(fig)


def markdown(docs: list[dict], images: str = "results/text_cold_start/") -> str:
    """TEXT.md: one section per dataset benchmarked; `images`: the PNGs' folder, relative to TEXT.md."""
    lines = ["# Item text: text-aware sequential models, cold items, transfer", "",
             "Generated by `benchmarks/text_cold_start.py`; do not edit by hand. Full ranking over the whole",
             "catalogue, history items masked, default configs. Text encoder: all-MiniLM-L6-v2 (frozen, 384-d).", "",
             "Protocol (RESULTS.md): every model is fitted for the test on train + validation: the neural models",
             "stop early on the validation targets, then refit from scratch on both for the chosen epochs; pop,",
             "itemknn and tfidf fit on both at once. Cells are mean ± sample std over the seeds; pop, itemknn and",
             "tfidf have no seed (one fit, std 0). `valid` is the validation NDCG@10 of the configuration trained on",
             "train only (the neural models' early-stopping figure): the only figure the compared models are",
             f"chosen by. Each table has one pre-declared test: {TEST}. `fit s` is the median over the seeds.", ""]
    for doc in docs:
        lines += dataset_markdown(doc, images)
    return "\n".join(lines)


def cell(value: dict | float | None) -> str:
    return "" if value is None else fmt_mean_std(value)


def fit_cell(fit_s: list | float) -> str:
    return f"{statistics.median(per_seed(fit_s)):.0f}"


def older(rows: list[dict]) -> list[str]:
    """A line where a table comes from a single run before the common protocol."""
    if all("seeds" in r for r in rows):
        return []
    return ["*A single run from before the common protocol: one seed; pop, itemknn and tfidf fitted on train "
            "only. Rerun the benchmark for the protocol's figures.*", ""]


def test_line(what: str, test: dict | None) -> list[str]:
    return [] if not test else [f"Pre-declared test, {what}: {describe_test(test)}.", ""]


def loo_markdown(doc: dict) -> list[str]:
    lines = ["### Leave-one-out", "", "| model | valid ndcg@10 | ndcg@10 | hr@10 | ndcg@20 | hr@20 | fit s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in doc["loo"].items():
        m = r["metrics"]
        lines.append(f"| {name} | {cell(r.get('valid_ndcg@10'))} | {cell(m['ndcg@10'])} | {cell(m['hr@10'])} | "
                     f"{cell(m['ndcg@20'])} | {cell(m['hr@20'])} | {fit_cell(r['fit_s'])} |")
    for model, m, source in PUBLISHED.get(doc["dataset"], []):
        lines.append(f"| *{model}* ({source}) | | {m['ndcg@10']:.4f} | {m['hr@10']:.4f} | | | |")
    lines += ["", PUBLISHED_NOTE[doc["dataset"]], ""] if doc["dataset"] in PUBLISHED_NOTE else [""]
    test = doc.get("loo_comparison")
    what = test and (f"{test['a']} (the best sentence-encoder model by validation) against {test['b']} (the best ID-only or "
                     "linear model by validation), test targets")
    return [*lines, *test_line(what, test), *older(list(doc["loo"].values()))]


def cold_markdown(doc: dict) -> list[str]:
    c = doc["cold"]
    lines = ["### Cold items", "", "; ".join(c["notes"]) + f". Test targets: {c['targets']['cold']:,} cold, "
             f"{c['targets']['warm']:,} warm. The validation targets are all warm (no cold item is in train or "
             "valid)" + ("; the benchmark's hybrid's fit is its two parts' fits" if any("(" in n for n in c["results"])
                         else "") + ".", "",
             "| model | valid ndcg@10 | cold ndcg@10 | cold hr@10 | warm ndcg@10 | warm hr@10 | fit s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in c["results"].items():
        lines.append(f"| {name} | {cell(r.get('valid_ndcg@10'))} | {cell(r['cold']['ndcg@10'])} | "
                     f"{cell(r['cold']['hr@10'])} | {cell(r['warm']['ndcg@10'])} | {cell(r['warm']['hr@10'])} | "
                     f"{fit_cell(r['fit_s'])} |")
    test = c.get("comparison")
    what = test and f"{test['a']} (the best sentence-encoder model by validation) against {test['b']}, cold targets"
    return [*lines, "", *test_line(what, test), *older([c])]


def transfer_markdown(doc: dict, images: str, stem: str, t: dict) -> list[str]:
    """The table of one transfer run `t`: from another dataset, or between two domains of this one (with
    the rule that cut them); `stem`: its PNG's name."""
    target = t.get("target", doc["dataset"])
    title = f"### Transfer from {t['pretrain']} to {target}" if "rule" in t else "### Transfer"
    rule = [f"Domains of `{doc['dataset']}`: {t['rule']}. " + "; ".join(
        f"{name}: {v['users']:,} users, {v['items']:,} items, {v['interactions']:,} interactions"
        for name, v in t["sizes"].items()) + ".", ""] if "rule" in t else []
    seeds = (f" over seeds {', '.join(map(str, t['seeds']))}; each seed's fine-tuned model starts from the same "
             "seed's pretrained one") if "seeds" in t else ""
    lines = [title, "", *rule, f"`textseq` (text mode) pretrained on `{t['pretrain']}` (its own test NDCG@10 "
             f"{cell(t['pretrain_metrics']['ndcg@10'])}), then used on `{target}`{seeds}.", "",
             "| run | test ndcg@10 | test hr@10 | epochs to the from-scratch best validation (each seed) | fit s |",
             "|---|---:|---:|---:|---:|",
             f"| popularity | {cell(t['pop']['ndcg@10'])} | {cell(t['pop']['hr@10'])} | | |",
             f"| zero-shot | {cell(t['zero_shot']['ndcg@10'])} | {cell(t['zero_shot']['hr@10'])} | 0 (no training) | 0 |"]
    for label in ("scratch", "fine-tuned"):
        r = t[label]
        epochs = ", ".join(str(e or "not reached") for e in per_seed(r["epochs_to_scratch_best"]))
        lines.append(f"| {label} | {cell(r['metrics']['ndcg@10'])} | {cell(r['metrics']['hr@10'])} | {epochs} | "
                     f"{fit_cell(r['fit_s'])} |")
    lines += ["", *test_line("fine-tuned against from scratch, test targets", t.get("comparison")), *older([t])]
    return [*lines, f"![validation curves]({images}{stem}.png)", ""]


def provenance_text(doc: dict) -> str:
    """Which command and code measured which part: one run, or the parts of several runs into one result."""
    runs = doc.get("runs") or {"all parts": {"command": doc["command"], "code": doc["code"]}}
    by_run: dict[tuple[str, str], list[str]] = {}
    for part, r in runs.items():
        by_run.setdefault((r["command"], r["code"]), []).append(part)
    if len(by_run) == 1:
        (command, code), = by_run
        return f"Command: `{command}`; code {code}"
    return "; ".join(f"{', '.join(parts)}: `{command}` at {code}" for (command, code), parts in by_run.items())


def dataset_markdown(doc: dict, images: str) -> list[str]:
    lines = [f"## `{doc['dataset']}`", "", f"{provenance_text(doc)}.",
             f"{doc['n_users']:,} users, {doc['n_items']:,} items, "
             f"{doc['n_interactions']:,} interactions. {doc['machine']['cpus']} CPUs, "
             f"torch {doc['machine']['torch']}.", ""]
    if "encode" in doc:
        e = doc["encode"]
        lines += ["### Encoding the catalogue", "", f"{e['texts']:,} item texts -> {e['dim']}-d vectors: "
                  f"{e['first_s']:.1f} s with an empty cache (model loading included), {e['cached_s']:.2f} s from "
                  f"the cache; {e['threads']} torch threads.", ""]
        if "tuning" in e:
            t = e["tuning"]
            lines += [f"Encoder tuning (`textseq`'s `tune_encoder`, {t['config']['layers']} top layer, "
                      f"{t['config']['epochs']:g} epoch over {t['pairs']:,} (item, next item) pairs of the training "
                      f"sequences): {t['tune_s']:.0f} s. Encoding the catalogue with the tuned encoder: "
                      f"{statistics.median(t['tuned_encode_s']):.1f} s against "
                      f"{statistics.median(t['base_encode_s']):.1f} s "
                      f"with the base encoder (medians of 3, alternated, no cache): {t['tuned_to_base']:.2f}x.", ""]
    if "loo" in doc:
        lines += loo_markdown(doc)
    if "cold" in doc:
        lines += cold_markdown(doc)
    for stem, t in transfer_runs(doc):
        lines += transfer_markdown(doc, images, stem, t)
    return lines


def write_reports(out: Path) -> None:
    """The PNGs and TEXT.md from every JSON in `out`; in the results folder, benchmarks/TEXT.md and
    RESULTS.md, elsewhere (a smoke run) TEXT.md in `out` and nothing else."""
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    for doc in docs:
        for stem, t in transfer_runs(doc):
            plot_transfer(doc, out / f"{stem}.png", t)
    if out.resolve() == OUT.resolve():
        atomic_write_text(HERE / "TEXT.md", markdown(docs))
        rewrite_results()
    else:
        atomic_write_text(out / "TEXT.md", markdown(docs, images=""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--dataset", default="scientific")
    parser.add_argument("--pretrain", default="ml-100k", help="dataset textseq is pretrained on for the transfer part")
    parser.add_argument("--parts", default="encode,loo,cold,transfer,domains")
    parser.add_argument("--loo-models", default="pop,itemknn,ease,tfidf,sasrec,textseq-id+text,textseq-text,hybrid")
    parser.add_argument("--cold-models", default="tfidf,sasrec,textseq-id+text,textseq-text,hybrid,hybrid-text")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="training budget per model (0 = none)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)),
                        help="seeds of the seeded models, comma-separated (a model without a seed is fitted once)")
    parser.add_argument("--out", default=str(OUT), help="folder of the JSON and PNG; another folder than the default "
                        "gets its own TEXT.md and leaves benchmarks/TEXT.md and RESULTS.md alone (smoke runs)")
    parser.add_argument("--report-only", action="store_true", help="rewrite TEXT.md and the PNGs from the saved JSON")
    args = parser.parse_args()
    out = Path(args.out)
    if args.report_only:
        write_reports(out)
        return 0
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
    run(args, dataset, data_dir, out)
    return 0


def run(args: argparse.Namespace, dataset: Dataset, data_dir: Path, out: Path) -> None:
    """The parts asked for, each written into the dataset's JSON (other parts kept), then the reports."""
    parts, seeds = set(args.parts.split(",")), tuple(int(s) for s in args.seeds.split(","))
    path = out / f"{args.dataset}.json"
    provenance = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                  "code": code_version("benchmarks/text_cold_start.py")}
    doc = {"dataset": args.dataset, "n_users": dataset.n_users, "n_items": dataset.n_items,
           "n_interactions": dataset.interactions.height, "machine": machine(), "test": TEST, **provenance}
    # "runs": part -> the command and code that measured it (parts may come from several invocations)
    out.mkdir(parents=True, exist_ok=True)

    def save(part: str, **values: object) -> None:
        """Write `part` after it is measured, so a stopped run keeps what it finished. The file is read again
        first: another invocation measuring other parts beside this one may have saved its own since."""
        saved = json.loads(path.read_text()) if path.exists() else {}
        saved.update(doc, **values)
        saved.setdefault("runs", {})[part] = provenance
        atomic_write_text(path, json.dumps(saved, indent=2))

    if "encode" in parts:
        save("encode", encode=part_encode(dataset))
    vectors = encode_texts(dataset.item_text, TextEncoderConfig(progress=False))
    fits: dict[str, Fits] = {}
    if "loo" in parts:
        loo, comparison, fits = part_loo(dataset, vectors, args.loo_models.split(","), args.max_minutes, seeds)
        save("loo", loo=loo, loo_comparison=comparison)
    if "cold" in parts:
        save("cold", cold=part_cold(dataset, vectors, args.cold_models.split(","), args.max_minutes, seeds))
    if "transfer" in parts:
        source = load_dataset(args.pretrain, data_dir)
        source_vectors = encode_texts(source.item_text, TextEncoderConfig(progress=False))
        save("transfer", transfer=part_transfer(dataset, vectors, source, source_vectors, args.max_minutes, seeds,
                                                fits.get("textseq-text")))
    if "domains" in parts:
        if args.dataset not in DOMAIN_RULES:
            raise SystemExit(f"--parts domains: no category rule for {args.dataset!r} "
                             f"(known: {', '.join(DOMAIN_RULES)})")
        save("domains", domains=part_domains(dataset, vectors, args.max_minutes, seeds))
    write_reports(out)


if __name__ == "__main__":
    sys.exit(main())
