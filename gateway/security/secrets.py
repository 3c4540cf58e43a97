"""Opaque secrets: generation and at-rest digests (never stored in the clear)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["keyed_digest", "new_opaque_token", "sha256_hex"]


def new_opaque_token(n_bytes: int = 32) -> str:
    """A URL-safe random token with `n_bytes` of entropy."""
    return secrets.token_urlsafe(n_bytes)


def sha256_hex(value: str) -> str:
    """Digest of a high-entropy token (a plain hash suffices; there is nothing to brute-force)."""
    return hashlib.sha256(value.encode()).hexdigest()


def keyed_digest(pepper: str, value: str) -> str:
    """HMAC-SHA-256 for human-chosen secrets that must still be looked up by value."""
    return hmac.new(pepper.encode(), value.encode(), hashlib.sha256).hexdigest()
