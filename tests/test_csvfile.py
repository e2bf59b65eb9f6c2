"""core.backup.csvfile: the backup's CSV in PostgreSQL COPY's conventions, written and read back."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from core.backup.csvfile import header_line, iter_records, make_row_encoder, make_rows_encoder, parse_record

# Values that CSV gets wrong easily; every one must come back exactly.
HARD_VALUES = [
    None,
    "",
    "plain",
    'say "hi"',
    '""',
    "a,b,c",
    "line one\nline two",
    "crlf\r\nline",
    "carriage\rreturn",
    "한국어 메시지 😀",
    "\\N",
    " leading and trailing ",
    '",\n"',
]


def test_null_is_an_empty_unquoted_field_and_empty_string_is_quoted():
    encode = make_row_encoder([None, None])
    assert encode((None, "")) == ',""\n'
    assert parse_record(',""') == [None, ""]


@pytest.mark.parametrize("value, field", [
    ("plain", '"plain"'),
    ('say "hi"', '"say ""hi"""'),
    ("a,b", '"a,b"'),
    (7, "7"),
    (2.5, "2.5"),
    (b"\x00\xff", "\\x00ff"),
    (None, ""),
])
def test_each_value_is_written_as_copy_writes_it(value, field):
    assert make_row_encoder([None])((value,)) == field + "\n"


@pytest.mark.parametrize("value", HARD_VALUES)
def test_parse_record_reads_back_what_the_encoder_wrote(value):
    line = make_row_encoder([None, None, None])((1, value, "end"))
    assert parse_record(line[:-1]) == ["1", value, "end"]


def test_a_trailing_comma_is_a_null_last_field():
    assert parse_record('1,"a",') == ["1", "a", None]


def test_parse_record_refuses_text_after_a_quoted_field():
    with pytest.raises(ValueError, match="unexpected character"):
        parse_record('"a"b,c')


def test_the_rows_encoder_writes_exactly_what_the_row_encoder_writes():
    rows = [(i, v, None if i % 2 else 1.5) for i, v in enumerate(HARD_VALUES)]
    one = make_row_encoder([None, None, None])
    assert make_rows_encoder([None, None, None])(rows) == "".join(one(r) for r in rows)
    assert make_rows_encoder([None])([]) == ""


def test_converters_apply_to_their_column_only():
    converters = [None, lambda v: v.upper()]
    assert make_row_encoder(converters)(("x", "y")) == '"x","Y"\n'
    assert make_rows_encoder(converters)([("x", "y")]) == '"x","Y"\n'


@pytest.mark.parametrize("columns, line", [
    (["id", "message", "created_at"], "id,message,created_at\n"),
    (["id", 'we"ird, col', "with space", "한국어"], 'id,"we""ird, col","with space","한국어"\n'),
])
def test_header_line_quotes_only_names_that_need_it(columns, line):
    assert header_line(columns) == line
    assert parse_record(line[:-1]) == columns


def _backup(path: Path, *members: str) -> Path:
    """A gzip file of one member per text (as the backup writer appends them)."""
    with path.open("wb") as f:
        for text in members:
            f.write(gzip.compress(text.encode("utf-8")))
    return path


def test_iter_records_streams_header_then_rows_across_members(tmp_path: Path):
    columns = ["id", "message"]
    encode = make_row_encoder([None, None])
    rows = [(i, v) for i, v in enumerate(HARD_VALUES)]
    half = len(rows) // 2
    path = _backup(tmp_path / "b.csv.gz", header_line(columns) + "".join(encode(r) for r in rows[:half]),
                   "".join(encode(r) for r in rows[half:]))
    records = list(iter_records(path))
    assert records[0] == columns
    assert records[1:] == [[str(i), v] for i, v in rows]


def test_iter_records_refuses_a_file_that_ends_inside_a_record(tmp_path: Path):
    path = _backup(tmp_path / "cut.csv.gz", 'id,message\n1,"never closed\n')
    with pytest.raises(ValueError, match="ends inside a record"):
        list(iter_records(path))


def test_iter_records_refuses_text_that_is_not_utf8(tmp_path: Path):
    path = tmp_path / "latin1.csv.gz"
    path.write_bytes(gzip.compress('id,message\n1,"caf\xe9"\n'.encode("latin-1")))
    with pytest.raises(ValueError, match="not UTF-8"):
        list(iter_records(path))
