"""Generation and hashing of input keys, input secrets and API tokens.

Only hashes are stored. The secrets are high-entropy random strings, so a single SHA-256 is enough;
a slow password hash would only cost time on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "mp_"


def new_input_key() -> str:
    """A fresh Events API key: 32 lowercase hex characters."""
    return secrets.token_hex(16)


def new_input_secret() -> str:
    """A fresh Events API secret, shown to the user once."""
    return secrets.token_urlsafe(32)


def hash_input_secret(key: str, secret: str) -> str:
    """The stored form of an input secret; the key is mixed in so equal secrets never share a hash."""
    return hashlib.sha256(f"{key}:{secret}".encode()).hexdigest()


def input_secret_matches(key: str, secret: str, stored_hash: str) -> bool:
    """Whether `secret` is the one whose hash was stored, compared in constant time."""
    return hmac.compare_digest(hash_input_secret(key, secret), stored_hash)


def new_token() -> str:
    """A fresh management API bearer token, shown to the user once."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(plaintext: str) -> str:
    """The stored (and looked-up) form of an API token."""
    return hashlib.sha256(plaintext.encode()).hexdigest()
