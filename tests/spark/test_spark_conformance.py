"""Every conformance case in full-calculation mode on each engine: same memberships, same change log.

The harness checks each expectation against the case; running the case on DuckDB and on Spark and
comparing the stores afterwards also checks entry times and the order of the change log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.conformance.harness import CaseRunner
from tests.conformance.test_conformance import CASES

from milepost.engines.spark import SparkCalculator

pytestmark = pytest.mark.spark


def run_case(case: dict[str, Any], data_dir: Path, calculator: SparkCalculator | None) -> dict[str, Any]:
    runner = CaseRunner(case, "full", data_dir, calculator)
    try:
        runner.run()
        con = runner.runtime.store.reader()
        return {
            "memberships": con.execute(
                "SELECT audience_id, mpid, entered_at FROM memberships ORDER BY ALL"
            ).fetchall(),
            "changes": con.execute(
                "SELECT seq, audience_id, mpid, action, changed_at, cause FROM membership_changes ORDER BY seq"
            ).fetchall(),
        }
    finally:
        runner.close()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case_on_every_engine(case: dict[str, Any], calculator: SparkCalculator, tmp_path: Path) -> None:
    on_duckdb = run_case(case, tmp_path / "duckdb", None)
    on_spark = run_case(case, tmp_path / "spark-data", calculator)
    assert on_spark["memberships"] == on_duckdb["memberships"]
    assert on_spark["changes"] == on_duckdb["changes"]
