"""Attacks on the real server (``streamlit run server.py`` on loopback) and on the guard's parts.

Each test sends what an attacker would send and asserts the refusal, then sends what
the operator would send and asserts that it still works:

- DNS rebinding: a page of ``rebind.attacker.example`` whose name now resolves to
  127.0.0.1 reaches the server with its own ``Host`` and ``Origin``;
- cross-site websocket hijacking: a foreign ``Origin`` on ``/_stcore/stream``;
- guessing the trigger token from one address and from many (16 threads);
- guessing the dashboard password (AppTest, in-process, the limiter swapped for a fast one);
- a download link replayed after sign-out or after its session closed (Chromium).

Requests go through ``http.client`` so the Host header and the source address
(127.0.0.N, all loopback on Linux) are the attacker's to choose.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from core import demo_data, load_settings, run_cleanup
from core.config import Settings
from tests.support import ROOT
from tests.support.processes import CHROMIUM, launch_console, need_chromium
from ui import downloads
from web import guard
from web.guard import FailureLimiter, HostPolicy, host_name, is_loopback, trusted_hosts

TOKEN = "guard-test-token-" + uuid.uuid4().hex  # at least 16 characters
PASSWORD = "guard-test-password-" + uuid.uuid4().hex[:8]  # at least 12
REBIND = "rebind.attacker.example"
TRUSTED = "console.internal.example"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


# ---------------------------------------------------------------------------
# The server and raw HTTP


class Server:
    def __init__(self, base: str, proc: subprocess.Popen, log_path: Path) -> None:
        self.base, self.proc, self.log_path = base, proc, log_path
        self.port = urlsplit(base).port or 80

    @property
    def here(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, *, host: str | None = None, source: str = "127.0.0.1",
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request with this ``Host`` (default: the server's own) from this loopback source address."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30, source_address=(source, 0))
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self.here if host is None else host)
            for key, value in (headers or {}).items():
                conn.putheader(key, value)
            conn.endheaders()
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def websocket(self, *, host: str | None = None, origin: str | None = None) -> int:
        """The status of a websocket upgrade of ``/_stcore/stream`` (101: the session opens)."""
        lines = ["GET /_stcore/stream HTTP/1.1", f"Host: {host or self.here}", "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
        if origin:
            lines.append(f"Origin: {origin}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = s.recv(4096).split(b"\r\n", 1)[0]
        return int(head.split()[1])


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment minus every console setting, plus the test database and ``extra``."""
    drop = ("SLACK_", "DATABASE_", "LOG_", "BACKUP_", "CLEANUP_", "DASHBOARD_", "STREAMLIT_", "TRUSTED_", "LRC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(PYTHONPATH=str(ROOT), DATABASE_URL=settings.database_url, BACKUP_DIR=settings.backup_dir, **extra)
    return env


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _demo(folder: Path) -> tuple[Settings, Path]:
    """A SQLite demo database with one backup (its path returned)."""
    settings = load_settings({"database_url": f"sqlite:///{folder / 'guard.db'}", "backup_dir": str(folder / "backups"),
                              "batch_size": 100}, environ={}, env_file=None)
    demo_data(settings, rows=600, days=90, seed=5)
    result = run_cleanup(settings, retention_days=45, trigger="test", notify=False)
    return settings, Path(result.backup_file)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    return _demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    procs: list[subprocess.Popen] = []

    def run(env: dict[str, str]) -> Server:
        home = tmp_path / f"server{len(procs)}"
        home.mkdir()
        base, proc, log_path = launch_console(home, env)
        procs.append(proc)
        return Server(base, proc, log_path)

    yield run
    for proc in procs:
        _stop(proc)


@pytest.fixture(scope="module")
def open_server(demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No login, listening on 127.0.0.1 (the localhost default), one trusted proxy name."""
    settings, _ = demo
    home = tmp_path_factory.mktemp("open-server")
    base, proc, log_path = launch_console(home, _env(settings, CLEANUP_TRIGGER_TOKEN=TOKEN, TRUSTED_HOSTS=TRUSTED))
    yield Server(base, proc, log_path)
    _stop(proc)




# ---------------------------------------------------------------------------
# DNS rebinding and cross-origin websockets


def test_without_a_login_a_rebinding_host_gets_403_on_every_route_and_loopback_names_are_served(open_server):
    s = open_server
    for path in ("/", "/backups", "/_stcore/health", "/_stcore/host-config", "/runs/no-such-run",
                 "/backup-download?name=x.csv.gz&kind=backup&expires=1&grant=g&sig=s"):
        status, headers, body = s.request("GET", path, host=f"{REBIND}:{s.port}")
        assert status == 403, path
        assert b"does not answer to this host name" in body and headers["cache-control"] == "no-store"
    # a same-looking name, a userinfo trick, no port: still foreign
    for host in (f"{TRUSTED}.{REBIND}", f"localhost.{REBIND}", f"127.0.0.1@{REBIND}", REBIND, ""):
        assert s.request("GET", "/", host=host)[0] == 403, host
    # a request with the right Host but sent by a foreign page
    assert s.request("GET", "/", headers={"Origin": f"http://{REBIND}:{s.port}"})[0] == 403
    assert s.request("GET", "/", headers={"Origin": "null"})[0] == 403

    # the legitimate names: loopback in any spelling, any port, and the trusted proxy name
    for host in (s.here, f"localhost:{s.port}", "localhost", f"[::1]:{s.port}", "127.8.9.10:1", TRUSTED,
                 f"{TRUSTED.upper()}:443"):
        status, headers, body = s.request("GET", "/", host=host)
        assert status == 200 and b'<div id="root">' in body, host
    assert s.request("GET", "/", headers={"Origin": f"http://localhost:{s.port}"})[0] == 200
    assert s.request("GET", "/", host=TRUSTED, headers={"Origin": f"https://{TRUSTED}"})[0] == 200
    # the trigger answers its own token on loopback (404: no such run, but authenticated)
    status, _, body = s.request("GET", "/runs/no-such-run", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 404 and json.loads(body) == {"error": "no run with this id"}
    # /healthz reveals nothing and host health checks send any Host
    assert s.request("GET", "/healthz", host=f"{REBIND}:{s.port}")[:1] == (200,)
    assert "host not allowed without a login (Host 'rebind.attacker.example" in s.log()


def test_without_a_login_a_rebinding_websocket_gets_403_and_a_loopback_one_opens(open_server):
    s = open_server
    rebind = f"{REBIND}:{s.port}"
    assert s.websocket(host=rebind, origin=f"http://{rebind}") == 403
    assert s.websocket(host=rebind) == 403
    assert s.websocket(origin=f"http://{rebind}") == 403  # our Host, a foreign page
    assert s.websocket(host=TRUSTED, origin=f"http://{rebind}") == 403

    assert s.websocket() == 101
    assert s.websocket(origin=f"http://{s.here}") == 101
    assert s.websocket(host=f"localhost:{s.port}", origin=f"http://localhost:{s.port}") == 101
    assert s.websocket(host=TRUSTED, origin=f"https://{TRUSTED}") == 101
    assert "refused websocket /_stcore/stream" in s.log()


def test_with_a_password_any_host_gets_the_sign_in_page_but_a_foreign_origin_websocket_is_refused(start, demo):
    settings, _ = demo
    s = start(_env(settings, DASHBOARD_PASSWORD=PASSWORD))
    # the password guards the data: the shell page answers any name (a hosted console's own)
    assert s.request("GET", "/", host="console.example.com")[0] == 200
    assert s.websocket(host="console.example.com", origin="https://console.example.com") == 101
    assert s.websocket() == 101 and s.websocket(origin=f"http://{s.here}") == 101
    # a page of another site opening the operator's websocket (it would carry an OIDC cookie)
    assert s.websocket(origin="https://evil.example") == 403
    assert s.websocket(host="console.example.com", origin="https://evil.example") == 403


# ---------------------------------------------------------------------------
# Guessing the trigger token


def _parallel(n: int, call: Callable[[int], tuple[int, dict[str, str], bytes]]) -> list[tuple[int, dict, bytes]]:
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        barrier.wait()
        results[i] = call(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _assert_429(status: int, headers: dict[str, str], body: bytes, window_s: float) -> float:
    assert status == 429
    retry = int(headers["retry-after"])
    assert 1 <= retry <= window_s
    payload = json.loads(body)
    assert payload["retry_after_s"] == retry and "too many failed attempts" in payload["error"]
    return retry


def test_parallel_guessing_from_one_address_is_locked_out_then_the_token_works_again(start, demo):
    settings, _ = demo
    window = 4
    s = start(_env(settings, CLEANUP_TRIGGER_TOKEN=TOKEN, LRC_GUARD_WINDOW_S=str(window), LRC_GUARD_CLIENT_LIMIT="5",
                   LRC_GUARD_GLOBAL_LIMIT="1000"))
    guesses = [f"guess-{i:02d}-" + uuid.uuid4().hex for i in range(32)]

    def guess(i: int) -> tuple[int, dict[str, str], bytes]:
        return s.request("POST", "/run-cleanup", headers={"Authorization": f"Bearer {guesses[i]}"})

    results = _parallel(16, guess) + _parallel(16, lambda i: guess(16 + i))
    statuses = [r[0] for r in results]
    assert statuses.count(401) == 4 and statuses.count(429) == 28, statuses  # the 5th failure locks out
    retry = max(_assert_429(*r, window) for r in results if r[0] == 429)

    # locked out: even the right token is refused before it is compared
    status, headers, body = s.request("POST", "/run-cleanup", headers={"Authorization": f"Bearer {TOKEN}"})
    retry = _assert_429(status, headers, body, window)
    log = s.log()
    assert "HTTP trigger token: client 127.0.0.1 locked out" in log
    assert log.count("HTTP trigger token: failed attempt from 127.0.0.1") >= 5
    assert not any(g in log for g in guesses) and TOKEN not in log

    time.sleep(retry + 0.5)  # the attack stopped; the lockout ends within the window
    status, _, body = s.request("POST", "/run-cleanup", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 202, body
    run_id = json.loads(body)["run_id"]
    deadline = time.monotonic() + 60
    while json.loads(s.request("GET", f"/runs/{run_id}", headers={"Authorization": f"Bearer {TOKEN}"})[2])[
            "status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_guessing_from_many_addresses_hits_the_global_cap_and_a_right_token_does_not_lift_it(start, demo):
    settings, _ = demo
    window = 4
    s = start(_env(settings, CLEANUP_TRIGGER_TOKEN=TOKEN, LRC_GUARD_WINDOW_S=str(window), LRC_GUARD_CLIENT_LIMIT="3",
                   LRC_GUARD_GLOBAL_LIMIT="10"))

    def guess(i: int) -> tuple[int, dict[str, str], bytes]:  # one guess from each of 16 addresses
        return s.request("GET", "/runs/x", source=f"127.0.0.{20 + i}", headers={"Authorization": "Bearer wrong-guess"})

    results = _parallel(16, guess)
    statuses = [r[0] for r in results]
    assert statuses.count(401) + statuses.count(429) == 16 and statuses.count(401) <= 9, statuses
    for r in results:
        if r[0] == 429:
            _assert_429(*r, window)
    assert "10 failures in 4 s from all clients: everyone is locked out" in s.log()

    # a new address with the right token: refused too (the cap is global), and its success lifts nothing
    fresh = "127.0.0.99"
    retry = _assert_429(*s.request("GET", "/runs/x", source=fresh, headers={"Authorization": f"Bearer {TOKEN}"}),
                        window)
    assert s.request("GET", "/runs/x", source="127.0.0.20", headers={"Authorization": "Bearer x"})[0] == 429

    time.sleep(retry + 0.5)
    status, _, body = s.request("GET", "/runs/x", source=fresh, headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 404 and json.loads(body) == {"error": "no run with this id"}  # authenticated


# ---------------------------------------------------------------------------
# The limiter and the policy, in-process


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_locks_an_address_out_with_a_growing_delay_capped_at_the_window():
    clock = Clock()
    lim = FailureLimiter(window_s=300, client_limit=5, global_limit=50, lockout_s=60, clock=clock)
    assert [lim.failure("a", "test") for _ in range(4)] == [0, 0, 0, 0]
    assert lim.failure("a", "test") == 60  # the 5th failure
    assert lim.retry_after("a") == 60 and lim.retry_after("b") == 0  # others are not affected
    clock.now += 60
    assert lim.retry_after("a") == 0
    assert [lim.failure("a", "test") > 0 for _ in range(5)] == [False] * 4 + [True]
    assert lim.retry_after("a") == 120  # second lockout: doubled
    for expected in (240, 300):
        clock.now += lim.retry_after("a") - 1
        assert lim.retry_after("a") == 1
        clock.now += 1  # back as soon as the lockout ends
        for _ in range(5):
            lim.failure("a", "test")
        assert lim.retry_after("a") == expected  # doubled again, never longer than the window
    clock.now += 300
    assert lim.retry_after("a") == 0  # the attack stopped a window ago: all forgotten
    assert lim.failure("a", "test") == 0


def test_limiter_global_cap_blocks_everyone_and_a_success_clears_only_its_own_client():
    clock = Clock()
    lim = FailureLimiter(window_s=300, client_limit=5, global_limit=10, lockout_s=60, clock=clock)
    for _ in range(3):
        lim.failure("me", "test")
        clock.now += 1
    lim.success("me")  # my right password clears my failures ...
    assert lim.failure("me", "test") == 0  # ... (a fresh count: this is my first)
    for i in range(6):
        clock.now += 1
        lim.failure(f"bot{i}", "test")
    assert lim.retry_after("anyone") == pytest.approx(300 - 9)  # 10 failures: until the oldest is a window old
    lim.success("me")
    assert lim.retry_after("me") > 0  # ... but not the global count
    clock.now += 300 - 9
    assert lim.retry_after("anyone") == 0 and lim.retry_after("me") == 0


def test_limiter_is_thread_safe():
    lim = FailureLimiter(window_s=300, client_limit=10**6, global_limit=10**6)
    threads = [threading.Thread(target=lambda: [lim.failure("x", "test") for _ in range(200)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lim._all) == 1600 and len(lim._clients["x"].failures) == 1600


def test_host_names_loopback_and_trusted_hosts_parse_strictly():
    assert host_name("LocalHost.:8501") == "localhost" and host_name("[::1]:80") == "::1"
    assert host_name("a@b") is None and host_name("x:notaport") is None and host_name("") is None
    assert all(is_loopback(n) for n in ("localhost", "127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"))
    assert not any(is_loopback(n) for n in ("localhost.evil.example", "0.0.0.0", "10.0.0.1", "", None))
    env = {"TRUSTED_HOSTS": " Console.Example.com:443, ,other.example ,not a host"}
    assert trusted_hosts(env) == {"console.example.com", "other.example"}
    assert trusted_hosts({}) == frozenset()


def test_policy_exempts_the_token_routes_only_when_the_server_listens_beyond_loopback():
    def scope(path: str) -> dict:
        return {"type": "http", "path": path, "headers": [(b"host", b"console.example.com")]}

    hosted = HostPolicy(login=False, listens_on_loopback=False)
    local = HostPolicy(login=False, listens_on_loopback=True)
    assert hosted.refusal(scope("/run-cleanup")) is None and hosted.refusal(scope("/runs/abc")) is None
    assert hosted.refusal(scope("/")) and hosted.refusal(scope("/backup-download"))
    assert local.refusal(scope("/run-cleanup")) and local.refusal(scope("/healthz")) is None


# ---------------------------------------------------------------------------
# The dashboard's password limiter (AppTest)


def test_a_locked_out_session_sees_the_wait_and_the_right_password_works_after_it(tmp_path, monkeypatch):
    settings, _ = _demo(tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in ("CLEANUP_TRIGGER_TOKEN", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "LOG_TABLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BACKUP_DIR", settings.backup_dir)
    monkeypatch.setenv("DASHBOARD_PASSWORD", PASSWORD)
    monkeypatch.setattr(guard, "limiter", FailureLimiter(window_s=3, client_limit=3, global_limit=100, lockout_s=2))

    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()

    def sign_in(password: str) -> None:
        at.text_input(key="login_password").input(password)
        at.button(key="sign_in_button").click().run()

    for _ in range(2):
        sign_in("wrong password 123")
        assert [e.value for e in at.error] == ["Sign-in failed."]
    sign_in("wrong password 123")
    assert [e.value for e in at.error] == ["Too many failed sign-ins. Try again in 2 s."]
    sign_in(PASSWORD)  # not even compared while locked out
    assert [e.value for e in at.error] == ["Too many failed sign-ins. Try again in 2 s."] and not at.metric

    time.sleep(2.2)
    sign_in(PASSWORD)
    assert not at.error and any(m.label == "Total rows" for m in at.metric)


# ---------------------------------------------------------------------------
# Download links (Chromium on the real server)


def _download_link(page) -> tuple[str, str]:
    """The Backups page's "Download backup" link and the file it names (opened through the sidebar)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Backups").click()
    link = page.get_by_role("link", name="Download backup")
    link.wait_for()
    href = link.get_attribute("href")
    assert href and href.startswith("/backup-download?") and "grant=" in href
    return href, parse_qs(urlsplit(href).query)["name"][0]


def test_a_download_link_is_refused_to_a_rebinding_host_and_dies_with_its_session(open_server, demo):
    need_chromium()
    from playwright.sync_api import sync_playwright

    s, (settings, _) = open_server, demo
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(s.base)
            href, name = _download_link(page)
            backup = Path(settings.backup_dir) / name
            status, _, body = s.request("GET", href, host=f"{REBIND}:{s.port}")
            assert status == 403 and b"host name" in body  # the rebinding page
            status, headers, body = s.request("GET", href)  # the operator
            assert status == 200 and body == backup.read_bytes()
            assert headers["cache-control"] == "no-store"
            forged = href.replace("grant=", "grant=x")
            assert s.request("GET", forged)[0] == 403
            page.close()  # the session ends: its links die with it
            deadline = time.monotonic() + 20
            while s.request("GET", href)[0] != 403:
                assert time.monotonic() < deadline, "the link still works after its session closed"
                time.sleep(0.5)
        finally:
            browser.close()


def test_a_download_link_is_refused_after_sign_out(start, demo):
    need_chromium()
    from playwright.sync_api import sync_playwright

    settings, _ = demo
    s = start(_env(settings, DASHBOARD_PASSWORD=PASSWORD))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(s.base)
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("button", name="Sign out").wait_for()
            href, name = _download_link(page)
            status, _, body = s.request("GET", href)
            assert status == 200 and body == (Path(settings.backup_dir) / name).read_bytes()  # signed in: the link works
            page.get_by_role("button", name="Sign out").click()
            page.get_by_label("Password", exact=True).wait_for()
            status, _, body = s.request("GET", href)
            assert status == 403 and b"This download link has expired" in body
        finally:
            browser.close()


def test_link_signatures_cover_the_grant_and_a_revoked_grant_is_dead(monkeypatch):
    monkeypatch.setattr(guard, "grants", guard.SessionGrants(is_live_session=lambda sid: sid == "live"))
    expires = int(time.time()) + 60
    mine, ended = guard.grants.issue("live"), guard.grants.issue("gone")
    sig = downloads.sign("b.csv.gz", "backup", expires, mine)
    assert downloads.check("b.csv.gz", "backup", str(expires), sig, mine)
    assert not downloads.check("b.csv.gz", "backup", str(expires), sig, ended)  # another grant
    assert not downloads.check("b.csv.gz", "backup", str(expires), downloads.sign("b.csv.gz", "backup", expires,
                                                                                  ended), ended)  # session over
    guard.grants.revoke(mine)
    assert not downloads.check("b.csv.gz", "backup", str(expires), sig, mine)
    assert downloads.LINK_TTL_S == 300
