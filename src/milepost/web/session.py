"""The web UI's session cookie: the API token, encrypted with a key kept in the data directory.

The cookie holds the token sealed with Fernet (AES + HMAC), so a revoked token ends every session
that carries it, and the token itself never reaches the browser's script-visible storage. The CSRF
token is derived from the cookie, so a page from another site cannot forge it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

COOKIE = "milepost_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 12 * 3600
KEY_FILE = "web-session.key"


class SessionCodec:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._mac_key = hashlib.sha256(b"csrf:" + key).digest()

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SessionCodec:
        """The codec of a data directory; the key is created on first use, readable by its owner only."""
        path = data_dir / KEY_FILE
        try:
            key = path.read_bytes().strip()
        except FileNotFoundError:
            key = Fernet.generate_key()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another request created it first
                return cls(path.read_bytes().strip())
            with os.fdopen(fd, "wb") as f:
                f.write(key)
        return cls(key)

    def seal(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def open(self, cookie: str | None) -> str | None:
        """The token inside a session cookie, or None if it is missing, forged or expired."""
        if not cookie:
            return None
        try:
            return self._fernet.decrypt(cookie.encode(), ttl=SESSION_TTL_S).decode()
        except (InvalidToken, ValueError):
            return None

    def csrf(self, cookie: str) -> str:
        digest = hmac.new(self._mac_key, cookie.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def csrf_ok(self, cookie: str, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(self.csrf(cookie), sent)


def codec_of(state: object) -> SessionCodec:
    """The app's codec, created once per app from the runtime's data directory."""
    codec: SessionCodec | None = getattr(state, "sessions", None)
    if codec is None:
        runtime = state.runtime  # type: ignore[attr-defined]
        codec = SessionCodec.for_data_dir(runtime.config.data_dir)
        state.sessions = codec  # type: ignore[attr-defined]
    return codec
