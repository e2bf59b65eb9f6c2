"""Where finished backups live: the :class:`BackupStore` interface and the local folder.

A store holds objects under their final names (``<name>.csv.gz`` and
``<name>.manifest.json``); an object appears under its final name only when complete.
:class:`LocalFolderStore` is BACKUP_DIR; object stores (S3, Google Drive) implement
the same five operations.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

from ..errors import BackupNotFound, BadSetting
from ..i18n import N_
from .writer import fsync_dir


class BackupStore(Protocol):
    """Final backup objects by name. Names are plain file names, never paths."""

    def put(self, name: str, source: Path) -> None:
        """Publish the complete local file ``source`` as ``name``; never overwrites (FileExistsError)."""

    def get(self, name: str) -> Path:
        """A local, readable path holding the object's bytes. Raises BackupNotFound."""

    def list(self, suffix: str = "") -> list[str]:
        """Names of the objects ending in ``suffix``, in no particular order."""

    def delete(self, name: str) -> None:
        """Remove the object; no error when it is already gone."""

    def exists(self, name: str) -> bool:
        """Whether an object of that name is there."""


class LocalFolderStore:
    """BACKUP_DIR as a store: publishing is a hard link (never overwriting) and a directory fsync."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def prepare(cls, backup_dir: str | os.PathLike[str]) -> LocalFolderStore:
        """Create the folder if needed and prove it writable. Raises BadSetting (BACKUP_DIR)."""
        path = Path(backup_dir).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise BadSetting("BACKUP_DIR", str(path), N_("is not a writable folder ({error})"), error=exc.strerror) from None
        return cls(path.resolve())

    def path(self, name: str) -> Path:
        if not name or Path(name).name != name:
            raise BackupNotFound(name, N_("is not a plain file name"))
        return self.root / name

    def put(self, name: str, source: Path) -> None:
        """Move ``source`` (in this folder) to ``name``: link, unlink, fsync the folder."""
        target = self.path(name)
        os.link(source, target, follow_symlinks=False)  # FileExistsError instead of overwriting anything
        os.unlink(source)
        fsync_dir(self.root)

    def get(self, name: str) -> Path:
        target = self.path(name)
        if not target.is_file():
            raise BackupNotFound(name, N_("no such backup in {folder}"), folder=str(self.root))
        return target

    def list(self, suffix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if p.name.endswith(suffix) and not p.name.startswith(".")]

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)
        fsync_dir(self.root)

    def exists(self, name: str) -> bool:
        return self.path(name).exists()
