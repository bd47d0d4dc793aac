"""The readers of omnirec.data.io on tiny hand-written files: good input, gzip, and every malformed case.

Every file is written to pytest's tmp_path; no real dataset is read here.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from omnirec.data.io import (
    ColumnMap,
    DataFormatError,
    read_interactions,
    read_item_attributes,
    read_item_text,
    read_movielens,
    read_pairs,
    read_recbole,
    read_seq,
)
from omnirec.data.schema import INTERACTION_SCHEMA, ITEM_SCHEMA, REQUIRED

U, I, T, R, E, X = "user_id", "item_id", "timestamp", "rating", "event", "text"
BASE_SCHEMA = {c: INTERACTION_SCHEMA[c] for c in REQUIRED}
RATED_SCHEMA = {**BASE_SCHEMA, R: INTERACTION_SCHEMA[R]}


# ------------------------------------------------------------------ helpers


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def gz(content: str | bytes) -> bytes:
    data = content.encode("utf-8") if isinstance(content, str) else content
    return gzip.compress(data, mtime=0)


def utc(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp())


def rows(frame: pl.DataFrame) -> list[tuple]:
    return [tuple(r) for r in frame.iter_rows()]


def assert_format_error(exc: pytest.ExceptionInfo, path: Path, line: int | None, *fragments: str) -> str:
    """The error names the file, the exact line (or none), says what was expected and holds `fragments`."""
    err = exc.value
    msg = str(err)
    assert isinstance(err, DataFormatError)
    assert str(path) in msg and err.path == str(path), msg
    if line is None:
        assert err.line is None and ", line " not in msg, msg
    else:
        assert err.line == line, msg
        assert f"{path}, line {line}:" in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


def assert_expected(exc: pytest.ExceptionInfo, expected_fragment: str) -> None:
    assert exc.value.expected is not None and expected_fragment in exc.value.expected, str(exc.value)
    assert f"; expected {exc.value.expected}" in str(exc.value)


CSV_TEXT = "user_id,item_id,timestamp\nu1,a,30\nu2,007,10\nu1,b,20\n"
CSV_ROWS = [("u1", "a", 30), ("u2", "007", 10), ("u1", "b", 20)]


# ------------------------------------------------------------------ read_seq


def test_read_seq_positions_become_timestamps_and_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path, "seq.txt", "u1 a b  c\n\n   \nu2\tb\n007 01 1\n")
    out = read_seq(path)
    assert out.schema == pl.Schema(BASE_SCHEMA)
    assert rows(out) == [
        ("u1", "a", 0), ("u1", "b", 1), ("u1", "c", 2),
        ("u2", "b", 0),
        ("007", "01", 0), ("007", "1", 1),
    ]


def test_read_seq_line_without_item_names_its_line(tmp_path):
    path = write(tmp_path, "seq.txt", "u1 a b\n\nu2\nu3 c\n")
    with pytest.raises(DataFormatError) as exc:
        read_seq(path)
    assert_format_error(exc, path, 3, "'u2'", "has no item")
    assert_expected(exc, "'user item1 item2 ...'")


def test_read_seq_user_on_two_lines_names_both_lines(tmp_path):
    path = write(tmp_path, "seq.txt", "u1 a\nu2 b\nu1 c\n")
    with pytest.raises(DataFormatError) as exc:
        read_seq(path)
    assert_format_error(exc, path, 3, "'u1'", "already had line 1")
    assert_expected(exc, "one line per user")


# ------------------------------------------------------------------ read_pairs


def test_read_pairs_line_numbers_become_timestamps(tmp_path):
    path = write(tmp_path, "pairs.txt", "u1 a\nu2 b\n\nu1\tc\nu2 007\n")
    out = read_pairs(path)
    assert out.schema == pl.Schema(BASE_SCHEMA)
    assert rows(out) == [("u1", "a", 1), ("u2", "b", 2), ("u1", "c", 4), ("u2", "007", 5)]


@pytest.mark.parametrize(("bad_line", "n_fields"), [("u2 b x", 3), ("u2", 1)])
def test_read_pairs_wrong_field_count_names_its_line(tmp_path, bad_line, n_fields):
    path = write(tmp_path, "pairs.txt", f"u1 a\n\n{bad_line}\nu3 c\n")
    with pytest.raises(DataFormatError) as exc:
        read_pairs(path)
    assert_format_error(exc, path, 3, f"{n_fields} fields", repr(bad_line))
    assert_expected(exc, "two fields")


# ------------------------------------------------------------------ read_interactions: good input


def test_read_interactions_csv_keeps_file_order_and_string_ids(tmp_path):
    out = read_interactions(write(tmp_path, "inter.csv", CSV_TEXT))
    assert out.schema == pl.Schema(BASE_SCHEMA)
    assert rows(out) == CSV_ROWS  # "007" stays a label, not the number 7


def test_read_interactions_tsv_equals_csv(tmp_path):
    csv_frame = read_interactions(write(tmp_path, "inter.csv", CSV_TEXT))
    tsv_frame = read_interactions(write(tmp_path, "inter.tsv", CSV_TEXT.replace(",", "\t")))
    assert_frame_equal(tsv_frame, csv_frame)


def test_read_interactions_sniffs_separator_of_unknown_suffix_and_honours_explicit_sep(tmp_path):
    expected = read_interactions(write(tmp_path, "inter.csv", CSV_TEXT))
    sniffed = read_interactions(write(tmp_path, "inter.txt", CSV_TEXT.replace(",", ";")))
    assert_frame_equal(sniffed, expected)
    # a .csv whose separator is '|': only the explicit sep reads it right
    piped = write(tmp_path, "piped.csv", CSV_TEXT.replace(",", "|"))
    assert_frame_equal(read_interactions(piped, sep="|"), expected)


def test_read_interactions_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path, "inter.csv", "user_id,item_id,timestamp\nu1,a,30\n\n\nu2,007,10\nu1,b,20\n\n")
    assert rows(read_interactions(path)) == CSV_ROWS


def test_read_interactions_parquet_equals_csv_and_casts_ids_to_strings(tmp_path):
    expected = read_interactions(write(tmp_path, "inter.csv", CSV_TEXT))
    path = tmp_path / "inter.parquet"
    pl.DataFrame({U: ["u1", "u2", "u1"], I: ["a", "007", "b"], T: [30, 10, 20]}).write_parquet(path)
    assert_frame_equal(read_interactions(path), expected)

    numeric = tmp_path / "numeric.pq"
    pl.DataFrame({U: [3, 1], I: [10, 20], T: [1.9, 2.0]}).write_parquet(numeric)
    out = read_interactions(numeric)
    assert out.schema == pl.Schema(BASE_SCHEMA)
    assert rows(out) == [("3", "10", 1), ("1", "20", 2)]


@pytest.mark.parametrize("name", ["wide.csv", "wide.parquet", "wide.tsv"])
def test_large_file_path_reads_only_mapped_columns_without_the_strict_reader(tmp_path, monkeypatch, name):
    """Well-formed uncompressed files are scanned lazily; the result equals the strict reader's."""
    import omnirec.data.io as io_module

    frame = pl.DataFrame({"page": ["/p/a", "/p/0", "/p/b"], U: ["u1", "u2", "u1"], I: ["a", "007", "b"],
                          "when": ["30", "10", "20"], R: ["4.5", "3", "1"], "note": ["x, y", "", "z"]})
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.write_parquet(path)
    else:
        frame.write_csv(path, separator="\t" if name.endswith(".tsv") else ",")
    columns = ColumnMap(timestamp="when", rating=R)
    with monkeypatch.context() as patch:  # the strict reader is what the lazy path avoids
        patch.setattr(io_module, "read_delimited", lambda *a, **k: pytest.fail("strict CSV reader used"))
        patch.setattr(io_module, "_read_parquet", lambda *a, **k: pytest.fail("strict Parquet reader used"))
        lazy = read_interactions(path, columns)
    with monkeypatch.context() as patch:
        patch.setattr(io_module, "_scan_interactions", lambda *a, **k: None)
        strict = read_interactions(path, columns)
    assert_frame_equal(lazy, strict)
    assert rows(lazy) == [("u1", "a", 30, 4.5), ("u2", "007", 10, 3.0), ("u1", "b", 20, 1.0)]


def test_read_interactions_parquet_datetime_and_date_columns_become_unix_seconds(tmp_path):
    path = tmp_path / "dates.parquet"
    naive = [dt.datetime(2020, 1, 1, 0, 0, 10), dt.datetime(2021, 6, 1)]
    pl.DataFrame({U: ["u", "u"], I: ["a", "b"], T: naive}).write_parquet(path)
    assert read_interactions(path)[T].to_list() == [utc(2020, 1, 1, 0, 0, 10), utc(2021, 6, 1)]

    zoned = tmp_path / "zoned.parquet"
    berlin = pl.Series(T, [dt.datetime(2020, 1, 1)]).dt.replace_time_zone("Europe/Berlin")
    pl.DataFrame({U: ["u"], I: ["a"], T: berlin}).write_parquet(zoned)
    assert read_interactions(zoned)[T].to_list() == [utc(2019, 12, 31, 23)]  # Berlin is UTC+1 in winter

    dates = tmp_path / "days.parquet"
    pl.DataFrame({U: ["u"], I: ["a"], T: [dt.date(2020, 1, 2)]}).write_parquet(dates)
    out = read_interactions(dates)
    assert out.schema == pl.Schema(BASE_SCHEMA)
    assert out[T].to_list() == [utc(2020, 1, 2)]


def test_read_interactions_column_map_maps_other_names_with_rating_and_event(tmp_path):
    path = write(
        tmp_path, "log.csv",
        "ts,extra,customer,product,stars,kind\n100,x,c1,p1,4.5,click\n90,y,c2,p2,3,buy\n",
    )
    cols = ColumnMap(user="customer", item="product", timestamp="ts", rating="stars", event="kind")
    out = read_interactions(path, cols)
    assert out.columns == [U, I, T, R, E]
    assert out.schema == pl.Schema({**RATED_SCHEMA, E: INTERACTION_SCHEMA[E]})
    assert rows(out) == [("c1", "p1", 100, 4.5, "click"), ("c2", "p2", 90, 3.0, "buy")]


def test_read_interactions_rating_column_is_float(tmp_path):
    path = write(tmp_path, "r.csv", "user_id,item_id,timestamp,rating\nu1,a,1,4\nu2,b,2,3.5\nu3,c,3,\n")
    out = read_interactions(path, ColumnMap(rating="rating"))
    assert out.schema == pl.Schema(RATED_SCHEMA)
    assert out[R].to_list() == [4.0, 3.5, None]  # an empty rating is missing, not malformed


def test_read_interactions_without_time_column_uses_file_order(tmp_path):
    path = write(tmp_path, "noclock.csv", "user,item\nu2,b\nu1,a\n\nu2,a\n")
    out = read_interactions(path, ColumnMap(user="user", item="item", timestamp=None))
    assert out.schema == pl.Schema(BASE_SCHEMA)
    assert rows(out) == [("u2", "b", 0), ("u1", "a", 1), ("u2", "a", 2)]


def test_read_interactions_timestamp_none_ignores_a_present_time_column(tmp_path):
    path = write(tmp_path, "inter.csv", CSV_TEXT)
    out = read_interactions(path, ColumnMap(timestamp=None))
    assert out[T].to_list() == [0, 1, 2]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["2020-01-01T00:00:00", "2020-01-01 00:00:10", "2020-01-02", "2020-01-01T00:00:01.9"],
         [utc(2020, 1, 1), utc(2020, 1, 1, 0, 0, 10), utc(2020, 1, 2), utc(2020, 1, 1, 0, 0, 1)]),
        (["2020-01-01T00:00:00+02:00", "2020-01-01T00:00:00Z", "2020-06-30T12:00:00-05:00"],
         [utc(2019, 12, 31, 22), utc(2020, 1, 1), utc(2020, 6, 30, 17)]),
        (["2020-01-01T00:00:00", "2020-01-01T00:00:00+02:00", "2020-01-01", None],
         [utc(2020, 1, 1), utc(2019, 12, 31, 22), utc(2020, 1, 1), None]),
    ],
    ids=["naive", "with-offsets", "mixed-layouts"],
)
def test_read_interactions_iso_timestamps(tmp_path, values, expected):
    text = "user_id,item_id,timestamp\n" + "".join(f"u1,i{k},{v or ''}\n" for k, v in enumerate(values))
    out = read_interactions(write(tmp_path, "iso.csv", text))
    assert out.schema == pl.Schema(BASE_SCHEMA)
    assert out[T].to_list() == expected


def test_read_interactions_date_only_timestamps(tmp_path):
    out = read_interactions(write(tmp_path, "d.csv", "user_id,item_id,timestamp\nu,a,2020-01-02\nu,b,2020-03-01\n"))
    assert out[T].to_list() == [utc(2020, 1, 2), utc(2020, 3, 1)]


def test_read_interactions_fractional_unix_times_are_floored(tmp_path):
    path = write(tmp_path, "f.csv", "user_id,item_id,timestamp\nu,a,10.7\nu,b,1e3\nu,c,-1.5\n")
    assert read_interactions(path)[T].to_list() == [10, 1000, -2]


# ------------------------------------------------------------------ read_interactions: malformed input


def test_csv_row_with_too_many_fields_names_its_line(tmp_path):
    path = write(tmp_path, "inter.csv", "user_id,item_id,timestamp\nu1,a,1\nu2,b,2\nu3,c,3,9\nu4,d,4\n")
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, 4, "4 fields")
    assert_expected(exc, "3 fields separated by ','")


def test_csv_row_with_too_few_fields_names_its_line(tmp_path):
    path = write(tmp_path, "inter.csv", "user_id,item_id,timestamp\nu1,a,1\nu2,b\nu3,c,3\n")
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, 3, "2 fields")
    assert_expected(exc, "3 fields separated by ','")


def test_tsv_row_with_too_few_fields_after_blank_lines_names_its_physical_line(tmp_path):
    path = write(tmp_path, "inter.tsv", "user_id\titem_id\ttimestamp\nu1\ta\t1\n\n\nu2\tb\n")
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, 5, "2 fields")
    assert_expected(exc, "3 fields separated by '\\t'")


def test_unclosed_quote_in_a_small_csv_names_its_own_line(tmp_path):
    """The quote opens on line 3; the csv module gave up, and was reported, one line later."""
    path = write(tmp_path, "inter.csv", 'user_id,item_id,timestamp\nu1,a,1\nu2,"b,2\nu3,c,3\n')
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, 3, "quoted field opens on this line and is never closed")
    assert_expected(exc, "a closing quote")


def test_unclosed_quote_in_a_large_csv_names_the_line(tmp_path):
    """A large uncompressed file takes the lazy polars scan first (it fails with a ComputeError), then the
    strict reader; the quote swallowed more than the csv module's field limit, which crashed it
    (`_csv.Error: field larger than field limit`) instead of naming the line."""
    rows_ = ["user_id,item_id,timestamp"] + [f"u{i},item{i % 97},{i}" for i in range(12_000)]
    rows_.insert(101, 'u9,"oops,5')  # line 102; the 11,900 lines after it are > 131,072 characters
    path = write(tmp_path, "inter.csv", "\n".join(rows_) + "\n")
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, 102, "never closed", "131,072 characters")
    assert_expected(exc, "a closing quote")


def test_a_closed_multi_line_quoted_field_is_not_taken_for_an_unclosed_one(tmp_path):
    """The last record spans lines 3-4 and closes its quote: its field count is the error, at line 3."""
    path = write(tmp_path, "inter.csv", 'user_id,item_id,timestamp\nu1,a,1\nu2,"b\nc"\n')
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, 3, "2 fields")


def test_non_numeric_rating_names_its_line_and_value(tmp_path):
    path = write(tmp_path, "r.csv", "user_id,item_id,timestamp,rating\nu1,a,1,4\n\nu2,b,2,good\n")
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path, ColumnMap(rating="rating"))
    assert_format_error(exc, path, 4, "'rating'", "'good'")
    assert_expected(exc, "a number")


def test_non_numeric_timestamp_after_iso_values_names_its_line(tmp_path):
    path = write(tmp_path, "t.csv", "user_id,item_id,timestamp\nu1,a,2020-01-01\nu2,b,noon\n")
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, 3, "'timestamp'", "'noon'")
    assert_expected(exc, "ISO-8601")


@pytest.mark.parametrize("first_ts", ["1", "yesterday"])
def test_non_numeric_timestamp_names_its_line(tmp_path, first_ts):
    path = write(tmp_path, "t.csv", f"user_id,item_id,timestamp\nu1,a,{first_ts}\nu2,b,2\nu3,c,yesterday\n")
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, 2 if first_ts == "yesterday" else 4, "'timestamp'", "'yesterday'")
    assert_expected(exc, "a number (Unix time) or an ISO-8601 date-time")


@pytest.mark.parametrize("order", [("2020-01-01", "5"), ("5", "2020-01-01")])
def test_mixed_numeric_and_iso_timestamps_are_each_parsed(tmp_path, order):
    """Numbers are Unix seconds and the other values ISO date-times, value by value (`_timestamps`)."""
    path = write(tmp_path, "t.csv", f"user_id,item_id,timestamp\nu1,a,{order[0]}\nu2,b,{order[1]}\n")
    expected = {"2020-01-01": utc(2020, 1, 1), "5": 5}
    assert read_interactions(path)[T].to_list() == [expected[v] for v in order]


def test_line_numbers_count_blank_lines_before_the_header(tmp_path):
    path = write(tmp_path, "r.csv", "\nuser_id,item_id,timestamp,rating\nu1,a,1,4\nu2,b,2,good\n")
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path, ColumnMap(rating="rating"))
    assert_format_error(exc, path, 4, "'good'")


def test_missing_mapped_column_lists_the_available_columns(tmp_path):
    path = write(tmp_path, "inter.csv", "uid,item_id,timestamp\nu1,a,1\n")
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    msg = assert_format_error(exc, path, None, "no column 'user_id'", "(columns: uid, item_id, timestamp)")
    assert "_line" not in msg
    assert_expected(exc, "mapped column names")


def test_missing_mapped_rating_column_in_parquet_lists_the_columns(tmp_path):
    path = tmp_path / "inter.parquet"
    pl.DataFrame({U: ["u"], I: ["a"], T: [1]}).write_parquet(path)
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path, ColumnMap(rating="stars"))
    assert_format_error(exc, path, None, "no column 'stars'", "user_id, item_id, timestamp")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", gz(b"")], ids=["empty", "whitespace", "gzipped-empty"])
@pytest.mark.parametrize("name", ["inter.csv", "inter.parquet", "seq.txt", "pairs.txt", "attrs.json"])
def test_empty_file_is_reported(tmp_path, name, content):
    path = write(tmp_path, name, content)
    reader = {
        "inter.csv": read_interactions, "inter.parquet": read_interactions, "seq.txt": read_seq,
        "pairs.txt": read_pairs, "attrs.json": read_item_attributes,
    }[name]
    with pytest.raises(DataFormatError) as exc:
        reader(path)
    assert_format_error(exc, path, None, "empty")
    assert_expected(exc, "at least one record")


@pytest.mark.parametrize("text", ["user_id,item_id,timestamp\n", "user_id,item_id,timestamp", "user_id,item_id,timestamp\n\n\n"])
def test_header_only_file_is_reported(tmp_path, text):
    path = write(tmp_path, "inter.csv", text)
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, None, "header but no records")
    assert_expected(exc, "at least one record")


def test_parquet_without_rows_is_reported(tmp_path):
    path = tmp_path / "inter.parquet"
    pl.DataFrame(schema=BASE_SCHEMA).write_parquet(path)
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, None, "no rows")


def test_unreadable_parquet_is_reported(tmp_path):
    path = write(tmp_path, "inter.parquet", "user_id,item_id,timestamp\nu,a,1\n")
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, None, "not a readable Parquet file")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzipped"])
@pytest.mark.parametrize(
    ("name", "reader"),
    [("inter.csv", read_interactions), ("seq.txt", read_seq), ("pairs.txt", read_pairs)],
)
def test_invalid_utf8_names_its_line(tmp_path, name, reader, compress):
    good = {"inter.csv": b"user_id,item_id,timestamp\nu1,a,1\n", "seq.txt": b"u0 z\nu1 a\n",
            "pairs.txt": b"u0 z\nu1 a\n"}[name]
    data = good + b"\nu2,caf\xe9,2\n"  # latin-1 byte on line 4
    path = write(tmp_path, name, gz(data) if compress else data)
    with pytest.raises(DataFormatError) as exc:
        reader(path)
    assert_format_error(exc, path, 4, "not valid utf-8")
    assert_expected(exc, "utf-8 text")


def _corrupt_crc(data: bytes) -> bytes:
    blob = bytearray(gz(data))
    blob[-8] ^= 0xFF  # CRC32 of the trailer
    return bytes(blob)


@pytest.mark.parametrize(
    "blob",
    [_corrupt_crc(CSV_TEXT.encode()), gz(CSV_TEXT)[:-6], b"\x1f\x8b junk, not gzip"],
    ids=["bad-crc", "truncated", "bad-header"],
)
@pytest.mark.parametrize("name", ["inter.csv.gz", "inter.csv"])
def test_corrupt_gzip_is_reported(tmp_path, name, blob):
    path = write(tmp_path, name, blob)
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, None, "corrupt gzip")


def test_corrupt_deflate_stream_is_reported(tmp_path):
    blob = bytearray(gz(CSV_TEXT * 20))
    blob[10] ^= 0x55  # first byte after the 10-byte gzip header: the deflate block header
    path = write(tmp_path, "inter.csv.gz", bytes(blob))
    with pytest.raises(DataFormatError) as exc:
        read_interactions(path)
    assert_format_error(exc, path, None, "corrupt gzip")


# ------------------------------------------------------------------ missing files


@pytest.mark.parametrize(
    "call",
    [
        read_seq, read_pairs, read_interactions, read_item_attributes,
        lambda p: read_item_text(p, "id", ["title"]),
    ],
    ids=["seq", "pairs", "interactions", "attributes", "item_text"],
)
def test_missing_file_raises_file_not_found_naming_it(tmp_path, call):
    path = tmp_path / "absent.csv"
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        call(path)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        read_seq(tmp_path)


# ------------------------------------------------------------------ gzip transparency


def _gzip_cases(tmp_path: Path, name: str, data: bytes) -> list[Path]:
    """The same content three ways: plain, gzipped with a .gz suffix, gzipped under the plain name."""
    plain = write(tmp_path / "plain", name, data)
    suffixed = write(tmp_path / "suffixed", name + ".gz", gz(data))
    hidden = write(tmp_path / "hidden", name, gz(data))
    return [plain, suffixed, hidden]


def _parquet_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "src.parquet"
    pl.DataFrame({U: ["u1", "u2"], I: ["a", "b"], T: [5, 6], R: [1.0, 2.0]}).write_parquet(path)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("name", "reader", "data"),
    [
        ("inter.csv", read_interactions, CSV_TEXT.encode()),
        ("inter.tsv", read_interactions, CSV_TEXT.replace(",", "\t").encode()),
        ("seq.txt", read_seq, b"u1 a b\nu2 c\n"),
        ("pairs.txt", read_pairs, b"u1 a\nu2 c\nu1 b\n"),
        ("attrs.json", read_item_attributes, b'{"1": [2, 3], "4": [5]}'),
        ("items.csv", lambda p: read_item_text(p, "id", ["title", "genre"]), b"id,title,genre\n1,Heat,Crime\n"),
        ("inter.parquet", lambda p: read_interactions(p, ColumnMap(rating=R)), None),
    ],
    ids=["csv", "tsv", "seq", "pairs", "attributes", "item_text", "parquet"],
)
def test_gzip_is_transparent_with_or_without_gz_suffix(tmp_path, name, reader, data):
    data = _parquet_bytes(tmp_path) if data is None else data
    plain, suffixed, hidden = (reader(p) for p in _gzip_cases(tmp_path, name, data))
    assert plain.height > 0
    assert_frame_equal(suffixed, plain)
    assert_frame_equal(hidden, plain)


# ------------------------------------------------------------------ read_item_text


def test_read_item_text_joins_text_columns(tmp_path):
    path = write(tmp_path, "items.csv", 'id,title,genre,price\n007,Heat,Crime,3\n2,"Up, again",,4\n3,,Drama,5\n')
    out = read_item_text(path, "id", ["title", "genre"])
    assert out.schema == pl.Schema(ITEM_SCHEMA)
    assert rows(out) == [("007", "Heat. Crime", "Heat"), ("2", "Up, again", "Up, again"), ("3", "Drama", None)]


def test_read_item_text_tsv_and_parquet_agree_with_csv(tmp_path):
    expected = read_item_text(write(tmp_path, "items.csv", "id,title\n1,Heat\n2,Up\n"), "id", ["title"])
    tsv = read_item_text(write(tmp_path, "items.tsv", "id\ttitle\n1\tHeat\n2\tUp\n"), "id", ["title"])
    assert_frame_equal(tsv, expected)
    pq = tmp_path / "items.parquet"
    pl.DataFrame({"id": [1, 2], "title": ["Heat", "Up"]}).write_parquet(pq)
    assert_frame_equal(read_item_text(pq, "id", ["title"]), expected)


def test_read_item_text_missing_column_is_reported(tmp_path):
    path = write(tmp_path, "items.csv", "id,title\n1,Heat\n")
    with pytest.raises(DataFormatError) as exc:
        read_item_text(path, "id", ["genre"])
    assert_format_error(exc, path, None, "no column 'genre'", "id", "title")


def test_read_item_text_missing_column_lists_only_file_columns(tmp_path):
    path = write(tmp_path, "items.csv", "id,title\n1,Heat\n")
    with pytest.raises(DataFormatError) as exc:
        read_item_text(path, "id", ["genre"])
    assert "(columns: id, title)" in str(exc.value), str(exc.value)


def test_read_item_text_unreadable_parquet_is_reported(tmp_path):
    path = write(tmp_path, "items.parquet", "id,title\n1,Heat\n")
    with pytest.raises(DataFormatError) as exc:
        read_item_text(path, "id", ["title"])
    assert_format_error(exc, path, None, "Parquet")


def test_read_item_text_short_row_names_its_line(tmp_path):
    path = write(tmp_path, "items.csv", "id,title,genre\n1,Heat,Crime\n2,Up\n")
    with pytest.raises(DataFormatError) as exc:
        read_item_text(path, "id", ["title"])
    assert_format_error(exc, path, 3, "2 fields")


# ------------------------------------------------------------------ read_movielens

GENRE_COUNT = 19


def _flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(GENRE_COUNT))


U_DATA = "196\t242\t3\t881250949\n186\t302\t3.5\t891717742\n196\t302\t5\t881250950\n"
U_ITEM = (
    f"242|Café Society (1995)|01-Jan-1995||http://x|{_flags(5, 8)}\n"  # Comedy, Drama
    f"302|L.A. Confidential (1997)|01-Jan-1997||http://y|{_flags(1)}\n"  # Action
    f"303|Unknown Film|||http://z|{_flags(0)}\n"
).encode("latin-1")
U_USER = "196|49|M|writer|55105\n186|39|F|executive|00000\n"


def _movielens_dir(root: Path, data: str = U_DATA, item: bytes = U_ITEM, user: str = U_USER, compress=False) -> Path:
    def put(name: str, content: str | bytes) -> None:
        raw = content.encode("latin-1") if isinstance(content, str) else content
        write(root, name + (".gz" if compress else ""), gz(raw) if compress else raw)

    put("u.data", data)
    put("u.item", item)
    put("u.user", user)
    return root


def test_read_movielens_ratings(tmp_path):
    ml = read_movielens(_movielens_dir(tmp_path))
    assert ml.interactions.schema == pl.Schema(RATED_SCHEMA)
    assert rows(ml.interactions) == [
        ("196", "242", 881250949, 3.0), ("186", "302", 891717742, 3.5), ("196", "302", 881250950, 5.0),
    ]


def test_read_movielens_items_decode_latin1_and_join_genres(tmp_path):
    assert "é".encode("latin-1") in U_ITEM and "é".encode("utf-8") not in U_ITEM
    ml = read_movielens(_movielens_dir(tmp_path))
    assert ml.items.columns == [I, X, "title", "year"]
    assert ml.items.schema[I] == pl.String and ml.items.schema[X] == pl.String
    assert rows(ml.items) == [
        ("242", "Café Society (1995). Comedy, Drama", "Café Society (1995)", 1995),
        ("302", "L.A. Confidential (1997). Action", "L.A. Confidential (1997)", 1997),
        ("303", "Unknown Film. unknown", "Unknown Film", None),
    ]


def test_read_movielens_users(tmp_path):
    ml = read_movielens(_movielens_dir(tmp_path))
    assert ml.users.columns == [U, "age", "gender", "occupation", "zip"]
    assert rows(ml.users) == [("196", "49", "M", "writer", "55105"), ("186", "39", "F", "executive", "00000")]


def test_read_movielens_gzipped_files_give_the_same_result(tmp_path):
    plain = read_movielens(_movielens_dir(tmp_path / "plain"))
    zipped = read_movielens(_movielens_dir(tmp_path / "zipped", compress=True))
    assert_frame_equal(zipped.interactions, plain.interactions)
    assert_frame_equal(zipped.items, plain.items)
    assert_frame_equal(zipped.users, plain.users)


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ("196\t242\t3\t881250949\n186\t302\t3\n196\t302\t5\t881250950\n", 2),
        ("196\t242\t3\n186\t302\t3\t891717742\n", 1),
    ],
    ids=["second-line", "first-line"],
)
def test_read_movielens_u_data_line_with_three_fields(tmp_path, data, line):
    root = _movielens_dir(tmp_path, data=data)
    with pytest.raises(DataFormatError) as exc:
        read_movielens(root)
    assert_format_error(exc, root / "u.data", line, "3 fields")
    assert_expected(exc, "4 fields separated by '\\t'")


def test_read_movielens_u_data_line_with_five_fields(tmp_path):
    root = _movielens_dir(tmp_path, data="196\t242\t3\t881250949\n186\t302\t3\t891717742\tx\n")
    with pytest.raises(DataFormatError) as exc:
        read_movielens(root)
    assert_format_error(exc, root / "u.data", 2, "5 fields")


@pytest.mark.parametrize(
    ("data", "column", "value", "expected"),
    [
        ("196\t242\t3\t881250949\n186\t302\tfive\t891717742\n", "rating", "five", "a rating number"),
        ("196\t242\t3\t881250949\n186\t302\t3\tsoon\n", "timestamp", "soon", "Unix seconds"),
    ],
)
def test_read_movielens_non_numeric_value_names_line_and_column(tmp_path, data, column, value, expected):
    root = _movielens_dir(tmp_path, data=data)
    with pytest.raises(DataFormatError) as exc:
        read_movielens(root)
    assert_format_error(exc, root / "u.data", 2, f"'{column}'", f"'{value}'")
    assert_expected(exc, expected)


def test_read_movielens_u_item_line_missing_a_genre_flag(tmp_path):
    item = U_ITEM + f"304|Short Row|01-Jan-1990||http://w|{_flags(1)}\n".encode("latin-1").replace(b"|0\n", b"\n")
    root = _movielens_dir(tmp_path, item=item)
    with pytest.raises(DataFormatError) as exc:
        read_movielens(root)
    assert_format_error(exc, root / "u.item", 4, "23 fields")
    assert_expected(exc, "24 fields separated by '|'")


@pytest.mark.parametrize("missing", ["u.data", "u.item", "u.user"])
def test_read_movielens_missing_file(tmp_path, missing):
    root = _movielens_dir(tmp_path)
    (root / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        read_movielens(root)


# ------------------------------------------------------------------ read_recbole


def test_read_recbole_plain_inter_drops_type_suffixes(tmp_path):
    write(tmp_path, "ml.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t10\t978300760.0\n2\t20\t5\n1\t20\t7.9\n")
    inter, items = read_recbole(tmp_path, "ml")
    assert items is None
    assert inter.schema == pl.Schema(BASE_SCHEMA)
    assert rows(inter) == [("1", "10", 978300760), ("2", "20", 5), ("1", "20", 7)]


def test_read_recbole_plain_inter_with_rating_and_item_file(tmp_path):
    write(
        tmp_path, "ml.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t100\n2\t20\t3.5\t90\n",
    )
    write(
        tmp_path, "ml.item",
        "item_id:token\tmovie_title:token_seq\tgenre:token_seq\n10\tToy Story\tAnimation Children\n20\tHeat\tCrime\n",
    )
    inter, items = read_recbole(tmp_path, "ml")
    assert inter.schema == pl.Schema(RATED_SCHEMA)
    assert rows(inter) == [("1", "10", 100, 4.0), ("2", "20", 90, 3.5)]
    assert items is not None and items.schema == pl.Schema(ITEM_SCHEMA)
    assert rows(items) == [("10", "Toy Story. Animation Children", "Toy Story"), ("20", "Heat. Crime", "Heat")]


def test_read_recbole_inter_without_timestamp_uses_file_order(tmp_path):
    write(tmp_path, "x.inter.gz", gz("user_id:token\titem_id:token\nb\t2\na\t1\nb\t3\n"))
    inter, _ = read_recbole(tmp_path, "x")
    assert rows(inter) == [("b", "2", 0), ("a", "1", 1), ("b", "3", 2)]


def test_read_recbole_inter_non_numeric_rating_names_its_line(tmp_path):
    path = write(tmp_path, "x.inter", "user_id:token\titem_id:token\trating:float\n1\t2\t3\n1\t3\tn/a\n")
    with pytest.raises(DataFormatError) as exc:
        read_recbole(tmp_path, "x")
    assert_format_error(exc, path, 3, "'rating'", "'n/a'")
    assert_expected(exc, "a number")


UNISREC_TEST = (
    "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    "0\t1 2 3\t4\n"
    "1\t\t5\n"
    "2\t2 6\t1\n"
)


def test_read_recbole_unisrec_layout_rebuilds_sequences_and_maps_text_to_indices(tmp_path):
    write(tmp_path, "Sci.test.inter", UNISREC_TEST)
    write(tmp_path, "Sci.valid.inter", "user_id:token\titem_id_list:token_seq\titem_id:token\n0\t1 2\t3\n")
    write(tmp_path, "Sci.text", "item_id:token\ttext:token_seq\nB01\tMicroscope\nB02\tPipette tips\nB99\tNot indexed\n")
    write(tmp_path, "Sci.item2index", "B01\t1\nB02\t2\n")
    inter, items = read_recbole(tmp_path, "Sci")
    assert inter.schema == pl.Schema(BASE_SCHEMA)
    assert rows(inter) == [
        ("0", "1", 0), ("0", "2", 1), ("0", "3", 2), ("0", "4", 3),
        ("1", "5", 0),
        ("2", "2", 0), ("2", "6", 1), ("2", "1", 2),
    ]
    assert items is not None and items.schema == pl.Schema(ITEM_SCHEMA)
    assert sorted(rows(items)) == [("1", "Microscope", "Microscope"), ("2", "Pipette tips", "Pipette tips")]


def test_read_recbole_unisrec_without_text_returns_no_items(tmp_path):
    write(tmp_path, "Sci.test.inter", UNISREC_TEST)
    inter, items = read_recbole(tmp_path, "Sci")
    assert items is None and inter.height == 8


def test_read_recbole_unisrec_row_without_target(tmp_path):
    path = write(tmp_path, "S.test.inter", "user_id:token\titem_id_list:token_seq\titem_id:token\n0\t1 2\t\n")
    with pytest.raises(DataFormatError) as exc:
        read_recbole(tmp_path, "S")
    assert_format_error(exc, path, 2, "without target item")
    assert_expected(exc, "a target item id")


def test_read_recbole_unisrec_row_without_target_names_the_right_line(tmp_path):
    path = write(
        tmp_path, "S.test.inter",
        "user_id:token\titem_id_list:token_seq\titem_id:token\n0\t1\t\n1\t2 3\t4\n2\t5\t6\n",
    )
    with pytest.raises(DataFormatError) as exc:
        read_recbole(tmp_path, "S")
    assert_format_error(exc, path, 2, "without target item")


def test_read_recbole_unisrec_missing_column(tmp_path):
    path = write(tmp_path, "S.test.inter", "user_id:token\titem_id:token\n0\t1\n")
    with pytest.raises(DataFormatError) as exc:
        read_recbole(tmp_path, "S")
    assert_format_error(exc, path, 1, "'item_id_list'")
    assert_expected(exc, "user_id, item_id_list, item_id")


def test_read_recbole_text_file_without_text_column(tmp_path):
    write(tmp_path, "S.inter", "user_id:token\titem_id:token\n0\t1\n")
    path = write(tmp_path, "S.text", "item_id:token\n1\n")
    with pytest.raises(DataFormatError) as exc:
        read_recbole(tmp_path, "S")
    assert_format_error(exc, path, 1, "item_id column and at least one text column")


def test_read_recbole_inter_row_with_extra_field(tmp_path):
    path = write(tmp_path, "S.inter", "user_id:token\titem_id:token\n0\t1\n1\t2\t3\n")
    with pytest.raises(DataFormatError) as exc:
        read_recbole(tmp_path, "S")
    assert_format_error(exc, path, 3, "3 fields")


def test_read_recbole_without_any_inter_file(tmp_path):
    write(tmp_path, "other.inter", "user_id:token\titem_id:token\n0\t1\n")
    with pytest.raises(FileNotFoundError, match="S.test.inter"):
        read_recbole(tmp_path, "S")


# ------------------------------------------------------------------ read_item_attributes


def test_read_item_attributes(tmp_path):
    path = write(tmp_path, "item2attributes.json", '{"3": [7, 1], "1": [], "2": [12]}')
    out = read_item_attributes(path)
    assert out.schema == pl.Schema(ITEM_SCHEMA)
    assert rows(out) == [("3", "attr_7 attr_1", None), ("1", "", None), ("2", "attr_12", None)]


def test_read_item_attributes_invalid_json_names_its_line(tmp_path):
    path = write(tmp_path, "attrs.json", '{"1": [1, 2],\n "2": [3,,4]}\n')
    with pytest.raises(DataFormatError) as exc:
        read_item_attributes(path)
    assert_format_error(exc, path, 2, "invalid JSON")
    assert_expected(exc, "a JSON object")


def test_read_item_attributes_top_level_must_be_an_object(tmp_path):
    path = write(tmp_path, "attrs.json", "[[1, 2], [3]]")
    with pytest.raises(DataFormatError) as exc:
        read_item_attributes(path)
    assert_format_error(exc, path, None, "not an object")
    assert_expected(exc, "attribute ids")


@pytest.mark.parametrize("value", ["5", '"ab"'], ids=["int", "string"])
def test_read_item_attributes_values_must_be_lists(tmp_path, value):
    path = write(tmp_path, "attrs.json", f'{{"1": [2], "3": {value}}}')
    with pytest.raises(DataFormatError) as exc:
        read_item_attributes(path)
    assert_format_error(exc, path, None)


def test_item_titles_come_from_a_title_column_or_the_first_sentence(tmp_path):
    path = write(tmp_path, "items.csv", 'id,desc,name\n1,"Dr. Who box set. Region 2","Dr. Who"\n')
    assert rows(read_item_text(path, "id", ["desc", "name"]).select("title")) == [("Dr. Who",)]  # named like a title
    assert rows(read_item_text(path, "id", ["name", "desc"]).select("title")) == [("Dr. Who",)]
    only = write(tmp_path, "only.csv", 'id,desc\n1,"Sanding roll 80 grit. Abrasives. Acme"\n2,"' + "x" * 300 + '"\n')
    titles = read_item_text(only, "id", ["desc"])["title"].to_list()
    assert titles[0] == "Sanding roll 80 grit" and len(titles[1]) == 120 and titles[1].endswith("…")
