"""`omnirec ...` subcommands. Parses arguments, builds objects by name, calls the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from omnirec.bundle import Bundle, bundle_folder
from omnirec.cli_parser import _data_source, _fail, make_parser
from omnirec.config import ConfigError, from_dict, load_toml
from omnirec.data.clean import CleanConfig
from omnirec.data.dataset import Dataset
from omnirec.data.datasets import DataConfig, load_data
from omnirec.data.split import Split, split_by_name
from omnirec.data.synthetic import SyntheticConfig, generate
from omnirec.experiment import format_summary, run_experiment, save_report
from omnirec.models import MODELS, build_models
from omnirec.run import RunConfig, start_from_bundle, train_bundle
from omnirec.train import distributed
from omnirec.utils import atomic_write_text

CONFIG_SECTIONS = ("clean", "models")


def _read_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    data = load_toml(path)
    unknown = [k for k in data if k not in CONFIG_SECTIONS]
    if unknown:
        raise ConfigError(f"{path}: unknown section [{unknown[0]}]; known: {', '.join(CONFIG_SECTIONS)}")
    return data


def cmd_quickstart(args: argparse.Namespace) -> int:
    """Synthetic catalogue -> baselines -> evaluation table -> saved artefacts."""
    start = time.perf_counter()
    inter, items = generate(SyntheticConfig(n_users=args.users, n_items=args.items, seed=args.seed))
    dataset = Dataset.from_frames(inter, items, name="synthetic")
    print(f"synthetic catalogue: {dataset.n_users:,} users, {dataset.n_items:,} items, "
          f"{dataset.interactions.height:,} interactions (seed {args.seed})")
    quick = [name for name, cls in MODELS.items() if cls.quick]
    report = run_experiment(dataset, build_models(quick, {}, dataset), progress=True)
    document = report.to_json()
    print(format_summary(dataset, document))
    paths = save_report(report, args.out)
    markov, pop = document["results"]["markov"]["ndcg@10"], document["results"]["pop"]["ndcg@10"]
    verdict = "beats" if markov > pop else "does NOT beat"
    print(f"\nmarkov {verdict} popularity: ndcg@10 {markov:.4f} vs {pop:.4f}")
    print(f"saved to {args.out}: " + ", ".join(p.name for p in paths.values()) + ", models/, users.json, items.json")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _load_for_evaluate(args: argparse.Namespace, clean: CleanConfig) -> Dataset:
    """The dataset the data flags name (their errors name the flags)."""
    source = DataConfig(**_data_source(args))
    problem = source.problem(flags=True)
    if problem:
        raise SystemExit(f"error: {problem}")
    return load_data(source, clean)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Load data, fit the named models, full-ranking evaluation, table + JSON."""
    config = _read_config(args.config)
    clean = from_dict(CleanConfig, config.get("clean", {}), where="[clean]")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names:
        raise SystemExit(f"error: --models names no model; give some of {', '.join(MODELS)}")
    dataset = _load_for_evaluate(args, clean)
    built = build_models(names, config.get("models", {}), dataset)
    models = {n: m.with_loop_options(False if args.quiet else None) for n, m in built.items()}
    # split before anything is printed: a split that fails is its one error line
    split = split_by_name(dataset, args.split, args.cold_frac or 0.0, args.cold_quantile)
    print(f"cleaning {dataset.name}:\n{dataset.report}", file=sys.stderr)
    report = run_experiment(dataset, models, ks=args.k, split=split, progress=not args.quiet)
    document = report.to_json()
    print(format_summary(dataset, document))
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


def _train_and_save(run: RunConfig, args: argparse.Namespace, dataset: Dataset | None = None,
                    split: Split | None = None, extra: dict[str, Any] | None = None) -> None:
    model = run.build_model().with_loop_options(False if args.quiet else None, args.checkpoint_dir)
    if getattr(args, "init_from", None):
        model = start_from_bundle(model, args.init_from)
    bundle, report = train_bundle(run, model, dataset, split, progress=not args.quiet, extra=extra)
    if not distributed.is_main():  # under torchrun, rank 0 reports and writes the bundle
        return
    print(format_summary(report.dataset, report.to_json()))
    bundle.save(run.out)
    print(f"saved bundle to {run.out}")


def cmd_train(args: argparse.Namespace) -> int:
    """Train one model from a TOML config, evaluate it on the test split, save a bundle."""
    _train_and_save(RunConfig.for_command(args.config, None, args.out), args)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """Train again on the bundle's data (or the config's) plus the stored feedback (deleted users left
    out), then optionally tell a running server to swap to the new bundle."""
    from omnirec.serve.retrain import check_server, request_reload, retrain_data

    if args.config is None and args.bundle is None:
        raise SystemExit("error: give --bundle DIR (retrain it as it was made) or --config FILE (a run config)")
    if args.reload:  # a wrong key or URL is found now, not after the training
        check_server(args.reload)
    bundle = Bundle.load(args.bundle) if args.config is None else None  # read once: its run and its data
    run = RunConfig.for_command(args.config, bundle, args.out, where=args.bundle)
    base = bundle.dataset() if bundle is not None else load_data(run.data, run.clean)
    dataset, split, summary = retrain_data(base, args.store, run.clean)
    print(f"retraining on {summary['base']:,} base interactions (minus {summary['dropped']:,} of "
          f"{summary['deleted_users']:,} deleted users) and {summary['events']:,} stored events", file=sys.stderr)
    _train_and_save(run, args, dataset, split, {"retrain": summary})
    if args.reload:
        print(json.dumps(request_reload(args.reload, run.out)))
    return 0


def _show(answer: dict[str, Any], as_json: bool) -> None:
    """A final list as JSON, or as lines (with a note on stderr when it is not personal)."""
    if as_json:
        print(json.dumps(answer))
        return
    from omnirec.serve.service import format_list

    if not answer["personalized"]:
        print(f"note: {answer['reason']}", file=sys.stderr)
    print(format_list(answer))


def cmd_recommend(args: argparse.Namespace) -> int:
    """Top-k items for a user of a saved bundle, with titles and reasons: the model's list, a scenario's
    final list with --scenario (--item: an item page), or a text request with --query. A user the bundle
    does not know gets the popular fallback, said so (as the HTTP API does)."""
    from omnirec.serve.service import query_list, scenario_service

    if args.query is not None:
        if args.scenario is not None:
            raise SystemExit("error: --query is not part of scenarios yet; use it without --scenario")
        answer = query_list(Bundle.load(args.bundle), args.user, args.query, args.k or 10, args.query_weight)
        _show(answer, args.json)
        return 0
    if args.item is not None and args.scenario is None:
        raise SystemExit("error: --item needs --scenario (and --scenarios FILE): an item page is a scenario's list")
    if args.user is None and args.item is None and args.scenario is None:
        raise SystemExit("error: give --user, --query, or both (or --scenario for an anonymous visitor)")
    service = scenario_service(args.bundle, args.scenarios, args.scenario)
    name = next(iter(service.scenarios))
    k = args.k or service.scenarios[name].k
    if args.item is not None:
        if args.item not in service.current.bundle.items:
            raise SystemExit(f"error: item {args.item!r} is not in this bundle ({len(service.current.bundle.items):,} items)")
        answer = service.recommend(items=[args.item], scenario=name, k=k, page=True)
    else:
        answer = service.recommend(args.user, scenario=name, k=k)
    _show({**answer, "item": args.item}, args.json)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP API over a bundle."""
    from omnirec.serve.app import ServeConfig, serve

    bundle = bundle_folder(args.bundle)
    key = os.environ.get("OMNIREC_API_KEY", "")
    if not key:
        print("note: OMNIREC_API_KEY is not set: feedback, deletion and reload are refused", file=sys.stderr)
    config = ServeConfig(bundle=str(bundle), store=args.store, scenarios=args.config or "", api_key=key)
    serve(config, args.host, args.port, args.workers, quiet=args.quiet)
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    """A smaller copy of a bundle (int8 or fp16 weights, int32 histories, compressed files)."""
    from omnirec.compress import compress_bundle

    sizes = compress_bundle(args.bundle, args.out, args.weights)
    print(f"{args.out}: {sizes['after'] / 2**20:.2f} MiB (was {sizes['before'] / 2**20:.2f} MiB, "
          f"{sizes['before'] / max(sizes['after'], 1):.1f}x smaller)")
    return 0


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


COMMANDS = {"quickstart": cmd_quickstart, "evaluate": cmd_evaluate, "profile": cmd_profile, "auto": cmd_auto,
            "train": cmd_train, "recommend": cmd_recommend, "retrain": cmd_retrain, "compress": cmd_compress,
            "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `omnirec` command: every failure is one `error: ...` line on stderr and exit code
    2 (130 when interrupted); OMNIREC_DEBUG=1 also prints the traceback.

    >>> main(["recommend", "--bundle", "b", "-k", "0"])
    2
    """
    try:
        args = make_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except SystemExit as exc:  # --help exits 0; the commands' `raise SystemExit("error: ...")` exit 2
        if not isinstance(exc.code, str):
            return 0 if exc.code is None else exc.code
        return _fail(exc)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the one place every failure is reported
        return _fail(exc)


if __name__ == "__main__":
    sys.exit(main())
