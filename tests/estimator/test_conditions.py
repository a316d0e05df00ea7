"""Every size the estimator cannot give as a number (SPEC §5): `error` (NO_DATA, UNKNOWN_REFERENCE,
ENGINE_ERROR), the warning naming silent inputs, and `too_small` with its upper bound.

The NO_DATA, warning and UNKNOWN_REFERENCE cases go through a real server (journey documents and
`POST /api/v1/estimate`); the engine failure and `too_small` are checked in-process, where the
failure can be injected and the sample hits chosen exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from tests.conformance.rest_runner import Rest, unique
from tests.estimator.population import LIFETIME, LOOKBACK, T0, load_population
from tests.support.server import running_server

from milepost.audiences.estimator import Estimator
from milepost.audiences.sample import sample_key
from milepost.audiences.sizes import TOO_SMALL_HITS, wilson
from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.cli import _initialise
from milepost.config import Config
from milepost.engines.duckdb import DuckDBStore
from milepost.runtime import Runtime

GOLD = {"type": "user_attribute", "attribute": "tier", "op": "equals", "value": "gold"}
EVERYONE: dict[str, Any] = {"all": []}


# ---- through a real server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rest]:
    with running_server(tmp_path_factory.mktemp("conditions") / "data") as pair:
        client = Rest(*pair)
        yield client
        client.close()


@pytest.fixture(scope="module")
def inputs(rest: Rest) -> dict[str, dict[str, Any]]:
    """`live` has data, `silent` never received any, `off` received data and was then disabled."""
    made = {k: rest.input(name=unique(k)) for k in ("live", "silent", "off")}
    for n in range(12):
        rest.send(made["live"], rest.mpid(), {"tier": "gold" if n % 3 == 0 else "silver"})
    rest.send(made["off"], rest.mpid(), {"tier": "gold"})
    rest.ok("PATCH", f"/api/v1/inputs/{made['off']['id']}", json={"enabled": False})
    return made


def _size(rest: Rest, inputs: list[str]) -> dict[str, Any]:
    j = rest.journey([{"name": "gold", "criteria": GOLD}], inputs=inputs)
    doc = rest.document(j["id"])
    return doc["milestones"][0]["audience"]["size"]


def _names(inputs: dict[str, dict[str, Any]], *keys: str) -> list[str]:
    return [inputs[k]["name"] for k in keys]


@pytest.mark.parametrize("which", [("silent",), ("off",), ("silent", "off")], ids="+".join)
def test_no_usable_input_is_a_no_data_error(
    rest: Rest, inputs: dict[str, dict[str, Any]], which: tuple[str, ...]
) -> None:
    size = _size(rest, _names(inputs, *which))
    assert size["kind"] == "error" and size["code"] == "NO_DATA", size
    assert size["message"].strip()
    # the criteria builder sees the same for unsaved criteria on those inputs
    out = rest.ok("POST", "/api/v1/estimate", json={"criteria": GOLD, "inputs": _names(inputs, *which)})
    assert out["size"]["kind"] == "error" and out["size"]["code"] == "NO_DATA", out


@pytest.mark.parametrize("which", [("silent",), ("off",), ("silent", "off")], ids="+".join)
def test_some_silent_inputs_give_an_estimate_with_a_warning_naming_them(
    rest: Rest, inputs: dict[str, dict[str, Any]], which: tuple[str, ...]
) -> None:
    size = _size(rest, _names(inputs, "live", *which))
    # the root is whoever sent data through a selected input, ever: the disabled input's gold user counts
    gold = 4 + ("off" in which)
    assert size["kind"] == "estimate" and size["exact"] is True and size["value"] == gold, size
    for name in _names(inputs, *which):
        assert name in size["warning"], size
    assert inputs["live"]["name"] not in size["warning"]
    out = rest.ok(
        "POST", "/api/v1/estimate", json={"criteria": GOLD, "inputs": _names(inputs, "live", *which)}
    )
    assert out["size"]["kind"] == "estimate" and out["size"]["value"] == gold, out
    assert all(n in out["size"]["warning"] for n in _names(inputs, *which)), out


def test_all_inputs_usable_gives_no_warning(rest: Rest, inputs: dict[str, dict[str, Any]]) -> None:
    size = _size(rest, _names(inputs, "live"))
    assert size["kind"] == "estimate" and size["value"] == 4 and "warning" not in size, size


def _unknown(rest: Rest, inputs: dict[str, dict[str, Any]], criteria: dict[str, Any]) -> dict[str, Any]:
    resp = rest.call(
        "POST", "/api/v1/estimate", json={"criteria": criteria, "inputs": _names(inputs, "live")}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_unknown_audience_by_name_is_an_unknown_reference(
    rest: Rest, inputs: dict[str, dict[str, Any]]
) -> None:
    crit = {"type": "audience", "journey": "no such journey", "milestone": "nope", "member": True}
    out = _unknown(rest, inputs, {"all": [GOLD, crit]})
    assert out["size"]["kind"] == "error" and out["size"]["code"] == "UNKNOWN_REFERENCE", out
    assert out["size"]["message"].strip()


def test_unknown_audience_by_id_is_an_unknown_reference(
    rest: Rest, inputs: dict[str, dict[str, Any]]
) -> None:
    out = _unknown(
        rest, inputs, {"all": [GOLD, {"type": "audience", "audience_id": 987_654, "member": True}]}
    )
    assert out["size"]["kind"] == "error" and out["size"]["code"] == "UNKNOWN_REFERENCE", out


def test_unknown_calculated_attribute_is_an_unknown_reference(
    rest: Rest, inputs: dict[str, dict[str, Any]]
) -> None:
    crit = {"type": "calculated_attribute", "name": unique("nothing"), "op": "greater_than", "value": 1}
    out = _unknown(rest, inputs, {"all": [GOLD, crit]})
    assert out["size"]["kind"] == "error" and out["size"]["code"] == "UNKNOWN_REFERENCE", out


def test_deleted_calculated_attribute_is_an_unknown_reference(
    rest: Rest, inputs: dict[str, dict[str, Any]]
) -> None:
    name = unique("views")
    definition = {
        "name": name,
        "calculation": "count",
        "event": {"event_type": "custom_event", "name": "ping"},
    }
    rest.ok("POST", "/api/v1/calculated-attributes", 201, json=definition)
    crit = {"type": "calculated_attribute", "name": name, "op": "greater_than", "value": 0}
    before = _unknown(rest, inputs, crit)
    assert before["size"]["kind"] == "estimate" and before["size"]["value"] == 12, before
    rest.ok("DELETE", f"/api/v1/calculated-attributes/{name}", 204)
    after = _unknown(rest, inputs, crit)
    assert after["size"]["kind"] == "error" and after["size"]["code"] == "UNKNOWN_REFERENCE", after


def test_known_references_estimate_normally(rest: Rest, inputs: dict[str, dict[str, Any]]) -> None:
    j = rest.journey([{"name": "gold", "criteria": GOLD}], inputs=_names(inputs, "live"))
    ref = {"type": "audience", "journey": j["name"], "milestone": "gold", "member": True}
    out = _unknown(rest, inputs, ref)
    assert out["size"]["kind"] in ("estimate", "too_small"), out  # a known reference is no error


# ---- in-process: an engine failure -----------------------------------------------------------


class Broken:
    """A connection whose every statement fails, as a store that went away would."""

    def execute(self, *_args: Any, **_kw: Any) -> Any:
        raise duckdb.IOException("IO Error: could not read block (injected)")


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    config = Config.from_env(tmp_path / "data")
    _initialise(config)
    rt = Runtime.open(config)
    load_population(rt.store.connect(), 500, seed=4)  # users of inputs 1 and 2 (input 1 exists)
    try:
        yield rt
    finally:
        rt.close()


def test_an_engine_failure_is_an_engine_error(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    views = runtime.views
    ok = views.adhoc(journey_id=None, input_ids=(1,), parent_id=None, position=None, criteria=GOLD)
    assert ok["size"]["kind"] == "estimate", ok
    monkeypatch.setattr(views.estimator, "con", Broken())
    monkeypatch.setattr(views.estimator.sample, "con", Broken())
    views.estimator._cache.clear()
    out = views.adhoc(journey_id=None, input_ids=(1,), parent_id=None, position=None, criteria=GOLD)
    assert out["size"]["kind"] == "error" and out["size"]["code"] == "ENGINE_ERROR", out
    assert out["size"]["message"].strip() and out["criteria"] == []
    tree = JourneyRows(
        7,
        "j",
        (1,),
        (
            MilestoneRow(1, 7, None, 0, "a", 71, GOLD, False),
            MilestoneRow(2, 7, None, 1, "rest", 72, None, True),
        ),
    )
    every = views.estimates(tree)
    assert {a: e["code"] for a, e in every.items()} == {71: "ENGINE_ERROR", 72: "ENGINE_ERROR"}  # type: ignore[index]
    monkeypatch.undo()
    again = views.adhoc(journey_id=None, input_ids=(1,), parent_id=None, position=None, criteria=GOLD)
    assert again["size"] == ok["size"]  # nothing poisoned: the next estimate is normal again


# ---- in-process: too small -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DuckDBStore, Estimator]]:
    """20,000 users, a sample of ~2,500 (target 2,000); `pick<k>` marks exactly k sampled root users
    (and as many unsampled ones)."""
    store = DuckDBStore(tmp_path_factory.mktemp("too_small") / "store")
    con = store.connect()
    load_population(con, 20_000, seed=8)
    est = Estimator(store.connect(), target=2_000)
    est.refresh()
    key = sample_key("mpid")
    root = f"last_seen > {T0 - LIFETIME}"
    for k in (0, 1, 9, 10, 30):
        for inside in (True, False):
            picked = f"{key} {'<' if inside else '>='} {est.sample.threshold}"
            con.execute(
                f"UPDATE main.users SET attributes = json_merge_patch(attributes, '{{\"pick{k}\": true}}') "
                f"WHERE mpid IN (SELECT mpid FROM main.users WHERE {root} AND {picked} ORDER BY mpid LIMIT {k})"
            ).fetchall()
    est.sample.rebuild()
    yield store, est
    est.close()  # stops the refresh worker before its parent connection closes
    est.con.close()
    con.close()
    store.close()


def _pick(k: int) -> dict[str, Any]:
    return {"type": "user_attribute", "attribute": f"pick{k}", "op": "equals", "value": True}


def _estimate(est: Estimator, criteria: dict[str, Any], actual: dict[int, int] | None = None) -> Any:
    tree = JourneyRows(
        1,
        "j",
        (1, 2),
        (
            MilestoneRow(1, 1, None, 0, "p", 101, EVERYONE, False),
            MilestoneRow(2, 1, 1, 0, "c", 102, criteria, False),
        ),
    )
    return est.journey(tree, {}, actual or {}, T0, LOOKBACK, LIFETIME)


@pytest.mark.parametrize("hits", [0, 1, 9])
def test_fewer_than_10_sample_hits_is_too_small_with_an_upper_bound(
    sampled: tuple[DuckDBStore, Estimator], hits: int
) -> None:
    _, est = sampled
    assert TOO_SMALL_HITS == 10
    size = _estimate(est, _pick(hits))[102].size
    assert size["kind"] == "too_small", size
    assert size["sample_hits"] == hits and "value" not in size and size["exact"] is False
    truth = 2 * hits  # the picked sampled users and as many outside the sample
    assert size["upper_bound"] >= truth
    n, population = est.sample.size, est.sample.population
    fpc = (population - n) / (population - 1)
    assert size["upper_bound"] == math.ceil(wilson(hits, n, fpc)[1] * population)
    assert size["upper_bound"] < population  # a real bound, not "anything"


def test_ten_sample_hits_is_an_estimate(sampled: tuple[DuckDBStore, Estimator]) -> None:
    _, est = sampled
    for k in (10, 30):
        size = _estimate(est, _pick(k))[102].size
        assert size["kind"] == "estimate" and size["sample_hits"] == k, size
        assert size["low"] <= size["value"] <= size["high"]


def test_per_criterion_rows_can_be_too_small(sampled: tuple[DuckDBStore, Estimator]) -> None:
    _, est = sampled
    out = _estimate(est, {"any": [_pick(1), _pick(30)]})[102]
    assert [r["size"]["kind"] for r in out.criteria] == ["too_small", "estimate"]
    assert out.size["kind"] == "estimate" and out.size["sample_hits"] == 30  # pick1 ⊆ pick30


def test_too_small_below_a_calculated_ancestor_is_bounded_by_its_actual_size(
    sampled: tuple[DuckDBStore, Estimator],
) -> None:
    _, est = sampled
    actual = 50  # whatever the engine said: the bound is a share of it
    size = _estimate(est, _pick(9), {101: actual})[102].size
    assert size["kind"] == "too_small" and size["upper_bound"] <= actual, size
