"""Error one-liners in APP_LANGUAGE: the CLI's human error line and the dashboard's error boxes speak
Korean with APP_LANGUAGE=ko; ``--json`` runs and stored records keep the English line."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from core import demo_data, load_settings, run_cleanup
from core.errors import BackupMismatch, BadSetting, LockHeld, Msg, OtherSource
from core.i18n import use
from tests.support.processes import one_line_error
from tests.test_cli import _hold_lock, cli
from tests.test_dashboard import signed_in
from tests.test_dashboard_ko import app_env  # noqa: F401 (the fixture)

KO = {"APP_LANGUAGE": "ko"}
HANGUL = re.compile("[\uac00-\ud7a3]")


def _korean_line(p, code: int, *words: str) -> str:
    assert p.returncode == code, (p.returncode, p.stderr)
    line = one_line_error(p.stderr)
    assert line.startswith("오류: ") and HANGUL.search(line.removeprefix("오류: ")), line
    for word in words:
        assert word in line, (word, line)
    return line


def test_common_errors_come_out_in_korean_on_the_cli(demo_settings, tmp_path: Path):
    # a bad setting, named, with its reason in Korean; APP_LANGUAGE applies though another setting is bad
    _korean_line(cli(demo_settings, "preview", env_extra={**KO, "LOG_RETENTION_DAYS": "-1"}), 2,
                 "LOG_RETENTION_DAYS", "0일 이상이어야 합니다")
    _korean_line(cli(demo_settings, "preview", "--cutoff", "2999-01-01", env_extra=KO), 2, "--cutoff", "미래 시점")
    # the table missing (with the hint to create demo data)
    _korean_line(cli(demo_settings, "stats", "--table", "no_such_table", env_extra=KO), 2,
                 "LOG_TABLE", "테이블이 없습니다", "demo-data")
    # locked by another cleanup
    release = _hold_lock(demo_settings)
    try:
        _korean_line(cli(demo_settings, "run", "--no-notify", env_extra=KO), 3, "다른 정리가 실행 중")
    finally:
        release()
    # backup not found; a backup that does not match its manifest
    _korean_line(cli(demo_settings, "restore", "nosuch.csv.gz", env_extra=KO), 2, "nosuch.csv.gz", "백업이 없습니다")
    r = run_cleanup(demo_settings, retention_days=30, notify=False)
    data = Path(r.backup_file)
    with gzip.open(data, "rb") as f:
        body = f.read()
    data.write_bytes(gzip.compress(body.replace(b"\n", b"\n ", 1)))  # one byte more: sha256 and length differ
    _korean_line(cli(demo_settings, "restore", data.name, env_extra=KO), 1, data.name, "매니페스트")
    # the same error under --json: the stderr line stays English for scripts
    machine = cli(demo_settings, "restore", data.name, "--json", env_extra=KO)
    assert machine.returncode == 1 and one_line_error(machine.stderr).startswith("error: ")
    assert not HANGUL.search(machine.stderr)
    # an unusable backup folder (store error)
    _korean_line(cli(demo_settings, "run", "--no-notify", "--backup-dir", "/dev/null/backups", env_extra=KO), 2,
                 "BACKUP_DIR", "쓸 수 있는 폴더가 아닙니다")


def test_a_backup_of_another_database_is_refused_in_korean(demo_settings, tmp_path: Path):
    r = run_cleanup(demo_settings, retention_days=30, notify=False)
    other = load_settings({"database_url": f"sqlite:///{tmp_path / 'other.db'}", "backup_dir": demo_settings.backup_dir,
                           "batch_size": 100}, environ={}, env_file=None)
    demo_data(other, rows=50, days=10, seed=3)
    line = _korean_line(cli(other, "restore", Path(r.backup_file).name, env_extra=KO), 2,
                        "의 백업입니다", "--force-other-source", "데이터베이스")
    assert "is a backup of" not in line


def test_an_error_is_english_in_its_record_and_korean_when_shown():
    errors = [BadSetting("LOG_RETENTION_DAYS", -1, "must be 0 or more days"), LockHeld("conversation_log"),
              BackupMismatch("/b/x.csv.gz", "row count", 5, 4),
              OtherSource("{name} is a backup of {recorded}, not of {current} (restore --force-other-source to "
                          "insert its rows anyway)", name="x.csv.gz", recorded=Msg("an unrecorded source"),
                          current="t")]
    for exc in errors:
        with use(language="ko"):
            shown, record = exc.localized(), exc.one_line()
        assert HANGUL.search(shown), shown
        assert not HANGUL.search(record) and record == str(exc), record
        with use(language="en"):
            assert exc.localized() == exc.one_line()


def test_dashboard_error_boxes_are_korean(settings, app_env, monkeypatch):  # noqa: F811
    app_env(settings, **KO)  # no table yet
    at = signed_in()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors and "테이블이 없습니다" in errors[0] and "no such table" not in errors[0], errors
    monkeypatch.setenv("LOG_RETENTION_DAYS", "-1")  # a bad setting: every page says so, in Korean
    at = signed_in()
    errors = [e.value for e in at.error]
    assert any("LOG_RETENTION_DAYS" in e and "0일 이상이어야 합니다" in e for e in errors), errors

