"""The outbox's newest changes, read once for every connection.

An evaluation wakes the connections of every audience it changed, and each would then ask the store
for its audience's new changes: a query per connection (about 2 ms of CPU each) for rows the
runner has just read anyway when following the outbox head. The runner keeps those rows here, per
audience, for as long as a connection of the audience has not passed them; a connection reads
from here when everything after its cursor is kept, else from the store.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping, Sequence

from milepost.outputs.records import Identities

Row = tuple[int, int, str, int]  # (seq, mpid, action, changed_at), as `DeliveryStore.outbox` returns

# An evaluation of a second's events at 20,000 a second changes about 20,000 memberships: kept
# with room to spare. A first calculation or a mass boundary is read from the store.
MAX_READ = 100_000  # a read with more changes than this is not kept
MAX_KEPT = 400_000  # nor more changes than this in all (about 70 MB)
MAX_USERS = 100_000  # nor the identities of more users than this (about 50 MB for two each)


class OutboxTail:
    """Per audience, every change with seq in (floor, head]; `floor` is where keeping began for the
    audience, or the last change dropped once its connections had passed it."""

    def __init__(self, max_kept: int = MAX_KEPT, max_users: int = MAX_USERS) -> None:
        self.max_kept = max_kept
        self.max_users = max_users
        self._lock = threading.Lock()
        self._head: int | None = None  # None: nothing kept yet
        self._start = 0  # every change after this and up to `_head` was added
        self._rows: dict[int, list[Row]] = {}
        self._floors: dict[int, int] = {}  # per audience, changes up to this were dropped
        self._kept = 0
        # Per user of the changes read, their identities and the head they were read at.
        self._identities: dict[int, tuple[Identities, int]] = {}

    def add(self, after: int, rows: Iterable[tuple[int, int, int, str, int]]) -> None:
        """Every change (seq, audience_id, mpid, action, changed_at) after `after`, in seq order."""
        with self._lock:
            if self._head != after:  # the first read, or a gap: keep from here
                self._restart(after)
            head = after
            for seq, audience, mpid, action, at in rows:
                self._rows.setdefault(audience, []).append((seq, mpid, action, at))
                self._kept += 1
                head = seq
            self._head = head
            if self._kept > self.max_kept:
                self._restart(head)

    def skip(self, head: int) -> None:
        """The changes up to `head` were not read: keep from there."""
        with self._lock:
            self._restart(head)

    def _restart(self, head: int) -> None:
        self._head, self._start = head, head
        self._rows.clear()
        self._floors.clear()
        self._kept = 0
        self._identities.clear()

    def remember(self, head: int, identities: Mapping[int, Identities]) -> None:
        """The identities of the users of the changes up to `head`, read after those were."""
        with self._lock:
            if len(self._identities) + len(identities) > self.max_users:
                self._identities.clear()
            for mpid, ids in identities.items():
                self._identities[mpid] = (ids, head)

    def identities(self, changes: Iterable[tuple[int, int]]) -> dict[int, Identities] | None:
        """The identities of the users of these changes (mpid, seq), each read after its change;
        None when one of them is not kept."""
        found: dict[int, Identities] = {}
        with self._lock:
            for mpid, seq in changes:
                kept = self._identities.get(mpid)
                if kept is None or kept[1] < seq:
                    return None
                found[mpid] = kept[0]
        return found

    def read(self, audience_id: int, after: int, limit: int, upto: int | None = None) -> list[Row] | None:
        """The audience's changes after `after` (up to `upto`), at most `limit`, in seq order; None
        when some of them are not kept (read them from the store)."""
        with self._lock:
            if self._head is None or after < max(self._start, self._floors.get(audience_id, 0)):
                return None
            if upto is not None and upto > self._head:
                return None
            rows = self._rows.get(audience_id, [])
            i = bisect.bisect_right(rows, after, key=lambda r: r[0])
            found = rows[i : i + limit]
        if upto is not None:
            found = [r for r in found if r[0] <= upto]
        return found

    def drop(self, passed: Mapping[int, int]) -> None:
        """Drop each audience's changes up to `passed[audience]` (what all its connections have
        passed), and those of audiences not named (no connection follows them)."""
        with self._lock:
            for audience in list(self._rows):
                rows = self._rows[audience]
                upto = passed.get(audience)
                i = len(rows) if upto is None else bisect.bisect_right(rows, upto, key=lambda r: r[0])
                if i:
                    self._floors[audience] = max(self._floors.get(audience, 0), rows[i - 1][0])
                    del rows[:i]
                    self._kept -= i


def passed(cursors: Sequence[tuple[int | None, int]]) -> dict[int, int]:
    """Per audience, the smallest cursor of the connections (audience, cursor) that follow it."""
    out: dict[int, int] = {}
    for audience, cursor in cursors:
        if audience is not None:
            out[audience] = min(out.get(audience, cursor), cursor)
    return out
