"""Text encoder: the bundled MiniLM weights, the (model, text) cache, and the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omnirec.features import text
from omnirec.features.text import EmbeddingCache, TextEncoderConfig, encode_texts, model_fingerprint

TEXTS = ["red running shoes for jogging", "blue wool winter hat", "", "red running shoes for jogging"]


@pytest.fixture
def config(tmp_path) -> TextEncoderConfig:
    return TextEncoderConfig(cache_dir=str(tmp_path / "cache"), progress=False)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> np.ndarray:
    """The real encoder, loaded once for the module."""
    cfg = TextEncoderConfig(cache_dir=str(tmp_path_factory.mktemp("enc")), progress=False)
    return encode_texts(TEXTS + ["sneakers for a morning run", "a textbook on quantum field theory"], cfg)


def test_embeddings_are_unit_length_and_empty_text_is_zero(encoded: np.ndarray) -> None:
    assert encoded.shape == (6, 384) and encoded.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(encoded[[0, 1, 3, 4, 5]], axis=1), 1.0, atol=1e-5)
    assert not encoded[2].any()
    np.testing.assert_array_equal(encoded[0], encoded[3])


def test_the_weights_are_a_real_sentence_encoder(encoded: np.ndarray) -> None:
    shoes, run, physics = encoded[0], encoded[4], encoded[5]
    assert shoes @ run > shoes @ physics + 0.2


def test_second_run_encodes_nothing(config: TextEncoderConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    calls: list[list[str]] = []

    def fake(texts: list[str], cfg: TextEncoderConfig) -> np.ndarray:
        calls.append(texts)
        return rng.normal(size=(len(texts), 8)).astype(np.float32)

    monkeypatch.setattr(text, "_encode", fake)
    monkeypatch.setattr(text, "model_fingerprint", lambda *a: "fake")
    first = encode_texts(["a", "b", "a"], config)
    again = encode_texts(["b", "a"], config)
    np.testing.assert_array_equal(again, first[[1, 0]])
    assert calls == [["a", "b"]]
    grown = encode_texts(["c", "a", "b"], config)  # only the new text is encoded
    assert calls[-1] == ["c"] and len(calls) == 2
    np.testing.assert_array_equal(grown[1:], first[[0, 1]])
    assert len(list(Path(config.cache_dir).rglob("*.npz"))) == 2  # one shard per run that encoded


def test_no_cache_writes_nothing(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text, "_encode", lambda texts, cfg: np.ones((len(texts), 4), dtype=np.float32))
    monkeypatch.setenv("OMNIREC_CACHE", str(tmp_path))
    out = encode_texts(["x"], TextEncoderConfig(cache_dir="-", progress=False))
    assert out.shape == (1, 4) and not any(tmp_path.iterdir())


def test_cache_survives_a_reload(tmp_path) -> None:
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    EmbeddingCache(tmp_path, "m").add(["p", "q"], vectors)
    found, missing = EmbeddingCache(tmp_path, "m").lookup(["q", "r", "p"])
    assert missing == [1]
    np.testing.assert_array_equal(found[0], vectors[1])
    np.testing.assert_array_equal(found[2], vectors[0])


def test_fingerprint_depends_on_the_options() -> None:
    base = model_fingerprint(text.DEFAULT_MODEL)
    assert base == model_fingerprint(text.DEFAULT_MODEL)
    assert base != model_fingerprint(text.DEFAULT_MODEL, normalize=False)
    assert base != model_fingerprint(text.DEFAULT_MODEL, max_tokens=64)


def test_unknown_model_directory_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="local sentence-transformers model directory"):
        encode_texts(["x"], TextEncoderConfig(model=str(tmp_path / "nope"), cache_dir="-"))


def test_all_empty_or_no_texts_are_refused(config: TextEncoderConfig) -> None:
    with pytest.raises(ValueError, match="at least one text"):
        encode_texts([], config)
    with pytest.raises(ValueError, match="all texts are empty"):
        encode_texts(["", ""], config)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TextEncoderConfig(batch_size=0)
