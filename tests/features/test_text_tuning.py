"""Encoder tuning: the split encoder equals the encoder, tuning moves paired texts together, the cache."""

from __future__ import annotations

import numpy as np
import pytest

from omnirec.data.histories import Histories
from omnirec.features.text import TextEncoderConfig, encode_texts
from omnirec.features.text_tuning import (
    TunedLayers,
    TuningConfig,
    consecutive_pairs,
    encode_tuned,
    tune_encoder,
)

# Items 1-4 and 5-8 are bought together in these pairs, though their texts have nothing in common.
TEXTS = ["", "brass garden hose nozzle", "quantum physics textbook", "organic green tea leaves", "wool winter socks",
         "stainless chef knife", "yoga mat with strap", "acrylic paint set", "cast iron skillet"]
PAIRS = np.array([[1, 2], [2, 3], [3, 4], [4, 1], [5, 6], [6, 7], [7, 8], [8, 5]] * 4)


QUICK = TuningConfig(epochs=6, batch_size=8, lr=1e-3)


@pytest.fixture(scope="module")
def cached(tmp_path_factory) -> TextEncoderConfig:
    return TextEncoderConfig(cache_dir=str(tmp_path_factory.mktemp("enc") / "text"), progress=False)


@pytest.fixture(scope="module")
def tuned(cached: TextEncoderConfig) -> TunedLayers:
    return tune_encoder(TEXTS, PAIRS, cached, QUICK)


def test_the_split_encoder_gives_the_encoders_own_embeddings(tmp_path) -> None:
    config = TextEncoderConfig(cache_dir="-", progress=False)
    untouched = tune_encoder(TEXTS, PAIRS, config, TuningConfig(lr=1e-12, epochs=0.01))
    np.testing.assert_allclose(encode_tuned(TEXTS, untouched, config), encode_texts(TEXTS, config), atol=1e-5)


def test_tuning_moves_items_bought_together_closer(tuned: TunedLayers) -> None:
    config = TextEncoderConfig(cache_dir="-", progress=False)
    before, after = encode_texts(TEXTS, config), encode_tuned(TEXTS, tuned, config)
    together = [(a, b) for a in range(1, 5) for b in range(1, 5) if a < b] + \
               [(a, b) for a in range(5, 9) for b in range(5, 9) if a < b]
    apart = [(a, b) for a in range(1, 5) for b in range(5, 9)]

    def margin(v: np.ndarray) -> float:
        return np.mean([v[a] @ v[b] for a, b in together]) - np.mean([v[a] @ v[b] for a, b in apart])

    assert margin(after) > margin(before) + 0.3
    np.testing.assert_allclose(np.linalg.norm(after[1:], axis=1), 1.0, atol=1e-5)
    assert not after[0].any()


def test_tuned_layers_are_cached_and_round_trip_through_a_state(tuned: TunedLayers, cached: TextEncoderConfig,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from omnirec.features import text_tuning

    monkeypatch.setattr(text_tuning, "_train", lambda *a: pytest.fail("tuned again instead of read from the cache"))
    assert tune_encoder(TEXTS, PAIRS, cached, QUICK).fingerprint == tuned.fingerprint
    back = TunedLayers.from_state(tuned.to_state())
    assert back is not None and back.fingerprint == tuned.fingerprint
    assert TunedLayers.from_state({}) is None



def test_tuned_encodings_are_cached_and_only_new_texts_are_encoded(tuned: TunedLayers, cached: TextEncoderConfig,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from omnirec.features import text_tuning

    first = encode_tuned(TEXTS, tuned, cached)
    asked: list[list[str]] = []
    below = text_tuning.TopLayers.below
    monkeypatch.setattr(text_tuning.TopLayers, "below",
                        lambda self, texts, **kw: asked.append(texts) or below(self, texts, **kw))
    np.testing.assert_array_equal(encode_tuned(TEXTS, tuned, cached), first)  # all from the cache
    assert asked == []
    grown = encode_tuned([*TEXTS, "brass garden hose reel"], tuned, cached)  # an item added later
    assert asked == [["brass garden hose reel"]]
    np.testing.assert_array_equal(grown[: len(TEXTS)], first)
    fresh = encode_tuned(["brass garden hose reel"], tuned, TextEncoderConfig(cache_dir="-", progress=False))
    np.testing.assert_allclose(grown[-1], fresh[0], atol=1e-5)

def test_pairs_follow_each_user_and_skip_repeats() -> None:
    sequences = Histories(np.array([0, 0, 3, 5]), np.array([1, 2, 2, 4, 3]))
    assert consecutive_pairs(sequences).tolist() == [[1, 2], [4, 3]]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="layers >= 1"):
        TuningConfig(layers=0)
    with pytest.raises(ValueError, match="pairs"):
        tune_encoder(TEXTS, np.zeros((0, 2), dtype=np.int64), TextEncoderConfig(cache_dir="-", progress=False))
    with pytest.raises(ValueError, match="has 6"):
        tune_encoder(TEXTS, PAIRS, TextEncoderConfig(cache_dir="-", progress=False), TuningConfig(layers=7))
