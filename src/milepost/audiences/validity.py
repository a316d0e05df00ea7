"""How long a criterion's members on the sample stay what they are while time passes.

A criterion reads time only by comparing instants the sample holds (event times, first and last
seen) with `now` minus the durations it names (windows, `between_ago` bounds, sequence `within`,
the lookback, calculated-attribute windows; `audiences.boundaries`). Its members can therefore
change only at some held instant plus one of those durations: evaluated at `t`, they stay exact
for every `now` in `[t, next_change)`. Criteria that read time through what the sample does not
hold as instants (memberships and parent entries, rolling date conditions on values) get no such
bound: `durations` is None for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from milepost.audiences.boundaries import ROLLING_OPS, boundaries, walk
from milepost.audiences.masks import Ids
from milepost.criteria import CalculatedAttribute, Criteria
from milepost.criteria import model as m

NEVER = 2**62  # an instant no estimate reaches
MERGE_AFTER = 8  # extra chunks of instants kept before they are merged into one sorted array


def used_calculated(
    criteria: Criteria, calculated: Mapping[str, CalculatedAttribute]
) -> list[CalculatedAttribute]:
    names = {n.name for n in walk(criteria) if isinstance(n, m.CalculatedAttributeLeaf)}
    return [calculated[n] for n in sorted(names) if n in calculated]


def durations(
    criteria: Criteria, calculated: Iterable[CalculatedAttribute], lookback_ms: int, lifetime_ms: int
) -> frozenset[int] | None:
    """The durations after a held instant at which the criterion's members can change, or None
    when they can change at instants the sample does not hold."""
    calc = list(calculated)
    reads_time = False
    for node in walk([criteria, *calc]):
        if isinstance(node, m.EventLeaf | m.SequenceLeaf | m.CalculatedAttributeLeaf):
            reads_time = True  # compares event times with `now`
        if isinstance(node, m.AudienceLeaf | m.ParentEntryLeaf | m.SinceParentEntryWindow):
            return None  # membership entry times live outside the sample
        if isinstance(node, m.Condition | m.OpLeaf | m.Having) and node.op in ROLLING_OPS:
            return None  # a date value plus a duration: not an instant held here
    if not reads_time:
        return frozenset()  # profile values alone: time passing changes nothing
    found = boundaries([criteria], calc, lookback_ms, lifetime_ms)
    if found.attribute_durations:
        return None
    return found.durations_ms


@dataclass(frozen=True)
class Instants:
    """Every instant of the sample a criterion can compare with `now`, as sorted chunks (a superset
    is fine: an extra instant only ends a validity early)."""

    chunks: tuple[Ids, ...] = ()

    def add(self, times: Ids) -> Instants:
        """These instants too; chunks are merged once there are many, so lookups stay cheap."""
        chunks = (*self.chunks, np.sort(times))
        if len(chunks) > MERGE_AFTER:
            chunks = (np.sort(np.concatenate(chunks)),)
        return Instants(chunks)

    def next_change(self, spans: Iterable[int], now_ms: int) -> int:
        """The earliest instant after `now_ms` equal to a held instant plus one of `spans`."""
        best = NEVER
        for d in spans:
            for chunk in self.chunks:
                i = int(np.searchsorted(chunk, now_ms - d, side="right"))
                if i < chunk.shape[0]:
                    best = min(best, int(chunk[i]) + d)
        return best
