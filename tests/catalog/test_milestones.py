"""Milestones and their audiences: positions, remaining users splits, reordering, deleting, ids."""

from __future__ import annotations

import threading

import pytest

from milepost.catalog import Catalog, MilestoneRecord
from milepost.clock import ManualClock
from milepost.errors import Conflict, InvalidCriteria, InvalidRequest, JourneyRuleViolation, NotFound


def attr(value: str) -> dict[str, object]:
    return {"type": "user_attribute", "attribute": "tier", "op": "equals", "value": value}


def audience(audience_id: int) -> dict[str, object]:
    return {"type": "audience", "audience_id": audience_id}


@pytest.fixture
def journey(catalog: Catalog) -> int:
    workspace = catalog.create_workspace("Main").id
    catalog.create_input(workspace, "web", "web")
    return catalog.create_journey("Churn", None).id


def add(
    catalog: Catalog, journey: int, name: str, parent: int | None = None, **kw: object
) -> MilestoneRecord:
    if not kw.get("remaining") and "criteria" not in kw:
        kw["criteria"] = attr(name)
    return catalog.add_milestone(journey, parent_id=parent, name=name, **kw)  # type: ignore[arg-type]


def names(catalog: Catalog, journey: int, parent: int | None = None) -> list[str]:
    siblings = [m for m in catalog.milestones(journey) if m.parent_id == parent]
    assert [m.position for m in siblings] == list(range(len(siblings)))
    return [m.name for m in siblings]


def test_add_milestone_returns_it_with_its_audience(
    catalog: Catalog, clock: ManualClock, journey: int
) -> None:
    created = catalog.add_milestone("churn", parent_id=None, name=" Gold ", criteria=attr("gold"))
    assert created == MilestoneRecord(
        id=created.id,
        journey_id=journey,
        parent_id=None,
        position=0,
        name="Gold",
        criteria={"type": "user_attribute", "attribute": "tier", "op": "equals", "value": "gold"},
        remaining=False,
        audience_id=created.audience_id,
        external_name="Churn – Gold",
        created_at=clock.now_ms(),
        updated_at=clock.now_ms(),
    )
    assert created.audience_id >= 1
    assert catalog.get_milestone(created.id) == created
    assert catalog.milestone_by_audience(created.audience_id) == created
    assert catalog.find_audience("CHURN", "gold") == created.audience_id
    assert catalog.milestones(journey) == [created]
    assert catalog.get_journey(journey).updated_at == clock.now_ms()


def test_criteria_are_validated_and_stored_canonically(catalog: Catalog, journey: int) -> None:
    with pytest.raises(InvalidCriteria):
        catalog.add_milestone(journey, parent_id=None, name="Bad", criteria={"type": "nonsense"})
    with pytest.raises(InvalidRequest, match="milestone 'None' needs criteria; only a remaining users split"):
        catalog.add_milestone(journey, parent_id=None, name="None")
    customer = {"type": "identity", "identity": "customerid", "op": "exists"}
    created = catalog.add_milestone(journey, parent_id=None, name="Known", criteria=customer)
    assert created.criteria == {"type": "identity", "identity": "customer_id", "op": "exists"}
    assert names(catalog, journey) == ["Known"]


def test_positions_among_siblings(catalog: Catalog, journey: int) -> None:
    add(catalog, journey, "a")
    add(catalog, journey, "c")
    add(catalog, journey, "b", position=1)
    add(catalog, journey, "first", position=0)
    add(catalog, journey, "last", position=4)
    assert names(catalog, journey) == ["first", "a", "b", "c", "last"]
    with pytest.raises(
        InvalidRequest, match="position under the root of journey 'Churn' must be from 0 to 5"
    ):
        add(catalog, journey, "x", position=6)
    with pytest.raises(InvalidRequest, match="position must be a whole number, 0 or more"):
        add(catalog, journey, "x", position=-1)


def test_children_and_parents(catalog: Catalog, journey: int) -> None:
    top = add(catalog, journey, "top")
    child = add(catalog, journey, "child", top.id)
    grandchild = add(catalog, journey, "grandchild", child.id)
    other = add(catalog, journey, "other")
    assert (child.parent_id, child.position, grandchild.parent_id) == (top.id, 0, child.id)
    assert [m.name for m in catalog.milestones(journey)] == ["top", "other", "child", "grandchild"]
    second = catalog.create_journey("Other", None)
    foreign = add(catalog, second.id, "foreign")
    with pytest.raises(InvalidRequest, match=r"milestone 'foreign' .* belongs to another journey"):
        add(catalog, journey, "x", foreign.id)
    with pytest.raises(NotFound, match="there is no milestone with id 9999 to be the parent"):
        add(catalog, journey, "x", 9999)
    with pytest.raises(NotFound, match="there is no journey named 'Nope'"):
        catalog.add_milestone("Nope", parent_id=None, name="x", criteria=attr("x"))
    assert other.position == 1


def test_milestone_names_are_unique_within_a_journey(catalog: Catalog, journey: int) -> None:
    first = add(catalog, journey, "Gold")
    with pytest.raises(Conflict, match="a milestone named 'GOLD' already exists in this journey"):
        add(catalog, journey, "GOLD", first.id)
    second = catalog.create_journey("Welcome", None)
    assert add(catalog, second.id, "gold").name == "gold"


def test_remaining_split_rules(catalog: Catalog, journey: int) -> None:
    with pytest.raises(
        JourneyRuleViolation, match="the root of journey 'Churn' has no milestone yet; add a milestone before"
    ):
        add(catalog, journey, "Everyone else", remaining=True)
    add(catalog, journey, "a")
    with pytest.raises(JourneyRuleViolation, match="remaining users split 'Rest' cannot have criteria"):
        add(catalog, journey, "Rest", remaining=True, criteria=attr("x"))
    with pytest.raises(JourneyRuleViolation, match="a remaining users split is always last: its position"):
        add(catalog, journey, "Rest", remaining=True, position=0)
    split = add(catalog, journey, "Everyone else", remaining=True)
    assert (split.criteria, split.remaining, split.position) == (None, True, 1)
    with pytest.raises(JourneyRuleViolation, match="already has the remaining users split 'Everyone else'"):
        add(catalog, journey, "Rest", remaining=True)
    add(catalog, journey, "b")
    add(catalog, journey, "zero", position=0)
    add(catalog, journey, "before split", position=3)
    assert names(catalog, journey) == ["zero", "a", "b", "before split", "Everyone else"]
    with pytest.raises(
        JourneyRuleViolation,
        match="position 5 would place 'x' after the remaining users split 'Everyone else', which is always last",
    ):
        add(catalog, journey, "x", position=5)
    # milestones can be added under a remaining split
    under = add(catalog, journey, "under", split.id)
    assert under.parent_id == split.id
    with pytest.raises(JourneyRuleViolation, match="cannot be edited"):
        catalog.update_milestone(split.id, criteria=attr("x"))


def test_update_milestone(catalog: Catalog, clock: ManualClock, journey: int) -> None:
    gold = add(catalog, journey, "Gold")
    add(catalog, journey, "Silver")
    split = add(catalog, journey, "Rest", remaining=True)
    clock.advance(10)
    renamed = catalog.update_milestone(gold.id, name="Golden")
    assert (renamed.name, renamed.external_name, renamed.criteria) == (
        "Golden",
        "Churn – Golden",
        gold.criteria,
    )
    assert renamed.updated_at == gold.updated_at + 10
    changed = catalog.update_milestone(gold.id, criteria=attr("platinum"))
    assert changed.criteria == attr("platinum")
    assert changed.audience_id == gold.audience_id
    with pytest.raises(Conflict, match="a milestone named 'silver' already exists"):
        catalog.update_milestone(gold.id, name="silver")
    with pytest.raises(InvalidCriteria):
        catalog.update_milestone(gold.id, criteria={"all": "x"})
    with pytest.raises(
        JourneyRuleViolation, match="the criteria of remaining users split 'Rest' cannot be edited"
    ):
        catalog.update_milestone(split.id, criteria=attr("x"))
    assert catalog.update_milestone(split.id, name="Others").name == "Others"
    assert catalog.update_milestone(gold.id) == catalog.get_milestone(gold.id)
    with pytest.raises(NotFound, match="there is no milestone with id 4242"):
        catalog.update_milestone(4242, name="x")


def test_external_names(catalog: Catalog, journey: int) -> None:
    gold = add(catalog, journey, "Gold")
    assert catalog.set_external_name(gold.id, "Gold customers").external_name == "Gold customers"
    catalog.rename_journey(journey, "Retention")
    assert catalog.get_milestone(gold.id).external_name == "Gold customers"
    assert catalog.set_external_name(gold.id, None).external_name == "Retention – Gold"
    with pytest.raises(InvalidRequest, match="cannot be empty"):
        catalog.set_external_name(gold.id, " ")


def test_names_by_audience(catalog: Catalog, journey: int) -> None:
    gold = add(catalog, journey, "Gold")
    silver = add(catalog, journey, "Silver", gold.id)
    catalog.set_external_name(gold.id, "Gold customers")
    assert catalog.names_by_audience() == {
        gold.audience_id: ("Gold", "Gold customers"),
        silver.audience_id: ("Silver", catalog.get_milestone(silver.id).external_name),
    }
    catalog.rename_journey(journey, "Retention")
    assert catalog.names_by_audience()[silver.audience_id] == ("Silver", "Retention – Silver")


def test_reorder(catalog: Catalog, clock: ManualClock, journey: int) -> None:
    a, b, c = (add(catalog, journey, name) for name in "abc")
    split = add(catalog, journey, "rest", remaining=True)
    child = add(catalog, journey, "child", a.id)
    clock.advance(1)
    reordered = catalog.reorder_milestones("Churn", None, [c.id, a.id, b.id])
    assert [(m.name, m.position) for m in reordered] == [("c", 0), ("a", 1), ("b", 2), ("rest", 3)]
    assert names(catalog, journey) == ["c", "a", "b", "rest"]
    assert catalog.get_milestone(c.id).updated_at == c.updated_at + 1
    with pytest.raises(JourneyRuleViolation, match="remaining users split 'rest' cannot be reordered"):
        catalog.reorder_milestones(journey, None, [a.id, split.id, b.id, c.id])
    with pytest.raises(InvalidRequest, match=rf"exactly once \(ids {c.id}, {a.id}, {b.id}\)"):
        catalog.reorder_milestones(journey, None, [a.id, b.id])
    with pytest.raises(InvalidRequest, match="exactly once"):
        catalog.reorder_milestones(journey, None, [a.id, a.id, b.id, c.id])
    with pytest.raises(InvalidRequest, match="exactly once"):
        catalog.reorder_milestones(journey, None, [a.id, b.id, child.id])
    with pytest.raises(InvalidRequest, match="order must be a list of milestone ids"):
        catalog.reorder_milestones(journey, None, ["a"])  # type: ignore[list-item]
    assert names(catalog, journey) == ["c", "a", "b", "rest"]
    assert [m.name for m in catalog.reorder_milestones(journey, a.id, [child.id])] == ["child"]


def test_delete_milestone_rules(catalog: Catalog, journey: int) -> None:
    a = add(catalog, journey, "a")
    b = add(catalog, journey, "b")
    split = add(catalog, journey, "rest", remaining=True)
    child = add(catalog, journey, "child", b.id)
    under_split = add(catalog, journey, "under", split.id)
    # Milestones are removed from last to first, and the remaining split is always last.
    with pytest.raises(
        JourneyRuleViolation,
        match="cannot delete milestone 'a': milestones are removed from last to first; "
        "delete the remaining users split 'rest' first",
    ):
        catalog.delete_milestone(a.id)
    with pytest.raises(JourneyRuleViolation, match="cannot delete remaining users split 'rest': 1 milestone"):
        catalog.delete_milestone(split.id)
    catalog.delete_milestone(under_split.id)
    catalog.delete_milestone(split.id)
    with pytest.raises(
        JourneyRuleViolation,
        match=r"cannot delete milestone 'b': 1 milestone \('child'\) hang below it; delete them first",
    ):
        catalog.delete_milestone(b.id)
    with pytest.raises(JourneyRuleViolation, match="delete milestone 'b' first"):
        catalog.delete_milestone(a.id)
    catalog.delete_milestone(child.id)
    catalog.delete_milestone(b.id)
    assert names(catalog, journey) == ["a"]
    catalog.delete_milestone(a.id)
    assert catalog.milestones(journey) == []
    with pytest.raises(NotFound, match=f"there is no milestone with id {b.id}"):
        catalog.delete_milestone(b.id)
    with pytest.raises(NotFound, match=f"there is no audience with id {b.audience_id}"):
        catalog.milestone_by_audience(b.audience_id)
    with pytest.raises(NotFound, match=f"there is no milestone with id {b.id}"):
        catalog.get_milestone(b.id)


def test_deleting_the_last_keeps_positions_dense(catalog: Catalog, journey: int) -> None:
    milestones = [add(catalog, journey, name) for name in "abcd"]
    catalog.delete_milestone(milestones[3].id)
    assert names(catalog, journey) == ["a", "b", "c"]
    add(catalog, journey, "e", position=1)
    assert names(catalog, journey) == ["a", "e", "b", "c"]
    assert [m.position for m in catalog.milestones(journey)] == [0, 1, 2, 3]


def test_audience_references(catalog: Catalog, journey: int) -> None:
    gold = add(catalog, journey, "Gold")
    other = catalog.create_journey("Win back", None)
    user = catalog.add_milestone(
        other.id, parent_id=None, name="Was gold", criteria=audience(gold.audience_id)
    )
    by_name = {"not": {"type": "audience", "journey": "churn", "milestone": "GOLD"}}
    named = catalog.add_milestone(other.id, parent_id=None, name="Never gold", criteria=by_name)
    assert named.criteria == {"not": {"type": "audience", "audience_id": gold.audience_id, "member": True}}
    with pytest.raises(
        JourneyRuleViolation,
        match="cannot delete milestone 'Gold': milestone 'Was gold' in journey 'Win back'; "
        "milestone 'Never gold' in journey 'Win back' refer to its audience",
    ):
        catalog.delete_milestone(gold.id)
    catalog.delete_milestone(named.id)
    with pytest.raises(
        JourneyRuleViolation, match="milestone 'Was gold' in journey 'Win back' refers to its audience"
    ):
        catalog.delete_milestone(gold.id)
    catalog.update_milestone(user.id, criteria=attr("x"))
    catalog.delete_milestone(gold.id)
    with pytest.raises(
        NotFound, match=f"the criteria refer to audience {gold.audience_id}, which does not exist"
    ):
        catalog.update_milestone(user.id, criteria=audience(gold.audience_id))
    with pytest.raises(NotFound, match="there is no milestone named 'GOLD' in journey 'Churn'"):
        catalog.add_milestone(other.id, parent_id=None, name="x", criteria=by_name)


def test_a_milestone_referring_to_itself_can_still_be_deleted(catalog: Catalog, journey: int) -> None:
    gold = add(catalog, journey, "Gold")
    catalog.update_milestone(gold.id, criteria={"any": [attr("gold"), audience(gold.audience_id)]})
    catalog.delete_milestone(gold.id)
    assert catalog.milestones(journey) == []


def test_find_audience_names_both_when_missing(catalog: Catalog, journey: int) -> None:
    with pytest.raises(NotFound, match="there is no milestone named 'Gold' in journey 'Churn'"):
        catalog.find_audience("Churn", "Gold")
    with pytest.raises(
        NotFound, match="there is no journey named 'Nope' \\(looking for its milestone 'Gold'\\)"
    ):
        catalog.find_audience("Nope", "Gold")


def test_audience_ids_are_never_reused(
    catalog: Catalog, catalog_url: str, clock: ManualClock, journey: int
) -> None:
    seen: set[int] = set()
    for round_number in range(3):
        created = [add(catalog, journey, f"m{round_number}-{i}") for i in range(3)]
        ids = [m.audience_id for m in created]
        assert all(i > 0 for i in ids)
        assert not seen & set(ids)
        seen |= set(ids)
        for milestone in reversed(created):
            catalog.delete_milestone(milestone.id)
    catalog.close()
    with Catalog(catalog_url, clock=clock) as reopened:
        again = reopened.add_milestone(journey, parent_id=None, name="again", criteria=attr("x"))
        assert again.audience_id > max(seen)
        reopened.delete_milestone(again.id)
        other = reopened.create_journey("Other", None)
        assert reopened.add_milestone(other.id, parent_id=None, name="y", criteria=attr("y")).audience_id > (
            again.audience_id
        )


def test_milestones_of_an_unknown_journey(catalog: Catalog) -> None:
    with pytest.raises(NotFound, match="there is no journey with id 5"):
        catalog.milestones(5)
    with pytest.raises(InvalidRequest, match="a milestone is referred to by its id"):
        catalog.get_milestone("x")  # type: ignore[arg-type]


def test_concurrent_adds_under_one_parent_get_distinct_positions(
    catalog: Catalog, catalog_url: str, journey: int
) -> None:
    threads = 8
    barrier = threading.Barrier(threads)
    errors: list[str] = []
    others = [Catalog(catalog_url) for _ in range(threads)]

    def create(index: int) -> None:
        barrier.wait()
        try:
            others[index].add_milestone(journey, parent_id=None, name=f"m{index}", criteria=attr(str(index)))
        except Exception as error:  # anything is a failure of the test
            errors.append(f"{type(error).__name__}: {error}")

    try:
        workers = [threading.Thread(target=create, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        for other in others:
            other.close()
    assert errors == []
    assert sorted(names(catalog, journey)) == sorted(f"m{i}" for i in range(threads))
