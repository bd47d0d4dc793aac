"""Shared fixtures: a tiny synthetic dataset and its leave-one-out split (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnirec.data.dataset import Dataset
from omnirec.data.split import Split, split_dataset
from omnirec.data.synthetic import SyntheticConfig, generate

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_dataset() -> Dataset:
    """300 users, 120 items, with text and sequential structure."""
    inter, items = generate(SyntheticConfig(n_users=300, n_items=120, mean_length=12, seed=7))
    return Dataset.from_frames(inter, items, name="tiny")


@pytest.fixture(scope="session")
def tiny_split(tiny_dataset: Dataset) -> Split:
    return split_dataset(tiny_dataset, "loo")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The benchmark data folder beside the repository; tests using it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data folder not found at {SHARED_DATA} (shared/data beside the repository)")
    return SHARED_DATA


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: thread hand-offs cost more than they save. Restores the thread count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
