"""The conformance cases through the REST API against a real `milepost serve` process.

Each case gets its own server, started with MILEPOST_FAKE_CLOCK so the steps can move time with
POST /api/v1/test/clock. Inputs come from /api/v1/workspaces and /api/v1/inputs, settings from
PATCH /api/v1/settings, journeys from POST /api/v1/journeys; every milestone's audience is then
activated with a `file` output connection so that all of them are maintained in real time.
Batches go through /v2/events (or /v2/bulkevents/historical), edits and reorders through
PATCH /api/v1/milestones/{id}, and expectations are read with GET /api/v1/audiences/{id}/members.

Calculated attributes are defined with POST /api/v1/calculated-attributes, so every case runs,
including those that use them.

The selected cases run side by side (one server each) when the module's first test asks for their
outcomes; each test then reports its own case, so a failure names the case and its step.
"""

from __future__ import annotations

import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.conformance.rest_runner import RestCaseRunner
from tests.conformance.test_conformance import load_cases
from tests.support.server import init_data_dir

pytestmark = [pytest.mark.conformance, pytest.mark.api]

CASES = load_cases()
WORKERS = 3  # servers spend much of a case waiting on requests: overlap a few


def _run(case: dict[str, Any], data_dir: Path, template: tuple[Path, dict[str, Any]]) -> str | None:
    """The case's failure as text, or None when it passed."""
    try:
        with RestCaseRunner(case, data_dir, template) as runner:
            runner.run()
    except BaseException:
        return traceback.format_exc(limit=-4)
    return None


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str | None]:
    selected = {
        item.callspec.params["case"]["name"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    }
    cases = [c for c in CASES if c["name"] in selected]
    root = tmp_path_factory.mktemp("conformance-rest")
    template = (root / "template", init_data_dir(root / "template"))
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {c["name"]: pool.submit(_run, c, root / c["name"] / "data", template) for c in cases}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case_through_rest(case: dict[str, Any], outcomes: dict[str, str | None]) -> None:
    failure = outcomes[case["name"]]
    if failure is not None:
        pytest.fail(f"{case['name']} through REST:\n{failure}", pytrace=False)
