"""What users do: sessions of screen views, content, search and shopping; server and CRM events."""

from __future__ import annotations

import random
from typing import Any

from milepost.synthetic.content import (
    ATTRIBUTION_SOURCES,
    CAMPAIGNS,
    GENRES,
    MEDIA_SCREENS,
    PRODUCT_CUM,
    PRODUCTS,
    RENTAL_PRICE,
    RETAIL_SCREENS,
    SEARCH_TERMS,
    SHOP_TERMS,
    SUBSCRIPTION,
    TITLE_CUM,
    TITLES,
    Country,
    Product,
    money,
    pick_cum,
)
from milepost.synthetic.ids import uuid_from

CUSTOM_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "navigation", "location", "search", "transaction", "user_content",
        "user_preference", "social", "media", "attribution", "other",
    }
)  # fmt: skip
EVENT_TYPES: frozenset[str] = frozenset(
    {
        "session_start",
        "session_end",
        "screen_view",
        "custom_event",
        "commerce_event",
        "application_state_transition",
    }
)
PRODUCT_ACTIONS: frozenset[str] = frozenset(
    {"add_to_cart", "remove_from_cart", "checkout", "purchase", "view_detail"}
)

_SHARE_CHANNELS = ("copy_link", "whatsapp", "messages", "instagram", "email")
_SETTINGS = (
    ("autoplay", True),
    ("autoplay", False),
    ("subtitles", True),
    ("quality", "hd"),
    ("quality", "auto"),
)
_SIGNUP_METHODS = ("email", "google", "apple", "facebook")


class EventWriter:
    """Appends events with increasing timestamps, each with a fresh source_message_id."""

    __slots__ = ("end_ms", "events", "rng", "session_uuid", "t")

    def __init__(self, rng: random.Random, t: int, end_ms: int, session_uuid: str | None = None) -> None:
        self.rng = rng
        self.t = t
        self.end_ms = end_ms
        self.session_uuid = session_uuid
        self.events: list[dict[str, Any]] = []

    def wait(self, seconds: float) -> None:
        """Move the clock on."""
        self.t += int(seconds * 1000) + 1

    def add(self, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
        """Append an event of `event_type` with `data` at the current time."""
        data["timestamp_unixtime_ms"] = self.t
        data["source_message_id"] = uuid_from(self.rng)
        if self.session_uuid is not None:
            data["session_uuid"] = self.session_uuid
        self.events.append({"event_type": event_type, "data": data})
        return data

    def custom(self, name: str, kind: str, attrs: dict[str, Any] | None = None) -> None:
        """Append a custom event."""
        data: dict[str, Any] = {"event_name": name, "custom_event_type": kind}
        if attrs:
            data["custom_attributes"] = attrs
        self.add("custom_event", data)

    def screen(self, name: str) -> None:
        """Append a screen view."""
        self.add("screen_view", {"screen_name": name})

    def commerce(
        self,
        action: str,
        lines: list[tuple[Product, int, float]],
        currency: str,
        transaction_id: str | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        """Append a commerce event for `lines` of (product, quantity, unit price)."""
        products = [
            {
                "id": p.sku,
                "name": p.name,
                "category": p.category,
                "brand": p.brand,
                "price": price,
                "quantity": q,
            }
            for p, q, price in lines
        ]
        pa: dict[str, Any] = {
            "action": action,
            "total_amount": round(sum(price * q for _, q, price in lines), 2),
            "currency_code": currency,
            "products": products,
        }
        if transaction_id is not None:
            pa["transaction_id"] = transaction_id
        data: dict[str, Any] = {"product_action": pa, "currency_code": currency}
        if attrs:
            data["custom_attributes"] = attrs
        self.add("commerce_event", data)

    def fit_before_end(self) -> None:
        """Squeeze the events so that every timestamp is before the end of the span."""
        if not self.events:
            return
        first = self.events[0]["data"]["timestamp_unixtime_ms"]
        last = self.events[-1]["data"]["timestamp_unixtime_ms"]
        limit = self.end_ms - 1
        if last <= limit:
            return
        scale = max(0, limit - first) / (last - first)
        for e in self.events:
            d = e["data"]
            d["timestamp_unixtime_ms"] = first + int((d["timestamp_unixtime_ms"] - first) * scale)
        end_data = self.events[-1]["data"]
        if "session_duration_ms" in end_data:
            end_data["session_duration_ms"] = end_data["timestamp_unixtime_ms"] - first


def _title(rng: random.Random) -> tuple[str, str, int, str, str]:
    t = TITLES[pick_cum(rng, TITLE_CUM)]
    return t.content_id, t.genre, t.runtime_s, t.title, t.kind


def _content_attrs(rng: random.Random) -> dict[str, Any]:
    cid, genre, runtime, title, kind = _title(rng)
    return {"content_id": cid, "category": genre, "duration": runtime, "title": title, "content_type": kind}


def session_open(w: EventWriter, platform: str, *, first_run: bool, upgrade: bool) -> None:
    """Session start plus the app launch transition on mobile."""
    w.add("session_start", {})
    if platform in ("ios", "android") and (first_run or upgrade or w.rng.random() < 0.5):
        w.wait(0.2)
        w.add(
            "application_state_transition",
            {
                "application_transition_type": "application_initialized",
                "is_first_run": first_run,
                "is_upgrade": upgrade and not first_run,
            },
        )
        if first_run and w.rng.random() < 0.6:
            rng = w.rng
            w.custom(
                "install_attribution",
                "attribution",
                {
                    "source": ATTRIBUTION_SOURCES[int(rng.random() * len(ATTRIBUTION_SOURCES))],
                    "campaign": CAMPAIGNS[int(rng.random() * len(CAMPAIGNS))],
                },
            )


def session_close(w: EventWriter, start: int) -> None:
    """Session end with its duration."""
    w.wait(1 + w.rng.expovariate(1 / 20))
    w.add("session_end", {"session_duration_ms": w.t - start})
    w.fit_before_end()


def media_session(
    w: EventWriter,
    platform: str,
    country: Country,
    actions: int,
    *,
    first_run: bool,
    upgrade: bool,
    sign_up: bool,
    milestone: str | None = None,
) -> None:
    """One visit to the streaming app or site; `milestone` is a trial start or subscription made in it."""
    rng = w.rng
    r = rng.random
    start = w.t
    session_open(w, platform, first_run=first_run, upgrade=upgrade)
    if sign_up:
        w.wait(3 + r() * 30)
        w.screen("Sign Up")
        w.wait(20 + r() * 90)
        w.custom("sign_up", "other", {"method": _SIGNUP_METHODS[int(r() * 4)], "platform": platform})
    w.wait(1 + r() * 4)
    w.screen("Home")
    if milestone is not None:
        w.wait(5 + r() * 60)
        w.screen("Plans")
        w.wait(20 + r() * 90)
        if milestone == "start_trial":
            w.custom("start_trial", "transaction", {"plan": "premium", "trial_days": 14})
        else:
            line = (SUBSCRIPTION, 1, money(SUBSCRIPTION.price, country))
            w.commerce(
                "purchase",
                [line],
                country.currency,
                f"T-{uuid_from(rng)[:13]}",
                {"renewal": False, "plan": "premium"},
            )
    mobile = platform in ("ios", "android")
    for _ in range(actions):
        w.wait(rng.expovariate(1 / 25))
        u = r()
        if u < 0.30:
            w.screen("Details")
            w.custom("view_content", "navigation", _content_attrs(rng))
        elif u < 0.55:
            attrs = _content_attrs(rng)
            w.screen("Player")
            runtime = attrs["duration"]
            watched = int(runtime * min(1.0, r() ** 0.6))
            w.wait(watched)
            attrs["duration"] = watched
            attrs["completed"] = watched >= 0.9 * runtime
            w.custom("watch_content", "media", attrs)
        elif u < 0.67:
            w.screen("Search")
            w.wait(2 + r() * 10)
            w.custom(
                "search",
                "search",
                {"query": SEARCH_TERMS[int(r() * len(SEARCH_TERMS))], "results_count": int(r() * 60)},
            )
        elif u < 0.75:
            attrs = _content_attrs(rng)
            attrs["list"] = "My List"
            w.custom("save_content", "user_preference", attrs)
        elif u < 0.77:
            cid, genre, _runtime_s, _title_s, _kind = _title(rng)
            w.custom(
                "rate_content",
                "user_content",
                {"content_id": cid, "category": genre, "rating": 1 + int(r() * 5)},
            )
        elif u < 0.80:
            attrs = _content_attrs(rng)
            attrs["channel"] = _SHARE_CHANNELS[int(r() * len(_SHARE_CHANNELS))]
            w.custom("share_content", "social", attrs)
        elif u < 0.83:
            setting, value = _SETTINGS[int(r() * len(_SETTINGS))]
            w.screen("Settings")
            w.custom("change_settings", "user_preference", {"setting": setting, "value": value})
        elif u < 0.85 and mobile:
            w.custom(
                "location_update", "location", {"country": country.code, "accuracy_m": int(10 + r() * 500)}
            )
        elif u < 0.853:
            cid, genre, _runtime_s, title, _kind = _title(rng)
            rental = Product(cid, title, f"Rental/{genre}", "Milepost", RENTAL_PRICE)
            w.screen("Details")
            w.wait(5 + r() * 20)
            w.commerce(
                "purchase",
                [(rental, 1, money(RENTAL_PRICE, country))],
                country.currency,
                f"T-{uuid_from(rng)[:13]}",
            )
        else:
            w.screen(MEDIA_SCREENS[int(r() * len(MEDIA_SCREENS))])
    session_close(w, start)


def retail_session(
    w: EventWriter, platform: str, country: Country, actions: int, *, first_run: bool, upgrade: bool
) -> None:
    """One visit to the shop: browsing, search, cart and sometimes a purchase."""
    rng = w.rng
    r = rng.random
    start = w.t
    session_open(w, platform, first_run=first_run, upgrade=upgrade)
    w.wait(1 + r() * 4)
    w.screen("Home")
    cart: list[tuple[Product, int, float]] = []
    cur = country.currency
    for _ in range(actions):
        w.wait(rng.expovariate(1 / 30))
        u = r()
        if u < 0.15:
            w.screen("Search Results")
            w.custom(
                "search",
                "search",
                {"query": SHOP_TERMS[int(r() * len(SHOP_TERMS))], "results_count": int(r() * 80)},
            )
        elif u < 0.60:
            p = PRODUCTS[pick_cum(rng, PRODUCT_CUM)]
            w.screen("Product")
            w.commerce("view_detail", [(p, 1, money(p.price, country))], cur)
            if r() < 0.3:
                w.wait(3 + r() * 30)
                line = (p, 1 if r() < 0.85 else 2, money(p.price, country))
                cart.append(line)
                w.commerce("add_to_cart", [line], cur)
        elif u < 0.62:
            p = PRODUCTS[pick_cum(rng, PRODUCT_CUM)]
            w.custom(
                "write_review",
                "user_content",
                {"product_id": p.sku, "category": p.category, "rating": 1 + int(r() * 5)},
            )
        elif u < 0.67 and cart:
            line = cart.pop(int(r() * len(cart)))
            w.screen("Cart")
            w.commerce("remove_from_cart", [line], cur)
        else:
            w.screen(RETAIL_SCREENS[int(r() * len(RETAIL_SCREENS))])
    if cart and r() < 0.45:
        w.wait(5 + r() * 40)
        w.screen("Checkout")
        w.commerce("checkout", cart, cur)
        if r() < 0.75:
            w.wait(20 + r() * 120)
            w.commerce("purchase", cart, cur, f"T-{uuid_from(rng)[:13]}", {"payment_method": _payment(r())})
    session_close(w, start)


def _payment(u: float) -> str:
    return "card" if u < 0.7 else ("paypal" if u < 0.9 else "apple_pay")


def server_event(w: EventWriter, kind: str, country: Country) -> None:
    """A back-end event: trial start, subscription, renewal or an in-store purchase."""
    rng = w.rng
    r = rng.random
    tid = f"T-{uuid_from(rng)[:13]}"
    if kind == "start_trial":
        w.custom("start_trial", "transaction", {"plan": "premium", "trial_days": 14})
    elif kind in ("subscribe", "renewal"):
        line = (SUBSCRIPTION, 1, money(SUBSCRIPTION.price, country))
        w.commerce(
            "purchase", [line], country.currency, tid, {"renewal": kind == "renewal", "plan": "premium"}
        )
    else:
        lines = []
        for _ in range(1 + int(r() * r() * 4)):
            p = PRODUCTS[pick_cum(rng, PRODUCT_CUM)]
            lines.append((p, 1 if r() < 0.8 else 2, money(p.price, country)))
        w.commerce(
            "purchase",
            lines,
            country.currency,
            tid,
            {"channel": "in_store", "store_id": f"S{int(r() * 40):03d}"},
        )


def email_events(w: EventWriter, campaign: str, click_ms: int) -> None:
    """An email open and, sometimes, a click, as reported by the CRM feed."""
    r = w.rng.random
    w.custom(
        "open_email", "other", {"campaign": campaign, "email_client": "gmail" if r() < 0.5 else "apple_mail"}
    )
    if click_ms >= 0:
        w.t = max(w.t + 1, click_ms)
        w.custom(
            "click_email", "navigation", {"campaign": campaign, "link": f"https://example.com/{campaign}"}
        )


def random_genres(rng: random.Random) -> list[str]:
    """One to three favourite genres."""
    return rng.sample(GENRES, 1 + int(rng.random() * 3))


def activity_burst(w: EventWriter, n: int, platform: str, country: Country) -> None:
    """Exactly `n` events of mixed kinds, as a client uploads them mid-session."""
    rng = w.rng
    r = rng.random
    cur = country.currency
    if r() < 0.3:
        w.add("session_start", {})
    while len(w.events) < n:
        w.wait(rng.expovariate(1 / 20))
        u = r()
        if u < 0.28:
            w.screen(MEDIA_SCREENS[int(r() * len(MEDIA_SCREENS))])
        elif u < 0.48:
            w.custom("view_content", "navigation", _content_attrs(rng))
        elif u < 0.60:
            attrs = _content_attrs(rng)
            attrs["duration"] = int(attrs["duration"] * r())
            w.custom("watch_content", "media", attrs)
        elif u < 0.68:
            w.custom(
                "search",
                "search",
                {"query": SEARCH_TERMS[int(r() * len(SEARCH_TERMS))], "results_count": int(r() * 60)},
            )
        elif u < 0.72:
            w.custom("save_content", "user_preference", _content_attrs(rng))
        elif u < 0.74:
            attrs = _content_attrs(rng)
            attrs["channel"] = _SHARE_CHANNELS[int(r() * len(_SHARE_CHANNELS))]
            w.custom("share_content", "social", attrs)
        elif u < 0.95:
            p = PRODUCTS[pick_cum(rng, PRODUCT_CUM)]
            line = (p, 1 if r() < 0.85 else 2, money(p.price, country))
            v = r()
            if v < 0.55:
                w.commerce("view_detail", [line], cur)
            elif v < 0.85:
                w.commerce("add_to_cart", [line], cur)
            elif v < 0.9:
                w.commerce("remove_from_cart", [line], cur)
            else:
                w.commerce(
                    "purchase", [line], cur, f"T-{uuid_from(rng)[:13]}", {"payment_method": _payment(r())}
                )
        elif u < 0.97 and platform in ("ios", "android"):
            w.add(
                "application_state_transition",
                {
                    "application_transition_type": "application_initialized",
                    "is_first_run": False,
                    "is_upgrade": False,
                },
            )
        else:
            w.custom("open_email", "other", {"campaign": CAMPAIGNS[int(r() * len(CAMPAIGNS))]})
    w.fit_before_end()
