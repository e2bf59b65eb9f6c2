"""A reload during a run re-attaches (headless Chromium): the reloaded page shows the run's live progress,
then its summary (rows deleted = what the table lost); a second tab's Overview shows the running banner.

The run is slowed with CLEANUP_PAUSE_MS so that it lasts long enough to reload in the middle of it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from core import preview
from core.db import get_engine
from core.i18n import translations
from tests.e2e.test_browser import CHROMIUM_ARGS, PASSWORD, running_dashboard
from tests.support.processes import CHROMIUM

pytestmark = pytest.mark.e2e


def _rows(settings) -> int:
    with get_engine(settings).connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {settings.table}")).scalar_one()


def _sign_in(page, t) -> None:
    password = page.get_by_label(t("Password"), exact=True)
    password.wait_for()
    password.fill(PASSWORD)
    page.get_by_role("button", name=t("Sign in")).click()


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_a_reload_during_a_run_shows_its_progress_then_its_summary_and_other_tabs_see_it(tmp_path: Path, lang: str):
    from playwright.sync_api import expect, sync_playwright

    t, nt = translations(lang).gettext, translations(lang).ngettext
    # ~1,300 rows older than 30 days in batches of 100, 1.5 s apart: the run lasts about 20 s
    with running_dashboard(tmp_path, lang, CLEANUP_PAUSE_MS="1500") as (base, settings), \
            sync_playwright() as pw:
        expected = preview(settings, retention_days=30).rows_to_delete
        before = _rows(settings)
        assert expected > 1000
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1360, "height": 900})
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(base)
            _sign_in(page, t)
            page.get_by_role("heading", name=t("Overview"), level=1).wait_for()
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=t("Run Cleanup")).click()
            page.get_by_role("heading", name=t("Run Cleanup"), level=1).wait_for()
            page.get_by_role("button", name=t("Run Cleanup")).click()
            label = nt("Archive and delete {rows} row", "Archive and delete {rows} rows", expected).format(
                rows=f"{expected:,}")
            page.get_by_role("dialog").get_by_role("button", name=label).click()
            progress = page.locator('[data-testid="stProgress"]')
            expect(progress).to_be_visible()

            # another tab (a new session, as another browser would be): Overview says a cleanup is running
            other = context.new_page()
            other.set_default_timeout(30_000)
            other.goto(base)
            _sign_in(other, t)
            banner = t("A cleanup of {table} is running: the counts below may change until it ends.").format(
                table=settings.table)
            expect(other.get_by_text(banner.split(":")[0])).to_be_visible()

            # reload in the middle of the run: a new session; after signing in, the same run, live
            assert _rows(settings) > before - expected, "the run ended before the reload: slow it down more"
            page.reload()
            _sign_in(page, t)
            try:
                page.get_by_role("heading", name=t("Run Cleanup"), level=1).wait_for()
            finally:
                page.screenshot(path=str(tmp_path / "after-reload.png"))
            expect(page.get_by_text(t("Cleanup running…"))).to_be_visible()
            expect(progress).to_be_visible()
            assert not page.get_by_text(t("started from the command line, the HTTP trigger or another browser")
                                        .split(",")[0]).count()
            done_before = _rows(settings)
            assert done_before > before - expected, "the run ended before the page re-attached"

            # ... then its summary: the rows it deleted are the rows the table lost
            expect(page.get_by_text(t("Cleanup finished."))).to_be_visible(timeout=90_000)
            lost = before - _rows(settings)
            assert lost == expected
            deleted = page.locator('[data-testid="stMetric"]').filter(has_text=t("Rows deleted"))
            expect(deleted.locator('[data-testid="stMetricValue"]')).to_have_text(f"{lost:,}")

            # the other tab drops its banner once the run is over
            expect(other.get_by_text(banner.split(":")[0])).to_have_count(0, timeout=30_000)
        finally:
            browser.close()
