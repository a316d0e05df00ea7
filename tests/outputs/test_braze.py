"""The `braze` output against a real local HTTP server standing in for Braze's REST API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.outputs.inprocess import Local, drive
from tests.outputs.partner import Partner

from milepost.errors import InvalidRequest
from milepost.outputs.braze import BRAZE

pytestmark = pytest.mark.unit


@pytest.fixture
def braze() -> Iterator[Partner]:
    p = Partner()
    p.route("/users/track", reply=lambda _: {"message": "success"})
    yield p
    p.close()


def _output(local: Local, braze: Partner, name: str = "braze", **settings: Any) -> int:
    body = {"base_url": braze.base + "/", "api_key": "braze-rest-key", **settings}
    return local.runtime.catalog.create_output("braze", name, body).id


def _attributes(braze: Partner) -> list[dict[str, Any]]:
    return [a for r in braze.requests("/users/track") if r.status == 200 for a in r.json["attributes"]]


def test_segment_membership_adds_and_removes_the_audience_name(local: Local, braze: Partner) -> None:
    local.send(1, "gold", {"customer_id": "c1"})
    local.send(2, "gold", {"email": "no-customer-id@example.com"})  # ineligible: no external id
    cid = local.connect(_output(local, braze))
    runner = local.runner()
    try:
        drive(runner)
        local.send(1, "silver")
        drive(runner)
        assert _attributes(braze) == [
            {"external_id": "c1", "milepost_audiences": {"add": ["j – gold"]}},
            {"external_id": "c1", "milepost_audiences": {"remove": ["j – gold"]}},
        ]
        request = braze.requests("/users/track")[0]
        assert request.headers["Authorization"] == "Bearer braze-rest-key"
        assert request.headers["Content-Type"] == "application/json"
        stats = runner.stats(cid, local.audience)
        assert stats["sent"] == 2 and stats["ineligible"] == 1
    finally:
        runner.close()


def test_one_boolean_attribute_per_audience_by_braze_id(local: Local, braze: Partner) -> None:
    out = _output(
        local,
        braze,
        mode="attribute_per_audience",
        identifier="braze_id",
        identity_type="other",
        attribute_prefix="in_",
    )
    local.send(1, "gold", {"other": "b-1"})
    local.connect(out)
    runner = local.runner()
    try:
        drive(runner)
        local.send(1, "bronze")
        drive(runner)
        assert _attributes(braze) == [
            {"braze_id": "b-1", "in_j – gold": True},
            {"braze_id": "b-1", "in_j – gold": False},
        ]
    finally:
        runner.close()


def test_a_connection_can_name_its_attribute_and_batches_stay_within_75(local: Local, braze: Partner) -> None:
    for m in range(1, 81):
        local.send(m, "gold", {"customer_id": f"c{m}"})
    local.connect(_output(local, braze, batch_size=75), settings={"attribute": "gold_tier"})
    runner = local.runner()
    try:
        drive(runner)
        sizes = [len(r.json["attributes"]) for r in braze.requests("/users/track")]
        assert sizes == [75, 5]
        assert {tuple(a) for a in _attributes(braze)} == {("external_id", "gold_tier")}
    finally:
        runner.close()


def test_rate_limited_requests_are_retried(local: Local, braze: Partner) -> None:
    braze.route("/users/track", script=[429, 500], reply=lambda _: {"message": "success"})
    local.send(1, "gold", {"customer_id": "c1"})
    cid = local.connect(_output(local, braze))
    runner = local.runner()
    try:
        drive(runner)
        assert [r.status for r in braze.requests("/users/track")] == [429, 500, 200]
        assert runner.stats(cid, local.audience)["sent"] == 1
    finally:
        runner.close()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"api_key": "k"}, "settings.base_url"),
        ({"base_url": "https://rest.iad-01.braze.com"}, "settings.api_key"),
        ({"base_url": "https://rest.iad-01.braze.com", "api_key": "k", "mode": "x"}, "settings.mode"),
        (
            {"base_url": "https://rest.iad-01.braze.com", "api_key": "k", "identifier": "email"},
            "settings.identifier",
        ),
        (
            {"base_url": "https://rest.iad-01.braze.com", "api_key": "k", "batch_size": 76},
            "settings.batch_size",
        ),
        (
            {"base_url": "https://rest.iad-01.braze.com", "api_key": "k", "attribute": "$x"},
            "settings.attribute",
        ),
    ],
)
def test_bad_settings_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest, match=field):
        BRAZE.check_settings(settings, allow_private=False)
