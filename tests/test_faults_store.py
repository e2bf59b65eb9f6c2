"""Fault trials with an object store (BACKUP_STORE): kill -9 at random moments, the local disk wiped, the store
failing mid-run.

Each kill trial copies a demo table, starts ``python -m core run`` with the store on a loopback moto server,
kills it (SIGKILL) at a seeded random moment over the whole run, wipes BACKUP_DIR in every other trial (a host
whose disk does not survive a restart), then runs a normal cleanup, which recovers. Then: no run is left
running, no batch object or open multipart upload is left in the bucket, every stored backup matches its stored
manifest, every original row is in the table or in exactly one stored backup (never both), and no local copy is
left (BACKUP_KEEP_LOCAL defaults to false with a store).

``LRC_STORE_KILL_TRIALS`` (default 13 per database, 26 in all) sets the count, ``LRC_FAULT_SEED`` the seed.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import run_cleanup
from core.config import Settings
from tests.support.databases import RETENTION_DAYS, Template, history_rows, table_snapshot
from tests.support.objectstore import ENV, FlakyProxy, moto_server, new_bucket, stored_state
from tests.support.processes import start_cli
from tests.support.report import SEED
from tests.support.trials import run_args

pytestmark = pytest.mark.faults

TRIALS = int(os.environ.get("LRC_STORE_KILL_TRIALS", "13"))
ROWS = int(os.environ.get("LRC_STORE_FAULT_ROWS", "4000"))


@pytest.fixture(scope="module")
def s3() -> str:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(s3: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {**ENV, "AWS_ENDPOINT_URL": s3}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    return env


@pytest.fixture(params=["sqlite", "postgresql"])
def template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    admin = request.getfixturevalue("pg_admin_url") if request.param == "postgresql" else None
    tmpl = Template.build(request.param, tmp_path_factory.mktemp(f"store-{request.param}"), admin, rows=ROWS)
    yield tmpl
    tmpl.destroy()  # the template and every copy made from it: the tests leave no database behind


def check_settled(settings: Settings, template: Template, endpoint: str, bucket: str, workdir: Path) -> dict:
    """The invariant after recovery, read from the table, the history and the bucket only."""
    assert not [r for r in history_rows(settings) if r["status"] == "running"], "a run is still marked running"
    state = stored_state(endpoint, bucket, workdir)
    in_backups = Counter(k for ks in state["backups"].values() for k in ks)
    twice = [k for k, n in in_backups.items() if n > 1]
    assert not twice, f"{len(twice)} rows are in two stored backups"
    table = set(table_snapshot(settings))
    both = table & set(in_backups)
    assert not both, f"{len(both)} rows are both in the table and in a stored backup"
    lost = set(template.keys) - table - set(in_backups)
    assert not lost, f"{len(lost)} rows are neither in the table nor in a stored backup"
    assert not list(Path(settings.backup_dir).glob("*.csv.gz*")), "a local copy was kept"
    return {"table": len(table), "stored": sum(in_backups.values()), **state}


def test_kill_and_wipe_with_a_store_loses_no_row(template: Template, tmp_path: Path, s3: str,
                                                 aws_env: dict[str, str]) -> None:
    ctrl = template.copy(tmp_path / "control")
    bucket = new_bucket(s3)
    t0 = time.monotonic()
    done = start_cli(ctrl, *run_args(200), BACKUP_STORE=f"s3://{bucket}/ctl", **aws_env)
    assert done.wait() == 0, done.stderr
    expected = time.monotonic() - t0
    struck = wiped = 0
    for i in range(TRIALS):
        rnd = random.Random(f"store:{template.kind}:{SEED + i}")
        batch = rnd.choice([50, 100, 200, 400])
        moment = (i + rnd.random()) / TRIALS * expected * 1.05
        s = template.copy(tmp_path / f"t{i}")
        bucket = new_bucket(s3)
        url = f"s3://{bucket}/backups"
        child = start_cli(s, *run_args(batch), BACKUP_STORE=url, **aws_env)
        time.sleep(moment)
        struck += child.kill()
        label = f"trial {i} (seed {SEED + i}, batch {batch}, kill at {moment:.2f}s of ~{expected:.2f}s)"
        if i % 2 == 0:
            shutil.rmtree(s.backup_dir, ignore_errors=True)
            wiped += 1
        stored = dataclasses.replace(s, backup_store=url)
        r = run_cleanup(stored, retention_days=RETENTION_DAYS, notify=False)
        assert r.status.value in {"success", "nothing_to_do"}, f"{label}: {r.status} {r.error}"
        try:
            check_settled(stored, template, s3, bucket, tmp_path)
        except AssertionError as exc:
            raise AssertionError(f"{label}: {exc}") from None
    assert struck >= TRIALS // 2, f"only {struck} of {TRIALS} kills hit a running cleanup"
    print(f"\nstore kill trials ({template.kind}): {TRIALS} trials, {struck} struck a running cleanup, "
          f"{wiped} with BACKUP_DIR wiped; 0 rows lost")


def test_store_failing_mid_run_loses_no_row(template: Template, tmp_path: Path, s3: str,
                                            aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = FlakyProxy(int(s3.rsplit(":", 1)[1]))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    outcomes: Counter[str] = Counter()
    try:
        for i in range(6):
            s = template.copy(tmp_path / f"f{i}")
            bucket = new_bucket(s3)
            stored = dataclasses.replace(s, backup_store=f"s3://{bucket}/b", batch_size=300)
            proxy.fail_from(4 + 3 * i)  # the probe passes; the store breaks after a few batches or at the end
            r = run_cleanup(stored, retention_days=RETENTION_DAYS, notify=False)
            outcomes[r.status.value] += 1
            proxy.heal()
            again = run_cleanup(stored, retention_days=RETENTION_DAYS, notify=False)
            assert again.status.value in {"success", "nothing_to_do"}, again.error
            check_settled(stored, template, s3, bucket, tmp_path)
    finally:
        proxy.close()
    assert outcomes["failed"] >= 3, outcomes
