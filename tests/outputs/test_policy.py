"""The retry policy and batching: pure functions, driven with explicit times and jitter."""

from __future__ import annotations

import pytest

from milepost.clock import ManualClock
from milepost.outputs.policy import (
    DAY_MS,
    Attempt,
    RetryPolicy,
    Verdict,
    chunks,
    clamp_batch_size,
    decide,
    retry_after_s,
    split,
)

pytestmark = pytest.mark.unit

POLICY = RetryPolicy(base_s=1.0, factor=2.0, max_s=60.0, fault_after_ms=DAY_MS)
T0 = 1_700_000_000_000


def _decide(
    attempt: Attempt, failures: int = 1, since: int | None = None, now: int = T0, jitter: float = 0.0
):
    return decide(
        attempt, failures=failures, failing_since_ms=since, now_ms=now, policy=POLICY, jitter=jitter
    )


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered(status: int) -> None:
    assert _decide(Attempt(status)).verdict is Verdict.DELIVERED


@pytest.mark.parametrize("status", [401, 403])
def test_credentials_refused_fault_at_once(status: int) -> None:
    d = _decide(Attempt(status, body="nope"))
    assert d.verdict is Verdict.FAULT and str(status) in d.reason


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422])
def test_other_4xx_split(status: int) -> None:
    assert _decide(Attempt(status)).verdict is Verdict.SPLIT


@pytest.mark.parametrize(
    "attempt",
    [
        Attempt(500),
        Attempt(502),
        Attempt(503),
        Attempt(429),
        Attempt(408),
        Attempt(None, timed_out=True),
        Attempt(None, error="refused"),
    ],
)
def test_transient_failures_retry(attempt: Attempt) -> None:
    d = _decide(attempt)
    assert d.verdict is Verdict.RETRY and d.delay_s > 0


def test_refused_before_sending_faults() -> None:
    d = _decide(Attempt(None, error="private address", refused=True))
    assert d.verdict is Verdict.FAULT and "private" in d.reason


def test_redirects_fault() -> None:
    assert _decide(Attempt(302)).verdict is Verdict.FAULT


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    full = [POLICY.backoff(n, jitter=1.0) for n in range(1, 10)]
    assert full[:6] == [1, 2, 4, 8, 16, 32] and full[6:] == [60, 60, 60]
    half = [POLICY.backoff(n, jitter=0.0) for n in range(1, 4)]
    assert half == [0.5, 1, 2]
    assert POLICY.backoff(10_000, 0.5) == 45.0  # no overflow for long outages
    for n in range(1, 8):
        d = _decide(Attempt(500), failures=n, jitter=0.3)
        assert d.delay_s == pytest.approx(POLICY.backoff(n, 0.3))


def test_retry_after_is_honoured_for_429() -> None:
    assert _decide(Attempt(429, retry_after="7"), failures=1).delay_s == 7
    assert _decide(Attempt(429, retry_after="0")).delay_s == pytest.approx(0.1)
    assert _decide(Attempt(429, retry_after="999999")).delay_s == POLICY.retry_after_max_s
    date = "Tue, 14 Nov 2023 22:13:50 GMT"  # T0 is 22:13:20
    assert retry_after_s(date, T0) == pytest.approx(30)
    assert _decide(Attempt(429, retry_after=date)).delay_s == pytest.approx(30)
    assert retry_after_s("soon", T0) is None and retry_after_s(None, T0) is None
    # a bad header falls back to the backoff
    assert _decide(Attempt(429, retry_after="soon"), jitter=1.0).delay_s == 1.0


def test_failing_for_a_day_becomes_a_fault() -> None:
    clock = ManualClock(T0)
    since = clock.now_ms()
    clock.advance(DAY_MS - 1)
    assert _decide(Attempt(503), failures=50, since=since, now=clock.now_ms()).verdict is Verdict.RETRY
    clock.advance(1)
    d = _decide(Attempt(503), failures=51, since=since, now=clock.now_ms())
    assert d.verdict is Verdict.FAULT and "24 h" in d.reason
    # a success ends the run of failures whenever it comes
    assert _decide(Attempt(200), since=since, now=clock.now_ms()).verdict is Verdict.DELIVERED
    # and the window is configurable
    short = RetryPolicy(fault_after_ms=60_000)
    d = decide(
        Attempt(None, timed_out=True),
        failures=3,
        failing_since_ms=T0,
        now_ms=T0 + 60_000,
        policy=short,
        jitter=0,
    )
    assert d.verdict is Verdict.FAULT


def test_chunks_and_split_keep_order() -> None:
    items = list(range(7))
    assert chunks(items, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunks(items, 0) == [[i] for i in items]
    assert chunks([], 5) == []
    assert split([1, 2, 3, 4, 5]) == ([1, 2], [3, 4, 5])
    with pytest.raises(ValueError):
        split([1])


def test_isolating_refused_records_by_splitting() -> None:
    """Halving a refused batch until single records isolates exactly the refused ones, in order."""
    refused = {3, 11}
    delivered: list[int] = []
    dead: list[int] = []
    parts = [list(range(16))]
    requests = 0
    while parts:
        part = parts[0]
        requests += 1
        status = 400 if refused & set(part) else 200
        verdict = _decide(Attempt(status)).verdict
        if verdict is Verdict.DELIVERED:
            delivered += parts.pop(0)
        elif len(part) == 1:
            dead += parts.pop(0)
        else:
            parts[0:1] = list(split(part))
    assert delivered == [i for i in range(16) if i not in refused] and dead == [3, 11]
    assert requests < 16


def test_batch_size_from_settings() -> None:
    assert clamp_batch_size(None, 100) == 100
    assert clamp_batch_size(25, 100) == 25
    assert clamp_batch_size(0, 100) == 100
    assert clamp_batch_size(True, 100) == 100
    assert clamp_batch_size("50", 100) == 100
    assert clamp_batch_size(10**9, 100) == 10_000
