"""Synthetic users: MPIDs, identities, devices, attributes and consent, regenerated on demand."""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field
from typing import Any

from milepost.clock import DAY_MS
from milepost.synthetic.catalog_plan import CLIENT_PLATFORMS, MOBILE_PLATFORMS, PlacedInput
from milepost.synthetic.content import (
    CAMPAIGNS,
    COUNTRIES,
    COUNTRY_CUM,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    GENRES,
    LAST_NAMES,
    Country,
    pick_cum,
)
from milepost.synthetic.ids import M64, MpidSpace, key, rng_for, uuid_from

SECOND_MS = 1_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000

EPOCH_2000_MS = 946_684_800_000
SERVICE_LAUNCH_MS = 1_420_070_400_000  # 2015-01-01: no one signed up earlier
TRIAL_DAYS = 14
RENEWAL_DAYS = 30

PLAN_WEIGHTS = (("free", 0.55), ("trial", 0.15), ("paid", 0.30))
EMAIL_SHARE = 0.80
MIXED_CASE_EMAIL_SHARE = 0.12
MOBILE_SHARE = 0.45
GDPR_MARKETING_SHARE = 0.55
GDPR_PERSONALISATION_SHARE = 0.72
CCPA_OPT_OUT_SHARE = 0.12
NEW_USER_DAILY_SHARE = 0.004  # share of the population signing up on a given day of the span
OTHER_WORKSPACE_SHARE = 0.35
CLIENT_SHARES = {"web": 0.55, "ios": 0.35, "android": 0.40}
CORE_CACHE_SIZE = 8192  # bounded: memory does not grow with the number of users

_TAG_CORE = 1
_TAG_PERSON = 2
_IOS_MODELS = ("iPhone14,5", "iPhone15,2", "iPhone15,4", "iPhone16,1", "iPad13,18")
_IOS_VERSIONS = ("16.7", "17.4", "17.5", "18.0", "18.1")
_ANDROID_MODELS = (
    ("Pixel 8", "Google"),
    ("SM-S918B", "Samsung"),
    ("SM-A546B", "Samsung"),
    ("2201117TG", "Xiaomi"),
)
_ANDROID_VERSIONS = ("12", "13", "14", "15")
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
)


@dataclass(slots=True)
class InputUse:
    """How one user uses one input during the span."""

    input: PlacedInput
    first_ms: int
    rate: float = 0.0  # sessions per day (client inputs)
    first_run: bool = False
    upgrade_ms: int = -1
    consent_ms: int = -1
    milestones: list[tuple[int, str]] = field(default_factory=list)  # in-app trial starts and subscriptions
    server_events: list[tuple[int, str]] = field(default_factory=list)
    emails: list[tuple[int, int, str]] = field(default_factory=list)  # (open_ms, click_ms or -1, campaign)


@dataclass(slots=True)
class Core:
    """The facts about a user that scheduling needs; cheap to regenerate."""

    index: int
    mpid: int
    country: Country
    churn_u: float
    engagement: float
    signup_ms: int
    new_user: bool
    plan: str
    trial_ms: int
    paid_ms: int
    has_email: bool
    mixed_case_email: bool
    has_mobile: bool
    marketing: bool
    personalisation: bool
    sale_opt_out: bool
    uses: list[InputUse]

    def plan_at(self, t: int) -> str:
        """The user's plan at time `t`."""
        if self.plan == "paid" and (self.paid_ms < 0 or t >= self.paid_ms):
            return "paid"
        if self.plan != "free" and 0 <= self.trial_ms <= t:
            return "trial"
        return "free"

    def marketing_at(self, t: int) -> bool:
        """GDPR marketing consent at `t` (one flip at most during the span)."""
        flip = max((u.consent_ms for u in self.uses), default=-1)
        return self.marketing != (flip >= 0 and t >= flip)


class Population:
    """Users of one seeded run, regenerated deterministically from (seed, user number)."""

    def __init__(self, seed: int, inputs: list[PlacedInput], start_ms: int, end_ms: int) -> None:
        if end_ms <= start_ms or start_ms < EPOCH_2000_MS:
            raise ValueError("the span must be non-empty and start after 2000-01-01")
        self.seed = seed & M64
        self.inputs = inputs
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.mpids = MpidSpace(seed)
        self._workspaces = [
            [p for p in inputs if p.workspace_index == w] for w in sorted({p.workspace_index for p in inputs})
        ]
        self._cache: dict[int, Core] = {}

    def core(self, index: int) -> Core:
        """The scheduling facts of user number `index` (kept in a small bounded cache)."""
        core = self._cache.get(index)
        if core is None:
            if len(self._cache) >= CORE_CACHE_SIZE:
                del self._cache[next(iter(self._cache))]
            core = self._cache[index] = self._make_core(index)
        return core

    def _make_core(self, index: int) -> Core:
        rng = rng_for(self.seed, index, _TAG_CORE)
        r = rng.random
        start, end = self.start_ms, self.end_ms
        span = end - start
        country = COUNTRIES[pick_cum(rng, COUNTRY_CUM)]
        churn_u = r()
        engagement = min(12.0, rng.lognormvariate(-0.7, 0.9) * (1.4 - churn_u))
        span_days = span / DAY_MS
        new_user = r() < min(0.6, NEW_USER_DAILY_SHARE * span_days)
        if new_user:
            signup_ms = start + 10 * MINUTE_MS + int(r() * span * 0.95)
        else:
            signup_ms = max(SERVICE_LAUNCH_MS, start - HOUR_MS - int(rng.expovariate(1.0 / 420) * DAY_MS))
            signup_ms = min(signup_ms, start - HOUR_MS)
        u = r()
        plan = "free" if u < 0.55 else ("trial" if u < 0.70 else "paid")
        trial_ms = paid_ms = -1
        if plan == "trial":
            trial_ms = max(signup_ms + 5 * MINUTE_MS, end - int(r() * TRIAL_DAYS * DAY_MS))
            if trial_ms >= end:
                plan, trial_ms = "free", -1
        elif plan == "paid" and (new_user or r() < 0.12):
            trial_ms = (
                signup_ms + 5 * MINUTE_MS if new_user else start + int(r() * span) - TRIAL_DAYS * DAY_MS
            )
            paid_ms = trial_ms + TRIAL_DAYS * DAY_MS
            if paid_ms >= end:
                plan, paid_ms = "trial", -1
        has_email = r() < EMAIL_SHARE
        mixed = has_email and r() < MIXED_CASE_EMAIL_SHARE
        has_mobile = r() < MOBILE_SHARE
        marketing = r() < GDPR_MARKETING_SHARE
        personalisation = r() < GDPR_PERSONALISATION_SHARE
        opt_out = r() < CCPA_OPT_OUT_SHARE
        core = Core(
            index, self.mpids.mpid(index), country, churn_u, engagement, signup_ms, new_user, plan,
            trial_ms, paid_ms, has_email, mixed, has_mobile, marketing, personalisation, opt_out, [],
        )  # fmt: skip
        self._plan_inputs(rng, core)
        return core

    def _plan_inputs(self, rng: random.Random, core: Core) -> None:
        r = rng.random
        start, end = self.start_ms, self.end_ms
        active_from = max(start, core.signup_ms)
        used_ws = [w for k, w in enumerate(self._workspaces) if k == 0 or r() < OTHER_WORKSPACE_SHARE]
        primary: InputUse | None = None
        for ws_rank, placed in enumerate(used_ws):
            clients = [p for p in placed if p.platform in CLIENT_PLATFORMS]
            chosen = [p for p in clients if r() < CLIENT_SHARES[p.platform]]
            if clients and not chosen:
                chosen = [clients[int(r() * len(clients))]]
            weight = 1.0 if ws_rank == 0 else 0.35
            for n, p in enumerate(chosen):
                share = weight * (0.7 if n == 0 else 0.3 + 0.4 * r())
                use = InputUse(p, 0, core.engagement * share)
                if core.new_user:
                    if primary is None:
                        use.first_ms, use.first_run = core.signup_ms - 2 * MINUTE_MS, True
                    else:
                        use.first_ms = active_from + int(r() * (end - active_from))
                        use.first_run = True
                elif r() < 0.85:
                    use.first_ms = start + int(min(rng.expovariate(max(use.rate, 0.05)), 20.0) * DAY_MS)
                else:
                    use.first_ms, use.first_run = start + int(r() * (end - start)), True
                if use.first_ms >= end - 2 * HOUR_MS:
                    continue
                if p.platform in MOBILE_PLATFORMS and r() < 0.4:
                    t = use.first_ms + HOUR_MS + int(r() * (end - use.first_ms))
                    use.upgrade_ms = t if t < end - HOUR_MS else -1
                if primary is None:
                    primary = use
                core.uses.append(use)
            for p in placed:
                if p.platform == "server":
                    events = self._server_events(rng, core, p)
                    if events:
                        core.uses.append(InputUse(p, events[0][0], server_events=events))
                elif p.platform == "feed" and core.has_email:
                    emails = self._emails(rng, core, active_from)
                    if emails:
                        core.uses.append(InputUse(p, emails[0][0], emails=emails))
        if primary is not None and primary.input.workspace.vertical == "media":
            lo = primary.first_ms + MINUTE_MS
            for t, what in ((core.trial_ms, "start_trial"), (core.paid_ms, "subscribe")):
                if lo <= t < end - MINUTE_MS:
                    primary.milestones.append((t, what))
        if primary is not None and core.country.regime == "gdpr" and r() < 0.08:
            t = primary.first_ms + HOUR_MS + int(r() * (end - primary.first_ms))
            primary.consent_ms = t if t < end - HOUR_MS else -1

    def _server_events(self, rng: random.Random, core: Core, p: PlacedInput) -> list[tuple[int, str]]:
        r = rng.random
        start, end = self.start_ms, self.end_ms
        lo = max(start, core.signup_ms + MINUTE_MS)
        out: list[tuple[int, str]] = []
        if p.workspace.vertical == "media":
            if core.plan == "paid":
                anchor = core.paid_ms if core.paid_ms >= 0 else start + int(r() * RENEWAL_DAYS * DAY_MS)
                t = anchor + (RENEWAL_DAYS * DAY_MS if core.paid_ms >= 0 else 0)
                while t < end - MINUTE_MS:
                    if t >= lo:
                        out.append((t, "renewal"))
                    t += RENEWAL_DAYS * DAY_MS
        else:
            expected = (end - lo) / DAY_MS * 0.02 * (0.5 + core.engagement)
            n = poisson(r(), expected) if expected > 0 else 0
            out.extend((lo + int(r() * (end - lo - MINUTE_MS)), "store_purchase") for _ in range(n))
        out = [e for e in out if lo <= e[0] < end - MINUTE_MS]
        out.sort()
        return out

    def _emails(self, rng: random.Random, core: Core, active_from: int) -> list[tuple[int, int, str]]:
        r = rng.random
        end = self.end_ms
        if core.country.regime == "gdpr" and not core.marketing:
            return []
        open_p = min(0.6, 0.12 + 0.1 * core.engagement)
        first_send = self.start_ms + int(r() * 7 * DAY_MS)
        out: list[tuple[int, int, str]] = []
        week = 0
        t = first_send
        while t < end:
            if t >= active_from and r() < open_p:
                opened = t + int(min(rng.expovariate(1 / 3.0), 20.0) * HOUR_MS)
                clicked = opened + int((5 + r() * 600) * SECOND_MS) if r() < 0.2 else -1
                if opened < end - MINUTE_MS:
                    out.append(
                        (
                            opened,
                            clicked if clicked < end - SECOND_MS else -1,
                            CAMPAIGNS[week % len(CAMPAIGNS)],
                        )
                    )
            week += 1
            t += 7 * DAY_MS
        return out

    def person(self, core: Core) -> Person:
        """The full profile of a user (identities, devices, stable attributes)."""
        return Person(core, rng_for(self.seed, core.index, _TAG_PERSON))


def poisson(u: float, lam: float) -> int:
    """Inverse-CDF Poisson draw from one uniform."""
    if lam > 30:
        return max(0, int(lam + math.sqrt(lam) * _norm_ppf(u) + 0.5))
    k, p = 0, math.exp(-lam)
    c = p
    while u > c and k < 200:
        k += 1
        p *= lam / k
        c += p
    return k


def _norm_ppf(u: float) -> float:
    u = min(max(u, 1e-9), 1 - 1e-9)
    t = math.sqrt(-2 * math.log(u if u < 0.5 else 1 - u))
    z = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (
        1 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t**3
    )
    return -z if u < 0.5 else z


class Person:
    """Identities, devices and stable attributes of one user."""

    __slots__ = (
        "churn_percentile",
        "churn_score",
        "core",
        "customer_id",
        "devices",
        "email",
        "genres",
        "mobile",
    )

    def __init__(self, core: Core, rng: random.Random) -> None:
        self.core = core
        r = rng.random
        n = core.index + 1
        self.customer_id = f"c{n}"
        first, last = FIRST_NAMES[int(r() * len(FIRST_NAMES))], LAST_NAMES[int(r() * len(LAST_NAMES))]
        domain = EMAIL_DOMAINS[int(r() * len(EMAIL_DOMAINS))]
        email = f"{first}.{last}{n}@{domain}"
        if core.mixed_case_email:
            email = f"{first.title()}.{last.title()}{n}@{domain.title()}"
        self.email = email if core.has_email else ""
        self.mobile = f"+{core.country.dial}{7_000_000_000 + n}" if core.has_mobile else ""
        self.genres = rng.sample(GENRES, 1 + int(r() * 3))
        self.churn_percentile = min(100, int(core.churn_u * 100) + 1)
        self.churn_score = round(0.01 + 0.97 * core.churn_u**1.6, 4)
        self.devices: dict[str, dict[str, Any]] = {}
        c = core.country
        locale = {"locale_country": c.code, "locale_language": c.language, "timezone_offset": c.tz_hours}
        if any(u.input.platform == "ios" for u in core.uses):
            authorized = r() < 0.3
            model = _IOS_MODELS[int(r() * len(_IOS_MODELS))]
            ios: dict[str, Any] = {
                "platform": "iOS", "brand": "Apple", "device_manufacturer": "Apple", "device_model": model,
                "os_version": _IOS_VERSIONS[int(r() * len(_IOS_VERSIONS))], "is_tablet": model.startswith("iPad"),
                "ios_idfv": uuid_from(rng).upper(),
                "att_authorization_status": "authorized" if authorized else "denied", **locale,
            }  # fmt: skip
            if authorized:
                ios["ios_advertising_id"] = uuid_from(rng).upper()
            self.devices["ios"] = ios
        if any(u.input.platform == "android" for u in core.uses):
            model, maker = _ANDROID_MODELS[int(r() * len(_ANDROID_MODELS))]
            android: dict[str, Any] = {
                "platform": "Android", "brand": maker.lower(), "device_manufacturer": maker, "device_model": model,
                "os_version": _ANDROID_VERSIONS[int(r() * len(_ANDROID_VERSIONS))], "is_tablet": False,
                "android_uuid": f"{rng.getrandbits(64):016x}", **locale,
            }  # fmt: skip
            if r() < 0.85:
                android["android_advertising_id"] = uuid_from(rng)
                android["limit_ad_tracking"] = False
            self.devices["android"] = android
        if any(u.input.platform == "web" for u in core.uses):
            self.devices["web"] = {
                "platform": "web",
                "http_header_user_agent": _USER_AGENTS[int(r() * len(_USER_AGENTS))],
                **locale,
            }

    def identities(self) -> dict[str, str]:
        """The user's known identities."""
        out = {"customer_id": self.customer_id}
        if self.email:
            out["email"] = self.email
        if self.mobile:
            out["mobile_number"] = self.mobile
        return out

    def attributes(self, t: int) -> dict[str, Any]:
        """The user's attributes as of time `t`."""
        core = self.core
        signup = dt.datetime.fromtimestamp(core.signup_ms / 1000, dt.UTC).date()
        out: dict[str, Any] = {
            "plan": core.plan_at(t),
            "country": core.country.code,
            "tenure_days": max(0, (t - core.signup_ms) // DAY_MS),
            "signup_date": signup.isoformat(),
            "favourite_genres": list(self.genres),
            "$intelligent_attribute:cortex:churn__score": self.churn_score,
            "$intelligent_attribute:cortex:churn__percentile": self.churn_percentile,
        }
        if core.trial_ms >= 0 and out["plan"] == "trial":
            out["trial_end_date"] = (
                dt.datetime.fromtimestamp((core.trial_ms + TRIAL_DAYS * DAY_MS) / 1000, dt.UTC)
                .date()
                .isoformat()
            )
        return out

    def consent(self, t: int, location: str, hardware_id: str | None) -> dict[str, Any] | None:
        """The user's consent state as of `t`, or None where no regime applies."""
        core = self.core
        regime = core.country.regime
        given = max(core.signup_ms + MINUTE_MS, EPOCH_2000_MS)
        base: dict[str, Any] = {
            "document": "privacy_policy_v3",
            "timestamp_unixtime_ms": given,
            "location": location,
        }
        if hardware_id:
            base["hardware_id"] = hardware_id
        if regime == "gdpr":
            flip = max((u.consent_ms for u in core.uses), default=-1)
            marketing = {**base, "consented": core.marketing_at(t)}
            if flip >= 0 and t >= flip:
                marketing["timestamp_unixtime_ms"] = flip
            return {
                "gdpr": {
                    "marketing": marketing,
                    "personalisation": {**base, "consented": core.personalisation},
                }
            }
        if regime == "ccpa":
            return {"ccpa": {"data_sale_opt_out": {**base, "consented": core.sale_opt_out}}}
        return None


def hardware_id(device: dict[str, Any] | None) -> str | None:
    """The main device id of a device, if it has one."""
    if not device:
        return None
    return device.get("ios_idfv") or device.get("android_uuid")


def user_key(seed: int, index: int) -> int:
    """A per-user 64-bit key (for hash-driven draws)."""
    return key(seed, index, 3)
