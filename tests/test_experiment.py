"""The test protocol is the same for every model: each has learnt from train + validation."""

from __future__ import annotations

import numpy as np

from omnirec.data.dataset import Dataset
from omnirec.data.schema import ITEM
from omnirec.data.split import split_dataset
from omnirec.data.synthetic import SyntheticConfig, generate
from omnirec.data.train_data import TrainData
from omnirec.experiment import fit_for_test, run_experiment
from omnirec.models.popularity import Popularity


class _Spy(Popularity):
    """Popularity that records what it was fitted on."""

    seen: list[TrainData]

    def _fit(self, data: TrainData) -> None:
        self.seen = [*getattr(self, "seen", []), data]
        super()._fit(data)


class _EarlyStopper(_Spy):
    learns_from_validation = True  # as the neural models: it gets the validation targets and refits itself


def _split():
    return split_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=40, n_items=25))))


def test_classical_models_are_fitted_on_train_and_validation_for_the_test():
    ds = Dataset.from_frames(*generate(SyntheticConfig(n_users=40, n_items=25)))
    split = split_dataset(ds)
    plain, stopper = _Spy(), _EarlyStopper()
    run_experiment(ds, {"plain": plain, "stopper": stopper}, ks=(10,), split=split)
    (plain_data,), (stopper_data,) = plain.seen, stopper.seen
    assert plain_data.interactions.height == split.train.height + split.valid.height  # the validation items too
    assert plain_data.valid is None  # nothing to stop early on
    assert stopper_data.interactions.height == split.train.height  # it refits on train + validation itself
    assert stopper_data.valid is not None and stopper_data.valid.items.size == split.valid.height


def test_fit_for_test_matches_run_experiment():
    split = _split()
    model = fit_for_test(_Spy(), split)
    both = np.bincount(np.concatenate([split.train[ITEM].to_numpy(), split.valid[ITEM].to_numpy()]),
                       minlength=split.n_items + 1)
    assert np.array_equal(model.counts, both.astype(np.float32))
