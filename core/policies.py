"""Retention policies: several tables, each with its own retention, from one TOML file.

``RETENTION_POLICIES_FILE`` names a file of ``[[policy]]`` entries::

    [[policy]]
    table = "conversation_log"
    timestamp_column = "created_at"
    retention_days = 30

    [[policy]]
    table = "api_usage"
    timestamp_column = "requested_at"
    retention_days = 90
    batch_size = 10000   # optional: CLEANUP_BATCH_SIZE for this table
    pause_ms = 50        # optional: CLEANUP_PAUSE_MS for this table

The file is read only when the setting names it. A bad file (missing, not TOML, an
unknown key, a duplicate table, a bad value) is refused with one line naming the file,
the policy and the key (:class:`BadPolicy`, exit 2), before anything runs. Each policy
becomes a :class:`~core.config.Settings` of its own (:func:`policy_settings`): every
other setting (database, backups, Slack, pacing) is shared.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from .config import SPECS, Settings
from .errors import BadSetting

FILE_SETTING = "RETENTION_POLICIES_FILE"
REQUIRED = ("table", "timestamp_column", "retention_days")
OPTIONAL = ("batch_size", "pause_ms")
# policy key -> Settings field whose check (and README row) it shares
_FIELDS = {"table": "table", "timestamp_column": "timestamp_column", "retention_days": "retention_days",
           "batch_size": "batch_size", "pause_ms": "pause_ms"}


class BadPolicy(BadSetting):
    """The policy file is unusable; the message names the file, the policy and the key. Exit 2."""

    def __init__(self, path: str, where: str, why: str) -> None:
        super().__init__(FILE_SETTING, None, why)
        self._reword("{setting} {path}: {where}: {why}", setting=FILE_SETTING, path=path, where=where, why=self.why_msg)


@dataclass(frozen=True)
class Policy:
    """One table's retention: what :func:`policy_settings` applies over the shared settings."""

    table: str
    timestamp_column: str
    retention_days: int
    batch_size: int | None = None
    pause_ms: int | None = None


def load_policies(path: str) -> tuple[Policy, ...]:
    """The policies of the file at ``path``, in file order. Raises BadPolicy; reads only that file."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadPolicy(path, "file", "does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadPolicy(path, "file", f"cannot be read ({exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadPolicy(path, "file", f"is not valid TOML: {exc}") from None
    extra = sorted(set(doc) - {"policy"})
    if extra:
        raise BadPolicy(path, f"key {extra[0]!r}", "unknown top-level key (expected [[policy]] entries)")
    entries = doc.get("policy")
    if not isinstance(entries, list) or not entries:
        raise BadPolicy(path, "file", "holds no [[policy]] entry")
    policies: list[Policy] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        policy = _policy(path, number, entry)
        if policy.table in seen:
            raise BadPolicy(path, f"policy {number} ({policy.table})", f"key 'table': duplicate of policy "
                            f"{seen[policy.table]}")
        seen[policy.table] = number
        policies.append(policy)
    return tuple(policies)


def _policy(path: str, number: int, entry: object) -> Policy:
    if not isinstance(entry, dict):
        raise BadPolicy(path, f"policy {number}", "is not a table of keys")
    label = f"policy {number}" + (f" ({entry['table']})" if isinstance(entry.get("table"), str) else "")
    for key in entry:
        if key not in _FIELDS:
            raise BadPolicy(path, label, f"key {key!r}: unknown (expected {', '.join(REQUIRED + OPTIONAL)})")
    for key in REQUIRED:
        if key not in entry:
            raise BadPolicy(path, label, f"key {key!r}: missing")
    values = {}
    for key, value in entry.items():
        spec = SPECS[_FIELDS[key]]
        if key in ("table", "timestamp_column") and not isinstance(value, str):
            raise BadPolicy(path, label, f"key {key!r} = {value!r}: must be a string")
        try:
            typed = spec.parse(spec.env, value)
            if spec.check is not None:
                spec.check(spec.env, typed)
        except BadSetting as exc:
            raise BadPolicy(path, label, f"key {key!r} = {value!r}: {exc.why}") from None
        values[key] = typed
    return Policy(**values)


def policies_of(settings: Settings) -> tuple[Policy, ...]:
    """The configured policies; () without RETENTION_POLICIES_FILE. Raises BadPolicy."""
    return load_policies(settings.policies_file) if settings.policies_file else ()


def policy_settings(settings: Settings, policy: Policy) -> Settings:
    """``settings`` with one policy's table, column, retention and optional batch size and pause."""
    return settings.with_overrides(table=policy.table, timestamp_column=policy.timestamp_column,
                                   retention_days=policy.retention_days, batch_size=policy.batch_size,
                                   pause_ms=policy.pause_ms)


def find_policy(policies: tuple[Policy, ...], table: str) -> Policy | None:
    return next((p for p in policies if p.table == table), None)


def settings_for_table(settings: Settings, table: str | None) -> Settings:
    """With a policy file: the settings of the policy for ``table`` (else of ``settings.table``'s policy,
    if there is one); without a file, or for a table no policy names, ``settings`` as they are."""
    policy = find_policy(policies_of(settings), table or settings.table)
    return policy_settings(settings, policy) if policy else settings


def every_policy(settings: Settings, only: str | None = None) -> list[Settings]:
    """The settings of every policy (or of the one for table ``only``), validated up front.

    Raises BadSetting when no policy file is set, BadPolicy for a bad file, and BadSetting
    naming ``only`` when no policy has that table.
    """
    if not settings.policies_file:
        raise BadSetting(FILE_SETTING, None, "is not set: --all needs a policy file")
    policies = policies_of(settings)
    if only is not None:
        policy = find_policy(policies, only)
        if policy is None:
            raise BadSetting("table", only, f"no policy in {settings.policies_file} has this table "
                             f"(policies: {', '.join(p.table for p in policies)})")
        policies = (policy,)
    return [policy_settings(settings, p) for p in policies]
