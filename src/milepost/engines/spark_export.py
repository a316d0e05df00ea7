"""Parquet snapshots of the embedded store's tables, for a distributed engine to read.

Sealed event segments are already Parquet and are read where they are; the other tables (profiles,
identities, consents, devices, current memberships) and the events after the last segment are
copied with DuckDB's `COPY ... TO ... (FORMAT parquet)`. JSON columns are written as plain text, so every
reader sees a string column whatever it makes of Parquet's JSON annotation. `read_table` and
`read_events` read a snapshot back on Spark, with its recorded schemas.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
from sqlglot import exp

from milepost.criteria.dialect import lit
from milepost.engines.duckdb_schema import sealed_through

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Table in the store -> file name in the snapshot.
TABLES = {
    "users": "users",
    "identities": "identities",
    "consents": "consents",
    "devices": "devices",
    "memberships": "memberships",
    "events": "events_tail",
}


@dataclass(frozen=True)
class Snapshot:
    directory: Path
    segments: tuple[Path, ...]  # sealed event segments, read in place
    schemas: dict[str, str]  # table -> Spark DDL schema, so reading needs no inference job

    def table(self, name: str) -> Path:
        return self.directory / f"{TABLES[name]}.parquet"


def spark_type(duckdb_type: str) -> str:
    """The Spark SQL type of a store column (JSON is text in the snapshot)."""
    if duckdb_type.upper() == "JSON":
        return "STRING"
    return exp.DataType.build(duckdb_type, dialect="duckdb").sql("spark")


def store_directory(con: duckdb.DuckDBPyConnection) -> Path:
    """The directory of the store `con` is connected to (segment paths are relative to it)."""
    rows = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    if not rows or not rows[0][0]:
        raise ValueError("the store is not a database file; a snapshot needs one")
    return Path(str(rows[0][0])).resolve().parent


def export_table(con: duckdb.DuckDBPyConnection, source: str, target: Path, where: str = "true") -> str:
    """Copy the rows of the table `source` (`catalog.schema.table`) that satisfy `where` to the
    Parquet file `target`; return its Spark DDL schema."""
    catalog, schema, table = source.split(".")
    columns = [
        (str(name), str(kind))
        for name, kind in con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = ? AND table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [catalog, schema, table],
        ).fetchall()
    ]
    select = ", ".join(
        f'CAST("{c}" AS VARCHAR) AS "{c}"' if kind.upper() == "JSON" else f'"{c}"' for c, kind in columns
    )
    con.execute(
        f"COPY (SELECT {select} FROM {source} WHERE {where}) TO {lit(str(target)).sql('duckdb')} "
        "(FORMAT parquet, COMPRESSION zstd)"
    ).fetchall()
    return ", ".join(f"`{c}` {spark_type(kind)}" for c, kind in columns)


def export_snapshot(
    con: duckdb.DuckDBPyConnection, directory: Path, tables: Iterable[str] = tuple(TABLES)
) -> Snapshot:
    """Write the tables of `tables` to `directory` as Parquet (of `events`, those after the last
    segment), reading within `con`'s current transaction."""
    directory.mkdir(parents=True, exist_ok=True)
    db = con.execute("SELECT current_database()").fetchall()[0][0]
    tail = f"event_id > ({sealed_through(f'{db}.main.segments')})"
    schemas = {
        table: export_table(
            con,
            f"{db}.main.{table}",
            directory / f"{TABLES[table]}.parquet",
            tail if table == "events" else "true",
        )
        for table in tables
    }
    root = store_directory(con)
    segments = tuple(
        root / str(r[0]) for r in con.execute(f"SELECT path FROM {db}.main.segments ORDER BY seq").fetchall()
    )
    return Snapshot(directory, segments, schemas)


def read_table(session: SparkSession, snapshot: Snapshot, table: str, *paths: Path) -> DataFrame:
    """A snapshot's table on Spark (or other files with its columns), with no schema inference job."""
    reader = session.read.schema(snapshot.schemas[table])
    return reader.parquet(*[str(p) for p in paths or (snapshot.table(table),)])


def read_events(session: SparkSession, snapshot: Snapshot) -> DataFrame:
    """Every event: the sealed segments (same columns as `events`) and the tail after them."""
    events = read_table(session, snapshot, "events")
    if snapshot.segments:
        events = read_table(session, snapshot, "events", *snapshot.segments).unionByName(events)
    return events
