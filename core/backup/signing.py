"""Manifest signing with ``BACKUP_SIGNING_KEY``: an HMAC-SHA256 of the manifest's canonical content.

The canonical content is the manifest's JSON without its ``signature`` field, keys
sorted, no spaces, UTF-8. Someone who can write BACKUP_DIR but does not hold the key
cannot make a manifest (nor change one, e.g. its ``sha256`` and ``rows`` after forging
the data file) that verifies. Pure functions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

SIGNATURE_FIELD = "signature"
UNSIGNED = ("the manifest is not signed, and BACKUP_SIGNING_KEY is set "
            "(restore --allow-unsigned accepts a backup made before the key)")
FORGED = "the manifest's signature does not match (changed after it was written, or signed with another key)"


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes that are signed: the manifest without its signature, as sorted compact JSON."""
    body = {k: v for k, v in manifest.items() if k != SIGNATURE_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signature_of(manifest: dict[str, Any], key: str) -> str:
    """The hex HMAC-SHA256 of the manifest's canonical content under ``key``."""
    return hmac.new(key.encode("utf-8"), canonical(manifest), hashlib.sha256).hexdigest()


def signed(manifest: dict[str, Any], key: str | None) -> dict[str, Any]:
    """``manifest`` with its ``signature`` (unchanged without a key)."""
    if not key:
        return manifest
    return {**manifest, SIGNATURE_FIELD: signature_of(manifest, key)}


def signature_problem(manifest: dict[str, Any], key: str | None, *, allow_unsigned: bool = False) -> str | None:
    """Why the manifest's signature is refused under ``key``, or None (also when no key is set).

    A wrong signature is always refused; a missing one unless ``allow_unsigned``.
    """
    if not key:
        return None
    given = manifest.get(SIGNATURE_FIELD)
    if given is None:
        return None if allow_unsigned else UNSIGNED
    if not isinstance(given, str) or not hmac.compare_digest(given, signature_of(manifest, key)):
        return FORGED
    return None
