"""Runtime configuration, read from the environment once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 8642


@dataclass(frozen=True)
class Config:
    data_dir: Path
    catalog_url: str
    max_request_bytes: int = 256 * 1024
    max_bulk_batches: int = 100
    input_rate_per_s: float = 20_000.0  # batches per second per input
    input_burst: float = 40_000.0
    max_group_batches: int = 5_000  # batches written in one group commit at most
    fake_clock_start_ms: int | None = None  # tests only: a clock moved through /api/v1/test/clock

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @classmethod
    def from_env(cls, data_dir: str | Path | None = None) -> Config:
        root = Path(data_dir or os.environ.get("MILEPOST_DATA_DIR") or "./milepost-data").resolve()
        catalog = os.environ.get("MILEPOST_CATALOG_URL") or f"sqlite:///{root / 'catalog.sqlite'}"
        rate = float(os.environ.get("MILEPOST_INPUT_RATE_LIMIT", "20000"))
        return cls(
            data_dir=root,
            catalog_url=catalog,
            input_rate_per_s=rate,
            input_burst=float(os.environ.get("MILEPOST_INPUT_BURST", str(rate * 2))),
            fake_clock_start_ms=int(os.environ["MILEPOST_FAKE_CLOCK"])
            if os.environ.get("MILEPOST_FAKE_CLOCK")
            else None,
        )
