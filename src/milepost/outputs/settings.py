"""Delivery settings, read from the environment once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from milepost.outputs.network import private_outputs_allowed
from milepost.outputs.policy import DAY_MS, RetryPolicy


def _number(environ: dict[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass(frozen=True)
class DeliverySettings:
    """`poll_s`: how often the catalog is re-read and idle connections look for work;
    `batch_size`: the default when an output's settings name none."""

    allow_private: bool = False
    poll_s: float = 0.2
    batch_size: int = 100
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    stop_timeout_s: float = 5.0
    identity_scan_s: float = 1.0  # how often a streaming connection looks for changed identities
    head_poll_s: float = 0.05  # how often the outbox head is read when no commit was notified
    # How long a streamed batch's acknowledgement may wait to be written with the next batch (one
    # transaction for both instead of two) before it is written alone; 0: at once. Longer than
    # the time between two evaluations under load, so the next batch usually carries it.
    ack_delay_s: float = 2.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> DeliverySettings:
        env = dict(os.environ if environ is None else environ)
        policy = RetryPolicy(
            base_s=_number(env, "MILEPOST_DELIVERY_BACKOFF_BASE_S", 1.0),
            max_s=_number(env, "MILEPOST_DELIVERY_BACKOFF_MAX_S", 300.0),
            fault_after_ms=int(_number(env, "MILEPOST_DELIVERY_FAULT_AFTER_S", DAY_MS / 1000) * 1000),
        )
        return cls(
            allow_private=private_outputs_allowed(env),
            poll_s=_number(env, "MILEPOST_DELIVERY_POLL_S", 0.2),
            batch_size=int(_number(env, "MILEPOST_DELIVERY_BATCH_SIZE", 100)),
            policy=policy,
        )
