"""mParticle's size rules: truncate long names and values, drop attributes and list items past the limits.

Each change is reported (the caller puts the messages in `X-Milepost-Warnings` and counts them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_NAME = 256
MAX_VALUE = 4096
MAX_ATTRIBUTES = 100
MAX_LIST_ITEMS = 1000


@dataclass
class LimitReport:
    """Warnings collected while enforcing limits on one request."""

    messages: list[str] = field(default_factory=list)

    def add(self, where: str, what: str) -> None:
        self.messages.append(f"{where}: {what}")


def clip_name(name: str, where: str, report: LimitReport) -> str:
    if len(name) > MAX_NAME:
        report.add(where, f"name truncated to {MAX_NAME} characters")
        return name[:MAX_NAME]
    return name


def clip_value(value: Any, where: str, report: LimitReport) -> Any:
    if isinstance(value, str) and len(value) > MAX_VALUE:
        report.add(where, f"value truncated to {MAX_VALUE} characters")
        return value[:MAX_VALUE]
    if isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            report.add(where, f"list cut to its first {MAX_LIST_ITEMS} items")
            value = value[:MAX_LIST_ITEMS]
        return [clip_value(v, where, report) for v in value]
    return value


def clip_attributes(attrs: dict[str, Any], where: str, report: LimitReport) -> dict[str, Any]:
    """Apply the name, value and count limits to one attribute map, keeping its order."""
    if len(attrs) > MAX_ATTRIBUTES:
        report.add(
            where, f"{len(attrs) - MAX_ATTRIBUTES} attributes beyond the first {MAX_ATTRIBUTES} dropped"
        )
        attrs = dict(list(attrs.items())[:MAX_ATTRIBUTES])
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        key = clip_name(name, f"{where}.{name[:40]}", report)
        out[key] = clip_value(value, f"{where}.{key[:40]}", report)
    return out
