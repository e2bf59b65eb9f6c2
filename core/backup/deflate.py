"""Deflate for backup files: ISA-L (the ``isal`` package) when it is installed, else zlib.

Both produce standard gzip members (RFC 1952): ``zcat``, Python's ``gzip`` and this
tool read either, so the choice only changes speed. On chat text ISA-L's igzip level 1
compresses about 4.5x faster than zlib level 1, with a slightly smaller output, and
decompresses about 3x faster (docs/benchmarks.md); both release the GIL. ISA-L has
levels 1 to 3 only, so ``BACKUP_GZIP_LEVEL`` 0 (stored) and 4 to 9 use zlib.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

try:
    from isal import __version__ as _isal_version
    from isal import isal_zlib as _isal
except ImportError:  # no wheel for this platform: zlib does the same job, slower
    _isal = None
    _isal_version = ""

GZIP_WBITS = 31  # gzip header and trailer (CRC32 and length), checked on decompression
ISAL_LEVELS = range(1, 4)

# Whether to use ISA-L when it is installed; tests set this to False to cover the zlib path.
prefer_isal = True

# What a decompressor raises on corrupt data (zlib.error, or ISA-L's IsalError).
DeflateError: tuple[type[Exception], ...] = (zlib.error,) + ((_isal.error,) if _isal is not None else ())


@dataclass(frozen=True)
class Codec:
    """A gzip compressor at one level: ``library`` is what the manifest records."""

    library: str
    level: int

    def compressobj(self) -> Any:
        """A new compressor for one gzip member (``compress``/``flush``, as zlib's)."""
        if _isal is not None and self.library.startswith("isal"):
            return _isal.compressobj(self.level, _isal.DEFLATED, GZIP_WBITS)
        return zlib.compressobj(self.level, zlib.DEFLATED, GZIP_WBITS)


def codec_for(level: int) -> Codec:
    """The fastest available gzip compressor for ``level`` (0-9, zlib's scale)."""
    if _isal is not None and prefer_isal and level in ISAL_LEVELS:
        return Codec(f"isal {_isal_version}", level)
    return Codec(f"zlib {zlib.ZLIB_RUNTIME_VERSION}", level)


def decompressobj() -> Any:
    """A decompressor for one gzip member: ``decompress``, ``eof``, ``unused_data`` as zlib's.

    Raises one of :data:`DeflateError` on corrupt data, a wrong CRC32 or length included.
    """
    if _isal is not None and prefer_isal:
        return _isal.decompressobj(GZIP_WBITS)
    return zlib.decompressobj(GZIP_WBITS)
