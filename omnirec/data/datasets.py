"""Named benchmark datasets and file formats, read into a cleaned `Dataset`.

Benchmark files are never bundled: they are read from a data folder the user supplies (for
example the folder holding `ml-100k/`, `s3rec/`, `bert4rec/` and `amazon-scientific/`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from omnirec.data import io
from omnirec.data.clean import CleanConfig
from omnirec.data.dataset import Dataset

Frames = tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None]  # interactions, items, users
Reader = Callable[[Path], Frames]


def _movielens(folder: Path) -> Frames:
    ml = io.read_movielens(folder)
    users = ml.users.select(pl.col("user_id"), pl.col("age"), pl.col("gender"), pl.col("occupation"),
                            pl.col("zip").str.slice(0, 1).alias("zip_region"))  # first digit: a US region
    return ml.interactions, ml.items, users


def _s3rec_beauty(folder: Path) -> Frames:
    interactions = io.read_seq(io.find_file(folder, "Beauty.txt"))
    try:
        items = io.read_item_attributes(io.find_file(folder, "Beauty_item2attributes.json"))
    except FileNotFoundError:
        items = None
    return interactions, items, None


def _bert4rec_beauty(folder: Path) -> Frames:
    return io.read_pairs(io.find_file(folder, "beauty.txt")), None, None


def _scientific(folder: Path) -> Frames:
    return *io.read_recbole(folder, "Scientific"), None


# name -> (sub-folder of the data folder, reader, description)
DATASETS: dict[str, tuple[str, Reader, str]] = {
    "ml-100k": ("ml-100k", _movielens, "MovieLens-100K ratings as implicit feedback; text: title + genres; "
                "user attributes: age, gender, occupation, zip region"),
    "beauty": ("s3rec", _s3rec_beauty, "Amazon Beauty 5-core (S3-Rec); text: attribute-id tokens"),
    "beauty-bert4rec": ("bert4rec", _bert4rec_beauty, "Amazon Beauty as preprocessed for BERT4Rec; no text"),
    "scientific": ("amazon-scientific", _scientific, "Amazon Industrial & Scientific (UniSRec); item text"),
}


def dataset_folder(name: str, data_dir: str | Path) -> Path:
    """The folder of dataset `name`: `<data_dir>/<sub-folder>`, or `data_dir` itself if it is that folder."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    data_dir = Path(data_dir)
    sub = data_dir / DATASETS[name][0]
    if sub.is_dir():
        return sub
    if data_dir.is_dir():
        return data_dir
    raise FileNotFoundError(f"{data_dir}: no such folder (expected it to hold {DATASETS[name][0]}/)")


def load_dataset(name: str, data_dir: str | Path, config: CleanConfig = CleanConfig()) -> Dataset:
    """Read and clean a named benchmark dataset from `data_dir`.

    >>> load_dataset("nope", ".")
    Traceback (most recent call last):
    ...
    ValueError: unknown dataset 'nope'; known: ml-100k, beauty, beauty-bert4rec, scientific
    """
    folder = dataset_folder(name, data_dir)
    interactions, items, users = DATASETS[name][1](folder)
    return Dataset.from_frames(interactions, items, name=name, config=config, users=users)


FORMATS = ("seq", "pairs", "csv", "movielens", "recbole")


def load_file(
    path: str | Path, fmt: str, columns: io.ColumnMap = io.ColumnMap(), config: CleanConfig = CleanConfig(),
    items_path: str | Path | None = None, item_text_columns: tuple[str, ...] = (), users_path: str | Path | None = None,
) -> Dataset:
    """Read and clean one file (or folder, for `movielens` and `recbole`) in format `fmt`.

    - `seq`: `user i1 i2 ...` per line; `pairs`: `user item` per line in time order;
    - `csv`: CSV/TSV/Parquet with a header, mapped by `columns`;
    - `movielens`: a folder with `u.data`/`u.item`; `recbole`: `<folder>/<name>.inter`, given as the
      path to the `.inter` file (or to the `.test.inter` file of the UniSRec layout).
    `items_path` with `item_text_columns` adds item text from a CSV/TSV/Parquet catalogue; `users_path`
    adds user attributes from a CSV/TSV/Parquet table keyed by the user column.
    """
    path = Path(path)
    items = users = None
    if fmt == "seq":
        interactions = io.read_seq(path)
    elif fmt == "pairs":
        interactions = io.read_pairs(path)
    elif fmt == "csv":
        interactions = io.read_interactions(path, columns)
    elif fmt == "movielens":
        interactions, items, users = _movielens(path)
    elif fmt == "recbole":
        name = path.name.split(".")[0]
        interactions, items = io.read_recbole(path.parent, name)
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if items_path is not None:
        if not item_text_columns:
            raise ValueError("items_path needs item_text_columns (which columns hold the text)")
        items = io.read_item_text(items_path, columns.item, list(item_text_columns))
    if users_path is not None:
        users = io.read_user_attributes(users_path, columns.user)
    return Dataset.from_frames(interactions, items, name=path.name, config=config, users=users)


@dataclass(frozen=True)
class DataConfig:
    """Where a run's data comes from (the `[data]` table of a run config): a named benchmark in
    `data_dir`, or a file (`path`) in `format` with its columns, an item catalogue with text and a user
    attribute table."""

    dataset: str = ""
    data_dir: str = ""
    path: str = ""
    format: str = ""
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "timestamp"
    rating_col: str = ""
    items: str = ""
    text_cols: str = ""
    user_attributes: str = ""

    def text_columns(self) -> tuple[str, ...]:
        """`text_cols` as a tuple of column names."""
        return tuple(c.strip() for c in self.text_cols.split(",") if c.strip())

    def problem(self, flags: bool = False) -> str | None:
        """What is missing or contradictory, phrased as the fix (naming the command-line flags with
        `flags`, else the config keys); None when the source is complete.

        >>> DataConfig(path="log.csv").problem(), DataConfig(path="log.csv").problem(flags=True)[:21]
        ('path needs format (one of seq, pairs, csv, movielens, recbole)', '--path needs --format')
        """
        key = (lambda k: "--" + k.replace("_", "-")) if flags else (lambda k: k)
        if bool(self.dataset) == bool(self.path):
            return f"give either {key('dataset')} NAME with {key('data_dir')} DIR, or {key('path')} FILE with {key('format')} FMT"
        if self.dataset and not self.data_dir:
            return f"{key('dataset')} needs {key('data_dir')} (the folder holding the benchmark files)"
        if self.path and not self.format:
            return f"{key('path')} needs {key('format')} (one of {', '.join(FORMATS)})"
        if self.items and not self.text_columns():
            return f"{key('items')} needs {key('text_cols')} (the catalogue columns that hold the text)"
        return None


def load_data(source: DataConfig, clean: CleanConfig = CleanConfig()) -> Dataset:
    """The cleaned dataset `source` names."""
    problem = source.problem()
    if problem:
        raise ValueError(f"[data]: {problem}")
    if source.dataset:
        return load_dataset(source.dataset, source.data_dir, clean)
    columns = io.ColumnMap(user=source.user_col, item=source.item_col, timestamp=source.time_col or None,
                           rating=source.rating_col or None)
    return load_file(source.path, source.format, columns, clean, items_path=source.items or None,
                     item_text_columns=source.text_columns(), users_path=source.user_attributes or None)
