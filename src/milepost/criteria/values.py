"""How a stored value is seen as text, number, boolean or date (SPEC §4.2), shared by every evaluator.

The regular expressions here are written in the common subset of Python `re` and RE2, so the
compiled SQL applies exactly the same tests as the reference evaluator.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

from milepost.clock import DAY_MS

NUMBER_PATTERN = r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?"
DATE_ONLY_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
ISO_PATTERN = (
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"([T ]([01][0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9])(\.([0-9]{1,6}))?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
OFFSET_SUFFIX_PATTERN = r"(Z|[+-][0-9]{2}:[0-9]{2})$"

_NUMBER_RE = re.compile(NUMBER_PATTERN)
_ISO_RE = re.compile(ISO_PATTERN)
_QUANTUM = Decimal("0.000000001")


def is_number(v: object) -> bool:
    return isinstance(v, int | float | Decimal) and not isinstance(v, bool)


def text_of(v: object) -> str | None:
    """The JSON text a string operator sees; typed numbers (Decimal) and lists have none."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return json.dumps(v)
    return None


def number_of(v: object) -> float | None:
    """The numeric view: numbers, and strings written as a number."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float | Decimal):
        return float(v)
    if isinstance(v, str) and _NUMBER_RE.fullmatch(v):
        return float(v)
    return None


def decimal_of(v: object) -> Decimal | None:
    """The exact numeric view used by sums, rounded like DECIMAL(38,9)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, Decimal):
        d = v
    elif isinstance(v, int):
        d = Decimal(v)
    elif isinstance(v, float):
        if not math.isfinite(v):
            return None
        d = Decimal(repr(v))
    elif isinstance(v, str) and _NUMBER_RE.fullmatch(v):
        d = Decimal(v)
    else:
        return None
    return _quantize(d)


_CONTEXT = Context(prec=38)


def _quantize(d: Decimal) -> Decimal | None:
    """Round like DECIMAL(38,9); None when it would not fit (the SQL cast yields NULL too)."""
    try:
        return d.quantize(_QUANTUM, rounding=ROUND_HALF_UP, context=_CONTEXT)
    except InvalidOperation:
        return None


def bool_of(v: object) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return None


def parse_iso(s: str) -> int | None:
    """Epoch ms of an ISO-8601 date or date-time (no offset = UTC), or None."""
    m = _ISO_RE.fullmatch(s)
    if m is None:
        return None
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    hour = int(m.group(5) or 0)
    minute = int(m.group(6) or 0)
    second = int(m.group(8) or 0)
    frac = (m.group(10) or "").ljust(6, "0")
    micro = int(frac) if frac else 0
    offset = m.group(11)
    try:
        tz = dt.UTC
        if offset and offset != "Z":
            sign = -1 if offset[0] == "-" else 1
            delta = dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
            tz = dt.timezone(sign * delta)
        when = dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError:
        return None
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (when - epoch) // dt.timedelta(milliseconds=1)


def epoch_ms_of(v: object) -> int | None:
    """The date view: numbers are epoch ms, strings ISO-8601."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float | Decimal):
        f = float(v)
        return math.floor(f) if math.isfinite(f) else None
    if isinstance(v, str):
        return parse_iso(v)
    return None


def day_start(v: object) -> int | None:
    """Start (epoch ms) of the UTC calendar day of a date value."""
    ms = epoch_ms_of(v)
    return None if ms is None else ms - ms % DAY_MS


def distinct_key(v: object) -> str | None:
    """What `distinct` and `unique_*` compare: lower-case text, or the exact amount for typed numbers."""
    if isinstance(v, Decimal):
        q = _quantize(v)
        return None if q is None else str(q)
    t = text_of(v)
    return None if t is None else t.lower()


def wildcard_to_like(pattern: str) -> str:
    """Translate a `pattern` (`*`, `?`) to a LIKE pattern escaped with a backslash."""
    out = []
    for ch in pattern:
        if ch in "\\%_":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def wildcard_match(pattern: str, text: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, flags=re.DOTALL) is not None
