"""README.md's benchmark figures against the saved results (benchmarks/readme_figures.py); runs no benchmark."""

from __future__ import annotations

import doctest
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "readme_figures.py"


def _module():
    spec = importlib.util.spec_from_file_location("readme_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rf = _module()
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def saved() -> dict[str, set[float]]:
    return rf.saved_numbers(rf.RESULTS)


def test_no_block_is_stale():
    assert rf.stale_blocks(README, rf.loader(rf.RESULTS)) == [], "run `make readme`"


def test_every_figure_outside_the_blocks_is_saved(saved):
    missing = rf.unsupported_figures(README, saved)
    assert missing == [], f"README figures in no file under benchmarks/results/: {missing}"


def test_check_passes_on_the_readme():
    assert rf.check(README, rf.RESULTS) == []


def test_every_not_measured_entry_is_in_the_readme():
    assert [s for s in rf.NOT_MEASURED if s not in README] == []


def test_a_number_edited_by_hand_in_a_block_makes_it_stale():
    block = next(rf.BLOCK.finditer(README))
    edited = README.replace(block[0], block[0].replace("0.", "9.", 1))
    assert edited != README
    assert rf.stale_blocks(edited, rf.loader(rf.RESULTS)) == [block["name"]]


def test_a_figure_missing_from_the_results_is_reported(saved):
    fake = "HNSW finds 97.8% of the top-10 in 0.15 ms; the tower reaches NDCG@10 0.98765 in 9.87 minutes.\n"
    assert [f.text for f in rf.unsupported_figures(fake, saved)] == ["0.98765", "9.87 minutes"]


def test_a_figure_is_checked_against_the_files_its_paragraph_cites(saved):
    cited = "The int8 bundle (`benchmarks/COMPRESSION.md`) keeps NDCG@10 at {}.\n\nOther: {}.\n"
    assert rf.unsupported_figures(cited.format("0.0597", "0.0597"), saved) == []  # the int8 row
    # a hand edit that happens to be some other file's number still fails where the paragraph cites
    edited = rf.unsupported_figures(cited.format("0.0573", "0.0573"), saved)
    assert [(f.line, f.text, f.cites) for f in edited] == [(1, "0.0573", ("benchmarks/COMPRESSION.md",))]
    problems = rf.check(cited.format("0.0573", "1.0"), rf.RESULTS)
    assert problems[-1] == "line 1: 0.0573 is not in benchmarks/COMPRESSION.md (at the README's rounding)"


def test_code_blocks_and_settings_are_not_figures():
    fake = (
        "Set `lr = 0.001` and `temperature = 0.05`.\n\n"
        "```toml\ndropout = 0.2345\n```\n\n"
        "Bodies are refused past 256 KiB; torch 2.13.0.\n"
        "<!-- figures:x -->\n0.98765\n<!-- /figures:x -->\n"
    )
    assert rf.quoted_figures(fake) == []


def test_figures_are_found_with_units_and_line_numbers():
    fake = "a\n2.4 ms, 10.6 MiB, 3.8x smaller, p = 0.11, 22% more, 1e-5\n12 trials, NDCG@10, p99, 2-core\n"
    assert [(f.line, f.text) for f in rf.quoted_figures(fake)] == [
        (2, "2.4 ms"), (2, "10.6 MiB"), (2, "3.8x"), (2, "0.11"), (2, "22%"), (2, "1e-5")]


def test_a_summary_over_seeds_is_shown_as_mean_and_std():
    summary = {"mean": 0.05717, "std": 0.00081, "seeds": [0, 1, 2]}
    assert rf.fmt(summary, 4) == "0.0572 ± 0.0008"
    assert rf.fmt(0.05717, 4) == "0.0572"
    assert rf.seed_count({"results": {"sasrec": {"ndcg@10": summary}}}) == 3


def over_three_seeds(node):
    """The document with every `ndcg@10` (a number, or already a summary) a summary over three seeds with std 0.001."""
    if isinstance(node, dict):
        return {k: {"mean": v if isinstance(v, float) else v["mean"], "std": 0.001, "seeds": [0, 1, 2]}
                if k == "ndcg@10" and (isinstance(v, float) or isinstance(v, dict) and "mean" in v)
                else over_three_seeds(v) for k, v in node.items()}
    return [over_three_seeds(v) for v in node] if isinstance(node, list) else node


@pytest.mark.parametrize("name", ["deep_cf", "sequential", "compression", "text", "pipeline"])
def test_renderers_show_mean_and_std_over_seeds(name):
    load = rf.loader(rf.RESULTS)
    lines = rf.RENDERERS[name](lambda path: over_three_seeds(load(path)))
    assert any(" ± 0.0010" in line for line in lines)
    # the sequential table has a `seeds` column, its rows being over different numbers of seeds
    assert ("mean ± std over the row's seeds" if name == "sequential" else "mean ± std over 3 seeds") in lines[-1]


def test_a_summary_of_one_seed_shows_its_value_without_a_spread():
    one = {"mean": 0.0335, "std": 0.0, "values": [0.0335]}
    assert rf.fmt(one, 4) == "0.0335"
    assert rf.fmt({**one, "std": 0.0004, "values": [0.0331, 0.0339]}, 4) == "0.0335 ± 0.0004"


def test_deep_cf_marks_the_best_mean_over_seeds():
    load = rf.loader(rf.RESULTS)
    first = over_three_seeds(load("deep_cf.json"))["datasets"][0]
    figures = {n: m["test"]["ndcg@10"] for n, m in first["models"].items()}
    best = max(figures, key=lambda n: rf.mean_of(figures[n]))
    row = rf.deep_cf(lambda path: over_three_seeds(load(path)))[2]
    assert row.startswith(f"| `{first['dataset']}` | {rf.fmt(next(iter(figures.values())), 4)} |")
    assert f"| **{rf.fmt(figures[best], 4)}** |" in row and row.count("**") == 2


def test_rewrite_is_atomic_and_idempotent(tmp_path):
    readme = tmp_path / "README.md"
    stale = README.replace(next(rf.BLOCK.finditer(README))["body"], "old figures\n", 1)
    readme.write_text(stale, encoding="utf-8")
    rf.main(["--readme", str(readme)])
    assert readme.read_text(encoding="utf-8") == README
    assert rf.main(["--readme", str(readme), "--check"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]


def test_an_unknown_block_is_an_error():
    with pytest.raises(ValueError, match="figures:nosuch"):
        rf.render_readme("<!-- figures:nosuch -->\n<!-- /figures:nosuch -->", rf.loader(rf.RESULTS))


def test_docstring_examples():
    assert doctest.testmod(rf).failed == 0
