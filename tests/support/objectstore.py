"""A real S3 API on loopback for the tests: moto's standalone server, reached by boto3 over HTTP.

Moto does not check checksums, so the code under test compares bytes itself, and the
tests read objects back through their own client. :class:`FlakyProxy` sits in front of
the server and fails requests on demand (a store that breaks in the middle of a run).
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[str]:
    """A ThreadedMotoServer on a free loopback port; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")


def new_bucket(endpoint: str) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    client(endpoint).create_bucket(Bucket=name)
    return name


def keys(endpoint: str, bucket: str) -> list[str]:
    """Every object key in the bucket, sorted."""
    c = client(endpoint)
    out: list[str] = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


def open_uploads(endpoint: str, bucket: str) -> list[str]:
    return [u["Key"] for u in client(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


class FlakyProxy:
    """A TCP proxy to the store; ``fail_from(n)`` refuses every connection after the next ``n`` requests'
    connections (the store going away mid-run), ``heal()`` lets them through again."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.allowed: int | None = None
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_from(self, n: int) -> None:
        with self.lock:
            self.allowed = n

    def heal(self) -> None:
        with self.lock:
            self.allowed = None

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        """Per request (first bytes of each request on a kept-alive connection), decide to pass or cut."""
        try:
            up = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            conn.close()
            return

        def pump(src: socket.socket, dst: socket.socket, counting: bool) -> None:
            try:
                while data := src.recv(65536):
                    if counting and data[:4] in (b"GET ", b"PUT ", b"POST", b"HEAD", b"DELE"):
                        with self.lock:
                            if self.allowed is not None:
                                if self.allowed <= 0:
                                    raise OSError("refused")
                                self.allowed -= 1
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(up, conn, False), daemon=True).start()
        pump(conn, up, True)
        conn.close()
        up.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def stored_state(endpoint: str, bucket: str, workdir: Any) -> dict[str, Any]:
    """What the bucket holds, checked: every final object matches its manifest (sha256, rows), no batch object
    or open upload is left. Returns {"backups": {key: [row keys]}, "objects": [keys]}."""
    import hashlib
    import json
    from pathlib import Path

    from tests.support.invariants import fast_keys

    c = client(endpoint)
    objects = keys(endpoint, bucket)
    assert not [k for k in objects if ".parts/" in k], f"batch objects left: {objects}"
    assert not open_uploads(endpoint, bucket), "a multipart upload was left open"
    backups: dict[str, list[str]] = {}
    for k in objects:
        if not k.endswith(".csv.gz"):
            continue
        mkey = k[: -len(".csv.gz")] + ".manifest.json"
        assert mkey in objects, f"{k} has no manifest in the store"
        m = json.loads(c.get_object(Bucket=bucket, Key=mkey)["Body"].read())
        data = c.get_object(Bucket=bucket, Key=k)["Body"].read()
        assert hashlib.sha256(data).hexdigest() == m["sha256"], f"{k} does not match its manifest"
        local = Path(workdir) / ("dl-" + k.replace("/", "_"))
        local.write_bytes(data)
        backups[k] = fast_keys(local)
        assert len(backups[k]) == m["rows"], f"{k}: {len(backups[k])} rows, manifest says {m['rows']}"
        local.unlink()
    return {"backups": backups, "objects": objects}
