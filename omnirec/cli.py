"""`omnirec ...` subcommands. Parses arguments, builds objects by name, calls the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
import tomllib
import traceback
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from omnirec.bundle import Bundle
from omnirec.config import ConfigError, from_dict, load_toml
from omnirec.data.clean import CleanConfig
from omnirec.data.dataset import Dataset
from omnirec.data.datasets import DATASETS, FORMATS, DataConfig, load_data, load_dataset, load_file
from omnirec.data.ids import UnknownIdError
from omnirec.data.io import ColumnMap
from omnirec.data.split import Split, split_dataset
from omnirec.data.synthetic import SyntheticConfig, generate
from omnirec.experiment import explain_note, format_significance, format_table, run_experiment, save_report
from omnirec.models import MODELS
from omnirec.models.base import Recommender
from omnirec.run import RunConfig, train_bundle
from omnirec.train import distributed
from omnirec.utils import atomic_write_text

CONFIG_SECTIONS = ("clean", "models")


def build_models(names: list[str], settings: dict[str, Any], dataset: Dataset) -> dict[str, Recommender]:
    """Models by name, each with its `[models.<name>]` settings; names are checked before anything runs."""
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"error: unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    extra = [n for n in settings if n not in MODELS]
    if extra:
        raise SystemExit(f"error: config has [models.{extra[0]}], which is not a model; known: {', '.join(MODELS)}")
    for name in names:
        if MODELS[name].needs_text and dataset.item_text is None:
            raise SystemExit(f"error: model {name!r} needs item text, and dataset {dataset.name!r} has none")
    models = {}
    for name in names:
        cls = MODELS[name]
        models[name] = cls(from_dict(cls.Config, settings.get(name, {}), where=f"[models.{name}]"))
    return models


def _read_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    data = load_toml(path)
    unknown = [k for k in data if k not in CONFIG_SECTIONS]
    if unknown:
        raise ConfigError(f"{path}: unknown section [{unknown[0]}]; known: {', '.join(CONFIG_SECTIONS)}")
    return data


def _print_summary(dataset: Dataset, report_doc: dict[str, Any]) -> None:
    print(f"\n{dataset.name}: {dataset.n_users:,} users, {dataset.n_items:,} items, "
          f"{dataset.interactions.height:,} interactions; protocol {report_doc['protocol']}")
    print(f"cleaning: {'; '.join(str(dataset.report).splitlines())}")
    print(format_table(report_doc))
    for group, rows in report_doc.get("groups", {}).items():
        print(f"\n{group} test targets only:")
        print(format_table({**report_doc, "results": rows}))
    if report_doc.get("significance"):
        print(f"\n{format_significance(report_doc)}")
    for note in report_doc["notes"]:
        print(f"note: {explain_note(note)}")


def cmd_quickstart(args: argparse.Namespace) -> int:
    """Synthetic catalogue -> baselines -> evaluation table -> saved artefacts."""
    start = time.perf_counter()
    inter, items = generate(SyntheticConfig(n_users=args.users, n_items=args.items, seed=args.seed))
    dataset = Dataset.from_frames(inter, items, name="synthetic")
    print(f"synthetic catalogue: {dataset.n_users:,} users, {dataset.n_items:,} items, "
          f"{dataset.interactions.height:,} interactions (seed {args.seed})")
    report = run_experiment(dataset, build_models([n for n, cls in MODELS.items() if cls.quick], {}, dataset), progress=True)
    document = report.to_json()
    _print_summary(dataset, document)
    paths = save_report(report, args.out)
    markov, pop = document["results"]["markov"]["ndcg@10"], document["results"]["pop"]["ndcg@10"]
    verdict = "beats" if markov > pop else "does NOT beat"
    print(f"\nmarkov {verdict} popularity: ndcg@10 {markov:.4f} vs {pop:.4f}")
    print(f"saved to {args.out}: " + ", ".join(p.name for p in paths.values()) + ", models/, users.json, items.json")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _load_for_evaluate(args: argparse.Namespace, clean: CleanConfig) -> Dataset:
    if (args.dataset is None) == (args.path is None):
        raise SystemExit("error: give either --dataset NAME --data-dir DIR, or --path FILE --format FMT")
    if args.dataset is not None:
        if args.data_dir is None:
            raise SystemExit("error: --dataset needs --data-dir (the folder holding the benchmark files)")
        return load_dataset(args.dataset, args.data_dir, clean)
    if args.format is None:
        raise SystemExit(f"error: --path needs --format (one of {', '.join(FORMATS)})")
    columns = ColumnMap(user=args.user_col, item=args.item_col, timestamp=args.time_col or None,
                        rating=args.rating_col)
    text_cols = tuple(c.strip() for c in args.text_cols.split(",") if c.strip()) if args.text_cols else ()
    if args.items and not text_cols:
        raise SystemExit("error: --items needs --text-cols (the catalogue columns that hold the text)")
    return load_file(args.path, args.format, columns, clean, items_path=args.items, item_text_columns=text_cols,
                     users_path=args.user_attributes)


def _make_split(dataset: Dataset, args: argparse.Namespace) -> Split:
    """The split `--split` names; cold-items by time quantile, or by a random item fraction (--cold-frac);
    cold-users holds out --cold-frac of the users (10% by default)."""
    if args.split == "cold-users":
        try:
            return split_dataset(dataset, "cold-users", user_frac=args.cold_frac or 0.1)
        except ValueError as exc:
            raise SystemExit(f"error: --split cold-users: {exc}") from exc
    if args.split == "cold-items":
        options = {"item_frac": args.cold_frac} if args.cold_frac else {"cutoff_quantile": args.cold_quantile}
        try:
            return split_dataset(dataset, "cold-items", **options)
        except ValueError as exc:
            raise SystemExit(f"error: --split cold-items: {exc}") from exc
    return split_dataset(dataset, "loo")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Load data, fit the named models, full-ranking evaluation, table + JSON."""
    config = _read_config(args.config)
    clean = from_dict(CleanConfig, config.get("clean", {}), where="[clean]")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names:
        raise SystemExit(f"error: --models names no model; give some of {', '.join(MODELS)}")
    dataset = _load_for_evaluate(args, clean)
    models = {n: _with_train_options(m, None, args.quiet) for n, m in build_models(names, config.get("models", {}), dataset).items()}
    split = _make_split(dataset, args)  # before anything is printed: a split that fails is its one error line
    print(f"cleaning {dataset.name}:\n{dataset.report}", file=sys.stderr)
    report = run_experiment(dataset, models, ks=args.k, split=split, progress=not args.quiet)
    document = report.to_json()
    _print_summary(dataset, document)
    saved = []
    if args.out:  # its results.json is the result document
        paths = save_report(report, args.out)
        saved.append(f"{args.out}: " + ", ".join(p.name for p in paths.values()) + ", models/, users.json, items.json")
    if args.json or not args.out:
        json_path = args.json or "evaluate-results.json"
        atomic_write_text(json_path, json.dumps(document, indent=2))
        saved.insert(0, json_path)
    print("saved to " + "; ".join(saved))
    return 0


def _with_train_options(model: Recommender, checkpoint_dir: str | None, quiet: bool) -> Recommender:
    """The model with checkpoints redirected to `checkpoint_dir` and its progress bars (training, text
    encoding) off when `quiet` (only the models that train in epochs have these options)."""
    if not model.trains_in_epochs:
        return model
    changes: dict[str, Any] = {"progress": False} if quiet else {}
    if checkpoint_dir is not None:
        changes["checkpoint_dir"] = checkpoint_dir
    config = dataclasses.replace(model.config, train=dataclasses.replace(model.config.train, **changes))
    encoder = getattr(config, "encoder", None)  # the text encoder's progress bar too
    if quiet and encoder is not None:
        config = dataclasses.replace(config, encoder=dataclasses.replace(encoder, progress=False))
    return type(model)(config)


def _start_from_bundle(model: Recommender, path: str) -> Recommender:
    """The model set to start training from a bundle's weights (a textseq pretrained on another catalogue)."""
    if not model.can_warm_start:
        raise SystemExit(f"error: --init-from: model {model.name!r} cannot start from pretrained weights (textseq can)")
    pretrained = Bundle.load(path).model
    if type(pretrained) is not type(model):
        raise SystemExit(f"error: --init-from {path}: holds a {pretrained.name!r} model, this config trains {model.name!r}")
    try:
        return model.start_from(pretrained)
    except ValueError as exc:
        raise SystemExit(f"error: --init-from {path}: {exc}") from exc


def _run_config(args: argparse.Namespace) -> RunConfig:
    """The run config of `--config` (or, for `retrain` without it, the one stored in `--bundle`), with
    `--out` over its `out`."""
    if args.config is not None:
        run = RunConfig.from_toml(args.config)
    else:
        run = RunConfig.from_dict(Bundle.load(args.bundle).meta.get("run") or {}, where=f"{args.bundle}/bundle.json")
    run = dataclasses.replace(run, out=args.out or run.out)
    if not run.out:
        raise SystemExit("error: give the bundle folder: out = \"DIR\" in the config, or --out DIR")
    return run


def _train_and_save(run: RunConfig, args: argparse.Namespace, dataset: Dataset | None = None,
                    split: Split | None = None, extra: dict[str, Any] | None = None) -> None:
    model = _with_train_options(run.build_model(), args.checkpoint_dir, args.quiet)
    if getattr(args, "init_from", None):
        model = _start_from_bundle(model, args.init_from)
    bundle, report = train_bundle(run, model, dataset, split, progress=not args.quiet, extra=extra)
    if not distributed.is_main():  # under torchrun, rank 0 reports and writes the bundle
        return
    _print_summary(report.dataset, report.to_json())
    bundle.save(run.out)
    print(f"saved bundle to {run.out}")


def cmd_train(args: argparse.Namespace) -> int:
    """Train one model from a TOML config, evaluate it on the test split, save a bundle."""
    _train_and_save(_run_config(args), args)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """Train again on the bundle's data (or the config's) plus the stored feedback (deleted users left
    out), then optionally tell a running server to swap to the new bundle."""
    from omnirec.serve.retrain import check_server, request_reload, with_feedback
    from omnirec.serve.store import open_store

    if args.config is None and args.bundle is None:
        raise SystemExit("error: give --bundle DIR (retrain it as it was made) or --config FILE (a run config)")
    if args.reload:  # a wrong key or URL is found now, not after the training
        check_server(args.reload)
    run = _run_config(args)
    base = Bundle.load(args.bundle).dataset() if args.config is None else load_data(run.data, run.clean)
    store = open_store(args.store)
    try:
        dataset, summary = with_feedback(base, store, run.clean)
    finally:
        store.close()
    print(f"retraining on {summary['base']:,} base interactions (minus {summary['dropped']:,} of "
          f"{summary['deleted_users']:,} deleted users) and {summary['events']:,} stored events", file=sys.stderr)
    # users known only from a little feedback are trained on, not evaluated
    split = split_dataset(dataset, "loo", short_users="train")
    _train_and_save(run, args, dataset, split, {"retrain": summary})
    if args.reload:
        print(json.dumps(request_reload(args.reload, run.out)))
    return 0


def _print_list(answer: dict[str, Any], as_json: bool) -> None:
    """A final list as JSON, or as lines of rank, id, title, score, sources and reason."""
    if as_json:
        print(json.dumps(answer))
        return
    if not answer["personalized"]:
        print(f"note: {answer['reason']}", file=sys.stderr)
    for rank, r in enumerate(answer["items"], 1):
        score = "-" if r["score"] is None else f"{r['score']:.4f}"
        title = f"  {r['title']}" if r.get("title") else ""
        print(f"{rank:>3}  {r['item']}{title}  {score}  [{', '.join(r['sources'])}]  {r['reason']}")


def _service_for(args: argparse.Namespace):  # noqa: ANN202 - a Service
    """A service over the bundle with an empty in-memory store: the lists the HTTP API would give."""
    from omnirec.pipeline.scenario import load_scenarios
    from omnirec.serve.service import MODEL_ONLY, Service
    from omnirec.serve.store import open_store

    if args.scenario is None:
        scenarios = {"model": MODEL_ONLY}
    elif args.scenarios is None:
        raise SystemExit("error: --scenario needs --scenarios FILE (the TOML that declares the scenarios)")
    else:
        declared = load_scenarios(args.scenarios)
        if args.scenario not in declared:
            raise SystemExit(f"error: scenario {args.scenario!r} is not in {args.scenarios}; it has: {', '.join(declared)}")
        scenarios = {args.scenario: declared[args.scenario]}
    if not (Path(args.bundle) / "bundle.json").exists():
        raise SystemExit(f"error: {args.bundle}: not a bundle folder (no bundle.json); write one with `omnirec train`")
    return Service(args.bundle, open_store(":memory:"), scenarios, max_k=1000)


def _query_list(args: argparse.Namespace) -> dict[str, Any]:
    """A text request blended with the user's history (textseq), listed like a final list."""
    bundle = Bundle.load(args.bundle)
    user, reason = args.user, None
    if user is not None and user not in bundle.users:
        reason, user = f"user {user!r} is not known to this bundle: the list answers the query alone", None
    rows = bundle.recommend(user, k=args.k or 10, query=args.query, query_weight=args.query_weight)
    dense = bundle.items.encode([item for item, _ in rows]) if rows else []
    why = "your query" if user is None else "your query and history"
    return {"user": args.user, "query": args.query, "personalized": user is not None, "reason": reason,
            "items": [{"item": item, "title": bundle.title(int(d)), "score": score, "sources": [bundle.model.name],
                       "reason": f"{bundle.model.name} ranks it #{rank} for {why} (score {score:.3f})"}
                      for rank, ((item, score), d) in enumerate(zip(rows, dense, strict=True), 1)]}


def cmd_recommend(args: argparse.Namespace) -> int:
    """Top-k items for a user of a saved bundle, with titles and reasons: the model's list, a scenario's
    final list with --scenario (--item: an item page), or a text request with --query. A user the bundle
    does not know gets the popular fallback, said so (as the HTTP API does)."""
    if args.query is not None:
        if args.scenario is not None:
            raise SystemExit("error: --query is not part of scenarios yet; use it without --scenario")
        _print_list(_query_list(args), args.json)
        return 0
    if args.item is not None and args.scenario is None:
        raise SystemExit("error: --item needs --scenario (and --scenarios FILE): an item page is a scenario's list")
    if args.user is None and args.item is None and args.scenario is None:
        raise SystemExit("error: give --user, --query, or both (or --scenario for an anonymous visitor)")
    service = _service_for(args)
    name = next(iter(service.scenarios))
    k = args.k or service.scenarios[name].k
    if args.item is not None:
        if args.item not in service.current.bundle.items:
            raise SystemExit(f"error: item {args.item!r} is not in this bundle ({len(service.current.bundle.items):,} items)")
        answer = service.recommend(items=[args.item], scenario=name, k=k, page=True)
    else:
        answer = service.recommend(args.user, scenario=name, k=k)
    _print_list({**answer, "item": args.item}, args.json)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP API over a bundle."""
    import os

    import uvicorn

    from omnirec.serve.app import ServeConfig, create_app, uvicorn_options

    if not (Path(args.bundle) / "bundle.json").exists():
        raise SystemExit(f"error: {args.bundle}: not a bundle folder (no bundle.json); write one with `omnirec train`")
    key = os.environ.get("OMNIREC_API_KEY", "")
    if not key:
        print("note: OMNIREC_API_KEY is not set: feedback, deletion and reload are refused", file=sys.stderr)
    config = ServeConfig(bundle=str(Path(args.bundle).resolve()), store=args.store, scenarios=args.config or "", api_key=key)
    level = "warning" if args.quiet else "info"
    if args.workers > 1:  # each worker process builds its app from the environment; they share the store
        os.environ["OMNIREC_SERVE_CONFIG"] = json.dumps(dataclasses.asdict(config))
        uvicorn.run("omnirec.serve.app:app_from_env", factory=True, workers=args.workers, host=args.host,
                    port=args.port, log_level=level, **uvicorn_options(config))
    else:
        uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=level, **uvicorn_options(config))
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    """A smaller copy of a bundle (int8 or fp16 weights, int32 histories, compressed files)."""
    from omnirec.compress import compress_bundle

    sizes = compress_bundle(args.bundle, args.out, args.weights)
    print(f"{args.out}: {sizes['after'] / 2**20:.2f} MiB (was {sizes['before'] / 2**20:.2f} MiB, "
          f"{sizes['before'] / max(sizes['after'], 1):.1f}x smaller)")
    return 0


class UsageError(Exception):
    """A bad command line (unknown flag, a value out of range); `main` prints it as one `error:` line."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the flag, with a hint to `--help`, instead of the usage
    block (the subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (run `{self.prog} --help` for the options)")

    def parse_args(self, args: list[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:  # named here, not by the top parser, so that the hint names the subcommand's --help
            command = getattr(parsed, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (run `{prog} --help` for the options)")
        return parsed


def _number(kind: Callable[[str], float], low: float, high: float = math.inf,
            low_open: bool = False) -> Callable[[str], Any]:
    """An argparse `type`: a finite `kind` number in [low, high] (low excluded when `low_open`).

    >>> _number(int, 1, 1000)("7")
    7
    >>> _number(float, 0, low_open=True)("-3")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a number > 0, got '-3'
    """
    noun = "an integer" if kind is int else "a number"
    if high < math.inf:
        what = f"{noun} from {low:g} to {high:g}" + (f" (not {low:g})" if low_open else "")
    else:
        what = f"{noun} {'>' if low_open else '>='} {low:g}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (low < value if low_open else low <= value) and value <= high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


LIST_LENGTH = _number(int, 1, 1000)  # k: the longest list anyone reads, and a bound on the work asked for
POSITIVE_INT = _number(int, 1)
FRACTION = _number(float, 0, 1)


def _cutoffs(text: str) -> tuple[int, ...]:
    """`--k 10,20`: cut-offs, each an integer from 1 to 1000.

    >>> _cutoffs("5, 10")
    (5, 10)
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        return tuple(LIST_LENGTH(p) for p in parts)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers from 1 to 1000, got {text!r}") from None


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of `omnirec`."""
    parser = _Parser(prog="omnirec", description="omnirec: recommender systems, end to end")
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quickstart", help="run every baseline on the built-in synthetic catalogue")
    q.add_argument("--out", default="runs/quickstart", help="folder for the artefacts (default: %(default)s)")
    q.add_argument("--users", type=POSITIVE_INT, default=2000)
    q.add_argument("--items", type=POSITIVE_INT, default=1000)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_quickstart)
    e = sub.add_parser("evaluate", help="full-ranking leave-one-out evaluation of models on a dataset")
    _data_arguments(e)
    e.add_argument("--models", default="pop,itemknn,als,bpr,markov", help="comma-separated (known: %s)" % ",".join(MODELS))
    e.add_argument("--split", choices=("loo", "cold-items", "cold-users"), default="loo",
                   help="loo: leave-one-out; cold-items: leave-one-out with cold items kept out of training, "
                        "cold and warm test targets also reported apart; cold-users: a fraction of users held "
                        "out of training entirely, reported apart (default: %(default)s)")
    e.add_argument("--cold-quantile", type=FRACTION, default=0.8,
                   help="cold-items: items first seen at or after this time quantile are cold (default: %(default)s)")
    e.add_argument("--cold-frac", type=FRACTION, default=0.0,
                   help="cold-items: instead, this fraction of items at random (for data without a clock); "
                        "cold-users: the fraction of users held out (default 0.1)")
    e.add_argument("--k", type=_cutoffs, default="10,20", help="cut-offs, comma-separated (default: %(default)s)")
    e.add_argument("--json", help="where to write the result document (default: <--out>/results.json with --out, "
                   "else evaluate-results.json)")
    e.add_argument("--config", help="TOML with [clean] and [models.<name>] tables")
    e.add_argument("--out", help="also save models, id maps, per-user values and a plot here")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_evaluate)
    pr = sub.add_parser("profile", help="the data's traits that decide the model: printed, and as JSON + PNG")
    _data_arguments(pr)
    pr.add_argument("--out", help="folder for profile.json and profile.png")
    pr.set_defaults(func=cmd_profile)
    au = sub.add_parser("auto", help="choose and tune a model within a time budget; test it once; bundle + report")
    _data_arguments(au)
    au.add_argument("--budget-minutes", type=_number(float, 0, low_open=True), required=True,
                    help="wall-clock budget for the whole run")
    au.add_argument("--out", required=True, help="folder for report.md/json, search.png, chosen.toml and bundle/")
    au.add_argument("--seed", type=int, default=0)
    au.set_defaults(func=cmd_auto)
    t = sub.add_parser("train", help="train one model from a TOML config, evaluate it and save a bundle")
    t.add_argument("--config", required=True, help="TOML: model, out, [data], [clean], [models.<name>]")
    t.add_argument("--out", help="bundle folder (overrides the config's out)")
    t.add_argument("--checkpoint-dir", help="write checkpoints here and resume from one found there")
    t.add_argument("--init-from", help="a bundle whose weights training starts from (textseq: transfer between catalogues)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)
    r = sub.add_parser("recommend", help="top-k items for a user of a saved bundle")
    r.add_argument("--bundle", required=True, help="a folder written by `omnirec train`")
    r.add_argument("--user", help="the user's id as in the data (leave out, with --query, for an anonymous request)")
    r.add_argument("--query", help="a request in words, blended with the user's history (textseq bundles)")
    r.add_argument("--query-weight", type=FRACTION, default=0.5,
                   help="weight of the query, 0..1 (default: %(default)s)")
    r.add_argument("-k", type=LIST_LENGTH, default=None, help="list length (default: the scenario's k, else 10)")
    r.add_argument("--scenario", help="a scenario's final list (sources, re-ranking, fallback, reasons)")
    r.add_argument("--item", help="with --scenario: an item page, the list built around this item id")
    r.add_argument("--scenarios", help="the TOML file declaring the scenarios ([scenarios.<name>] tables)")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=cmd_recommend)
    rt = sub.add_parser("retrain", help="train again on the base data plus the stored feedback; swap it into a server")
    rt.add_argument("--bundle", help="the bundle to retrain: its run config and the data it was trained on")
    rt.add_argument("--config", help="a run config TOML instead (model, [data], [models.<name>]): its data is read again")
    rt.add_argument("--store", required=True, help="the server's event store: SQLite file or postgresql:// URL")
    rt.add_argument("--out", help="the new bundle folder (overrides the config's out)")
    rt.add_argument("--reload", help="a running server's base URL: ask it to swap to the new bundle ($OMNIREC_API_KEY)")
    rt.add_argument("--checkpoint-dir", help="write checkpoints here and resume from one found there")
    rt.add_argument("--quiet", action="store_true", help="no progress bars")
    rt.set_defaults(func=cmd_retrain)
    c = sub.add_parser("compress", help="a smaller copy of a bundle: int8 (or fp16) weights, compressed files")
    c.add_argument("--bundle", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--weights", choices=("int8", "fp16"), default="int8")
    c.set_defaults(func=cmd_compress)
    s = sub.add_parser("serve", help="the HTTP API over a bundle (key for writes: $OMNIREC_API_KEY)")
    s.add_argument("--bundle", required=True, help="a folder written by `omnirec train`")
    s.add_argument("--config", help="scenarios TOML (default: built-in `home` and `similar`)")
    s.add_argument("--store", default="omnirec-events.db", help="SQLite file or postgresql:// URL (default: %(default)s)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=_number(int, 1, 65535), default=8000)
    s.add_argument("--workers", type=POSITIVE_INT, default=1, help="server processes; they share the event store and "
                   "follow each other's reloads (default: %(default)s)")
    s.add_argument("--quiet", action="store_true", help="log warnings only")
    s.set_defaults(func=cmd_serve)
    return parser


def _data_arguments(p: argparse.ArgumentParser) -> None:
    """The options that name the data: a benchmark dataset, or a file with its format and columns."""
    p.add_argument("--dataset", choices=list(DATASETS), help="a named benchmark dataset")
    p.add_argument("--data-dir", help="folder holding the benchmark datasets")
    p.add_argument("--path", help="a data file (or folder for movielens)")
    p.add_argument("--format", choices=FORMATS, help="format of --path")
    p.add_argument("--user-col", default="user_id", help="csv: user column (default: %(default)s)")
    p.add_argument("--item-col", default="item_id", help="csv: item column (default: %(default)s)")
    p.add_argument("--time-col", default="timestamp", help="csv: time column; '' = file order (default: %(default)s)")
    p.add_argument("--rating-col", default=None, help="csv: rating column (optional)")
    p.add_argument("--items", help="item catalogue (CSV/TSV/Parquet) keyed by --item-col, for text models")
    p.add_argument("--text-cols", help="catalogue columns joined into the item text, comma-separated")
    p.add_argument("--user-attributes", help="user table (CSV/TSV/Parquet) keyed by --user-col; its other columns "
                   "are attributes (for twotower)")


def _data_source(args: argparse.Namespace) -> dict[str, Any]:
    """The data options as the `[data]` table of a training config."""
    keys = [f.name for f in dataclasses.fields(DataConfig)]
    return {k: str(getattr(args, k)) for k in keys if getattr(args, k, None) not in (None, "")}


def cmd_profile(args: argparse.Namespace) -> int:
    """Print the data's traits; save them as JSON and a figure with --out."""
    from omnirec.profile import format_profile, profile_dataset, save_profile

    dataset = _load_for_evaluate(args, CleanConfig())
    traits = save_profile(dataset, args.out) if args.out else profile_dataset(dataset)
    print(format_profile(traits))
    if args.out:
        print(f"saved {args.out}/profile.json and {args.out}/profile.png")
    return 0


def cmd_auto(args: argparse.Namespace) -> int:
    """Choose, tune and train a model within a time budget; report, chosen config and bundle in --out."""
    from omnirec.auto import run_auto

    dataset = _load_for_evaluate(args, CleanConfig())
    doc = run_auto(dataset, args.out, args.budget_minutes, _data_source(args), seed=args.seed)
    print(doc["chosen"]["why"])
    print(f"test NDCG@10 {doc['test']['ndcg@10']:.4f}; bundle {doc['bundle']}; report {args.out}/report.md; "
          f"config {args.out}/chosen.toml ({doc['seconds']['total'] / 60:.1f} min)")
    return 0


def _one_line(text: str) -> str:
    """`text` on one line: messages of other libraries (polars, argparse) can span several."""
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _error_message(exc: BaseException) -> str | None:
    """The message of a failure the user can act on (bad input, flags, files, network); None otherwise.

    >>> _error_message(FileNotFoundError(2, "No such file or directory", "data.csv"))
    'data.csv: No such file or directory'
    >>> _error_message(SystemExit("error: give --user")), _error_message(RuntimeError("boom"))
    ('give --user', None)
    """
    if isinstance(exc, SystemExit):  # `raise SystemExit("error: ...")` in the commands
        return exc.code.removeprefix("error: ") if isinstance(exc.code, str) else None
    if isinstance(exc, UnknownIdError):
        return str(exc.args[0]) if exc.args else "unknown id"
    if isinstance(exc, KeyError):  # a key that the user's data or file lacks
        return f"missing key {exc.args[0]!r}" if exc.args else "missing key"
    if isinstance(exc, urllib.error.HTTPError):
        return f"{exc.url}: HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"network error: {exc.reason}"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc}"
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"invalid TOML: {exc}"
    if isinstance(exc, OSError) and exc.filename is not None:  # permission denied, is a directory, ...
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, (UsageError, ValueError, OSError)):  # ConfigError and DataFormatError are ValueErrors
        return str(exc) or type(exc).__name__
    return None


def _fail(exc: BaseException) -> int:
    """Print the one `error:` line for `exc` (and its traceback with OMNIREC_DEBUG=1); the exit code."""
    if os.environ.get("OMNIREC_DEBUG") == "1":
        traceback.print_exception(exc)
    if isinstance(exc, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        return 130
    message = _error_message(exc)
    if message is None:
        message = f"internal error: {type(exc).__name__}: {exc} (please report)"
    print(f"error: {_one_line(message)}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `omnirec` command: every failure is one `error: ...` line on stderr and exit code
    2 (130 when interrupted); OMNIREC_DEBUG=1 also prints the traceback.

    >>> main(["recommend", "--bundle", "b", "-k", "0"])
    2
    """
    try:
        args = make_parser().parse_args(argv)
        return args.func(args)
    except SystemExit as exc:  # --help exits 0; the commands' `raise SystemExit("error: ...")` exit 2
        if not isinstance(exc.code, str):
            return 0 if exc.code is None else exc.code
        return _fail(exc)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the one place every failure is reported
        return _fail(exc)


if __name__ == "__main__":
    sys.exit(main())
