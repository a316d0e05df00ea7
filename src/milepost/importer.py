"""`milepost import`: JSONL batches into an input, resumable, reporting rejected lines.

Batches are checked one by one first, so a bad line is reported and skipped instead of failing a
whole bulk request. Lines without a `source_request_id` get one derived from the file and line, so
a chunk re-sent after an interruption is de-duplicated instead of stored twice.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from milepost.errors import InvalidBatch
from milepost.ingest.normalize import normalize_request

MAX_CHUNK_BATCHES = 100
MAX_CHUNK_BYTES = 200 * 1024

Sender = Callable[[bytes], None]  # sends one bulk body; raises on refusal


@dataclass
class ImportReport:
    sent: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    resumed_from_line: int = 0


def file_id(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _chunks(
    path: Path, start_line: int, fid: str, report: ImportReport, now_ms: int, historical: bool
) -> Iterator[tuple[int, list[bytes]]]:
    """Yield (last line number, encoded batches) chunks that fit one bulk request."""
    chunk: list[bytes] = []
    size = 0
    last = start_line
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if lineno <= start_line or not line.strip():
                last = max(last, lineno)
                continue
            try:
                batch: Any = orjson.loads(line)
                normalize_request(batch, bulk=False, historical=historical, received_at=now_ms)
            except orjson.JSONDecodeError as exc:
                report.rejected.append((lineno, f"not valid JSON: {exc}"))
                last = lineno
                continue
            except InvalidBatch as exc:
                report.rejected.append((lineno, "; ".join(exc.errors)))
                last = lineno
                continue
            if isinstance(batch, dict) and not batch.get("source_request_id"):
                batch["source_request_id"] = f"import:{fid}:{lineno}"
            encoded = orjson.dumps(batch)
            if chunk and (len(chunk) >= MAX_CHUNK_BATCHES or size + len(encoded) + 2 > MAX_CHUNK_BYTES):
                yield last, chunk
                chunk, size = [], 0
            chunk.append(encoded)
            size += len(encoded) + 1
            last = lineno
    if chunk:
        yield last, chunk


def run_import(
    path: Path,
    send: Sender,
    progress_file: Path,
    *,
    now_ms: int,
    historical: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Send the file's batches in bulk chunks; remember the last line sent so a rerun resumes."""
    fid = file_id(path)
    report = ImportReport()
    start = 0
    try:
        saved = orjson.loads(progress_file.read_bytes())
        if saved.get("file") == fid:
            start = int(saved["line"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        start = 0  # no or unreadable progress: start over; request ids make re-sent lines no-ops
    report.resumed_from_line = start
    for last_line, chunk in _chunks(path, start, fid, report, now_ms, historical):
        send(b"[" + b",".join(chunk) + b"]")
        report.sent += len(chunk)
        progress_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = progress_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"file": fid, "line": last_line}))
        os.replace(tmp, progress_file)  # never a torn progress file
        if on_progress:
            on_progress(last_line)
    return report
