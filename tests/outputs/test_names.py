"""The audiences' names shared by the connections' workers: one catalog read for all, kept 5 s."""

from __future__ import annotations

import pytest

from milepost.errors import NotFound
from milepost.outputs.names import NAME_TTL_S, AudienceNames


class Reads:
    def __init__(self) -> None:
        self.names = {1: ("Gold", "j_gold"), 2: ("Silver", "j_silver")}
        self.count = 0

    def __call__(self) -> dict[int, tuple[str, str]]:
        self.count += 1
        return dict(self.names)


def test_every_audience_is_read_once_per_interval() -> None:
    reads, now = Reads(), [100.0]
    names = AudienceNames(reads, monotonic=lambda: now[0])
    assert names.of(1) == ("Gold", "j_gold")
    assert names.of(2) == ("Silver", "j_silver")
    assert reads.count == 1
    reads.names[1] = ("Gold", "renamed")
    now[0] += NAME_TTL_S
    assert names.of(1) == ("Gold", "j_gold")  # still within the interval
    now[0] += 0.01
    assert names.of(1) == ("Gold", "renamed")
    assert reads.count == 2


def test_an_audience_not_seen_is_read_at_once_and_a_missing_one_is_not_found() -> None:
    reads, now = Reads(), [0.0]
    names = AudienceNames(reads, monotonic=lambda: now[0])
    names.of(1)
    reads.names[3] = ("Bronze", "j_bronze")
    assert names.of(3) == ("Bronze", "j_bronze")
    assert reads.count == 2
    with pytest.raises(NotFound):
        names.of(4)
