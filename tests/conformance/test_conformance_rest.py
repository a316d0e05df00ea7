"""The conformance cases through the REST API against a real `milepost serve` process.

Each case gets its own server, started with MILEPOST_FAKE_CLOCK so the steps can move time with
POST /api/v1/test/clock. Inputs come from /api/v1/workspaces and /api/v1/inputs, settings from
PATCH /api/v1/settings, journeys from POST /api/v1/journeys; every milestone's audience is then
activated with a `file` output connection so that all of them are maintained in real time.
Batches go through /v2/events (or /v2/bulkevents/historical), edits and reorders through
PATCH /api/v1/milestones/{id}, and expectations are read with GET /api/v1/audiences/{id}/members.

Cases that define calculated attributes are left out of the parametrization: the REST API has no
endpoint to create calculated attributes yet (SPEC §4.5, §7). They still run in-process in
test_conformance.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.conformance.rest_runner import RestCaseRunner, uses_calculated_attributes
from tests.conformance.test_conformance import load_cases

pytestmark = [pytest.mark.conformance, pytest.mark.api]

CASES = [c for c in load_cases() if not uses_calculated_attributes(c)]
WITHOUT_REST_SUPPORT = [c["name"] for c in load_cases() if uses_calculated_attributes(c)]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case_through_rest(case: dict[str, Any], tmp_path: Path) -> None:
    with RestCaseRunner(case, tmp_path / "data") as runner:
        runner.run()
