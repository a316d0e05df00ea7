"""The `file` output: one JSON line per membership change, appended to a file in a local directory.

Settings `{directory, max_bytes?}`. Each output writes `milepost-output-<id>.jsonl`; when a write
would take it past `max_bytes` it is renamed with a timestamp and a new file begins. Lines are
synced to disk before a batch counts as delivered.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from milepost.catalog.output_records import ConnectionRecord, OutputRecord
from milepost.clock import Clock
from milepost.errors import InvalidRequest
from milepost.outputs.policy import Attempt, clamp_batch_size
from milepost.outputs.registry import OutputContext

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_BATCH_SIZE = 500

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def file_line(record: Mapping[str, Any]) -> bytes:
    """The line written for one change record."""
    return orjson.dumps(
        {
            "id": record["id"],
            "audience_id": record["audience_id"],
            "audience_name": record["audience_name"],
            "external_name": record["external_name"],
            "mpid": record["mpid"],
            "is_member": record["action"] == "add",
            "identities": record["identities"],
            "device_identities": record["device_identities"],
            "timestamp": record["timestamp_ms"],
        }
    )


class FileOutput:
    def __init__(self, path: Path, max_bytes: int, batch_size: int, clock: Clock) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.batch_size = batch_size
        self.clock = clock

    def send(self, records: Sequence[dict[str, Any]], idempotency_key: str) -> Attempt:
        data = b"".join(file_line(r) + b"\n" for r in records)
        try:
            with _lock_for(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._rotate(len(data))
                with self.path.open("ab") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as error:  # a full or missing disk may come back: retried with backoff
            return Attempt(None, error=f"cannot write {self.path}: {error}")
        return Attempt(200)

    def _rotate(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size and size + incoming > self.max_bytes:
            stamp = self.clock.now_ms()
            target = self.path.with_name(f"{self.path.stem}-{stamp}.jsonl")
            n = 1
            while target.exists():
                target = self.path.with_name(f"{self.path.stem}-{stamp}-{n}.jsonl")
                n += 1
            self.path.rename(target)


class FileType:
    name = "file"

    def check_settings(self, settings: Mapping[str, Any], *, allow_private: bool) -> dict[str, Any]:
        directory = settings.get("directory")
        if not isinstance(directory, str) or not directory.strip():
            raise InvalidRequest("settings.directory: a file output needs a directory")
        if not Path(directory).is_absolute():
            raise InvalidRequest(f"settings.directory: an absolute path (got {directory!r})")
        max_bytes = settings.get("max_bytes")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1024:
            max_bytes = DEFAULT_MAX_BYTES
        return {
            "directory": directory,
            "max_bytes": max_bytes,
            "batch_size": clamp_batch_size(settings.get("batch_size"), DEFAULT_BATCH_SIZE),
        }

    def open(self, output: OutputRecord, connection: ConnectionRecord, context: OutputContext) -> FileOutput:
        s = self.check_settings(output.settings, allow_private=context.allow_private)
        path = Path(s["directory"]) / f"milepost-output-{output.id}.jsonl"
        batch_size = clamp_batch_size(connection.settings.get("batch_size"), s["batch_size"])
        return FileOutput(path, s["max_bytes"], batch_size, context.clock)


FILE = FileType()
