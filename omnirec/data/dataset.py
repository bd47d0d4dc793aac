"""A cleaned, id-mapped dataset.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> ds = Dataset.from_frames(*generate(SyntheticConfig(n_users=50, n_items=30)), name="demo")
>>> ds.n_users, ds.n_items
(50, 30)
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _align(items: pl.DataFrame | None, item_map: IdMap, column: str) -> list[str] | None:
    """A catalogue column (text, title) indexed by dense id (index 0 and items without a value get '')."""
    if items is None or column not in items.columns:
        return None
    lookup = dict(zip(items[ITEM].cast(pl.String).to_list(), items[column].fill_null("").to_list(), strict=True))
    return [""] + [lookup.get(label, "") for label in item_map.labels]
