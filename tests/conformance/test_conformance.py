"""Every shared conformance case, in real-time mode and in full-calculation mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conformance.harness import CaseRunner

CASES_FILE = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "cases.yaml"
LOCAL_CASES = Path(__file__).with_name("cases.yaml")


def load_cases() -> list[dict[str, Any]]:
    cases = list(yaml.safe_load(CASES_FILE.read_text())["cases"])
    if LOCAL_CASES.exists():
        cases += yaml.safe_load(LOCAL_CASES.read_text())["cases"]
    return cases


CASES = load_cases()


@pytest.mark.conformance
@pytest.mark.parametrize("mode", ["realtime", "full"])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict[str, Any], mode: str, tmp_path: Path) -> None:
    runner = CaseRunner(case, mode, tmp_path / "data")
    try:
        runner.run()
    finally:
        runner.close()
