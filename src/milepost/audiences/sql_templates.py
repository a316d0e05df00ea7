"""Compiled SQL with `now` as a parameter, so a criterion is compiled once rather than once per instant.

The compiler writes instants as integer literals computed from `now` (`now`, `now - 30 days`, ...).
Two compilations of one criterion at instants `a` and `b` differ exactly in those literals, each
by `b - a`; every other character is the same. A template keeps the common text and, per such
literal, its offset from `now`. It is only kept when it renders a third compilation exactly, so a
literal that is not `now` plus a constant never slips through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Template:
    texts: tuple[str, ...]  # len(offsets) + 1 pieces of text around the instants
    offsets: tuple[int, ...]  # each instant is now + offset

    def render(self, now_ms: int) -> str:
        out = [self.texts[0]]
        for offset, text in zip(self.offsets, self.texts[1:], strict=True):
            out.append(str(now_ms + offset))
            out.append(text)
        return "".join(out)


def template(a: str, a_now: int, b: str, b_now: int) -> Template | None:
    """The template both texts render from (compiled at `a_now` and `b_now`), or None."""
    delta = b_now - a_now
    if delta == 0:
        return None
    pa, pb = _NUMBER.split(a), _NUMBER.split(b)
    if len(pa) != len(pb):
        return None
    texts: list[str] = []
    offsets: list[int] = []
    pending = ""
    for i, (x, y) in enumerate(zip(pa, pb, strict=True)):
        if x == y:
            pending += x
            continue
        # odd positions hold the digit runs; a literal is `now + offset` when it moved by delta
        if i % 2 == 0 or x.startswith("0") or int(y) - int(x) != delta:
            return None
        offset = int(x) - a_now
        if a_now + offset < 0 or b_now + offset < 0:
            return None
        texts.append(pending)
        offsets.append(offset)
        pending = ""
    texts.append(pending)
    return Template(tuple(texts), tuple(offsets))
