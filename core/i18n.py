"""Language and display time zone: gettext catalogs compiled with Babel, and locale-aware formatting.

Every text a person reads (CLI human output, Slack report, dashboard) goes through
:func:`_` / :func:`ngettext`; JSON keys and values never do (they stay stable English).
The catalogs are ``core/locale/<lang>/LC_MESSAGES/messages.po``, compiled in memory
with Babel the first time a language is used, so a clean clone needs no build step.
To add or change a message (see README, "Translations")::

    pybabel extract -F babel.cfg -k N_ -o core/locale/messages.pot .
    pybabel update -i core/locale/messages.pot -d core/locale -D messages

Times are shown in the display zone with its abbreviation (``2026-12-07 09:00 KST``);
stored values stay UTC. The language and zone are process-wide (:func:`configure`)
and can be overridden for one thread or script run (:func:`use`: a browser session).
"""

from __future__ import annotations

import gettext
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import cache
from io import BytesIO
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

LANGUAGES = ("en", "ko")
LOCALE_DIR = Path(__file__).with_name("locale")
_BABEL_LOCALE = {"en": "en_US", "ko": "ko_KR"}

_default = {"language": "en", "zone": "UTC"}
_language: ContextVar[str | None] = ContextVar("language", default=None)
_zone: ContextVar[str | None] = ContextVar("zone", default=None)


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalog of ``language`` (English: the message ids themselves)."""
    po = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    if language == "en" or not po.is_file():
        return gettext.NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=language)
    mo = BytesIO()
    write_mo(mo, catalog)
    mo.seek(0)
    return gettext.GNUTranslations(mo)


def language() -> str:
    """The language texts are written in now: ``en`` or ``ko``."""
    return _language.get() or _default["language"]


def display_zone() -> str:
    """The IANA zone times are shown in now (``UTC``, ``Asia/Seoul``)."""
    return _zone.get() or _default["zone"]


def configure(*, language: str | None = None, zone: str | None = None) -> None:
    """Set the process-wide language and display zone (CLI, HTTP trigger, background runs)."""
    if language:
        _default["language"] = language
    if zone:
        _default["zone"] = zone


def configure_from(settings: object) -> None:
    """:func:`configure` from Settings (``app_language``, ``display_timezone``)."""
    configure(language=getattr(settings, "app_language", None), zone=getattr(settings, "display_timezone", None))


def set_current(*, language: str | None = None, zone: str | None = None) -> None:
    """Override language and zone for the current thread or script run only (a browser session)."""
    _language.set(language)
    _zone.set(zone)


@contextmanager
def use(*, language: str | None = None, zone: str | None = None) -> Iterator[None]:
    """Within the block, texts are in ``language`` and times in ``zone`` (None: unchanged)."""
    tokens = (_language.set(language or _language.get()), _zone.set(zone or _zone.get()))
    try:
        yield
    finally:
        _language.reset(tokens[0])
        _zone.reset(tokens[1])


def _(message: str) -> str:
    """``message`` in the current language."""
    return translations(language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of a message for ``n`` in the current language (Korean has one form)."""
    return translations(language()).ngettext(singular, plural, n)


def N_(message: str) -> str:  # noqa: N802 (gettext's name)
    """Mark ``message`` for extraction; translated later with :func:`_`."""
    return message


def number(n: int | float | None) -> str:
    """12345 -> '12,345' in the current locale; None -> '—'."""
    return "—" if n is None else format_decimal(n, locale=_BABEL_LOCALE[language()])


def rows(n: int) -> str:
    """'1 row', '12,345 rows' / '12,345행' — the most common plural."""
    return ngettext("{n} row", "{n} rows", n).format(n=number(n))


def to_display(value: datetime) -> datetime:
    """An aware datetime in the display zone (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(ZoneInfo(display_zone()))


def time_text(value: datetime | None, *, seconds: bool = True) -> str:
    """'2026-12-07 09:00:00 KST': the display zone with its abbreviation; None -> '—'."""
    if value is None:
        return "—"
    local = to_display(value)
    text = f"{local.year:04d}-{local:%m-%d %H:%M}" + (f":{local:%S}" if seconds else "")
    return f"{text} {zone_abbreviation(local)}"


def date_text(value: datetime | None) -> str:
    """The date in the display zone: '2026-12-07'; None -> '—'."""
    return "—" if value is None else to_display(value).date().isoformat()


def zone_abbreviation(local: datetime) -> str:
    """'KST', 'UTC', 'CET'; a zone without one (e.g. '+04') is shown as UTC+04:00."""
    abbr = local.tzname() or ""
    if not abbr or abbr[0] in "+-":
        offset = local.strftime("%z")
        return f"UTC{offset[:3]}:{offset[3:]}"
    return abbr


__all__ = [
    "LANGUAGES", "N_", "_", "configure", "configure_from", "date_text", "display_zone", "language",
    "ngettext", "number", "rows", "set_current", "time_text", "to_display", "translations", "use",
    "zone_abbreviation",
]
