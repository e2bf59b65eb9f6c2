"""A local fake of the Google Drive v3 endpoints the official client calls, for the tests.

Threaded HTTP server on loopback: the OAuth2 token endpoint (checks the service account's
RS256-signed JWT against its public key), resumable upload (``POST
/upload/drive/v3/files?uploadType=resumable`` answers a ``Location``; ``PUT`` of chunks
answers 308 with ``Range`` until the last one, then 200 with the file), ``files.list``
(the ``name = '…'`` and ``'<folder>' in parents`` terms of ``q``), ``files.get`` and
``files.delete``. Faults on demand: ``fail_uploads`` (a 503 on every upload request),
``corrupt_uploads`` (the stored bytes differ from those sent: the md5 check must catch it).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # google-auth's audience, whatever token_uri says


def service_account_info(token_uri: str) -> tuple[dict[str, str], bytes]:
    """(service-account key JSON with a fresh RSA key and ``token_uri``, the public key in PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = {"type": "service_account", "project_id": "test", "private_key_id": uuid.uuid4().hex,
            "private_key": pem, "client_email": "cleanup@test.iam.gserviceaccount.com", "client_id": "1",
            "token_uri": token_uri}
    return info, public


class FakeDrive:
    """The server and its files: ``files[id] = {"id", "name", "parents", "appProperties", "data", ...}``."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.tokens: set[str] = set()
        self.public_key: bytes = b""
        self.fail_uploads = False
        self.corrupt_uploads = False
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                fake.handle(self, "POST")

            def do_PUT(self) -> None:  # noqa: N802
                fake.handle(self, "PUT")

            def do_GET(self) -> None:  # noqa: N802
                fake.handle(self, "GET")

            def do_DELETE(self) -> None:  # noqa: N802
                fake.handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeDrive:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def credentials_json(self) -> str:
        info, self.public_key = service_account_info(self.url + "token")
        return json.dumps(info)

    def in_folder(self, folder: str) -> dict[str, dict[str, Any]]:
        """name -> file of the files in ``folder``."""
        with self.lock:
            return {f["name"]: f for f in self.files.values() if folder in f["parents"]}

    # -- the endpoints ---------------------------------------------------------------------------

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        self.requests.append((method, url.path))
        if url.path == "/token" and method == "POST":
            return self.token(h, body)
        if h.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return self.send(h, 401, {"error": {"code": 401, "message": "invalid credentials"}})
        if url.path == "/upload/drive/v3/files" and method == "POST":
            return self.start_upload(h, query, body)
        if url.path.startswith("/upload-session/") and method == "PUT":
            return self.put_chunk(h, url.path.rsplit("/", 1)[-1], body)
        if url.path == "/drive/v3/files" and method == "GET":
            return self.list(h, query)
        m = re.fullmatch(r"/drive/v3/files/([\w-]+)", url.path)
        if m and m.group(1) in self.files:
            if method == "DELETE":
                with self.lock:
                    del self.files[m.group(1)]
                return self.send(h, 204, None)
            if method == "GET":
                f = self.files[m.group(1)]
                if query.get("alt") == "media":
                    return self.send(h, 200, f["data"], ctype="application/octet-stream")
                return self.send(h, 200, self.meta(f))
        return self.send(h, 404, {"error": {"code": 404, "message": "File not found"}})

    def token(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        from google.auth import jwt

        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        try:
            claims = jwt.decode(form.get("assertion", ""), certs=self.public_key, audience=GOOGLE_TOKEN_AUDIENCE)
        except ValueError as exc:
            return self.send(h, 400, {"error": "invalid_grant", "error_description": str(exc)})
        if "drive" not in claims.get("scope", ""):
            return self.send(h, 400, {"error": "invalid_scope"})
        token = uuid.uuid4().hex
        self.tokens.add(token)
        self.send(h, 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    def start_upload(self, h: BaseHTTPRequestHandler, query: dict[str, str], body: bytes) -> None:
        if self.fail_uploads:
            return self.send(h, 503, {"error": {"code": 503, "message": "backend error"}})
        if query.get("uploadType") != "resumable" or query.get("supportsAllDrives") != "true":
            return self.send(h, 400, {"error": {"code": 400, "message": "resumable, all drives expected"}})
        sid = uuid.uuid4().hex
        self.sessions[sid] = {"meta": json.loads(body or b"{}"), "data": b""}
        host = h.headers.get("Host")
        self.send(h, 200, None, extra={"Location": f"http://{host}/upload-session/{sid}"})

    def put_chunk(self, h: BaseHTTPRequestHandler, sid: str, body: bytes) -> None:
        s = self.sessions.get(sid)
        if s is None or self.fail_uploads:
            return self.send(h, 503 if s else 404, {"error": {"code": 503, "message": "backend error"}})
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", h.headers.get("Content-Range", ""))
        if m is None:  # a status query: "bytes */total"
            return self.send(h, 308, None, extra={"Range": f"bytes=0-{len(s['data']) - 1}"} if s["data"] else {})
        start, total = int(m.group(1)), m.group(3)
        if start != len(s["data"]):
            return self.send(h, 400, {"error": {"code": 400, "message": "chunk out of order"}})
        s["data"] += body
        if total == "*" or len(s["data"]) < int(total):
            return self.send(h, 308, None, extra={"Range": f"bytes=0-{len(s['data']) - 1}"})
        data = s["data"] + (b"x" if self.corrupt_uploads else b"")
        meta = s["meta"]
        f = {"id": uuid.uuid4().hex[:20], "name": meta["name"], "parents": meta.get("parents", []),
             "appProperties": meta.get("appProperties", {}), "mimeType": meta.get("mimeType", "application/gzip"),
             "data": data}
        with self.lock:
            self.files[f["id"]] = f
        del self.sessions[sid]
        self.send(h, 200, self.meta(f))

    def list(self, h: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        q = query.get("q", "")
        names = re.findall(r"name\s*=\s*'((?:[^'\\]|\\.)*)'", q)
        parents = re.findall(r"'([^']+)'\s+in\s+parents", q)
        with self.lock:
            found = [f for f in self.files.values()
                     if all(p in f["parents"] for p in parents) and all(n == f["name"] for n in names)]
        self.send(h, 200, {"files": [self.meta(f) for f in found]})

    @staticmethod
    def meta(f: dict[str, Any]) -> dict[str, Any]:
        return {"id": f["id"], "name": f["name"], "parents": f["parents"], "appProperties": f["appProperties"],
                "size": str(len(f["data"])), "md5Checksum": hashlib.md5(f["data"]).hexdigest(),
                "mimeType": f["mimeType"]}

    @staticmethod
    def send(h: BaseHTTPRequestHandler, code: int, body: Any, *, ctype: str = "application/json",
             extra: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
        h.send_response(code)
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)
