"""The HTTP trigger over real HTTP, served with the dashboard by ``streamlit run server.py``.

Each test starts the real server as a subprocess on a free port, the way the README
starts it, and talks to it with ``requests``. The server runs in a fresh folder with
its own secrets path, so a developer's ``.env`` or ``.streamlit/secrets.toml`` (which
could name a real database) never reaches it. Also here: the scheduling files
(workflows, render.yaml, Dockerfile), parsed, and the workflows' shell steps run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from sqlalchemy.engine import make_url
from starlette.requests import Request

import core
from core.config import ENV_NAMES, SECRET_FIELDS, Settings, load_settings
from core.db import SqliteFileLock, lock_key, pg_try_lock
from core.demo import demo_data
from core.models import Trigger
from core.runs import TrackedRun
from tests.support import ROOT
from tests.support.processes import launch_console
from web.trigger import bearer_token, token_matches

TOKEN = "trigger-test-" + uuid.uuid4().hex
SPEC_RUN_KEYS = {"run_id", "status", "cutoff", "rows_archived", "rows_deleted", "backup_file", "manifest_file",
                 "sha256", "notification", "duration_s"}
WORKFLOWS = ROOT / ".github" / "workflows"


# ---------------------------------------------------------------------------
# The server


@dataclass
class Server:
    base: str
    proc: subprocess.Popen
    log_path: Path

    def call(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_run(self, run_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.call("GET", f"/runs/{run_id}", TOKEN)
            assert r.status_code == 200, r.text
            body = r.json()
            if body["status"] != "running" and body.get("notification") != "pending":
                return body
            assert time.monotonic() < deadline, f"run {run_id} still {body['status']}\n{self.log()}"
            time.sleep(0.2)


def _server_env(**settings_env: str) -> dict[str, str]:
    """This process's environment minus every console setting, plus ``settings_env``."""
    drop = ("SLACK_", "DATABASE_", "LOG_", "BACKUP_", "CLEANUP_", "DASHBOARD_", "STREAMLIT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(PYTHONPATH=str(ROOT), **settings_env)
    return env


def _settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    return _server_env(DATABASE_URL=settings.database_url, BACKUP_DIR=settings.backup_dir, **extra)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``start(env)`` runs ``streamlit run server.py`` and waits for /healthz; all are stopped after.

    The server's only secrets file is ``secrets_toml`` (never the checkout's).
    """
    procs: list[subprocess.Popen] = []

    def start(env: dict[str, str], *flags: str, secrets_toml: str = "") -> Server:
        home = tmp_path / f"server{len(procs)}"
        home.mkdir()
        if secrets_toml:
            (home / "secrets.toml").write_text(secrets_toml)
        base, proc, log_path = launch_console(home, env, *flags)
        procs.append(proc)
        return Server(base, proc, log_path)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    core.db.dispose_engines()


def _cli_json(env: dict[str, str], cwd: Path, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "core", *args, "--json"], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@contextmanager
def cleanup_lock_held(settings: Settings) -> Iterator[None]:
    """Hold the table's cleanup lock from this process, as a CLI or dashboard run would."""
    if settings.database_url.startswith("sqlite"):
        lock = SqliteFileLock(settings)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
    else:
        conn = _psycopg2_connect(settings)
        key = lock_key(settings)
        try:
            assert pg_try_lock(conn, key)
            yield
        finally:
            # unlocked before the close: a closed session's backend drops its locks only once it
            # has exited, a moment after close() returns, and the next cleanup could still meet it
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
            conn.commit()
            conn.close()


def _psycopg2_connect(settings: Settings):
    import psycopg2

    url = make_url(settings.database_url).set(drivername="postgresql")
    return psycopg2.connect(url.render_as_string(hide_password=False))


@contextmanager
def deletes_blocked(settings: Settings) -> Iterator[None]:
    """Make a started cleanup wait at its first write, so it is still running while we look."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # the run's writes wait (busy timeout 30 s)
        try:
            yield
        finally:
            conn.rollback()
            conn.close()
    else:
        conn = _psycopg2_connect(settings)
        try:
            with conn.cursor() as cur:  # reads go on; the run's DELETE waits (lock_timeout 30 s)
                cur.execute(f'LOCK TABLE "{settings.table}" IN SHARE MODE')
            yield
        finally:
            conn.rollback()
            conn.close()


# ---------------------------------------------------------------------------
# Routes


def test_healthz_needs_no_token_and_no_database_and_the_dashboard_shares_its_port(start_server, tmp_path):
    missing_db = f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}"
    # Settings from st.secrets, as the dashboard reads them (they override the environment).
    secrets_toml = f'DATABASE_URL = "{missing_db}"\nCLEANUP_TRIGGER_TOKEN = "{TOKEN}"\n'
    server = start_server(_server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'env.db'}"), secrets_toml=secrets_toml)

    r = server.call("GET", "/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert server.call("HEAD", "/healthz").status_code == 200  # uptime monitors

    page = server.call("GET", "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<div id="root">' in page.text and "<title>Streamlit</title>" in page.text

    # The secrets' database is unreachable: the trigger says so in one JSON line, no traceback.
    r = server.call("POST", "/run-cleanup", TOKEN)
    assert r.status_code == 503
    assert r.json()["error"].startswith("DATABASE_URL = ") and "no-such-folder" in r.json()["error"]
    assert "\n" not in r.json()["error"]
    assert not (tmp_path / "env.db").exists()
    assert "Traceback" not in server.log()


def test_trigger_routes_answer_404_when_no_token_is_configured(start_server, tmp_path):
    db = f"sqlite:///{tmp_path / 'local.db'}"
    server = start_server(_server_env(DATABASE_URL=db))

    for method in ("POST", "GET"):
        for token in (None, TOKEN, ""):
            r = server.call(method, "/run-cleanup", token)
            assert r.status_code == 404, (method, token, r.text)
            assert "CLEANUP_TRIGGER_TOKEN" in r.json()["error"]
    assert server.call("GET", f"/runs/{uuid.uuid4()}", TOKEN).status_code == 404
    assert server.call("GET", "/healthz").status_code == 200
    assert not (tmp_path / "local.db").exists()  # nothing was even connected to


def test_trigger_runs_a_cleanup_and_reports_it_like_the_cli(start_server, demo_settings, tmp_path):
    settings = demo_settings
    env = _settings_env(settings, CLEANUP_TRIGGER_TOKEN=TOKEN)
    server = start_server(env, "--server.scriptHealthCheckEnabled", "true")
    expected = core.preview(settings).rows_to_delete
    assert expected > 0

    # Refused: no header, wrong token, another scheme, the token in the URL; nothing runs.
    for headers, params in [
        ({}, {}),
        ({"Authorization": "Bearer wrong-" + TOKEN}, {}),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, {}),
        ({"Authorization": f"Basic {TOKEN}"}, {}),
        ({"Authorization": TOKEN}, {}),
        ({}, {"token": TOKEN}),
    ]:
        for method in ("POST", "GET"):
            r = server.call(method, "/run-cleanup", headers=dict(headers), params=params)
            assert r.status_code == 401, (headers, params, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization header" in server.call("GET", "/run-cleanup", params={"token": TOKEN}).json()["error"]
    assert server.call("GET", f"/runs/{uuid.uuid4()}").status_code == 401
    assert server.call("HEAD", "/run-cleanup", TOKEN).status_code == 405
    assert core.list_history(settings) == []

    # POST starts it in the background and answers at once.
    r = server.call("POST", "/run-cleanup", TOKEN)
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["status"] == "started" and uuid.UUID(started["run_id"])
    assert r.headers["location"] == f"/runs/{started['run_id']}"
    assert r.headers["cache-control"] == "no-store"

    run = server.wait_for_run(started["run_id"])
    assert run["status"] == "success", run
    assert run["trigger"] == "http"
    assert run["rows_archived"] == run["rows_deleted"] == expected
    assert core.verify_backup(settings, run["backup_file"]).ok
    assert core.preview(settings).rows_to_delete == 0

    # The same JSON shape as `python -m core run --json` (SPEC keys included).
    cli = _cli_json(env, tmp_path, "run", "--no-notify")
    assert cli["status"] == "nothing_to_do" and cli["trigger"] == "cli"
    assert set(run) == set(cli) >= SPEC_RUN_KEYS
    # /runs/<id> answers runs of any trigger, from the history.
    by_id = server.call("GET", f"/runs/{cli['run_id']}", TOKEN)
    assert by_id.status_code == 200 and by_id.json()["trigger"] == "cli"
    assert server.call("GET", f"/runs/{uuid.uuid4()}", TOKEN).status_code == 404
    assert server.call("GET", "/runs/not%20a%20run;id", TOKEN).status_code == 404

    # GET works too, for schedulers that can only send GET.
    r = server.call("GET", "/run-cleanup", TOKEN)
    assert r.status_code == 202, r.text
    assert server.wait_for_run(r.json()["run_id"])["status"] == "nothing_to_do"

    history = core.list_history(settings)
    assert [h.trigger for h in history].count("http") == 2

    # The dashboard script runs in this same process and port.
    health = server.call("GET", "/_stcore/script-health-check")
    assert health.status_code == 200, health.text

    log = server.log()
    assert f"started cleanup run {started['run_id']}" in log
    assert TOKEN not in log and TOKEN[:-1] not in log


def test_second_trigger_while_the_first_runs_gets_409(start_server, demo_settings, tmp_path):
    settings = demo_settings
    env = _settings_env(settings, CLEANUP_TRIGGER_TOKEN=TOKEN)
    _cli_json(env, tmp_path, "run", "--dry-run")  # creates the history table before we block writers
    server = start_server(env)
    rows_before = core.stats(settings).total_rows

    with deletes_blocked(settings):
        first = server.call("POST", "/run-cleanup", TOKEN)
        assert first.status_code == 202, first.text
        run_id = first.json()["run_id"]
        for method in ("POST", "GET"):
            second = server.call(method, "/run-cleanup", TOKEN)
            assert second.status_code == 409, second.text
            assert "another cleanup" in second.json()["error"]
        status = server.call("GET", f"/runs/{run_id}", TOKEN)
        assert status.status_code == 200
        assert status.json()["status"] == "running"
        assert core.stats(settings).total_rows == rows_before

    run = server.wait_for_run(run_id)
    assert run["status"] == "success", run
    assert core.stats(settings).total_rows == rows_before - run["rows_deleted"]
    assert [h.trigger for h in core.list_history(settings) if h.status != "dry_run"] == ["http"]


def test_trigger_gets_409_while_another_entry_point_holds_the_lock(start_server, demo_settings):
    settings = demo_settings
    server = start_server(_settings_env(settings, CLEANUP_TRIGGER_TOKEN=TOKEN))
    rows_before = core.stats(settings).total_rows

    with cleanup_lock_held(settings):
        r = server.call("POST", "/run-cleanup", TOKEN)
        assert r.status_code == 409, r.text
        assert r.json() == {"status": "already_running",
                            "error": f"another cleanup of {settings.table} is running; nothing was changed"}
    assert core.stats(settings).total_rows == rows_before
    assert core.list_backups(settings) == []

    r = server.call("POST", "/run-cleanup", TOKEN)  # free again
    assert r.status_code == 202, r.text
    assert server.wait_for_run(r.json()["run_id"])["status"] == "success"


def _request(headers: dict[str, str], query: str = "") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/run-cleanup", "headers": raw,
                    "query_string": query.encode()})


def test_bearer_token_is_read_from_the_authorization_header_only():
    assert bearer_token(_request({"Authorization": "Bearer abc"})) == "abc"
    assert bearer_token(_request({"Authorization": "bearer  abc "})) == "abc"
    assert bearer_token(_request({"Authorization": "Basic abc"})) is None
    assert bearer_token(_request({"Authorization": "Bearer "})) is None
    assert bearer_token(_request({}, "token=abc&access_token=abc")) is None
    assert token_matches("abc", "abc") and not token_matches("abd", "abc") and not token_matches(None, "abc")
    assert not token_matches("ab", "abc") and not token_matches("abcd", "abc")


def test_a_started_run_that_crashed_reports_failed_with_its_reason():
    run = TrackedRun(run_id="r1", trigger=Trigger.HTTP)
    assert run.to_json()["status"] == "running"
    run.finish(core.CleanupFailed("the disk is full"))
    assert run.to_json() == {"run_id": "r1", "status": "failed", "trigger": "http",
                                            "started_at": run.started_at.isoformat(),
                                            "error": "the disk is full"}


# ---------------------------------------------------------------------------
# Scheduling files


def _workflow(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the bare key `on` as true
    return doc


def _step(doc: dict, contains: str) -> dict:
    steps = [s for job in doc["jobs"].values() for s in job["steps"]]
    return next(s for s in steps if contains in s.get("run", ""))


def _valid_cron(expr: str) -> bool:
    fields = expr.split()
    return len(fields) == 5 and all(re.fullmatch(r"[0-9*/,\-]+", f) for f in fields)


@pytest.mark.parametrize("name", ["cleanup-trigger.yml", "cleanup-cli.yml"])
def test_workflows_are_scheduled_and_take_secrets_from_the_repository(name):
    doc = _workflow(name)
    crons = [s["cron"] for s in doc["on"]["schedule"]]
    assert crons and all(_valid_cron(c) for c in crons)
    assert "workflow_dispatch" in doc["on"]
    assert doc["permissions"] == {"contents": "read"}
    assert doc["concurrency"]["group"] == "log-retention-cleanup"  # the two never overlap
    for job in doc["jobs"].values():
        assert job["runs-on"] == "ubuntu-latest" and job["timeout-minutes"] > 0
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"actions/[a-z-]+@v\d+", step["uses"])
            for key, value in step.get("env", {}).items():
                if key in {ENV_NAMES[f] for f in SECRET_FIELDS} | {"DATABASE_URL", "CONSOLE_URL"}:
                    assert value == f"${{{{ secrets.{key} }}}}", (key, value)


def test_trigger_workflow_calls_the_trigger_with_the_bearer_token():
    step = _step(_workflow("cleanup-trigger.yml"), "/run-cleanup")
    assert step["env"]["CLEANUP_TRIGGER_TOKEN"] == "${{ secrets.CLEANUP_TRIGGER_TOKEN }}"
    assert step["env"]["CONSOLE_URL"] == "${{ secrets.CONSOLE_URL }}"
    assert '-H "Authorization: Bearer $CLEANUP_TRIGGER_TOKEN" "$base/run-cleanup"' in step["run"]
    assert "token=" not in step["run"]


def test_cli_workflow_runs_python_m_core_run_against_the_database_secret():
    doc = _workflow("cleanup-cli.yml")
    step = _step(doc, "python -m core run")
    assert step["env"]["DATABASE_URL"] == "${{ secrets.DATABASE_URL }}"
    assert step["env"]["SLACK_BOT_TOKEN"] == "${{ secrets.SLACK_BOT_TOKEN }}"
    install = _step(doc, "pip install")
    assert install["run"].strip() == "pip install -r requirements.txt"


def _run_step(step: dict, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", step["run"]], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_trigger_workflow_script_runs_against_the_server(start_server, tmp_path):
    settings = load_settings({"database_url": f"sqlite:///{tmp_path / 'w.db'}",
                              "backup_dir": str(tmp_path / "backups")}, environ={}, env_file=None)
    demo_data(settings, rows=300, days=90, seed=3)
    server = start_server(_settings_env(settings, CLEANUP_TRIGGER_TOKEN=TOKEN))
    step = _step(_workflow("cleanup-trigger.yml"), "/run-cleanup")
    env = _server_env(CONSOLE_URL=server.base + "/", CLEANUP_TRIGGER_TOKEN=TOKEN, POLL_SECONDS="0.3")

    out = _run_step(step, env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"status":"success"' in out.stdout and '"trigger":"http"' in out.stdout
    assert TOKEN not in out.stdout + out.stderr

    with cleanup_lock_held(settings):
        out = _run_step(step, env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "::warning::another cleanup" in out.stdout

    out = _run_step(step, {**env, "CLEANUP_TRIGGER_TOKEN": "wrong"}, tmp_path)
    assert out.returncode == 1
    assert "::error::the trigger answered HTTP 401" in out.stdout


def test_cli_workflow_script_runs_the_cleanup_and_refuses_without_an_off_machine_copy(tmp_path):
    db = tmp_path / "w.db"
    settings = load_settings({"database_url": f"sqlite:///{db}"}, environ={}, env_file=None)
    demo_data(settings, rows=300, days=90, seed=3)
    rows_before = core.stats(settings).total_rows
    step = _step(_workflow("cleanup-cli.yml"), "python -m core run")
    venv_bin = str(Path(sys.executable).parent)
    env = _server_env(DATABASE_URL=settings.database_url, BACKUP_DIR="backups", LOG_RETENTION_DAYS="30",
                      PATH=venv_bin + os.pathsep + os.environ["PATH"])

    out = _run_step(step, env, tmp_path)  # neither SLACK_BOT_TOKEN nor KEEP_BACKUP_ARTIFACT
    assert out.returncode == 2
    assert "refusing to delete rows" in out.stdout
    assert core.stats(settings).total_rows == rows_before

    out = _run_step(step, {**env, "KEEP_BACKUP_ARTIFACT": "true"}, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "success" and run["trigger"] == "cli"
    assert (tmp_path / run["backup_file"]).resolve().parent == (tmp_path / "backups").resolve()


def test_render_blueprint_declares_the_docker_web_service_without_secret_values():
    doc = yaml.safe_load((ROOT / "render.yaml").read_text())
    (service,) = doc["services"]
    assert service["type"] == "web" and service["runtime"] == "docker"
    assert service["dockerfilePath"] == "./Dockerfile"
    assert service["healthCheckPath"] == "/healthz"
    env = {e["key"]: e for e in service["envVars"]}
    aws = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}  # BACKUP_STORE's
    assert set(env) - aws <= set(ENV_NAMES.values())  # only settings the console knows
    assert env["AWS_SECRET_ACCESS_KEY"] == {"key": "AWS_SECRET_ACCESS_KEY", "sync": False}
    assert env["DATABASE_URL"] == {"key": "DATABASE_URL", "sync": False}
    assert env["CLEANUP_TRIGGER_TOKEN"] == {"key": "CLEANUP_TRIGGER_TOKEN", "generateValue": True}
    for name in {ENV_NAMES[f] for f in SECRET_FIELDS} & set(env):
        assert "value" not in env[name], f"{name} must not be committed"


def test_dockerfile_runs_streamlit_as_a_non_root_user_on_port():
    text = (ROOT / "Dockerfile").read_text()
    instructions = [line for line in text.replace("\\\n", " ").splitlines() if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    assert "RUN pip install -r requirements.txt" in instructions
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    (cmd,) = [line for line in instructions if line.startswith("CMD ")]
    assert "streamlit run server.py --server.port $PORT --server.address 0.0.0.0" in cmd
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".streamlit/secrets.toml", "local.db", "backups/", ".venv/"} <= set(ignored)


def test_start_script_is_valid_bash_and_serves_server_py():
    script = ROOT / "scripts" / "start.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert 'exec "$VENV/bin/streamlit" run server.py --server.port "${PORT:-8501}"' in text
