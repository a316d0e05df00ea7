"""The estimator's sample selected on Apache Spark; the sample itself stays in the embedded store.

A rebuild scans every event for the sampled users' rows. Here the tables are exported as for
a full calculation (`spark_export.py`, sealed segments read in place), Spark keeps the rows whose
MPID key is below the threshold (the key is `audiences/sample.sample_key` emitted as Spark SQL,
so both engines sample the same users) and writes them as Parquet, which `Sample` loads into its
schema. No temporary views: a full calculation may be registering its own on the same session.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from milepost.audiences.sample import PROFILE_TABLES, SAMPLE_TABLES, sampled
from milepost.criteria.dialect import SPARK
from milepost.engines.spark_export import export_snapshot, read_events, read_table

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SAMPLE_PREFIX = "sample-"


class SparkSampleSource:
    """Selects the sample's rows on `session`; its files go under `storage`, removed once loaded."""

    def __init__(self, session: SparkSession, storage: Path) -> None:
        self.session = session
        self.storage = storage

    @contextmanager
    def select(
        self, con: duckdb.DuckDBPyConnection, threshold: int, last_event_id: int
    ) -> Iterator[Mapping[str, str]]:
        directory = self.storage / f"{SAMPLE_PREFIX}{uuid.uuid4().hex}"
        try:
            snapshot = export_snapshot(con, directory / "store", (*PROFILE_TABLES, "events"))
            keep = sampled(threshold, SPARK)
            files = {}
            for table in SAMPLE_TABLES:
                if table == "events":
                    rows = read_events(self.session, snapshot).where(
                        f"{keep} AND event_id <= {int(last_event_id)}"
                    )
                else:
                    rows = read_table(self.session, snapshot, table).where(keep)
                target = directory / "sample" / table
                rows.write.mode("overwrite").parquet(str(target))
                files[table] = str(target / "*.parquet")
            yield files
        finally:
            shutil.rmtree(directory, ignore_errors=True)
