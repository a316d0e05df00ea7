"""write_jsonl: one parseable JSONL file per input plus a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from milepost.synthetic import batch_problems, demo_layout, write_jsonl

pytestmark = pytest.mark.unit

END_MS = 1_717_200_000_000


def test_write_jsonl(tmp_path: Path) -> None:
    counts = write_jsonl(tmp_path / "out", seed=5, users=80, days=4, end_ms=END_MS)
    names = [i.name for ws in demo_layout() for i in ws.inputs]
    assert sorted(counts) == sorted(names)
    assert sum(counts.values()) > 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["batches"] == counts
    assert [ws["name"] for ws in manifest["layout"]] == ["Streaming", "Retail"]
    assert manifest["seed"] == 5 and manifest["users"] == 80 and manifest["end_ms"] == END_MS
    for name in names:
        lines = (tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == counts[name]
        events = 0
        for line in lines:
            batch = json.loads(line)
            assert batch_problems(batch, end_ms=END_MS) == []
            events += len(batch["events"])
        assert manifest["events"][name] == events
    again = write_jsonl(tmp_path / "again", seed=5, users=80, days=4, end_ms=END_MS)
    assert again == counts
    for name in names:
        assert (tmp_path / "again" / f"{name}.jsonl").read_bytes() == (
            tmp_path / "out" / f"{name}.jsonl"
        ).read_bytes()
