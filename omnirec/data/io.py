"""Readers: files in, frames with the columns of `schema` out. No cleaning, no id mapping.

Every reader accepts gzip-compressed files transparently (detected by content, not by name) and
raises `DataFormatError` naming the file, the line and the expected format on malformed input.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "seq.txt"
>>> _ = p.write_text("u1 a b c\\nu2 b c\\n")
>>> read_seq(p).height
5
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from omnirec.data.schema import EVENT, ITEM, RATING, TEXT, TIME, TITLE, USER

_GZIP_MAGIC = b"\x1f\x8b"


class DataFormatError(ValueError):
    """Malformed input: names the file, the line (1-based, where known) and what was expected."""

    def __init__(self, path: str | Path, message: str, line: int | None = None, expected: str | None = None):
        where = f"{path}" + (f", line {line}" if line is not None else "")
        text = f"{where}: {message}" + (f"; expected {expected}" if expected else "")
        super().__init__(text)
        self.path, self.line, self.expected = str(path), line, expected


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, gunzipped when the file is gzip-compressed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: " + ("a folder, not a file" if path.is_dir() else "no such file"))
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataFormatError(path, f"corrupt gzip data ({exc})") from exc
    if not raw.strip():
        raise DataFormatError(path, "the file is empty", expected="at least one record")
    return raw


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The file's text (gzip transparent); a decoding error names the line."""
    raw = read_bytes(path)
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataFormatError(path, f"bytes not valid {encoding}", line=line, expected=f"{encoding} text") from exc


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


# ---------------------------------------------------------------- generic delimited / parquet files


@dataclass(frozen=True)
class ColumnMap:
    """Which columns of the user's file hold the user, item, time, rating and event type.

    `timestamp=None` means the file has no time column: the file order is taken as time order.
    """

    user: str = USER
    item: str = ITEM
    timestamp: str | None = TIME
    rating: str | None = None
    event: str | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """(file column, omnirec column) for every mapped column."""
        cols = [(self.user, USER), (self.item, ITEM), (self.timestamp, TIME), (self.rating, RATING), (self.event, EVENT)]
        return [(src, dst) for src, dst in cols if src is not None]


def _csv_reader(text: str, sep: str, quote: str | None):  # noqa: ANN202 - a csv reader
    if quote is None:
        return csv.reader(io.StringIO(text), delimiter=sep, quoting=csv.QUOTE_NONE)
    return csv.reader(io.StringIO(text), delimiter=sep, quotechar=quote)


def _records(path: Path, text: str, sep: str, quote: str | None):  # noqa: ANN202 - a generator
    """(first line, last line, fields) of every record; a quoted field that is never closed raises for
    the line where it opens (the csv module would report the line where it gave up, or overflow)."""
    reader = _csv_reader(text, sep, quote)
    last_line = text.rstrip("\r\n").count("\n") + 1
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if quote is not None and "field larger than field limit" in str(exc):  # a quote that swallowed the file
                _raise_unclosed(path, start, quote, f"the field runs on past {csv.field_size_limit():,} characters")
            raise DataFormatError(path, f"cannot be parsed ({exc})", line=start) from exc
        spans_to_end = reader.line_num > start and reader.line_num >= last_line
        if quote is not None and spans_to_end and _never_closed(text, start, sep, quote):
            _raise_unclosed(path, start, quote, "the field runs to the end of the file")
        yield start, reader.line_num, row
        start = reader.line_num + 1


def _never_closed(text: str, start: int, sep: str, quote: str) -> bool:
    """Whether the record from line `start` to the end of `text` ends inside a quoted field (the lenient
    reader accepts that; the strict one, used here for the one record, does not)."""
    tail = text.split("\n", start - 1)[-1]
    try:
        for _ in csv.reader(io.StringIO(tail), delimiter=sep, quotechar=quote, strict=True):
            return False  # the record closed its quotes; a later one is read on the next call
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _raise_unclosed(path: Path, line: int, quote: str, why: str) -> None:
    raise DataFormatError(path, f"a quoted field opens on this line and is never closed ({why})", line=line,
                          expected=f"a closing quote ({quote}) before the end of the field")


def _scan_field_counts(path: Path, text: str, sep: str, n_fields: int, first_line: int, quote: str | None) -> None:
    """Find the first record whose field count differs from `n_fields` and raise for it (at its first line)."""
    for start, _, row in _records(path, text, sep, quote):
        if start >= first_line and row and len(row) != n_fields:
            raise DataFormatError(path, f"{len(row)} fields", line=start,
                                  expected=f"{n_fields} fields separated by {sep!r}")


def read_delimited(
    path: str | Path, sep: str, names: list[str] | None = None, encoding: str = "utf-8", quote: str | None = '"'
) -> pl.DataFrame:
    """A CSV/TSV file as a frame of strings. With `names` the file has no header row.

    Blank lines are skipped; a record with too many or too few fields raises with its line number.
    """
    path = Path(path)
    text = read_text(path, encoding)
    header = names is None
    leading_blank = len(text) - len(text.lstrip("\r\n"))
    leading_blank = text[:leading_blank].count("\n")  # polars skips blank lines before the header
    first_data_line = leading_blank + (2 if header else 1)
    try:
        frame = pl.read_csv(
            io.BytesIO(text.encode("utf-8")), separator=sep, has_header=header, new_columns=names,
            infer_schema=False, quote_char=quote,
        )
    except pl.exceptions.PolarsError as exc:
        n_fields = len(names) if names else len(next((r for _, _, r in _records(path, text, sep, quote) if r), []))
        _scan_field_counts(path, text, sep, n_fields, first_data_line, quote)
        raise DataFormatError(path, f"cannot be parsed ({exc})", expected=f"fields separated by {sep!r}") from exc
    if names is not None and frame.width != len(names):
        raise DataFormatError(path, f"{frame.width} fields", line=1, expected=f"{len(names)} fields separated by {sep!r}")
    if frame.width and frame.select(pl.any_horizontal(pl.all().is_null())).to_series().any():
        _scan_field_counts(path, text, sep, frame.width, first_data_line, quote)
    frame = frame.with_row_index("_line", offset=first_data_line)
    return frame.filter(~pl.all_horizontal(pl.exclude("_line").is_null()))


def _numeric(frame: pl.DataFrame, col: str, dtype: pl.DataType, path: Path, expected: str) -> pl.Series:
    src = frame[col]
    out = src.cast(dtype, strict=False)
    bad = out.is_null() & src.is_not_null()
    if bad.any():
        i = bad.arg_true()[0]
        line = int(frame["_line"][i]) if "_line" in frame.columns else None
        raise DataFormatError(path, f"column '{col}' holds {src[i]!r}", line=line, expected=expected)
    return out


def _timestamps(frame: pl.DataFrame, col: str, path: Path) -> pl.Series:
    """Unix seconds from numbers, datetimes or ISO-8601 strings."""
    src = frame[col]
    if src.dtype.is_temporal():
        return src.cast(pl.Datetime("us")).dt.epoch("s")
    as_int = src.cast(pl.Int64, strict=False)  # exact for nanosecond stamps, which float64 would round
    as_num = src.cast(pl.Float64, strict=False)
    finite = pl.when(as_num.is_finite()).then(as_num.floor())  # nan and inf are not times
    seconds = pl.select(pl.coalesce(as_int, finite.cast(pl.Int64))).to_series().alias(src.name)
    positions = (seconds.is_null() & src.is_not_null()).arg_true()
    if positions.len() == 0:
        return seconds
    bad = int(positions[0])
    if src.dtype == pl.String:  # the values that are not numbers must be ISO date-times
        parsed, bad_at = _iso_seconds(src.gather(positions))
        if parsed is not None:
            return seconds.scatter(positions, parsed)
        bad = int(positions[bad_at])
    line = int(frame["_line"][bad]) if "_line" in frame.columns else None
    raise DataFormatError(path, f"column '{col}' holds {src[bad]!r}", line=line,
                          expected="a number (Unix time) or an ISO-8601 date-time")


def _iso_seconds(src: pl.Series) -> tuple[pl.Series | None, int]:
    """(Unix seconds of ISO-8601 strings, -1); naive times are UTC. (None, row) for the first bad value."""
    try:
        parsed = src.str.to_datetime(strict=False, time_zone="UTC")
        if not (parsed.is_null() & src.is_not_null()).any():
            return parsed.dt.epoch("s"), -1
    except pl.exceptions.PolarsError:  # no single layout fits every value
        pass
    # mixed layouts or offsets in one column: the slower per-value parser handles each on its own
    out = []
    for row, value in enumerate(src.to_list()):
        if value is None:
            out.append(None)
            continue
        try:
            stamp = datetime.fromisoformat(value.strip())
        except ValueError:
            return None, row
        stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
        out.append(math.floor(stamp.timestamp()))
    return pl.Series(src.name, out, dtype=pl.Int64), -1


def _to_interactions(frame: pl.DataFrame, columns: ColumnMap, path: Path) -> pl.DataFrame:
    missing = [src for src, _ in columns.pairs() if src not in frame.columns]
    if missing:
        have = ", ".join(c for c in frame.columns if c != "_line")
        raise DataFormatError(path, f"no column {missing[0]!r} (columns: {have})", expected="the mapped column names")
    out = {USER: frame[columns.user].cast(pl.String), ITEM: frame[columns.item].cast(pl.String)}
    if columns.timestamp is None:
        out[TIME] = pl.int_range(frame.height, eager=True).cast(pl.Int64)
    else:
        out[TIME] = _timestamps(frame, columns.timestamp, path)
    if columns.rating is not None:
        out[RATING] = _numeric(frame, columns.rating, pl.Float64(), path, "a number")
    if columns.event is not None:
        out[EVENT] = frame[columns.event].cast(pl.String)
    return pl.DataFrame(out)


def read_interactions(
    path: str | Path, columns: ColumnMap = ColumnMap(), sep: str | None = None, encoding: str = "utf-8"
) -> pl.DataFrame:
    """Interactions from a CSV, TSV or Parquet file with a header row, mapped by `columns`.

    The separator follows the name (.csv, .tsv/.tab; .gz is looked through) unless `sep` is given;
    other names are sniffed from the header line.
    """
    path = Path(path)
    suffix = _base_suffix(path)
    if suffix in (".parquet", ".pq"):
        fast = _scan_interactions(path, columns, None, encoding)
        return fast if fast is not None else _to_interactions(_read_parquet(path), columns, path)
    if sep is None:
        sep = _separator(path, encoding)
    fast = _scan_interactions(path, columns, sep, encoding)
    if fast is not None:
        return fast
    frame = read_delimited(path, sep, encoding=encoding)
    if frame.height == 0:
        raise DataFormatError(path, "a header but no records", expected="at least one record")
    return _to_interactions(frame, columns, path)


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def _scan_interactions(path: Path, columns: ColumnMap, sep: str | None, encoding: str) -> pl.DataFrame | None:
    """The interactions read lazily, only the mapped columns, without a copy of the file in memory.

    This is the fast path for large, well-formed, uncompressed UTF-8 files (Parquet when `sep` is None).
    It returns None whenever the file is not that, or anything looks wrong: the strict reader then reads
    the file again and raises the error that names the line, so errors are the same either way.
    """
    if not path.is_file() or _is_gzip(path) or (sep is not None and encoding.lower().replace("-", "") != "utf8"):
        return None
    try:
        if sep is None:
            frame = pl.scan_parquet(path)
        else:  # every column as a string, as the strict reader does; ragged rows raise or leave nulls
            frame = pl.scan_csv(path, separator=sep, has_header=True, infer_schema=False, quote_char='"',
                                encoding="utf8")
        names = frame.collect_schema().names()
        if any(src not in names for src, _ in columns.pairs()):
            return None
        if sep is not None:  # a short row leaves nulls; blank lines are skipped by the scanner
            frame = frame.filter(~pl.all_horizontal(pl.all().is_null()))
            if frame.select(pl.any_horizontal(pl.all().is_null()).any()).collect().item():
                return None
        frame = frame.select([src for src, _ in columns.pairs()]).collect()
        if frame.height == 0 or frame.select(pl.any_horizontal(pl.all().is_null()).any()).item():
            return None
        return _to_interactions(frame, columns, path)
    except (pl.exceptions.PolarsError, DataFormatError, OSError, ValueError):
        return None


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(io.BytesIO(read_bytes(path)))
    except pl.exceptions.PolarsError as exc:
        raise DataFormatError(path, f"not a readable Parquet file ({exc})") from exc
    if frame.height == 0:
        raise DataFormatError(path, "the file has no rows", expected="at least one record")
    return frame


def _separator(path: Path, encoding: str) -> str:
    """By name (.csv, .tsv, .tab; .gz looked through), else the most frequent candidate in the header."""
    by_name = {".csv": ",", ".tsv": "\t", ".tab": "\t"}.get(_base_suffix(path))
    if by_name:
        return by_name
    first = read_text(path, encoding).lstrip().split("\n", 1)[0]
    return max(["\t", ",", ";", "|"], key=first.count)


def _read_table(path: Path, sep: str | None, encoding: str) -> pl.DataFrame:
    """A Parquet file, or a delimited one (separator by name or sniffed) without its line numbers."""
    if _base_suffix(path) in (".parquet", ".pq"):
        return _read_parquet(path)
    return read_delimited(path, sep or _separator(path, encoding), encoding=encoding).drop("_line")


def read_item_text(
    path: str | Path, id_col: str, text_cols: list[str], sep: str | None = None, encoding: str = "utf-8"
) -> pl.DataFrame:
    """Item catalogue: one row per item, its text fields joined with '. ' into the `text` column, and its
    `title` (see `title_of`)."""
    path = Path(path)
    frame = _read_table(path, sep, encoding)
    missing = [c for c in [id_col, *text_cols] if c not in frame.columns]
    if missing:
        have = ", ".join(frame.columns)
        raise DataFormatError(path, f"no column {missing[0]!r} (columns: {have})",
                              expected="the item id column and the text columns named")
    return frame.select(pl.col(id_col).cast(pl.String).alias(ITEM), join_text(text_cols).alias(TEXT),
                        title_of(text_cols).alias(TITLE))


def read_user_attributes(path: str | Path, id_col: str, sep: str | None = None, encoding: str = "utf-8") -> pl.DataFrame:
    """A user table (CSV/TSV/Parquet with a header): `id_col` renamed to `user_id`, every other column an
    attribute (as strings; see `data.attributes` for how they become codes)."""
    path = Path(path)
    frame = _read_table(path, sep, encoding)
    if id_col not in frame.columns:
        raise DataFormatError(path, f"no column {id_col!r} (columns: {', '.join(frame.columns)})",
                              expected="the user id column")
    if frame.width < 2:
        raise DataFormatError(path, "no attribute columns besides the user id", expected="at least one attribute column")
    attrs = [pl.col(c).cast(pl.String) for c in frame.columns if c != id_col]
    return frame.select(pl.col(id_col).cast(pl.String).alias(USER), *attrs)


TITLE_COLUMNS = ("title", "name", "product_name", "product_title")
MAX_TITLE = 120


def title_of(columns: list[str]) -> pl.Expr:
    """An item's title from its text columns: a column named like a title ("title", "name", ...) if there is
    one; else the first column when there are several (a catalogue's first field names the item); else the
    first sentence of the only column (a description), cut to 120 characters."""
    named = [c for c in columns if c.lower() in TITLE_COLUMNS]
    if named or len(columns) > 1:
        title = pl.col((named or columns)[0]).cast(pl.String).str.strip_chars()
    else:
        title = pl.col(columns[0]).cast(pl.String).str.strip_chars().str.split(". ").list.first().str.strip_chars_end(".")
    return pl.when(title.str.len_chars() > MAX_TITLE).then(title.str.slice(0, MAX_TITLE - 1) + "…").otherwise(title)


def join_text(columns: list[str]) -> pl.Expr:
    """The non-empty text fields of `columns`, each without trailing dots, joined with '. '."""
    parts = [pl.col(c).cast(pl.String).str.strip_chars().str.strip_chars_end(".") for c in columns]
    return pl.concat_list(parts).list.eval(pl.element().filter(pl.element() != "")).list.join(". ")


# ---------------------------------------------------------------- public benchmark formats


def _interactions_from_lists(users: list[str], items: list[str], times: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {USER: users, ITEM: items, TIME: times}, schema={USER: pl.String, ITEM: pl.String, TIME: pl.Int64}
    )


def read_seq(path: str | Path) -> pl.DataFrame:
    """Sequence file: `user item1 item2 ...`, one user a line, items in time order (S3-Rec format).

    The position in the line becomes the timestamp.
    """
    path = Path(path)
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DataFormatError(path, f"{line.strip()!r} has no item", line=lineno, expected="'user item1 item2 ...'")
        user = parts[0]
        if user in seen:
            raise DataFormatError(path, f"user {user!r} already had line {seen[user]}", line=lineno,
                                  expected="one line per user")
        seen[user] = lineno
        users.extend([user] * (len(parts) - 1))
        items.extend(parts[1:])
        times.extend(range(len(parts) - 1))
    return _interactions_from_lists(users, items, times)


def read_pairs(path: str | Path) -> pl.DataFrame:
    """Pair file: `user item` per line, each user's lines in time order (SASRec / BERT4Rec format).

    The line number becomes the timestamp, which keeps every user's order.
    """
    path = Path(path)
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataFormatError(path, f"{len(parts)} fields in {line.strip()!r}", line=lineno,
                                  expected="'user item' (two fields)")
        users.append(parts[0])
        items.append(parts[1])
        times.append(lineno)
    return _interactions_from_lists(users, items, times)


@dataclass(frozen=True)
class MovieLens:
    """MovieLens-100K: ratings, items (title + genres as text, release year) and users."""

    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame


_ML_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


def find_file(directory: Path, name: str) -> Path:
    """`directory/name`, or its gzipped twin `directory/name.gz`."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory}: neither {name} nor {name}.gz found")


def read_movielens(directory: str | Path) -> MovieLens:
    """MovieLens-100K from its directory (`u.data`, `u.item`, `u.user`; latin-1; gz or not)."""
    directory = Path(directory)
    data_path = find_file(directory, "u.data")
    ratings = read_delimited(data_path, "\t", names=[USER, ITEM, RATING, TIME], quote=None)
    ratings = ratings.with_columns(
        _numeric(ratings, RATING, pl.Float64(), data_path, "a rating number"),
        _numeric(ratings, TIME, pl.Int64(), data_path, "Unix seconds"),
    ).select(USER, ITEM, TIME, RATING)
    item_path = find_file(directory, "u.item")
    names = ["movie_id", "title", "release", "video_release", "url", *_ML_GENRES]
    raw_items = read_delimited(item_path, "|", names=names, encoding="latin-1", quote=None)
    genre_flags = [pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in _ML_GENRES]
    genres = pl.concat_list(genre_flags).list.drop_nulls().list.join(", ")
    items = raw_items.with_columns(genres.alias("genres")).select(
        pl.col("movie_id").alias(ITEM),
        join_text(["title", "genres"]).alias(TEXT),
        pl.col("title").str.strip_chars().alias(TITLE),
        pl.col("release").str.slice(-4).cast(pl.Int64, strict=False).alias("year"),
    )
    user_path = find_file(directory, "u.user")
    users = read_delimited(user_path, "|", names=[USER, "age", "gender", "occupation", "zip"], quote=None)
    return MovieLens(ratings, items, users.drop("_line"))


def _recbole_frame(path: Path) -> pl.DataFrame:
    """A RecBole atomic file: tab-separated with a `name:type` header; the types are dropped."""
    frame = read_delimited(path, "\t", quote=None)
    return frame.rename({c: c.split(":", 1)[0] for c in frame.columns if c != "_line"})


def read_recbole(directory: str | Path, name: str) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """RecBole atomic files `<name>.inter` (+ optional `<name>.item` / `<name>.text`) from `directory`.

    Also reads the UniSRec split layout (`<name>.{train,valid,test}.inter` with `item_id_list`), from
    which one whole sequence per user is rebuilt (see `_read_unisrec_sequences`).
    Returns (interactions, items or None).
    """
    directory = Path(directory)
    try:
        inter_path = find_file(directory, f"{name}.inter")
        frame = _recbole_frame(inter_path)
        columns = ColumnMap(
            timestamp=TIME if TIME in frame.columns else None, rating=RATING if RATING in frame.columns else None
        )
        interactions = _to_interactions(frame, columns, inter_path)
    except FileNotFoundError:
        interactions = _read_unisrec_sequences(directory, name)
    items = _read_recbole_items(directory, name)
    try:
        index_path = find_file(directory, f"{name}.item2index")
    except FileNotFoundError:
        return interactions, items
    if items is not None:  # UniSRec keys text by the original id but sequences by item index
        index = read_delimited(index_path, "\t", names=[ITEM, "index"], quote=None).drop("_line")
        items = items.join(index, on=ITEM, how="inner").select(pl.col("index").alias(ITEM), TEXT, TITLE)
    return interactions, items


def _unisrec_rows(path: Path) -> list[tuple[str, list[str], str]]:
    """(user, history, target) per row of a UniSRec `.inter` file, in file order."""
    frame = _recbole_frame(path)
    for col in (USER, "item_id_list", ITEM):
        if col not in frame.columns:
            raise DataFormatError(path, f"no column {col!r}", line=1, expected="user_id, item_id_list, item_id")
    no_target = frame[ITEM].is_null() | (frame[ITEM].str.strip_chars() == "")
    if no_target.any():
        line = int(frame["_line"][int(no_target.arg_true()[0])])
        raise DataFormatError(path, "a row without target item", line=line, expected="a target item id")
    histories = frame["item_id_list"].fill_null("").str.split(" ").to_list()
    return [(u, [x for x in h if x], t) for u, h, t in zip(frame[USER].to_list(), histories, frame[ITEM].to_list(),
                                                           strict=True)]


def _read_unisrec_sequences(directory: Path, name: str) -> pl.DataFrame:
    """Whole sequences from UniSRec's split files.

    Test rows hold history + target, but histories are cut to the last 50 items. When the train and
    valid files are there, each sequence is rebuilt in full instead: the first item of the user's
    shortest train history, every train target from the shortest prefix to the longest, then the
    valid and test targets; it must end with the test row's history and target.
    """
    test_path = find_file(directory, f"{name}.test.inter")
    test = _unisrec_rows(test_path)
    sequences = {user: history + [target] for user, history, target in test}
    try:
        train = _unisrec_rows(find_file(directory, f"{name}.train.inter"))
        valid = {u: t for u, _, t in _unisrec_rows(find_file(directory, f"{name}.valid.inter"))}
    except FileNotFoundError:
        train, valid = [], {}
    by_user: dict[str, list[tuple[list[str], str]]] = {}
    for user, history, target in train:
        by_user.setdefault(user, []).append((history, target))
    rebuilt: dict[str, list[str]] = {}
    for user, rows in by_user.items():
        if len(rows[0][0]) > len(rows[-1][0]):  # UniSRec writes a user's prefixes longest first
            rows = rows[::-1]
        rebuilt[user] = rows[0][0][:1] + [target for _, target in rows]
    for user, seq in rebuilt.items():
        full = seq + [valid.get(user, ""), sequences[user][-1]] if user in sequences else []
        tail = sequences.get(user, [])
        if not full or full[-len(tail):] != tail:
            raise DataFormatError(test_path, f"user {user!r}: train/valid/test rows do not form one sequence")
        sequences[user] = full
    users = [u for u, seq in sequences.items() for _ in seq]
    items = [x for seq in sequences.values() for x in seq]
    times = [t for seq in sequences.values() for t in range(len(seq))]
    return _interactions_from_lists(users, items, times)


def _read_recbole_items(directory: Path, name: str) -> pl.DataFrame | None:
    for suffix in ("text", "item"):
        try:
            path = find_file(directory, f"{name}.{suffix}")
        except FileNotFoundError:
            continue
        frame = _recbole_frame(path)
        text_cols = [c for c in frame.columns if c not in (ITEM, "_line")]
        if ITEM not in frame.columns or not text_cols:
            raise DataFormatError(path, "needs an item_id column and at least one text column", line=1)
        return frame.select(pl.col(ITEM), join_text(text_cols).alias(TEXT), title_of(text_cols).alias(TITLE))
    return None


def read_item_attributes(path: str | Path) -> pl.DataFrame:
    """S3-Rec `item2attributes.json` (`{"item": [attr, ...]}`) as items whose text is `attr_<id>` tokens."""
    path = Path(path)
    try:
        mapping = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"invalid JSON ({exc.msg})", line=exc.lineno, expected="a JSON object") from exc
    if not isinstance(mapping, dict):
        raise DataFormatError(path, "top level is not an object", expected='{"item_id": [attribute ids]}')
    bad = next((k for k, v in mapping.items() if not isinstance(v, list) or not all(isinstance(a, int) for a in v)), None)
    if bad is not None:
        raise DataFormatError(path, f"item {bad!r} maps to {mapping[bad]!r}", expected="a list of integer attribute ids")
    texts = [" ".join(f"attr_{a}" for a in attrs) for attrs in mapping.values()]
    return pl.DataFrame({ITEM: list(mapping.keys()), TEXT: texts, TITLE: [None] * len(texts)},  # codes, no titles
                        schema={ITEM: pl.String, TEXT: pl.String, TITLE: pl.String})
