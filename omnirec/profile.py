"""What kind of data this is: the traits that decide which models suit it, as a dict (JSON), a printed
report and a figure. `omnirec profile` prints and saves it; `omnirec auto` chooses candidate models by it.

>>> from omnirec.data.synthetic import SyntheticConfig, generate
>>> from omnirec.data.dataset import Dataset
>>> traits = profile_dataset(Dataset.from_frames(*generate(SyntheticConfig(n_users=50, n_items=30)), name="demo"))
>>> traits["users"], traits["items"], traits["feedback"]
(50, 30, 'implicit')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from omnirec.data.dataset import Dataset
from omnirec.data.schema import ITEM, RATING, TIME, USER
from omnirec.utils import atomic_write, atomic_write_text

COLD_ITEM_MIN = 5  # items with fewer training interactions than this count as cold


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 = all equal, near 1 = all on one.

    >>> round(gini(np.array([1, 1, 1, 1])), 3), round(gini(np.array([0, 0, 0, 10])), 3)
    (0.0, 0.75)
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    if x.sum() == 0:
        return 0.0
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def _quantiles(values: np.ndarray) -> dict[str, float]:
    q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 0.9, 1.0])
    return {"min": float(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]), "p90": float(q[4]),
            "max": float(q[5]), "mean": round(float(values.mean()), 3)}


def _time_kind(times: np.ndarray, lengths: np.ndarray) -> str:
    """"clock" for Unix-like times, "positions" when times only number each user's events (0, 1, 2...)."""
    if len(times) == 0:
        return "none"
    if times.min() >= 0 and times.max() < lengths.max() + 1:
        return "positions"
    return "clock"


def _recurring_transitions(frame: pl.DataFrame) -> float:
    pairs = frame.select(pl.col(ITEM).shift(1).over(USER).alias("prev"), pl.col(ITEM).alias("next")).drop_nulls()
    if pairs.height == 0:
        return 0.0
    counts = pairs.group_by(["prev", "next"]).len()["len"].to_numpy()
    return float(counts[counts > 1].sum() / counts.sum())


def _sequential_signal(frame: pl.DataFrame, seed: int = 0) -> float:
    """How much more often (previous item -> next item) transitions recur in the real order than with each
    user's events shuffled: 0 when order carries nothing beyond popularity, up to 1 for fixed successors.
    A cue for the sequence models and the Markov chain."""
    rng = np.random.default_rng(seed)
    shuffled = frame.select(USER, ITEM).with_columns(pl.Series("_key", rng.random(frame.height))).sort([USER, "_key"])
    return max(0.0, _recurring_transitions(frame) - _recurring_transitions(shuffled))


def profile_dataset(dataset: Dataset) -> dict[str, Any]:
    """The traits of a cleaned dataset, as plain JSON-able values."""
    frame = dataset.interactions
    users, items = frame[USER].to_numpy(), frame[ITEM].to_numpy()
    lengths = np.bincount(users, minlength=dataset.n_users + 1)[1:]
    item_counts = np.bincount(items, minlength=dataset.n_items + 1)[1:]
    times = frame[TIME].to_numpy()
    distinct_pairs = frame.select(USER, ITEM).unique().height
    top = np.sort(item_counts)[::-1]
    top_share = float(top[: max(1, len(top) // 100)].sum() / max(1, top.sum()))
    kind = _time_kind(times, lengths)
    cutoff = np.quantile(times, 0.8, method="lower") if len(times) else 0
    first_seen = frame.group_by(ITEM).agg(pl.col(TIME).min())[TIME].to_numpy()
    rating = None
    if RATING in frame.columns:
        values = frame[RATING].drop_nulls()
        rating = {"distinct": int(values.n_unique()), "min": float(values.min()), "max": float(values.max()),
                  "mean": round(float(values.mean()), 3)}
    text = dataset.item_text
    attributes = dataset.user_attributes
    traits: dict[str, Any] = {
        "name": dataset.name,
        "users": dataset.n_users,
        "items": dataset.n_items,
        "interactions": frame.height,
        "density": round(frame.height / max(1, dataset.n_users * dataset.n_items), 6),
        "sequence_length": _quantiles(lengths),
        "item_interactions": _quantiles(item_counts),
        "repeat_rate": round(1 - distinct_pairs / max(1, frame.height), 4),
        "sequential_signal": round(_sequential_signal(frame), 4),
        "time": {"kind": kind, "first": int(times.min()) if len(times) else None,
                 "last": int(times.max()) if len(times) else None,
                 "span_days": round(float(times.max() - times.min()) / 86400, 1) if kind == "clock" else None},
        "feedback": "ratings" if rating else "implicit",
        "rating": rating,
        "item_text_coverage": round(sum(bool(t) for t in text[1:]) / max(1, dataset.n_items), 4) if text else 0.0,
        "user_attributes": list(attributes.names) if attributes is not None else [],
        "user_attribute_coverage": (round(float((attributes.codes[1:] > 0).any(axis=1).mean()), 4)
                                    if attributes is not None else 0.0),
        "popularity_gini": round(gini(item_counts), 4),
        "top_1pct_item_share": round(top_share, 4),
        "cold_item_share": round(float((item_counts < COLD_ITEM_MIN).mean()), 4),
        "new_item_share_last_20pct": round(float((first_seen >= cutoff).mean()), 4) if kind == "clock" else None,
        "cleaning": {"rows_in": dataset.report.rows_in, "dropped": dataset.report.dropped()},
    }
    return traits


def format_profile(traits: dict[str, Any]) -> str:
    """The traits as a readable report."""
    seq, item = traits["sequence_length"], traits["item_interactions"]
    time = traits["time"]
    when = {"clock": f"{time['span_days']:,} days" if time["kind"] == "clock" else "",
            "positions": "positions only (no clock)", "none": "none"}[time["kind"]]
    lines = [
        f"data: {traits['name']}",
        f"  users {traits['users']:,}, items {traits['items']:,}, interactions {traits['interactions']:,} "
        f"(density {traits['density']:.4%})",
        f"  events per user: median {seq['median']:g}, p90 {seq['p90']:g}, max {seq['max']:g} (mean {seq['mean']:g})",
        f"  events per item: median {item['median']:g}, p90 {item['p90']:g}, max {item['max']:g}",
        f"  feedback: {traits['feedback']}" + (f" ({traits['rating']['distinct']} values, {traits['rating']['min']:g}"
                                               f"..{traits['rating']['max']:g})" if traits["rating"] else ""),
        f"  time: {when}",
        f"  repeat rate: {traits['repeat_rate']:.1%} of events revisit an item the user had",
        f"  sequential signal: {traits['sequential_signal']:.1%} more recurring item-to-next-item transitions "
        "than in shuffled histories",
        f"  popularity: Gini {traits['popularity_gini']:.3f}; the top 1% of items take {traits['top_1pct_item_share']:.1%}",
        f"  cold items (< {COLD_ITEM_MIN} events): {traits['cold_item_share']:.1%}"
        + (f"; first seen in the last 20% of time: {traits['new_item_share_last_20pct']:.1%}"
           if traits["new_item_share_last_20pct"] is not None else ""),
        f"  item text: {traits['item_text_coverage']:.0%} of items",
        "  user attributes: " + (", ".join(traits["user_attributes"]) + f" ({traits['user_attribute_coverage']:.0%} of users)"
                                 if traits["user_attributes"] else "none"),
    ]
    return "\n".join(lines)


def plot_profile(dataset: Dataset, traits: dict[str, Any], path: str | Path) -> None:
    """Four panels: events per user, item popularity (rank-frequency, log-log), events over time, coverage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = dataset.interactions
    lengths = np.bincount(frame[USER].to_numpy(), minlength=dataset.n_users + 1)[1:]
    counts = np.sort(np.bincount(frame[ITEM].to_numpy(), minlength=dataset.n_items + 1)[1:])[::-1]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0, 0]
    ax.hist(lengths, bins=np.unique(np.geomspace(1, max(2, lengths.max()), 40).astype(int)), color="#4477aa")
    ax.set(xscale="log", yscale="log", xlabel="events per user", ylabel="users", title="history length")
    ax = axes[0, 1]
    ax.plot(np.arange(1, len(counts) + 1), np.maximum(counts, 0.8), color="#cc6677")
    ax.set(xscale="log", yscale="log", xlabel="item rank", ylabel="events",
           title=f"item popularity (Gini {traits['popularity_gini']:.2f})")
    ax = axes[1, 0]
    times = frame[TIME].to_numpy()
    if traits["time"]["kind"] == "clock":
        days = (times - times.min()) / 86400
        ax.hist(days, bins=60, color="#228833")
        ax.set(xlabel="days since the first event", ylabel="events", title="events over time")
    else:
        ax.hist(times, bins=min(60, max(2, int(times.max()) + 1)), color="#228833")
        ax.set(xlabel="position in the user's sequence", ylabel="events", title="events by position (no clock)")
    ax = axes[1, 1]
    bars = {"item text": traits["item_text_coverage"], "user attributes": traits["user_attribute_coverage"],
            "repeat rate": traits["repeat_rate"], "sequential signal": traits["sequential_signal"],
            "cold items": traits["cold_item_share"]}
    ax.barh(list(bars), list(bars.values()), color="#aa3377")
    ax.set(xlim=(0, 1), xlabel="share", title="coverage and signals")
    fig.suptitle(f"{traits['name']}: {traits['users']:,} users, {traits['items']:,} items, "
                 f"{traits['interactions']:,} events")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def save_profile(dataset: Dataset, out: str | Path) -> dict[str, Any]:
    """Profile `dataset` and write `profile.json` and `profile.png` into the folder `out`."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    traits = profile_dataset(dataset)
    atomic_write_text(out / "profile.json", json.dumps(traits, indent=2))
    plot_profile(dataset, traits, out / "profile.png")
    return traits
