"""What a user sees of a connection's data flow: its recent messages with the partner's answers
(kept in memory, per connection), and delivery figures in Prometheus text format."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from milepost.outputs.policy import Attempt, describe

LIVE_SIZE = 100  # messages kept per connection
SAMPLE_RECORDS = 5  # records summarised per message
BODY_EXCERPT = 500


class LiveLog:
    """A ring buffer of one connection's recent messages; safe to read while the worker writes."""

    def __init__(self, size: int = LIVE_SIZE) -> None:
        self._items: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self._seq = 0

    def add(
        self,
        kind: str,
        at_ms: int,
        attempt: Attempt,
        records: Sequence[Mapping[str, Any]] = (),
        idempotency_key: str | None = None,
        outcome: str = "",
    ) -> None:
        adds = sum(1 for r in records if r.get("action") == "add")
        sample = [{"id": r["id"], "mpid": r["mpid"], "action": r["action"]} for r in records[:SAMPLE_RECORDS]]
        self.add_summary(kind, at_ms, attempt, len(records), adds, sample, idempotency_key, outcome)

    def add_summary(
        self,
        kind: str,
        at_ms: int,
        attempt: Attempt,
        count: int,
        adds: int,
        sample: Sequence[Mapping[str, Any]],
        idempotency_key: str | None = None,
        outcome: str = "",
    ) -> None:
        """As `add`, for a message whose records are not at hand as mappings: their count, how many
        are adds, and the first few as `{id, mpid, action}`."""
        entry = {
            "at": at_ms,
            "kind": kind,
            "request": {
                "records": count,
                "adds": adds,
                "removes": count - adds,
                "idempotency_key": idempotency_key,
                "sample": [dict(r) for r in sample[:SAMPLE_RECORDS]],
            },
            "response": {
                "status": attempt.status,
                "body": attempt.body[:BODY_EXCERPT],
                "error": None if attempt.ok else describe(attempt),
            },
            "outcome": outcome or ("delivered" if attempt.ok else "failed"),
        }
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._items.append(entry)

    def recent(self, limit: int = LIVE_SIZE) -> list[dict[str, Any]]:
        """Newest first."""
        with self._lock:
            items = list(self._items)
        return items[::-1][:limit]


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def prometheus(connections: Iterable[Mapping[str, Any]]) -> list[str]:
    """Delivery metric lines for connections given as `{id, audience_id, output, type, health, stats}`."""
    rows = list(connections)
    metrics = [
        ("milepost_delivery_sent_total", "counter", "Changes the partner acknowledged.", "sent"),
        (
            "milepost_delivery_failed_total",
            "counter",
            "Changes the partner refused (dead letters).",
            "failed",
        ),
        (
            "milepost_delivery_ineligible_total",
            "counter",
            "Changes not sent: no accepted identity.",
            "ineligible",
        ),
        ("milepost_delivery_pending", "gauge", "Changes waiting to be delivered.", "pending"),
    ]
    lines: list[str] = []

    def labels(row: Mapping[str, Any]) -> str:
        return (
            f'connection="{row["id"]}",audience="{row["audience_id"]}",'
            f'output="{_label(row["output"])}",type="{_label(row["type"])}"'
        )

    for name, kind, text, key in metrics:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{{{labels(r)}}} {int(r['stats'][key])}" for r in rows]
    lines += [
        "# HELP milepost_delivery_lag_seconds Age of the oldest change not yet delivered.",
        "# TYPE milepost_delivery_lag_seconds gauge",
    ]
    lines += [f"milepost_delivery_lag_seconds{{{labels(r)}}} {r['stats']['lag_ms'] / 1000:.3f}" for r in rows]
    lines += [
        "# HELP milepost_delivery_health Delivery health of a connection (1 for its current health).",
        "# TYPE milepost_delivery_health gauge",
    ]
    for r in rows:
        for health in ("ok", "retrying", "faulted"):
            value = 1 if r["health"] == health else 0
            lines.append(f'milepost_delivery_health{{{labels(r)},health="{health}"}} {value}')
    return lines
