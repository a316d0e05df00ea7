"""Property-based fuzzing of the management API from its own OpenAPI description (schemathesis).

Every journeys / milestones / audiences / outputs / connections / settings / workspaces / inputs
operation of /openapi.json gets a bounded number of generated requests, with the bearer token,
against a real server; the only check is that none answers with a server error (5xx). Generation is
derandomized, so a run is reproducible and a failure names the request that caused it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from tests.conformance.rest_runner import Rest  # noqa: E402
from tests.support.server import Server  # noqa: E402

pytestmark = [pytest.mark.api, pytest.mark.slow]

MAX_EXAMPLES = 30
PATHS = r"^/api/v1/(journeys|milestones|audiences|outputs|connections|settings|workspaces|inputs)(/|$)"


@pytest.fixture(scope="module")
def seeded(server: tuple[Server, dict], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rest]:
    """A server holding a little of everything, so generated ids sometimes hit real rows."""
    rest = Rest(*server)
    inp = rest.creds["input"]
    for n in range(3):
        rest.send(
            inp, n + 1, {"tier": "gold" if n % 2 else "silver", "n": n}, identities={"customer_id": f"c{n}"}
        )
    doc = rest.journey(
        [
            {"name": "a", "criteria": {"all": []}, "children": [{"name": "b", "criteria": {"all": []}}]},
            {"name": "rest", "remaining": True},
        ]
    )
    out = rest.output(tmp_path_factory.mktemp("out"))
    rest.connect(doc["milestones"][0]["audience"]["id"], out["id"])
    yield rest
    rest.close()


def _operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json").include(path_regex=PATHS)
    ops = [result.ok() for result in schema.get_all_operations()]
    assert ops, "no operation matched"
    return ops


def test_no_operation_answers_a_server_error(seeded: Rest) -> None:
    url = seeded.server.url
    headers = {"Authorization": f"Bearer {seeded.creds['admin_token']}"}
    failures: list[str] = []
    operations = _operations(url)
    assert len(operations) >= 20, [op.label for op in operations]
    for op in operations:

        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            case.call_and_validate(base_url=url, headers=headers, checks=[not_a_server_error], timeout=30)

        try:
            run()
        except Exception as exc:
            failures.append(f"{op.label}: {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)
