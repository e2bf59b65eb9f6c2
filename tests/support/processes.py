"""The real programs as subprocesses: ``python -m core`` (killable, output to files), the
server (``streamlit run server.py`` on a free port), and the concurrent writer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from core.config import Settings
from tests.support import ROOT
from tests.support.databases import IN_CI

# ---------------------------------------------------------------------------
# The CLI


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This environment minus every console setting, plus the database and backup folder of ``settings``."""
    drop = ("SLACK_", "DATABASE_", "LOG_", "BACKUP_", "CLEANUP_", "DASHBOARD_", "STREAMLIT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(DATABASE_URL=settings.database_url, BACKUP_DIR=settings.backup_dir, LOG_TABLE=settings.table,
               PYTHONPATH=str(ROOT), **extra)
    return env


def cli_cmd(*args: str) -> list[str]:
    """``python -m core ARGS`` that reads no .env file."""
    return [sys.executable, "-m", "core", *args, "--env-file", os.devnull]


def run_cli(settings: Settings, *args: str, timeout: float = 120, preexec_fn: Any = None,
            **env: str) -> subprocess.CompletedProcess:
    """Run the CLI against ``settings`` to its end; its exit code and text output."""
    return subprocess.run(cli_cmd(*args), env=cli_env(settings, **env), cwd=Path(settings.backup_dir).parent,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)


@dataclass
class Child:
    """A CLI subprocess writing its output to files (no pipe can fill up and stall it)."""

    proc: subprocess.Popen
    started: float
    out: Path
    err: Path

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> bool:
        """SIGKILL now; True if the process was still running."""
        if self.proc.poll() is not None:
            return False
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return True

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def start_cli(settings: Settings, *args: str, preexec_fn: Any = None, **env: str) -> Child:
    """Start the CLI against ``settings`` and return at once (the caller waits or kills)."""
    home = Path(settings.backup_dir).parent
    tag = uuid.uuid4().hex[:6]
    out, err = home / f"cli-{tag}.out", home / f"cli-{tag}.err"
    with out.open("wb") as o, err.open("wb") as e:
        t0 = time.monotonic()
        proc = subprocess.Popen(cli_cmd(*args), env=cli_env(settings, **env), cwd=home, stdout=o, stderr=e,
                                preexec_fn=preexec_fn)
    return Child(proc, t0, out, err)


def one_line_error(stderr: str) -> str:
    """The CLI's error output must be exactly one readable line; returns it."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


# ---------------------------------------------------------------------------
# The server


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_console(home: Path, env: dict[str, str], *flags: str) -> tuple[str, subprocess.Popen, Path]:
    """``streamlit run server.py`` (dashboard + HTTP trigger) on a free port, run in ``home``.

    Returns (base URL, process, log path) once ``/healthz`` answers; fails with the
    server's log if it exits or does not answer within 60 s. The caller stops it.
    """
    port = free_port()
    log_path = home / "server.log"
    cmd = [str(Path(sys.executable).with_name("streamlit")), "run", str(ROOT / "server.py"),
           "--server.port", str(port), "--server.headless", "true", "--server.address", "127.0.0.1",
           "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
           "--secrets.files", str(home / "secrets.toml"), *flags]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"the server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}"
        try:
            if requests.get(base + "/healthz", timeout=2).status_code == 200:
                return base, proc, log_path
        except (requests.ConnectionError, requests.Timeout):  # not listening or still starting
            pass
        assert time.monotonic() < deadline, (
            f"the server did not answer /healthz in 60 s:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.1)


@dataclass
class Server:
    """A running server started by :func:`start_server`."""

    base: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(settings: Settings, home: Path, **env: str) -> Server:
    """``streamlit run server.py`` (dashboard + HTTP trigger) on a free port, as the README starts it."""
    home.mkdir(parents=True, exist_ok=True)
    base, proc, log_path = launch_console(home, cli_env(settings, **env))
    return Server(base, proc, log_path)


# ---------------------------------------------------------------------------
# The concurrent writer


def start_writer(settings: Settings, home: Path, seed: int, id_base: int,
                 max_id: int) -> tuple[subprocess.Popen, Path, Path]:
    """Start :func:`tests.support.writer.writer_main` in its own process.

    Returns (process, its JSON-lines log, the stop file: touch it to end the writer).
    """
    log, stop = home / f"writer-{seed}.jsonl", home / f"writer-{seed}.stop"
    code = (f"from tests.support.writer import writer_main; writer_main({settings.database_url!r}, "
            f"{str(log)!r}, {str(stop)!r}, {seed}, {id_base}, {max_id})")
    proc = subprocess.Popen([sys.executable, "-c", code], env=cli_env(settings), cwd=home)
    return proc, log, stop


CHROMIUM = "/usr/bin/chromium"  # Debian's chromium; never a downloaded browser build


def need_chromium() -> None:
    """Skip a browser test without Debian's chromium; under CI=true, fail instead."""
    import pytest

    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"CI=true requires {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); browser test skipped")
