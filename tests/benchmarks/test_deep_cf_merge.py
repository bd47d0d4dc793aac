"""deep_cf.py --merge: a dataset run in its own invocation joins the saved result with its own provenance."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
_SPEC = importlib.util.spec_from_file_location("deep_cf", BENCH / "deep_cf.py")
deep_cf = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(deep_cf)


def test_merge_replaces_a_dataset_of_the_same_name_and_keeps_each_ones_command() -> None:
    doc = {"command": "python benchmarks/deep_cf.py --datasets ml-100k,beauty", "code": "aaa",
           "datasets": [{"dataset": "ml-100k", "n": 1}, {"dataset": "beauty", "n": 1}]}
    other = {"command": "python benchmarks/deep_cf.py --datasets beauty --no-cold", "code": "bbb",
             "datasets": [{"dataset": "beauty", "n": 2}]}
    deep_cf.merge(doc, other)
    by_name = {d["dataset"]: d for d in doc["datasets"]}
    assert by_name["ml-100k"] == {"dataset": "ml-100k", "n": 1}  # untouched, the document's own provenance
    assert by_name["beauty"] == {"dataset": "beauty", "n": 2, "command": other["command"], "code": "bbb"}
    assert "cold_users" not in doc  # the other run had none: nothing is invented
    deep_cf.merge(doc, {"command": "c", "code": "ccc", "datasets": [], "cold_users": {"cold_users": 94}})
    assert doc["cold_users"] == {"cold_users": 94, "command": "c", "code": "ccc"} and len(doc["datasets"]) == 2
