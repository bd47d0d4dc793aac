"""Ragged per-user histories (time order) and the batches models score.

>>> import polars as pl
>>> f = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [3, 4, 3], "timestamp": [0, 1, 0]})
>>> h = Histories.from_frame(f, n_users=2)
>>> b = h.batch([2, 1])
>>> b.items.tolist(), b.last_items().tolist()
([3, 3, 4], [3, 4])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl
import scipy.sparse as sp

from omnirec.data.schema import ITEM, TIME, USER


def gather_ragged(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows `rows` of a ragged array (indptr, values): returns (new indptr, new values)."""
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = ends - starts
    new_indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_indptr[1:])
    offsets = np.repeat(starts - new_indptr[:-1], lengths)
    return new_indptr, values[np.arange(new_indptr[-1], dtype=np.int64) + offsets]


class UserBatch(NamedTuple):
    """The users a model scores at once, with their histories."""

    users: np.ndarray  # (B,) dense user ids
    indptr: np.ndarray  # (B + 1,) history of row b is items[indptr[b]:indptr[b + 1]]
    items: np.ndarray  # (nnz,) dense item ids, oldest first
    times: np.ndarray | None = None  # (nnz,) int64 event times aligned with items, where known

    @classmethod
    def request(cls, items: np.ndarray | list[int] = ()) -> UserBatch:
        """One row for a request that is not a known user's: the given history (dense ids, oldest first),
        possibly empty, under user id 0. The one way the serving paths build such a batch.

        >>> b = UserBatch.request([4, 2])
        >>> b.users.tolist(), b.items.tolist(), UserBatch.request().lengths().tolist()
        ([0], [4, 2], [0])
        """
        history = np.asarray(items, dtype=np.int64)
        return cls(np.array([0]), np.array([0, len(history)]), history)

    def __len__(self) -> int:
        return len(self.users)

    def lengths(self) -> np.ndarray:
        """(B,) history lengths."""
        return np.diff(self.indptr)

    def last_items(self) -> np.ndarray:
        """(B,) most recent item of each history, 0 (padding) where the history is empty."""
        lengths = self.lengths()
        out = np.zeros(len(self.users), dtype=np.int64)
        has = lengths > 0
        out[has] = self.items[self.indptr[1:][has] - 1]
        return out

    def to_csr(self, n_items: int, binary: bool = True) -> sp.csr_matrix:
        """(B, n_items + 1) sparse history matrix; column 0 is padding and stays empty."""
        data = np.ones(len(self.items), dtype=np.float32)
        mat = sp.csr_matrix((data, self.items, self.indptr), shape=(len(self.users), n_items + 1))
        mat.sum_duplicates()
        if binary:
            mat.data[:] = 1.0
        return mat

    def padded(self, max_len: int, values: np.ndarray | None = None) -> np.ndarray:
        """(B, max_len) most recent items (or the aligned `values`, e.g. times), left-padded with 0.

        >>> UserBatch(np.array([1, 2]), np.array([0, 3, 4]), np.array([5, 6, 7, 8])).padded(2).tolist()
        [[6, 7], [0, 8]]
        """
        values = self.items if values is None else values
        lengths = np.minimum(self.lengths(), max_len)
        out = np.zeros((len(self.users), max_len), dtype=values.dtype)
        rows = np.repeat(np.arange(len(self.users)), lengths)
        back = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # 0..len-1 per row
        source = np.repeat(self.indptr[1:] - lengths, lengths) + back
        out[rows, max_len - np.repeat(lengths, lengths) + back] = values[source]
        return out


class Histories:
    """Every user's items in time order; row u is dense user u (row 0 is padding and empty)."""

    def __init__(self, indptr: np.ndarray, items: np.ndarray, times: np.ndarray | None = None):
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.items = np.asarray(items, dtype=np.int64)
        self.times = None if times is None else np.asarray(times, dtype=np.int64)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, n_users: int) -> Histories:
        """From a dense frame already sorted by (user, time), as `clean` and the splits leave it."""
        users, items = frame[USER].to_numpy(), frame[ITEM].to_numpy()
        times = frame[TIME].to_numpy() if TIME in frame.columns else None
        if len(users) > 1 and (np.diff(users) < 0).any():
            order = np.argsort(users, kind="stable")
            users, items = users[order], items[order]
            times = None if times is None else times[order]
        counts = np.bincount(users, minlength=n_users + 1)
        indptr = np.zeros(n_users + 2, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr, items, times)

    @property
    def n_users(self) -> int:
        """Number of real users (rows minus the padding row)."""
        return len(self.indptr) - 2

    def lengths(self) -> np.ndarray:
        """(n_users + 1,) history length per user."""
        return np.diff(self.indptr)

    def batch(self, users: np.ndarray) -> UserBatch:
        """The histories of `users`, in the order given."""
        users = np.asarray(users, dtype=np.int64)
        indptr, items = gather_ragged(self.indptr, self.items, users)
        times = None if self.times is None else gather_ragged(self.indptr, self.times, users)[1]
        return UserBatch(users, indptr, items, times)

    def to_csr(self, n_items: int, binary: bool = True) -> sp.csr_matrix:
        """(n_users + 1, n_items + 1) sparse user x item matrix."""
        return self.batch(np.arange(self.n_users + 1)).to_csr(n_items, binary)

    def only(self, items: np.ndarray) -> Histories:
        """The same users, keeping only the entries whose item is in `items` (order kept).

        >>> h = Histories(np.array([0, 0, 2, 3, 3]), np.array([5, 6, 7]))
        >>> kept = h.only(np.array([6, 7]))
        >>> kept.items.tolist(), kept.indptr.tolist()
        ([6, 7], [0, 0, 1, 2, 2])
        """
        keep = np.isin(self.items, items)
        rows = np.repeat(np.arange(len(self.indptr) - 1), self.lengths())  # the row of each entry
        indptr = np.zeros_like(self.indptr)
        np.cumsum(np.bincount(rows[keep], minlength=len(self.indptr) - 1), out=indptr[1:])
        times = None if self.times is None else self.times[keep]
        return Histories(indptr, self.items[keep], times)

    def only_users(self, users: np.ndarray) -> Histories:
        """The same rows, emptied for every user not in `users`.

        >>> h = Histories(np.array([0, 0, 2, 3]), np.array([5, 6, 7]))
        >>> kept = h.only_users(np.array([2]))
        >>> kept.items.tolist(), kept.indptr.tolist()
        ([7], [0, 0, 0, 1])
        """
        rows = np.repeat(np.arange(len(self.indptr) - 1), self.lengths())
        keep = np.isin(rows, users)
        indptr = np.zeros_like(self.indptr)
        np.cumsum(np.bincount(rows[keep], minlength=len(self.indptr) - 1), out=indptr[1:])
        return Histories(indptr, self.items[keep], None if self.times is None else self.times[keep])

    def extend(self, later: Histories) -> Histories:
        """Each user's items followed by the user's items in `later` (same users, events that came after).

        >>> a = Histories(np.array([0, 0, 2, 3]), np.array([5, 6, 7]))
        >>> b = Histories(np.array([0, 0, 1, 1]), np.array([8]))
        >>> a.extend(b).items.tolist(), a.extend(b).indptr.tolist()
        ([5, 6, 8, 7], [0, 0, 3, 4])
        """
        if len(later.indptr) != len(self.indptr):
            raise ValueError(f"extend: {later.n_users} users, expected {self.n_users}")
        first, second = self.lengths(), later.lengths()
        indptr = np.zeros_like(self.indptr)
        np.cumsum(first + second, out=indptr[1:])
        from_self = np.repeat(indptr[:-1], first) + np.arange(first.sum()) - np.repeat(self.indptr[:-1], first)
        from_later = np.repeat(indptr[:-1] + first, second) + np.arange(second.sum()) - np.repeat(later.indptr[:-1], second)
        items = np.empty(indptr[-1], dtype=np.int64)
        items[from_self], items[from_later] = self.items, later.items
        times = None
        if self.times is not None and later.times is not None:
            times = np.empty(indptr[-1], dtype=np.int64)
            times[from_self], times[from_later] = self.times, later.times
        return Histories(indptr, items, times)
