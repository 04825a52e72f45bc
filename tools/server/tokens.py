"""Bearer tokens: issued at random, stored only as their SHA-256, compared in constant time.

A token is 32 random bytes (URL-safe base64 behind a ``ssk_`` prefix), so a plain hash is
enough: there is nothing to brute-force that a slow password hash would protect.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "ssk_"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def bearer(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive, RFC 6750)."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
