"""Output URLs may not reach link-local, loopback or private addresses unless the operator allows it
(`MILEPOST_ALLOW_PRIVATE_OUTPUTS`), so an output cannot be used to probe internal services (SPEC §6)."""

from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlsplit

ALLOW_PRIVATE_ENV = "MILEPOST_ALLOW_PRIVATE_OUTPUTS"


class UrlRefused(ValueError):
    """The URL is malformed or points at an address outputs may not reach."""


def private_outputs_allowed(environ: dict[str, str] | None = None) -> bool:
    value = (environ if environ is not None else os.environ).get(ALLOW_PRIVATE_ENV, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_url(url: object, *, allow_private: bool, resolve: bool = True) -> str:
    """The URL if outputs may send to it, else UrlRefused. With `resolve`, host names are looked up
    and refused when any of their addresses is private (a lookup failure is an OSError: retry later)."""
    if not isinstance(url, str) or not url.strip():
        raise UrlRefused("the output needs a url")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused(f"the output url must be http:// or https:// with a host (got {url!r})")
    if allow_private:
        return url.strip()
    host = parts.hostname
    try:
        literal = _forbidden(host)
    except ValueError:
        literal = None
    if literal:
        raise UrlRefused(f"the output url {url!r} points at a private, loopback or link-local address")
    if literal is None:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            raise UrlRefused(f"the output url {url!r} points at a loopback address")
        if resolve:
            infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
            if any(_forbidden(str(info[4][0])) for info in infos):
                raise UrlRefused(
                    f"the output url {url!r} resolves to a private, loopback or link-local address"
                )
    return url.strip()
