"""Splits of a dense interactions frame into train / valid / test, each with a named protocol.

Every split checks that no interaction appears both in training and in evaluation, and that every
evaluated user has training data (or says how many users it dropped when asked to drop them).

>>> import polars as pl
>>> f = pl.DataFrame({"user_id": [1, 1, 1], "item_id": [1, 2, 3], "timestamp": [0, 1, 2]})
>>> s = leave_one_out(f, n_users=1, n_items=3)
>>> s.train.height, s.valid["item_id"].to_list(), s.test["item_id"].to_list()
(1, [2], [3])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from omnirec.data.attributes import Attributes
from omnirec.data.dataset import Dataset
from omnirec.data.histories import Histories
from omnirec.data.schema import ITEM, TIME, USER
from omnirec.data.train_data import TrainData


class SplitError(ValueError):
    """A split that cannot be made honestly (e.g. it would leave a user with no training data)."""


@dataclass(frozen=True)
class Split:
    """train / valid / test frames with dense ids; `notes` says what the split dropped, if anything."""

    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame
    n_users: int
    n_items: int
    protocol: str
    notes: tuple[str, ...] = field(default=())
    cold: np.ndarray | None = field(default=None, compare=False)  # cold items (the cold-items protocol)
    cold_users: np.ndarray | None = field(default=None, compare=False)  # users held out of training (cold-users)

    def __post_init__(self) -> None:
        for name, part in (("valid", self.valid), ("test", self.test)):
            leaked = overlap(part, self.train, self.n_items)
            if leaked:
                raise SplitError(f"{leaked} {name} interactions also appear in train (same user, item, time)")

    def train_data(self, item_text: list[str] | None = None, user_attributes: Attributes | None = None) -> TrainData:
        """The view models fit on; validation targets ride along for early stopping."""
        return TrainData(self.train, self.n_users, self.n_items, item_text, valid=self.targets("valid"),
                         user_attributes=user_attributes)

    def refit_data(self, item_text: list[str] | None = None, user_attributes: Attributes | None = None) -> TrainData:
        """Train + validation interactions and no validation targets: what a model that does not stop early
        fits on for the test, so that it has learnt from the same items as a neural model after its refit."""
        return TrainData(self.train_and_valid(), self.n_users, self.n_items, item_text, user_attributes=user_attributes)

    def histories(self, phase: str) -> Histories:
        """Model input and mask when evaluating `phase`: train for 'valid'; train + valid for 'test'."""
        if phase == "valid":
            return Histories.from_frame(self.train, self.n_users)
        if phase == "test":
            return Histories.from_frame(self.train_and_valid(), self.n_users)
        raise ValueError(f"phase={phase!r}; expected 'valid' or 'test'")

    def train_and_valid(self) -> pl.DataFrame:
        """Training and validation interactions together, sorted by (user, time): what a model may know
        when it ranks the test items."""
        both = pl.concat([self.train.select(USER, ITEM, TIME), self.valid.select(USER, ITEM, TIME)])
        return both.sort([USER, TIME], maintain_order=True)

    def targets(self, phase: str) -> Histories:
        """The held-out items of `phase` ('valid' or 'test'), per user."""
        part = {"valid": self.valid, "test": self.test}.get(phase)
        if part is None:
            raise ValueError(f"phase={phase!r}; expected 'valid' or 'test'")
        return Histories.from_frame(part, self.n_users)


def member(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """(len(values),) whether each value is in `pool`: one sort of the pool and a binary search per value
    (np.isin can take ten times longer on tens of millions of wide-ranged integers).

    >>> member(np.array([3, 5, 7]), np.array([7, 1, 3])).tolist()
    [True, False, True]
    """
    if len(pool) == 0:
        return np.zeros(len(values), dtype=bool)
    ordered = np.sort(pool)
    at = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    return ordered[at] == values


def overlap(part: pl.DataFrame, train: pl.DataFrame, n_items: int) -> int:
    """How many rows of `part` also appear in `train` (same user, item and time). (user, item) pairs are
    matched first as single integers (sort-based, light on memory even for tens of millions of rows);
    only rows whose pair occurs in both are joined on all three columns."""
    def pair(frame: pl.DataFrame) -> np.ndarray:
        return frame[USER].to_numpy().astype(np.int64) * (n_items + 1) + frame[ITEM].to_numpy()

    a, b = pair(part), pair(train)
    maybe = member(a, b)
    if not maybe.any():
        return 0
    keys = [USER, ITEM, TIME]
    shared = train.select(keys).filter(pl.Series(member(b, a[maybe])))
    return part.select(keys).filter(pl.Series(maybe)).join(shared, on=keys, how="semi").height


def _users_without_train(train: pl.DataFrame, evaluated: pl.DataFrame) -> pl.Series:
    return evaluated.select(USER).unique().join(train.select(USER).unique(), on=USER, how="anti")[USER]


def _handle_cold_users(
    train: pl.DataFrame, valid: pl.DataFrame, test: pl.DataFrame, cold_users: str, protocol: str
) -> tuple[pl.DataFrame, pl.DataFrame, tuple[str, ...]]:
    """Raise for (or drop, when asked) evaluation users that have no training interactions."""
    if cold_users not in ("raise", "drop"):
        raise ValueError(f"cold_users={cold_users!r}; expected 'raise' or 'drop'")
    cold = _users_without_train(train, pl.concat([valid.select(USER), test.select(USER)]))
    if cold.len() == 0:
        return valid, test, ()
    if cold_users == "raise":
        raise SplitError(
            f"{protocol}: {cold.len()} evaluated users have no training data (first: dense user {cold[0]}); "
            "pass cold_users='drop' to leave them out of evaluation, or use leave-one-out"
        )
    keep = ~pl.col(USER).is_in(cold.implode())
    dropped = valid.filter(~keep).height + test.filter(~keep).height
    note = f"{protocol}: dropped {dropped} evaluation interactions of {cold.len()} users with no training data"
    return valid.filter(keep), test.filter(keep), (note,)


def leave_one_out(frame: pl.DataFrame, n_users: int, n_items: int, short_users: str = "raise") -> Split:
    """Last interaction of each user -> test, second-last -> valid, the rest -> train.

    Users with fewer than 3 interactions raise, unless `short_users='train'` keeps them wholly in train.
    """
    if short_users not in ("raise", "train"):
        raise ValueError(f"short_users={short_users!r}; expected 'raise' or 'train'")
    ranked = _positions_from_end(frame)
    short = ranked.filter(pl.col("_n") < 3)
    if short.height and short_users == "raise":
        raise SplitError(
            f"leave-one-out: dense user {short[USER][0]} has {short['_n'][0]} interaction(s); each user needs 3 "
            "(train, valid, test). Clean with min_user_interactions=3, or pass short_users='train'"
        )
    evaluated = pl.col("_n") >= 3
    parts = [
        ranked.filter(~evaluated | (pl.col("_from_end") >= 2)),
        ranked.filter(evaluated & (pl.col("_from_end") == 1)),
        ranked.filter(evaluated & (pl.col("_from_end") == 0)),
    ]
    train, valid, test = (p.drop("_from_end", "_n") for p in parts)
    return Split(train, valid, test, n_users, n_items, "leave-one-out")


def _positions_from_end(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame sorted by (user, time), ties in the given order, with each row's position from the end of
    its user's rows (`_from_end`, 0 = last) and the user's row count (`_n`). Frames already in that order
    (as `clean` leaves them) are numbered with numpy, without a sort or a window."""
    if frame.height == 0:
        return frame.with_columns(pl.lit(0, pl.Int64).alias("_from_end"), pl.lit(0, pl.Int64).alias("_n"))
    users, times = frame[USER].to_numpy(), frame[TIME].to_numpy()
    same_user = users[1:] == users[:-1]
    if not ((users[1:] >= users[:-1]).all() and (times[1:][same_user] >= times[:-1][same_user]).all()):
        frame = frame.sort([USER, TIME], maintain_order=True)
        users = frame[USER].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    n = np.repeat(counts, counts)
    from_end = np.repeat(starts + counts, counts) - np.arange(len(users)) - 1
    return frame.with_columns(pl.Series("_from_end", from_end), pl.Series("_n", n))


def temporal(
    frame: pl.DataFrame, n_users: int, n_items: int, valid_frac: float = 0.1, test_frac: float = 0.1,
    cold_users: str = "raise",
) -> Split:
    """Global time cut-offs: the latest `test_frac` of interactions -> test, the `valid_frac` before -> valid."""
    _check_fracs(valid_frac, test_frac)
    times = frame[TIME].to_numpy()
    t_valid, t_test = np.quantile(times, [1 - valid_frac - test_frac, 1 - test_frac], method="lower")
    train = frame.filter(pl.col(TIME) < t_valid)
    valid = frame.filter((pl.col(TIME) >= t_valid) & (pl.col(TIME) < t_test))
    test = frame.filter(pl.col(TIME) >= t_test)
    valid, test, notes = _handle_cold_users(train, valid, test, cold_users, "temporal")
    return Split(train, valid, test, n_users, n_items, "temporal", notes)


def random_split(
    frame: pl.DataFrame, n_users: int, n_items: int, valid_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0
) -> Split:
    """Per user, a seeded random `test_frac` / `valid_frac` of interactions (rounded down); >= 1 stays in train."""
    _check_fracs(valid_frac, test_frac)
    rng = np.random.default_rng(seed)
    shuffled = frame.with_columns(pl.Series("_r", rng.random(frame.height)))
    ranked = shuffled.with_columns(
        pl.col("_r").rank("ordinal").over(USER).alias("_k") - 1, pl.len().over(USER).alias("_n")
    )
    n_test = (pl.col("_n") * test_frac).floor()
    n_valid = (pl.col("_n") * valid_frac).floor()
    test = ranked.filter(pl.col("_k") < n_test)
    valid = ranked.filter((pl.col("_k") >= n_test) & (pl.col("_k") < n_test + n_valid))
    train = ranked.filter(pl.col("_k") >= n_test + n_valid)
    train, valid, test = (p.drop("_r", "_k", "_n") for p in (train, valid, test))
    return Split(train, valid, test, n_users, n_items, f"random(seed={seed})")


def cold_items(
    frame: pl.DataFrame, n_users: int, n_items: int, cutoff_quantile: float = 0.8, item_frac: float = 0.0,
    seed: int = 0,
) -> Split:
    """Leave-one-out with cold items: items first seen at or after the time quantile `cutoff_quantile` are
    cold (or, with `item_frac` > 0, that fraction of all items drawn at random, seeded: for data whose
    times are only positions in each sequence). Every interaction with a cold item is removed from train
    and valid, so no model sees one; test keeps each user's last interaction, cold or warm, and
    `Split.cold` lists the cold items so evaluation can report cold and warm targets apart. Users left
    with no training interaction are not evaluated (counted in `notes`).
    """
    if not 0 < cutoff_quantile < 1 or not 0 <= item_frac < 1:
        raise ValueError(f"cutoff_quantile={cutoff_quantile}, item_frac={item_frac}; expected (0, 1) and [0, 1)")
    items = frame[ITEM].unique().sort().to_numpy()
    if item_frac:
        rng = np.random.default_rng(seed)
        cold = np.sort(rng.choice(items, size=int(round(item_frac * len(items))), replace=False))
    else:
        cutoff = np.quantile(frame[TIME].to_numpy(), cutoff_quantile, method="lower")
        first_seen = frame.group_by(ITEM).agg(pl.col(TIME).min().alias("_first"))
        cold = first_seen.filter(pl.col("_first") >= cutoff)[ITEM].sort().to_numpy()
    if len(cold) < 2:
        raise SplitError(f"cold-item split: only {len(cold)} cold item(s); lower cutoff_quantile or raise item_frac")
    base = leave_one_out(frame, n_users, n_items, short_users="train")
    warm = ~pl.col(ITEM).is_in(pl.Series(cold).implode())
    train, valid = base.train.filter(warm), base.valid.filter(warm)
    valid, test, notes = _handle_cold_users(train, valid, base.test, "drop", "cold-items")
    notes += (f"cold-items: {len(cold)} cold items; {test.filter(~warm).height} of {test.height} test targets are cold",)
    return Split(train, valid, test, n_users, n_items, "cold-items", notes, cold=cold)


def cold_users(frame: pl.DataFrame, n_users: int, n_items: int, user_frac: float = 0.1, seed: int = 0) -> Split:
    """Leave-one-out for most users; a seeded `user_frac` of users is held out entirely: none of their
    interactions is in train or valid, all of them are test targets, and their test history is empty.
    Only what is known of them besides interactions (user attributes) can personalise their lists.
    `Split.cold_users` lists them so evaluation can report cold and warm users apart.
    """
    if not 0 < user_frac < 1:
        raise ValueError(f"user_frac={user_frac}; expected a fraction in (0, 1)")
    users = frame[USER].unique().sort().to_numpy()
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(users, size=max(1, int(round(user_frac * len(users)))), replace=False))
    if len(held) == len(users):
        raise SplitError(f"cold-users split: all {len(users)} users would be held out; lower user_frac")
    cold = pl.col(USER).is_in(pl.Series(held).implode())
    base = leave_one_out(frame.filter(~cold), n_users, n_items, short_users="train")
    test = pl.concat([base.test, frame.filter(cold).select(base.test.columns)]).sort(USER, TIME, maintain_order=True)
    notes = (f"cold-users: {len(held)} users held out of training; their {frame.filter(cold).height} "
             "interactions are all test targets",)
    return Split(base.train, base.valid, test, n_users, n_items, "cold-users", notes, cold_users=held)


def _check_fracs(valid_frac: float, test_frac: float) -> None:
    if not (0 <= valid_frac < 1 and 0 < test_frac < 1 and valid_frac + test_frac < 1):
        raise ValueError(f"valid_frac={valid_frac}, test_frac={test_frac}; need 0 <= valid, 0 < test, sum < 1")


SPLITS = {"loo": leave_one_out, "temporal": temporal, "random": random_split, "cold-items": cold_items,
          "cold-users": cold_users}


def split_dataset(dataset: Dataset, method: str = "loo", **options: object) -> Split:
    """Split a `Dataset` by name: 'loo', 'temporal', 'random', 'cold-items' or 'cold-users'."""
    if method not in SPLITS:
        raise ValueError(f"unknown split {method!r}; expected one of {sorted(SPLITS)}")
    return SPLITS[method](dataset.interactions, dataset.n_users, dataset.n_items, **options)


def split_by_name(dataset: Dataset, name: str, cold_frac: float = 0.0, cold_quantile: float = 0.8) -> Split:
    """The split `omnirec evaluate --split NAME` means: "loo"; "cold-items" by time quantile, or by a random
    item fraction when `cold_frac` is given; "cold-users" holds out `cold_frac` of the users (10% by
    default). Errors name the split."""
    try:
        if name == "cold-users":
            return split_dataset(dataset, "cold-users", user_frac=cold_frac or 0.1)
        if name == "cold-items":
            options = {"item_frac": cold_frac} if cold_frac else {"cutoff_quantile": cold_quantile}
            return split_dataset(dataset, "cold-items", **options)
    except ValueError as exc:
        raise ValueError(f"--split {name}: {exc}") from exc
    return split_dataset(dataset, "loo")
