"""Retention policies: the policy file, ``run --all`` and its exit codes, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from core import list_backups, verify_backup
from core.cleanup import CleanupRequest
from core.db import get_engine
from core.demo import demo_data
from core.models import RunStatus
from core.multirun import run_policies
from core.policies import BadPolicy, load_policies, settings_for_table
from tests.support.databases import make_settings
from tests.support.invariants import backup_keys
from tests.support.processes import one_line_error, run_cli
from tests.test_trigger import cleanup_lock_held

TWO = """
[[policy]]
table = "conversation_log"
timestamp_column = "created_at"
retention_days = 30
batch_size = 300

[[policy]]
table = "api_usage"
timestamp_column = "created_at"
retention_days = 60
pause_ms = 1
"""


def check_table_kept_or_backed_up(settings, original: set[str]) -> None:
    """Every original row of this table is in it or in exactly one of its verified backups, never both."""
    seen: list[str] = []
    for b in list_backups(settings):
        if b.table == settings.table:
            assert verify_backup(settings, b.file).ok
            seen += backup_keys(b.file)
    assert len(seen) == len(set(seen)), "a row is in two backups"
    in_table = keys(settings)
    assert not in_table & set(seen) and in_table | set(seen) == original


def keys(settings) -> set[str]:
    with get_engine(settings).connect() as conn:
        return {str(k) for k in conn.execute(text(f"SELECT id FROM {settings.table}")).scalars()}


@pytest.fixture
def two_tables(db_url: str, tmp_path: Path):
    """Two demo tables in one database and a policy file naming both."""
    base = make_settings(db_url, tmp_path / "backups")
    demo_data(base, rows=1500, days=90, seed=1)
    demo_data(base.with_overrides(table="api_usage"), rows=1000, days=90, seed=2)
    path = tmp_path / "policies.toml"
    path.write_text(TWO)
    return base.with_overrides(policies_file=str(path))


def test_a_good_policy_file_gives_each_table_its_own_settings(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(TWO)
    first, second = load_policies(str(path))
    assert (first.table, first.retention_days, first.batch_size, first.pause_ms) == ("conversation_log", 30, 300, None)
    assert (second.table, second.retention_days, second.pause_ms) == ("api_usage", 60, 1)
    base = make_settings(f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "b", policies_file=str(path),
                         retention_days=7, pause_ms=5)
    s = settings_for_table(base, "api_usage")
    assert (s.table, s.retention_days, s.batch_size, s.pause_ms) == ("api_usage", 60, base.batch_size, 1)
    assert settings_for_table(base, "conversation_log").pause_ms == 5  # unset in the policy: the shared one


BAD_FILES = {
    "unknown key": (TWO.replace("retention_days = 60", "retention_dayz = 60"), "policy 2 (api_usage)",
                    "retention_dayz"),
    "duplicate table": (TWO.replace('"api_usage"', '"conversation_log"'), "policy 2 (conversation_log)",
                        "duplicate"),
    "negative days": (TWO.replace("retention_days = 60", "retention_days = -1"), "policy 2 (api_usage)",
                      "retention_days"),
    "days as text": (TWO.replace("retention_days = 60", 'retention_days = "sixty"'), "policy 2 (api_usage)",
                     "retention_days"),
    "bad identifier": (TWO.replace('"api_usage"', '"api usage; drop"'), "policy 2", "'table'"),
    "missing key": (TWO.replace('timestamp_column = "created_at"\nretention_days = 60', "retention_days = 60"),
                    "policy 2 (api_usage)", "timestamp_column"),
    "zero batch size": (TWO.replace("batch_size = 300", "batch_size = 0"), "policy 1 (conversation_log)",
                        "batch_size"),
    "not TOML": (TWO + "\n[[policy]\n", "file", "TOML"),
    "no policy": ("# nothing\n", "file", "no [[policy]]"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_a_bad_policy_file_is_refused_with_one_line_before_anything_runs(two_tables, kind):
    content, where, key = BAD_FILES[kind]
    Path(two_tables.policies_file).write_text(content)
    before = keys(two_tables)
    with pytest.raises(BadPolicy) as err:
        load_policies(two_tables.policies_file)
    assert two_tables.policies_file in str(err.value) and where in str(err.value) and key in str(err.value)
    out = run_cli(two_tables, "run", "--all", "--json", RETENTION_POLICIES_FILE=two_tables.policies_file)
    assert out.returncode == 2, out.stderr
    line = one_line_error(out.stderr)
    assert two_tables.policies_file in line and where in line and key in line
    assert out.stdout == ""
    assert keys(two_tables) == before and not Path(two_tables.backup_dir).exists() or \
        not list(Path(two_tables.backup_dir).glob("*.csv.gz"))


def test_a_missing_policy_file_and_a_missing_table_are_refused_before_anything_runs(two_tables, tmp_path):
    out = run_cli(two_tables, "run", "--all", RETENTION_POLICIES_FILE=str(tmp_path / "nope.toml"))
    assert out.returncode == 2
    assert "nope.toml" in one_line_error(out.stderr) and "does not exist" in out.stderr
    Path(two_tables.policies_file).write_text(TWO + '\n[[policy]]\ntable = "audit"\ntimestamp_column = "t"\n'
                                              'retention_days = 365\n')
    before = keys(two_tables)
    out = run_cli(two_tables, "run", "--all", RETENTION_POLICIES_FILE=two_tables.policies_file)
    assert out.returncode == 2, out.stderr
    assert "audit" in one_line_error(out.stderr)
    assert keys(two_tables) == before  # the first two policies did not run either


def test_run_all_runs_every_policy_and_prints_their_runs(two_tables):
    originals = {t: keys(two_tables.with_overrides(table=t)) for t in ("conversation_log", "api_usage")}
    out = run_cli(two_tables, "run", "--all", "--json", "--no-notify",
                  RETENTION_POLICIES_FILE=two_tables.policies_file)
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)["runs"]
    assert [r["table"] for r in runs] == ["conversation_log", "api_usage"]
    assert all(r["status"] == "success" and r["rows_deleted"] > 0 for r in runs)
    assert runs[0]["cutoff"] < runs[1]["cutoff"] or runs[0]["cutoff"] > runs[1]["cutoff"]  # 30 vs 60 days
    for r in runs:
        s = two_tables.with_overrides(table=r["table"])
        check_table_kept_or_backed_up(s, originals[r["table"]])
        assert len(keys(s)) == len(originals[r["table"]]) - r["rows_deleted"]
    again = run_cli(two_tables, "run", "--all", "--json", "--no-notify",
                    RETENTION_POLICIES_FILE=two_tables.policies_file)
    assert again.returncode == 0
    assert [r["status"] for r in json.loads(again.stdout)["runs"]] == ["nothing_to_do", "nothing_to_do"]


def test_run_all_exits_3_when_a_table_is_locked_and_still_runs_the_others(two_tables):
    before = keys(two_tables.with_overrides(table="api_usage"))
    with cleanup_lock_held(two_tables.with_overrides(table="api_usage")):
        out = run_cli(two_tables, "run", "--all", "--json", "--no-notify",
                      RETENTION_POLICIES_FILE=two_tables.policies_file)
        human = run_cli(two_tables, "run", "--all", "--no-notify", RETENTION_POLICIES_FILE=two_tables.policies_file)
    assert out.returncode == 3, out.stderr
    runs = json.loads(out.stdout)["runs"]
    assert runs[0]["status"] == "success"
    locked = runs[1]
    assert set(locked) == set(runs[0])  # the whole run JSON, not a stub
    assert locked["status"] == RunStatus.LOCKED == "locked" and locked["table"] == "api_usage"
    assert "another cleanup of api_usage" in locked["error"] and locked["run_id"]
    assert (locked["rows_archived"], locked["rows_deleted"], locked["backup_file"], locked["sha256"]) == (0, 0, None,
                                                                                                        None)
    assert keys(two_tables.with_overrides(table="api_usage")) == before
    assert "api_usage (locked)" in one_line_error(out.stderr)
    assert human.returncode == 3 and f"api_usage: {RunStatus.LOCKED.label}: Another cleanup of api_usage held its " \
        "lock" in human.stdout
    # the locked policy changes nothing, its history included (as a single locked run)
    history = json.loads(run_cli(two_tables, "history", "--json").stdout)["runs"]
    assert runs[0]["run_id"] in {r["run_id"] for r in history}
    assert not [r for r in history if r["table"] == "api_usage"]


CASCADE_CHILD = ("CREATE TABLE reply (id INTEGER PRIMARY KEY, log_id INTEGER "
                 "REFERENCES conversation_log (id) ON DELETE CASCADE)")


def test_a_policy_refused_for_its_dependents_fails_alone_and_the_others_run(two_tables):
    with get_engine(two_tables).begin() as conn:
        conn.execute(text(CASCADE_CHILD))
    before = keys(two_tables)
    single = run_cli(two_tables, "run", "--json", "--no-notify")  # one table: refused before anything, exit 2
    assert single.returncode == 2 and "refused" in one_line_error(single.stderr)
    out = run_cli(two_tables, "run", "--all", "--json", "--no-notify", RETENTION_POLICIES_FILE=two_tables.policies_file)
    assert out.returncode == 1, out.stderr
    refused, other = json.loads(out.stdout)["runs"]
    assert set(refused) == set(other)
    assert refused["status"] == "failed" and refused["rows_deleted"] == 0 and refused["backup_file"] is None
    assert "refused" in refused["error"] and "ON DELETE CASCADE" in refused["error"] and "\n" not in refused["error"]
    assert other["table"] == "api_usage" and other["status"] == "success" and other["rows_deleted"] > 0
    assert keys(two_tables) == before  # nothing of the refused table was touched
    assert "conversation_log (failed)" in one_line_error(out.stderr)
    history = json.loads(run_cli(two_tables, "history", "--json").stdout)["runs"]
    assert history == []  # the refusal wrote nothing, as a single run
    others = json.loads(run_cli(two_tables, "history", "--json", "--table", "api_usage").stdout)["runs"]
    assert [r["run_id"] for r in others] == [other["run_id"]]


def test_the_trigger_job_reports_a_refused_policy_as_failed_and_runs_the_others(two_tables):
    from core.runs import start_policies

    with get_engine(two_tables).begin() as conn:
        conn.execute(text(CASCADE_CHILD))
    before = keys(two_tables)
    job = start_policies(two_tables, trigger="test", notify=False)  # no exception: the refusal is the policy's
    assert job.done.wait(60)
    body = job.to_json()
    assert body["status"] == "failed"
    assert [(r["table"], r["status"]) for r in body["runs"]] == [("conversation_log", "failed"), ("api_usage", "success")]
    assert "refused" in body["runs"][0]["error"]
    assert keys(two_tables) == before
    again = start_policies(two_tables, trigger="test", notify=False)  # every lock was given back
    assert again.done.wait(60) and again.to_json()["runs"][1]["status"] == "nothing_to_do"


def test_the_slack_summary_says_which_table_was_busy(two_tables):
    from core.models import PoliciesResult, PolicyRun
    from core.notify.message import runs_summary

    with cleanup_lock_held(two_tables.with_overrides(table="api_usage")):
        result = run_policies(two_tables, CleanupRequest(notify=False))
    assert [r.status for r in result.runs] == [RunStatus.SUCCESS, RunStatus.LOCKED]
    assert result.status == RunStatus.LOCKED and result.exit_code == 3
    text_, blocks = runs_summary(PoliciesResult(result.runs), host="h")
    body = json.dumps(blocks, ensure_ascii=False)
    assert "a table was busy" in body and f"`api_usage`: {RunStatus.LOCKED.label}" in body
    assert "another cleanup held its lock; nothing was changed" in body and RunStatus.LOCKED.label in text_
    assert isinstance(result.runs[1], PolicyRun) and result.runs[1].to_json()["status"] == "locked"


def test_run_all_exits_1_when_a_policy_fails_at_run_time(two_tables):
    # A value that is not UTF-8 in an old row of the first table (SQLite) / a trigger that
    # refuses the DELETE (PostgreSQL; allowed to fire, else planning refuses the run): the batch
    # fails after the run started.
    engine = get_engine(two_tables)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("UPDATE conversation_log SET message = CAST(x'ff' AS TEXT) "
                              "WHERE id = (SELECT min(id) FROM conversation_log)"))
        else:
            conn.execute(text("CREATE FUNCTION no_delete() RETURNS trigger LANGUAGE plpgsql AS "
                              "$$ BEGIN RAISE EXCEPTION 'deletes are refused'; END $$"))
            conn.execute(text("CREATE TRIGGER refuse BEFORE DELETE ON conversation_log "
                              "FOR EACH STATEMENT EXECUTE FUNCTION no_delete()"))
    out = run_cli(two_tables, "run", "--all", "--json", "--no-notify",
                  RETENTION_POLICIES_FILE=two_tables.policies_file, CLEANUP_ALLOW_DELETE_TRIGGERS="true")
    runs = json.loads(out.stdout)["runs"]
    assert out.returncode == 1, (out.stderr, runs)
    assert runs[0]["status"] == "failed" and runs[0]["error"]
    assert runs[1]["status"] == "success"  # a failed policy does not stop the others
    assert "conversation_log (failed)" in one_line_error(out.stderr)


def test_table_flag_picks_the_policy_of_that_table(two_tables):
    out = run_cli(two_tables, "preview", "--table", "api_usage", "--json",
                  RETENTION_POLICIES_FILE=two_tables.policies_file)
    assert out.returncode == 0, out.stderr
    by_policy = json.loads(out.stdout)
    plain = json.loads(run_cli(two_tables, "preview", "--table", "api_usage", "--json").stdout)
    # 60 days from the policy, against the default 30 without the file
    assert by_policy["cutoff"] < plain["cutoff"] and by_policy["rows_to_delete"] < plain["rows_to_delete"]


def test_the_trigger_runs_every_policy_in_one_job_or_one_by_table(two_tables, tmp_path):
    from tests.test_trigger import TOKEN, Server, _settings_env, deletes_blocked, launch_console

    home = tmp_path / "server"
    home.mkdir()
    env = _settings_env(two_tables, CLEANUP_TRIGGER_TOKEN=TOKEN, RETENTION_POLICIES_FILE=two_tables.policies_file)
    base, proc, log_path = launch_console(home, env)
    server = Server(base, proc, log_path)
    try:
        r = server.call("POST", "/run-cleanup?table=nosuch", TOKEN)
        assert r.status_code == 404 and "nosuch" in r.json()["error"]
        r = server.call("POST", "/run-cleanup?table=api_usage", TOKEN)
        assert r.status_code == 202, r.text
        body = server.wait_for_run(r.json()["run_id"])
        assert [x["table"] for x in body["runs"]] == ["api_usage"] and body["status"] == "success"
        with deletes_blocked(two_tables):  # the job's first run waits at its DELETE: the job is running
            r = server.call("POST", "/run-cleanup", TOKEN)
            assert r.status_code == 202, r.text
            job = r.json()["run_id"]
            assert server.call("POST", "/run-cleanup", TOKEN).status_code == 409
            assert server.call("POST", "/run-cleanup?table=api_usage", TOKEN).status_code == 409
            assert server.call("GET", f"/runs/{job}", TOKEN).json()["status"] == "running"
        body = server.wait_for_run(job)
        assert set(body) >= {"run_id", "status", "runs"} and body["run_id"] == job
        assert [(x["table"], x["status"]) for x in body["runs"]] == [("conversation_log", "success"),
                                                                     ("api_usage", "nothing_to_do")]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
