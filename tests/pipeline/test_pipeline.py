"""The final-list pipeline: sources, merging, ranking, re-ranking, fallback, faithful explanations, scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from omnirec.bundle import Bundle
from omnirec.cli import main
from omnirec.config import ConfigError
from omnirec.data.histories import Histories
from omnirec.evaluate.ranking import full_ranking_eval, list_eval
from omnirec.models import ItemKNN, Markov
from omnirec.pipeline.ann import IndexConfig, VectorIndex, exact_search, recall_at_k
from omnirec.pipeline.pipeline import Pipeline, merge
from omnirec.pipeline.rank import LearnedRanker, ModelRanker
from omnirec.pipeline.rerank import RerankConfig, mmr
from omnirec.pipeline.scenario import PipelineData, ScenarioConfig, build_pipeline, parse_scenarios, source
from omnirec.pipeline.sources import ModelSource, PopularSource, SourceHits, decayed_counts


@pytest.fixture(scope="module")
def setup(tiny_dataset, tiny_split):
    """A fitted item-kNN and the pipeline data over the test histories, with 3 categories and text vectors."""
    train = tiny_split.train_data(tiny_dataset.item_text)
    model = ItemKNN().fit(train)
    rng = np.random.default_rng(0)
    n = tiny_dataset.n_items
    categories = np.r_[0, rng.integers(1, 4, n)]
    data = PipelineData(model, tiny_split.histories("test"), tiny_dataset.items,
                        text_vectors=rng.standard_normal((n + 1, 16)).astype(np.float32),
                        categories=categories, category_names=["", "red", "green", "blue"])
    return model, data, train


ALL_SOURCES = (source("model", n=40), source("cooccurrence", n=30), source("content", n=20),
               source("popular", n=20, per_category=True), source("new_items", n=10, max_interactions=3))


def scenario(**changes) -> ScenarioConfig:
    return ScenarioConfig(**{"sources": ALL_SOURCES, "k": 10, **changes})


def history_of(batch, row):
    return set(batch.items[batch.indptr[row] : batch.indptr[row + 1]].tolist())


def test_merge_keeps_every_source_that_proposed_an_item():
    a = SourceHits(np.array([[5, 7, 0]]), np.array([[3.0, 2.0, -np.inf]]), np.zeros((1, 3), int), np.zeros((1, 3)))
    b = SourceHits(np.array([[7, 9]]), np.array([[1.0, 0.5]]), np.array([[4, 4]]), np.array([[0.8, 0.6]]))
    cands = merge([a, b])
    assert sorted(cands.ids[0].tolist()) == [5, 7, 9]
    col = cands.ids[0].tolist().index(7)
    assert cands.ranks[0, col].tolist() == [2, 1]  # 7 is second for a, first for b
    assert cands.cited[0, col, 1] == 4 and cands.strength[0, col, 1] == pytest.approx(0.8)
    assert np.isnan(cands.scores[0, cands.ids[0].tolist().index(9), 0])  # 9 came from b only


def test_sources_never_propose_history_items(setup):
    _, data, _ = setup
    pipe = build_pipeline(scenario(), data)
    batch = data.histories.batch(np.arange(1, 60))
    for name, source in pipe.sources.items():
        hits = source.retrieve(batch, 30)
        for row in range(len(batch)):
            proposed = set(hits.ids[row][hits.ids[row] > 0].tolist())
            assert not proposed & history_of(batch, row), name


def test_reasons_are_faithful_to_the_history_and_the_real_similarities(setup):
    _, data, _ = setup
    pipe = build_pipeline(scenario(), data)
    batch = data.histories.batch(np.arange(1, 80))
    text = data.vectors("text")
    sim = data.similarity()
    counts = data.counts(0.0)
    checked = {"cooccurrence": 0, "content": 0, "popular": 0, "new_items": 0}
    for row, recs in enumerate(pipe.recommend(batch, k=10)):
        history = history_of(batch, row)
        for rec in recs:
            source, cited, strength = rec.evidence["source"], rec.evidence["cited"], rec.evidence["strength"]
            assert rec.reason and source in rec.sources
            if source in ("cooccurrence", "content") or (source == "new_items" and cited):
                assert cited in history, (source, cited)
                assert data.name_of(cited) in rec.reason
                real = sim[cited, rec.item] if source == "cooccurrence" else float(text[cited] @ text[rec.item])
                assert strength == pytest.approx(real, abs=1e-5)
                assert f"{strength:.2f}" in rec.reason
            if source == "popular":
                assert strength == pytest.approx(counts[rec.item])
                if cited:
                    assert data.categories[rec.item] == cited
                    assert data.categories[rec.item] in data.categories[list(history)]
                    assert data.category_names[cited] in rec.reason
            checked[source] = checked.get(source, 0) + 1
    assert checked["cooccurrence"] > 0


def test_every_source_explains_with_real_evidence(setup):
    """Each source's hits, not only the listed ones: cited items are in the history, values are real."""
    _, data, _ = setup
    pipe = build_pipeline(scenario(), data)
    batch = data.histories.batch(np.arange(1, 40))
    text, sim = data.vectors("text"), data.similarity()
    for name in ("cooccurrence", "content", "new_items"):
        hits = pipe.sources[name].retrieve(batch, 10)
        for row in range(len(batch)):
            for item, cited, strength in zip(hits.ids[row], hits.cited[row], hits.strength[row], strict=True):
                if item == 0:
                    continue
                assert cited in history_of(batch, row)
                real = sim[cited, item] if name == "cooccurrence" else float(text[cited] @ text[item])
                assert strength == pytest.approx(real, abs=1e-5)


def test_rules_blocked_seen_caps_and_pins(setup):
    _, data, _ = setup
    batch = data.histories.batch(np.arange(1, 50))
    free = build_pipeline(scenario(), data).recommend_ids(batch, 10)
    blocked = int(free[0, 0])
    label = data.items.labels[blocked - 1]
    pin = data.items.labels[int(free[1, 5]) - 1]
    rules = RerankConfig(blocked=(label,), category_cap=4, pins={pin: 1})
    pipe = build_pipeline(scenario(rerank=rules), data)
    lists = pipe.recommend(batch, k=10)
    for row, recs in enumerate(lists):
        items = [r.item for r in recs]
        assert len(items) == 10 and len(set(items)) == 10
        assert blocked not in items
        assert items[0] == data.items.encode([pin])[0] and recs[0].sources == ("pinned",)
        assert not set(items[1:]) & history_of(batch, row)
        cats = np.bincount(data.categories[items[1:]], minlength=4)
        assert cats[1:].max() <= 4


def test_unknown_rule_item_raises_with_its_name(setup):
    _, data, _ = setup
    with pytest.raises(ValueError, match="no-such-item"):
        build_pipeline(scenario(rerank=RerankConfig(blocked=("no-such-item",))), data)


def test_fallback_fills_empty_histories_to_k(setup):
    _, data, _ = setup
    empty = Histories(np.zeros(4, dtype=np.int64), np.zeros(0, dtype=np.int64)).batch([1, 2])
    popular = (np.argsort(-data.counts(0.0)[1:], kind="stable") + 1).tolist()
    only_model = build_pipeline(scenario(sources=(source("model", n=40),), fallback=("popular", "new_items")), data)
    for recs in only_model.recommend(empty, k=10):  # the model has nothing to go on: the chain fills the list
        assert [r.item for r in recs] == popular[:10]
        assert all(r.sources == ("popular",) and r.evidence["fallback"] == 1 for r in recs)
        assert all(r.reason.startswith("popular right now") for r in recs)
    mixed = build_pipeline(scenario(fallback=("popular", "new_items")), data)
    for recs in mixed.recommend(empty, k=10):
        assert len(recs) == 10 and len({r.item for r in recs}) == 10
        assert all(r.reason and set(r.sources) <= {"popular", "new_items"} for r in recs)
        assert set(popular[:3]) <= {r.item for r in recs}


def test_mmr_at_zero_is_the_ranking_and_diversity_raises_ild(setup):
    _, data, _ = setup
    rel = torch.rand(30, 50)
    order = mmr(rel, None, k=10, diversity=0.0)
    assert torch.equal(order, torch.argsort(rel, dim=1, descending=True)[:, :10])
    pipe = build_pipeline(scenario(diversity_vectors="interactions", rerank=RerankConfig(diversity=0.0)), data)
    pipe.item_vectors = torch.from_numpy(data.vectors("interactions"))
    batch = data.histories.batch(np.arange(1, 100))
    vectors = data.vectors("interactions")

    def ild(lists):
        unit = vectors[lists]  # (B, k, D)
        sims = np.einsum("bkd,bjd->bkj", unit, unit)
        k = lists.shape[1]
        return float((1 - (sims.sum((1, 2)) - k) / (k * (k - 1))).mean())

    plain = pipe.recommend_ids(batch, 10)
    diverse = pipe.with_rerank(RerankConfig(diversity=0.7)).recommend_ids(batch, 10)
    assert ild(diverse) > ild(plain)


def test_pipeline_of_one_model_equals_the_models_evaluation(setup, tiny_split):
    """Reference check: a pipeline that only relays a model's top-k scores exactly as the model."""
    model, data, train = setup
    pipe = Pipeline({"knn": ModelSource(model)}, model.n_items, ModelRanker(model), n_candidates=10)
    histories, targets = tiny_split.histories("test"), tiny_split.targets("test")
    direct = full_ranking_eval(model, histories, targets, ks=(10,))
    relayed = list_eval(lambda b: pipe.recommend_ids(b, 10), histories, targets, model.n_items, ks=(10,))
    for metric in ("ndcg@10", "hr@10", "mrr@10"):
        assert relayed.summary[metric] == pytest.approx(direct.summary[metric])


def test_learned_ranker_fits_on_validation_and_ranks(tiny_dataset, tiny_split):
    train = tiny_split.train_data(tiny_dataset.item_text)
    model = Markov().fit(train)
    valid_h, valid_t = tiny_split.histories("valid"), tiny_split.targets("valid")
    data = PipelineData(model, valid_h, tiny_dataset.items)
    pipe = build_pipeline(ScenarioConfig(sources=(source("model", n=30), source("popular", n=20)), ranker="fusion"), data)
    batch = valid_h.batch(np.flatnonzero(valid_t.lengths() > 0))
    ranker = LearnedRanker(train.item_counts, model=model).fit([(batch, pipe.candidates(batch), valid_t)])
    cands = pipe.candidates(batch)
    scores = ranker.rank(batch, cands)
    assert torch.isfinite(scores[torch.from_numpy(cands.ids > 0)]).all()
    assert torch.isneginf(scores[torch.from_numpy(cands.ids == 0)]).all()


def test_ann_index_finds_the_exact_neighbours():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:50] + 0.05 * rng.standard_normal((50, 16)).astype(np.float32)
    truth, _ = exact_search(torch.from_numpy(vectors), torch.from_numpy(queries), 10)
    ids = np.arange(100, 3100)
    for kind, wanted in (("hnsw", 0.9), ("ivf", 0.9), ("hnsw_sq8", 0.85), ("ivf_sq8", 0.85)):
        index = VectorIndex(vectors, ids=ids, config=IndexConfig(kind=kind))
        found, scores = index.search(queries, 10)
        assert recall_at_k(found, ids[truth]) >= wanted, kind
        assert np.all(np.diff(scores, axis=1) <= 1e-6)
    small = VectorIndex(vectors[:5], ids=ids[:5])
    found, scores = small.search(queries[:2], 8)
    assert small.kind == "exact" and found.shape == (2, 8)
    assert (found[:, 5:] == 0).all() and np.isneginf(scores[:, 5:]).all()


def test_scenarios_parse_and_reject_unknown_keys():
    doc = {"scenarios": {
        "home": {"k": 5, "sources": [{"kind": "model", "n": 50}, {"kind": "popular"}], "rerank": {"diversity": 0.3}},
        "new_user": {"ranker": "fusion", "sources": [{"kind": "popular"}], "fallback": ["popular", "new_items"]},
    }}
    parsed = parse_scenarios(doc)
    assert parsed["home"].rerank.diversity == 0.3 and parsed["new_user"].fallback == ("popular", "new_items")
    with pytest.raises(ConfigError, match="divrsity"):
        parse_scenarios({"scenarios": {"x": {"sources": [{"kind": "popular"}], "rerank": {"divrsity": 1}}}})
    with pytest.raises(ConfigError, match="unknown source kind 'populr'"):
        parse_scenarios({"scenarios": {"x": {"sources": [{"kind": "populr"}]}}})
    with pytest.raises(ConfigError, match=r"sources\[0\]"):
        parse_scenarios({"scenarios": {"x": {"sources": [{"kind": "popular", "nn": 3}]}}})



def test_a_source_refuses_the_options_of_another_kind():
    """Each source kind has its own config: an option that only another kind reads is an error naming
    the source and the keys it takes, not silently ignored (half_life belongs to `popular`)."""
    with pytest.raises(ConfigError, match=r"unknown key 'half_life' in x: \[scenarios.x\].sources\[1\] \(cooccurrence\); "
                                          r"known keys: n, name, recent"):
        parse_scenarios({"scenarios": {"x": {"sources": [{"kind": "popular", "half_life": 60.0},
                                                         {"kind": "cooccurrence", "half_life": 60.0}]}}}, where="x")
    assert source("popular", half_life=60.0).half_life == 60.0 and source("new_items", max_interactions=2).n == 100


SCENARIOS_TOML = """
[scenarios.home]
k = 5
sources = [{kind = "model", n = 50}, {kind = "cooccurrence", n = 30}, {kind = "popular", n = 20}]
rerank = {diversity = 0.2}

[scenarios.new_user]
ranker = "fusion"
sources = [{kind = "popular", n = 20}]
"""


def test_cli_recommend_with_a_scenario(tmp_path, tiny_dataset, tiny_split, capsys):
    model = ItemKNN().fit(tiny_split.train_data())
    Bundle.create(model, tiny_dataset).save(tmp_path / "bundle")
    (tmp_path / "scenarios.toml").write_text(SCENARIOS_TOML)
    user = tiny_dataset.users.labels[0]
    args = ["recommend", "--bundle", str(tmp_path / "bundle"), "--scenarios", str(tmp_path / "scenarios.toml")]
    assert main([*args, "--scenario", "home", "--user", user, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["items"]) == 5 and all(row["reason"] and row["sources"] for row in doc["items"])
    assert main([*args, "--scenario", "new_user", "-k", "4"]) == 0  # anonymous: the fallback chain
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
    assert main([*args, "--scenario", "nope", "--user", user]) == 2
    assert "has: home, new_user" in capsys.readouterr().err


def test_the_example_scenarios_file_runs(tmp_path, tiny_dataset, tiny_split, capsys):
    example = Path(__file__).resolve().parents[2] / "examples" / "scenarios.toml"
    model = ItemKNN().fit(tiny_split.train_data())
    Bundle.create(model, tiny_dataset).save(tmp_path / "bundle")
    args = ["recommend", "--bundle", str(tmp_path / "bundle"), "--scenarios", str(example), "--json"]
    item = tiny_dataset.items.labels[3]
    assert main([*args, "--scenario", "item_page", "--item", item]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["items"]) == 8 and item not in [row["item"] for row in doc["items"]]
    assert all("with this item" in row["reason"] for row in doc["items"] if row["sources"] == ["cooccurrence"])
    for name in ("home", "new_user"):
        assert main([*args, "--scenario", name, "--user", tiny_dataset.users.labels[1]]) == 0
        assert len(json.loads(capsys.readouterr().out)["items"]) == 10


def test_popular_decays_with_time_and_follows_the_users_categories():
    items, times = np.array([1, 1, 2, 3]), np.array([0, 10, 20, 20])
    counts = decayed_counts(items, times, n_items=3, half_life=10.0)
    assert counts.tolist() == pytest.approx([0.0, 0.25 + 0.5, 1.0, 1.0])  # now = 20
    assert decayed_counts(items, times, 3, half_life=0.0).tolist() == [0, 2, 1, 1]
    categories = np.array([0, 1, 2, 2, 1])
    source = PopularSource(np.array([0, 5.0, 4.0, 3.0, 1.0]), categories, ["", "a", "b"])
    batch = Histories(np.array([0, 0, 1, 1]), np.array([3])).batch([1, 2])  # user 1 saw item 3 (category b)
    hits = source.retrieve(batch, 3)
    assert hits.ids[0].tolist() == [2, 0, 0] and hits.cited[0, 0] == 2  # only category b, item 3 seen
    assert hits.ids[1].tolist() == [1, 2, 3] and (hits.cited[1] == 0).all()  # no history: overall
    assert "popular in b" in source.explain(2, 4.0, 1, str)


def test_cli_content_scenario_reads_the_bundles_item_text(tmp_path, tiny_dataset, tiny_split, capsys, monkeypatch):
    monkeypatch.setenv("OMNIREC_CACHE", str(tmp_path / "cache"))
    model = ItemKNN().fit(tiny_split.train_data())
    Bundle.create(model, tiny_dataset).save(tmp_path / "bundle")
    assert Bundle.load(tmp_path / "bundle").item_text == tiny_dataset.item_text
    (tmp_path / "s.toml").write_text('[scenarios.similar]\nranker = "fusion"\n'
                                     'sources = [{kind = "content", n = 20, recent = 1}]\n')
    item = tiny_dataset.items.labels[0]
    assert main(["recommend", "--bundle", str(tmp_path / "bundle"), "--scenarios", str(tmp_path / "s.toml"),
                 "--scenario", "similar", "--item", item, "--json", "-k", "5"]) == 0
    rows = json.loads(capsys.readouterr().out)["items"]
    assert len(rows) == 5 and all(row["sources"] == ["content"] and "close to this item" in row["reason"] for row in rows)


def test_embedding_source_retrieves_with_the_two_tower_item_tower(tiny_dataset, tiny_split):
    """The item tower's vectors feed the `embedding` source: its neighbours are the tower's nearest items."""
    from omnirec.models import TwoTower
    from omnirec.models.collaborative import pair_training
    from omnirec.models.twotower import TwoTowerConfig

    model = TwoTower(TwoTowerConfig(d_model=16, hidden=32, item_text=False,
                                    train=pair_training(epochs=2, progress=False))).fit(tiny_split.train_data())
    data = PipelineData(model, tiny_split.histories("test"), tiny_dataset.items)
    vectors = data.vectors("model")
    np.testing.assert_allclose(vectors[1:], model.item_embeddings()[1:], rtol=1e-5, atol=1e-6)
    pipe = build_pipeline(ScenarioConfig(sources=(source("embedding", n=10),), ranker="fusion"), data)
    batch = tiny_split.histories("test").batch(np.arange(1, 30))
    hits = pipe.sources["embedding"].retrieve(batch, 10)
    checked = 0
    for row in range(len(batch)):
        for item, cited, strength in zip(hits.ids[row], hits.cited[row], hits.strength[row], strict=True):
            if item:  # each hit cites a history item and their cosine in the item tower's space
                assert cited in history_of(batch, row)
                assert strength == pytest.approx(float(vectors[cited] @ vectors[item]), abs=1e-4)
                checked += 1
    assert checked > 100
