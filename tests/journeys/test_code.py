"""Journeys as code in process: export, plan and apply against real runtimes on temporary data dirs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from tests.journeys.conftest import EXAMPLES, local

from milepost.catalog import Catalog
from milepost.config import Config
from milepost.errors import CreditLimitReached
from milepost.journeys.code import apply_plan, export_document, gather
from milepost.journeys.documents import dump_yaml, load_yaml, parse_document

CHURN = (EXAMPLES / "churn-prevention.yaml").read_text()


def apply_text(config: Config, text: str) -> int:
    with local(config) as backend:
        plan = gather(load_yaml(text), backend)
        assert not plan.problems, plan.problems
        return apply_plan(plan, backend)


def export_text(config: Config, ref: int | str, ids: bool = False) -> str:
    with local(config) as backend:
        return dump_yaml(export_document(backend, ref), ids=ids)


def kinds(plan: Any) -> list[tuple[str, str]]:
    return [(line.kind, line.text) for line in plan.lines]


def test_export_apply_round_trip_into_a_fresh_data_dir(
    data_dir: Config, fresh: Callable[[str], Config]
) -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        apply_text(data_dir, path.read_text())
    other = fresh("other")
    exported = {}
    for name in ("Churn prevention", "GDPR consent split", "Post-purchase LTV"):
        exported[name] = export_text(data_dir, name)
        apply_text(other, exported[name])
    for name, text in exported.items():
        assert export_text(other, name) == text
    churn = yaml.safe_load(exported["Churn prevention"])
    child = churn["milestones"][0]["children"][0]
    assert child["name"] == "No email open within 2 days"
    assert child["connections"] == [{"output": "SMS provider", "status": "active"}]
    assert "id" not in churn and "id" not in child


def test_export_names_audience_references_and_carries_ids_when_asked(data_dir: Config) -> None:
    apply_text(data_dir, CHURN)
    referring = {
        "name": "Winback",
        "inputs": ["web"],
        "milestones": [
            {
                "name": "Lapsed",
                "criteria": {
                    "type": "audience",
                    "journey": "Churn prevention",
                    "milestone": "High churn risk",
                },
            }
        ],
    }
    apply_text(data_dir, yaml.safe_dump(referring))
    doc = yaml.safe_load(export_text(data_dir, "Winback", ids=True))
    assert isinstance(doc["id"], int) and isinstance(doc["milestones"][0]["id"], int)
    assert doc["milestones"][0]["criteria"] == {
        "type": "audience",
        "journey": "Churn prevention",
        "milestone": "High churn risk",
        "member": True,
    }


def test_applying_an_unchanged_file_is_a_no_op(data_dir: Config) -> None:
    apply_text(data_dir, CHURN)
    with local(data_dir) as backend:
        assert gather(load_yaml(CHURN), backend).empty
        exported = dump_yaml(export_document(backend, "Churn prevention"), ids=True)
        assert gather(load_yaml(exported), backend).empty


def test_plan_lists_adds_changes_removals_connections_and_credits(data_dir: Config) -> None:
    apply_text(data_dir, CHURN)
    changed = yaml.safe_load(CHURN)
    top = changed["milestones"][0]
    top["criteria"]["value"] = 0.7
    top["connections"] = [{"output": "Email platform", "status": "inactive"}]
    top["children"] = []  # removes "No email open within 2 days" (and its SMS connection)
    changed["milestones"].insert(
        0,
        {
            "name": "Very high churn risk",
            "criteria": {
                "type": "prediction",
                "prediction": "churn",
                "measure": "score",
                "op": "greater_than",
                "value": 0.95,
            },
            "connections": [{"output": "Paid media", "status": "active"}],
        },
    )
    changed["milestones"].append({"name": "Everyone else", "remaining": True})
    with local(data_dir) as backend:
        plan = gather(parse_document(changed), backend)
        assert not plan.problems
        lines = kinds(plan)
        assert ("add", "milestone Very high churn risk (position 0)") in lines
        assert ("add", "remaining users split Everyone else") in lines
        assert ("change", "milestone High churn risk: criteria") in lines
        assert ("remove", "milestone High churn risk / No email open within 2 days") in lines
        assert ("connect", "connect Very high churn risk → Paid media") in lines
        assert ("deactivate", "deactivate connection High churn risk → Email platform") in lines
        assert plan.credits_before == 2 and plan.credits_after == 1
        apply_plan(plan, backend)
        after = export_document(backend, "Churn prevention")
        assert [m.name for m in after.milestones] == [
            "Very high churn risk",
            "High churn risk",
            "Everyone else",
        ]
        assert after.milestones[1].children == ()
        assert backend.account().activated == 1
        assert gather(parse_document(changed), backend).empty


def test_milestones_match_by_id_so_a_rename_keeps_the_audience(data_dir: Config) -> None:
    apply_text(data_dir, CHURN)
    doc = yaml.safe_load(export_text(data_dir, "Churn prevention", ids=True))
    audience_before = None
    with local(data_dir) as backend:
        live = backend.journey(doc["id"])
        audience_before = {m.name: m.audience_id for m in live.milestones}["High churn risk"]
    doc["milestones"][0]["name"] = "Churn risk"
    doc["name"] = "Churn prevention v2"
    with local(data_dir) as backend:
        plan = gather(parse_document(doc), backend)
        assert [k for k, _ in kinds(plan)] == ["change", "change"]
        apply_plan(plan, backend)
        live = backend.journey(doc["id"])
        assert live.name == "Churn prevention v2"
        assert {m.name: m.audience_id for m in live.milestones}["Churn risk"] == audience_before


def test_a_swap_of_sibling_order_is_a_move(data_dir: Config) -> None:
    text = (EXAMPLES / "post-purchase-ltv.yaml").read_text()
    apply_text(data_dir, text)
    doc = yaml.safe_load(text)
    kids = doc["milestones"][0]["children"]
    kids.insert(
        1,
        {
            "name": "Big basket",
            "criteria": {
                "type": "event",
                "event": {"event_type": "commerce_event", "action": "purchase"},
                "where": [{"attribute": "total_amount", "op": "greater_than", "value": 100}],
            },
        },
    )
    apply_text(data_dir, yaml.safe_dump(doc))
    kids[0], kids[1] = kids[1], kids[0]
    with local(data_dir) as backend:
        plan = gather(parse_document(doc), backend)
        assert [k for k, _ in kinds(plan)] == ["move", "move"]
        apply_plan(plan, backend)
        after = export_document(backend, "Post-purchase LTV")
        assert [m.name for m in after.milestones[0].children] == [
            "Big basket",
            "High lifetime value",
            "Other customers",
        ]


def test_refuses_listing_every_unknown_input_output_and_reference(data_dir: Config) -> None:
    doc = {
        "name": "Broken",
        "inputs": ["web", "tvos", "kiosk"],
        "milestones": [
            {
                "name": "A",
                "criteria": {
                    "type": "calculated_attribute",
                    "name": "nope",
                    "op": "greater_than",
                    "value": 1,
                },
                "connections": [{"output": "Pager", "status": "active"}, {"output": "Email platform"}],
                "children": [
                    {
                        "name": "B",
                        "criteria": {"type": "audience", "journey": "Elsewhere", "milestone": "X"},
                        "connections": [{"output": "Fax", "status": "inactive"}],
                    }
                ],
            }
        ],
    }
    with local(data_dir) as backend:
        plan = gather(parse_document(doc), backend)
        text = "\n".join(plan.problems)
        for name in ("'tvos'", "'kiosk'", "'Pager'", "'Fax'", "'nope'", "'Elsewhere' / 'X'"):
            assert name in text
        assert "'web'" not in text and "Email platform" not in text
        with pytest.raises(Exception, match="kiosk"):
            apply_plan(plan, backend)
        assert backend.journey_id("Broken") is None


def test_a_plan_over_the_credit_limit_is_refused_and_changes_nothing(data_dir: Config) -> None:
    with Catalog(data_dir.catalog_url) as catalog:
        catalog.update_settings(audience_limit=1)
    with local(data_dir) as backend:
        plan = gather(load_yaml(CHURN), backend)
        assert plan.over_limit and "limit of 1" in plan.credit_message
        with pytest.raises(CreditLimitReached):
            apply_plan(plan, backend)
        assert backend.journey_id("Churn prevention") is None
        assert backend.account().activated == 0


def test_a_credit_refusal_inside_the_connection_plan_undoes_the_milestones(data_dir: Config) -> None:
    apply_text(data_dir, (EXAMPLES / "gdpr-consent-split.yaml").read_text())  # 2 credits in use
    with local(data_dir) as backend:
        plan = gather(load_yaml(CHURN), backend)
        assert not plan.over_limit
        # someone else takes the credits between planning and applying: the one check refuses it all
        backend.catalog.update_settings(audience_limit=3)
        with pytest.raises(CreditLimitReached, match="limit of 3"):
            apply_plan(plan, backend)
        assert backend.journey_id("Churn prevention") is None
        assert backend.account().activated == 2
        assert [
            m.name for m in backend.journey(backend.journey_id("GDPR consent split") or 0).milestones
        ] == [
            "Consented to marketing",
            "No marketing consent",
        ]


def test_invalid_documents_list_every_problem() -> None:
    from milepost.journeys.documents import DocumentError

    with pytest.raises(DocumentError) as caught:
        parse_document(
            {
                "name": "",
                "milestones": [
                    {"name": "Rest", "remaining": True},
                    {"name": "A", "criteria": {"type": "nonsense"}},
                    {"name": "a", "criteria": {"all": []}, "connections": [{"output": "X", "status": "on"}]},
                ],
            }
        )
    problems = "\n".join(caught.value.problems)
    assert "name: a non-empty name" in problems
    assert "remaining users split is always the last" in problems
    assert "milestones[1] (A).criteria" in problems
    assert "unique in a journey" in problems
    assert "status: one of active, inactive" in problems


def test_planning_is_pure_and_matches_by_name_path() -> None:
    """plan_changes needs no backend: the live journey and the account are plain values."""
    from milepost.journeys.code import Account, LiveConnection, LiveJourney, LiveMilestone, plan_changes

    crit = {"type": "user_attribute", "attribute": "plan", "op": "equals", "value": "premium"}
    live = LiveJourney(
        7,
        "J",
        ("web",),
        (
            LiveMilestone(
                1, None, 0, "A", crit, False, 11, 40, (LiveConnection(5, 2, "Out", "active", {}, "keep"),)
            ),
            LiveMilestone(2, 1, 0, "Old child", {"all": []}, False, 12, 10),
            LiveMilestone(3, None, 1, "B", {"all": []}, False, 13, None),
        ),
    )
    account = Account(("web",), {"out": (2, "Out"), "other": (3, "Other")}, {}, 20, 1)
    doc = parse_document(
        {
            "name": "J",
            "inputs": ["web"],
            "milestones": [
                {"name": "A", "criteria": crit, "children": [{"name": "New child", "criteria": {"all": []}}]},
                {"name": "B", "criteria": {"all": []}, "connections": [{"output": "Other"}]},
            ],
        }
    )
    plan = plan_changes(doc, live, account, {})
    assert not plan.problems
    assert [(line.kind, line.text) for line in plan.lines] == [
        ("add", "milestone A / New child"),
        ("remove", "milestone A / Old child"),
        ("disconnect", "disconnect A → Out"),
        ("connect", "connect B → Other"),
        ("credits", "credits: 1 in use → 1 (limit 20; 1 activated, 1 freed)"),
    ]
    assert plan.updates == [(5, "inactive")] and plan.disconnects == [5]
    assert [m.id for m in plan.removes] == [2]
