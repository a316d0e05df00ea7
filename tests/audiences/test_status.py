"""The calculated set: activated audiences, their ancestors, what they refer to, and waited-on parents."""

from __future__ import annotations

from typing import Any

from milepost.audiences.tree import JourneyRows, MilestoneRow
from milepost.journeys.status import calculated_set

PAID = {"type": "user_attribute", "attribute": "plan", "op": "equals", "value": "paid"}


def m(mid: int, parent: int | None, criteria: dict[str, Any] | None, journey: int = 1) -> MilestoneRow:
    return MilestoneRow(mid, journey, parent, 0, f"m{mid}", 100 + mid, criteria, criteria is None)


def test_ancestors_references_and_waits() -> None:
    a = JourneyRows(1, "a", (1,), (m(1, None, PAID), m(2, 1, PAID), m(3, 2, PAID), m(4, None, None)))
    refer = {"all": [{"type": "audience", "audience_id": 104, "member": True}]}
    wait = {"type": "parent_entry", "op": "more_than_ago", "value": {"amount": 2, "unit": "days"}}
    b = JourneyRows(2, "b", (1,), (m(5, None, refer, 2), m(6, 5, wait, 2), m(7, None, PAID, 2)))
    # The wait alone makes its parent (105) calculated, and 105 refers to 104.
    assert calculated_set([a, b], []) == {104, 105}
    assert calculated_set([a, b], [103]) == {101, 102, 103, 104, 105}
    assert calculated_set([a, b], [107]) == {104, 105, 107}
    assert calculated_set([a, b], [999]) == {104, 105}  # unknown audiences are ignored
    c = JourneyRows(3, "c", (1,), (m(8, None, PAID, 3), m(9, 8, refer, 3), m(10, 9, PAID, 3)))
    assert calculated_set([a, c], [110]) == {108, 109, 110, 104}  # ancestors' references count too
    assert calculated_set([a, c], []) == set()
