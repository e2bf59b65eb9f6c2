"""``python -m core COMMAND``: parse, call one core function, print, exit.

Exit status (SPEC.md): 0 done; 1 the operation failed; 2 bad usage or
configuration; 3 another cleanup holds the lock.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Sequence

from . import backups, cleanup, demo, notify
from .config import Settings, load_settings
from .errors import RetentionError
from .models import RunResult, to_jsonable
from .stats import preview
from .stats import stats as table_stats

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        sys.stderr.write(f"error: {message} (see python -m core {self.prog.split()[-1]} --help)\n")
        raise SystemExit(2)


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("settings (override environment and .env)")
    g.add_argument("--database-url", help="SQLAlchemy URL (DATABASE_URL)")
    g.add_argument("--table", help="log table, or schema.table on PostgreSQL (LOG_TABLE)")
    g.add_argument("--timestamp-column", help="column the age is measured on (LOG_TIMESTAMP_COLUMN)")
    g.add_argument("--backup-dir", help="where backups are written (BACKUP_DIR)")
    g.add_argument("--env-file", default=".env", help="settings file to read (default .env)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print exactly one JSON object")
    o.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    o.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    return p


def _cutoff_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--retention-days", type=_days, metavar="N", help="rows older than now - N days")
    g.add_argument("--cutoff", metavar="TS", help="ISO 8601 cutoff; no offset means UTC")


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--retention-days must be a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--retention-days must be 0 or more, not {value}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="python -m core", description="Archive, delete and report old log rows safely.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("demo-data", parents=[common], help="create the table if missing and insert demo rows")
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--seed", type=int, default=42)
    sub.add_parser("stats", parents=[common], help="row counts by age")
    p = sub.add_parser("preview", parents=[common], help="what a cleanup would delete now (changes nothing)")
    _cutoff_args(p)
    p = sub.add_parser("run", parents=[common], help="archive, verify, delete, record, notify")
    _cutoff_args(p)
    p.add_argument("--dry-run", action="store_true", help="count only; change nothing")
    p.add_argument("--no-notify", action="store_true", help="do not report to Slack")
    p.add_argument("--batch-size", type=_positive, metavar="N", help="rows per delete transaction")
    p.add_argument("--trigger", default="cli", choices=["cli", "http", "dashboard"], help=argparse.SUPPRESS)
    sub.add_parser("backups", parents=[common], help="list backups")
    p = sub.add_parser("verify", parents=[common], help="check a backup against its manifest")
    p.add_argument("file")
    p = sub.add_parser("restore", parents=[common], help="insert a backup's rows back (present keys skipped)")
    p.add_argument("file")
    p = sub.add_parser("history", parents=[common], help="past runs, newest first")
    p.add_argument("--limit", type=_positive, default=50)
    sub.add_parser("notify-test", parents=[common], help="send a test message to Slack")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "database_url": args.database_url,
        "table": args.table,
        "timestamp_column": args.timestamp_column,
        "backup_dir": args.backup_dir,
    }
    return load_settings(overrides, env_file=args.env_file)


def _print(args: argparse.Namespace, payload: Any, human: str) -> None:
    if args.json:
        sys.stdout.write(json.dumps(to_jsonable(payload), ensure_ascii=False) + "\n")
    elif human:
        sys.stdout.write(human.rstrip("\n") + "\n")


def _fmt_ts(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _run_summary(r: RunResult) -> str:
    head = {
        "success": f"archived and deleted {r.rows_deleted:,} rows of {r.table} older than {_fmt_ts(r.cutoff)}",
        "nothing_to_do": f"nothing to do: no row of {r.table} is older than {_fmt_ts(r.cutoff)}",
        "dry_run": f"dry run: {r.rows_matched:,} rows of {r.table} are older than {_fmt_ts(r.cutoff)}; nothing changed",
        "failed": f"cleanup of {r.table} FAILED: {r.error}",
    }.get(r.status, f"{r.status}: {r.table}")
    lines = [head]
    if r.backup_file:
        lines.append(f"backup:   {r.backup_file} ({_size(r.backup_bytes)}, sha256 {r.sha256})")
    if r.recovered_runs:
        lines.append(f"recovered interrupted runs: {', '.join(r.recovered_runs)}")
    lines.append(f"run:      {r.run_id} in {r.duration_s:.1f} s; Slack: {r.notification}"
                 + (f" ({r.notification_detail})" if r.notification_detail and r.notification != "sent" else ""))
    return "\n".join(lines)


def _progress_bar() -> Any:
    if not sys.stderr.isatty():
        return None

    def draw(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} rows")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return draw


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    settings = _settings(args)
    if cmd == "demo-data":
        r = demo.demo_data(settings, rows=args.rows, days=args.days, seed=args.seed)
        _print(args, r, f"inserted {r.rows_inserted:,} demo rows into {r.table}"
               + (" (table created)" if r.created_table else ""))
    elif cmd == "stats":
        s = table_stats(settings)
        lines = [f"{s.table}: {s.total_rows:,} rows, oldest {_fmt_ts(s.oldest)}, newest {_fmt_ts(s.newest)}"]
        if s.table_bytes is not None:
            lines.append(f"size on disk: {_size(s.table_bytes)}")
        lines += [f"  {b.label:>12}: {b.rows:,}" for b in s.buckets]
        lines += [f"warning: {w}" for w in s.warnings]
        _print(args, s, "\n".join(lines))
    elif cmd == "preview":
        p = preview(settings, cutoff=args.cutoff, retention_days=args.retention_days)
        lines = [f"{p.rows_to_delete:,} of {p.total_rows:,} rows of {p.table} are older than {_fmt_ts(p.cutoff)}",
                 f"oldest {_fmt_ts(p.oldest)}, newest affected {_fmt_ts(p.newest)}; nothing was changed"]
        lines += [f"warning: {w}" for w in p.warnings]
        _print(args, p, "\n".join(lines))
    elif cmd == "run":
        quiet = not (args.verbose or sys.stdout.isatty())
        r = cleanup.run_cleanup(
            settings, cutoff=args.cutoff, retention_days=args.retention_days, dry_run=args.dry_run,
            notify=not args.no_notify, batch_size=args.batch_size, trigger=args.trigger,
            progress=None if args.json else _progress_bar(),
        )
        if r.status == "failed":
            _print(args, r, "")
            sys.stderr.write(f"error: cleanup of {r.table} failed: {r.error} (run {r.run_id})\n")
            return 1
        _print(args, r, "" if quiet else _run_summary(r))
    elif cmd == "backups":
        items = backups.list_backups(settings)
        lines = [f"{b.file}\n    {b.rows:,} rows of {b.table}, cutoff {_fmt_ts(b.cutoff)}, created "
                 f"{_fmt_ts(b.created_at)}, {_size(b.size_bytes)}, sha256 {b.sha256}" for b in items]
        _print(args, {"backups": items}, "\n".join(lines) or f"no backups in {settings.backup_dir}")
    elif cmd == "verify":
        v = backups.verify_backup(settings, args.file)
        _print(args, v, f"OK: {v.file}: {v.rows:,} rows, sha256 {v.sha256}" if v.ok else "")
        if not v.ok:
            sys.stderr.write(f"error: {v.file} does not verify: {v.problem}\n")
            return 1
    elif cmd == "restore":
        r = backups.restore_backup(settings, args.file)
        _print(args, r, f"restored {r.rows_restored:,} rows into {r.table}; {r.rows_skipped:,} already present")
    elif cmd == "history":
        runs = cleanup.list_history(settings, limit=args.limit)
        lines = [f"{_fmt_ts(r.started_at)}  {r.status:<13} {r.trigger:<9} {r.rows_deleted:>10,} rows  "
                 f"Slack {r.notification:<7} {r.run_id}" + (f"\n    error: {r.error}" if r.error else "")
                 for r in runs]
        _print(args, {"runs": runs}, "\n".join(lines) or "no runs yet")
    elif cmd == "notify-test":
        o = notify.send_test_message(settings)  # type: ignore[attr-defined]
        _print(args, o, f"Slack: {o.status}" + (f" ({o.detail})" if o.detail else ""))
        if o.status == "failed":
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.CRITICAL + 1
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # libraries set their own logger levels (SQLAlchemy: WARN),
        handler.setLevel(level)  # so the root level alone would let their errors and tracebacks through
    if not args.debug:
        # psycopg2 prints an error it could not decode (a connection killed mid-COPY) through
        # sys.excepthook, then raises its own; that second one is what we report, in one line.
        sys.excepthook = lambda *exc: log.debug("exception printed by a library", exc_info=exc)
    try:
        return _dispatch(args)
    except RetentionError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"error: {exc.one_line()}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; the next run recovers anything unfinished\n")
        return 1
    except Exception as exc:  # a bug: one line unless --debug
        if args.debug:
            raise
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())} "
                         "(run with --debug for the traceback)\n")
        return 1
