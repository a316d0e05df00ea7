"""Events API authentication: HTTP Basic with an input's key and secret, cached in memory."""

from __future__ import annotations

import base64
import binascii
import threading

from milepost.catalog import Catalog, Input
from milepost.errors import Forbidden, Unauthorized


def parse_basic(header: str | None) -> tuple[str, str]:
    if not header:
        raise Unauthorized("missing Authorization header: use HTTP Basic with the input's API key and secret")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized("the Authorization header must use HTTP Basic with the input's API key and secret")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("the Authorization header is not valid Basic credentials") from None
    key, sep, secret = decoded.partition(":")
    if not sep:
        raise Unauthorized("Basic credentials must be 'key:secret'")
    return key, secret


class InputDirectory:
    """Inputs by API key, with verified secrets remembered until the catalog changes."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._lock = threading.Lock()
        self._by_key: dict[str, Input | None] = {}
        self._verified: set[tuple[str, str]] = set()

    def invalidate(self) -> None:
        with self._lock:
            self._by_key.clear()
            self._verified.clear()

    def authenticate(self, header: str | None) -> Input:
        key, secret = parse_basic(header)
        with self._lock:
            cached = key in self._by_key
            inp = self._by_key.get(key)
            ok = (key, secret) in self._verified
        if not cached:
            inp = self.catalog.input_by_key(key)
            with self._lock:
                self._by_key[key] = inp
        if inp is None:
            raise Forbidden("unknown API key")
        if not ok:
            if not self.catalog.check_input_secret(inp, secret):
                raise Forbidden("wrong API secret for this key")
            with self._lock:
                self._verified.add((key, secret))
        if not inp.enabled:
            raise Forbidden(f"input '{inp.name}' is disabled; enable it to send data")
        return inp
