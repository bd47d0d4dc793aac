"""Categorical attributes of users (or items) by dense id, as integer codes a model can embed.

Every column becomes codes 1..V (0 = unknown or missing). Numeric columns with many distinct values
(ages, prices) are cut into quantile buckets first, so a model sees "25-31", not 60 separate ages.

>>> import polars as pl
>>> from omnirec.data.ids import IdMap
>>> frame = pl.DataFrame({"user_id": ["b", "a"], "gender": ["F", "M"], "age": ["30", "20"]})
>>> attrs = Attributes.from_frame(frame, "user_id", IdMap(["a", "b", "c"]))
>>> attrs.names, attrs.codes.tolist()
(('gender', 'age'), [[0, 0], [2, 1], [1, 2], [0, 0]])
>>> attrs.cardinalities()
[3, 3]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from omnirec.data.ids import IdMap


@dataclass(frozen=True)
class Attributes:
    """codes: (n + 1, F) int64, row = dense id (row 0 and rows without a record are all 0);
    vocab[f]: the value of code c in column f is vocab[f][c - 1]."""

    names: tuple[str, ...]
    codes: np.ndarray
    vocab: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if self.codes.ndim != 2 or self.codes.shape[1] != len(self.names) or len(self.vocab) != len(self.names):
            raise ValueError(f"codes of shape {self.codes.shape} do not match {len(self.names)} attribute names")

    def cardinalities(self) -> list[int]:
        """Rows each column's embedding table needs (its values plus the unknown code 0)."""
        return [len(v) + 1 for v in self.vocab]

    @classmethod
    def from_frame(
        cls, frame: pl.DataFrame, key: str, ids: IdMap, columns: list[str] | None = None, max_numeric_values: int = 20,
        buckets: int = 8,
    ) -> Attributes:
        """Attributes from `frame` (one row per id in column `key`) for the ids of `ids`; ids the frame does
        not know get code 0 everywhere, and frame rows for ids outside `ids` are ignored."""
        columns = [c for c in frame.columns if c not in (key, "_line")] if columns is None else columns
        missing = [c for c in [key, *columns] if c not in frame.columns]
        if missing:
            raise ValueError(f"attribute frame has no column {missing[0]!r} (columns: {', '.join(frame.columns)})")
        if frame[key].cast(pl.String).is_duplicated().any():
            dup = frame.filter(frame[key].cast(pl.String).is_duplicated())[key][0]
            raise ValueError(f"attribute frame: id {dup!r} appears on more than one row")
        rows = ids.encode(frame[key].cast(pl.String), unknown="zero")
        known = rows > 0
        codes = np.zeros((len(ids) + 1, len(columns)), dtype=np.int64)
        vocab = []
        for f, name in enumerate(columns):
            values = _bucketed(frame[name], max_numeric_values, buckets)
            labels = sorted(set(v for v in values.to_list() if v is not None))
            index = {v: i + 1 for i, v in enumerate(labels)}
            column = np.array([index.get(v, 0) if v is not None else 0 for v in values.to_list()], dtype=np.int64)
            codes[rows[known], f] = column[known]
            vocab.append(tuple(labels))
        return cls(tuple(columns), codes, tuple(vocab))

    def reindexed(self, old: IdMap, new: IdMap) -> Attributes:
        """The same attributes by the dense ids of `new` (ids are renumbered when users come and go); an id
        `old` does not know gets code 0 everywhere.

        >>> a = Attributes(("g",), np.array([[0], [1], [2]]), (("F", "M"),))
        >>> a.reindexed(IdMap(["x", "y"]), IdMap(["y", "z", "x"])).codes[:, 0].tolist()
        [0, 2, 0, 1]
        """
        rows = old.encode(pl.Series(new.labels, dtype=pl.String), unknown="zero")  # (n_new,) 0 = unknown
        codes = np.zeros((len(new) + 1, len(self.names)), dtype=np.int64)
        codes[1:] = self.codes[rows]
        return Attributes(self.names, codes, self.vocab)

    def to_state(self, prefix: str) -> dict[str, np.ndarray]:
        """Plain arrays for a model's saved state."""
        return {f"{prefix}.codes": self.codes, f"{prefix}.names": np.array(self.names, dtype=str),
                **{f"{prefix}.vocab.{i}": np.array(v, dtype=str) for i, v in enumerate(self.vocab)}}

    @classmethod
    def from_state(cls, prefix: str, state: dict[str, np.ndarray]) -> Attributes | None:
        """Inverse of `to_state`; None when the state holds no attributes under `prefix`."""
        if f"{prefix}.codes" not in state:
            return None
        names = tuple(str(x) for x in state[f"{prefix}.names"])
        vocab = tuple(tuple(str(x) for x in state[f"{prefix}.vocab.{i}"]) for i in range(len(names)))
        return cls(names, np.asarray(state[f"{prefix}.codes"], dtype=np.int64), vocab)


def _bucketed(series: pl.Series, max_numeric_values: int, buckets: int) -> pl.Series:
    """String labels; numbers with more than `max_numeric_values` distinct values become quantile ranges."""
    as_number = series.cast(pl.Float64, strict=False)
    numeric = as_number.null_count() == series.null_count() and series.dtype != pl.Boolean
    if not numeric or as_number.drop_nulls().n_unique() <= max_numeric_values:
        return series.cast(pl.String).str.strip_chars().replace("", None)
    values = as_number.drop_nulls().to_numpy()
    edges = np.unique(np.quantile(values, np.linspace(0, 1, buckets + 1)[1:-1]))
    bucket = np.searchsorted(edges, as_number.fill_null(np.nan).to_numpy(), side="right")
    bounds = np.concatenate([[values.min()], edges, [values.max()]])
    labels = [f"{bounds[b]:g}-{bounds[b + 1]:g}" for b in range(len(bounds) - 1)]
    out = [labels[b] if not np.isnan(x) else None for b, x in zip(bucket, as_number.fill_null(np.nan).to_numpy())]
    return pl.Series(series.name, out, dtype=pl.String)
