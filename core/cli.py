"""``python -m core COMMAND``: parse, call one core function, print, exit.

Each command is one small function, chosen by its subparser (``set_defaults(func=…)``).
A command prints its result (``--json``: exactly one JSON object; else the human text
from :mod:`core.present`) and raises :class:`RetentionError` when the operation failed;
:func:`main` turns that into one line on stderr and the error's exit code, in one place.

Exit status: 0 done; 1 the operation failed; 2 bad usage or configuration; 3 another
cleanup holds the lock.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from typing import Any, Sequence

from . import backup, cleanup, demo, i18n, multirun, notify, policies
from .checks import check_days, to_int
from .config import SPECS, Settings, language_of_sources, load_settings
from .errors import BadSetting, CleanupFailed, RetentionError
from .i18n import N_, _, ngettext
from .masking import install_log_redaction, redact
from .models import NotifyStatus, PoliciesResult, RunResult, RunStatus, to_jsonable
from .present import (
    count,
    human_bytes,
    human_duration,
    lead_sentence,
    space_sentence,
    status_label,
    timestamp,
    trigger_label,
)
from .stats import preview
from .stats import stats as table_stats

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        sys.stderr.write(f"error: {message} (see python -m core {self.prog.split()[-1]} --help)\n")
        raise SystemExit(2)


# ---------------------------------------------------------------------------
# Output


def _print(args: argparse.Namespace, payload: Any, human: str) -> None:
    """``payload`` as one JSON object with ``--json``, else ``human`` (nothing when empty)."""
    if args.json:
        sys.stdout.write(redact(json.dumps(to_jsonable(payload), ensure_ascii=False)) + "\n")
    elif human:
        sys.stdout.write(redact(human.rstrip("\n")) + "\n")


def _run_text(r: RunResult) -> str:
    lines = [lead_sentence(r)]
    if r.backup_file:
        lines.append(_("backup:    {file} ({size}, sha256 {sha256})").format(
            file=r.backup_file, size=human_bytes(r.backup_bytes), sha256=r.sha256))
    if space_sentence(r):
        lines.append(_("space:     {text}").format(text=space_sentence(r)))
    if r.recovered_runs:
        lines.append(_("recovered: interrupted runs {runs}").format(runs=", ".join(r.recovered_runs)))
    lines += [_("note:      {note}").format(note=n) for n in r.notes]
    detail = f" ({_(r.notification_detail)})" if r.notification_detail and r.notification != "sent" else ""
    lines.append(_("run:       {run} in {duration}; Slack: {slack}{detail}").format(
        run=r.run_id, duration=human_duration(r.duration_s), slack=NotifyStatus(r.notification).label, detail=detail))
    return "\n".join(lines)


def _progress_bar() -> Any:
    """A progress callback drawing a bar on stderr, or None when stderr is not a terminal."""
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


# ---------------------------------------------------------------------------
# Commands: (parsed arguments, settings) -> None; a failure is a RetentionError


def cmd_demo_data(args: argparse.Namespace, settings: Settings) -> None:
    r = demo.demo_data(settings, rows=args.rows, days=args.days, seed=args.seed)
    _print(args, r, ngettext("inserted {n} demo row into {table}", "inserted {n} demo rows into {table}",
                             r.rows_inserted).format(n=count(r.rows_inserted), table=r.table)
           + (_(" (table created)") if r.created_table else ""))


def cmd_stats(args: argparse.Namespace, settings: Settings) -> None:
    s = table_stats(settings)
    lines = [_("{table}: {rows}, oldest {oldest}, newest {newest}").format(
        table=s.table, rows=i18n.rows(s.total_rows), oldest=timestamp(s.oldest), newest=timestamp(s.newest))]
    if s.table_bytes is not None:
        lines.append(_("size on disk: {size}").format(size=human_bytes(s.table_bytes)))
    lines += [f"  {_(b.label):>12}: {count(b.rows)}" for b in s.buckets]
    lines += [_("warning: {text}").format(text=w) for w in s.warnings]
    _print(args, s, "\n".join(lines))


def cmd_preview(args: argparse.Namespace, settings: Settings) -> None:
    p = preview(settings, cutoff=args.cutoff, retention_days=args.retention_days)
    lines = [ngettext("{n} of {total} row of {table} is older than {cutoff}",
                      "{n} of {total} rows of {table} are older than {cutoff}", p.total_rows).format(
        n=count(p.rows_to_delete), total=count(p.total_rows), table=p.table, cutoff=timestamp(p.cutoff)),
             _("oldest {oldest}, newest affected {newest}; nothing was changed").format(
                 oldest=timestamp(p.oldest), newest=timestamp(p.newest))]
    lines += [_("warning: {text}").format(text=w) for w in p.warnings]
    _print(args, p, "\n".join(lines))


def cmd_run(args: argparse.Namespace, settings: Settings) -> None:
    """The cleanup. Quiet on success when stdout is not a terminal (cron mails only failures)."""
    if args.allow_delete_triggers:
        settings = settings.with_overrides(allow_delete_triggers=True)
    max_runtime_s = None if args.max_runtime is None else 60 * args.max_runtime
    if args.all:
        return _run_all(args, settings, max_runtime_s)
    r = cleanup.run_request(settings, request=cleanup.CleanupRequest(
        cutoff=args.cutoff, retention_days=args.retention_days, dry_run=args.dry_run,
        notify=not args.no_notify, batch_size=args.batch_size, trigger=args.trigger,
        progress=None if args.json else _progress_bar(), max_runtime_s=max_runtime_s,
    ))
    if r.status == RunStatus.FAILED:
        _print(args, r, "")
        raise CleanupFailed(N_("cleanup of {table} failed: {error} (run {run})"), run_id=r.run_id, table=r.table,
                            error=r.error, run=r.run_id)
    quiet = not (args.verbose or sys.stdout.isatty())
    _print(args, r, "" if quiet else _run_text(r))


def _run_all(args: argparse.Namespace, settings: Settings, max_runtime_s: float | None) -> None:
    """``run --all``: every policy in turn; exits 1 when one failed, 3 when one was locked (and none failed)."""
    if args.cutoff or args.retention_days is not None or args.batch_size:
        raise BadSetting("--all", None, "takes each policy's retention and batch size; drop --cutoff, "
                         "--retention-days and --batch-size")
    request = cleanup.CleanupRequest(dry_run=args.dry_run, notify=not args.no_notify, trigger=args.trigger,
                                     max_runtime_s=max_runtime_s)
    result = multirun.run_policies(settings, request)
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
    elif args.verbose or sys.stdout.isatty() or result.exit_code:
        sys.stdout.write("\n".join(f"{p.table}: {status_label(p.result)}: {lead_sentence(p.result)}"
                                   for p in result.runs) + "\n")
    if result.exit_code:
        raise PoliciesFailed(result)


class PoliciesFailed(RetentionError):
    """``run --all`` where a policy failed (exit 1) or was locked by another cleanup (exit 3)."""

    def __init__(self, result: PoliciesResult) -> None:
        self.exit_code = result.exit_code
        bad = [f"{p.table} ({p.status})" for p in result.runs if p.status in (RunStatus.FAILED, RunStatus.LOCKED)]
        super().__init__(f"{len(bad)} of {len(result.runs)} policies did not finish: {', '.join(bad)}")


def cmd_backups(args: argparse.Namespace, settings: Settings) -> None:
    items = backup.list_backups(settings)
    lines = [f"{b.file}\n    " + _("error: {text}").format(text=b.error) if b.error else
             f"{b.file}\n    " + _("{rows} of {table}, cutoff {cutoff}, created {created}, {size}, sha256 {sha256}"
                                    ).format(rows=i18n.rows(b.rows or 0), table=b.table, cutoff=timestamp(b.cutoff),
                                             created=timestamp(b.created_at), size=human_bytes(b.size_bytes),
                                             sha256=b.sha256)
             + "".join(f"\n    {loc['kind']}: {loc['where']}" for loc in b.locations) for b in items]
    _print(args, {"backups": items}, "\n".join(lines) or _("no backups in {dir}").format(dir=settings.backup_dir))


def cmd_expire_backups(args: argparse.Namespace, settings: Settings) -> None:
    from .backup.expiry import expire_backups

    r = expire_backups(settings, dry_run=args.dry_run)
    if not args.no_notify:
        from .notify.expiry import notify_expiry

        notify_expiry(settings, r)
    verb = _("would delete {name} ({rows} of {table}, created {created}) from {where}") if r.dry_run else _(
        "deleted {name} ({rows} of {table}, created {created}) from {where}")
    lines = [verb.format(name=e.name, rows=i18n.rows(e.rows or 0), table=e.table, created=timestamp(e.created_at),
                         where=", ".join(e.removed_from)) for e in r.expired]
    lines += [_("kept {name}: the newest backup of its table").format(name=n) for n in r.kept_newest]
    _print(args, r, "\n".join(lines) or (_("BACKUP_RETENTION_DAYS is unset: backups are kept forever")
                                         if r.retention_days is None else _("no backup has expired")))


def cmd_verify(args: argparse.Namespace, settings: Settings) -> None:
    v = backup.verify_backup(settings, args.file)
    _print(args, v, _("OK: {file}: {rows}, sha256 {sha256}").format(
        file=v.file, rows=i18n.rows(v.rows or 0), sha256=v.sha256) if v.ok else "")
    if not v.ok:
        raise RetentionError(f"{v.file} does not verify: {v.problem}")


def cmd_restore(args: argparse.Namespace, settings: Settings) -> None:
    r = backup.restore_backup(settings, args.file, allow_unsigned=args.allow_unsigned,
                              force_other_source=args.force_other_source)
    _print(args, r, ngettext("restored {n} row into {table}; {skipped} already present",
                             "restored {n} rows into {table}; {skipped} already present", r.rows_restored).format(
        n=count(r.rows_restored), table=r.table, skipped=count(r.rows_skipped)))


def cmd_history(args: argparse.Namespace, settings: Settings) -> None:
    runs = cleanup.list_history(settings, limit=args.limit)
    lines = [f"{timestamp(r.started_at)}  {status_label(r):<13} {trigger_label(r.trigger):<9} "
             f"{i18n.rows(r.rows_deleted):>14}  Slack {NotifyStatus(r.notification).label:<7} {r.run_id}"
             + ("\n    " + _("error: {text}").format(text=r.error) if r.error else "")
             + ("\n    " + _("space:     {text}").format(text=space_sentence(r)) if space_sentence(r) else "")
             for r in runs]
    _print(args, {"runs": runs}, "\n".join(lines) or _("no runs yet"))


def cmd_notify_test(args: argparse.Namespace, settings: Settings) -> None:
    o = notify.send_test_message(settings)
    _print(args, o, f"Slack: {NotifyStatus(o.status).label}" + (f" ({o.detail})" if o.detail else ""))
    if o.status == "failed":
        raise RetentionError(f"the Slack test message was not sent: {o.detail or 'see --verbose'}")


# ---------------------------------------------------------------------------
# Parser


def _common() -> argparse.ArgumentParser:
    """Options of every command: the settings' override flags (declared in core.config) and output."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("settings (override environment and .env)")
    for name, spec in SPECS.items():
        if spec.flag:
            g.add_argument(spec.flag, dest=name, help=f"{spec.help} ({spec.env})")
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
    """``--retention-days``: the rule of LOG_RETENTION_DAYS (core.checks.check_days)."""
    try:
        return check_days("--retention-days", to_int("--retention-days", text))
    except BadSetting as exc:
        raise argparse.ArgumentTypeError(exc.one_line()) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, not {value}")
    return value


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-runtime must be a number of minutes, not {text!r}") from None
    if not 0 < value <= 7 * 24 * 60:
        raise argparse.ArgumentTypeError(f"--max-runtime must be more than 0 and at most a week, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="python -m core", description="Archive, delete and report old log rows safely.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, func: Any, help: str) -> argparse.ArgumentParser:  # noqa: A002
        p = sub.add_parser(name, parents=[common], help=help)
        p.set_defaults(func=func)
        return p

    p = command("demo-data", cmd_demo_data, "create the table if missing and insert demo rows")
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--seed", type=int, default=42)
    command("stats", cmd_stats, "row counts by age")
    _cutoff_args(command("preview", cmd_preview, "what a cleanup would delete now (changes nothing)"))
    p = command("run", cmd_run, "archive, verify, delete, record, notify")
    _cutoff_args(p)
    p.add_argument("--dry-run", action="store_true", help="count only; change nothing")
    p.add_argument("--no-notify", action="store_true", help="do not report to Slack")
    p.add_argument("--allow-delete-triggers", action="store_true",
                   help="let user DELETE triggers/rules on the table fire (CLEANUP_ALLOW_DELETE_TRIGGERS)")
    p.add_argument("--batch-size", type=_positive, metavar="N", help="rows per delete transaction")
    p.add_argument("--all", action="store_true", help="every policy of RETENTION_POLICIES_FILE, in turn")
    p.add_argument("--max-runtime", type=_minutes, metavar="MINUTES",
                   help="stop between batches after this long (status partial; the next run continues)")
    p.add_argument("--trigger", default="cli", choices=["cli", "http", "dashboard"], help=argparse.SUPPRESS)
    command("backups", cmd_backups, "list backups")
    command("verify", cmd_verify, "check a backup against its manifest").add_argument("file")
    p = command("restore", cmd_restore, "insert a backup's rows back (present keys skipped)")
    p.add_argument("file")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="with BACKUP_SIGNING_KEY set, accept a manifest without a signature (an older backup)")
    p.add_argument("--force-other-source", action="store_true",
                   help="insert a backup of another database or table (its manifest's source) anyway")
    p = command("expire-backups", cmd_expire_backups, "delete backups older than BACKUP_RETENTION_DAYS everywhere")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted; change nothing")
    p.add_argument("--no-notify", action="store_true", help="do not report to Slack")
    command("history", cmd_history, "past runs, newest first").add_argument(
        "--limit", type=_positive, default=50)
    command("notify-test", cmd_notify_test, "send a test message to Slack")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from .env (``--env-file``) and the environment, overridden by the flags given."""
    overrides = {name: getattr(args, name) for name, spec in SPECS.items() if spec.flag}
    settings = load_settings(overrides, env_file=args.env_file)
    if settings.policies_file:  # checked before any command runs; --table NAME picks that policy's settings
        settings = policies.settings_for_table(settings, settings.table)
        if args.timestamp_column:
            settings = settings.with_overrides(timestamp_column=args.timestamp_column)
    return settings


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.CRITICAL + 1
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # libraries set their own logger levels (SQLAlchemy: WARN),
        handler.setLevel(level)  # so the root level alone would let their errors and tracebacks through
    install_log_redaction()  # every record, --debug included, leaves with its secrets masked
    # psycopg2 prints an error it could not decode (a connection killed mid-COPY) through
    # sys.excepthook, then raises its own; that second one is what we report, in one line.
    sys.excepthook = lambda *exc: log.debug("exception printed by a library", exc_info=exc)


def _traceback() -> str:
    """The current exception's traceback (``--debug``), secrets masked."""
    return redact(traceback.format_exc())


def _error_line(args: argparse.Namespace, exc: RetentionError) -> str:
    """One line for stderr: in APP_LANGUAGE for a person (even when the settings did not load), English
    under ``--json`` (what scripts read)."""
    if args.json:
        return f"error: {exc.one_line()}\n"
    language = language_of_sources(env_file=args.env_file)
    with i18n.use(language=language):
        return _("error: {message}").format(message=exc.localized()) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 done, 1 failed, 2 bad usage or setting, 3 locked)."""
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    try:
        settings = _settings(args)
        i18n.configure_from(settings)
        args.func(args, settings)
        return 0
    except RetentionError as exc:  # the one place a library error becomes the CLI's
        sys.stderr.write(_traceback() if args.debug else _error_line(args, exc))
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; the next run recovers anything unfinished\n")
        return 1
    except Exception as exc:  # a bug: one line unless --debug
        if args.debug:
            sys.stderr.write(_traceback())
            return 1
        sys.stderr.write(redact(f"error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())} "
                                "(run with --debug for the traceback)\n"))
        return 1
