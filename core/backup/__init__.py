"""Backup files, in the order a run uses them.

- ``writer``: gzip members appended to a new file, each read back and fsynced (:class:`MemberWriter`)
- ``scan``: read a file back, count its CSV records, hash it (the one decompression loop)
- ``csvfile``: the CSV convention (PostgreSQL ``COPY``), encoding rows and parsing records
- ``deflate``: ISA-L or zlib, same gzip either way
- ``manifest``: file names, the manifest (build, read, write atomically) and the one check against it
- ``finish``: cut a backup back to the journal, verify it, publish it under its final name
- ``store``: the :class:`BackupStore` interface and the local folder (BACKUP_DIR)
- ``catalog``: what users see: resolve a name, list, verify
- ``restore``: put a backup's rows back into the table
"""

from .catalog import iter_spreadsheet_safe, list_backups, resolve_backup, verify_backup
from .restore import restore_backup

__all__ = ["iter_spreadsheet_safe", "list_backups", "resolve_backup", "restore_backup", "verify_backup"]
