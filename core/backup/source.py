"""Which database and table a backup came from, and whether it may go back into this one.

A manifest's ``source`` (written by :func:`core.backup.manifest.source_of`) names the
dialect, database, schema and table: names, not OIDs, and not the server, so a table that
was recreated, or a database moved to a new server, still matches. Version-1 manifests
have no ``source``: they match when their table name does (as before).
"""

from __future__ import annotations

from typing import Any

from ..errors import Msg, OtherSource
from ..i18n import N_

_COMPARED = ("dialect", "database", "schema", "table")


def _norm(source: dict[str, Any]) -> tuple[Any, ...]:
    schema = source.get("schema")
    if source.get("dialect") == "postgresql" and schema is None:
        schema = "public"
    return (source.get("dialect"), source.get("database"), schema, source.get("table"))


def same_source(recorded: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """Whether a backup's recorded source is the current database and table (True without a record)."""
    return recorded is None or _norm(recorded) == _norm(current)


def source_msg(source: dict[str, Any] | None) -> Msg:
    """The words of :func:`describe_source`, translatable (inside an error message)."""
    if not source:
        return Msg(N_("an unrecorded source"))
    table = ".".join(str(x) for x in (source.get("schema"), source.get("table")) if x)
    return Msg(N_("{dialect} database {database}, table {table}"), {"dialect": source.get("dialect"),
                                                                    "database": source.get("database"),
                                                                    "table": table})


def describe_source(source: dict[str, Any] | None) -> str:
    """'postgresql database app, table public.conversation_log' — for messages and labels, in the active
    language (English in the core's own records)."""
    from ..i18n import _

    return source_msg(source).render(_)


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
    raise OtherSource(N_("{name} is a backup of {recorded}, not of {current} (restore --force-other-source to "
                         "insert its rows anyway)"), name=name, recorded=source_msg(recorded),
                      current=source_msg(current))


__all__ = ["check_source", "current_source", "describe_source", "same_source"]
