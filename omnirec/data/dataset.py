"""A cleaned, id-mapped dataset and the training view that models fit on.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> ds = Dataset.from_frames(*generate(SyntheticConfig(n_users=50, n_items=30)), name="demo")
>>> ds.n_users, ds.n_items
(50, 30)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import scipy.sparse as sp

from omnirec.data.clean import CleanConfig, CleanReport, clean
from omnirec.data.ids import IdMap
from omnirec.data.schema import ITEM, TEXT, TIME, TITLE, USER
from omnirec.features.attributes import Attributes
from omnirec.features.matrix import interaction_matrix
from omnirec.features.sequences import Histories


@dataclass
class Dataset:
    """Interactions with dense ids (sorted by user, then time), the id maps and optional item text."""

    name: str
    interactions: pl.DataFrame
    users: IdMap
    items: IdMap
    item_text: list[str] | None
    report: CleanReport
    user_attributes: Attributes | None = None  # categorical user traits by dense id (age, gender...)
    item_titles: list[str] | None = None  # by dense id, what a person reads ('' where unknown; index 0 padding)

    @property
    def n_users(self) -> int:
        """Number of users (dense ids 1..n_users)."""
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Number of items (dense ids 1..n_items)."""
        return len(self.items)

    @classmethod
    def from_frames(
        cls,
        interactions: pl.DataFrame,
        items: pl.DataFrame | None = None,
        name: str = "data",
        config: CleanConfig = CleanConfig(),
        users: pl.DataFrame | None = None,
    ) -> Dataset:
        """Clean `interactions`, map ids (0 = padding) and line item text up with dense item ids.

        `users` (a `user_id` column and any attribute columns) becomes `user_attributes`."""
        cleaned, report = clean(interactions, config)
        user_map = IdMap.from_values(cleaned[USER])
        item_map = IdMap.from_values(cleaned[ITEM])
        extra = [c for c in cleaned.columns if c not in (USER, ITEM, TIME)]
        dense = pl.DataFrame(
            {USER: user_map.encode(cleaned[USER]), ITEM: item_map.encode(cleaned[ITEM]), TIME: cleaned[TIME]}
        ).with_columns(cleaned.select(extra))
        attributes = None if users is None else Attributes.from_frame(users, USER, user_map)
        return cls(name, dense, user_map, item_map, _align(items, item_map, TEXT), report, attributes,
                   _align(items, item_map, TITLE))


def _align(items: pl.DataFrame | None, item_map: IdMap, column: str) -> list[str] | None:
    """A catalogue column (text, title) indexed by dense id (index 0 and items without a value get '')."""
    if items is None or column not in items.columns:
        return None
    lookup = dict(zip(items[ITEM].cast(pl.String).to_list(), items[column].fill_null("").to_list(), strict=True))
    return [""] + [lookup.get(label, "") for label in item_map.labels]


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
