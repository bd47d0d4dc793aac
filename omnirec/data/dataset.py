"""A cleaned, id-mapped dataset.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> ds = Dataset.from_frames(*generate(SyntheticConfig(n_users=50, n_items=30)), name="demo")
>>> ds.n_users, ds.n_items
(50, 30)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from omnirec.data.attributes import Attributes
from omnirec.data.clean import CleanConfig, CleanReport, clean
from omnirec.data.ids import IdMap
from omnirec.data.schema import ITEM, TEXT, TIME, TITLE, USER


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

    def select_items(self, keep: np.ndarray, name: str, config: CleanConfig = CleanConfig()) -> Dataset:
        """The part of the data about the items where `keep` (a bool mask by dense item id; index 0 ignored):
        each user's history restricted to those items (in its order), cleaned again by `config` (so
        `min_user_interactions=3` keeps the users a leave-one-out split can use), ids mapped anew; item
        text and titles follow their items. User attributes are not carried over.

        >>> from omnirec.data.synthetic import SyntheticConfig, generate
        >>> ds = Dataset.from_frames(*generate(SyntheticConfig(n_users=50, n_items=30)), name="demo")
        >>> part = ds.select_items(np.arange(31) <= 10, "first ten")
        >>> part.n_items <= 10, set(part.items.labels) <= set(ds.items.labels[:10])
        (True, True)
        """
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.n_items + 1,):
            raise ValueError(f"keep has shape {keep.shape}; expected ({self.n_items + 1},): one flag per dense item "
                             "id, index 0 (padding) included")
        rows = self.interactions.filter(pl.Series(keep)[self.interactions[ITEM]])
        if rows.height == 0:
            raise ValueError(f"no interaction is with a kept item ({int(keep[1:].sum())} of {self.n_items} kept)")
        labels = {USER: np.array(self.users.labels, dtype=object), ITEM: np.array(self.items.labels, dtype=object)}
        raw = rows.with_columns(*(pl.Series(col, labels[col][rows[col].to_numpy() - 1].tolist())
                                  for col in (USER, ITEM)))
        catalogue = {ITEM: self.items.labels}
        for column, values in ((TEXT, self.item_text), (TITLE, self.item_titles)):
            if values is not None:
                catalogue[column] = values[1:]
        items = pl.DataFrame(catalogue) if len(catalogue) > 1 else None
        return Dataset.from_frames(raw, items, name=name, config=config)


def _align(items: pl.DataFrame | None, item_map: IdMap, column: str) -> list[str] | None:
    """A catalogue column (text, title) indexed by dense id (index 0 and items without a value get '')."""
    if items is None or column not in items.columns:
        return None
    lookup = dict(zip(items[ITEM].cast(pl.String).to_list(), items[column].fill_null("").to_list(), strict=True))
    return [""] + [lookup.get(label, "") for label in item_map.labels]
