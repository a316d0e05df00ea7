"""Request mixes for ingestion benchmarks: realistic bulk traffic and single-user firehoses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from milepost.synthetic.behaviour import EventWriter, activity_burst
from milepost.synthetic.catalog_plan import demo_layout, flatten
from milepost.synthetic.ids import rng_for, uuid_from
from milepost.synthetic.population import DAY_MS, HOUR_MS, MINUTE_MS, Population

DEFAULT_BENCH_END_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
_PLATFORMS = ("web", "ios", "android")
_PROFILE_ATTRS = ("plan", "tenure_days", "favourite_genres", "$intelligent_attribute:cortex:churn__score")


def _population(seed: int, end_ms: int) -> Population:
    return Population(seed, flatten(demo_layout()), end_ms - 30 * DAY_MS, end_ms)


def realistic_bulk_requests(
    *,
    seed: int,
    requests: int,
    batches_per_request: int = 100,
    known_users: int = 10000,
    new_user_share: float = 0.05,
    profile_share: float = 0.3,
    end_ms: int = DEFAULT_BENCH_END_MS,
) -> Iterator[list[dict[str, Any]]]:
    """Yield bulk requests of batches with 1–10 events for a mix of known and new users.

    Known users are numbers 0..known_users-1 of the same seed's population (same MPIDs and
    identities as `generate`); new users get fresh, never-repeated MPIDs. Every new user's batch
    carries a profile while there is share for it; the rest of `profile_share` goes to known users.
    """
    if not (0.0 <= new_user_share <= 1.0 and 0.0 <= profile_share <= 1.0):
        raise ValueError("shares must be within [0, 1]")
    if known_users <= 0 and new_user_share < 1.0:
        raise ValueError("known_users must be positive unless every batch is for a new user")
    pop = _population(seed, end_ms)
    rng = rng_for(pop.seed, 0xB1)
    r = rng.random
    p_new_profile = 1.0 if profile_share >= new_user_share else profile_share / new_user_share
    p_known_profile = 0.0
    if new_user_share < 1.0:
        p_known_profile = max(0.0, (profile_share - new_user_share * p_new_profile) / (1.0 - new_user_share))
    next_new = max(known_users, 0)
    for _ in range(requests):
        request: list[dict[str, Any]] = []
        for _ in range(batches_per_request):
            new = r() < new_user_share
            if new:
                index, next_new = next_new, next_new + 1
            else:
                index = int(r() * known_users)
            core = pop.core(index)
            t = end_ms - int(r() * 6 * HOUR_MS) - 10 * MINUTE_MS
            batch: dict[str, Any] = {"environment": "production", "mpid": core.mpid}
            if r() < (p_new_profile if new else p_known_profile):
                person = pop.person(core)
                v = r()
                if new or v < 0.25:
                    batch["user_identities"] = person.identities()
                if new or v >= 0.5:
                    attrs = person.attributes(t)
                    if not new:
                        attrs = {k: attrs[k] for k in _PROFILE_ATTRS if r() < 0.6} or {"plan": attrs["plan"]}
                    batch["user_attributes"] = attrs
                elif v >= 0.25:
                    batch["user_identities"] = {"customer_id": person.customer_id}
            platform = _PLATFORMS[int(r() * 3)]
            w = EventWriter(rng, t, end_ms, uuid_from(rng).upper())
            activity_burst(w, 1 + int(r() * 10), platform, core.country)
            batch["events"] = w.events
            batch["source_request_id"] = uuid_from(rng)
            request.append(batch)
        yield request


def single_user_requests(
    *, seed: int, requests: int, events_per_batch: int = 100, end_ms: int = DEFAULT_BENCH_END_MS
) -> Iterator[list[dict[str, Any]]]:
    """Yield requests holding one batch of `events_per_batch` events for one (known) user."""
    if events_per_batch < 1:
        raise ValueError("events_per_batch must be at least 1")
    pop = _population(seed, end_ms)
    rng = rng_for(pop.seed, 0xB2)
    r = rng.random
    for _ in range(requests):
        index = int(r() * 10000)
        core = pop.core(index)
        t = end_ms - int(r() * 6 * HOUR_MS) - events_per_batch * 30_000
        w = EventWriter(rng, t, end_ms, uuid_from(rng).upper())
        activity_burst(w, events_per_batch, _PLATFORMS[int(r() * 3)], core.country)
        batch = {
            "environment": "production",
            "mpid": core.mpid,
            "user_identities": {"customer_id": f"c{index + 1}"},
            "events": w.events,
            "source_request_id": uuid_from(rng),
        }
        yield [batch]
