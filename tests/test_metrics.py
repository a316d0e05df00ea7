"""Histograms fed many values at once, in Prometheus' text format."""

from __future__ import annotations

import re

from milepost.metrics import Latencies, render


def _value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, sample
    return float(match.group(1))


def test_each_value_counts_in_the_first_bucket_it_fits_and_the_text_is_cumulative() -> None:
    h = Latencies("x_seconds", "Test.", (0.1, 1.0))
    h.observe([0.1, 0.5, 1.0, 2.0])
    h.observe([])
    h.observe([0.05, 5.0], [1, 0])  # weights: 5.0 is observed no times
    text = render(h)
    assert "# TYPE x_seconds histogram" in text
    assert _value(text, 'x_seconds_bucket{le="0.1"}') == 2  # 0.05 and 0.1 (at most the bound)
    assert _value(text, 'x_seconds_bucket{le="1"}') == 4
    assert _value(text, 'x_seconds_bucket{le="+Inf"}') == 5
    assert _value(text, "x_seconds_count") == 5
    assert abs(_value(text, "x_seconds_sum") - 3.65) < 1e-9


def test_timing_observes_the_block_even_when_it_fails() -> None:
    h = Latencies("y_seconds", "Test.", (10.0,))
    with h.timing():
        pass
    try:
        with h.timing():
            raise ValueError("boom")
    except ValueError:
        pass
    assert _value(render(h), 'y_seconds_bucket{le="10"}') == 2
