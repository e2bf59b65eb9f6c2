"""Log Retention Console core: archive old log rows, delete exactly those, report.

Front ends (CLI, dashboard, HTTP trigger) call the verbs re-exported here. This
package never imports Streamlit. The module map is in docs/design.md.
"""

from .backup import iter_spreadsheet_safe, list_backups, resolve_backup, restore_backup, verify_backup
from .cleanup import get_run_result, list_history, recover_interrupted, run_cleanup
from .config import Settings, load_settings
from .db import cleanup_running
from .demo import demo_data
from .errors import (
    BackupMismatch,
    BackupNotFound,
    BadSetting,
    CleanupFailed,
    DatabaseUnavailable,
    LockHeld,
    RestoreError,
    RetentionError,
)
from .runs import start_cleanup
from .stats import estimate_backup_bytes, preview, preview_sample, stats

__all__ = [
    "BackupMismatch", "BackupNotFound", "BadSetting", "CleanupFailed", "DatabaseUnavailable", "LockHeld",
    "RestoreError", "RetentionError", "Settings", "cleanup_running", "demo_data", "estimate_backup_bytes",
    "get_run_result", "iter_spreadsheet_safe", "list_backups", "list_history", "load_settings", "preview",
    "preview_sample", "recover_interrupted", "resolve_backup", "restore_backup", "run_cleanup", "start_cleanup",
    "stats", "verify_backup",
]
