"""The dashboard in Korean and KST (AppTest): every page, no English left in titles, times in KST;
backups of other sources hidden by default; restores in History."""

from __future__ import annotations

import re
from pathlib import Path

from core import demo_data, list_history, load_settings, run_cleanup
from core.config import Settings
from core.i18n import translations
from core.models import RunStatus
from tests import test_dashboard as dash
from tests.test_dashboard import PAGES, signed_in, texts

app_env = dash.app_env  # the same fixture as the English dashboard tests

KO = {"APP_LANGUAGE": "ko", "DISPLAY_TIMEZONE": "Asia/Seoul"}
t = translations("ko").gettext
HANGUL = re.compile("[\uac00-\ud7a3]")


def test_every_page_loads_in_korean_with_kst_times(demo_settings: Settings, app_env):
    run_cleanup(demo_settings, retention_days=30, notify=False)
    app_env(demo_settings, **KO)
    at = signed_in()
    assert not at.exception
    assert at.title[0].value == "개요"
    assert next(m.value for m in at.metric if m.label == "전체 행 수")
    for page in PAGES:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, f"{page}: {at.exception}"
        assert not at.error, f"{page}: {[e.value for e in at.error]}"
        assert HANGUL.search(at.title[0].value), f"{page}: title {at.title[0].value!r} is not Korean"
        shown = texts(at)
        assert " UTC" not in shown.replace("(UTC)", ""), f"{page} shows a UTC time:\n{shown}"
        if page in ("overview", "preview", "run_cleanup", "backups", "history"):
            assert " KST" in shown, f"{page} shows no KST time"


def test_sidebar_zone_choice_overrides_the_display_zone_for_the_session(demo_settings: Settings, app_env):
    app_env(demo_settings, **KO)
    at = signed_in()
    assert " KST" in texts(at)
    at.selectbox(key="display_zone").select("UTC").run()
    assert " KST" not in texts(at) and " UTC" in texts(at)


def test_backups_of_another_database_are_hidden_until_asked_for(demo_settings: Settings, app_env, tmp_path: Path):
    mine = run_cleanup(demo_settings, retention_days=30, notify=False)
    other = load_settings({"database_url": f"sqlite:///{tmp_path / 'other.db'}", "backup_dir": demo_settings.backup_dir,
                           "batch_size": 100}, environ={}, env_file=None)
    demo_data(other, rows=300, days=90, seed=5)
    theirs = run_cleanup(other, retention_days=30, notify=False)
    app_env(demo_settings)
    at = signed_in()
    at.switch_page("pages/backups.py").run()
    names = at.selectbox(key="backup_name").options
    assert Path(mine.backup_file).name in names and Path(theirs.backup_file).name not in names
    at.toggle(key="backups_other_sources").set_value(True).run()
    assert Path(theirs.backup_file).name in at.selectbox(key="backup_name").options
    assert "sqlite database" in at.dataframe[0].value.to_string()  # labelled with its source


def test_a_restore_from_the_dashboard_is_in_history(demo_settings: Settings, app_env):
    r = run_cleanup(demo_settings, retention_days=30, notify=False)
    app_env(demo_settings, **KO)
    at = signed_in()
    at.switch_page("pages/backups.py").run()
    at.button(key="restore_backup").click().run()
    at.button(key="confirm_restore").click().run()
    assert not at.error, [e.value for e in at.error]
    restores = [x for x in list_history(demo_settings) if x.status == RunStatus.RESTORED]
    assert len(restores) == 1 and restores[0].rows_matched == r.rows_deleted and restores[0].trigger == "dashboard"
    at.switch_page("pages/history.py").run()
    assert "♻️ 복원됨" in texts(at)


def test_a_cutoff_removing_most_of_the_table_needs_the_table_name_typed(demo_settings: Settings, app_env):
    app_env(demo_settings)
    at = signed_in()
    at.switch_page("pages/run_cleanup.py").run()
    at.text_input(key="cutoff_days").input("0").run()
    at.button(key="run_cleanup").click().run()
    assert "100 %" in at.warning[0].value
    assert at.button(key="confirm_run").disabled
    at.text_input(key="confirm_table_name").input("wrong_table").run()
    assert at.button(key="confirm_run").disabled
    at.text_input(key="confirm_table_name").input(demo_settings.table).run()
    assert not at.button(key="confirm_run").disabled
    assert not list_history(demo_settings)  # nothing ran before the confirmation
    at.button(key="confirm_run").click().run()
    assert list_history(demo_settings)[0].rows_deleted == 600


def test_the_usual_cutoff_needs_no_typed_confirmation(demo_settings: Settings, app_env):
    app_env(demo_settings)
    at = signed_in()
    at.switch_page("pages/run_cleanup.py").run()
    at.button(key="run_cleanup").click().run()
    assert not [w for w in at.text_input if w.key == "confirm_table_name"]
    assert not at.button(key="confirm_run").disabled


def test_overview_shows_a_banner_while_a_cleanup_holds_the_lock(demo_settings: Settings, app_env):
    from core.db import SqliteFileLock, get_engine, lock_key, pg_try_lock

    app_env(demo_settings, **KO)
    if get_engine(demo_settings).dialect.name == "sqlite":
        lock = SqliteFileLock(demo_settings)
        lock.acquire()
        release = lock.release
    else:
        raw = get_engine(demo_settings).raw_connection()
        assert pg_try_lock(raw.driver_connection, lock_key(demo_settings))
        release = raw.invalidate
    try:
        at = signed_in()
        assert any("정리가 실행 중입니다" in i.value for i in at.info), [i.value for i in at.info]
    finally:
        release()
    at = signed_in()
    assert not any("정리가 실행 중입니다" in i.value for i in at.info)


def test_without_the_table_overview_explains_and_creates_demo_data_after_confirmation(settings: Settings, app_env):
    app_env(settings)
    at = signed_in()
    assert "no such table" in at.error[0].value and "demo-data" in at.error[0].value
    assert at.button(key="demo_data").disabled  # not without the confirmation
    at.checkbox(key="demo_confirm").check().run()
    at.button(key="demo_data").click().run()
    assert not at.error and next(m.value for m in at.metric if m.label == "Total rows") == "5,000"


def test_preview_sample_times_are_in_the_display_zone(demo_settings: Settings, app_env):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from core import preview_sample

    app_env(demo_settings, **KO)
    at = signed_in()
    at.switch_page("pages/preview.py").run()
    shown = list(at.dataframe[0].value[demo_settings.timestamp_column])
    cutoff = datetime.now(ZoneInfo("UTC"))
    stored = [r[demo_settings.timestamp_column] for r in preview_sample(demo_settings, cutoff=cutoff, limit=1)]
    assert stored[0].tzinfo is not None  # aware UTC from the core, whatever the column's type
    first = stored[0].astimezone(ZoneInfo("Asia/Seoul")).strftime("%Y-%m-%d %H:%M:%S KST")
    assert shown and all(v.endswith(" KST") for v in shown) and first in shown, shown[:3]
