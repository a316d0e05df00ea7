"""The retry policy and the batching of deliveries: pure functions, with time and randomness passed in.

An `Attempt` is what came back from one try at delivering a batch; `decide` turns it into what the
runner does next. Nothing here sleeps, reads a clock or does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from milepost.clock import DAY_MS

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one delivery try.

    `status` is the partner's HTTP status (an output without HTTP answers 200 or leaves it None on
    failure); `timed_out` and a None status with `error` mean the partner could not be reached;
    `refused` is a refusal found before sending (settings, a private address), never retried.
    """

    status: int | None
    retry_after: str | None = None
    error: str = ""
    body: str = ""
    timed_out: bool = False
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and not self.refused


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # the same batch again after `delay_s`
    FAULT = "fault"  # pause the connection, keeping its backlog, until resumed
    SPLIT = "split"  # the partner refuses some records: halve the batch to isolate them


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    delay_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: try n waits base·factor^n, jittered down to half, at most `max_s`."""

    base_s: float = 1.0
    factor: float = 2.0
    max_s: float = 300.0
    retry_after_max_s: float = 3600.0
    fault_after_ms: int = DAY_MS

    def backoff(self, failures: int, jitter: float) -> float:
        """The wait after `failures` consecutive failures (1 = the first), for a `jitter` in [0, 1)."""
        exponent = max(0, failures - 1)
        raw = self.max_s if exponent > 64 else min(self.max_s, self.base_s * self.factor**exponent)
        return raw * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


def retry_after_s(value: str | None, now_ms: int) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date); None if absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_ms / 1000)


def describe(attempt: Attempt) -> str:
    """A short text for `last_error`."""
    if attempt.refused:
        return attempt.error or "refused before sending"
    if attempt.timed_out:
        return f"timed out{': ' + attempt.error if attempt.error else ''}"
    if attempt.status is None:
        return attempt.error or "the partner could not be reached"
    body = " ".join(attempt.body.split())[:200]
    return f"HTTP {attempt.status}{': ' + body if body else ''}"


def decide(
    attempt: Attempt,
    *,
    failures: int,
    failing_since_ms: int | None,
    now_ms: int,
    policy: RetryPolicy,
    jitter: float,
) -> Decision:
    """What to do after `attempt`.

    `failures` counts consecutive failed tries including this one; `failing_since_ms` is when the
    current run of failures began (None if this is its first), so retries that still fail after
    `policy.fault_after_ms` become a permanent refusal.
    """
    if attempt.ok:
        return Decision(Verdict.DELIVERED)
    reason = describe(attempt)
    if attempt.refused:
        return Decision(Verdict.FAULT, reason=reason)
    status = attempt.status
    if status in (401, 403):
        return Decision(Verdict.FAULT, reason=f"the partner refused the credentials ({reason})")
    retryable = attempt.timed_out or status is None or status in (408, 425, 429) or status >= 500
    if retryable:
        since = now_ms if failing_since_ms is None else failing_since_ms
        if now_ms - since >= policy.fault_after_ms:
            hours = policy.fault_after_ms / 3_600_000
            return Decision(Verdict.FAULT, reason=f"still failing after {hours:g} h ({reason})")
        delay = policy.backoff(failures, jitter)
        asked = retry_after_s(attempt.retry_after, now_ms) if status == 429 or status == 503 else None
        if asked is not None:
            delay = max(0.1, min(asked, policy.retry_after_max_s))
        return Decision(Verdict.RETRY, delay_s=delay, reason=reason)
    if status is not None and 400 <= status < 500:
        return Decision(Verdict.SPLIT, reason=reason)
    # 1xx or 3xx: outputs do not follow redirects; the URL needs fixing.
    return Decision(Verdict.FAULT, reason=f"unexpected answer ({reason})")


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """`items` in consecutive batches of at most `size` (at least 1)."""
    size = max(1, size)
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def split(batch: Sequence[T]) -> tuple[list[T], list[T]]:
    """Halve a refused batch (order kept) so the records the partner refuses can be isolated."""
    if len(batch) < 2:
        raise ValueError("a batch of one record cannot be split; dead-letter it")
    middle = len(batch) // 2
    return list(batch[:middle]), list(batch[middle:])


def clamp_batch_size(value: object, default: int, upper: int = 10_000) -> int:
    """A batch size from settings: a positive integer, at most `upper`, else the default."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return default
    return min(value, upper)
