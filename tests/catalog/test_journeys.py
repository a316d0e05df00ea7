"""Journeys, the inputs they select, calculated attributes, and upgrading a catalog to schema 0002."""

from __future__ import annotations

import dataclasses

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from milepost.catalog import CalculatedAttributeRecord, Catalog, JourneyRecord
from milepost.catalog.database import migration_config, open_engine
from milepost.clock import ManualClock
from milepost.errors import Conflict, InvalidCriteria, InvalidRequest, JourneyRuleViolation, NotFound

GOLD = {"type": "user_attribute", "attribute": "tier", "op": "equals", "value": "gold"}
LTV = {
    "name": "LTV",
    "calculation": "sum",
    "event": {"event_type": "commerce_event", "action": "purchase"},
    "attribute": "total_amount",
    "window": {"within": 30},
}


@pytest.fixture
def inputs(catalog: Catalog) -> list[int]:
    workspace = catalog.create_workspace("Main").id
    return [catalog.create_input(workspace, name, name)[0].id for name in ("web", "ios", "android")]


# journeys


def test_create_journey_selects_every_existing_input_by_default(
    catalog: Catalog, clock: ManualClock, inputs: list[int]
) -> None:
    created = catalog.create_journey(" Churn prevention ", None)
    assert created == JourneyRecord(
        id=created.id,
        name="Churn prevention",
        input_ids=tuple(inputs),
        created_at=clock.now_ms(),
        updated_at=clock.now_ms(),
    )
    later = catalog.create_input("Main", "server", "server")[0]
    assert later.id not in catalog.get_journey(created.id).input_ids
    assert catalog.get_journey("churn PREVENTION") == created
    assert catalog.get_journey(str(created.id)) == created


def test_create_journey_with_chosen_inputs(catalog: Catalog, inputs: list[int]) -> None:
    created = catalog.create_journey("J", [inputs[2], inputs[0], inputs[2]])
    assert created.input_ids == (inputs[0], inputs[2])
    assert catalog.create_journey("K", ["ios"]).input_ids == (inputs[1],)


def test_create_journey_refusals(catalog: Catalog, inputs: list[int]) -> None:
    with pytest.raises(InvalidRequest, match="a journey needs at least one input"):
        catalog.create_journey("J", [])
    with pytest.raises(NotFound, match="there is no input with id 999"):
        catalog.create_journey("J", [inputs[0], 999])
    with pytest.raises(InvalidRequest, match="inputs must be a list"):
        catalog.create_journey("J", 5)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="journey name cannot be empty"):
        catalog.create_journey("  ", None)
    assert catalog.list_journeys() == []
    catalog.create_journey("Welcome", None)
    with pytest.raises(Conflict, match="a journey named 'WELCOME' already exists; choose another name"):
        catalog.create_journey("WELCOME", None)


def test_a_journey_can_be_created_before_any_input_exists(catalog: Catalog) -> None:
    assert catalog.create_journey("Early", None).input_ids == ()


def test_list_get_and_not_found(catalog: Catalog, inputs: list[int]) -> None:
    first = catalog.create_journey("A", None)
    second = catalog.create_journey("B", [inputs[1]])
    assert catalog.list_journeys() == [first, second]
    with pytest.raises(NotFound, match="there is no journey named 'C'"):
        catalog.get_journey("C")
    with pytest.raises(NotFound, match="there is no journey with id 77"):
        catalog.get_journey(77)


def test_rename_journey(catalog: Catalog, clock: ManualClock, inputs: list[int]) -> None:
    journey = catalog.create_journey("A", None)
    catalog.create_journey("B", None)
    clock.advance(1000)
    renamed = catalog.rename_journey("a", "Onboarding")
    assert renamed == dataclasses.replace(journey, name="Onboarding", updated_at=journey.updated_at + 1000)
    assert catalog.rename_journey(journey.id, "ONBOARDING").name == "ONBOARDING"
    with pytest.raises(Conflict, match="a journey named 'b' already exists"):
        catalog.rename_journey(journey.id, "b")


def test_set_journey_inputs(catalog: Catalog, clock: ManualClock, inputs: list[int]) -> None:
    journey = catalog.create_journey("A", None)
    clock.advance(5)
    changed = catalog.set_journey_inputs("A", [inputs[1]])
    assert changed.input_ids == (inputs[1],)
    assert changed.updated_at == journey.updated_at + 5
    assert catalog.get_journey(journey.id) == changed
    with pytest.raises(InvalidRequest, match="at least one input"):
        catalog.set_journey_inputs("A", [])
    with pytest.raises(NotFound, match="there is no input named 'tv'"):
        catalog.set_journey_inputs("A", ["tv"])
    assert catalog.get_journey(journey.id).input_ids == (inputs[1],)


def test_delete_journey_only_when_empty(catalog: Catalog, inputs: list[int]) -> None:
    journey = catalog.create_journey("Churn", None)
    milestone = catalog.add_milestone(journey.id, parent_id=None, name="Gold", criteria=GOLD)
    with pytest.raises(
        JourneyRuleViolation, match="journey 'Churn' still has milestones; delete them first, last to first"
    ):
        catalog.delete_journey(journey.id)
    catalog.delete_milestone(milestone.id)
    catalog.delete_journey("churn")
    assert catalog.list_journeys() == []
    with pytest.raises(NotFound):
        catalog.delete_journey(journey.id)
    # its inputs are free again
    catalog.delete_input(inputs[0])


def test_an_input_a_journey_selects_cannot_be_deleted(catalog: Catalog, inputs: list[int]) -> None:
    catalog.create_journey("Churn", [inputs[0], inputs[1]])
    catalog.create_journey("Welcome", [inputs[0]])
    with pytest.raises(
        Conflict,
        match="input 'web' is still selected by journeys 'Churn', 'Welcome'; remove it from those journeys first",
    ):
        catalog.delete_input("web")
    with pytest.raises(
        Conflict, match="input 'ios' is still selected by journey 'Churn'; remove it from that journey first"
    ):
        catalog.delete_input("ios")
    catalog.delete_input("android")
    catalog.set_journey_inputs("Churn", [inputs[0]])
    catalog.delete_input("ios")
    assert [i.name for i in catalog.list_inputs()] == ["web"]


def test_the_database_itself_restricts_deleting_a_selected_input(
    catalog: Catalog, catalog_url: str, inputs: list[int]
) -> None:
    catalog.create_journey("Churn", [inputs[0]])
    engine = open_engine(catalog_url)
    try:
        with pytest.raises(IntegrityError, match=r"(?i)foreign key"), engine.begin() as connection:
            connection.execute(text("DELETE FROM inputs WHERE id = :id"), {"id": inputs[0]})
    finally:
        engine.dispose()


# calculated attributes


def test_calculated_attributes(catalog: Catalog, clock: ManualClock) -> None:
    created = catalog.create_calculated_attribute(LTV)
    assert created == CalculatedAttributeRecord(
        id=created.id,
        name="LTV",
        definition={
            "name": "LTV",
            "calculation": "sum",
            "event": created.definition["event"],
            "attribute": "total_amount",
            "window": created.definition["window"],
        },
        created_at=clock.now_ms(),
        updated_at=clock.now_ms(),
    )
    assert created.definition["event"]["event_type"] == "commerce_event"
    count = catalog.create_calculated_attribute(
        {"name": "purchases", "calculation": "count", "event": {"event_type": "commerce_event"}}
    )
    assert catalog.list_calculated_attributes() == [created, count]
    assert catalog.get_calculated_attribute("ltv") == created
    assert catalog.get_calculated_attribute(created.id) == created
    with pytest.raises(Conflict, match="a calculated attribute named 'ltv' already exists"):
        catalog.create_calculated_attribute({**LTV, "name": "ltv"})
    with pytest.raises(InvalidCriteria, match="'sum' needs an attribute"):
        catalog.create_calculated_attribute(
            {"name": "x", "calculation": "sum", "event": {"event_type": "custom_event"}}
        )
    catalog.delete_calculated_attribute("purchases")
    assert catalog.list_calculated_attributes() == [created]
    with pytest.raises(NotFound, match="there is no calculated attribute named 'purchases'"):
        catalog.get_calculated_attribute("purchases")
    with pytest.raises(NotFound):
        catalog.delete_calculated_attribute("purchases")


def test_a_calculated_attribute_in_use_cannot_be_deleted(catalog: Catalog) -> None:
    catalog.create_calculated_attribute(LTV)
    journey = catalog.create_journey("Value", None)
    criteria = {"type": "calculated_attribute", "name": "LTV", "op": "greater_than", "value": 100}
    high = catalog.add_milestone(journey.id, parent_id=None, name="High value", criteria=criteria)
    with pytest.raises(
        Conflict,
        match="calculated attribute 'LTV' is used by milestone 'High value' in journey 'Value'; "
        "change or delete those milestones first",
    ):
        catalog.delete_calculated_attribute("LTV")
    catalog.update_milestone(high.id, criteria=GOLD)
    catalog.delete_calculated_attribute("LTV")
    assert catalog.list_calculated_attributes() == []


def test_criteria_may_only_use_existing_calculated_attributes(catalog: Catalog) -> None:
    journey = catalog.create_journey("Value", None)
    criteria = {"type": "calculated_attribute", "name": "LTV", "op": "greater_than", "value": 100}
    with pytest.raises(NotFound, match="calculated attribute 'LTV', which does not exist; create it first"):
        catalog.add_milestone(journey.id, parent_id=None, name="High value", criteria=criteria)
    catalog.create_calculated_attribute(LTV)
    assert catalog.add_milestone(journey.id, parent_id=None, name="High value", criteria=criteria).criteria


# migrations


def test_upgrading_a_0001_catalog_keeps_its_data(catalog_url: str, clock: ManualClock) -> None:
    engine = open_engine(catalog_url)
    try:
        config = migration_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
        with engine.begin() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
            connection.execute(
                text("INSERT INTO workspaces (id, name, name_key, created_at) VALUES (1, 'Main', 'main', 5)")
            )
            connection.execute(
                text(
                    "INSERT INTO inputs (id, workspace_id, name, name_key, platform, key, secret_hash, "
                    "enabled, created_at, secret_rotated_at) VALUES "
                    "(1, 1, 'web', 'web', 'web', :key, :hash, :enabled, 5, 5)"
                ),
                {"key": "a" * 32, "hash": "b" * 64, "enabled": True},
            )
            connection.execute(text("UPDATE account_settings SET lookback_days = 30"))
    finally:
        engine.dispose()
    with Catalog(catalog_url, clock=clock) as catalog:
        assert [w.name for w in catalog.list_workspaces()] == ["Main"]
        assert catalog.get_input("web").key == "a" * 32
        assert catalog.get_settings().lookback_days == 30
        journey = catalog.create_journey("Churn", None)
        assert journey.input_ids == (1,)
        milestone = catalog.add_milestone(journey.id, parent_id=None, name="Gold", criteria=GOLD)
    with Catalog(catalog_url, clock=clock) as reopened:
        assert reopened.milestones("Churn") == [milestone]
    engine = open_engine(catalog_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
    finally:
        engine.dispose()


def test_downgrading_to_0001_removes_only_the_new_tables(catalog_url: str, clock: ManualClock) -> None:
    with Catalog(catalog_url, clock=clock) as catalog:
        catalog.create_workspace("Main")
    engine = open_engine(catalog_url)
    try:
        config = migration_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0001")
    finally:
        engine.dispose()
    with Catalog(catalog_url, clock=clock) as catalog:
        assert [w.name for w in catalog.list_workspaces()] == ["Main"]
        assert catalog.list_journeys() == []
