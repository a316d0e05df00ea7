"""One Spark session (local mode) for the whole stage: starting one costs seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from milepost.engines.spark import SparkCalculator, spark_session


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    session = spark_session("local[2]", shuffle_partitions=4, driver_memory="2g")
    yield session
    session.stop()


@pytest.fixture
def calculator(spark: object, tmp_path: Path) -> SparkCalculator:
    return SparkCalculator(spark, tmp_path / "spark")  # type: ignore[arg-type]
