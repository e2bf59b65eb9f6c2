"""Cached reads for the pages (``st.cache_data``), cleared after a cleanup or restore.

Only aggregate reads are cached: stats (one table scan, the costliest page query)
and the backup listing. Previews are not cached: they are one indexed count, and a
cached one could show a stale number in a confirmation.
"""

from __future__ import annotations

import streamlit as st

from core import Settings, i18n, list_backups, stats
from core.i18n import _
from core.models import BackupInfo, Stats

from .state import settings_key

STATS_TTL_S = 60


@st.cache_data(ttl=STATS_TTL_S, show_spinner=False, max_entries=16)
def _stats(key: str, zone: str, _settings: Settings) -> Stats:  # noqa: ARG001 (key and zone are the cache key)
    return stats(_settings, zone=zone)


@st.cache_data(ttl=STATS_TTL_S, show_spinner=False, max_entries=16)
def _backups(key: str, _settings: Settings) -> list[BackupInfo]:  # noqa: ARG001
    return list_backups(_settings)


def cached_stats(settings: Settings) -> Stats:
    """Counts by age and per day of the session's display zone (raises RetentionError), cached for a
    minute per database, table and zone."""
    with st.spinner(_("Counting rows by age…"), show_time=True):
        return _stats(settings_key(settings), i18n.display_zone(), settings)


def cached_backups(settings: Settings) -> list[BackupInfo]:
    return _backups(settings_key(settings), settings)


def clear_caches() -> None:
    """Forget cached counts and listings: after a cleanup or a restore changed them."""
    _stats.clear()
    _backups.clear()
