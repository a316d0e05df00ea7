"""When a member's identities change, the partner gets a remove with the old ones and an add with
the new (SPEC §6). A pure function of what was delivered and what is current; the worker does the I/O."""

from __future__ import annotations

from collections.abc import Mapping

from milepost.outputs.records import Change, Identities, identities_from_json, identity_change_id


def identity_changes(
    connection_id: int,
    audience_id: int,
    candidates: list[tuple[int, int]],
    delivered: Mapping[int, str | None],
    members: set[int],
    current: Mapping[int, Identities],
    sent_form: Mapping[int, str],
    position: int,
    now_ms: int,
) -> list[Change]:
    """Changes for `candidates` (mpid, identities updated_at) whose identities the partner holds
    out of date. `delivered` maps the MPIDs the partner has to the identities they were sent with
    (None: not known, sent before they were kept); `current` holds the identities a connection
    sends now (accepted types, hashed) and `sent_form` their stored form; `members` are the
    audience's members among the candidates."""
    out: list[Change] = []
    for mpid, updated_at in candidates:
        if mpid not in members:
            continue  # leaving: the outbox carries the remove
        now_ids = current.get(mpid, Identities())
        if mpid in delivered:
            before = delivered[mpid]
            if before is None or before == sent_form.get(mpid):
                continue
            old = identities_from_json(before)
            rid = identity_change_id(connection_id, updated_at, mpid, "remove")
            out.append(Change(rid, audience_id, mpid, "remove", now_ms, position, old))
            if now_ids:
                aid = identity_change_id(connection_id, updated_at, mpid, "add")
                out.append(Change(aid, audience_id, mpid, "add", now_ms, position))
        elif now_ids:
            # A member who was ineligible now has an identity the partner accepts.
            aid = identity_change_id(connection_id, updated_at, mpid, "add")
            out.append(Change(aid, audience_id, mpid, "add", now_ms, position))
    return out
