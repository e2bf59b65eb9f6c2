"""The backup writer and reader below the cleanup: gzip members, read-back check, record counting."""

from __future__ import annotations

import csv
import gzip
import io
import random
from pathlib import Path

import pytest

from core.backup import deflate
from core.backup.scan import RecordCounter, scan_file
from core.backup.writer import MemberWriter
from core.errors import BackupWriteError


def _random_csv(rnd: random.Random, rows: int) -> bytes:
    """CSV in PostgreSQL's convention, with the fields that make counting hard."""
    pieces = ['a "quoted" word', "line\nbreak", "crlf\r\nbreak", "", 'only "', '""', "한국어, 쉼표", "plain", "😊"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    for i in range(rows):
        w.writerow([i, "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 4))), rnd.choice(["", "x,y"])])
    return out.getvalue().encode("utf-8")


@pytest.fixture(params=["isal", "zlib"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with ISA-L (when installed) and with zlib, the fallback."""
    if request.param == "isal" and deflate._isal is None:
        pytest.skip("the isal package is not installed; zlib is used")
    monkeypatch.setattr(deflate, "prefer_isal", request.param == "isal")
    return request.param


def test_record_counter_matches_csv_module_wherever_the_pieces_are_cut() -> None:
    rnd = random.Random(7)
    data = _random_csv(rnd, 400)
    expected = sum(1 for _ in csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    for _ in range(200):
        cuts = sorted(rnd.sample(range(1, len(data)), rnd.randint(1, 30)))
        counter = RecordCounter()
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            counter.feed(data[a:b])
        assert (counter.records, counter.in_quotes) == (expected, 0)


def test_record_counter_reports_an_unclosed_quote() -> None:
    counter = RecordCounter()
    counter.feed(b'1,"open field\n2,')
    assert counter.in_quotes == 1
    assert counter.records == 0


def test_members_read_back_with_pythons_gzip_and_scan_counts_rows(codec: str, tmp_path: Path) -> None:
    rnd = random.Random(3)
    path = tmp_path / "b.csv.gz"
    batches = [_random_csv(rnd, n) for n in (1, 700, 5000)]
    writer = MemberWriter(path, 1)
    assert writer.codec.library.startswith(codec)
    writer.begin()
    writer.write_text("id,message,extra\n")
    for i, data in enumerate(batches):
        if i:
            writer.begin()
        for at in range(0, len(data), 4096):  # as psycopg2 hands rows over: many small writes
            writer.write(data[at:at + 4096])
        rows = sum(1 for _ in csv.reader(io.StringIO(data.decode(), newline="")))
        writer.commit_member(rows + (i == 0))
        writer.member_committed()
    writer.close()
    assert gzip.decompress(path.read_bytes()) == b"id,message,extra\n" + b"".join(batches)
    scan = scan_file(path)
    assert scan.complete and scan.rows == 1 + 700 + 5000


def test_commit_member_refuses_a_wrong_count_and_rollback_restores_the_file(codec: str, tmp_path: Path) -> None:
    path = tmp_path / "b.csv.gz"
    writer = MemberWriter(path, 1)
    writer.begin()
    writer.write(b'1,"a\nb"\n2,c\n')
    size = writer.commit_member(2)
    writer.member_committed()
    writer.begin()
    writer.write(b"3,d\n4,e\n")
    with pytest.raises(BackupWriteError, match="reads back as 2 CSV records, not 3"):
        writer.commit_member(3)
    writer.rollback_member()
    writer.close()
    assert path.stat().st_size == size
    assert gzip.decompress(path.read_bytes()) == b'1,"a\nb"\n2,c\n'


def test_scan_reports_a_corrupt_member_instead_of_raising(codec: str, tmp_path: Path) -> None:
    path = tmp_path / "b.csv.gz"
    writer = MemberWriter(path, 1)
    writer.begin()
    writer.write(b"h\n" + b"x,y\n" * 10000)
    writer.commit_member(10001)
    writer.close()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    scan = scan_file(path)
    assert not scan.complete and scan.problem


def test_levels_beyond_isal_range_fall_back_to_zlib() -> None:
    assert deflate.codec_for(6).library.startswith("zlib")
    assert deflate.codec_for(0).library.startswith("zlib")


def test_the_member_hook_gets_each_members_place_and_md5_and_its_later_work_runs_off_the_batch(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import hashlib
    import threading

    path = tmp_path / "b.csv.gz"
    writer = MemberWriter(path, 1)
    seen: list[tuple[int, int, str]] = []
    release, later = threading.Event(), []

    def hook(p: Path, start: int, end: int, md5: object) -> object:
        seen.append((start, end, md5.hexdigest()))  # type: ignore[attr-defined]
        if len(seen) == 1:
            return lambda: (release.wait(5), later.append(start))  # still running while the next batch goes on
        return lambda: 1 / 0  # an error there is only logged

    writer.on_member = hook
    for rows in (b"1,a\n2,b\n", b"3,c\n"):
        writer.begin()
        writer.write(rows)
        writer.commit_member(rows.count(b"\n"))
        writer.member_committed()
    assert later == []  # the first member's later work has not run: no batch waited for it
    release.set()
    writer.close()  # waits for it
    assert later == [0]
    data = path.read_bytes()
    assert [(s, e) for s, e, _ in seen] == [(0, seen[0][1]), (seen[0][1], len(data))]
    assert [m for _, _, m in seen] == [hashlib.md5(data[s:e]).hexdigest() for s, e, _ in seen]
    assert "background work after a member's upload failed" in caplog.text
