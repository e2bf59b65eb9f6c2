"""The HTTP requests of one Slack report: one deadline, one retry policy, plain urllib.

Why not slack_sdk: its ``files_upload_v2`` sends the upload POST outside its retry
handlers, and its clients take one socket timeout for their whole life, so keeping a
report within SLACK_TIMEOUT_S meant overriding private methods and mutating the
client. The report needs five endpoints (``chat.postMessage``, ``conversations.list``,
``files.getUploadURLExternal``, ``files.completeUploadExternal``, the webhook) and the
upload URL; here they all go through :func:`send`, which retries

- HTTP 429 after the ``Retry-After`` delay Slack asks for (up to 3 times),
- HTTP 500/502/503/504 and refused or reset connections with a short backoff (twice),

and never waits or starts an attempt past the report's :class:`Deadline`: every
attempt's socket timeout is the time left. Proxies come from the environment
(``HTTPS_PROXY``), as urllib reads them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

RETRY_STATUSES = frozenset({500, 502, 503, 504})
MAX_RETRIES = {"rate_limited": 3, "server_error": 2, "connection": 2}
MIN_ATTEMPT_S = 0.5  # do not start a retry with less time than this left
_BACKOFF_S = 0.5  # first wait after a server or connection error; doubles each time
_USER_AGENT = "log-retention-console (urllib)"


class Deadline:
    """The time left for one report (SLACK_TIMEOUT_S), shared by all its requests."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (negative once past the deadline)."""
        return self._end - time.monotonic()


@dataclass(frozen=True)
class Outgoing:
    """One HTTP request, ``body`` already encoded. Headers are never logged (the token is one)."""

    method: str  # what guidance names: "chat.postMessage", "webhook", "files_upload_v2"
    url: str
    http_method: str = "POST"
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """Slack's HTTP answer (any status) after the retries ``attempts`` took."""

    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    attempts: int = 1

    def json(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None if it is not one."""
        try:
            data = json.loads(self.body.decode("utf-8", "replace"))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def text(self) -> str:
        """The body as text (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")


class NoAnswer(Exception):
    """No HTTP answer within the deadline: ``reason`` is the last OSError (TimeoutError
    when the deadline ran out). Never leaves :mod:`core.notify`."""

    def __init__(self, method: str, reason: BaseException, attempts: int) -> None:
        super().__init__(f"{method}: {reason}")
        self.method, self.reason, self.attempts = method, reason, attempts


def send(req: Outgoing, *, deadline: Deadline, log: logging.LoggerAdapter) -> Answer:  # type: ignore[type-arg]
    """Send ``req``, retrying as the module says while ``deadline`` allows.

    Returns the last answer, whatever its status (the caller reads Slack's verdict).
    Raises :class:`NoAnswer` when no answer came: connection errors after the
    retries, or the deadline reached. Side effects: the request(s), a wait between
    attempts, debug log lines through ``log`` (which must redact: URLs are secrets).
    """
    if not req.url.lower().startswith(("https://", "http://")):
        raise NoAnswer(req.method, ValueError(f"not an http(s) URL: {req.url}"), 0)
    host = urlsplit(req.url).netloc
    retries = dict.fromkeys(MAX_RETRIES, 0)
    attempt = 0
    while True:
        attempt += 1
        left = deadline.remaining()
        if left <= 0.05:
            raise NoAnswer(req.method, TimeoutError("deadline reached"), attempt - 1)
        log.debug("Sending a request - %s %s (attempt %d)", req.http_method, req.url, attempt)
        answer: Answer | None = None
        try:
            answer = _attempt(req, timeout=left, attempts=attempt)
        except (OSError, HTTPException) as exc:
            failure = _reason(exc)
            if isinstance(failure, TimeoutError):  # the timeout was the time left: it is over
                raise NoAnswer(req.method, failure, attempt) from None
            kind, wait, last = "connection", _BACKOFF_S * 2 ** retries["connection"], str(failure)
        else:
            log.debug(
                "Received the following response - status: %d, body: %.300s", answer.status, answer.text()
            )
            kind, wait = _retry_kind(answer, retries)
            if kind is None:
                return answer
            last = f"HTTP {answer.status}"
        if wait is None or retries[kind] >= MAX_RETRIES[kind] or deadline.remaining() < wait + MIN_ATTEMPT_S:
            if answer is not None:
                return answer
            raise NoAnswer(req.method, failure, attempt)
        retries[kind] += 1
        log.info("retrying %s at %s in %.1f s (%s)", req.method, host, wait, last)
        time.sleep(wait)


def _attempt(req: Outgoing, *, timeout: float, attempts: int) -> Answer:
    """One request; an HTTP error status is an answer, not an exception.

    Raises OSError (URLError, timeouts, refused) or http.client.HTTPException.
    """
    headers = {"User-Agent": _USER_AGENT, **req.headers}
    request = Request(req.url, data=req.body, headers=headers, method=req.http_method)
    try:
        with urlopen(request, timeout=timeout) as resp:  # noqa: S310 - scheme checked in send()
            return Answer(resp.status, _lower(resp.headers), resp.read(), attempts)
    except HTTPError as exc:
        with exc:
            return Answer(exc.code, _lower(exc.headers), exc.read(), attempts)


def _retry_kind(answer: Answer, retries: Mapping[str, int]) -> tuple[str | None, float | None]:
    """Whether ``answer`` is worth another attempt: (kind, wait) or (None, None).

    A wait of None means: retryable, but Slack's Retry-After could not be read.
    """
    if answer.status == 429:
        value = answer.headers.get("retry-after", "1").strip()
        return "rate_limited", float(value) if value.isdigit() else None
    if answer.status in RETRY_STATUSES:
        return "server_error", _BACKOFF_S * 2 ** retries["server_error"]
    return None, None


def _reason(exc: OSError | HTTPException) -> BaseException:
    """What went wrong underneath urllib's URLError (refused, timed out, DNS...)."""
    reason = exc.reason if isinstance(exc, URLError) else exc
    return reason if isinstance(reason, BaseException) else exc


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (headers.items() if headers else ())}
