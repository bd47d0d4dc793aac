"""IdMap: external ids (strings) <-> dense integers, with 0 reserved for padding.

>>> m = IdMap.from_values(["b", "a", "b"])
>>> m.encode(["a", "b"]).tolist(), m.decode([1, 2]), len(m)
([2, 1], ['b', 'a'], 2)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from omnirec.utils import atomic_write_text


class UnknownIdError(KeyError):
    """An external id that the map has never seen."""


class IdMap:
    """Dense ids 1..n in order of first appearance; 0 is padding and never maps to a label."""

    def __init__(self, labels: Sequence[str]):
        self._labels = [str(x) for x in labels]
        self._index = {label: i + 1 for i, label in enumerate(self._labels)}
        if len(self._index) != len(self._labels):
            raise ValueError("IdMap labels must be unique")

    @classmethod
    def from_values(cls, values: Iterable[str] | pl.Series) -> IdMap:
        """Map every distinct value, numbered in order of first appearance."""
        series = values if isinstance(values, pl.Series) else pl.Series(list(values), dtype=pl.String)
        return cls(series.cast(pl.String).unique(maintain_order=True).to_list())

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, label: object) -> bool:
        return str(label) in self._index

    @property
    def labels(self) -> list[str]:
        """External ids in dense-id order (dense id = position + 1)."""
        return list(self._labels)

    def encode(self, values: Iterable[str] | pl.Series, unknown: str = "raise") -> np.ndarray:
        """Dense ids of `values`; `unknown='raise'` names the first unseen id, `'zero'` maps it to 0."""
        if unknown not in ("raise", "zero"):
            raise ValueError(f"unknown={unknown!r}; expected 'raise' or 'zero'")
        if isinstance(values, list | tuple) and len(values) < 1024:  # a request's few ids: dict look-ups
            out = np.array([self._index.get(str(v), 0) for v in values], dtype=np.int64)
            if unknown == "raise" and (out == 0).any():
                raise UnknownIdError(f"unknown id {values[int(np.flatnonzero(out == 0)[0])]!r} (the map holds {len(self)} ids)")
            return out
        series = values if isinstance(values, pl.Series) else pl.Series(list(values), dtype=pl.String)
        mapped = series.cast(pl.String).replace_strict(self._index, default=0, return_dtype=pl.Int64)
        out = mapped.to_numpy()
        if unknown == "raise" and (out == 0).any():
            bad = series[int(np.flatnonzero(out == 0)[0])]
            raise UnknownIdError(f"unknown id {bad!r} (the map holds {len(self)} ids)")
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        """External ids of dense ids; 0 (padding) or out of range raises."""
        out = []
        for i in ids:
            i = int(i)
            if not 1 <= i <= len(self._labels):
                raise UnknownIdError(f"dense id {i} is not in 1..{len(self._labels)}")
            out.append(self._labels[i - 1])
        return out

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically)."""
        atomic_write_text(path, json.dumps({"format": "omnirec.IdMap/1", "labels": self._labels}))

    @classmethod
    def load(cls, path: str | Path) -> IdMap:
        """Read back what `save` wrote."""
        data = json.loads(Path(path).read_text())
        if data.get("format") != "omnirec.IdMap/1":
            raise ValueError(f"{path}: not an omnirec IdMap file")
        return cls(data["labels"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._labels == other._labels

    def __repr__(self) -> str:
        return f"IdMap({len(self)} ids)"
