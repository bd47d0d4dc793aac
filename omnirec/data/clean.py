"""Cleaning: missing values, duplicates, k-core, stable (user, time) order. Frame in, frame + report out.

>>> import polars as pl
>>> f = pl.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["a", "a", "b"], "timestamp": [1, 1, 2]})
>>> out, report = clean(f)
>>> out.height, report.dropped()
(2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from omnirec.data.schema import ITEM, REQUIRED, TIME, USER


@dataclass(frozen=True)
class CleanConfig:
    """What `clean` does. `repeats`: keep repeated (user, item) pairs at other times, or keep the first/last."""

    min_user_interactions: int = 1
    min_item_interactions: int = 1
    repeats: str = "keep"

    def __post_init__(self) -> None:
        if self.repeats not in ("keep", "first", "last"):
            raise ValueError(f"repeats={self.repeats!r}; expected 'keep', 'first' or 'last'")
        if self.min_user_interactions < 1 or self.min_item_interactions < 1:
            raise ValueError("k-core minimums must be >= 1")


@dataclass
class CleanReport:
    """Rows in, rows out, and every drop with its reason."""

    rows_in: int
    steps: list[tuple[str, int]] = field(default_factory=list)
    rows_out: int = 0

    def dropped(self) -> int:
        """Total rows dropped."""
        return sum(n for _, n in self.steps)

    def __str__(self) -> str:
        lines = [f"rows in: {self.rows_in:,}"]
        lines += [f"  dropped {n:,}: {reason}" for reason, n in self.steps if n]
        lines.append(f"rows out: {self.rows_out:,}")
        return "\n".join(lines)


def _step(frame: pl.DataFrame, new: pl.DataFrame, reason: str, report: CleanReport) -> pl.DataFrame:
    report.steps.append((reason, frame.height - new.height))
    return new


def k_core(frame: pl.DataFrame, min_user: int, min_item: int) -> pl.DataFrame:
    """Repeat dropping users with < min_user and items with < min_item interactions until none remain."""
    while True:
        kept = frame.filter(
            (pl.len().over(USER) >= min_user) & (pl.len().over(ITEM) >= min_item)
        )
        if kept.height == frame.height:
            return kept
        frame = kept


def duplicate_rows(frame: pl.DataFrame) -> np.ndarray:
    """(rows,) True for a row whose (user, item, time) equals an earlier row's.

    Ids become integer codes and the rows are sorted by (user, time, item, position): a fraction of the
    memory a hash-based `unique` over string columns takes (on 20M rows, 1 GiB instead of 3.7 GiB more
    than the frame).

    >>> f = pl.DataFrame({"user_id": ["a", "a", "b", "a"], "item_id": ["x", "y", "x", "x"], "timestamp": [1, 1, 1, 1]})
    >>> duplicate_rows(f).tolist()
    [False, False, False, True]
    """
    codes = frame.select(pl.col(USER).cast(pl.Categorical).to_physical(), pl.col(ITEM).cast(pl.Categorical).to_physical())
    users, items = codes[USER].to_numpy(), codes[ITEM].to_numpy()
    times = frame[TIME].to_numpy()
    order = np.lexsort((np.arange(len(users)), items, times, users))  # equal rows adjacent, first one first
    same = np.zeros(len(order), dtype=bool)
    u, t, i = users[order], times[order], items[order]
    same[1:] = (u[1:] == u[:-1]) & (t[1:] == t[:-1]) & (i[1:] == i[:-1])
    duplicate = np.zeros(len(order), dtype=bool)
    duplicate[order] = same
    return duplicate


def stable_order(frame: pl.DataFrame) -> pl.DataFrame:
    """Users in order of first appearance, each user's rows by time; ties keep the file order."""
    frame = frame.with_row_index("_row")
    first = pl.col("_row").min().over(USER)
    return frame.sort([first, TIME, "_row"]).drop("_row")


def _check_types(frame: pl.DataFrame) -> pl.DataFrame:
    """Ids as strings (as IdMap expects); times must already be integers, or order would be textual."""
    missing_cols = [c for c in REQUIRED if c not in frame.columns]
    if missing_cols:
        raise ValueError(f"interactions frame lacks column(s) {missing_cols}; have {frame.columns}")
    if not frame.schema[TIME].is_integer():
        raise ValueError(f"column {TIME!r} has type {frame.schema[TIME]}; expected integers (e.g. Unix seconds), "
                         "as the readers in omnirec.data.io produce")
    return frame.with_columns(pl.col(USER).cast(pl.String), pl.col(ITEM).cast(pl.String))


def clean(frame: pl.DataFrame, config: CleanConfig = CleanConfig()) -> tuple[pl.DataFrame, CleanReport]:
    """Drop rows missing user/item/time, exact duplicates, optional repeats, then k-core; sort stably."""
    report = CleanReport(rows_in=frame.height)
    frame = _check_types(frame)
    frame = _step(frame, frame.drop_nulls(list(REQUIRED)), "missing user, item or timestamp", report)
    blank = (pl.col(USER).str.strip_chars() == "") | (pl.col(ITEM).str.strip_chars() == "")
    frame = _step(frame, frame.filter(~blank), "empty user or item id", report)
    frame = stable_order(frame)
    frame = _step(frame, frame.filter(~pl.Series(duplicate_rows(frame))), "exact duplicate rows", report)
    if config.repeats != "keep":
        deduped = frame.unique([USER, ITEM], keep=config.repeats, maintain_order=True)
        frame = _step(frame, deduped, f"repeated (user, item): kept the {config.repeats}", report)
    cored = k_core(frame, config.min_user_interactions, config.min_item_interactions)
    reason = f"k-core (users >= {config.min_user_interactions}, items >= {config.min_item_interactions})"
    frame = _step(frame, cored, reason, report)
    report.rows_out = frame.height
    if frame.height == 0:
        raise ValueError(f"no interactions left after cleaning:\n{report}")
    return frame, report
