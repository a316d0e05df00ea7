"""The `file` output: one JSON line per membership change, appended to a file in a local directory.

Settings `{directory, max_bytes?}`. Each output writes `milepost-output-<id>.jsonl`; when a write
would take it past `max_bytes` it is renamed with a timestamp and a new file begins. Lines are
synced to disk before a batch counts as delivered.

Every connection of an output appends to the same file, so under load many batches arrive at once.
They are written one after another, and synced together: a sync covers every batch written before
it began, so the batches written while one sync runs are covered by the next (one `fsync` for
all of them instead of one each, and no batch waits behind other batches' syncs in a queue).
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


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _SharedFile:
    """One path's writers: `lock` orders the writes; `written` counts them, `synced` counts those
    on disk (a sync covers the writes counted when it began)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(threading.Lock())
        self.written = 0
        self.synced = 0
        self.syncing = False

    def wrote(self) -> int:
        """Count a write (under `lock`): its number."""
        self.written += 1
        return self.written

    def mark_synced(self, upto: int) -> None:
        with self.cond:
            self.synced = max(self.synced, upto)
            self.cond.notify_all()

    def sync(self, path: Path, mine: int) -> None:
        """Return once write `mine` is on disk: synced by this caller, or by a sync that began after it."""
        with self.cond:
            while self.synced < mine and self.syncing:
                self.cond.wait()
            if self.synced >= mine:
                return
            self.syncing = True
        try:
            with self.lock:  # the writes counted so far are all in the file at `path` now
                upto = self.written
                fd = os.open(path, os.O_RDONLY)
            _fsync_and_close(fd)
            self.mark_synced(upto)
        finally:
            with self.cond:
                self.syncing = False
                self.cond.notify_all()


_files: dict[Path, _SharedFile] = {}
_files_guard = threading.Lock()


def _shared(path: Path) -> _SharedFile:
    with _files_guard:
        return _files.setdefault(path, _SharedFile())


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
        shared = _shared(self.path)
        try:
            with shared.lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._rotate(len(data), shared)
                with self.path.open("ab") as fh:
                    fh.write(data)
                mine = shared.wrote()
            shared.sync(self.path, mine)
        except OSError as error:  # a full or missing disk may come back: retried with backoff
            return Attempt(None, error=f"cannot write {self.path}: {error}")
        return Attempt(200)

    def _rotate(self, incoming: int, shared: _SharedFile) -> None:
        """Rename a full file (under `shared.lock`), synced first: the writes waiting for a sync are
        in it, and a sync after the rename reaches only the new file."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size and size + incoming > self.max_bytes:
            _fsync_and_close(os.open(self.path, os.O_RDONLY))
            shared.mark_synced(shared.written)
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
