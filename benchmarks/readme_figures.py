"""The benchmark figures in README.md, regenerated from the saved results.

Every table and figure paragraph that README.md quotes from a benchmark sits between two markers,
`<!-- figures:NAME -->` and `<!-- /figures:NAME -->`. NAME picks a renderer below, which reads its
result file(s) under `benchmarks/results/` and writes the block, ending with a line that names the
files, the commands and the commits. A result may hold a figure as a number or, over several seeds, as
`{"mean": ..., "std": ..., "seeds": [...]}`: the renderers then show "mean ± std".

`--check` changes nothing. It lists the blocks that differ from what the results give, and every
figure the README quotes outside the blocks (and outside code) that no file under `benchmarks/results/`
and no generated `benchmarks/*.md` report holds at the README's rounding; it exits 1 if there is any.

    python benchmarks/readme_figures.py            # rewrite the blocks (`make readme`)
    python benchmarks/readme_figures.py --check    # what tests/test_readme_figures.py runs
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import math
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Any, NamedTuple

from omnirec.utils import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"

BLOCK = re.compile(r"<!-- figures:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /figures:(?P=name) -->", re.S)

Load = Callable[[str], dict]  # a result file's path under benchmarks/results/ -> its document


def loader(root: Path) -> Load:
    """Reads result documents under `root`, each once."""

    @functools.cache
    def load(name: str) -> dict:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such result file; run its benchmark or restore the file")
        return json.loads(path.read_text(encoding="utf-8"))

    return load


# --- values: a number, or a summary over seeds ---------------------------------------------------


def mean_of(value: Any) -> float:
    """The number itself, or the mean of a summary over seeds.

    >>> mean_of(0.05), mean_of({"mean": 0.05, "std": 0.001, "seeds": [0, 1, 2]})
    (0.05, 0.05)
    """
    return float(value["mean"]) if isinstance(value, dict) else float(value)


def half_up(number: float, digits: int) -> Decimal:
    """`number` as written in its file, rounded half up to `digits` decimals (0.147 -> 0.15, 29.65 -> 29.7,
    where float formatting gives 29.6): the one rounding of the blocks and of `--check`.

    >>> str(half_up(29.65, 1)), str(half_up(0.147, 2)), str(half_up(368.2, 0))
    ('29.7', '0.15', '368')
    """
    with localcontext(prec=400):  # wide enough for any finite float a result holds
        return Decimal(repr(float(number))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


def fmt(value: Any, digits: int) -> str:
    """`value` with `digits` decimals (thousands separated); "mean ± std" for a summary over seeds.

    A summary of one seed is its value (a spread needs two).

    >>> fmt(0.05717, 4), fmt({"mean": 0.05717, "std": 0.00081, "seeds": [0, 1, 2]}, 4), fmt(3808.2, 0)
    ('0.0572', '0.0572 ± 0.0008', '3,808')
    >>> fmt({"mean": 0.0335, "std": 0.0, "values": [0.0335]}, 4)
    '0.0335'
    """
    text = f"{half_up(mean_of(value), digits):,}"
    if isinstance(value, dict) and "std" in value and seed_count(value) != 1:
        text += f" ± {half_up(value['std'], digits):,}"
    return text


def pct(fraction: float) -> str:
    """A fraction as a whole percentage, without its sign.

    >>> pct(0.0819), pct(-0.0421)
    ('8%', '4%')
    """
    return f"{half_up(abs(fraction) * 100, 0)}%"


def p_text(p: float) -> str:
    """A p-value as the README states it: two decimals down to 0.01, else a power-of-ten bound.

    >>> p_text(0.2717), p_text(0.004), p_text(7.57e-06)
    ('p = 0.27', 'p < 0.01', 'p < 1e-5')
    """
    if p >= 0.01:
        return f"p = {p:.2f}"
    if p >= 0.001:
        return "p < 0.01"
    p = max(p, sys.float_info.min)  # a test's p that underflowed to 0
    power = math.floor(-math.log10(p))
    return f"p < 1e-{power if p < 10.0**-power else power - 1}"


def seed_count(doc: Any) -> int:
    """The most seeds any summary in `doc` is over (0 when it holds single runs only)."""
    if isinstance(doc, dict):
        # a list of seeds, or their count, or the values over the seeds (`protocol.mean_std`)
        seeds = doc.get("seeds", doc.get("values")) if {"mean", "std"} <= doc.keys() else None
        own = len(seeds) if isinstance(seeds, list) else int(seeds or 0)
        return max([own, *(seed_count(v) for v in doc.values())])
    if isinstance(doc, list):
        return max((seed_count(v) for v in doc), default=0)
    return 0


def cpus(doc: dict) -> int:
    """CPU count of the machine a result was measured on (`machine` is a dict or a line of text)."""
    machine = doc["machine"]
    return int(machine["cpus"] if isinstance(machine, dict) else re.match(r"(\d+) CPUs", machine).group(1))


# --- markdown pieces ------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A markdown table; `align` has one letter a column: l(eft) or r(ight)."""
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["|" + "|".join(f" {c} " if c else " " for c in cells) + "|" for cells in [header, *rows]]
    return [lines[0], rule, *lines[1:]]


def wrap(paragraph: str) -> list[str]:
    """A paragraph as README lines (hyphenated words and code spans kept whole where they fit)."""
    return textwrap.wrap(paragraph, 105, break_on_hyphens=False, break_long_words=False)


def best_cells(values: dict[str, Any], columns: Iterable[str], digits: int) -> list[str]:
    """One cell a column (blank where `values` has none), the largest mean in bold."""
    top = max(mean_of(v) for v in values.values())
    return ["" if c not in values else f"**{fmt(values[c], digits)}**" if mean_of(values[c]) == top
            else fmt(values[c], digits) for c in columns]


def command_of(doc: dict) -> str:
    """The command a result records, as typed from the repository root."""
    command = doc["command"]
    return command if command.startswith("python") else f"python benchmarks/{command}"


def source(load: Load, *names: str, runs: str = "", over: str = "") -> str:
    """The line ending a block: its result files, the commands and commits that wrote them, and what the
    spreads are over (`over`; default: the most seeds any summary has)."""
    docs = [load(n) for n in names]
    files = ", ".join(f"`benchmarks/results/{n}`" for n in names)
    runs = runs or "; ".join(dict.fromkeys(f"`{command_of(r)}` at {r['code']}" for d in docs
                                           for r in (d.get("runs") or {"": d}).values()))
    seeds = max(seed_count(d) for d in docs)
    over = f"; {over}" if over else f"; mean ± std over {seeds} seeds" if seeds else ""
    return f"<sub>Generated by `make readme` from {files}: {runs}{over}.</sub>"


# --- the blocks -----------------------------------------------------------------------------------

LABELS = {"itemknn": "item-kNN", "als": "ALS", "ease": "EASE", "twotower": "two-tower", "neumf": "NeuMF",
          "lightgcn": "LightGCN"}


def verdict(comparison: dict) -> str:
    """deep_cf.py's verdict on the best deep against the best simple model, in words: the one pre-declared
    test (`p`, `verdict`); an older result without it held a t-test and a Wilcoxon test, either deciding."""
    deep, simple = LABELS[comparison["deep"]], LABELS[comparison["simple"]]
    if "verdict" in comparison:
        p, outcome = comparison["p"], comparison["verdict"]
    else:
        t, w = comparison["t_test_p"], comparison["wilcoxon_p"]
        p = t if min(t, w) >= 0.05 else max(t, w)
        outcome = "not significantly different" if min(t, w) >= 0.05 else ("better" if comparison["mean_diff"] > 0 else "worse")
    if outcome == "not significantly different":
        return f"{deep} and {simple} not significantly different ({p_text(p)})"
    if outcome == "better":
        return f"{deep} better ({p_text(p)})"
    return f"{simple} better than the best deep ({deep}; {p_text(p)})"


def deep_cf(load: Load) -> list[str]:
    """Test NDCG@10 of the tuned simple and deep models, cold users, the slowest fit."""
    doc = load("deep_cf.json")
    names = list(dict.fromkeys(n for ds in doc["datasets"] for n in ds["models"]))  # a model run on any dataset
    rows = [[f"`{ds['dataset']}`",
             *best_cells({n: m["test"]["ndcg@10"] for n, m in ds["models"].items()}, names, 4),
             verdict(ds["comparison"])] for ds in doc["datasets"]]
    header = ["", *(LABELS[n] for n in names), "verdict"]
    # the fit times quoted are of the whole run, whose machine and threads the document records (a dataset
    # merged from another invocation carries only its own command and code)
    whole = [ds for ds in doc["datasets"] if "command" not in ds] or doc["datasets"]
    largest = max(whole, key=lambda ds: ds["interactions"])["dataset"]  # beauty, in a full run
    prose = f"{deep_cf_cold(doc['cold_users'])} {slowest_fit(doc, largest)}"
    runs = [f"`{command_of(doc)}` at {doc['code']}"] if len(whole) < len(doc["datasets"]) or "command" not in whole[0] else []
    runs += [f"{ds['dataset']}: `{ds['command']}` at {ds['code']}" for ds in doc["datasets"] if "command" in ds]
    if doc["cold_users"].get("command"):
        runs.append(f"cold users: `{doc['cold_users']['command']}` at {doc['cold_users']['code']}")
    return [*table(header, rows, "l" + "r" * len(names) + "l"), "", *wrap(prose), "",
            source(load, "deep_cf.json", runs="; ".join(runs))]


def deep_cf_cold(cold: dict) -> str:
    """The cold-users sentence: two-tower from attributes against popularity."""
    models, test = cold["models"], cold["twotower_vs_pop"]
    p = test.get("p", test.get("t_test_p"))
    caveat = ", so suggestive only" if p >= test.get("alpha", 0.05) else ""
    return (f"On `{cold.get('dataset', 'ml-100k')}` users held out of training, two-tower lists from attributes "
            f"alone reach NDCG@10 {fmt(models['twotower']['cold_ndcg@10'], 3)} against "
            f"{fmt(models['pop']['cold_ndcg@10'], 3)} for popularity ({cold['cold_users']} users; "
            f"{p_text(p)}{caveat}); without the attributes the same tower gets "
            f"{fmt(models['twotower (no attributes)']['cold_ndcg@10'], 3)}.")


def slowest_fit(doc: dict, dataset: str) -> str:
    """The sentence bounding every final fit's time on `dataset`."""
    models = next(ds for ds in doc["datasets"] if ds["dataset"] == dataset)["models"]
    def longest(fit_s: Any) -> float:  # one fit's seconds, or a list of each seed's
        return max(fit_s) if isinstance(fit_s, list) else mean_of(fit_s)

    name = max(models, key=lambda n: longest(models[n]["fit_s"]))
    seconds = longest(models[name]["fit_s"])
    return (f"Every final fit on `{dataset}` takes under {math.floor(seconds / 60) + 1} minutes on "
            f"{cpus(doc)} CPU cores ({LABELS[name]} the longest, {fmt(seconds, 0)} s).")


SEQUENTIAL = ("ml-100k", "beauty", "beauty-bert4rec")


def stopped_by(training: dict | list[dict], cap: int | None = None) -> str:
    """What ended training: one run's record, or each seed's (their distinct reasons); `cap`, the epochs
    a benchmark allowed where it set fewer than the model's own bound, names an epoch limit as that cap.

    >>> stopped_by({"stopped": "patience"}), stopped_by([{"stopped": "patience"}, {"stopped": "time budget"}])
    ('patience', 'patience, time budget')
    >>> stopped_by({"stopped": "epochs"}, cap=10)
    'epoch cap 10'
    """
    runs = training if isinstance(training, list) else [training]
    reasons = (str(r.get("stopped", "")) for r in runs)
    return ", ".join(dict.fromkeys(f"epoch cap {cap}" if cap and why == "epochs" else why for why in reasons))


MODEL_EPOCHS = 200  # `TrainConfig.epochs`, the models' own bound (this module reads results, not the library)


def epoch_cap(row: dict) -> int | None:
    """The epochs a sequential.py row's runs were capped at (`--max-epochs`), None where the model's own
    bound (MODEL_EPOCHS) applied."""
    epochs = row.get("config", {}).get("train", {}).get("epochs")
    return epochs if epochs is not None and epochs < MODEL_EPOCHS else None


def sequential(load: Load) -> list[str]:
    """Default sasrec and hstu on the public benchmarks: quality, time, memory."""
    rows = []
    for dataset in SEQUENTIAL:
        doc = load(f"sequential/{dataset}.json")
        for name, r in doc["results"].items():
            m = r["metrics"]
            rows.append([f"`{dataset}`", name, fmt(m["ndcg@10"], 4), fmt(m["hr@10"], 4),
                         stopped_by(r["training"], epoch_cap(r)), fmt(r["epoch_s_median"], 1), fmt(r["fit_s"], 0),
                         fmt(r["peak_rss_mib"], 0), str(len(r.get("seeds", [0]))), r.get("code", doc["code"])])
    header = ["", "model", "NDCG@10", "HR@10", "stopped by", "s/epoch", "fit s", "peak MiB", "seeds", "code"]
    files = [f"sequential/{d}.json" for d in SEQUENTIAL]
    runs = "`python benchmarks/sequential.py`, each row at the commit in its last column"
    return [*table(header, rows, "llrrlrrrrl"), "", source(load, *files, runs=runs,
                                                             over="mean ± std over the row's seeds")]


COMPRESSION_LABELS = {"full (float32)": "float32", "fp16 weights": "fp16", "int8 weights": "int8"}


def compression(load: Load) -> list[str]:
    """Bundle size, quality and latency of the compressed `beauty` sasrec bundles."""
    doc = load("compression.json")
    full = mean_of(next(iter(doc["rows"].values()))["bundle_mib"])
    rows = []
    for key, r in doc["rows"].items():
        size = mean_of(r["bundle_mib"])
        smaller = "" if size == full else f" ({fmt(full / size, 1)}x smaller)"
        rows.append([COMPRESSION_LABELS.get(key, key), f"{fmt(r['bundle_mib'], 1)} MiB{smaller}",
                     fmt(r["ndcg@10"], 4), f"{fmt(r['recommend_ms_p50'], 2)} ms"])
    header = ["bundle", "size", "NDCG@10", "recommend, one user"]
    return [*table(header, rows, "lrrr"), "", source(load, "compression.json")]


TEXT_MODELS = {"sasrec": "sasrec", "itemknn": "itemknn", "ease": "ease", "tfidf": "tfidf",
               "textseq-id+text": "textseq id+text", "textseq-text": "textseq text", "hybrid": "hybrid",
               "hybrid-text": "hybrid text"}
OLD_HYBRID = "hybrid (sasrec + textseq-text)"  # the benchmark's own blend, in results written before `hybrid`


def text(load: Load) -> list[str]:
    """Text models on `scientific`: leave-one-out, cold targets, encoding time, the hybrid."""
    doc = load("text_cold_start/scientific.json")
    cold = doc["cold"]["results"]
    loo_row = {n: doc["loo"][n]["metrics"]["ndcg@10"] for n in TEXT_MODELS if n in doc["loo"]}
    cold_row = {n: cold[n]["cold"]["ndcg@10"] for n in TEXT_MODELS if n in cold}
    columns = {n: label for n, label in TEXT_MODELS.items() if n in loo_row or n in cold_row}
    share = pct(doc["cold"]["n_cold_items"] / doc["n_items"])
    warm_row = {n: cold[n]["warm"]["ndcg@10"] for n in TEXT_MODELS if n in cold}
    rows = [["leave-one-out", *best_cells(loo_row, columns, 4)],
            [f"cold targets ({share} of items never trained on)", *best_cells(cold_row, columns, 4)],
            ["warm targets of that split", *best_cells(warm_row, columns, 4)]]
    enc = doc["encode"]
    prose = (f"The whole catalogue ({enc['texts']:,} texts) encodes in {fmt(enc['first_s'], 0)} s the first "
             f"time and in {fmt(enc['cached_s'], 2)} s from the cache.")
    if OLD_HYBRID in cold:
        prose += (" The benchmark's hybrid (sasrec and textseq text, each standardized per user and averaged, the "
                  "text model standing in for items without training data) reaches "
                  f"{fmt(cold[OLD_HYBRID]['cold']['ndcg@10'], 4)} on cold and "
                  f"{fmt(cold[OLD_HYBRID]['warm']['ndcg@10'], 4)} on warm targets.")
    # the pre-declared tests, where the result holds them (a result over seeds; a single run has none)
    for where, c in (("leave-one-out", doc.get("loo_comparison")), ("cold targets", doc["cold"].get("comparison"))):
        if c:
            a, b = TEXT_MODELS.get(c["a"], c["a"]), TEXT_MODELS.get(c["b"], c["b"])
            outcome = {"better": f"{a} better than {b}", "worse": f"{b} better than {a}"}.get(
                c["verdict"], f"{a} and {b} not significantly different")
            prose += f" Pre-declared test on {where}, each side chosen on validation: {outcome} ({p_text(c['p'])})."
    prose += "".join(f" {transfer_sentence(doc['dataset'], t)}" for t in [doc.get("transfer"), *doc.get("domains", [])] if t)
    header = ["", *columns.values()]
    return [*table(header, rows, "l" + "r" * len(columns)), "", *wrap(prose), "",
            source(load, "text_cold_start/scientific.json")]


def transfer_sentence(dataset: str, run: dict) -> str:
    """One transfer of textseq (text mode) in words: zero-shot against popularity, the seeds in which
    fine-tuning reached the from-scratch best validation NDCG@10 within half of scratch's epochs, and the
    pre-declared test of fine-tuned against from scratch on the test targets.

    >>> run = {"pretrain": "a", "target": "b", "zero_shot": {"ndcg@10": 0.09}, "pop": {"ndcg@10": 0.06},
    ...        "scratch": {"epochs_to_scratch_best": [16, 10]}, "fine-tuned": {"epochs_to_scratch_best": [8, None]},
    ...        "comparison": {"verdict": "better", "p": 0.004}}
    >>> print(transfer_sentence("d", run))
    Pretrained on a, used on b: zero-shot 0.0900 against popularity 0.0600 (1.5x); fine-tuning reached the from-scratch best validation NDCG@10 within half of scratch's epochs in 1 of 2 seeds; fine-tuned better than from scratch on test (p < 0.01).
    """
    zero, pop = run["zero_shot"]["ndcg@10"], run["pop"]["ndcg@10"]
    ratio = f" ({half_up(mean_of(zero) / mean_of(pop), 1)}x)" if mean_of(pop) > 0 else ""
    pairs = list(zip(run["fine-tuned"]["epochs_to_scratch_best"], run["scratch"]["epochs_to_scratch_best"]))
    quick = sum(f is not None and s is not None and f <= s / 2 for f, s in pairs)
    c = run["comparison"]
    outcome = {"better": "fine-tuned better than from scratch", "worse": "from scratch better than fine-tuned"}.get(
        c["verdict"], "fine-tuned and from scratch not significantly different")
    return (f"Pretrained on {run['pretrain']}, used on {run.get('target', dataset)}: zero-shot {fmt(zero, 4)} against "
            f"popularity {fmt(pop, 4)}{ratio}; fine-tuning reached the from-scratch best validation NDCG@10 within "
            f"half of scratch's epochs in {quick} of {len(pairs)} seeds; {outcome} on test ({p_text(c['p'])}).")


ANN_WIDTH = 64  # the efSearch the README quotes (the index's default)


def ann(load: Load) -> list[str]:
    """The HNSW sentence: recall and median latency at 1M vectors against exact search."""
    doc = load("ann.json")
    hnsw = next(r for r in doc["rows"] if r["index"] == "hnsw" and r["width"] == ANN_WIDTH)
    exact = next(r for r in doc["rows"] if r["index"].startswith("exact"))
    m = re.search(r"--hnsw-m (\d+)", doc["command"])
    params = (f"M {m.group(1)}, " if m else "") + f"efSearch {ANN_WIDTH}"
    prose = (f"On {doc['items']:,} synthetic {doc['dim']}-d vectors on the {cpus(doc)}-core CPU, HNSW ({params}) "
             f"finds {fmt(mean_of(hnsw['recall@10']) * 100, 1)}% of the exact top-{doc['k']} in "
             f"{fmt(hnsw['p50_ms'], 2)} ms per query (median; exact search takes {fmt(exact['p50_ms'], 0)} ms); "
             "`benchmarks/ANN.md` has the full table.")
    return [*wrap(prose), "", source(load, "ann.json")]


PIPELINE_COLUMNS = {"ndcg@10": 4, "hr@10": 4, "ild@10": 3, "coverage@10": 3}  # metric: decimals
PIPELINE_BEST = ("ndcg@10", "hr@10")  # the columns whose best value is marked


def pipeline(load: Load) -> list[str]:
    """Final lists on `beauty` against the best single model; the content-aware pipeline on cold items. A
    result over seeds names the MMR weight chosen on validation and the paired test of the learned ranker
    against the best single model (an older one-seed result: the weight as it recorded it)."""
    doc = load("pipeline/beauty.json")
    best, learned = doc["best_single"], doc["verdict"]["learned ranker"]
    weight = learned["weight_with_most_ild_at_5pct_loss"]
    on_validation = learned.get("chosen_on") == "validation"
    lists = {f"{best} alone": doc["single"][best],
             "pipeline, ranked by sasrec": doc["pipelines"]["pipeline, sasrec ranker"],
             "pipeline, rank fusion (nothing trained)": doc["pipelines"]["pipeline, fusion ranker (RRF)"],
             "pipeline, learned ranker": doc["pipelines"]["pipeline, learned ranker"],
             f"pipeline, learned ranker, MMR weight {weight}" + (" (chosen on validation)" if on_validation else ""):
                 doc["sweeps"]["learned ranker"][weight]}
    columns = {c: best_cells({k: v[c] for k, v in lists.items()}, lists, d) if c in PIPELINE_BEST
               else [fmt(v[c], d) for v in lists.values()] for c, d in PIPELINE_COLUMNS.items()}
    rows = [[label, *(columns[c][i] for c in PIPELINE_COLUMNS)] for i, label in enumerate(lists)]
    header = ["final list", "NDCG@10", "HR@10", "ILD@10", "coverage@10"]
    gain = "adds" if learned["pipeline_vs_best"] >= 0 else "loses"
    versus = "over" if learned["pipeline_vs_best"] >= 0 else "against"
    test = doc.get("tests", {}).get("pipeline, learned ranker")
    tested = f" (paired t-test over users: {test['verdict']}, {p_text(test['p'])})" if test else ""
    mmr = "MMR at the weight chosen on validation" if on_validation else "MMR"
    largest = " (the largest weight of the grid)" if learned.get("weight_is_grid_max") else ""
    prose = (f"The learned ranker (fitted on validation targets) {gain} {pct(learned['pipeline_vs_best'])} NDCG@10 "
             f"{versus} {best}{tested}; {mmr}{largest} then buys {pct(learned['ild_gain'])} more intra-list diversity for "
             f"{pct(learned['ndcg_change'])} of that NDCG. {pipeline_cold(load('pipeline/cold.json'))}")
    return [*table(header, rows, "lrrrr"), "", *wrap(prose), "",
            source(load, "pipeline/beauty.json", "pipeline/cold.json")]


def pipeline_cold(doc: dict) -> str:
    """The cold-items sentence: the content-aware `home` pipeline against TF-IDF and item-kNN."""
    known = doc["known_users"]
    home = next(v for k, v in known.items() if k.startswith("pipeline home"))

    def short(value: Any) -> str:
        return "0" if mean_of(value) == 0 else fmt(value, 3)

    return (f"On the cold-items split of `{doc['dataset']}`, the content-aware `home` pipeline (co-occurrence, "
            "text neighbours, new items, popular; rank fusion) reaches NDCG@10 "
            f"{short(home['cold']['ndcg@10'])} on targets no model has seen an interaction of "
            f"(TF-IDF {short(known['tfidf']['cold']['ndcg@10'])}, item-kNN "
            f"{short(known['itemknn']['cold']['ndcg@10'])}) and {short(home['warm']['ndcg@10'])} on the others. "
            f"{over_all_targets(home, known)}")


def over_all_targets(home: dict, known: dict) -> str:
    """Over all targets at once: whom the `home` pipeline trails and whom it leads, as measured."""
    ours = mean_of(home["all"]["ndcg@10"])
    peers = {"TF-IDF": known["tfidf"], "item-kNN": known["itemknn"]}
    figures = ", ".join(f"{name} {fmt(m['all']['ndcg@10'], 3)}" for name, m in peers.items())
    behind = [name for name, m in peers.items() if mean_of(m["all"]["ndcg@10"]) > ours]
    if not behind:
        return f"Over all targets it leads with {fmt(home['all']['ndcg@10'], 3)} ({figures})."
    return (f"Over all targets together it trails {' and '.join(behind)}: {fmt(home['all']['ndcg@10'], 3)} "
            f"against {figures}.")


def serve(load: Load) -> list[str]:
    """POST /recommend: latency under Poisson arrivals at each rate (timed from each request's scheduled
    send, so queueing shows), and the closed-loop capacity wrk measured."""
    doc = load("serve_load.json")

    def ms(value: Any) -> str:
        return fmt(value, 0 if mean_of(value) >= 100 else 1)

    rows = [[f"{r['target_per_s']:g} req/s, Poisson", fmt(r["achieved_per_s"], 0), ms(r["p50_ms"]), ms(r["p99_ms"]),
             ms(r["p99.9_ms"]), f"{r['errors']:,}"] for r in doc["open_loop"]["runs"]]
    wrk = doc["saturation"]["runs"]
    best = max(wrk, key=lambda r: r["requests_per_s"])
    header = ["load", "answered (req/s)", "p50 ms", "p99 ms", "p99.9 ms", "errors"]
    prose = (f"Capacity, measured apart with `wrk` (closed loop): {fmt(best['requests_per_s'], 0)} requests/s at "
             f"{best['connections']} connections ({fmt(wrk[0]['requests_per_s'], 0)} with one connection).")
    return [*table(header, rows, "lrrrrr"), "", *wrap(prose), "", source(load, "serve_load.json")]


RENDERERS: dict[str, Callable[[Load], list[str]]] = {
    "deep_cf": deep_cf, "sequential": sequential, "compression": compression, "text": text, "ann": ann,
    "pipeline": pipeline, "serve": serve,
}


# --- blocks in the README -------------------------------------------------------------------------


def render_block(name: str, load: Load) -> str:
    """The whole block NAME, markers included, as the results give it."""
    if name not in RENDERERS:
        raise ValueError(f"README block 'figures:{name}' has no renderer; known: {', '.join(RENDERERS)}")
    body = "\n".join(RENDERERS[name](load))
    return f"<!-- figures:{name} -->\n{body}\n<!-- /figures:{name} -->"


def render_readme(readme: str, load: Load) -> str:
    """`readme` with every figure block rewritten from the results; the rest is left as it is."""
    return BLOCK.sub(lambda m: render_block(m["name"], load), readme)


def stale_blocks(readme: str, load: Load) -> list[str]:
    """Names of the blocks that differ from what the results give."""
    return [m["name"] for m in BLOCK.finditer(readme) if m[0] != render_block(m["name"], load)]


def missing_blocks(readme: str) -> list[str]:
    """Names of the renderers whose block the README lacks."""
    present = {m["name"] for m in BLOCK.finditer(readme)}
    return [name for name in RENDERERS if name not in present]


# --- figures quoted outside the blocks ------------------------------------------------------------

# Numbers outside the blocks and code that look like measurements but are not: (exact text, why).
NOT_MEASURED = {
    "Python >= 3.11": "a version requirement",
    "share of the top 1% of items": "the definition of a profile statistic",
    "60% of the budget": "how `auto` splits its budget: a setting",
    "at most 512 MiB of scores": "the evaluation block size: a setting",
    "(similarity 0.41)": "an example of a reason's wording",
    "(cosine 0.82)": "an example of a reason's wording",
    "past 256 KiB": "the request-body limit: a setting",
    "a 100 MB chunked body": "the body the limit test sends",
    "RSS growth under 20 MB": "the limit test's threshold",
    "over 16 KiB": "the request-head limit: a setting",
    "close after 5 s": "the keep-alive timeout: a setting",
}

NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)*(?:e-?\d+)?"
UNIT = r"\s?(?:%|x\b|ms\b|s\b|seconds?\b|minutes?\b|hours?\b|[KMG]iB\b|[KMG]B\b|req/s\b)"
FIGURE = re.compile(rf"(?<![\w.@-])(?P<number>{NUMBER})(?P<unit>{UNIT})?")
MASKS = (BLOCK, re.compile(r"^```.*?^```", re.S | re.M), re.compile(r"<!--.*?-->", re.S), re.compile(r"`[^`]+`"))
CITATION = re.compile(r"benchmarks/[\w./-]+?\.(?:json|md)\b")


class Figure(NamedTuple):
    """A number the README quotes as a measurement."""

    line: int
    text: str  # as written, unit included: "0.0572", "97.8%", "2.4 ms"
    cites: tuple[str, ...]  # the result files and reports its paragraph names, e.g. "benchmarks/ANN.md"

    @property
    def number(self) -> str:
        return re.match(NUMBER, self.text)[0].replace(",", "")


def blank(match: re.Match) -> str:
    """The match with everything but its line breaks blanked, so that offsets and line numbers stay."""
    return re.sub(r"[^\n]", " ", match[0])


def citations(readme: str, offset: int) -> tuple[str, ...]:
    """The files that the paragraph around `offset` names (in code spans too)."""
    start, end = readme.rfind("\n\n", 0, offset) + 1, readme.find("\n\n", offset)
    return tuple(dict.fromkeys(CITATION.findall(readme[start:] if end < 0 else readme[start:end])))


def quoted_figures(readme: str) -> list[Figure]:
    """Measured-looking numbers outside the blocks, code and NOT_MEASURED: decimals, numbers with a unit
    (%, x, ms, s, minutes, MiB, ...) and numbers in scientific notation; versions (two dots) are not."""
    masked = readme
    for mask in MASKS:
        masked = mask.sub(blank, masked)
    for snippet in NOT_MEASURED:
        masked = masked.replace(snippet, " " * len(snippet))
    figures = []
    for m in FIGURE.finditer(masked):
        number = m["number"]
        if number.count(".") > 1 or not ("." in number or "e" in number or m["unit"]):
            continue
        figures.append(Figure(masked.count("\n", 0, m.start()) + 1, m[0], citations(readme, m.start())))
    return figures


def json_numbers(node: Any) -> Iterator[float]:
    """Every number in a JSON document: values, numeric strings and keys, without sign."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from json_numbers(key)
            yield from json_numbers(value)
    elif isinstance(node, list):
        for value in node:
            yield from json_numbers(value)
    elif isinstance(node, (int, float, str)) and not isinstance(node, bool):
        try:
            yield abs(float(node))
        except ValueError:
            pass


def saved_numbers(results: Path) -> dict[str, set[float]]:
    """The numbers of every result file under `results` and every generated report beside it, by the path
    the README cites them by ("benchmarks/results/ann.json", "benchmarks/ANN.md")."""
    texts = {f"benchmarks/{p.relative_to(results.parent).as_posix()}": json_numbers(json.loads(p.read_text("utf-8")))
             for p in sorted(results.rglob("*.json"))}
    for path in generated_reports(results.parent):
        found = re.findall(NUMBER, path.read_text(encoding="utf-8"))
        texts[f"benchmarks/{path.name}"] = (float(n.replace(",", "")) for n in found if n.count(".") < 2)
    return {name: {n for n in numbers if math.isfinite(n)} for name, numbers in texts.items()}


def generated_reports(folder: Path) -> list[Path]:
    """The markdown reports in `folder` that a benchmark writes from its results."""
    return [p for p in sorted(folder.glob("*.md")) if "Generated by `benchmarks/" in p.read_text(encoding="utf-8")]


def rounded(number: float, like: str) -> str:
    """`number` written with as many decimals (or significant digits, for `1e-5` forms) as `like`.

    >>> rounded(0.05717, "0.0572"), rounded(29.57, "30"), rounded(7.57e-06, "8e-6")
    ('0.0572', '30', '8e-6')
    """
    if "e" in like:
        mantissa = like.split("e")[0]
        digits = len(mantissa.split(".")[1]) if "." in mantissa else 0
        m, e = f"{number:.{digits}e}".split("e")
        return f"{m}e{int(e)}"
    return str(half_up(number, len(like.split(".")[1]) if "." in like else 0))


def unsupported_figures(readme: str, saved: dict[str, set[float]]) -> list[Figure]:
    """The figures quoted outside the blocks that no saved number gives at the README's rounding: a number
    of the files their paragraph cites, where it cites any that `saved` has, else of any file. A
    percentage may also be a saved fraction (97.8% is 0.9779)."""
    written: dict[tuple, set[str]] = {}  # (files, shape such as "0.00", percent?) -> their numbers so written
    missing = []
    for f in quoted_figures(readme):
        files = tuple(c for c in f.cites if c in saved) or tuple(saved)
        key = (files, re.sub(r"\d", "0", f.number), f.text.endswith("%"))
        if key not in written:
            numbers = set().union(*(saved[name] for name in files))
            candidates = numbers | {n * 100 for n in numbers} if key[2] else numbers
            written[key] = {rounded(n, f.number) for n in candidates}
        if f.number not in written[key]:
            missing.append(f)
    return missing


def check(readme: str, results: Path) -> list[str]:
    """Every problem `--check` reports: stale blocks, then unsupported figures (empty when all is well)."""
    problems = [f"block 'figures:{n}' differs from what {results} gives; run `make readme`"
                for n in stale_blocks(readme, loader(results))]
    problems += [f"block 'figures:{n}' is missing: its renderer has no place in the README"
                 for n in missing_blocks(readme)]
    saved = saved_numbers(results)
    for f in unsupported_figures(readme, saved):
        where = ", ".join(c for c in f.cites if c in saved) or "any result file or generated report"
        problems.append(f"line {f.line}: {f.text} is not in {where} (at the README's rounding)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 listing what is stale")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    readme = args.readme.read_text(encoding="utf-8")
    if args.check:
        problems = check(readme, args.results)
        print("\n".join(problems) or f"{args.readme}: every figure block and quoted figure matches the results")
        return 1 if problems else 0
    new = render_readme(readme, loader(args.results))
    if new != readme:
        sys.stdout.writelines(difflib.unified_diff(readme.splitlines(True), new.splitlines(True), "before", "after"))
        atomic_write_text(args.readme, new)
    problems = check(new, args.results)
    print("\n".join(problems) or f"{args.readme}: up to date")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
