"""APP_LANGUAGE and DISPLAY_TIMEZONE: catalogs complete, Korean texts, KST times; JSON stays English."""

from __future__ import annotations

import dataclasses
import json
import re
import string
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from core import i18n, present, run_cleanup
from core.config import load_settings
from core.errors import BadSetting
from core.models import RunResult
from tests.fakeslack import TOKEN, FakeSlack
from tests.support import ROOT
from tests.test_cli import cli

PO = ROOT / "core" / "locale" / "ko" / "LC_MESSAGES" / "messages.po"
METHOD_MAP = [(pattern, "python") for pattern in ("core/**.py", "ui/**.py", "pages/**.py", "dashboard.py",
                                                     "server.py", "web/**.py")]
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}


def source_messages() -> dict[str, str]:
    """Every message id the source marks for translation (what ``pybabel extract -F babel.cfg`` finds)."""
    found: dict[str, str] = {}
    for filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), METHOD_MAP, keywords=KEYWORDS, comment_tags=()
    ):
        found[message if isinstance(message, str) else message[0]] = filename
    return found


def korean_catalog():
    with PO.open("rb") as f:
        return read_po(f, locale="ko")


def fields(text: str) -> set[str]:
    return {name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name is not None}


def test_every_message_id_in_the_source_has_a_korean_translation() -> None:
    catalog = korean_catalog()
    missing = []
    for msgid, filename in source_messages().items():
        entry = catalog.get(msgid)
        translated = entry.string if entry is not None else None
        forms = translated if isinstance(translated, tuple) else (translated,)
        if entry is None or not all(forms):
            missing.append(f"{filename}: {msgid!r}")
    assert len(source_messages()) > 250  # the extraction did find the dashboard's texts
    assert not missing, "untranslated (run pybabel extract/update, see README):\n" + "\n".join(missing)


def test_korean_translations_keep_every_placeholder_of_the_english_text() -> None:
    bad = []
    for entry in korean_catalog():
        if not entry.id:
            continue
        ids = entry.id if isinstance(entry.id, tuple) else (entry.id,)
        forms = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        want = set().union(*(fields(i) for i in ids))
        bad += [f"{ids[0]!r} -> {form!r}" for form in forms if fields(form) != want]
    assert not bad, "\n".join(bad)


def test_times_are_shown_in_the_display_zone_with_its_abbreviation() -> None:
    monday_9_kst = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    assert present.timestamp(monday_9_kst) == "2026-12-07 00:00:00 UTC"
    with i18n.use(zone="Asia/Seoul"):
        assert present.timestamp(monday_9_kst, seconds=False) == "2026-12-07 09:00 KST"
        assert i18n.date_text(datetime(2026, 12, 6, 15, 0, tzinfo=UTC)) == "2026-12-07"
    with i18n.use(zone="Europe/Berlin"):
        assert present.timestamp(datetime(2026, 7, 1, tzinfo=UTC)) == "2026-07-01 02:00:00 CEST"
    with i18n.use(zone="Asia/Dubai"):  # a zone whose tzdata abbreviation is only "+04"
        assert present.timestamp(monday_9_kst) == "2026-12-07 04:00:00 UTC+04:00"


def test_korean_plurals_numbers_and_durations() -> None:
    assert (i18n.rows(1), i18n.rows(2)) == ("1 row", "2 rows")
    with i18n.use(language="ko"):
        assert (i18n.rows(1), i18n.rows(180_010)) == ("1행", "180,010행")
        assert present.human_duration(125) == "2분 05초"
        assert present.human_duration(3.25) == "3.2초"


def test_language_and_zone_settings_are_checked() -> None:
    s = load_settings({"app_language": "ko", "display_timezone": "Asia/Seoul"}, environ={}, env_file=None)
    assert (s.app_language, s.display_timezone) == ("ko", "Asia/Seoul")
    with pytest.raises(BadSetting, match="APP_LANGUAGE"):
        load_settings({"app_language": "jp"}, environ={}, env_file=None)
    with pytest.raises(BadSetting, match="DISPLAY_TIMEZONE"):
        load_settings({"display_timezone": "KST"}, environ={}, env_file=None)


def test_korean_run_summary_reads_korean_with_kst_times() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    r = RunResult(run_id="r1", status="dry_run", table="conversation_log", cutoff=datetime(2026, 11, 7, tzinfo=UTC),
                  rows_archived=0, rows_deleted=0, backup_file=None, manifest_file=None, sha256=None,
                  notification="skipped", duration_s=0.5, started_at=now, finished_at=now, rows_matched=180_010,
                  trigger="cli")
    with i18n.use(language="ko", zone="Asia/Seoul"):
        text = present.describe_run(r)
    assert text.lead == ("시험 실행: conversation_log의 180,010행이 2026-11-07 09:00:00 KST보다 오래되었습니다. "
                         "아무것도 변경하지 않았습니다.")
    assert ("실행 주체", "명령줄") in text.facts


def _slack_text(payload: dict) -> str:
    parts = [payload.get("text") or ""]
    for block in payload.get("blocks") or []:
        parts.append((block.get("text") or {}).get("text", ""))
        parts += [f["text"] for f in block.get("fields", [])]
        parts += [e.get("text", "") for e in block.get("elements", [])]
    return "\n".join(parts)


def test_korean_report_with_kst_times_reaches_slack(demo_settings, no_proxy, tmp_path: Path) -> None:
    with FakeSlack() as slack:
        settings = dataclasses.replace(demo_settings, slack_bot_token=TOKEN, slack_api_base_url=slack.api_url,
                                       slack_timeout_s=10.0, app_language="ko", display_timezone="Asia/Seoul")
        result = run_cleanup(settings, retention_days=30, trigger="cli")
        posts = slack.calls("chat.postMessage")
    assert result.status == "success" and result.notification == "sent"
    payload = posts[0].json
    (tmp_path / "slack-ko.json").write_text(json.dumps(payload, ensure_ascii=False, indent=1))
    text = _slack_text(payload)
    assert payload["blocks"][0]["text"]["text"].startswith("💾 DB 정리 리포트 ✅ 완료")
    for korean in ("검증된 백업에 보관하고", "삭제한 행", "기준 시각", "소요 시간", "명령줄", "시작", "종료"):
        assert korean in text, korean
    kst = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d KST", text)
    assert len(kst) >= 3 and "UTC" not in text  # cutoff, started, finished: all in KST
    started = result.started_at.astimezone(ZoneInfo("Asia/Seoul")).strftime("%Y-%m-%d %H:%M:%S KST")
    assert started in text
    assert f"{result.rows_deleted:,}행" in text or f"{result.rows_deleted:,}" in text
    # the process-wide language did not change: the next English text is English
    assert present.lead_sentence(result).startswith("Archived")


def test_cli_human_output_is_korean_and_json_stays_english(demo_settings) -> None:
    env = {"APP_LANGUAGE": "ko", "DISPLAY_TIMEZONE": "Asia/Seoul"}
    human = cli(demo_settings, "preview", "--retention-days", "30", env_extra=env)
    assert human.returncode == 0, human.stderr
    assert "보다 오래되었습니다" in human.stdout and " KST" in human.stdout and "UTC" not in human.stdout
    machine = cli(demo_settings, "preview", "--retention-days", "30", "--json", env_extra=env)
    data = json.loads(machine.stdout)
    assert {"cutoff", "rows_to_delete", "oldest", "newest"} <= set(data) and data["cutoff"].endswith("+00:00")
    stats = json.loads(cli(demo_settings, "stats", "--json", env_extra=env).stdout)
    assert [b["label"] for b in stats["buckets"]] == ["< 7 days", "7–30 days", "30–90 days", "> 90 days"]
    hist = cli(demo_settings, "history", env_extra=env)
    assert hist.returncode == 0 and "아직 실행 이력이 없습니다" in hist.stdout
