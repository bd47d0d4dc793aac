"""Interactions -> CSR user x item matrix (users are rows; row and column 0 are padding)."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from omnirec.data.schema import ITEM, USER


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
