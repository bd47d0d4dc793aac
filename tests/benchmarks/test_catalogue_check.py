"""benchmarks/catalogue_check.py: a catalogue in CSV form through `omnirec evaluate` and `train`, its bars."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import polars as pl
import pytest

from omnirec.data.synthetic import SyntheticConfig, generate

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
_SPEC = importlib.util.spec_from_file_location("catalogue_check", ROOT / "benchmarks" / "catalogue_check.py")
check = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(check)

QUICK = """
[models.hybrid.text]
d_model = 16
[models.hybrid.text.train]
epochs = 2
[models.sasrec]
d_model = 16
[models.sasrec.train]
epochs = 2
"""


def test_the_bars_compare_the_text_model_with_each_peer_on_every_group() -> None:
    row = lambda v: {"ndcg@10": v}  # noqa: E731
    table = lambda h, e, t, s: {"hybrid": row(h), "ease": row(e), "tfidf": row(t), "sasrec": row(s)}  # noqa: E731
    doc = {"loo": {"result": {"results": table(0.1, 0.09, 0.05, 0.2)}},
           "cold": {"result": {"groups": {"cold": table(0.06, 0.0, 0.05, 0.0), "warm": table(0.1, 0.09, 0.08, 0.11)}}}}
    bars = {b["bar"]: b["met"] for b in check.bars(doc, "hybrid")}
    assert bars["loo: hybrid > ease"] and not bars["loo: hybrid > sasrec"]
    assert bars["cold targets: hybrid > tfidf"] and not bars["warm targets: hybrid > sasrec"]
    assert not bars["cold targets: hybrid >= 1.25 x tfidf"]  # 0.06 < 1.25 * 0.05
    nothing = {"hybrid": row(0.0), "ease": row(0.0), "tfidf": row(0.0), "sasrec": row(0.0)}
    doc["cold"]["result"]["groups"]["cold"] = nothing  # no model found a cold target: no bar is met
    assert not any(b["met"] for b in check.bars(doc, "hybrid") if b["bar"].startswith("cold"))


def test_a_log_of_positions_has_no_clock() -> None:
    positions = pl.DataFrame({"u": [1, 1, 2], "t": [0, 1, 0]})
    assert not check.has_clock(positions, "u", "t")
    assert check.has_clock(positions.with_columns(pl.col("t") * 1_000_000 + 1_600_000_000), "u", "t")


def test_a_csv_catalogue_runs_through_evaluate_and_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inter, items = generate(SyntheticConfig(n_users=80, n_items=40, mean_length=10, seed=3))
    inter.write_csv(tmp_path / "log.csv")
    items.write_csv(tmp_path / "items.csv")
    (tmp_path / "quick.toml").write_text(QUICK)
    argv = ["catalogue_check.py", "--log", str(tmp_path / "log.csv"), "--items", str(tmp_path / "items.csv"),
            "--text-cols", "title,category", "--config", str(tmp_path / "quick.toml"), "--cold-by", "random"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(tmp_path / "pre")])
    args = check.parser().parse_args()
    pretrained = check.train(args, tmp_path / "pre", "bundle", None)  # stands in for another catalogue's
    assert pretrained["ndcg@10"] is not None and pretrained["best_epoch"] in (1, 2)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out), "--pretrained", str(tmp_path / "pre" / "bundle")])
    assert check.main() == 0
    doc = json.loads((out / "check.json").read_text())
    transfer = doc["transfer"]
    assert "--init-from" in transfer["init_from"]["command"] and len(transfer["scratch"]["valid_curve"]) == 2
    assert set(doc["loo"]["result"]["results"]) == {"hybrid", "ease", "tfidf", "sasrec"}
    assert set(doc["cold"]["result"]["groups"]) == {"cold", "warm"}
    assert len(doc["bars"]) == 3 + 3 + 3 + 1 and all(isinstance(b["met"], bool) for b in doc["bars"])
