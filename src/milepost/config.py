"""Runtime configuration, read from the environment once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from milepost.errors import InvalidSetting

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
    engine: str = "duckdb"  # where full calculations run: "duckdb" (embedded) or "spark"
    spark_master: str = "local[2]"
    spark_storage: Path | None = None  # Parquet snapshots Spark reads; default <data dir>/spark
    store_threads: int | None = None  # DuckDB's worker threads; default two per core

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def spark_dir(self) -> Path:
        return self.spark_storage or self.data_dir / "spark"

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
            engine=os.environ.get("MILEPOST_ENGINE", "duckdb").strip().lower() or "duckdb",
            spark_master=os.environ.get("MILEPOST_SPARK_MASTER") or "local[2]",
            spark_storage=Path(os.environ["MILEPOST_SPARK_STORAGE"]).resolve()
            if os.environ.get("MILEPOST_SPARK_STORAGE")
            else None,
            store_threads=_positive_int("MILEPOST_STORE_THREADS"),
        )


def _positive_int(name: str) -> int | None:
    """An optional whole-number setting of at least 1 from the environment."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidSetting(f"{name} must be a whole number of at least 1, not {raw!r}")
    return int(raw)
