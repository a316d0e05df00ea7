"""Estimates are asked for recently for `ACTIVE_S` after the last one; the first one after a quiet
spell (or ever) is told so, since the sample was not kept current meanwhile."""

from __future__ import annotations

from milepost.audiences.demand import ACTIVE_S, Demand


def test_an_estimate_is_recent_for_active_s_and_one_after_a_quiet_spell_is_told_so() -> None:
    now = [100.0]
    d = Demand(lambda: now[0])
    assert not d.recent()
    assert d.ask()  # the first estimate ever
    assert d.recent()
    now[0] += ACTIVE_S / 2
    assert not d.ask()  # asked again within the span: not quiet, and the span starts again
    now[0] += ACTIVE_S - 1
    assert d.recent()
    now[0] += 1
    assert not d.recent()
    assert d.ask()
    assert d.recent()
