"""The one deadline of a report and slack_sdk's retry handlers kept within it.

Every request of a report (Web API calls through ``slack_sdk.WebClient``, the
webhook through ``slack_sdk.webhook.WebhookClient``, the upload POST in
:mod:`.upload`) is retried by the handlers :func:`retry_handlers` returns:
slack_sdk's own ``RateLimitErrorRetryHandler`` (HTTP 429, after ``Retry-After``),
``ServerErrorRetryHandler`` (HTTP 500/502/503/504) and ``ConnectionErrorRetryHandler``
(refused or reset connections), each wrapped in :class:`WithinDeadline`, which lets
a retry happen only when its wait and a useful attempt still fit before the
deadline. Only public slack_sdk API is used: ``RetryHandler.can_retry`` and
``prepare_for_next_attempt``, the constructors, the interval calculators.
"""

from __future__ import annotations

import logging
import time
from http.client import HTTPException
from urllib.error import URLError

from slack_sdk.http_retry import (
    BackoffRetryIntervalCalculator,
    ConnectionErrorRetryHandler,
    HttpRequest,
    HttpResponse,
    Jitter,
    RateLimitErrorRetryHandler,
    RetryHandler,
    RetryState,
)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler

RETRY_STATUSES = frozenset({500, 502, 503, 504})
MAX_RETRIES = {"rate_limited": 3, "server_error": 2, "connection": 2}  # a request's retries in all stay ≤ 3
MIN_ATTEMPT_S = 0.5  # do not start a retry with less time than this left after its wait
_BACKOFF_S = 0.5  # first wait after a server or connection error; doubles each time
_RATE_LIMIT_JITTER_S = 1.0  # RateLimitErrorRetryHandler adds up to 1 s to Retry-After


class Deadline:
    """The time left for one report (SLACK_TIMEOUT_S), shared by all its requests."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (negative once past the deadline)."""
        return self._end - time.monotonic()


class _NoJitter(Jitter):
    """Exact backoff waits, so that whether a wait fits before the deadline is known beforehand."""

    def recalculate(self, duration: float) -> float:
        return duration


class ServerErrors(ServerErrorRetryHandler):
    """slack_sdk's server-error handler, for 502 and 504 as well as its own 500 and 503."""

    def can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        """Whether another attempt is due: an HTTP 5xx answer in RETRY_STATUSES, retries left."""
        return (
            state.current_attempt < self.max_retry_count
            and response is not None
            and response.status_code in RETRY_STATUSES
        )


class WithinDeadline(RetryHandler):
    """``inner``'s retry decision, refused when the wait and one more attempt do not fit in ``deadline``.

    Side effects: ``prepare_for_next_attempt`` sleeps (``inner`` does) and logs the retry.
    """

    def __init__(self, inner: RetryHandler, deadline: Deadline, log: logging.Logger) -> None:
        super().__init__(inner.max_retry_count, inner.interval_calculator)
        self.inner, self.deadline, self.log = inner, deadline, log

    def can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        """``inner.can_retry``, unless the attempt timed out (its timeout was the time left) or the wait does not fit."""
        if error is not None and isinstance(reason_of(error), TimeoutError):
            return False
        if not self.inner.can_retry(state=state, request=request, response=response, error=error):
            return False
        wait = self.wait(state, response)
        return wait is not None and self.deadline.remaining() >= wait + MIN_ATTEMPT_S

    def wait(self, state: RetryState, response: HttpResponse | None) -> float | None:
        """The longest ``inner`` will sleep before the next attempt; None if Retry-After is unreadable."""
        if response is not None and response.status_code == 429:
            values = {k.lower(): v for k, v in response.headers.items()}.get("retry-after") or ["1"]
            value = str(values[0]).strip()
            return float(value) + _RATE_LIMIT_JITTER_S if value.isdigit() else None
        return self.inner.interval_calculator.calculate_sleep_duration(state.current_attempt)

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        """Log the retry, then let ``inner`` wait (and count the attempt)."""
        why = (
            f"HTTP {response.status_code}"
            if response is not None
            else str(reason_of(error) if error else "?")
        )
        self.log.info("retrying a request in %.1f s (%s)", self.wait(state, response) or 0.0, why)
        self.inner.prepare_for_next_attempt(state=state, request=request, response=response, error=error)


def retry_handlers(deadline: Deadline, log: logging.Logger) -> list[RetryHandler]:
    """The retry policy of one report, for WebClient, WebhookClient and the upload POST."""
    backoff = BackoffRetryIntervalCalculator(backoff_factor=_BACKOFF_S, jitter=_NoJitter())
    handlers: list[RetryHandler] = [
        RateLimitErrorRetryHandler(max_retry_count=MAX_RETRIES["rate_limited"]),
        ServerErrors(max_retry_count=MAX_RETRIES["server_error"], interval_calculator=backoff),
        ConnectionErrorRetryHandler(max_retry_count=MAX_RETRIES["connection"], interval_calculator=backoff),
    ]
    return [WithinDeadline(h, deadline, log) for h in handlers]


def reason_of(exc: BaseException) -> BaseException:
    """What went wrong underneath urllib's URLError (refused, timed out, DNS...)."""
    reason = exc.reason if isinstance(exc, URLError) else exc
    return reason if isinstance(reason, BaseException) else exc


NO_ANSWER_ERRORS = (OSError, HTTPException)  # what a request with no HTTP answer raises
