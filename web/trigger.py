"""The HTTP trigger: thin Starlette handlers over ``core.runs.start_cleanup`` and ``core.get_run_result``.

Served by the dashboard's own process (see ``server.py``). The interface:

- ``POST|GET /run-cleanup`` with ``Authorization: Bearer <CLEANUP_TRIGGER_TOKEN>`` → 202
  ``{"run_id", "status": "started"}``; 409 while a cleanup of the table runs anywhere
  (dashboard, CLI, another trigger: the core lock); 401 for a missing or wrong token;
  404 when no token is configured.
- With ``RETENTION_POLICIES_FILE``: ``/run-cleanup`` runs every policy in one background job
  (``?table=NAME``: that policy only; an unknown name is 404), 409 while any of their tables
  is being cleaned; ``/runs/<job id>`` answers ``{"run_id", "status", "runs": [run JSON, …]}``.
- ``GET /runs/<run_id>`` (same token) → the run as ``python -m core run --json`` prints it.
- ``GET /healthz`` → 200 ``{"status": "ok"}``, no token, no database.

The token is read only from the ``Authorization`` header (a query string ends up in
access logs), compared in constant time, and never logged.
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

import core
from core.config import load_dashboard_settings
from core.models import Trigger, to_jsonable
from core.runs import registry, start_cleanup, start_policies
from web import guard

log = logging.getLogger(__name__)

# Run ids are uuid4 strings; anything else cannot be a run and is answered 404 without a query.
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_NO_STORE = {"Cache-Control": "no-store"}


# ---------------------------------------------------------------------------
# Settings and authentication


def current_settings() -> core.Settings:
    """The dashboard's settings (built-in < .env < environment < secrets file), read per request.

    The same loader as the pages (``core.config.load_dashboard_settings``): the trigger lives
    in the dashboard's process and must never see another database than the pages do.
    """
    return load_dashboard_settings()


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, else None. Never the query string."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison (only the lengths may leak, as with any such check)."""
    return given is not None and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(payload, status_code=status, headers={**_NO_STORE, **(headers or {})})


def _guard(request: Request) -> core.Settings | JSONResponse:
    """Settings of an authenticated request, or the response refusing it (500/404/401)."""
    try:
        settings = current_settings()
    except core.BadSetting as exc:
        # Not authenticated yet (we cannot read the token): details go to the log only.
        log.error("HTTP trigger refused a request: bad configuration: %s", exc.one_line())
        return _json(500, {"error": "the server's configuration is invalid; see its log"})
    if not settings.cleanup_trigger_token:
        return _json(404, {"error": "the HTTP trigger is disabled (CLEANUP_TRIGGER_TOKEN is not set)"})
    client = _client(request)
    wait = guard.limiter.retry_after(client)
    if wait:  # before the comparison: a locked-out client learns nothing from its guess
        return _too_many(wait)
    given = bearer_token(request)
    if not token_matches(given, settings.cleanup_trigger_token):
        hint = ("; send the token in the Authorization header, never in the URL"
                if any("token" in k.lower() for k in request.query_params) else "")
        log.warning("HTTP trigger: refused %s %s from %s: missing or wrong token", request.method,
                    request.url.path, client)
        # Only a compared guess counts: a request without a bearer token cannot guess it.
        wait = guard.limiter.failure(client, "HTTP trigger token") if given is not None else 0.0
        if wait:
            return _too_many(wait)
        return _json(401, {"error": "missing or wrong bearer token" + hint},
                           {"WWW-Authenticate": 'Bearer realm="log-retention"'})
    guard.limiter.success(client)
    return settings


def _too_many(wait_s: float) -> JSONResponse:
    """429 for a locked-out client: how long to wait, in the header and the body."""
    retry = guard.retry_after_header(wait_s)
    return _json(429, {"error": "too many failed attempts; try again later", "retry_after_s": int(retry)},
                 {"Retry-After": retry})


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _error(exc: core.RetentionError) -> JSONResponse:
    """A refused start or lookup as one JSON line: 409 lock, 503 database, else 500."""
    if isinstance(exc, core.LockHeld):
        return _json(409, {"status": "already_running", "error": exc.one_line()})
    if isinstance(exc, core.DatabaseUnavailable):
        return _json(503, {"error": exc.one_line()})
    return _json(500, {"error": exc.one_line()})


# ---------------------------------------------------------------------------
# Handlers (sync ones run in Starlette's thread pool: the core does blocking I/O)


async def healthz(request: Request) -> JSONResponse:
    """200 without a token; touches no settings and no data (for host health checks and wake-ups)."""
    return _json(200, {"status": "ok"})


def run_cleanup(request: Request) -> JSONResponse:
    """Start a cleanup in the background (trigger ``http``); answer at once."""
    if request.method == "HEAD":  # Starlette adds HEAD to GET routes; it must not delete anything
        return _json(405, {"error": "use POST (or GET)"}, {"Allow": "GET, POST"})
    settings = _guard(request)
    if isinstance(settings, JSONResponse):
        return settings
    table = request.query_params.get("table")
    try:
        if settings.policies_file:  # every policy in one job, or ?table=NAME's
            run_id = start_policies(settings, trigger=Trigger.HTTP, only=table).run_id
        elif table is not None and table != settings.table:
            return _json(400, {"error": "?table= needs RETENTION_POLICIES_FILE; this server cleans "
                                        f"{settings.table} only"})
        else:
            run_id = start_cleanup(settings, trigger=Trigger.HTTP).run_id
    except core.BadSetting as exc:
        if exc.name == "table":
            return _json(404, {"error": exc.one_line()})
        log.error("HTTP trigger: not started: %s", exc.one_line())
        return _json(500, {"error": exc.one_line()})
    except core.RetentionError as exc:
        log.info("HTTP trigger from %s: not started: %s", _client(request), exc.one_line())
        return _error(exc)
    log.info("HTTP trigger from %s: started cleanup run %s", _client(request), run_id)
    return _json(202, {"run_id": run_id, "status": "started", "status_url": f"/runs/{run_id}"},
                 {"Location": f"/runs/{run_id}"})


def run_status(request: Request) -> JSONResponse:
    """One run (any trigger) as ``run --json`` prints it; ``{"status": "running"}`` until it ends.

    Runs started by this process are answered from the registry (they may have no
    history row yet); others, e.g. from the CLI or before a restart, from the history.
    """
    settings = _guard(request)
    if isinstance(settings, JSONResponse):
        return settings
    run_id = request.path_params["run_id"]
    if not _RUN_ID.fullmatch(run_id):
        return _json(404, {"error": "no run with this id"})
    mine = registry.get(run_id)
    if mine is not None and mine.error is None:
        return _json(200, mine.to_json())  # started here: no query while it runs
    try:
        result = core.get_run_result(settings, run_id)
    except core.RetentionError as exc:
        return _error(exc)
    if result is not None:
        return _json(200, to_jsonable(result))
    if mine is not None:  # failed before it wrote a history row
        return _json(200, mine.to_json())
    return _json(404, {"error": "no run with this id"})

