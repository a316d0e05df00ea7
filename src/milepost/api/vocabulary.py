"""What the criteria builder offers in its pickers: names actually seen in the data (read-only)."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from milepost.api.security import require_token
from milepost.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["journeys"], dependencies=[Depends(require_token)])

# Names change slowly and the scans read the whole store: one answer per input set is kept briefly.
CACHE_S = 60.0
SAMPLE_ROWS = 50_000
_cache: dict[tuple[str, tuple[int, ...]], tuple[float, dict[str, Any]]] = {}
_lock = threading.Lock()


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _names(rt: Runtime, input_ids: tuple[int, ...]) -> dict[str, Any]:
    con = rt.store.reader()
    ids = list(input_ids) or [-1]
    events = con.execute(
        "SELECT event_type, name, custom_event_type, action, count(*) AS n FROM events "
        "WHERE list_contains($ids::INTEGER[], input_id) GROUP BY ALL ORDER BY n DESC LIMIT 300",
        {"ids": ids},
    ).fetchall()
    event_attrs = con.execute(
        "SELECT k, count(*) AS n FROM (SELECT unnest(json_keys(attrs)) AS k FROM "
        f"(SELECT attrs FROM events WHERE list_contains($ids::INTEGER[], input_id) LIMIT {SAMPLE_ROWS})) "
        "GROUP BY k ORDER BY n DESC LIMIT 300",
        {"ids": ids},
    ).fetchall()
    user_attrs = con.execute(
        "SELECT k, count(*) AS n FROM (SELECT unnest(json_keys(attributes)) AS k FROM "
        f"(SELECT attributes FROM users LIMIT {SAMPLE_ROWS})) GROUP BY k ORDER BY n DESC LIMIT 300"
    ).fetchall()
    identities = con.execute(
        f"SELECT DISTINCT identity_type FROM (SELECT identity_type FROM identities LIMIT {SAMPLE_ROWS}) "
        "ORDER BY 1"
    ).fetchall()
    purposes = con.execute("SELECT DISTINCT regulation, purpose FROM consents ORDER BY 1, 2").fetchall()
    return {
        "events": [
            {
                "event_type": str(t),
                "name": n,
                "custom_event_type": c,
                "action": a,
                "count": int(k),
            }
            for t, n, c, a, k in events
        ],
        "event_attributes": [str(r[0]) for r in event_attrs],
        "user_attributes": [str(r[0]) for r in user_attrs if not str(r[0]).startswith("$")],
        "predictions": sorted(
            {
                str(r[0]).split(":cortex:", 1)[1].rsplit("__", 1)[0]
                for r in user_attrs
                if ":cortex:" in str(r[0])
            }
        ),
        "identities": [str(r[0]) for r in identities],
        "consent_purposes": [{"regulation": str(r[0]), "purpose": str(r[1])} for r in purposes],
    }


def _cached(rt: Runtime, input_ids: tuple[int, ...]) -> dict[str, Any]:
    key = (str(rt.config.data_dir), input_ids)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        if hit is not None and now - hit[0] < CACHE_S:
            return hit[1]
    names = _names(rt, input_ids)
    with _lock:
        _cache[key] = (now, names)
    return names


@router.get("/journeys/{journey_id}/vocabulary")
def vocabulary(journey_id: int, request: Request) -> dict[str, Any]:
    """Event names and attributes seen on the journey's inputs, attributes seen on profiles, and
    the audiences and calculated attributes criteria may refer to."""
    rt = _rt(request)
    journey = rt.catalog.get_journey(journey_id)
    names = _cached(rt, journey.input_ids)
    journeys = {j.id: j.name for j in rt.catalog.list_journeys()}
    audiences = [
        {"id": m.audience_id, "journey": name, "milestone": m.name, "journey_id": jid}
        for jid, name in journeys.items()
        for m in rt.catalog.milestones(jid)
    ]
    calculated = [c.name for c in rt.catalog.list_calculated_attributes()]
    return {**names, "audiences": audiences, "calculated_attributes": calculated}
