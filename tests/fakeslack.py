"""A local fake of the Slack Web API, its file-upload host and an incoming webhook.

Plain ``http.server`` on 127.0.0.1 in a background thread, started and stopped by
the tests. It implements what ``core.notify`` calls over HTTP
(``conversations.list`` with cursor pagination, ``chat.postMessage``,
``files.getUploadURLExternal``, the upload URL it hands out, which points back at
this server, ``files.completeUploadExternal``) and one webhook URL, records every
request, and can be scripted to answer with errors, 429s, 5xx or to stall.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TOKEN = "xoxb-1111111111-2222222222-FAKEtokenFAKEtokenFAKE"
WEBHOOK_PATH = "/services/T0FAKE000/B0FAKE000/fakeWebhookSecret0123456789"
ALL_SCOPES = "chat:write,files:write,channels:read,groups:read"


@dataclass
class Reply:
    """A scripted answer: JSON (``data``) or raw ``body``, after an optional ``stall``."""

    status: int = 200
    data: dict[str, Any] | None = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0

    @classmethod
    def error(cls, code: str, **extra: Any) -> Reply:
        """Slack's way of failing: HTTP 200 with ``"ok": false``."""
        return cls(data={"ok": False, "error": code, **extra})


@dataclass
class Received:
    """One request as the server received it."""

    method: str  # API method ("chat.postMessage"), "upload" or "webhook"
    http_method: str
    path: str
    params: dict[str, Any]  # query string, form body and JSON body merged
    json: Any
    body: bytes
    headers: dict[str, str]
    reply: Reply | None = None  # what the server answered


def closed_port() -> int:
    """A local port with nothing listening: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_channels() -> list[dict[str, Any]]:
    """Five channels, so that with page_size=2 ``ai-reports`` is on the third page."""
    return [
        {"id": "C0GENERAL1", "name": "general", "is_private": False, "is_member": True},
        {"id": "C0RANDOM01", "name": "random", "is_private": False, "is_member": True},
        {"id": "G0PRIVATE1", "name": "ops-private", "is_private": True, "is_member": True},
        {"id": "C0OTHER001", "name": "other", "is_private": False, "is_member": False},
        {"id": "C0AIREPORT", "name": "ai-reports", "is_private": False, "is_member": True},
    ]


class FakeSlack:
    """The fake server. Use as a context manager or call start() / stop()."""

    def __init__(self, *, token: str = TOKEN, page_size: int = 2) -> None:
        self.token = token
        self.page_size = page_size
        self.channels = default_channels()
        self.scopes = ALL_SCOPES
        self.received: list[Received] = []
        self.uploads: dict[str, bytes] = {}
        self.pending_files: dict[str, dict[str, Any]] = {}
        self._scripts: dict[str, deque[Reply]] = {}
        self._always: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------
    def start(self) -> FakeSlack:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # releases stalled handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base(self) -> str:
        assert self._server is not None, "start() the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.base + "/api/"

    @property
    def webhook_url(self) -> str:
        return self.base + WEBHOOK_PATH

    # -- scripting and inspection ----------------------------------------
    def script(self, method: str, *replies: Reply) -> None:
        """Answer the next calls of ``method`` with ``replies``, in order, then normally."""
        with self._lock:
            self._scripts.setdefault(method, deque()).extend(replies)

    def always(self, method: str, reply: Reply) -> None:
        """Answer every call of ``method`` with ``reply``."""
        with self._lock:
            self._always[method] = reply

    def calls(self, method: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.method == method]

    def _next_reply(self, method: str) -> Reply | None:
        with self._lock:
            queue = self._scripts.get(method)
            if queue:
                return queue.popleft()
            return self._always.get(method)

    # -- default behaviour -------------------------------------------------
    def _by_id_or_name(self, value: str) -> dict[str, Any] | None:
        wanted = value.lstrip("#")
        return next((c for c in self.channels if wanted in (c["id"], c["name"])), None)

    def answer(self, req: Received) -> Reply:
        """What real Slack would say to ``req`` (when nothing is scripted)."""
        if req.method == "webhook":
            return Reply(body="ok")
        if req.method == "upload":
            file_id = req.path.rsplit("/", 1)[-1]
            if file_id not in self.pending_files:
                return Reply(status=404, body="unknown upload")
            self.uploads[file_id] = req.body
            return Reply(body=f"OK - {len(req.body)}")
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return Reply.error("invalid_auth" if "authorization" in req.headers else "not_authed")
        handler = getattr(self, "_api_" + req.method.replace(".", "_"), None)
        return handler(req.params) if handler else Reply.error("unknown_method")

    def _api_conversations_list(self, p: dict[str, Any]) -> Reply:
        types = set(str(p.get("types", "public_channel")).split(","))
        visible = [
            c for c in self.channels if ("private_channel" if c["is_private"] else "public_channel") in types
        ]
        start = int(p.get("cursor") or 0)
        limit = min(int(p.get("limit") or 100), self.page_size)
        page = visible[start : start + limit]
        next_cursor = str(start + limit) if start + limit < len(visible) else ""
        return Reply(data={"ok": True, "channels": page, "response_metadata": {"next_cursor": next_cursor}})

    def _api_chat_postMessage(self, p: dict[str, Any]) -> Reply:
        channel = self._by_id_or_name(str(p.get("channel", "")))
        if channel is None:
            return Reply.error("channel_not_found")
        if not channel["is_member"]:
            return Reply.error("not_in_channel")
        ts = f"{int(time.time())}.{next(self._ids):06d}"
        return Reply(
            data={"ok": True, "channel": channel["id"], "ts": ts, "message": {"text": p.get("text")}}
        )

    def _api_files_getUploadURLExternal(self, p: dict[str, Any]) -> Reply:
        if not p.get("filename") or not str(p.get("length", "")).isdigit():
            return Reply.error("invalid_arguments")
        file_id = f"F{next(self._ids):08d}"
        self.pending_files[file_id] = {"filename": p["filename"], "length": int(p["length"])}
        return Reply(data={"ok": True, "file_id": file_id, "upload_url": f"{self.base}/upload/v1/{file_id}"})

    def _api_files_completeUploadExternal(self, p: dict[str, Any]) -> Reply:
        files = json.loads(p.get("files") or "[]")
        channel_id = p.get("channel_id")
        if channel_id and not any(c["id"] == channel_id for c in self.channels):
            return Reply.error("channel_not_found")  # the real API takes IDs only
        out = []
        for f in files:
            if f.get("id") not in self.uploads:
                return Reply.error("file_not_found")
            out.append(
                {"id": f["id"], "title": f.get("title"), "name": self.pending_files[f["id"]]["filename"]}
            )
        return Reply(data={"ok": True, "files": out})


def _handler_for(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep logs quiet
            return

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            params: dict[str, Any] = dict(parse_qsl(url.query))
            payload: Any = None
            ctype = headers.get("content-type", "")
            if url.path.startswith("/api/"):
                method = url.path[len("/api/") :]
                if ctype.startswith("application/json") and body:
                    payload = json.loads(body)
                    params.update(payload)
                elif body:
                    params.update(parse_qsl(body.decode()))
            elif url.path.startswith("/upload/"):
                method = "upload"
            elif url.path == WEBHOOK_PATH:
                method = "webhook"
                payload = json.loads(body) if body else None
            else:
                method = "unknown"
            req = Received(method, self.command, url.path, params, payload, body, headers)
            with fake._lock:
                fake.received.append(req)
            reply = fake._next_reply(method) or (
                fake.answer(req) if method != "unknown" else Reply(404, body="no")
            )
            req.reply = reply
            if reply.stall:
                fake._stop.wait(reply.stall)
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            if reply.data is not None:
                raw, ctype = json.dumps(reply.data).encode(), "application/json; charset=utf-8"
            else:
                raw, ctype = (reply.body or "").encode(), "text/plain; charset=utf-8"
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(raw)))
                self.send_header("X-OAuth-Scopes", fake.scopes)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)
            except OSError:
                pass  # the client gave up (timeout test)

    return Handler
