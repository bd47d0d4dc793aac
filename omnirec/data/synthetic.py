"""A seeded synthetic catalogue: items with titles and categories as text, power-law popularity, and
real sequential structure (each item has a few likely successors in its category), so that a
sequential model beats popularity on it.

>>> inter, items = generate(SyntheticConfig(n_users=20, n_items=50, seed=1))
>>> sorted(inter.columns), items.columns
(['item_id', 'timestamp', 'user_id'], ['item_id', 'text', 'title', 'category'])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from omnirec.data.schema import ITEM, TEXT, TIME, TITLE, USER

_CATEGORIES = {
    "Kitchen > Cookware": ["pan", "skillet", "saucepan", "wok", "stockpot"],
    "Kitchen > Coffee": ["grinder", "kettle", "french press", "espresso cups", "filter papers"],
    "Outdoors > Camping": ["tent", "sleeping bag", "camp stove", "lantern", "hammock"],
    "Outdoors > Cycling": ["helmet", "bike light", "tyre pump", "saddle bag", "bottle cage"],
    "Books > Science Fiction": ["space opera novel", "cyberpunk novel", "short story collection", "time travel saga"],
    "Books > Cooking": ["baking cookbook", "vegetarian cookbook", "bread handbook", "spice guide"],
    "Beauty > Skincare": ["moisturiser", "cleanser", "serum", "sunscreen", "face mask"],
    "Beauty > Hair": ["shampoo", "conditioner", "hair oil", "styling gel", "hair mask"],
    "Electronics > Audio": ["headphones", "earbuds", "speaker", "turntable", "amplifier"],
    "Electronics > Computing": ["keyboard", "mouse", "monitor stand", "usb hub", "laptop sleeve"],
    "Toys > Puzzles": ["jigsaw puzzle", "puzzle cube", "logic game", "brain teaser"],
    "Toys > Building": ["brick set", "marble run", "construction kit", "robot kit"],
    "Sports > Running": ["running shoes", "running socks", "armband", "running vest"],
    "Sports > Yoga": ["yoga mat", "yoga block", "strap", "meditation cushion"],
    "Garden > Tools": ["trowel", "pruning shears", "watering can", "garden gloves", "rake"],
    "Garden > Plants": ["herb seeds", "tomato seeds", "bulb mix", "potting soil"],
    "Music > Guitar": ["guitar strings", "capo", "guitar picks", "tuner", "guitar strap"],
    "Music > Keys": ["keyboard stand", "sustain pedal", "piano bench", "sheet music book"],
    "Pets > Dogs": ["dog leash", "chew toy", "dog bed", "dog treats", "dog bowl"],
    "Pets > Cats": ["cat tree", "scratching post", "cat litter", "cat toy", "cat food"],
}
_ADJECTIVES = [
    "classic", "compact", "deluxe", "eco", "essential", "lightweight", "premium", "pro", "smart", "travel",
    "vintage", "ultra", "organic", "modern", "rugged", "silent", "mini", "large", "heritage", "everyday",
]
_BRANDS = ["Acme", "Northwind", "Blue Fern", "Orbit", "Kestrel", "Mosaic", "Pioneer", "Tidal", "Cedar", "Nova"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and structure of the synthetic catalogue."""

    n_users: int = 2000
    n_items: int = 1000
    min_length: int = 5
    mean_length: float = 20.0
    max_length: int = 100
    popularity_exponent: float = 1.0  # Zipf exponent of item popularity
    n_successors: int = 3  # likely next items of each item, within its category
    p_follow: float = 0.55  # chance the next item is a successor of the current one
    p_taste: float = 0.3  # chance it comes from the user's favourite categories (else: global popularity)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 2:
            raise ValueError("n_users >= 1 and n_items >= 2 are required")
        if not 0 <= self.p_follow + self.p_taste <= 1:
            raise ValueError("p_follow + p_taste must lie in [0, 1]")
        if not 1 <= self.min_length <= self.mean_length <= self.max_length:
            raise ValueError("need 1 <= min_length <= mean_length <= max_length")


def _catalogue(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    names = list(_CATEGORIES)
    category = rng.choice(len(names), size=cfg.n_items, p=_zipf(len(names), 0.6))
    popularity = _zipf(cfg.n_items, cfg.popularity_exponent)[rng.permutation(cfg.n_items)]
    titles = []
    for i in range(cfg.n_items):
        noun = rng.choice(_CATEGORIES[names[category[i]]])
        titles.append(f"{rng.choice(_BRANDS)} {rng.choice(_ADJECTIVES)} {noun}")
    items = pl.DataFrame(
        {
            ITEM: [f"i{i}" for i in range(cfg.n_items)],
            TEXT: [f"{t}. {names[c]}" for t, c in zip(titles, category, strict=True)],
            TITLE: titles,
            "category": [names[c] for c in category],
        }
    )
    return items, category, popularity


def _zipf(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def _successors(cfg: SyntheticConfig, category: np.ndarray, popularity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n_items, n_successors) likely next items, drawn by popularity from the same category."""
    out = np.zeros((cfg.n_items, cfg.n_successors), dtype=np.int64)
    for c in np.unique(category):
        members = np.flatnonzero(category == c)
        p = popularity[members] / popularity[members].sum()
        for i in members:
            out[i] = rng.choice(members, size=cfg.n_successors, p=p)
    return out


class _Drawer:
    """Draws a user's next item; items already in the user's history are redrawn (a few tries)."""

    def __init__(self, cfg: SyntheticConfig, successors: np.ndarray, by_cat: list[np.ndarray],
                 cat_p: list[np.ndarray], popularity: np.ndarray, rng: np.random.Generator):
        self.cfg, self.successors, self.by_cat, self.rng = cfg, successors, by_cat, rng
        self.cat_cdf = [np.cumsum(p) for p in cat_p]
        self.cdf = np.cumsum(popularity)

    def _once(self, current: int, taste: np.ndarray) -> int:
        cfg, rng = self.cfg, self.rng
        r = rng.random()
        if current >= 0 and r < cfg.p_follow:
            return int(self.successors[current, rng.integers(cfg.n_successors)])
        if r < cfg.p_follow + cfg.p_taste:
            c = int(np.searchsorted(np.cumsum(taste), rng.random() * taste.sum()))
            c = min(c, len(self.by_cat) - 1)
            idx = min(int(np.searchsorted(self.cat_cdf[c], rng.random() * self.cat_cdf[c][-1])), len(self.by_cat[c]) - 1)
            return int(self.by_cat[c][idx])
        return min(int(np.searchsorted(self.cdf, rng.random() * self.cdf[-1])), cfg.n_items - 1)

    def next_item(self, current: int, taste: np.ndarray, seen: set[int]) -> int:
        item = self._once(current, taste)
        for _ in range(10):
            if item not in seen:
                break
            item = self._once(current, taste)
        return item


def generate(cfg: SyntheticConfig = SyntheticConfig()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(interactions, items): interactions with user, item and Unix-second timestamps; items with text."""
    rng = np.random.default_rng(cfg.seed)
    items, category, popularity = _catalogue(cfg, rng)
    successors = _successors(cfg, category, popularity, rng)
    by_cat = [np.flatnonzero(category == c) for c in np.unique(category)]  # non-empty categories only
    n_cat = len(by_cat)
    cat_p = [popularity[m] / popularity[m].sum() for m in by_cat]
    lengths = np.clip(
        cfg.min_length + rng.geometric(1 / max(cfg.mean_length - cfg.min_length + 1, 1), cfg.n_users) - 1,
        cfg.min_length, cfg.max_length,
    )
    users, seq_items, times = [], [], []
    draw = _Drawer(cfg, successors, by_cat, cat_p, popularity, rng)
    for u in range(cfg.n_users):
        taste = rng.dirichlet(np.full(n_cat, 0.2))
        t = int(1_600_000_000 + rng.integers(0, 30 * 86400))
        current, seen = -1, set()
        for _ in range(lengths[u]):
            current = draw.next_item(current, taste, seen)
            seen.add(current)
            t += int(rng.exponential(86400))
            users.append(f"u{u}")
            seq_items.append(f"i{current}")
            times.append(t)
    inter = pl.DataFrame({USER: users, ITEM: seq_items, TIME: times}, schema={USER: pl.String, ITEM: pl.String, TIME: pl.Int64})
    return inter, items


def write_large(path: str, n_users: int, n_items: int, n_interactions: int, seed: int = 0,
                users_per_chunk: int = 100_000, p_follow: float = 0.5) -> int:
    """A large synthetic interaction log written to Parquet chunk by chunk (memory independent of its
    size), for scale tests: Zipf item popularity, each item with one likely successor (followed with
    probability `p_follow`), geometric sequence lengths averaging n_interactions / n_users. Ids are the
    strings "u<n>" and "i<n>". Returns the number of interactions written (close to n_interactions).

    Vectorised over the users of a chunk, one sequence position at a time.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 1.0
    cdf = np.cumsum(popularity[rng.permutation(n_items)])
    cdf /= cdf[-1]
    successor = (np.arange(n_items) + rng.integers(1, 50, n_items)) % n_items
    mean = n_interactions / n_users
    schema = pa.schema([(USER, pa.string()), (ITEM, pa.string()), (TIME, pa.int64())])
    written = 0
    with pq.ParquetWriter(path, schema) as writer:
        for lo in range(0, n_users, users_per_chunk):
            users = np.arange(lo, min(n_users, lo + users_per_chunk))
            lengths = np.clip(rng.geometric(1 / max(mean - 2, 1), len(users)) + 2, 3, 2000)
            items = np.empty((len(users), int(lengths.max())), dtype=np.int64)
            items[:, 0] = np.searchsorted(cdf, rng.random(len(users)))
            for t in range(1, items.shape[1]):
                follow = rng.random(len(users)) < p_follow
                items[:, t] = np.where(follow, successor[items[:, t - 1]], np.searchsorted(cdf, rng.random(len(users))))
            keep = np.arange(items.shape[1])[None, :] < lengths[:, None]
            rows = np.repeat(users, lengths)
            table = pa.table({
                USER: pa.array(np.char.add("u", rows.astype(str))),
                ITEM: pa.array(np.char.add("i", items[keep].astype(str))),
                TIME: pa.array(1_600_000_000 + np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)),
            }, schema=schema)
            writer.write_table(table)
            written += len(rows)
    return written
