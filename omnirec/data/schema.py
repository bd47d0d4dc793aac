"""The one place where column names and dtypes of omnirec frames are defined.

Every reader returns frames with these columns; everything downstream reads them by these names.
"""

from __future__ import annotations

import polars as pl

USER = "user_id"
ITEM = "item_id"
TIME = "timestamp"
RATING = "rating"
EVENT = "event"
TEXT = "text"
TITLE = "title"  # an item's name as a person reads it (optional; else the text's first sentence)

# External ids are kept as strings: a file's ids are labels, only IdMap turns them into numbers.
INTERACTION_SCHEMA: dict[str, pl.DataType] = {
    USER: pl.String(),
    ITEM: pl.String(),
    TIME: pl.Int64(),
    RATING: pl.Float64(),
    EVENT: pl.String(),
}
REQUIRED = (USER, ITEM, TIME)
ITEM_SCHEMA: dict[str, pl.DataType] = {ITEM: pl.String(), TEXT: pl.String(), TITLE: pl.String()}


def empty_interactions() -> pl.DataFrame:
    """An interactions frame with no rows and the required columns."""
    return pl.DataFrame(schema={c: INTERACTION_SCHEMA[c] for c in REQUIRED})
