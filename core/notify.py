"""Slack reports of cleanup runs, through the Web API (bot token) or an incoming webhook.

Side effects: HTTP requests to Slack, reading the backup file to attach it, log lines.
Nothing here raises: Slack's ``"ok": false`` answers, exhausted retries and unexpected
errors all become a :class:`NotifyOutcome` whose ``detail`` tells the operator what to
fix. Tokens and webhook URLs are removed from every detail and log line (slack_sdk's too).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import HTTPSHandler, ProxyHandler, Request, build_opener, urlopen

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler, RetryHandler
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.web.file_upload_v2_result import FileUploadV2Result
from slack_sdk.webhook import WebhookClient

from . import slack_messages as messages
from .config import Settings
from .models import RunResult

log = logging.getLogger(__name__)
_sdk_log = logging.getLogger(__name__ + ".sdk")  # what slack_sdk logs, redacted

_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{6,}$")  # names are lower case, so never match
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_MIN_ATTEMPT_S = 0.5  # do not start a retry with less time than this left
_UPLOAD_ATTEMPTS = 3
_MAX_PAGES = 200  # conversations.list pages of 200 channels
_NOT_CONFIGURED = "Slack is not configured"

_channel_ids: dict[tuple[str, str, str], str] = {}
_channel_lock = threading.Lock()


@dataclass(frozen=True)
class NotifyOutcome:
    """What became of a report: ``sent``, ``skipped`` or ``failed``, with operator guidance."""

    status: str  # "sent" | "skipped" | "failed"
    detail: str | None = None


def notify_run(
    settings: Settings, result: RunResult, *, recovered: Sequence[RunResult] = ()
) -> NotifyOutcome:
    """Report a finished run to Slack; never raises.

    Posts the summary (and, with a bot token, the backup file in its thread);
    ``recovered`` are interrupted runs this run found and recovered. Dry runs send
    nothing; ``nothing_to_do`` is sent only if SLACK_NOTIFY_NOTHING_TO_DO is on
    (or interrupted runs were recovered). Side effects: HTTP requests, log lines.
    """
    secrets = messages.secrets_of(settings)
    try:
        if result.status == "dry_run":
            return NotifyOutcome("skipped", "dry run: no report is sent")
        if (
            result.status == "nothing_to_do"
            and not (recovered or result.recovered_runs)
            and not settings.slack_notify_nothing_to_do
        ):
            return NotifyOutcome("skipped", "nothing to do, and SLACK_NOTIFY_NOTHING_TO_DO is off")
        if not (settings.slack_bot_token or settings.slack_webhook_url):
            return NotifyOutcome("skipped", _NOT_CONFIGURED)
        kind, size = messages.backup_plan(result.backup_file, settings)
        note = messages.backup_note(kind, result.backup_file, size, settings.slack_upload_max_bytes)
        text, blocks = messages.run_summary(result, recovered=recovered, backup_size=size, note=note)
        report = _Report(settings)
        if settings.slack_bot_token:
            outcome = report.via_bot(text, blocks, upload=result.backup_file if kind == "upload" else None)
        else:
            outcome = report.via_webhook(text, blocks)
    except Exception as exc:  # the contract: a report never fails the cleanup
        outcome = _unexpected(exc, secrets)
    log.info("Slack report of run %s: %s%s", result.run_id, outcome.status, _suffix(outcome))
    return outcome


def send_test_message(settings: Settings) -> NotifyOutcome:
    """Post a short test message (no file) the way reports go; never raises.

    With a bot token the detail names the resolved channel, and warns when the
    token visibly lacks ``files:write``. Side effects: HTTP requests, log lines.
    """
    secrets = messages.secrets_of(settings)
    try:
        if not (settings.slack_bot_token or settings.slack_webhook_url):
            return NotifyOutcome("skipped", _NOT_CONFIGURED)
        report = _Report(settings)
        if settings.slack_bot_token:
            text, blocks = messages.setup_check_message(settings.table, report.label)
            outcome = report.via_bot(text, blocks, upload=None, check_scopes=True)
        else:
            text, blocks = messages.setup_check_message(settings.table, "this channel")
            outcome = report.via_webhook(text, blocks)
            if outcome.status == "sent":
                outcome = NotifyOutcome("sent", "test message posted through the incoming webhook")
    except Exception as exc:  # never raises: the dashboard and CLI show the detail
        outcome = _unexpected(exc, secrets)
    log.info("Slack test message: %s%s", outcome.status, _suffix(outcome))
    return outcome


def clear_channel_cache() -> None:
    """Forget channel name -> ID resolutions (tests; after changing SLACK_CHANNEL)."""
    with _channel_lock:
        _channel_ids.clear()


# ---------------------------------------------------------------------------


class _Failure(Exception):
    """A Slack step failed; ``detail`` is guidance, ``error`` Slack's code if any."""

    def __init__(self, detail: str, error: str | None = None) -> None:
        super().__init__(detail)
        self.detail, self.error = detail, error


class _Budget:
    """The time left for one report (SLACK_TIMEOUT_S); keeps the client's socket timeout within it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.client: WebClient | WebhookClient | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def arm(self) -> float:
        """Set the client's timeout to the time left and return it; _Failure if none is left."""
        left = self.remaining()
        if left <= 0.05:
            raise _Failure(f"gave up: Slack did not answer within SLACK_TIMEOUT_S ({self.seconds:g} s)")
        if self.client is not None:
            self.client.timeout = left  # type: ignore[assignment]  # urllib takes float seconds
        return left


class _Bounded(RetryHandler):
    """Mixin for slack_sdk retry handlers: retry only while the budget has room for it."""

    budget: _Budget

    def can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
        if not super().can_retry(state=state, request=request, response=response, error=error):
            return False
        wait = self._expected_wait(state.current_attempt, response)
        if self.budget.remaining() < wait + _MIN_ATTEMPT_S:
            log.warning("not retrying the Slack request: it would wait %.1f s, past SLACK_TIMEOUT_S", wait)
            return False
        log.info("retrying the Slack request (%s) in about %.1f s", type(self).__name__.strip("_"), wait)
        return True

    def prepare_for_next_attempt(
        self, *, state: Any, request: Any, response: Any = None, error: Any = None
    ) -> None:
        super().prepare_for_next_attempt(state=state, request=request, response=response, error=error)
        self.budget.arm()

    def _expected_wait(self, attempt: int, response: Any) -> float:
        calc = self.interval_calculator
        if isinstance(calc, BackoffRetryIntervalCalculator):
            return calc.backoff_factor * 2**attempt + 1.0  # RandomJitter adds under 1 s
        return 1.0


class _RateLimitRetry(_Bounded, RateLimitErrorRetryHandler):
    def _expected_wait(self, attempt: int, response: Any) -> float:
        for key, value in (response.headers if response is not None else {}).items():
            if key.lower() == "retry-after":
                try:
                    return int(value[0] if isinstance(value, list) else value) + 1.0
                except (TypeError, ValueError):
                    return float("inf")  # slack_sdk could not parse it either: do not retry
        return 2.0


class _ConnectionRetry(_Bounded, ConnectionErrorRetryHandler):
    """Connection refused / reset, within the budget."""


class _ServerRetry(_Bounded, ServerErrorRetryHandler):
    def _can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
        return response is not None and response.status_code in _RETRY_STATUSES


def _retry_handlers(budget: _Budget) -> list[RetryHandler]:
    handlers = [
        _RateLimitRetry(max_retry_count=3),
        _ConnectionRetry(max_retry_count=2),
        _ServerRetry(max_retry_count=2),
    ]
    for handler in handlers:
        handler.budget = budget
    return list(handlers)


class _ReportClient(WebClient):
    """WebClient whose raw upload POST (step 2 of files_upload_v2) is retried within the budget.

    slack_sdk 3.48 sends that POST once with plain urllib, outside its retry handlers;
    ``test_upload_post_is_retried_after_a_server_error`` notices if this hook stops applying.
    """

    def __init__(self, *args: Any, budget: _Budget, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._budget = budget

    def _upload_file(
        self, *, url: str, data: bytes, logger: Any, timeout: int, proxy: Any, ssl: Any
    ) -> FileUploadV2Result:
        return _post_upload(url, data, budget=self._budget, proxy=proxy, ssl=ssl)


def _post_upload(
    url: str, data: bytes, *, budget: _Budget, proxy: str | None, ssl: Any
) -> FileUploadV2Result:
    """POST the file bytes to the upload URL; retry 429 (Retry-After), 5xx and connection errors."""
    host = urlsplit(url).netloc
    if not url.lower().startswith(("https://", "http://")):
        raise _Failure("files_upload_v2: Slack returned an upload URL that is not http(s)")
    opener = (
        build_opener(ProxyHandler({"http": proxy, "https": proxy}), HTTPSHandler(context=ssl))
        if proxy
        else None
    )
    last, attempt = "", 0
    for attempt in range(1, _UPLOAD_ATTEMPTS + 1):
        timeout = budget.arm()
        wait = 0.5 * 2 ** (attempt - 1)
        req = Request(method="POST", url=url, data=data, headers={})
        try:
            resp = opener.open(req, timeout=timeout) if opener else urlopen(req, context=ssl, timeout=timeout)  # noqa: S310 - scheme checked above
            with resp:
                body = resp.read().decode("utf-8", "replace")
            log.debug("uploaded %d bytes to %s (attempt %d)", len(data), host, attempt)
            return FileUploadV2Result(status=resp.status, body=body)
        except HTTPError as exc:
            exc.close()
            if exc.code != 429 and exc.code not in _RETRY_STATUSES:
                raise _Failure(
                    f"files_upload_v2: Slack's file server {host} refused the upload: HTTP {exc.code}"
                ) from None
            last = f"HTTP {exc.code}"
            if exc.code == 429:
                retry_after = str(exc.headers.get("Retry-After", "1"))
                wait = float(retry_after) if retry_after.isdigit() else 1.0
        except (URLError, ConnectionError, TimeoutError) as exc:
            last = str(getattr(exc, "reason", exc))
        if budget.remaining() < wait + _MIN_ATTEMPT_S:
            break
        if attempt < _UPLOAD_ATTEMPTS:
            log.warning("upload of the backup to %s failed (%s); retrying in %.1f s", host, last, wait)
            time.sleep(wait)
    raise _Failure(
        f"files_upload_v2: the upload to Slack's file server {host} failed after {attempt} attempt(s): {last}"
    )


class _Report:
    """One report's delivery: budget, secrets to redact, channel label, Slack calls."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.budget = _Budget(settings.slack_timeout_s)
        self.secrets = messages.secrets_of(settings)
        self.sdk_logger = _RedactingLogger(_sdk_log, self.secrets)
        raw = settings.slack_channel.strip()
        self.label = raw if _CHANNEL_ID.match(raw) else "#" + raw.lstrip("#")

    @contextlib.contextmanager
    def step(self, method: str, where: str) -> Iterator[None]:
        """Run one Slack call; turn what it raises into _Failure with guidance."""
        self.budget.arm()
        try:
            yield
        except _Failure:
            raise
        except SlackApiError as exc:
            raise self.api_failure(method, exc.response) from None
        except (SlackClientError, OSError) as exc:  # URLError, timeouts, refused, SlackRequestError
            raise _Failure(
                messages.transport_guidance(method, where, exc, self.settings.slack_timeout_s)
            ) from None

    def api_failure(self, method: str, response: Any) -> _Failure:
        """Slack's ``ok: false`` (or an HTTP error after retries) as guidance."""
        data = response.data if isinstance(response.data, dict) else {}
        detail = messages.api_error_guidance(method, response, self.label, self.settings.slack_timeout_s)
        return _Failure(detail, str(data.get("error") or "") or None)

    def failed(self, detail: str) -> NotifyOutcome:
        return NotifyOutcome("failed", messages.redact(detail, self.secrets))

    def via_bot(
        self, text: str, blocks: messages.Blocks, *, upload: str | None, check_scopes: bool = False
    ) -> NotifyOutcome:
        """Post through the Web API, then attach ``upload`` in the message's thread."""
        s = self.settings
        where = urlsplit(s.slack_api_base_url).netloc or s.slack_api_base_url
        client = _ReportClient(
            token=s.slack_bot_token,
            base_url=s.slack_api_base_url,
            timeout=max(1, int(s.slack_timeout_s)),
            logger=self.sdk_logger,  # type: ignore[arg-type]  # a LoggerAdapter is enough
            retry_handlers=_retry_handlers(self.budget),
            budget=self.budget,
        )
        self.budget.client = client
        try:
            channel = self.resolve_channel(client, where)
            with self.step("chat.postMessage", where):
                posted = client.chat_postMessage(
                    channel=channel, text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
                )
        except _Failure as failure:
            if failure.error == "channel_not_found":
                self.forget_channel()
            return self.failed(failure.detail)
        ts = posted.get("ts")
        if upload is not None:
            name = os.path.basename(upload)
            try:
                with self.step("files_upload_v2", where):
                    client.files_upload_v2(
                        channel=channel, thread_ts=ts, file=upload, filename=name, title=name
                    )
            except _Failure as failure:
                with contextlib.suppress(_Failure):  # best effort: say so in the thread too
                    with self.step("chat.postMessage", where):
                        client.chat_postMessage(
                            channel=channel,
                            thread_ts=ts,
                            text=messages.upload_failed_reply(failure.detail, upload),
                        )
                return self.failed(
                    f"summary posted to {self.label}, but the backup was not attached: {failure.detail}"
                )
            log.info("attached %s to the report in %s", name, self.label)
        if not check_scopes:
            return NotifyOutcome("sent")
        scopes = {k.lower(): v for k, v in (posted.headers or {}).items()}.get("x-oauth-scopes")
        return NotifyOutcome("sent", messages.setup_check_detail(self.label, channel, scopes))

    def via_webhook(self, text: str, blocks: messages.Blocks) -> NotifyOutcome:
        """Post through the incoming webhook (no file)."""
        url = self.settings.slack_webhook_url or ""
        if not url.lower().startswith(("https://", "http://")):
            return self.failed("SLACK_WEBHOOK_URL is not an http(s) URL")
        where = urlsplit(url).hostname or "the webhook host"
        client = WebhookClient(
            url,
            timeout=max(1, int(self.settings.slack_timeout_s)),
            logger=self.sdk_logger,  # type: ignore[arg-type]
            retry_handlers=_retry_handlers(self.budget),
        )
        self.budget.client = client
        try:
            with self.step("webhook", where):
                resp = client.send(text=text, blocks=blocks, unfurl_links=False, unfurl_media=False)
        except _Failure as failure:
            return self.failed(failure.detail)
        if resp.status_code == 200:
            return NotifyOutcome("sent")
        body = (resp.body or "").strip()[:200]
        return self.failed(messages.webhook_guidance(resp.status_code, body))

    def cache_key(self) -> tuple[str, str, str]:
        token = (self.settings.slack_bot_token or "").strip()
        return (
            self.settings.slack_api_base_url,
            hashlib.sha256(token.encode()).hexdigest()[:16],
            self.settings.slack_channel.strip().lstrip("#").lower(),
        )

    def forget_channel(self) -> None:
        with _channel_lock:
            _channel_ids.pop(self.cache_key(), None)

    def resolve_channel(self, client: WebClient, where: str) -> str:
        """SLACK_CHANNEL as an ID: as is if it is one, else from conversations.list (cached per process)."""
        raw = self.settings.slack_channel.strip()
        if _CHANNEL_ID.match(raw):
            return raw
        key = self.cache_key()
        name = key[2]
        with _channel_lock:
            cached = _channel_ids.get(key)
        if cached:
            return cached
        cursor: str | None = None
        seen = 0
        for _ in range(_MAX_PAGES):
            with self.step("conversations.list", where):
                page = client.conversations_list(
                    types="public_channel,private_channel", exclude_archived=True, limit=200, cursor=cursor
                )
            for channel in page.get("channels") or []:
                seen += 1
                if channel.get("name") == name and channel.get("id"):
                    with _channel_lock:
                        _channel_ids[key] = channel["id"]
                    log.info("resolved Slack channel #%s to %s", name, channel["id"])
                    return str(channel["id"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        raise _Failure(messages.channel_not_listed(name, seen), "channel_not_found")


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Hands slack_sdk a logger that removes secrets; slack_sdk reads ``.level`` to decide on debug."""

    def __init__(self, logger: logging.Logger, secrets: Sequence[str]) -> None:
        super().__init__(logger, {})
        self.secrets = tuple(secrets)

    @property
    def level(self) -> int:
        return self.logger.getEffectiveLevel()

    def log(self, level: int, message: object, *args: object, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(message) % args if args else str(message)
            kwargs.pop("exc_info", None)  # tracebacks could carry a URL; the message is enough
            self.logger.log(level, "%s", messages.redact(text, self.secrets), **kwargs)


def _unexpected(exc: BaseException, secrets: Sequence[str]) -> NotifyOutcome:
    detail = messages.redact(
        f"unexpected error while reporting to Slack: {type(exc).__name__}: {exc}", secrets
    )
    log.error("%s", detail)
    log.debug("%s", messages.redact("".join(traceback.format_exception(exc)), secrets))
    return NotifyOutcome("failed", detail)


def _suffix(outcome: NotifyOutcome) -> str:
    return f" ({outcome.detail})" if outcome.detail else ""
