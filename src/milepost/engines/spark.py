"""Full calculation of journeys and audiences on Apache Spark (`MILEPOST_ENGINE=spark`).

The store stays the embedded one: ingest, real-time evaluation, the change log and the sample
live there (the sample's rebuild scans events here: `spark_sample.py`). For a full calculation the
tables (of events, those after the last segment) are exported to Parquet next to the sealed event
segments (`spark_export.py`), Spark registers them as temporary views under the names the criteria
compiler targets, and runs the steps of `audiences/dataflow.py` compiled with the Spark dialect.
The final membership is written back as Parquet; the audience engine applies the diff.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from milepost.audiences.dataflow import PARENT_TABLE, Plan, steps
from milepost.criteria import to_sql
from milepost.criteria.dialect import SPARK
from milepost.engines.spark_export import Snapshot, export_snapshot, read_events, read_table
from milepost.engines.spark_sample import SparkSampleSource
from milepost.errors import EngineError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from milepost.audiences.engine import EngineSettings
    from milepost.config import Config

# Columns holding JSON text, read as VARIANT so the compiled criteria can look inside them.
JSON_COLUMNS = {"users": ("attributes",), "events": ("attrs", "products")}
SNAPSHOT_PREFIX = "calculation-"


def spark_session(
    master: str = "local[2]", *, shuffle_partitions: int = 4, driver_memory: str = "2g"
) -> SparkSession:
    """A session configured as Milepost needs it (UTC, no UI); reuses the running one if any."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:  # pragma: no cover - depends on the installation
        raise EngineError("MILEPOST_ENGINE=spark needs the pyspark package (pip install pyspark)") from None
    session = (
        SparkSession.builder.master(master)
        .appName("milepost")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.driver.memory", driver_memory)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


class SparkCalculator:
    """Runs full calculations on a Spark session; snapshots go to `storage` (shared with the cluster)."""

    def __init__(self, session: SparkSession, storage: Path) -> None:
        self.session = session
        self.storage = storage

    @classmethod
    def from_config(cls, config: Config) -> SparkCalculator:
        return cls(spark_session(config.spark_master), config.spark_dir)

    # ---- one calculation ----------------------------------------------------------------------

    def calculate(
        self, con: duckdb.DuckDBPyConnection, plan: Plan, now: int, settings: EngineSettings
    ) -> str:
        self._remove_old_snapshots()
        directory = self.storage / f"{SNAPSHOT_PREFIX}{uuid.uuid4().hex}"
        snapshot = export_snapshot(con, directory)
        memberships = self.register(snapshot)
        for step in steps(plan, now, settings.lookback_ms, settings.lifetime_ms, SPARK):
            if step.parent is not None:
                parent = memberships.where(f"audience_id = {int(step.parent)}").select("mpid")
                parent.createOrReplaceTempView(PARENT_TABLE)
            new = None if step.query is None else self.session.sql(to_sql(step.query, SPARK))
            memberships = self._replace(memberships, step.writes, new, now)
            memberships.createOrReplaceTempView("memberships")
        result = directory / "result"
        written = plan.audience_ids()
        final = memberships.where(memberships.audience_id.isin(written)).select("audience_id", "mpid")
        final.write.mode("overwrite").parquet(str(result))
        return str(result / "*.parquet")

    def _replace(
        self, memberships: DataFrame, writes: tuple[int, ...], new: DataFrame | None, now: int
    ) -> DataFrame:
        """Membership with `writes` replaced by `new`; users who stay keep their entry time."""
        from pyspark.sql import functions as F

        others = memberships.where(~memberships.audience_id.isin(list(writes))) if writes else memberships
        if new is None or not writes:
            out = others
        else:
            old = memberships.alias("m")
            joined = new.alias("n").join(
                old,
                (F.col("n.audience_id") == F.col("m.audience_id")) & (F.col("n.mpid") == F.col("m.mpid")),
                "left",
            )
            entered = joined.select(
                F.col("n.audience_id").cast("bigint").alias("audience_id"),
                F.col("n.mpid").cast("bigint").alias("mpid"),
                F.coalesce(F.col("m.entered_at"), F.lit(int(now))).cast("bigint").alias("entered_at"),
            )
            out = others.unionByName(entered)
        # Materialized: every later step reads it, and the plan must not grow step after step.
        return out.localCheckpoint(eager=True)

    def register(self, snapshot: Snapshot) -> DataFrame:
        """Register the snapshot's tables as the views the compiled criteria read; return memberships."""
        for table in ("users", "identities", "consents", "devices"):
            df = read_table(self.session, snapshot, table)
            _with_variants(df, JSON_COLUMNS.get(table, ())).createOrReplaceTempView(table)
        events = read_events(self.session, snapshot)
        _with_variants(events, JSON_COLUMNS["events"]).createOrReplaceTempView("events")
        memberships = read_table(self.session, snapshot, "memberships").select(
            "audience_id", "mpid", "entered_at"
        )
        memberships.createOrReplaceTempView("memberships")
        return memberships

    def sample_source(self) -> SparkSampleSource:
        """Rebuilds of the estimator's sample on the same session and storage."""
        return SparkSampleSource(self.session, self.storage)

    def _remove_old_snapshots(self) -> None:
        if not self.storage.exists():
            return
        for old in self.storage.glob(f"{SNAPSHOT_PREFIX}*"):
            shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        self._remove_old_snapshots()


def _with_variants(df: Any, columns: tuple[str, ...]) -> Any:
    from pyspark.sql import functions as F

    for name in columns:
        df = df.withColumn(name, F.parse_json(F.col(name)))
    return df
