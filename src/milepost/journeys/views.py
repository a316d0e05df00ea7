"""What users see of journeys and audiences: the journey document with status and sizes, members, activity."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from typing import Any

from milepost.audiences.estimator import Estimator, NodeEstimate
from milepost.audiences.tree import JourneyRows
from milepost.catalog.journey_records import MilestoneRecord
from milepost.catalog.output_records import ConnectionRecord
from milepost.clock import DAY_MS
from milepost.criteria import parse_criteria, references
from milepost.engines.duckdb import DuckDBStore
from milepost.errors import InvalidRequest, MilepostError, UnknownReference
from milepost.journeys import whatif
from milepost.journeys.service import JourneyService
from milepost.metrics import ANSWER_BUCKETS, Latencies

# An input seen with data is not re-checked for this long: the check scans users, and every
# estimate asks it.
_WITH_DATA_TTL_S = 60.0


def connection_summary(c: ConnectionRecord) -> dict[str, Any]:
    """A connection as journey documents and the canvas show it (settings left out)."""
    return {
        "id": c.id,
        "output_id": c.output_id,
        "output": c.output_name,
        "type": c.output_type,
        "status": c.status,
        "health": c.health,
        "on_deactivate": c.on_deactivate,
    }


class JourneyViews:
    def __init__(self, service: JourneyService, store: DuckDBStore, estimator: Estimator) -> None:
        self.service = service
        self.store = store
        self.catalog = service.catalog
        self.estimator = estimator
        self._with_data: dict[int, float] = {}
        self.estimate_latency = Latencies(
            "milepost_estimate_seconds",
            "Estimating a journey's audiences on the sample (the canvas, the criteria builder).",
            ANSWER_BUCKETS,
        )

    # ---- status and size ---------------------------------------------------------------------

    def status(self, audience_id: int, activated: set[int]) -> str:
        if audience_id in activated:
            return "activated"
        return "calculated" if audience_id in self.service.calculated else "estimated"

    def _previews(self, journey_id: int) -> dict[int, list[int]]:
        """Exact members of the journey's audiences that are not calculated (computed on demand)."""
        journey = self.service.journey_rows(journey_id)
        wanted = [m.audience_id for m in journey.milestones if m.audience_id not in self.service.calculated]
        if not wanted:
            return {}
        _, members = self.service.engine.what_if([journey], self.service.calculated_attributes(), wanted)
        return members

    def input_problems(self, input_ids: tuple[int, ...]) -> tuple[list[str], bool]:
        """Names of the journey's inputs that are disabled or never received data; True if none is usable."""
        inputs = {i.id: i for i in self.catalog.list_inputs()}
        with_data = {i for i in input_ids if self._has_data(i)}
        bad = [
            inputs[i].name if i in inputs else str(i)
            for i in input_ids
            if i not in inputs or not inputs[i].enabled or i not in with_data
        ]
        return bad, len(bad) == len(input_ids)

    def _has_data(self, input_id: int) -> bool:
        seen = self._with_data.get(input_id)
        if seen is not None and time.monotonic() - seen < _WITH_DATA_TTL_S:
            return True
        found = bool(
            self.store.reader()
            .execute("SELECT 1 FROM users WHERE list_contains(inputs, ?) LIMIT 1", [input_id])
            .fetchall()
        )
        if found:
            self._with_data[input_id] = time.monotonic()
        return found

    def estimates(self, journey: JourneyRows) -> dict[int, NodeEstimate | dict[str, Any]]:
        """Sample estimates for every audience of a journey, or the error each must show instead."""
        bad, none_usable = self.input_problems(journey.input_ids)
        if none_usable:
            error = {
                "kind": "error",
                "code": "NO_DATA",
                "message": "none of the journey's inputs is enabled and has received data",
            }
            return {m.audience_id: error for m in journey.milestones}
        actual = {
            a: self.service.engine.size(a) for a in self.service.calculated if a not in self.service.pending
        }
        settings = self.service.settings()
        try:
            with self.estimate_latency.timing():
                found: dict[int, NodeEstimate | dict[str, Any]] = dict(
                    self.estimator.journey(
                        journey,
                        self.service.calculated_attributes(),
                        actual,
                        self.service.now(),
                        settings.lookback_ms,
                        settings.lifetime_ms,
                    )
                )
        except MilepostError as exc:
            return {
                m.audience_id: {"kind": "error", "code": exc.code, "message": exc.message}
                for m in journey.milestones
            }
        except Exception as exc:  # the engine failed: say so on the canvas instead of failing the page
            message = f"the estimator failed: {type(exc).__name__}"
            return {
                m.audience_id: {"kind": "error", "code": "ENGINE_ERROR", "message": message}
                for m in journey.milestones
            }
        if bad:
            for est in found.values():
                if isinstance(est, NodeEstimate):
                    est.size["warning"] = "no data from disabled or silent inputs: " + ", ".join(bad)
        return found

    def _audience_exists(self, audience_id: int) -> bool:
        try:
            self.catalog.milestone_by_audience(audience_id)
        except MilepostError:
            return False
        return True

    def size(self, audience_id: int, estimates: dict[int, NodeEstimate | dict[str, Any]]) -> dict[str, Any]:
        if audience_id in self.service.calculated:
            if audience_id in self.service.pending:
                return {"kind": "calculating"}
            n = self.service.engine.size(audience_id)
            return {"kind": "actual", "value": n, "exact": True}
        est = estimates.get(audience_id)
        if est is None:
            return {"kind": "error", "code": "ENGINE_ERROR", "message": "no estimate"}
        return est.size if isinstance(est, NodeEstimate) else est

    def estimate_detail(
        self, audience_id: int, estimates: dict[int, NodeEstimate | dict[str, Any]]
    ) -> dict[str, Any]:
        est = estimates.get(audience_id)
        if not isinstance(est, NodeEstimate):
            return {}
        return {"parent_share": est.parent_share, "criteria": est.criteria}

    def adhoc(
        self,
        *,
        journey_id: int | None,
        input_ids: tuple[int, ...] | None,
        parent_id: int | None,
        position: int | None,
        criteria: dict[str, Any],
    ) -> dict[str, Any]:
        """The estimate of unsaved criteria placed under a parent (the criteria builder's live size)."""
        if journey_id is not None:
            base = self.service.journey_rows(journey_id)
        else:
            ids = input_ids if input_ids is not None else tuple(i.id for i in self.catalog.list_inputs())
            base = JourneyRows(0, "(unsaved)", ids, ())
        try:
            resolved = self.service.resolved(criteria)
            refs = references(parse_criteria(resolved))
            missing = [a for a in refs.audience_ids if not self._audience_exists(a)]
            if missing:
                raise UnknownReference(f"the criteria refer to audience {missing[0]}, which does not exist")
            known = self.service.calculated_attributes()
            unknown = [n for n in refs.calculated_attributes if n not in known]
            if unknown:
                raise UnknownReference(
                    f"the criteria use calculated attribute {unknown[0]!r}, which does not exist"
                )
        except MilepostError as exc:
            if exc.code in ("NOT_FOUND", "UNKNOWN_REFERENCE"):
                return {
                    "size": {"kind": "error", "code": "UNKNOWN_REFERENCE", "message": exc.message},
                    "criteria": [],
                }
            raise
        journey = whatif.with_added(base, parent_id, "(unsaved)", resolved, False, position)
        estimates = self.estimates(journey)
        est = estimates.get(whatif.NEW_AUDIENCE_ID)
        if not isinstance(est, NodeEstimate):
            return {"size": est, "criteria": []}
        return {"size": est.size, "parent_share": est.parent_share, "criteria": est.criteria}

    # ---- the journey document ------------------------------------------------------------------

    def document(self, journey_ref: int | str) -> dict[str, Any]:
        j = self.catalog.get_journey(journey_ref)
        milestones = self.catalog.milestones(j.id)
        activated = self.service.activated()
        estimates = self.estimates(self.service.journey_rows(j.id))
        inputs = {i.id: i.name for i in self.catalog.list_inputs()}
        by_parent: dict[int | None, list[MilestoneRecord]] = {}
        for m in milestones:
            by_parent.setdefault(m.parent_id, []).append(m)

        def node(m: MilestoneRecord) -> dict[str, Any]:
            out: dict[str, Any] = {"id": m.id, "name": m.name, "position": m.position}
            if m.remaining:
                out["remaining"] = True
                siblings = [s.criteria for s in by_parent.get(m.parent_id, []) if not s.remaining]
                out["derived_criteria"] = {"not": {"any": siblings}}
            else:
                out["criteria"] = m.criteria
            out["audience"] = self._audience_summary(m, activated, estimates)
            out["estimate"] = self.estimate_detail(m.audience_id, estimates)
            kids = sorted(by_parent.get(m.id, []), key=lambda k: (k.remaining, k.position))
            out["children"] = [node(k) for k in kids]
            return out

        top = sorted(by_parent.get(None, []), key=lambda k: (k.remaining, k.position))
        return {
            "id": j.id,
            "name": j.name,
            "inputs": [inputs.get(i, str(i)) for i in j.input_ids],
            "milestones": [node(m) for m in top],
            "created_at": j.created_at,
            "updated_at": j.updated_at,
        }

    def _audience_summary(
        self, m: MilestoneRecord, activated: set[int], estimates: dict[int, NodeEstimate | dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "id": m.audience_id,
            "external_name": m.external_name,
            "size": self.size(m.audience_id, estimates),
            "status": self.status(m.audience_id, activated),
            "connections": self.connections(m.audience_id),
        }

    def connections(self, audience_id: int) -> list[dict[str, Any]]:
        return [
            {**connection_summary(c), "settings": c.settings} for c in self.catalog.connections(audience_id)
        ]

    def journey_list(self) -> list[dict[str, Any]]:
        activated = self.service.activated()
        inputs = {i.id: i.name for i in self.catalog.list_inputs()}
        out = []
        for j in self.catalog.list_journeys():
            audiences = [m.audience_id for m in self.catalog.milestones(j.id)]
            out.append(
                {
                    "id": j.id,
                    "name": j.name,
                    "inputs": [inputs.get(i, str(i)) for i in j.input_ids],
                    "audiences": len(audiences),
                    "activated": sum(1 for a in audiences if a in activated),
                    "updated_at": j.updated_at,
                }
            )
        return out

    # ---- one audience --------------------------------------------------------------------------

    def audience(self, audience_id: int) -> dict[str, Any]:
        m = self.catalog.milestone_by_audience(audience_id)
        estimates = self.estimates(self.service.journey_rows(m.journey_id))
        activated = self.service.activated()
        out = {
            "id": audience_id,
            "journey_id": m.journey_id,
            "milestone_id": m.id,
            "name": m.name,
            **self._audience_summary(m, activated, estimates),
            "estimate": self.estimate_detail(audience_id, estimates),
        }
        if audience_id in self.service.calculated and audience_id not in self.service.pending:
            out["activity"] = self.activity(audience_id)
        return out

    def _all_members(self, audience_id: int) -> list[int]:
        if audience_id in self.service.calculated and audience_id not in self.service.pending:
            return self.service.engine.members(audience_id)
        m = self.catalog.milestone_by_audience(audience_id)
        return self._previews(m.journey_id).get(audience_id, [])

    def members(self, audience_id: int, limit: int, cursor: str | None) -> dict[str, Any]:
        """The complete, exact membership in pages ordered by MPID; the cursor is the last MPID served."""
        self.catalog.milestone_by_audience(audience_id)
        if not 1 <= limit <= 10_000:
            raise InvalidRequest("limit must be between 1 and 10000")
        try:
            after = int(cursor) if cursor else None
        except ValueError:
            raise InvalidRequest("cursor is not one this API returned") from None
        everyone = self._all_members(audience_id)
        page = [m for m in everyone if after is None or m > after][: limit + 1]
        more = len(page) > limit
        page = page[:limit]
        ids = self._identities(page)
        return {
            "members": [{"mpid": m, "identities": ids.get(m, {})} for m in page],
            "next_cursor": str(page[-1]) if more and page else None,
        }

    def _identities(self, mpids: list[int]) -> dict[int, dict[str, str]]:
        if not mpids:
            return {}
        rows = (
            self.store.reader()
            .execute(
                "SELECT mpid, identity_type, value FROM identities WHERE list_contains(?::BIGINT[], mpid) "
                "ORDER BY identity_type",
                [mpids],
            )
            .fetchall()
        )
        out: dict[int, dict[str, str]] = {}
        for mpid, t, v in rows:
            out.setdefault(int(mpid), {})[t] = v
        return out

    def members_csv(self, audience_id: int) -> Iterator[str]:
        """`mpid, identity_type, identity_value`, one row per identity (a member without any: one empty row)."""
        self.catalog.milestone_by_audience(audience_id)
        everyone = self._all_members(audience_id)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["mpid", "identity_type", "identity_value"])
        yield buf.getvalue()
        for start in range(0, len(everyone), 1000):
            chunk = everyone[start : start + 1000]
            ids = self._identities(chunk)
            buf = io.StringIO()
            writer = csv.writer(buf)
            for mpid in chunk:
                pairs = ids.get(mpid) or {"": ""}
                for t, v in pairs.items():
                    writer.writerow([mpid, t, v])
            yield buf.getvalue()

    def activity(self, audience_id: int) -> dict[str, Any]:
        since = self.service.now() - DAY_MS
        row = (
            self.store.reader()
            .execute(
                "SELECT count(*) FILTER (WHERE action = 'add'), count(*) FILTER (WHERE action = 'remove') "
                "FROM membership_changes WHERE audience_id = ? AND changed_at > ?",
                [audience_id, since],
            )
            .fetchall()[0]
        )
        adds, drops = int(row[0]), int(row[1])
        size = self.service.engine.size(audience_id)
        return {
            "adds_24h": adds,
            "drops_24h": drops,
            "volatility": round((adds + drops) / size, 4) if size else None,
        }

    def memberships_of(self, mpid: int) -> list[dict[str, Any]]:
        """A user's audience memberships, for the profile view."""
        rows = (
            self.store.reader()
            .execute(
                "SELECT audience_id, entered_at FROM memberships WHERE mpid = ? AND audience_id > 0 ORDER BY audience_id",
                [mpid],
            )
            .fetchall()
        )
        out = []
        for audience_id, entered_at in rows:
            m = self.catalog.milestone_by_audience(int(audience_id))
            j = self.catalog.get_journey(m.journey_id)
            out.append(
                {
                    "audience_id": int(audience_id),
                    "journey": {"id": j.id, "name": j.name},
                    "milestone": {"id": m.id, "name": m.name},
                    "since": int(entered_at),
                }
            )
        return out
