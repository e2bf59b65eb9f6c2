"""Backup downloads: streamed through an HTTP route when the server mounts it, else a download button.

``st.download_button`` (1.67) accepts bytes, a file object or a callable, but even
the deferred callable is read into memory and stored there before the browser gets
it: a 2 GB backup would cost 2 GB of server memory per click. When ``server.py``
mounts :func:`routes` with ``st.App(..., routes=...)``, the Backups page links to
``/backup-download`` instead, which streams the file from disk in 64 KiB chunks.

The page can only link there after the access gate passed, so the link carries a
signature: HMAC-SHA256 over (backup name, kind, expiry, grant) with a key derived
from the server's cookie secret, valid for :data:`LINK_TTL_S`. The grant binds the
link to the session that made it: a random id in that session's state, registered
in the process-wide ``web.guard.grants`` and revoked at sign-out (:func:`revoke_session_grant`)
or when the session ends, after which the link answers 403 wherever it was copied to.
The route re-resolves the name inside BACKUP_DIR, so a valid link can never reach another file; a
backup with no local copy streams from BACKUP_STORE through this route (a finished backup there,
by its plain name), never through a presigned URL that anyone holding it could use.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import Any
from urllib.parse import urlencode

import streamlit as st

from core import RetentionError, resolve_backup
from core.backup import iter_spreadsheet_safe
from core.backup.stored import stored_backup
from core.errors import BackupNotFound
from web import guard

ROUTE = "/backup-download"
LINK_TTL_S = 5 * 60
_GRANT = "_lrc_download_grant"  # session key: this session's live grant id
KINDS = ("backup", "spreadsheet")
_MOUNTED_FLAG = "LRC_DOWNLOAD_ROUTE_MOUNTED"  # process-wide, survives Streamlit's module reloads


def _key() -> bytes:
    secret = str(st.get_option("server.cookieSecret") or "")
    return hmac.new(secret.encode(), b"lrc-backup-download-v1", hashlib.sha256).digest()


def sign(name: str, kind: str, expires: int, grant: str = "") -> str:
    msg = f"{name}\x00{kind}\x00{expires}\x00{grant}".encode()
    return hmac.new(_key(), msg, hashlib.sha256).hexdigest()


def check(name: str, kind: str, expires: str, signature: str, grant: str = "", *, now: float | None = None) -> bool:
    """True for an unexpired link signed by this server for a grant that is still live."""
    if kind not in KINDS or not expires.isdigit():
        return False
    if int(expires) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(sign(name, kind, int(expires), grant), signature) and guard.grants.is_live(grant)


def session_grant() -> str:
    """This session's download grant, issued at its first link (outside a session: a grant of its own)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:
        return guard.grants.issue(None)
    grant = st.session_state.get(_GRANT)
    if not grant or not guard.grants.is_live(grant):
        grant = st.session_state[_GRANT] = guard.grants.issue(ctx.session_id)
    return grant


def revoke_session_grant() -> None:
    """Kill every download link this session made (at sign-out)."""
    guard.grants.revoke(st.session_state.pop(_GRANT, None))


def spreadsheet_name(name: str) -> str:
    return name.removesuffix(".csv.gz") + ".spreadsheet.csv"


def streamed_available() -> bool:
    return os.environ.get(_MOUNTED_FLAG) == "1"


def link(name: str, kind: str) -> str:
    """A signed URL of the streamed route for one backup, valid for this session and :data:`LINK_TTL_S`."""
    expires = int(time.time()) + LINK_TTL_S
    grant = session_grant()
    base = "/" + str(st.get_option("server.baseUrlPath") or "").strip("/")
    query = urlencode({"name": name, "kind": kind, "expires": expires, "grant": grant,
                       "sig": sign(name, kind, expires, grant)})
    return f"{base.rstrip('/')}{ROUTE}?{query}"


def read_backup(settings: Any, name: str) -> bytes:
    """The whole backup (download button fallback; resolved inside BACKUP_DIR, else read from the store)."""
    try:
        return resolve_backup(settings, name).read_bytes()
    except BackupNotFound:
        return b"".join(stored_backup(settings, name).stream(name))


def read_spreadsheet(settings: Any, name: str) -> bytes:
    return b"".join(iter_spreadsheet_safe(settings, name))


def expired_page() -> str:
    """The page an expired or invalid download link opens: what happened and what to do (both languages)."""
    from html import escape

    from core.i18n import N_, translations

    title = N_("This download link has expired")
    text = N_("Download links are valid for {minutes} minutes and only while the dashboard tab that made them is "
              "open, so that a copied link cannot be used later. Go back to the Backups page and click the download "
              "button again.")
    minutes = LINK_TTL_S // 60
    paragraphs = []
    for lang in ("en", "ko"):
        t = translations(lang).gettext
        paragraphs.append(f"<h1>{escape(t(title))}</h1><p>{escape(t(text).format(minutes=minutes))}</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Log Retention Console</title>"
            "<style>body{font-family:sans-serif;max-width:40em;margin:4em auto;line-height:1.5}</style></head><body>"
            + "<hr>".join(paragraphs) + "</body></html>")


def routes() -> list[Any]:
    """The Starlette route for ``st.App(..., routes=[*routes()])``; marks streamed downloads available."""
    from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    from .state import build_settings

    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}

    async def download(request: Any) -> Any:
        q = request.query_params
        name, kind = q.get("name", ""), q.get("kind", "")
        if not check(name, kind, q.get("expires", ""), q.get("sig", ""), q.get("grant", "")):
            return HTMLResponse(expired_page(), 403, headers=headers)
        try:
            settings = build_settings()
            path = resolve_backup(settings, name)
        except BackupNotFound as missing:  # no local copy: the stored one, streamed through this server
            try:
                store = stored_backup(settings, name)
            except RetentionError:
                return PlainTextResponse(missing.one_line() + "\n", 404, headers=headers)
            if kind != "backup":
                return PlainTextResponse("only the backup itself streams from the store\n", 404, headers=headers)
            return StreamingResponse(store.stream(name), media_type="application/gzip", headers={
                **headers, "Content-Disposition": f'attachment; filename="{name}"'})
        except RetentionError as exc:
            return PlainTextResponse(exc.one_line() + "\n", 404, headers=headers)
        if kind == "backup":
            return FileResponse(path, media_type="application/gzip", filename=path.name, headers=headers)
        return StreamingResponse(
            iter_spreadsheet_safe(settings, path), media_type="text/csv; charset=utf-8",
            headers={**headers, "Content-Disposition": f'attachment; filename="{spreadsheet_name(path.name)}"'},
        )

    os.environ[_MOUNTED_FLAG] = "1"
    return [Route(ROUTE, download, methods=["GET"])]
