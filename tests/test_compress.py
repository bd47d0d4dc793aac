"""Compressed bundles: much smaller, load back to nearly the same scores, checksums still verified."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnirec.bundle import Bundle
from omnirec.cli import main
from omnirec.compress import compress_state, decompress_state, folder_bytes
from omnirec.models import SASRec
from omnirec.models.sasrec import SASRecConfig
from omnirec.train.loop import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("weights, tolerance", [("int8", 0.02), ("fp16", 1e-3)])
def test_compressed_bundle_is_smaller_and_scores_alike(tmp_path, tiny_dataset, tiny_split, capsys, weights, tolerance):
    model = SASRec(SASRecConfig(d_model=64, train=TrainConfig(epochs=1, progress=False, refit=False))).fit(tiny_split.train_data())
    Bundle.create(model, tiny_dataset).save(tmp_path / "full")
    assert main(["compress", "--bundle", str(tmp_path / "full"), "--out", str(tmp_path / "small"), "--weights", weights]) == 0
    assert "smaller" in capsys.readouterr().out
    assert folder_bytes(tmp_path / "small") < 0.6 * folder_bytes(tmp_path / "full")
    full, small = Bundle.load(tmp_path / "full"), Bundle.load(tmp_path / "small")
    batch = tiny_split.histories("test").batch(np.arange(1, 51))
    a, b = full.model.score(batch), small.model.score(batch)
    assert torch.allclose(a, b, atol=tolerance * float(a.abs().max()))
    assert np.array_equal(small.histories.items, full.histories.items)
    (tmp_path / "small" / "model" / "state.npz").write_bytes(b"torn")
    with pytest.raises(ValueError, match="checksum"):
        Bundle.load(tmp_path / "small")


def test_small_and_integer_arrays_are_kept_as_they_are():
    state = {"big": np.ones((100, 100), np.float32), "small": np.ones((2, 2), np.float32), "ids": np.arange(10000).reshape(100, 100)}
    packed = compress_state(state, "fp16")
    assert set(packed) == {"big.fp16", "small", "ids"}
    back = decompress_state(packed)
    assert back["big"].dtype == np.float32 and np.array_equal(back["ids"], state["ids"])
    with pytest.raises(ValueError, match="int4"):
        compress_state(state, "int4")
