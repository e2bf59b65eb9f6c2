"""The dashboard through AppTest (in-process), on SQLite and PostgreSQL.

Settings reach the app through the environment, as they do in production. Pages
are driven by widget key; the cleanup runs for real against the test database.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from core import list_backups, list_history, preview
from core.config import Settings
from core.db import SqliteFileLock, get_engine, lock_key, pg_try_lock
from tests.support import ROOT

DASHBOARD = str(ROOT / "dashboard.py")
PASSWORD = "correct horse battery staple"
PAGES = ("overview", "preview", "run_cleanup", "backups", "history", "settings")


@pytest.fixture
def server_address():
    """Set ``server.address`` for one test, restoring the previous value after it."""
    before = st_config.get_option("server.address")

    def set_to(value: str | None) -> None:
        st_config.set_option("server.address", value)

    yield set_to
    st_config.set_option("server.address", before)


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Point the app at a Settings object through the environment; no Slack, no .env."""

    def apply(settings: Settings, *, password: str | None = PASSWORD, **extra: str) -> None:
        monkeypatch.chdir(tmp_path)  # no stray .env from the working directory
        for name in ("LOG_TABLE", "LOG_TIMESTAMP_COLUMN", "LOG_RETENTION_DAYS", "SLACK_BOT_TOKEN",
                     "SLACK_WEBHOOK_URL", "CLEANUP_TRIGGER_TOKEN", "DASHBOARD_PASSWORD"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("DATABASE_URL", settings.database_url)
        monkeypatch.setenv("BACKUP_DIR", settings.backup_dir)
        monkeypatch.setenv("CLEANUP_BATCH_SIZE", str(settings.batch_size))
        if password is not None:
            monkeypatch.setenv("DASHBOARD_PASSWORD", password)
        for key, value in extra.items():
            monkeypatch.setenv(key, value)

    return apply


def signed_in(password: str = PASSWORD) -> AppTest:
    at = AppTest.from_file(DASHBOARD, default_timeout=60).run()
    at.text_input(key="login_password").input(password)
    at.button(key="sign_in_button").click().run()
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def texts(at: AppTest) -> str:
    """Every string the page shows (markdown, alerts, captions, metrics, tables)."""
    parts = [e.value for kind in ("markdown", "caption", "success", "info", "warning", "error", "title", "subheader")
             for e in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    parts += [df.value.to_string() for df in at.dataframe]
    return "\n".join(str(p) for p in parts)


def test_every_page_passes_the_access_gate_itself():
    # Streamlit runs a pages/ folder beside the main script as a legacy multipage app until
    # the first st.navigation call of the process: a deep link would skip the router's gate,
    # so each page must call the gate before it touches any data.
    for page in sorted((ROOT / "pages").glob("*.py")):
        body = page.read_text(encoding="utf-8")
        assert "settings_or_stop()" in body, page.name


def test_every_page_loads_without_exception(demo_settings: Settings, app_env):
    app_env(demo_settings)
    at = signed_in()
    assert not at.exception
    assert metric(at, "Total rows") == "600"
    for page in PAGES:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, f"{page}: {at.exception}"
        assert not at.error, f"{page}: {[e.value for e in at.error]}"
        assert at.title[0].value


def test_preview_count_equals_core_preview(demo_settings: Settings, app_env):
    app_env(demo_settings)
    at = signed_in()
    at.switch_page("pages/preview.py").run()
    at.text_input(key="cutoff_days").input("45").run()
    expected = preview(demo_settings, retention_days=45)
    assert expected.rows_to_delete > 0
    assert metric(at, "Rows to archive and delete") == f"{expected.rows_to_delete:,}"
    assert len(at.dataframe[0].value) == 10  # the sample
    assert preview(demo_settings, retention_days=45).rows_to_delete == expected.rows_to_delete  # changed nothing

    at.segmented_control(key="cutoff_mode").set_value("Date").run()
    day = datetime.now(UTC).date() - timedelta(days=20)
    at.date_input(key="cutoff_date").set_value(day).run()
    by_date = preview(demo_settings, cutoff=datetime.combine(day, dt_time(0), tzinfo=UTC))
    assert metric(at, "Rows to archive and delete") == f"{by_date.rows_to_delete:,}"


def test_confirmed_cleanup_deletes_the_stated_rows_and_history_shows_it(demo_settings: Settings, app_env):
    app_env(demo_settings)
    at = signed_in()
    at.switch_page("pages/run_cleanup.py").run()
    at.button(key="run_cleanup").click().run()
    stated = preview(demo_settings, retention_days=demo_settings.retention_days).rows_to_delete
    dialog_text = " ".join(m.value for m in at.markdown)
    assert f"Archive **{stated:,} rows**" in dialog_text
    assert not list_backups(demo_settings)  # nothing happens before the confirmation

    at.button(key="confirm_run").click().run()
    assert not at.exception
    assert at.success and "Cleanup finished" in at.success[0].value
    assert metric(at, "Rows deleted") == f"{stated:,}"
    job = at.session_state["cleanup_job"]
    assert job.rows_done == job.rows_total == stated  # the progress callback drove the bar to the end
    [backup] = list_backups(demo_settings)
    assert backup.rows == stated
    assert backup.sha256 in [c.value for c in at.code]

    at.switch_page("pages/history.py").run()
    table = at.dataframe[0].value
    assert table["status"].iloc[0] == "✅ success"
    assert table["rows"].iloc[0] == stated
    assert table["trigger"].iloc[0] == "dashboard"
    assert list_history(demo_settings)[0].status == "success"


def test_cancel_and_dry_run_change_nothing(demo_settings: Settings, app_env):
    app_env(demo_settings)
    at = signed_in()
    at.switch_page("pages/run_cleanup.py").run()
    before = preview(demo_settings).rows_to_delete
    at.button(key="run_cleanup").click().run()
    at.button(key="cancel_run").click().run()
    assert not list_history(demo_settings)

    at.toggle(key="dry_run").set_value(True).run()
    at.button(key="run_cleanup").click().run()
    at.button(key="confirm_run").click().run()
    assert "Dry run finished" in at.info[0].value
    assert preview(demo_settings).rows_to_delete == before
    assert not list_backups(demo_settings)
    assert list_history(demo_settings)[0].status == "dry_run"


def test_run_cleanup_refuses_while_another_cleanup_holds_the_lock(demo_settings: Settings, app_env):
    app_env(demo_settings)
    at = signed_in()
    if get_engine(demo_settings).dialect.name == "sqlite":
        lock = SqliteFileLock(demo_settings)
        lock.acquire()
        release = lock.release
    else:
        raw = get_engine(demo_settings).raw_connection()
        assert pg_try_lock(raw.driver_connection, lock_key(demo_settings))
        release = raw.invalidate  # closing the session drops the advisory lock
    try:
        at.switch_page("pages/run_cleanup.py").run()
        assert "is running right now" in at.warning[0].value
        assert "run_cleanup" not in [b.key for b in at.button]
    finally:
        release()
    at.button(key="check_again").click().run()
    assert "run_cleanup" in [b.key for b in at.button]


def test_password_gate_blocks_without_the_password_and_opens_with_it(demo_settings: Settings, app_env):
    app_env(demo_settings)
    at = AppTest.from_file(DASHBOARD, default_timeout=60).run()
    assert not at.metric and not at.dataframe
    assert "Total rows" not in texts(at)

    at.text_input(key="login_password").input("wrong password").run()
    at.button(key="sign_in_button").click().run()
    assert [e.value for e in at.error] == ["Sign-in failed."]  # says nothing else
    assert not at.metric and "600" not in texts(at)

    at.text_input(key="login_password").input(PASSWORD)
    at.button(key="sign_in_button").click().run()
    assert metric(at, "Total rows") == "600"

    at.button(key="sign_out").click().run()
    assert not at.metric and at.text_input(key="login_password")


AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "test-cookie-secret",
        "client_id": "lrc", "client_secret": "oidc-secret", "server_metadata_url": "https://idp.test/.well-known/x"}


def test_with_an_auth_section_only_a_logged_in_user_gets_in(demo_settings: Settings, app_env):
    app_env(demo_settings)  # a DASHBOARD_PASSWORD too: OIDC takes precedence
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.secrets["auth"] = AUTH
    at.user = {}
    at.run()
    assert [b.key for b in at.button] == ["login_default"]
    assert not at.metric and not at.text_input

    at.user = {"is_logged_in": True, "email": "ops@corp.test", "name": "Ops"}
    at.run()
    assert metric(at, "Total rows") == "600"
    assert "Signed in as Ops" in at.sidebar.caption[0].value


def test_access_rules_refuse_a_logged_in_user_outside_them(demo_settings: Settings, app_env):
    app_env(demo_settings)
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.secrets["auth"] = AUTH
    at.secrets["access"] = {"allowed_domains": ["corp.test"]}
    at.user = {"is_logged_in": True, "email": "someone@gmail.test"}
    at.run()
    assert "not allowed" in at.error[0].value and not at.metric
    at.user = {"is_logged_in": True, "email": "ops@corp.test"}
    at.run()
    assert metric(at, "Total rows") == "600"


def test_without_any_login_a_server_not_on_localhost_shows_nothing(demo_settings: Settings, app_env,
                                                                   server_address):
    app_env(demo_settings, password=None)
    server_address("0.0.0.0")
    at = AppTest.from_file(DASHBOARD, default_timeout=60).run()
    assert not at.exception
    assert "Access is not configured" in at.error[0].value
    assert not at.metric and not at.text_input and not at.button


def test_without_any_login_localhost_opens_with_a_warning(demo_settings: Settings, app_env, server_address):
    app_env(demo_settings, password=None)
    server_address("localhost")
    at = AppTest.from_file(DASHBOARD, default_timeout=60).run()
    assert "No login is configured" in at.sidebar.warning[0].value
    assert metric(at, "Total rows") == "600"


def test_settings_page_never_shows_secrets(settings: Settings, app_env):
    secrets = {"SLACK_WEBHOOK_URL": "https://hooks.slack.test/services/T0/B0/hook-secret-42",
               "CLEANUP_TRIGGER_TOKEN": "trigger-secret-42"}
    app_env(settings, **secrets)
    at = signed_in()
    at.switch_page("pages/settings.py").run()
    shown = texts(at)
    assert "SLACK_WEBHOOK_URL" in shown and "•••••• (set)" in shown
    for secret in (*secrets.values(), PASSWORD):
        assert secret not in shown


def test_a_missing_table_is_reported_on_every_page(settings: Settings, app_env):
    app_env(settings)  # no demo data: the log table does not exist
    at = signed_in()
    for page in ("overview", "preview", "run_cleanup"):
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception
        assert "LOG_TABLE" in at.error[0].value and "no such table" in at.error[0].value


def test_streamed_download_route_serves_only_signed_links(demo_settings: Settings, app_env, monkeypatch):
    from core import run_cleanup
    from ui import downloads

    app_env(demo_settings)
    monkeypatch.setenv("LRC_DOWNLOAD_ROUTE_MOUNTED", "0")  # routes() sets it; restored after the test
    result = run_cleanup(demo_settings, trigger="test", notify=False)
    name = Path(result.backup_file).name
    [route] = downloads.routes()
    assert downloads.streamed_available()

    def get(url: str) -> tuple[int, bytes, dict[str, str]]:
        parts = urlsplit(url)
        scope = {"type": "http", "method": "GET", "path": parts.path, "raw_path": parts.path.encode(),
                 "query_string": parts.query.encode(), "headers": [], "root_path": "", "scheme": "http",
                 "server": ("testserver", 80), "client": ("127.0.0.1", 1), "http_version": "1.1"}
        sent: list[dict] = []
        requests = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict:
            if requests:
                return requests.pop()
            await asyncio.sleep(3600)  # the client stays connected; cancelled when the response is done
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        asyncio.run(route.handle(scope, receive, send))
        head = sent[0]
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return head["status"], body, {k.decode(): v.decode() for k, v in head["headers"]}

    status, body, headers = get(downloads.link(name, "backup"))
    assert status == 200 and body == Path(result.backup_file).read_bytes()
    assert headers["cache-control"] == "no-store"

    status, body, _ = get(downloads.link(name, "spreadsheet"))
    assert status == 200 and body.startswith(b"\xef\xbb\xbfid,")  # UTF-8 BOM: Excel reads Korean as UTF-8
    assert body.decode("utf-8-sig").startswith("id,")

    good = downloads.link(name, "backup")
    q = {k: v[0] for k, v in parse_qs(urlsplit(good).query).items()}
    status, page, _ = get(good.replace(q["sig"], "0" * 64))
    assert status == 403  # forged
    assert "expired" in page.decode() and "백업 페이지로 돌아가" in page.decode()  # the page says what to do
    assert not downloads.check(name, "backup", str(int(time.time()) - 1), downloads.sign(name, "backup",
                                                                                            int(time.time()) - 1))
    other = downloads.link("../../etc/passwd", "backup")  # signed, but outside BACKUP_DIR
    assert get(other)[0] == 404
