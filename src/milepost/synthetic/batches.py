"""Turning users' activity into time-ordered Events API batches, and writing them to JSONL files."""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson

from milepost.synthetic.behaviour import (
    EventWriter,
    email_events,
    media_session,
    random_genres,
    retail_session,
    server_event,
)
from milepost.synthetic.catalog_plan import (
    CLIENT_PLATFORMS,
    MOBILE_PLATFORMS,
    PlacedInput,
    WorkspacePlan,
    demo_layout,
    flatten,
    layout_to_json,
)
from milepost.synthetic.ids import key, rng_for, unit, uuid_from
from milepost.synthetic.population import (
    DAY_MS,
    EPOCH_2000_MS,
    HOUR_MS,
    MINUTE_MS,
    Core,
    InputUse,
    Person,
    Population,
    poisson,
)

K_FIRST, K_SESSION, K_UPGRADE, K_CONSENT, K_SERVER, K_EMAIL, K_MILESTONE = range(7)

# Share of sessions per local hour of day: quiet nights, a lunch bump and an evening peak.
_HOURLY = (
    1,
    0.6,
    0.4,
    0.3,
    0.3,
    0.5,
    1.2,
    2.2,
    2.6,
    2.4,
    2.3,
    2.5,
    3.0,
    2.8,
    2.5,
    2.5,
    2.8,
    3.4,
    4.2,
    5.0,
    5.4,
    4.8,
    3.4,
    2.0,
)
_HOURLY_CUM = tuple(accumulate(_HOURLY))

Item = tuple[int, int, int, int, int]  # (time, user, input use, kind, k)


def _weekday_factor(day_start: int) -> float:
    weekday = (day_start // DAY_MS + 3) % 7  # 0 = Monday
    return 1.25 if weekday >= 5 else 0.9


def plan_day(pop: Population, core: Core, day_start: int, day_end: int) -> list[Item]:
    """The batches a user sends in [day_start, day_end): one item per batch."""
    items: list[Item] = []
    i = core.index
    end = pop.end_ms
    ukey = key(pop.seed, i, 4)
    day_no = day_start // DAY_MS
    factor = _weekday_factor(day_start)
    tz = core.country.tz_hours
    for pos, use in enumerate(core.uses):
        platform = use.input.platform
        if platform in CLIENT_PLATFORMS:
            for t, kind in (
                (use.first_ms, K_FIRST),
                (use.upgrade_ms, K_UPGRADE),
                (use.consent_ms, K_CONSENT),
            ):
                if day_start <= t < day_end:
                    items.append((t, i, pos, kind, 0))
            items.extend(
                (t, i, pos, K_MILESTONE, k)
                for k, (t, _) in enumerate(use.milestones)
                if day_start <= t < day_end
            )
            not_before = use.first_ms + 30 * MINUTE_MS
            if use.rate <= 0 or day_end <= not_before:
                continue
            h = key(ukey, pos, day_no)
            n = poisson(unit(h), use.rate * factor)
            for k in range(n):
                hk = key(h, k)
                hour = (pick_hour((hk >> 11) * 2.0**-53) - tz) % 24
                t = day_no * DAY_MS + hour * HOUR_MS + int(unit(hk, 1) * HOUR_MS)
                if t < day_start:
                    t += DAY_MS
                if not_before <= t < day_end and t < end - MINUTE_MS:
                    items.append((t, i, pos, K_SESSION, k + 1))
        elif platform == "server":
            items.extend(
                (t, i, pos, K_SERVER, k)
                for k, (t, _) in enumerate(use.server_events)
                if day_start <= t < day_end
            )
        else:
            items.extend(
                (t, i, pos, K_EMAIL, k) for k, (t, _, _) in enumerate(use.emails) if day_start <= t < day_end
            )
    return items


def pick_hour(u: float) -> int:
    """A local hour of day drawn from the diurnal curve."""
    total = _HOURLY_CUM[-1]
    x = u * total
    for h, c in enumerate(_HOURLY_CUM):
        if x < c:
            return h
    return 23


def _app_info(use: InputUse, pop: Population, core: Core, t: int) -> dict[str, Any]:
    p = use.input
    ws = p.workspace.name
    if p.platform == "web":
        return {"application_name": f"{ws} Web", "application_version": "2024.6"}
    minor = 18 + key(pop.seed, core.index, use.input.index) % 3
    if use.upgrade_ms >= 0 and t >= use.upgrade_ms:
        minor += 1
    return {
        "application_name": f"{ws} {'iOS' if p.platform == 'ios' else 'Android'}",
        "application_version": f"5.{minor}.0",
        "package": f"com.example.{ws.lower().replace(' ', '')}",
    }


def _device(person: Person, platform: str) -> dict[str, Any] | None:
    device = person.devices.get(platform)
    return dict(device) if device else None


def _actions(rng: random.Random, core: Core) -> int:
    return min(40, 1 + int(rng.expovariate(1 / (2.5 + min(core.engagement, 5.0)))))


def build_batch(pop: Population, core: Core, item: Item) -> tuple[str, dict[str, Any]]:
    """The batch for one scheduled item of a user."""
    t, i, pos, kind, k = item
    use = core.uses[pos]
    p: PlacedInput = use.input
    platform = p.platform
    rng = rng_for(pop.seed, i, pos, kind, k, t)
    r = rng.random
    batch: dict[str, Any] = {"environment": "production", "mpid": core.mpid}
    first = kind == K_FIRST or (kind in (K_SERVER, K_EMAIL) and k == 0)
    person = pop.person(core) if first or kind in (K_UPGRADE, K_CONSENT) else None
    if person is not None and first:
        ids = person.identities()
        if platform == "feed":
            ids.pop("mobile_number", None)
        batch["user_identities"] = ids
        attrs = person.attributes(t)
        if platform == "feed":
            attrs["crm_segment"] = (
                "engaged" if core.engagement > 0.8 else "lapsing" if core.churn_u > 0.7 else "steady"
            )
            attrs["email_subscriber"] = True
        batch["user_attributes"] = attrs
    elif platform in ("server", "feed"):
        batch["user_identities"] = {"customer_id": f"c{i + 1}"}
    if platform == "server" or kind == K_MILESTONE:
        what = use.server_events[k][1] if platform == "server" else use.milestones[k][1]
        if what == "start_trial":
            batch["user_attributes"] = {**batch.get("user_attributes", {}), "plan": "trial"}
        elif what == "subscribe":
            batch["user_attributes"] = {**batch.get("user_attributes", {}), "plan": "paid"}
            batch["deleted_user_attributes"] = ["trial_end_date"]
    elif platform == "feed" and not first and r() < 0.3:
        u = min(0.999, max(0.0, core.churn_u + rng.gauss(0, 0.05)))
        batch["user_attributes"] = {
            "$intelligent_attribute:cortex:churn__score": round(0.01 + 0.97 * u**1.6, 4),
            "$intelligent_attribute:cortex:churn__percentile": min(100, int(u * 100) + 1),
        }
    elif platform in CLIENT_PLATFORMS and not first and r() < 0.04:
        change: dict[str, Any] = (
            {"favourite_genres": random_genres(rng)}
            if r() < 0.5
            else {"notifications_enabled": r() < 0.6}
            if r() < 0.5
            else {"tenure_days": max(0, (t - core.signup_ms) // DAY_MS)}
        )
        batch["user_attributes"] = change
    if person is not None and platform in CLIENT_PLATFORMS and kind in (K_FIRST, K_UPGRADE):
        device = _device(person, platform)
        if device is not None:
            batch["device_info"] = device
        batch["application_info"] = _app_info(use, pop, core, t)
    if person is not None and platform != "feed" and kind in (K_FIRST, K_CONSENT):
        device = person.devices.get(platform)
        hw = (device.get("ios_idfv") or device.get("android_uuid")) if device else None
        consent = person.consent(t, platform, hw)
        if consent is not None:
            batch["consent_state"] = consent
    end = pop.end_ms
    if platform in CLIENT_PLATFORMS:
        w = EventWriter(rng, t, end, uuid_from(rng).upper())
        mobile = platform in MOBILE_PLATFORMS
        first_run = kind == K_FIRST and use.first_run and mobile
        upgrade = kind == K_UPGRADE
        if p.workspace.vertical == "retail":
            retail_session(
                w, platform, core.country, _actions(rng, core), first_run=first_run, upgrade=upgrade
            )
        else:
            sign_up = kind == K_FIRST and core.new_user and use.first_ms == core.signup_ms - 2 * MINUTE_MS
            media_session(
                w,
                platform,
                core.country,
                _actions(rng, core),
                first_run=first_run,
                upgrade=upgrade,
                sign_up=sign_up,
                milestone=use.milestones[k][1] if kind == K_MILESTONE else None,
            )
    elif platform == "server":
        w = EventWriter(rng, t, end)
        server_event(w, use.server_events[k][1], core.country)
    else:
        w = EventWriter(rng, t, end)
        _, click_ms, campaign = use.emails[k]
        email_events(w, campaign, click_ms)
        w.fit_before_end()
    batch["events"] = w.events
    batch["source_request_id"] = uuid_from(rng)
    return p.name, batch


def generate(
    *, seed: int, users: int, days: int, end_ms: int, layout: list[WorkspacePlan] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (input name, batch) for `users` users over `days` days ending at `end_ms`, in time order.

    Works a day at a time: only that day's schedule (a small tuple per batch) is held, and every
    user is regenerated from the seed when needed, so no batch is kept after it is yielded.
    """
    if users < 0 or days <= 0:
        raise ValueError("users must be >= 0 and days > 0")
    start_ms = end_ms - days * DAY_MS
    if start_ms < EPOCH_2000_MS:
        raise ValueError("the span must start after 2000-01-01")
    pop = Population(seed, flatten(layout if layout is not None else demo_layout()), start_ms, end_ms)
    for d in range(days):
        day_start = start_ms + d * DAY_MS
        day_end = min(day_start + DAY_MS, end_ms)
        items: list[Item] = []
        for i in range(users):
            items.extend(plan_day(pop, pop.core(i), day_start, day_end))
        items.sort()
        core: Core | None = None
        for item in items:
            if core is None or core.index != item[1]:
                core = pop.core(item[1])
            yield build_batch(pop, core, item)


def write_jsonl(out_dir: Path, *, seed: int, users: int, days: int, end_ms: int) -> dict[str, int]:
    """Write <input>.jsonl per input of the demo layout plus manifest.json; return batches per input."""
    layout = demo_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in flatten(layout)]
    counts = dict.fromkeys(names, 0)
    events = dict.fromkeys(names, 0)
    files = {n: (out_dir / f"{n}.jsonl").open("wb") for n in names}
    try:
        for name, batch in generate(seed=seed, users=users, days=days, end_ms=end_ms, layout=layout):
            files[name].write(orjson.dumps(batch) + b"\n")
            counts[name] += 1
            events[name] += len(batch["events"])
    finally:
        for f in files.values():
            f.close()
    manifest = {
        "seed": seed,
        "users": users,
        "days": days,
        "start_ms": end_ms - days * DAY_MS,
        "end_ms": end_ms,
        "layout": layout_to_json(layout),
        "files": {n: f"{n}.jsonl" for n in names},
        "batches": counts,
        "events": events,
    }
    (out_dir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return counts
