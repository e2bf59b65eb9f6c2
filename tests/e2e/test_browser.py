"""End to end in headless Chromium: sign in, chart, preview, Run Cleanup, download the backup.

Starts ``streamlit run dashboard.py`` on a free port against a SQLite demo database
and drives Debian's ``/usr/bin/chromium`` with Playwright (never a downloaded
browser). With ``LRC_SCREENSHOTS=1`` it also writes docs/screenshots/*.png, the
README's pictures of every page. The test runs in English and in Korean (``APP_LANGUAGE=ko``,
``DISPLAY_TIMEZONE=Asia/Seoul``): every label it looks for comes from the catalog, and the
Korean pictures go to docs/screenshots/ko/.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from core import demo_data, load_settings, preview
from core.i18n import translations
from tests.support import ROOT
from tests.support.processes import CHROMIUM, need_chromium

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "e2e-password-not-secret"
SHOTS = ROOT / "docs" / "screenshots"
TAKE_SHOTS = os.environ.get("LRC_SCREENSHOTS") == "1"

pytestmark = pytest.mark.e2e




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LANGUAGES = {"en": {}, "ko": {"APP_LANGUAGE": "ko", "DISPLAY_TIMEZONE": "Asia/Seoul"}}


@pytest.fixture(params=sorted(LANGUAGES))
def lang(request: pytest.FixtureRequest) -> str:
    return request.param


@contextmanager
def running_dashboard(tmp_path: Path, lang: str, *, rows: int = 2000, **env_extra: str):
    """The dashboard on a SQLite demo database in ``lang``; yields (base URL, settings); stopped afterwards."""
    need_chromium()
    settings = load_settings(
        {"database_url": f"sqlite:///{tmp_path / 'e2e.db'}", "backup_dir": str(tmp_path / "backups"),
         "batch_size": 100},
        environ={}, env_file=None,
    )
    demo_data(settings, rows=rows, days=90, seed=11)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_", "LOG_", "BACKUP_"))}
    env.update(DATABASE_URL=settings.database_url, BACKUP_DIR=settings.backup_dir, CLEANUP_BATCH_SIZE="100",
               DASHBOARD_PASSWORD=PASSWORD, PYTHONPATH=str(ROOT), **LANGUAGES[lang], **env_extra)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
         "--server.headless", "true", "--server.address", "localhost"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield base, settings
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def server(tmp_path: Path, lang: str):
    """:func:`running_dashboard` in ``lang`` (both languages)."""
    with running_dashboard(tmp_path, lang) as running:
        yield running


def _shot(page, name: str, lang: str = "en") -> None:
    """docs/screenshots/[ko/]NAME.png of the whole page (the main area scrolls inside the window)."""
    if not TAKE_SHOTS:
        return
    folder = SHOTS if lang == "en" else SHOTS / lang
    folder.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(800)  # let charts and fonts settle
    size = page.viewport_size
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 0")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height), 4000))})
    page.wait_for_timeout(300)
    page.screenshot(path=str(folder / f"{name}.png"))
    page.set_viewport_size(size)


def _metric(page, label: str):
    return page.locator('[data-testid="stMetric"]').filter(has_text=label).locator('[data-testid="stMetricValue"]')


def _open(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title, level=1).wait_for()


def test_sign_in_preview_run_cleanup_and_download_the_verified_backup(server, lang: str, tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    base, settings = server
    t, nt = translations(lang).gettext, translations(lang).ngettext

    def shot(name: str) -> None:
        _shot(page, name, lang)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900}, accept_downloads=True)
            page.set_default_timeout(30_000)
            hosts: set[str] = set()  # every host the page fetches from: nothing leaves this machine (favicon too)
            page.on("request", lambda req: hosts.add(urlsplit(req.url).hostname or req.url.split(":", 1)[0]))
            # a fresh server, a deep link: still nothing but the sign-in form until the password is given
            page.goto(f"{base}/overview")
            password = page.get_by_label(t("Password"), exact=True)
            password.wait_for()
            page.wait_for_timeout(1000)
            assert page.locator('[data-testid="stMetric"]').count() == 0
            assert t("Total rows") not in page.content()
            # sign in through the router (the deep link ran the page alone, with Streamlit's legacy sidebar)
            page.goto(base)
            password.wait_for()
            password.fill(PASSWORD)
            page.get_by_role("button", name=t("Sign in")).click()

            # Overview: counts and the rows-per-day chart with the cutoff rule
            page.get_by_role("heading", name=t("Overview"), level=1).wait_for()
            expect(_metric(page, t("Total rows"))).to_have_text("2,000")
            expect(page.locator(".vega-embed").first).to_be_visible()
            expect(page.locator(".vega-embed canvas, .vega-embed svg").first).to_be_visible()
            if lang == "ko":  # times in the display zone, with its abbreviation
                expect(page.locator('[data-testid="stCaptionContainer"]').filter(has_text="KST").first).to_be_visible()
            shot("overview")

            # Preview a cutoff of 45 days: the page's count is core's count
            _open(page, t("Preview"))
            days = page.get_by_label(t("Archive and delete rows older than (days)"), exact=True)
            # an invalid value: its reason beside the field, no numbers, the way to Run Cleanup off
            days.fill("99999")
            days.press("Enter")
            expect(page.get_by_text(t("must be at most {max} days (100 years)").format(max="36,500"))).to_be_visible()
            expect(page.locator('[data-testid="stMetric"]')).to_have_count(0)
            shot("preview-invalid")
            days.fill("45")
            days.press("Enter")
            expected = preview(settings, retention_days=45).rows_to_delete
            expect(_metric(page, t("Rows to archive and delete"))).to_have_text(f"{expected:,}")
            expect(page.locator('[data-testid="stDataFrame"]')).to_be_visible()
            shot("preview")

            # Run Cleanup with the same cutoff, confirm in the dialog, watch it finish
            page.get_by_role("link", name=t("Continue to Run Cleanup with this cutoff")).click()
            page.get_by_role("heading", name=t("Run Cleanup"), level=1).wait_for()
            days = page.get_by_label(t("Archive and delete rows older than (days)"), exact=True)
            expect(days).to_have_value("45")
            run_button = page.get_by_role("button", name=t("Run Cleanup"))
            for bad in ("-5", ""):  # typed invalid values turn the button off, with the reason beside the field
                days.fill(bad)
                days.press("Enter")
                expect(run_button).to_be_disabled()
            expect(page.get_by_text(t("Enter a number of days."))).to_be_visible()
            days.fill("45")
            days.press("Enter")
            expect(run_button).to_be_enabled()
            run_button.click()
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text(nt("Archive and delete {rows} row", "Archive and delete {rows} rows", expected).format(rows=f"{expected:,}"))
            shot("run-cleanup-confirm")
            dialog.get_by_role("button", name=nt("Archive and delete {rows} row", "Archive and delete {rows} rows", expected).format(rows=f"{expected:,}")).click()
            expect(page.get_by_text(t("Cleanup finished."))).to_be_visible(timeout=60_000)
            expect(_metric(page, t("Rows deleted"))).to_have_text(f"{expected:,}")
            shot("run-cleanup-done")

            # Backups: download the new file; its bytes hash to the manifest's sha256
            _open(page, t("Backups"))
            manifests = sorted(Path(settings.backup_dir).glob("*.manifest.json"))
            assert len(manifests) == 1
            manifest = json.loads(manifests[0].read_text())
            assert manifest["rows"] == expected
            data_name = manifests[0].name.replace(".manifest.json", ".csv.gz")
            expect(page.get_by_role("combobox", name=t("Backup"))).to_have_value(data_name)
            page.get_by_role("button", name=t("Verify")).click()
            expect(page.get_by_text(nt("{name} verifies: {n} row, SHA-256 matches the manifest.", "{name} verifies: {n} rows, SHA-256 matches the manifest.", expected).format(name=data_name, n=f"{expected:,}"))).to_be_visible()
            shot("backups")
            with page.expect_download() as info:
                page.get_by_role("button", name=t("Download backup")).click()
            download = info.value
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
            assert saved.name == data_name
            assert hashlib.sha256(saved.read_bytes()).hexdigest() == manifest["sha256"]

            # History and Settings, for the record (and the screenshots)
            _open(page, t("History"))
            expect(page.locator('[data-testid="stDataFrame"]')).to_be_visible()
            shot("history")
            _open(page, t("Settings"))
            expect(page.get_by_text(t("**Connected to:** `{url}`").split("`")[0].strip("* "))).to_be_visible()
            assert PASSWORD not in page.content()
            shot("settings")
            assert hosts <= {"localhost", "127.0.0.1", "data", "blob"}, hosts
        finally:
            browser.close()
