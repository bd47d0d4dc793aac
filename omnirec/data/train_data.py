"""What `Recommender.fit` receives (`TrainData`): the training interactions and the views derived from
them (CSR matrix, histories, counts), computed once and shared by every model that wants them.

It lives in `data/` with the other containers (`Histories`, `Attributes`): `data/` builds them, every layer
above reads them, and nothing in `data/` imports a layer above it.

>>> f = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [2, 2, 1], "timestamp": [0, 1, 0]})
>>> data = TrainData(f, n_users=2, n_items=2)
>>> data.item_counts.tolist(), data.item_users.tolist()
([0.0, 1.0, 2.0], [0.0, 1.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import scipy.sparse as sp

from omnirec.data.attributes import Attributes
from omnirec.data.histories import Histories
from omnirec.data.schema import ITEM, TIME, USER


def interaction_matrix(frame: pl.DataFrame, n_users: int, n_items: int, binary: bool = False) -> sp.csr_matrix:
    """(n_users + 1, n_items + 1) counts of each (user, item); `binary=True` gives 0/1.

    >>> f = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [2, 2, 1]})
    >>> interaction_matrix(f, 2, 2).toarray().tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 1.0, 0.0]]
    """
    users = frame[USER].to_numpy()
    items = frame[ITEM].to_numpy()
    data = np.ones(len(users), dtype=np.float32)
    mat = sp.csr_matrix((data, (users, items)), shape=(n_users + 1, n_items + 1))
    mat.sum_duplicates()
    if binary:
        mat.data[:] = 1.0
    return mat


def has_clock(frame: pl.DataFrame) -> bool:
    """Whether the times of `frame` are a clock rather than positions in each user's sequence (as in data
    that keeps only the order): the largest time is at least ten times the longest sequence.

    >>> has_clock(pl.DataFrame({"user_id": [1, 1, 2], "timestamp": [0, 1, 0]}))
    False
    >>> has_clock(pl.DataFrame({"user_id": [1, 1, 2], "timestamp": [1_600_000_000, 1_600_000_060, 1_600_000_000]}))
    True
    """
    if not frame.height:
        return False
    return int(frame[TIME].max()) >= 10 * int(frame.group_by(USER).len()["len"].max())


@dataclass
class TrainData:
    """What `Recommender.fit` receives: the training interactions and derived views, computed once."""

    interactions: pl.DataFrame
    n_users: int
    n_items: int
    item_text: list[str] | None = None
    valid: Histories | None = None  # validation targets, for models that stop early
    user_attributes: Attributes | None = None  # for every user of the dataset, also those without training data

    @cached_property
    def matrix(self) -> sp.csr_matrix:
        """(n_users + 1, n_items + 1) interaction counts."""
        return interaction_matrix(self.interactions, self.n_users, self.n_items)

    def with_validation(self) -> TrainData:
        """These interactions and the validation targets as one training set, with none left to validate
        on: what a model that chose something on validation refits on.

        >>> f = pl.DataFrame({"user_id": [1, 2], "item_id": [2, 1], "timestamp": [0, 0]})
        >>> both = TrainData(f, 2, 2, valid=Histories(np.array([0, 0, 1, 1]), np.array([1]), np.array([5])))
        >>> both.with_validation().sequences.items.tolist(), both.with_validation().valid is None
        ([2, 1, 1], True)
        """
        if self.valid is None:
            return self
        users = np.repeat(np.arange(self.valid.n_users + 1), self.valid.lengths())
        last = int(self.interactions[TIME].max()) + 1 if self.interactions.height else 0
        times = self.valid.times if self.valid.times is not None else np.full(len(users), last)
        extra = pl.DataFrame({USER: users, ITEM: self.valid.items, TIME: times})
        known = self.interactions.select(USER, ITEM, TIME)
        both = pl.concat([known, extra.cast(known.schema)]).sort([USER, TIME], maintain_order=True)
        return TrainData(both, self.n_users, self.n_items, self.item_text, user_attributes=self.user_attributes)

    def without_items(self, items: np.ndarray) -> TrainData:
        """These data with every training interaction of `items` removed (their validation targets kept):
        the items are then new to a model fitted on the result, as items added after training are.

        >>> f = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [2, 1, 1], "timestamp": [0, 1, 0]})
        >>> TrainData(f, n_users=2, n_items=2).without_items(np.array([1])).sequences.items.tolist()
        [2]
        """
        kept = self.interactions.filter(~pl.col(ITEM).is_in(pl.Series(np.asarray(items)).implode()))
        return TrainData(kept, self.n_users, self.n_items, self.item_text, self.valid, self.user_attributes)

    @cached_property
    def sequences(self) -> Histories:
        """Each user's training items in time order."""
        return Histories.from_frame(self.interactions, self.n_users)

    @cached_property
    def item_counts(self) -> np.ndarray:
        """(n_items + 1,) number of training interactions per item."""
        return np.bincount(self.interactions[ITEM].to_numpy(), minlength=self.n_items + 1).astype(np.float64)

    @cached_property
    def item_users(self) -> np.ndarray:
        """(n_items + 1,) number of distinct training users per item."""
        return np.diff(sp.csc_matrix(self.matrix).indptr).astype(np.float64)
