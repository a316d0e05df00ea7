"""Workspaces: names unique regardless of case, lookup by id or name, deletion only when empty."""

from __future__ import annotations

import pytest

from milepost.catalog import Catalog, Workspace
from milepost.clock import ManualClock
from milepost.errors import Conflict, InvalidRequest, NotFound


def test_create_list_and_get(catalog: Catalog, clock: ManualClock) -> None:
    start = clock.now_ms()
    first = catalog.create_workspace("  Europe ")
    clock.advance(5)
    second = catalog.create_workspace("Americas")
    assert first == Workspace(id=first.id, name="Europe", created_at=start)
    assert second.created_at == start + 5
    assert catalog.list_workspaces() == [first, second]
    assert catalog.get_workspace(first.id) == first
    assert catalog.get_workspace("europe") == first
    assert catalog.get_workspace(" EUROPE ") == first
    assert catalog.get_workspace(str(second.id)) == second


def test_names_are_unique_regardless_of_case(catalog: Catalog) -> None:
    catalog.create_workspace("Europe")
    with pytest.raises(Conflict, match="a workspace named 'EUROPE' already exists; choose another name"):
        catalog.create_workspace(" EUROPE")
    assert len(catalog.list_workspaces()) == 1


def test_a_name_made_of_digits_wins_over_an_id(catalog: Catalog) -> None:
    first = catalog.create_workspace("first")
    numbered = catalog.create_workspace(str(first.id))
    assert catalog.get_workspace(str(first.id)) == numbered
    assert catalog.get_workspace(first.id) == first


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "cannot be empty"),
        ("   ", "cannot be empty"),
        ("x" * 101, "at most 100 characters long"),
        ("a\nb", "control characters"),
        (12, "must be a string"),
    ],
)
def test_bad_names_are_refused(catalog: Catalog, name: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        catalog.create_workspace(name)  # type: ignore[arg-type]
    assert catalog.list_workspaces() == []


def test_a_name_of_100_characters_is_accepted(catalog: Catalog) -> None:
    assert catalog.create_workspace("é" * 100).name == "é" * 100


def test_rename(catalog: Catalog) -> None:
    europe = catalog.create_workspace("Europe")
    catalog.create_workspace("Asia")
    renamed = catalog.rename_workspace("europe", "EMEA")
    assert renamed == Workspace(id=europe.id, name="EMEA", created_at=europe.created_at)
    assert catalog.get_workspace("emea") == renamed
    with pytest.raises(NotFound):
        catalog.get_workspace("Europe")
    assert catalog.rename_workspace(europe.id, "emea").name == "emea"  # a change of case only
    with pytest.raises(Conflict, match="a workspace named 'asia' already exists"):
        catalog.rename_workspace(europe.id, "asia")
    with pytest.raises(InvalidRequest):
        catalog.rename_workspace(europe.id, " ")
    assert catalog.get_workspace(europe.id).name == "emea"


def test_delete(catalog: Catalog) -> None:
    europe = catalog.create_workspace("Europe")
    asia = catalog.create_workspace("Asia")
    catalog.delete_workspace("europe")
    assert catalog.list_workspaces() == [asia]
    with pytest.raises(NotFound):
        catalog.get_workspace(europe.id)
    assert catalog.create_workspace("Europe").name == "Europe"  # the name is free again


def test_a_workspace_with_inputs_cannot_be_deleted(catalog: Catalog) -> None:
    catalog.create_workspace("Europe")
    catalog.create_input("Europe", "web", "web")
    catalog.create_input("Europe", "ios", "ios")
    with pytest.raises(Conflict, match=r"still has 2 inputs \('web', 'ios'\); delete them"):
        catalog.delete_workspace("Europe")
    catalog.delete_input("web")
    catalog.delete_input("ios")
    catalog.delete_workspace("Europe")
    assert catalog.list_workspaces() == []


@pytest.mark.parametrize("ref", ["nowhere", 999, "999", 2**40, 0, -1])
def test_unknown_workspaces_are_not_found(catalog: Catalog, ref: int | str) -> None:
    catalog.create_workspace("Europe")
    with pytest.raises(NotFound, match="there is no workspace"):
        catalog.get_workspace(ref)
    with pytest.raises(NotFound):
        catalog.rename_workspace(ref, "Other")
    with pytest.raises(NotFound):
        catalog.delete_workspace(ref)
    with pytest.raises(NotFound):
        catalog.create_input(ref, "web", "web")
    with pytest.raises(NotFound):
        catalog.list_inputs(ref)


def test_a_reference_of_another_type_is_refused(catalog: Catalog) -> None:
    with pytest.raises(InvalidRequest, match="by its id or name"):
        catalog.get_workspace(True)
