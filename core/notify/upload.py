"""The one request slack_sdk has no public method for: POSTing a file's bytes to its upload URL.

``files.getUploadURLExternal`` hands out a URL on Slack's file server; the bytes go
there in a plain POST, which is not a Web API method (slack_sdk sends it only from
inside ``files_upload_v2``, through a private method). So this module sends that one
POST with urllib, and lets the report's slack_sdk retry handlers (:mod:`.retry`)
decide about retries through their public ``can_retry`` / ``prepare_for_next_attempt``,
the way WebClient consults them: same policy, same deadline, no second retry policy.
Proxies come from the environment (``HTTPS_PROXY``), as urllib reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from slack_sdk.http_retry import HttpRequest, HttpResponse, RetryHandler, RetryState

from .retry import NO_ANSWER_ERRORS, Deadline, reason_of

_USER_AGENT = "log-retention-console (urllib)"


@dataclass(frozen=True)
class Answer:
    """The file server's HTTP answer (any status) after the retries ``attempts`` took."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    attempts: int = 1


class NoAnswer(Exception):
    """No HTTP answer within the deadline: ``reason`` is the last error (TimeoutError
    when the deadline ran out). Never leaves :mod:`core.notify`."""

    def __init__(self, reason: BaseException, attempts: int) -> None:
        super().__init__(str(reason))
        self.reason, self.attempts = reason, attempts


def post_bytes(
    url: str, data: bytes, *, deadline: Deadline, handlers: Sequence[RetryHandler], log: logging.Logger
) -> Answer:
    """POST ``data`` to ``url``, retried as ``handlers`` decide, each attempt's timeout the time left.

    Returns the last answer, whatever its status. Raises :class:`NoAnswer` when no
    answer came (connection errors after the retries, or the deadline reached).
    Side effects: the request(s), waits between attempts, debug log lines through
    ``log`` (which must redact). The loop ends when no handler retries, which their
    ``max_retry_count`` bounds.
    """
    if not url.lower().startswith(("https://", "http://")):
        raise NoAnswer(ValueError("not an http(s) URL"), 0)
    request = HttpRequest(method="POST", url=url, headers={}, data=data)
    state = RetryState()
    while True:
        attempt = state.current_attempt + 1
        left = deadline.remaining()
        if left <= 0.05:
            raise NoAnswer(TimeoutError("deadline reached"), attempt - 1)
        log.debug("Sending a request - POST %s (%d bytes, attempt %d)", url, len(data), attempt)
        answer: Answer | None = None
        error: Exception | None = None
        response: HttpResponse | None = None
        try:
            answer = _attempt(url, data, timeout=left, attempts=attempt)
            response = HttpResponse(status_code=answer.status, headers=dict(answer.headers), data=answer.body)
            log.debug(
                "Received the following response - status: %d, body: %.300r", answer.status, answer.body
            )
        except NO_ANSWER_ERRORS as exc:
            error = exc
        retry = next(
            (
                h
                for h in handlers
                if h.can_retry(state=state, request=request, response=response, error=error)
            ),
            None,
        )
        if retry is None:
            if answer is not None:
                return answer
            raise NoAnswer(reason_of(error or TimeoutError()), attempt)
        retry.prepare_for_next_attempt(state=state, request=request, response=response, error=error)


def _attempt(url: str, data: bytes, *, timeout: float, attempts: int) -> Answer:
    """One POST; an HTTP error status is an answer, not an exception.

    Raises OSError (URLError, timeouts, refused) or http.client.HTTPException.
    """
    request = Request(url, data=data, headers={"User-Agent": _USER_AGENT}, method="POST")
    try:
        with urlopen(request, timeout=timeout) as resp:  # noqa: S310 - scheme checked in post_bytes()
            return Answer(resp.status, dict(resp.headers.items()), resp.read(), attempts)
    except HTTPError as exc:
        with exc:
            return Answer(exc.code, dict(exc.headers.items()) if exc.headers else {}, exc.read(), attempts)
