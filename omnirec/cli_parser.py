"""What the `omnirec` command line accepts (the argument parser, its number types) and how a failure
is reported: one `error:` line naming the flag, file or key, never a traceback. The commands themselves
are in `omnirec.cli`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import tomllib
import traceback
import urllib.error
from collections.abc import Callable
from typing import Any, NoReturn

from omnirec.data.datasets import DATASETS, FORMATS, DataConfig
from omnirec.data.ids import UnknownIdError
from omnirec.models import MODELS


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
    _evaluate_arguments(sub.add_parser("evaluate", help="full-ranking leave-one-out evaluation of models on a dataset"))
    pr = sub.add_parser("profile", help="the data's traits that decide the model: printed, and as JSON + PNG")
    _data_arguments(pr)
    pr.add_argument("--out", help="folder for profile.json and profile.png")
    au = sub.add_parser("auto", help="choose and tune a model within a time budget; test it once; bundle + report")
    _data_arguments(au)
    au.add_argument("--budget-minutes", type=_number(float, 0, low_open=True), required=True,
                    help="wall-clock budget for the whole run")
    au.add_argument("--out", required=True, help="folder for report.md/json, search.png, chosen.toml and bundle/")
    au.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="train one model from a TOML config, evaluate it and save a bundle")
    t.add_argument("--config", required=True, help="TOML: model, out, [data], [clean], [models.<name>]")
    t.add_argument("--out", help="bundle folder (overrides the config's out)")
    t.add_argument("--checkpoint-dir", help="write checkpoints here and resume from one found there")
    t.add_argument("--init-from", help="a bundle whose weights training starts from (textseq: transfer between catalogues)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    _bundle_commands(sub)
    c = sub.add_parser("compress", help="a smaller copy of a bundle: int8 (or fp16) weights, compressed files")
    c.add_argument("--bundle", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--weights", choices=("int8", "fp16"), default="int8")
    s = sub.add_parser("serve", help="the HTTP API over a bundle (key for writes: $OMNIREC_API_KEY)")
    s.add_argument("--bundle", required=True, help="a folder written by `omnirec train`")
    s.add_argument("--config", help="scenarios TOML (default: built-in `home` and `similar`)")
    s.add_argument("--store", default="omnirec-events.db", help="SQLite file or postgresql:// URL (default: %(default)s)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=_number(int, 1, 65535), default=8000)
    s.add_argument("--workers", type=POSITIVE_INT, default=1, help="server processes; they share the event store and "
                   "follow each other's reloads (default: %(default)s)")
    s.add_argument("--quiet", action="store_true", help="log warnings only")
    return parser


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `omnirec evaluate`: the data, the models, the split, the cut-offs and the outputs."""
    _data_arguments(p)
    p.add_argument("--models", default="pop,itemknn,als,bpr,markov", help="comma-separated (known: %s)" % ",".join(MODELS))
    p.add_argument("--split", choices=("loo", "cold-items", "cold-users"), default="loo",
                   help="loo: leave-one-out; cold-items: leave-one-out with cold items kept out of training, "
                        "cold and warm test targets also reported apart; cold-users: a fraction of users held "
                        "out of training entirely, reported apart (default: %(default)s)")
    p.add_argument("--cold-quantile", type=FRACTION, default=0.8,
                   help="cold-items: items first seen at or after this time quantile are cold (default: %(default)s)")
    p.add_argument("--cold-frac", type=FRACTION, default=0.0,
                   help="cold-items: instead, this fraction of items at random (for data without a clock); "
                        "cold-users: the fraction of users held out (default 0.1)")
    p.add_argument("--k", type=_cutoffs, default="10,20", help="cut-offs, comma-separated (default: %(default)s)")
    p.add_argument("--json", help="where to write the result document (default: <--out>/results.json with --out, "
                   "else evaluate-results.json)")
    p.add_argument("--config", help="TOML with [clean] and [models.<name>] tables")
    p.add_argument("--out", help="also save models, id maps, per-user values and a plot here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _bundle_commands(sub: Any) -> None:  # noqa: ANN401 - argparse's private subparsers action
    """`omnirec recommend` and `omnirec retrain`: the commands that read a saved bundle."""
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
    rt = sub.add_parser("retrain", help="train again on the base data plus the stored feedback; swap it into a server")
    rt.add_argument("--bundle", help="the bundle to retrain: its run config and the data it was trained on")
    rt.add_argument("--config", help="a run config TOML instead (model, [data], [models.<name>]): its data is read again")
    rt.add_argument("--store", required=True, help="the server's event store: SQLite file or postgresql:// URL")
    rt.add_argument("--out", help="the new bundle folder (overrides the config's out)")
    rt.add_argument("--reload", help="a running server's base URL: ask it to swap to the new bundle ($OMNIREC_API_KEY)")
    rt.add_argument("--checkpoint-dir", help="write checkpoints here and resume from one found there")
    rt.add_argument("--quiet", action="store_true", help="no progress bars")


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
