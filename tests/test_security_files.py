"""The CLI attacked as a stranger would: secrets in the URL, gzip bombs, planted files, forged manifests.

Each test asserts the safe result and that the legitimate path still works. The CLI runs as a
subprocess (``python -m core``) against real SQLite and PostgreSQL databases.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import uuid
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.backup.csvfile import csv_text, header_line, iter_records
from core.backup.manifest import write_json_atomic
from core.db import get_engine
from core.masking import redact, remember
from tests.support import ROOT
from tests.support.databases import create_pg_database, drop_pg_database, pg_admin, table_snapshot

SECRET = "Qs3cr3t-" + uuid.uuid4().hex[:12]  # never to be seen anywhere
SIGNING_KEY = "test-signing-key-" + uuid.uuid4().hex


def cli(settings, *args: str, env_extra: dict | None = None, url: str | None = None,
        limit_as: int | None = None) -> subprocess.CompletedProcess:
    """``python -m core`` in a subprocess against ``settings`` (or ``url``), optionally under RLIMIT_AS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_", "LOG_", "BACKUP_"))}
    env.update(DATABASE_URL=url or settings.database_url, BACKUP_DIR=settings.backup_dir, PYTHONPATH=str(ROOT))
    env.update(env_extra or {})

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    return subprocess.run([sys.executable, "-m", "core", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=settings.backup_dir.rsplit("/", 1)[0],
                          preexec_fn=limit if limit_as else None)


def run_backup(settings, env_extra: dict | None = None) -> dict:
    p = cli(settings, "run", "--json", "--no-notify", env_extra=env_extra)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["status"] == "success"
    return out


def one_line_error(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr and "MemoryError" not in p.stderr
    return lines[0]


# ---------------------------------------------------------------------------
# Secrets in the database URL


@pytest.fixture
def role_url(pg_admin_url: str):
    """A database owned by a fresh role with a real password; the URL carries it in the query string."""
    role = f"lrc_sec_{uuid.uuid4().hex[:8]}"
    pg_admin(pg_admin_url, f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")
    admin_db_url = create_pg_database(pg_admin_url)
    name = make_url(admin_db_url).database
    pg_admin(pg_admin_url, f'ALTER DATABASE "{name}" OWNER TO {role}')
    host = make_url(pg_admin_url)
    yield f"postgresql+psycopg2://{role}@{host.host}:{host.port or 5432}/{name}?password={SECRET}"
    drop_pg_database(pg_admin_url, admin_db_url)
    pg_admin(pg_admin_url, f"DROP ROLE IF EXISTS {role}")


def _everything_written(backup_dir: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in backup_dir.rglob("*") if p.is_file()
                     and not p.name.endswith(".csv.gz"))


@pytest.fixture
def folder(tmp_path: Path) -> SimpleNamespace:
    """Only a backup folder (the database URL is given to each command)."""
    return SimpleNamespace(backup_dir=str(tmp_path / "backups"), database_url="")


def test_query_string_password_appears_in_no_output_file_or_history_row(role_url, folder):
    settings = folder
    outputs = []
    for args in (["demo-data", "--rows", "400"], ["stats"], ["stats", "--json"], ["stats", "--debug"],
                 ["preview", "-v"], ["run", "--json", "--no-notify", "--debug"], ["backups", "--json"],
                 ["history", "--json"], ["history", "--debug"], ["run", "--dry-run", "-v"]):
        p = cli(settings, *args, url=role_url)
        assert p.returncode == 0, (args, p.stderr)
        outputs.append(p.stdout + p.stderr)
    backup_file = json.loads(outputs[5].split("\n", 1)[0])["backup_file"]
    outputs.append(cli(settings, "verify", backup_file, "--json", "--debug", url=role_url).stdout)
    assert all(SECRET not in out for out in outputs)
    manifest = json.loads(Path(backup_file.replace(".csv.gz", ".manifest.json")).read_text())
    assert "database" not in manifest and manifest["source"]["host"] and manifest["source"]["table"]
    assert manifest["source"]["database"] == make_url(role_url).database
    assert SECRET not in _everything_written(Path(settings.backup_dir))
    with create_engine(role_url).connect() as conn:  # the legitimate path: the password works
        rows = conn.execute(text("SELECT * FROM retention_runs")).fetchall()
    assert rows and SECRET not in repr(rows)


@pytest.mark.parametrize("param", ["password", "sslpassword", "token", "key"])
def test_failing_connection_never_shows_a_secret_query_parameter(folder, param):
    settings = folder
    url = f"postgresql+psycopg2://nobody@127.0.0.1:5432/nodb?bogus_option=1&{param}={SECRET}"
    for extra in ([], ["--json"], ["--debug"], ["-v"]):
        p = cli(settings, "stats", *extra, url=url)
        assert p.returncode == 2, p.stderr
        assert SECRET not in p.stdout + p.stderr
    assert f"{param}=***" in cli(settings, "stats", url=url).stderr


def test_a_driver_message_that_echoes_the_dsn_is_redacted():
    remember([SECRET])
    echoed = f'invalid dsn: missing "=" after "{SECRET}" in connection info string: user=x password={SECRET}'
    shown = redact(echoed)
    assert SECRET not in shown and "password=***" in shown
    assert redact("postgresql://u:pw-in-url@h/db?sslpassword=abc&sslmode=require") == \
        "postgresql://u:***@h/db?sslpassword=***&sslmode=require"
    assert redact("nothing secret here: rows=5 key_count") == "nothing secret here: rows=5 key_count"


# ---------------------------------------------------------------------------
# Decompression bombs


def _bomb(path: Path, gib: int = 1) -> None:
    """A gzip file of about 1 MiB that decompresses to ``gib`` GiB of one endless line."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    piece = b"a" * (1 << 20)
    with open(path, "wb") as f:
        f.write(c.compress(b"id,message\n"))
        for _ in range(gib << 10):
            f.write(c.compress(piece))
        f.write(c.flush())


def _matching_manifest(data: Path, rows: int, **extra) -> Path:
    manifest = data.with_name(data.name[: -len(".csv.gz")] + ".manifest.json")
    body = {"format_version": 1, "table": "conversation_log", "timestamp_column": "created_at",
            "primary_key": "id", "columns": [{"name": "id", "type": "INTEGER"}, {"name": "message", "type": "TEXT"}],
            "rows": rows, "sha256": hashlib.sha256(data.read_bytes()).hexdigest(), "size_bytes": data.stat().st_size,
            "cutoff": "2020-01-01T00:00:00+00:00", "created_at": "2020-01-01T00:00:00+00:00", **extra}
    manifest.write_text(json.dumps(body))
    return manifest


def test_gzip_bomb_is_refused_in_one_line_under_512_mib(demo_settings):
    legit = run_backup(demo_settings)
    folder = Path(demo_settings.backup_dir)
    bomb = folder / "conversation_log_20200101T000000Z_b0mb0000.csv.gz"
    _bomb(bomb)
    assert bomb.stat().st_size < 2 << 20
    _matching_manifest(bomb, rows=0)
    p = cli(demo_settings, "verify", bomb.name, limit_as=512 << 20)
    assert p.returncode in (1, 2)
    assert "bytes" in one_line_error(p) and "more than" in p.stderr
    r = cli(demo_settings, "restore", bomb.name, limit_as=512 << 20)
    assert r.returncode in (1, 2) and one_line_error(r)
    listed = cli(demo_settings, "backups", "--json", limit_as=512 << 20)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)["backups"]) == 2
    ok = cli(demo_settings, "verify", legit["backup_file"], "--json", limit_as=512 << 20)  # the real one still does
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True


def test_a_record_over_the_limit_is_refused_even_with_a_matching_manifest(demo_settings):
    from core.backup import iter_spreadsheet_safe
    from core.errors import BackupTooLarge

    bomb = Path(demo_settings.backup_dir) / "conversation_log_20200101T000000Z_l0ng0000.csv.gz"
    Path(demo_settings.backup_dir).mkdir(parents=True, exist_ok=True)
    _bomb(bomb, gib=1)
    _matching_manifest(bomb, rows=10_000)  # enough rows that the size bound alone would not stop it
    p = cli(demo_settings, "verify", bomb.name)
    assert p.returncode == 1 and "record is longer than" in one_line_error(p)
    with pytest.raises(BackupTooLarge):  # the spreadsheet download streams through the same limits
        for _ in iter_spreadsheet_safe(demo_settings, bomb.name):
            pass


# ---------------------------------------------------------------------------
# Planted files


def test_a_symlink_planted_at_the_temporary_manifest_path_is_not_followed(tmp_path):
    folder, outside = tmp_path / "backups", tmp_path / "outside.txt"
    folder.mkdir()
    outside.write_text("precious\n")
    manifest = folder / "t_20200101T000000Z_abcdef12.manifest.json"
    (folder / (manifest.name + ".tmp")).symlink_to(outside)  # the path the tool used to write through
    write_json_atomic(manifest, {"rows": 1})
    assert outside.read_text() == "precious\n"
    assert json.loads(manifest.read_text()) == {"rows": 1} and not manifest.is_symlink()
    manifest.unlink()
    manifest.symlink_to(outside)  # a symlink at the final name: replaced, never written through
    write_json_atomic(manifest, {"rows": 2}, overwrite=True)
    assert outside.read_text() == "precious\n" and not manifest.is_symlink()
    assert sorted(p.name for p in folder.iterdir()) == sorted([manifest.name, manifest.name + ".tmp"])


def test_a_symlinked_backup_or_manifest_is_refused_and_listed_as_an_error(demo_settings, tmp_path):
    legit = run_backup(demo_settings)
    folder = Path(demo_settings.backup_dir)
    secret_file = tmp_path / "not-a-backup.csv.gz"
    secret_file.write_bytes(Path(legit["backup_file"]).read_bytes())
    link = folder / "conversation_log_20200101T000000Z_11111111.csv.gz"
    link.symlink_to(secret_file)
    Path(legit["manifest_file"]).with_name(link.name.replace(".csv.gz", ".manifest.json")).write_bytes(
        Path(legit["manifest_file"]).read_bytes())
    p = cli(demo_settings, "verify", link.name)
    assert p.returncode == 2 and "symbolic link" in one_line_error(p)
    r = cli(demo_settings, "restore", link.name)
    assert r.returncode == 2 and "symbolic link" in one_line_error(r)
    mlink = folder / "conversation_log_20200101T000000Z_22222222.manifest.json"
    mlink.symlink_to(legit["manifest_file"])
    (folder / mlink.name.replace(".manifest.json", ".csv.gz")).write_bytes(secret_file.read_bytes())
    listed = cli(demo_settings, "backups", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = {Path(b["file"]).name: b for b in json.loads(listed.stdout)["backups"]}
    assert "symbolic link" in entries[link.name]["error"] and "symbolic link" in entries[
        mlink.name.replace(".manifest.json", ".csv.gz")]["error"]
    assert entries[Path(legit["backup_file"]).name]["error"] is None
    assert cli(demo_settings, "verify", legit["backup_file"]).returncode == 0


def test_a_malformed_manifest_is_one_listed_error_and_the_others_still_list(demo_settings):
    legit = run_backup(demo_settings)
    folder = Path(demo_settings.backup_dir)
    for i, (field, value) in enumerate([("rows", [1]), ("sha256", 5), ("created_at", "yesterday"),
                                        ("columns", "id"), ("rows", True)]):
        stem = f"conversation_log_20200101T00000{i}Z_bad0000{i}"
        (folder / f"{stem}.csv.gz").write_bytes(Path(legit["backup_file"]).read_bytes())
        m = json.loads(Path(legit["manifest_file"]).read_text()) | {field: value}
        (folder / f"{stem}.manifest.json").write_text(json.dumps(m))
    (folder / "conversation_log_20200101T000009Z_notjson0.manifest.json").write_text("{not json")
    p = cli(demo_settings, "backups", "--json")
    assert p.returncode == 0, p.stderr
    backups = json.loads(p.stdout)["backups"]
    errors = [b["error"] for b in backups if b["error"]]
    assert len(backups) == 7 and len(errors) == 6
    assert any("'rows'" in e for e in errors) and any("'sha256'" in e for e in errors)
    human = cli(demo_settings, "backups")
    assert human.returncode == 0 and human.stdout.count("error: ") == 6
    v = cli(demo_settings, "verify", "conversation_log_20200101T000000Z_bad00000.csv.gz")
    assert v.returncode == 1 and "manifest refused: field 'rows'" in one_line_error(v)
    assert cli(demo_settings, "verify", legit["backup_file"]).returncode == 0


# ---------------------------------------------------------------------------
# Forged backups and signing


def _forge(legit: dict) -> None:
    """Replace a backup's data with an attacker's row; recompute the manifest's sha256, rows and size."""
    data, manifest = Path(legit["backup_file"]), Path(legit["manifest_file"])
    m = json.loads(manifest.read_text())
    records = iter_records(data)
    header, first = next(records), next(records)
    first[header.index(m["primary_key"])] = "999999"
    body = header_line(header) + ",".join("" if v is None else csv_text(v) for v in first) + "\n"
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    data.write_bytes(c.compress(body.encode()) + c.flush())
    m |= {"rows": 1, "sha256": hashlib.sha256(data.read_bytes()).hexdigest(), "size_bytes": data.stat().st_size}
    manifest.write_text(json.dumps(m))


def test_signed_manifests_verify_and_restore(demo_settings):
    key = {"BACKUP_SIGNING_KEY": SIGNING_KEY}
    legit = run_backup(demo_settings, key)
    m = json.loads(Path(legit["manifest_file"]).read_text())
    assert len(m["signature"]) == 64
    assert cli(demo_settings, "verify", legit["backup_file"], env_extra=key).returncode == 0
    r = cli(demo_settings, "restore", legit["backup_file"], "--json", env_extra=key)
    assert r.returncode == 0 and json.loads(r.stdout)["rows_restored"] == legit["rows_deleted"]


def test_a_forged_backup_is_refused_with_a_signing_key(demo_settings):
    key = {"BACKUP_SIGNING_KEY": SIGNING_KEY}
    legit = run_backup(demo_settings, key)
    _forge(legit)
    before = table_snapshot(demo_settings)
    v = cli(demo_settings, "verify", legit["backup_file"], env_extra=key)
    assert v.returncode == 1 and "signature does not match" in one_line_error(v)
    for extra in ([], ["--allow-unsigned"]):  # a wrong signature is never allowed
        r = cli(demo_settings, "restore", legit["backup_file"], *extra, env_extra=key)
        assert r.returncode == 1 and "signature does not match" in one_line_error(r)
    assert table_snapshot(demo_settings) == before
    # the same forgery under another key, or with the signature removed, is refused too
    m = json.loads(Path(legit["manifest_file"]).read_text())
    m.pop("signature")
    Path(legit["manifest_file"]).write_text(json.dumps(m))
    assert "not signed" in one_line_error(cli(demo_settings, "verify", legit["backup_file"], env_extra=key))


def test_without_a_key_a_forgery_with_matching_hash_is_not_detectable(demo_settings):
    """What signing is for: without BACKUP_SIGNING_KEY a consistent forgery verifies (documented)."""
    legit = run_backup(demo_settings)
    assert "signature" not in json.loads(Path(legit["manifest_file"]).read_text())
    _forge(legit)
    assert cli(demo_settings, "verify", legit["backup_file"]).returncode == 0


def test_an_unsigned_backup_needs_allow_unsigned_once_a_key_is_set(demo_settings):
    old = run_backup(demo_settings)  # made before the key existed
    key = {"BACKUP_SIGNING_KEY": SIGNING_KEY}
    before = table_snapshot(demo_settings)
    v = cli(demo_settings, "verify", old["backup_file"], env_extra=key)
    assert v.returncode == 1 and "not signed" in one_line_error(v)
    r = cli(demo_settings, "restore", old["backup_file"], env_extra=key)
    assert r.returncode == 1 and "--allow-unsigned" in one_line_error(r)
    assert table_snapshot(demo_settings) == before
    ok = cli(demo_settings, "restore", old["backup_file"], "--allow-unsigned", "--json", env_extra=key)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["rows_restored"] == old["rows_deleted"]


def test_a_short_signing_key_is_refused_at_start(demo_settings):
    p = cli(demo_settings, "backups", env_extra={"BACKUP_SIGNING_KEY": "short-key"})
    assert p.returncode == 2 and "BACKUP_SIGNING_KEY" in one_line_error(p) and "short-key" not in p.stderr


def test_recovery_signs_the_manifest_it_finishes(demo_settings):
    """A run that died after its batches committed: the next run finishes its manifest, signed."""
    key = {"BACKUP_SIGNING_KEY": SIGNING_KEY}
    dead = run_backup(demo_settings)
    data, manifest = Path(dead["backup_file"]), Path(dead["manifest_file"])
    partial = data.with_name(data.name + ".partial")
    data.rename(partial)
    manifest.unlink()
    with get_engine(demo_settings).begin() as conn:  # what a kill after the last COMMIT leaves behind
        conn.execute(text("UPDATE retention_runs SET status = 'running', partial_file = :p, manifest_file = NULL, "
                          "committed_bytes = :n WHERE run_id = :r"),
                     {"p": str(partial), "n": partial.stat().st_size, "r": dead["run_id"]})
    p = cli(demo_settings, "run", "--json", "--no-notify", env_extra=key)
    assert p.returncode == 0, p.stderr
    assert dead["run_id"] in json.loads(p.stdout)["recovered_runs"]
    assert len(json.loads(manifest.read_text())["signature"]) == 64
    v = cli(demo_settings, "verify", data.name, "--json", env_extra=key)
    assert v.returncode == 0 and json.loads(v.stdout)["ok"] is True
