"""Secrets never leave the process: the one masking of URLs and the one redaction of text.

:func:`mask_url` shows a database URL with its password and every secret query
parameter (``password``, ``sslpassword``, ``token``, ``key``…) as ``***``.
:func:`redact` is applied to every text that leaves: CLI output (text and JSON),
error lines, HTTP bodies, log records (:class:`RedactingFilter`, installed on the
handlers of the CLI and the server by :func:`install_log_redaction`), history rows
and Slack messages. It replaces

- the secret values the process knows (:func:`remember`: the settings' secrets and
  the URL's password and secret query values, registered whenever settings are
  validated), so a driver message that echoes the DSN is caught too, and
- anything shaped like a secret: the password of ``scheme://user:pw@``, and
  ``key=value`` pairs whose key names a secret (URL query strings, libpq DSNs).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

from sqlalchemy.engine import make_url

MASK = "***"
# Query parameters / DSN keys whose values are secrets (case-insensitive); a key ending
# in one of the _SECRET_SUFFIXES counts too (``sslpassword``, ``api_token``).
_SECRET_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword", "token", "key", "secret", "access_token",
                          "api_key"})
_SECRET_SUFFIXES = ("password", "secret", "token", "_key")
_MIN_ANYWHERE = 12  # a known secret this long is replaced wherever it appears; shorter ones only as a word

_USERINFO_RE = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@'\"]*:)[^@\s'\"]*@")
_PAIR_RE = re.compile(r"""(?i)\b([a-z][a-z0-9_\-]*)(\s*=\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^&\s'",;)]+)""")

_known: set[str] = set()
_pattern: re.Pattern[str] | None = None


def is_secret_key(key: str) -> bool:
    """Whether a query parameter or DSN key holds a secret."""
    k = key.lower()
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def mask_url(url: str) -> str:
    """The URL for display: its password and every secret query parameter shown as ``***``.

    Used for every display of a database URL (pages, logs, errors, history). Never raises:
    an unparseable URL is shown by its scheme only.
    """
    try:
        parsed = make_url(url)
        shown = parsed.set(query={}).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 (whatever the parser chokes on, show no more than the scheme)
        return url.split(":", 1)[0] + ":…"
    params = []
    for key, values in parsed.query.items():
        for value in (values,) if isinstance(values, str) else values:
            params.append(f"{quote(key)}={MASK if is_secret_key(key) else quote(value, safe='/:,')}")
    return shown + ("?" + "&".join(params) if params else "")


def url_secrets(url: str | None) -> list[str]:
    """The secret values inside a URL: its password and secret query parameters (raw and %-encoded)."""
    if not url:
        return []
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 (an unparseable URL: its text after the scheme is all we know)
        return [url]
    out = [parsed.password] if parsed.password else []
    for key, values in parsed.query.items():
        if is_secret_key(key):
            out.extend((values,) if isinstance(values, str) else values)
    return [v for s in out if s for v in {str(s), quote(str(s), safe=""), unquote(str(s))}]


def remember(values: Iterable[str | None]) -> None:
    """Add secret values that :func:`redact` replaces from now on, in this process."""
    global _pattern
    new = {v.strip() for v in values if v and v.strip()} - _known
    if not new:
        return
    _known.update(new)
    parts = []
    for v in sorted(_known, key=len, reverse=True):
        parts.append(re.escape(v) if len(v) >= _MIN_ANYWHERE else rf"(?<![A-Za-z0-9]){re.escape(v)}(?![A-Za-z0-9])")
    _pattern = re.compile("|".join(parts))


def redact(text: str) -> str:
    """``text`` with every known secret and anything shaped like one replaced by ``***``."""
    if not text:
        return text
    if _pattern is not None:
        text = _pattern.sub(MASK, text)
    text = _USERINFO_RE.sub(rf"\1{MASK}@", text)
    return _PAIR_RE.sub(lambda m: f"{m[1]}{m[2]}{MASK}" if is_secret_key(m[1]) and m[3] != MASK else m[0], text)


class RedactingFilter(logging.Filter):
    """A handler filter: each record's message, traceback and stack are redacted before formatting."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (a bad format string: log what was given)
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(*loggers: logging.Logger) -> None:
    """Put a :class:`RedactingFilter` on every handler of the root logger and of ``loggers``. Idempotent."""
    for logger in (logging.getLogger(), *loggers):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
