"""textseq: inductive scoring of items never trained on, the restricted softmax, transfer and queries."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from omnirec.data.dataset import Dataset
from omnirec.data.histories import Histories
from omnirec.data.schema import ITEM
from omnirec.data.split import cold_items
from omnirec.features.text import TextEncoderConfig, encode_texts
from omnirec.models.layers import CausalEncoder
from omnirec.features.text_tuning import TuningConfig
from omnirec.models.textseq import TextSeq, TextSeqConfig, TextSeqNet, softmax_over, standardize
from omnirec.train import losses
from omnirec.train.loop import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"d_model": 16, "max_len": 20, "train": TrainConfig(epochs=2, batch_size=64, progress=False)}


def vectors(n_items: int, width: int = 12, seed: int = 0) -> np.ndarray:
    out = np.random.default_rng(seed).normal(size=(n_items + 1, width)).astype(np.float32)
    out[0] = 0
    return out


@pytest.fixture(scope="module")
def cold_split(tiny_dataset: Dataset):
    return cold_items(tiny_dataset.interactions, tiny_dataset.n_users, tiny_dataset.n_items, item_frac=0.2, seed=0)


def fitted(split, mode: str, n_items: int) -> TextSeq:
    model = TextSeq(TextSeqConfig(mode=mode, **TINY))
    model.item_vectors = vectors(n_items)
    return model.fit(split.train_data())


@pytest.mark.parametrize("mode", ["text", "id+text"])
def test_cold_items_are_scored_from_their_text(cold_split, tiny_dataset, mode):
    model = fitted(cold_split, mode, tiny_dataset.n_items)
    batch = cold_split.histories("test").batch(np.arange(1, 9))
    before = model.score(batch)[:, cold_split.cold]
    assert torch.isfinite(before).all() and before.std() > 0
    model.module.text[cold_split.cold[0]] = torch.from_numpy(vectors(1, seed=5)[1])  # new text, new scores
    after = model.score(batch)[:, cold_split.cold]
    assert not torch.equal(before[:, 0], after[:, 0])
    torch.testing.assert_close(before[:, 1:], after[:, 1:])


def test_cold_items_id_embeddings_stay_untouched(cold_split, tiny_dataset):
    model = fitted(cold_split, "id+text", tiny_dataset.n_items)
    ids = model.module.ids.weight.detach()
    assert not ids[cold_split.cold].any(), "a cold item was a softmax candidate in training"
    warm = np.setdiff1d(np.arange(1, tiny_dataset.n_items + 1), cold_split.cold)
    assert ids[warm].abs().sum() > 0


def test_restricted_softmax_equals_softmax_over_the_subset():
    g = torch.Generator().manual_seed(0)
    hidden, table = torch.randn(5, 8, generator=g), torch.randn(11, 8, generator=g)
    known = torch.tensor([2, 3, 5, 9])
    targets = torch.tensor([3, 9, 2, 5, 5])
    got = softmax_over(known)(hidden, targets, table)
    logits = hidden @ table[known].T
    want = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 3, 0, 2, 2]))
    torch.testing.assert_close(got, want)
    full = softmax_over(torch.arange(1, 11))(hidden, targets, table)
    torch.testing.assert_close(full, losses.full_softmax(hidden, targets, table))


def test_zero_shot_runs_the_pretrained_network_on_another_catalogue(tiny_split, tiny_dataset):
    pretrained = TextSeq(TextSeqConfig(mode="id+text", **TINY))
    pretrained.item_vectors = vectors(tiny_dataset.n_items)
    pretrained.fit(tiny_split.train_data())
    other = vectors(40, seed=3)
    model = TextSeq.zero_shot(pretrained, other, n_users=5)
    histories = Histories(np.array([0, 0, 3, 5]), np.array([4, 7, 9, 1, 2]))
    scores = model.score(histories.batch(np.array([1, 2])))
    assert scores.shape == (2, 41) and torch.isfinite(scores).all()
    same = {k: v for k, v in pretrained.module.state_dict().items() if k.startswith("blocks.")}
    for key, value in same.items():
        torch.testing.assert_close(model.module.state_dict()[key], value)


def test_start_from_checks_the_architecture(tiny_split, tiny_dataset):
    pretrained = fitted(tiny_split, "text", tiny_dataset.n_items)
    with pytest.raises(ValueError, match="d_model"):
        TextSeq(TextSeqConfig(mode="text", d_model=32)).start_from(pretrained)
    model = TextSeq(TextSeqConfig(mode="text", **{**TINY, "train": TrainConfig(epochs=1, progress=False)}))
    model.start_from(pretrained)
    model.item_vectors = vectors(tiny_dataset.n_items)
    fresh = model._build(tiny_dataset.n_items)
    torch.testing.assert_close(fresh.adaptor[1].weight, pretrained.module.adaptor[1].weight)


def test_standardize_rows_ignores_masked_entries():
    scores = torch.tensor([[1.0, 2.0, 3.0, -torch.inf], [5.0, 5.0, 7.0, 9.0]])
    out = standardize(scores)
    assert out[0, 3] == -torch.inf
    torch.testing.assert_close(out[0, :3].mean(), torch.tensor(0.0))
    torch.testing.assert_close(out[1].std(unbiased=False), torch.tensor(1.0))


CATALOGUE = ["", "red running shoes", "wool winter hat", "chemistry lab safety goggles", "stainless steel lab beaker"]


@pytest.fixture(scope="module")
def query_model() -> TextSeq:
    """A textseq over a 4-item catalogue with real sentence embeddings; two users with histories."""
    encoder = TextEncoderConfig(cache_dir="-", progress=False)
    frame = pl.DataFrame({"user_id": ["a"] * 3 + ["b"] * 3, "item_id": ["1", "2", "1", "3", "4", "3"],
                          "timestamp": [0, 1, 2, 0, 1, 2]})
    items = pl.DataFrame({ITEM: ["1", "2", "3", "4"], "text": CATALOGUE[1:]})
    ds = Dataset.from_frames(frame, items)
    model = TextSeq(TextSeqConfig(mode="text", encoder=encoder, **TINY))
    model.item_vectors = encode_texts([t or "" for t in ds.item_text], encoder)
    from omnirec.data.train_data import TrainData

    return model.fit(TrainData(ds.interactions, ds.n_users, ds.n_items, ds.item_text))


def test_anonymous_query_is_semantic_search(query_model):
    empty = Histories(np.array([0, 0, 0]), np.array([], dtype=np.int64)).batch(np.array([1]))
    ids, scores = query_model.recommend(empty, k=4, query="protective eyewear for a laboratory")
    labels = [CATALOGUE[i] for i in ids[0]]
    assert labels[0] == "chemistry lab safety goggles"
    sims = query_model.query_scores("protective eyewear for a laboratory")
    assert list(ids[0]) == list(torch.argsort(sims[1:], descending=True).numpy() + 1)


def test_query_weight_zero_is_the_plain_ranking_and_bad_weight_raises(query_model):
    batch = Histories(np.array([0, 0, 2]), np.array([1, 2])).batch(np.array([1]))
    plain, _ = query_model.recommend(batch, k=2)
    blended, _ = query_model.recommend(batch, k=2, query="goggles", query_weight=0.0)
    assert list(plain[0]) == list(blended[0])
    with pytest.raises(ValueError, match="query_weight"):
        query_model.recommend(batch, k=2, query="goggles", query_weight=2.0)
    with pytest.raises(ValueError, match="query is empty"):
        query_model.recommend(batch, k=2, query="  ")


def test_mlp_adaptor_trains_and_is_part_of_the_architecture(tiny_split, tiny_dataset):
    model = TextSeq(TextSeqConfig(mode="text", adaptor_layers=2, **TINY))
    model.item_vectors = vectors(tiny_dataset.n_items)
    model.fit(tiny_split.train_data())
    linears = [m for m in model.module.adaptor if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(64, 12), (16, 64)]
    with pytest.raises(ValueError, match="adaptor_layers differ"):
        TextSeq(TextSeqConfig(mode="text", **TINY)).start_from(model)
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        TextSeqConfig(adaptor_layers=0)


def test_temperature_scores_are_cosines_over_the_temperature(tiny_split, tiny_dataset):
    model = TextSeq(TextSeqConfig(mode="id+text", temperature=0.1, **TINY))
    model.item_vectors = vectors(tiny_dataset.n_items)
    model.fit(tiny_split.train_data())
    batch = tiny_split.histories("test").batch(np.arange(1, 9))
    scores = model.score(batch)[:, 1:]
    net = model.module
    with torch.no_grad():
        hidden = CausalEncoder.forward(net, torch.from_numpy(batch.padded(20)))[:, -1]  # the plain states
        table = net.embed(torch.arange(1, tiny_dataset.n_items + 1))
    want = torch.nn.functional.cosine_similarity(hidden[:, None], table[None], dim=-1) / 0.1
    torch.testing.assert_close(scores, want, atol=1e-4, rtol=1e-4)
    assert scores.abs().max() <= 10.0 + 1e-4
    with pytest.raises(ValueError, match="temperature"):
        TextSeqConfig(temperature=-1.0)
    with pytest.raises(ValueError, match="temperature differ"):
        TextSeq(TextSeqConfig(mode="text", **TINY)).start_from(model)


def test_id_dropout_shows_items_by_their_text_alone_in_training_only() -> None:
    text = torch.from_numpy(vectors(50))
    net = TextSeqNet(text, TextSeqConfig(mode="id+text", id_dropout=0.5, text_dropout=0.0, **TINY))
    torch.nn.init.normal_(net.ids.weight)
    items = torch.arange(1, 51)
    net.eval()
    text_only = net.adaptor(net.text[items])
    assert not torch.isclose(net.embed(items), text_only).all(dim=1).any(), "no ID may be dropped in evaluation"
    net.train()
    torch.manual_seed(0)
    dropped = torch.isclose(net.embed(items), text_only).all(dim=1)
    assert 10 <= int(dropped.sum()) <= 40


def test_a_tuned_encoder_embeds_the_items_and_later_texts_and_is_saved(tiny_split, tiny_dataset, tmp_path):
    config = TextSeqConfig(mode="text", tune_encoder=True, tuning=TuningConfig(epochs=0.05, lr=1e-3),
                           encoder=TextEncoderConfig(cache_dir="-", progress=False), **TINY)
    model = TextSeq(config).fit(tiny_split.train_data(tiny_dataset.item_text))
    base = encode_texts(list(tiny_dataset.item_text), config.encoder)
    assert model.tuned is not None and not np.allclose(model.item_vectors, base, atol=1e-3)
    np.testing.assert_allclose(model.encode(list(tiny_dataset.item_text[1:4])), model.item_vectors[1:4], atol=1e-5)
    model.save(tmp_path / "m")
    loaded = TextSeq.load(tmp_path / "m")
    assert loaded.tuned is not None and loaded.tuned.fingerprint == model.tuned.fingerprint
    batch = tiny_split.histories("test").batch(np.arange(1, 6))
    assert torch.equal(loaded.score(batch), model.score(batch))


def test_unseen_items_can_inherit_the_ids_of_their_nearest_seen_items(cold_split, tiny_dataset):
    model = TextSeq(TextSeqConfig(mode="id+text", inherit_ids=2, **TINY))
    model.item_vectors = vectors(tiny_dataset.n_items)
    model.fit(cold_split.train_data())
    ids = model.module.ids.weight.detach()
    new = cold_split.cold[0]
    assert ids[new].abs().sum() > 0, "the unseen item inherited nothing"
    unit = torch.nn.functional.normalize(torch.from_numpy(model.item_vectors), dim=1)
    learnt = cold_split.train_data().with_validation().sequences.items  # what the refitted network saw
    seen = torch.from_numpy(np.bincount(learnt, minlength=len(unit)) > 0)
    sims = torch.where(seen, unit @ unit[new], -torch.inf)
    top = sims.topk(2)
    weights = top.values.clamp(min=0) / top.values.clamp(min=0).sum()
    torch.testing.assert_close(ids[new], weights @ ids[top.indices])
