"""Which database and table a backup came from, and whether it may go back into this one.

A manifest's ``source`` (written by :func:`core.backup.manifest.source_of`) names the
dialect, database, schema and table: names, not OIDs, and not the server, so a table that
was recreated, or a database moved to a new server, still matches. Version-1 manifests
have no ``source``: they match when their table name does (as before).
"""

from __future__ import annotations

from typing import Any

from ..errors import OtherSource

_COMPARED = ("dialect", "database", "schema", "table")


def _norm(source: dict[str, Any]) -> tuple[Any, ...]:
    schema = source.get("schema")
    if source.get("dialect") == "postgresql" and schema is None:
        schema = "public"
    return (source.get("dialect"), source.get("database"), schema, source.get("table"))


def same_source(recorded: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """Whether a backup's recorded source is the current database and table (True without a record)."""
    return recorded is None or _norm(recorded) == _norm(current)


def describe_source(source: dict[str, Any] | None) -> str:
    """'postgresql database app, table public.conversation_log' — for messages and labels."""
    if not source:
        return "an unrecorded source"
    table = ".".join(str(x) for x in (source.get("schema"), source.get("table")) if x)
    return f"{source.get('dialect')} database {source.get('database')}, table {table}"


def current_source(settings: Any) -> dict[str, Any]:
    """The source a backup of the configured table would record now (reads the table's description)."""
    from ..db import check_connection, describe_table
    from .manifest import source_of

    engine = check_connection(settings)
    return source_of(settings.database_url, describe_table(settings, engine))


def check_source(name: str, recorded: dict[str, Any] | None, current: dict[str, Any], *, force: bool) -> None:
    """Refuse (OtherSource, exit 2) a backup of another database or table unless ``force``."""
    if force or same_source(recorded, current):
        return
    raise OtherSource(f"{name} is a backup of {describe_source(recorded)}, not of {describe_source(current)} "
                       "(restore --force-other-source to insert its rows anyway)")


__all__ = ["check_source", "current_source", "describe_source", "same_source"]
