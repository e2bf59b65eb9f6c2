"""Inputs never lie (AppTest, English and Korean): an invalid retention-days or cutoff value turns
Preview's numbers and the Run Cleanup button off, with the core's reason beside the field."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core import preview
from core.config import Settings
from core.i18n import translations
from tests import test_dashboard as dash
from tests.test_dashboard import signed_in

app_env = dash.app_env  # the same fixture as the English dashboard tests

LANGS = {"en": {}, "ko": {"APP_LANGUAGE": "ko", "DISPLAY_TIMEZONE": "Asia/Seoul"}}
# the reason each invalid value must show, as the catalog words it (English msgid)
INVALID_DAYS = [("-5", "must be 0 or more days"), ("99999", "must be at most {max} days (100 years)"),
                ("", "Enter a number of days."), ("1.5", "must be a whole number"), ("ten", "must be a whole number")]


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _reason_shown(at, msgid: str, lang: str) -> bool:
    words = translations(lang).gettext(msgid).split("{")[0].strip()
    return any(words in e.value for e in at.error)


def _disabled_link(at) -> bool:
    links = [el for el in at.get("page_link") if el.proto.page.startswith("run_cleanup")]
    return bool(links) and all(el.proto.disabled for el in links)


@pytest.mark.parametrize("lang", sorted(LANGS))
def test_an_invalid_days_value_leaves_no_preview_numbers_and_turns_run_off(demo_settings: Settings, app_env,
                                                                            lang: str):
    app_env(demo_settings, **LANGS[lang])
    t = translations(lang).gettext
    rows_label = t("Rows to archive and delete")
    at = signed_in()
    at.switch_page("pages/preview.py").run()
    for bad, msgid in INVALID_DAYS:
        at.text_input(key="cutoff_days").input("45").run()
        assert rows_label in _metrics(at)  # a valid value first: numbers are shown
        at.text_input(key="cutoff_days").input(bad).run()
        assert not at.exception
        assert rows_label not in _metrics(at) and not at.metric and not at.dataframe, bad  # nothing left from 45
        assert _reason_shown(at, msgid, lang), (bad, [e.value for e in at.error])
        assert _disabled_link(at), bad

    at.switch_page("pages/run_cleanup.py").run()  # the invalid value follows to Run Cleanup: the button is off
    assert not at.exception
    assert at.button(key="run_cleanup").disabled
    assert _reason_shown(at, INVALID_DAYS[-1][1], lang)  # the last value typed on Preview
    assert t("are older than") not in " ".join(m.value for m in at.markdown)
    for bad, msgid in INVALID_DAYS:
        at.text_input(key="cutoff_days").input(bad).run()
        assert at.button(key="run_cleanup").disabled and _reason_shown(at, msgid, lang), bad

    at.text_input(key="cutoff_days").input("0").run()  # 0 is allowed (the dialog asks for the table name)
    assert not at.error and not at.button(key="run_cleanup").disabled


@pytest.mark.parametrize("lang", sorted(LANGS))
def test_a_future_cutoff_date_leaves_no_preview_numbers_and_turns_run_off(demo_settings: Settings, app_env,
                                                                           lang: str):
    app_env(demo_settings, **LANGS[lang])
    t = translations(lang).gettext
    zone = ZoneInfo(LANGS[lang].get("DISPLAY_TIMEZONE", "UTC"))
    today = datetime.now(zone).date()
    at = signed_in()
    at.switch_page("pages/preview.py").run()
    at.segmented_control(key="cutoff_mode").set_value(t("Date")).run()
    at.date_input(key="cutoff_date").set_value(today - timedelta(days=20)).run()
    assert t("Rows to archive and delete") in _metrics(at)
    for bad in (today + timedelta(days=1), today + timedelta(days=400)):
        at.date_input(key="cutoff_date").set_value(bad).run()
        assert not at.exception and not at.metric and not at.dataframe, bad
        assert _reason_shown(at, "is in the future: it would delete rows that are not old yet", lang)
        assert _disabled_link(at)
    at.switch_page("pages/run_cleanup.py").run()
    at.segmented_control(key="cutoff_mode").set_value(t("Date")).run()  # (AppTest drops it on a page switch)
    assert at.button(key="run_cleanup").disabled
    assert _reason_shown(at, "is in the future: it would delete rows that are not old yet", lang)
    at.date_input(key="cutoff_date").set_value(today).run()  # today 00:00 is in the past: allowed
    assert not at.error and not at.button(key="run_cleanup").disabled
    expected = preview(demo_settings, cutoff=datetime.combine(today, datetime.min.time(), tzinfo=zone))
    assert f"{expected.rows_to_delete:,}" in " ".join(m.value for m in at.markdown)
