"""Static reference data: countries, titles, products, screens and word lists."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from itertools import accumulate


@dataclass(frozen=True, slots=True)
class Country:
    """A country users live in, with the consent regime and money that apply there."""

    code: str
    weight: float
    currency: str
    fx: float
    regime: str  # "gdpr", "ccpa" or ""
    dial: str
    tz_hours: int
    language: str


COUNTRIES: tuple[Country, ...] = (
    Country("US", 0.38, "USD", 1.0, "ccpa", "1", -5, "en"),
    Country("GB", 0.12, "GBP", 0.79, "gdpr", "44", 0, "en"),
    Country("DE", 0.09, "EUR", 0.92, "gdpr", "49", 1, "de"),
    Country("FR", 0.07, "EUR", 0.92, "gdpr", "33", 1, "fr"),
    Country("ES", 0.04, "EUR", 0.92, "gdpr", "34", 1, "es"),
    Country("NL", 0.03, "EUR", 0.92, "gdpr", "31", 1, "nl"),
    Country("CA", 0.06, "CAD", 1.36, "", "1", -5, "en"),
    Country("BR", 0.06, "BRL", 5.0, "", "55", -3, "pt"),
    Country("IN", 0.06, "INR", 83.0, "", "91", 5, "en"),
    Country("AU", 0.05, "AUD", 1.5, "", "61", 10, "en"),
    Country("MX", 0.04, "MXN", 17.0, "", "52", -6, "es"),
)
COUNTRY_CUM: tuple[float, ...] = tuple(accumulate(c.weight for c in COUNTRIES))

GENRES: tuple[str, ...] = (
    "drama", "comedy", "documentary", "thriller", "sci-fi", "kids",
    "sport", "reality", "crime", "romance", "horror", "anime",
)  # fmt: skip

FIRST_NAMES: tuple[str, ...] = (
    "alex", "sam", "maria", "li", "noah", "emma", "liam", "olivia", "lucas", "mia", "arjun", "sofia",
    "yuki", "omar", "ana", "jonas", "chloe", "mateo", "zoe", "ines", "leo", "hana", "ivan", "nora",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "smith", "garcia", "muller", "martin", "rossi", "silva", "kim", "patel", "nguyen", "brown",
    "dubois", "jansen", "lopez", "wilson", "schmidt", "costa", "sato", "khan", "novak", "berg",
)  # fmt: skip
EMAIL_DOMAINS: tuple[str, ...] = (
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "icloud.com",
    "proton.me",
    "example.org",
)

SEARCH_TERMS: tuple[str, ...] = (
    "new releases", "comedy specials", "true crime", "space", "cooking", "football", "anime",
    "oscar winners", "kids movies", "nature documentary", "thriller series", "romcom", "horror",
)  # fmt: skip
SHOP_TERMS: tuple[str, ...] = (
    "headphones", "hoodie", "running shoes", "poster", "mug", "backpack", "t-shirt", "gift card",
    "sneakers", "lamp", "notebook", "water bottle",
)  # fmt: skip

MEDIA_SCREENS: tuple[str, ...] = (
    "Home",
    "Browse",
    "Search",
    "Details",
    "Player",
    "My List",
    "Account",
    "Settings",
)
RETAIL_SCREENS: tuple[str, ...] = (
    "Home",
    "Category",
    "Search Results",
    "Product",
    "Cart",
    "Checkout",
    "Account",
)

CAMPAIGNS: tuple[str, ...] = (
    "spring_launch",
    "win_back",
    "weekly_digest",
    "new_on_service",
    "summer_sale",
    "referral",
)
ATTRIBUTION_SOURCES: tuple[str, ...] = (
    "google_ads",
    "meta",
    "tiktok",
    "organic",
    "referral",
    "apple_search_ads",
)


@dataclass(frozen=True, slots=True)
class Title:
    """One piece of streaming content."""

    content_id: str
    title: str
    genre: str
    runtime_s: int
    kind: str


@dataclass(frozen=True, slots=True)
class Product:
    """One product of the retail shop (prices in USD)."""

    sku: str
    name: str
    category: str
    brand: str
    price: float


_ADJ = (
    "Silent",
    "Last",
    "Golden",
    "Hidden",
    "Broken",
    "Wild",
    "Electric",
    "Lost",
    "Midnight",
    "Crimson",
    "Little",
)
_NOUN = (
    "River",
    "Empire",
    "Signal",
    "Garden",
    "Harbour",
    "Frontier",
    "Kingdom",
    "Orbit",
    "Summer",
    "Code",
    "Echo",
)
_PRODUCT_KINDS = (
    ("Audio", ("Headphones", "Earbuds", "Speaker"), (29.0, 249.0)),
    ("Apparel", ("Hoodie", "T-Shirt", "Cap", "Jacket"), (14.0, 89.0)),
    ("Footwear", ("Running Shoes", "Sneakers", "Sandals"), (39.0, 159.0)),
    ("Home", ("Mug", "Lamp", "Poster", "Blanket"), (9.0, 79.0)),
    ("Outdoor", ("Backpack", "Water Bottle", "Tent"), (12.0, 299.0)),
    ("Gifts", ("Gift Card", "Notebook", "Puzzle"), (10.0, 50.0)),
)
_BRANDS = ("Northwind", "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark")


def _build_titles(rng: random.Random, n: int) -> tuple[Title, ...]:
    out = []
    for i in range(n):
        kind = "episode" if rng.random() < 0.55 else "movie"
        runtime = int(rng.uniform(20, 60) * 60) if kind == "episode" else int(rng.uniform(80, 160) * 60)
        name = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"
        if kind == "episode":
            name += f" S{rng.randint(1, 6)}E{rng.randint(1, 12)}"
        out.append(Title(f"{kind[0]}{i:05d}", name, rng.choice(GENRES), runtime, kind))
    return tuple(out)


def _build_products(rng: random.Random, n: int) -> tuple[Product, ...]:
    out = []
    for i in range(n):
        category, names, (lo, hi) = rng.choice(_PRODUCT_KINDS)
        brand = rng.choice(_BRANDS)
        price = round(int(rng.uniform(lo, hi)) + 0.99, 2)
        out.append(Product(f"sku-{i:05d}", f"{brand} {rng.choice(names)}", category, brand, price))
    return tuple(out)


def _zipf_cum(n: int, s: float) -> tuple[float, ...]:
    return tuple(accumulate(1.0 / (k + 1) ** s for k in range(n)))


_CATALOG_RNG = random.Random(20240601)
TITLES: tuple[Title, ...] = _build_titles(_CATALOG_RNG, 600)
TITLE_CUM: tuple[float, ...] = _zipf_cum(len(TITLES), 0.9)
PRODUCTS: tuple[Product, ...] = _build_products(_CATALOG_RNG, 300)
PRODUCT_CUM: tuple[float, ...] = _zipf_cum(len(PRODUCTS), 0.8)
SUBSCRIPTION = Product("plan-premium-monthly", "Premium (monthly)", "Subscription", "Milepost", 11.99)
RENTAL_PRICE = 4.99


def pick_cum(rng: random.Random, cum: tuple[float, ...]) -> int:
    """An index drawn with the weights whose running sums are `cum`."""
    return bisect.bisect(cum, rng.random() * cum[-1])


def money(usd: float, country: Country) -> float:
    """A USD price in the country's currency, rounded to a .99 ending with 2 decimals."""
    if country.fx == 1.0:
        return usd
    return round(int(usd * country.fx) + 0.99, 2)
