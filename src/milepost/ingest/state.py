"""An in-memory mirror of the stored state the commit plan looks up.

The store has one writer, so after one read of the key tables, the identity index and the user
ids, every later change passes through `committed` and the mirror stays exact. A commit then
needs no look-up query (whose hash joins read whole tables, slower as they grow), and the writes
can tell new rows from changed ones. Memory: a few hundred bytes per stored key, identity and user.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from milepost.ingest.plan import Snapshot

if TYPE_CHECKING:
    from milepost.ingest.plan import CommitPlan


class StateMirror:
    def __init__(
        self,
        request_keys: Iterable[tuple[int, str, int]],
        message_keys: Iterable[tuple[int, str, int]],
        identities: Iterable[tuple[str, str, int, str, bool]],
        users: Iterable[tuple[Iterable[int], Iterable[int]]],
    ) -> None:
        """Rows as stored: keys (input_id, key, received_at); identities (type, key, mpid, value, is_device);
        users as (inputs, their mpids) groups."""
        self.request_keys: dict[tuple[int, str], int] = {(i, k): at for i, k, at in request_keys}
        self.message_keys: dict[tuple[int, str], int] = {(i, k): at for i, k, at in message_keys}
        self.owners: dict[tuple[str, str], tuple[int, str]] = {}  # identity -> (owner, value as stored)
        self.user_keys: dict[int, dict[str, str]] = {}  # mpid -> its user identities by type
        for id_type, key, mpid, value, is_device in identities:
            self.owners[(id_type, key)] = (mpid, value)
            if not is_device:
                self.user_keys.setdefault(mpid, {})[id_type] = key
        # Every stored user and its inputs as a bit mask (bit i: input i): a commit whose known users
        # add no input and no attribute writes only their scalar columns. Ints, not tuples, so that the
        # collector never tracks the dict (frozen at start, see DuckDBStore._state); users share the
        # few distinct masks.
        self._shared: dict[int, int] = {}
        self.inputs_of: dict[int, int] = {}  # every stored user -> its inputs mask
        for inputs, mpids in users:
            self.inputs_of.update(dict.fromkeys(mpids, self._share(input_mask(inputs))))

    def snapshot(
        self,
        request_keys: set[tuple[int, str]],
        request_since_ms: int,
        message_keys: set[tuple[int, str]],
        message_since_ms: int,
        identity_keys: set[tuple[str, str]],
        mpids: set[int],
    ) -> Snapshot:
        """What the store's look-up query would answer; fresh containers the plan may change."""
        snap = Snapshot()
        snap.seen_requests = _seen_since(self.request_keys, request_keys, request_since_ms)
        snap.seen_messages = _seen_since(self.message_keys, message_keys, message_since_ms)
        owners = self.owners
        wanted = set(mpids)
        for key in identity_keys:
            owner = owners.get(key)
            if owner is not None:
                snap.owners[key] = owner[0]
                wanted.add(owner[0])
        snap.known_mpids = wanted & self.inputs_of.keys()
        for mpid in snap.known_mpids:
            keys = self.user_keys.get(mpid)
            if keys:
                snap.user_keys[mpid] = dict(keys)
        return snap

    def _share(self, mask: int) -> int:
        return self._shared.setdefault(mask, mask)

    def lists_change(self, plan: CommitPlan) -> bool:
        """Whether a known user of the plan gains an input or changes attributes (its list and JSON
        columns change, not only the scalar ones)."""
        stored = self.inputs_of
        return any(
            not c.is_new and (c.attributes_patch or input_mask(c.inputs) & ~stored[m])
            for m, c in plan.users.items()
        )

    def identity_changes(self, plan: CommitPlan) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """Identities of the plan (stored already with the same owner and value: nothing to write,
        not stored at all: a plain append)."""
        unchanged, absent = set(), set()
        owners = self.owners
        released = plan.released_identities
        for key, (mpid, value, _is_device, _at) in plan.identities.items():
            stored = owners.get(key)
            if stored is None:
                absent.add(key)
            elif stored == (mpid, value) and (mpid, key[0]) not in released:
                unchanged.add(key)
        return unchanged, absent

    def committed(self, plan: CommitPlan) -> None:
        """Take in what a successful commit wrote, in the order its statements ran."""
        stored = self.inputs_of
        for mpid, change in plan.users.items():
            mask = stored.get(mpid, 0)
            stored[mpid] = self._share(mask | input_mask(change.inputs))
        for mpid, id_type in plan.released_identities:
            old = self.user_keys.get(mpid, {}).pop(id_type, None)
            if old is not None and self.owners.get((id_type, old), (None, ""))[0] == mpid:
                del self.owners[(id_type, old)]
        for key, (mpid, value, is_device, _at) in plan.identities.items():
            previous = self.owners.get(key)
            if previous is not None and previous[0] != mpid and not is_device:
                theirs = self.user_keys.get(previous[0])
                if theirs is not None and theirs.get(key[0]) == key[1]:
                    del theirs[key[0]]
            self.owners[key] = (mpid, value)
            if not is_device:
                self.user_keys.setdefault(mpid, {})[key[0]] = key[1]
        self.request_keys.update(plan.request_keys)
        self.message_keys.update(plan.message_keys)

    def forget_keys(self, request_before_ms: int, message_before_ms: int) -> None:
        """Drop what the store's purge of expired de-duplication keys deletes."""
        self.request_keys = {k: at for k, at in self.request_keys.items() if at > request_before_ms}
        self.message_keys = {k: at for k, at in self.message_keys.items() if at > message_before_ms}


def _seen_since(
    stored: dict[tuple[int, str], int], keys: set[tuple[int, str]], since_ms: int
) -> set[tuple[int, str]]:
    """Those of `keys` stored after `since_ms`. A commit's keys are nearly all new, so the few stored
    ones are found by a set intersection in native code, not by a look-up of each in Python."""
    return {k for k in stored.keys() & keys if stored[k] > since_ms}


def input_mask(inputs: Iterable[int]) -> int:
    """A set of input ids (catalog ids, from 1) as the bits of one int."""
    mask = 0
    for i in inputs:
        mask |= 1 << i
    return mask
