"""The Events API use case, independent of HTTP: authenticate, limit, validate, hand to the writer."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import orjson

from milepost.clock import Clock
from milepost.errors import InvalidBatch, RateLimited, RequestTooLarge
from milepost.ingest.auth import InputDirectory
from milepost.ingest.normalize import normalize_request
from milepost.ingest.ratelimit import RateLimiter
from milepost.ingest.writer import IngestWriter
from milepost.model.batch import IngestOutcome, IngestRequest


@dataclass(frozen=True)
class Accepted:
    outcome: IngestOutcome
    warnings: list[str]


class IngestService:
    def __init__(
        self,
        inputs: InputDirectory,
        writer: IngestWriter,
        limiter: RateLimiter,
        clock: Clock,
        *,
        max_request_bytes: int,
        max_bulk_batches: int,
    ) -> None:
        self.inputs = inputs
        self.writer = writer
        self.limiter = limiter
        self.clock = clock
        self.max_request_bytes = max_request_bytes
        self.max_bulk_batches = max_bulk_batches
        self.accepted: Counter[tuple[int, str]] = Counter()  # (input, endpoint) -> batches
        self.rejected: Counter[str] = Counter()  # reason code -> requests
        self.warnings: Counter[int] = Counter()

    async def accept_for_input(self, input_id: int, body: bytes, endpoint: str, received_at: int) -> Accepted:
        if len(body) > self.max_request_bytes:
            raise RequestTooLarge(
                f"the request is {len(body)} bytes; the limit is {self.max_request_bytes} bytes — "
                "send fewer batches per request"
            )
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidBatch(f"the body is not valid JSON: {exc}") from None
        bulk = endpoint != "events"
        batches, warnings = normalize_request(
            parsed,
            bulk=bulk,
            historical=endpoint == "historical",
            received_at=received_at,
            max_batches=self.max_bulk_batches,
        )
        wait = self.limiter.take(input_id, len(batches))
        if wait > 0:
            raise RateLimited(
                f"input {input_id} is over its rate limit of {self.limiter.rate:g} batches per second",
                RateLimiter.retry_after_header(wait),
            )
        outcome = await self.writer.accept(
            IngestRequest(input_id=input_id, received_at=received_at, batches=batches)
        )
        self.accepted[(input_id, endpoint)] += outcome.stored_batches
        if warnings:
            self.warnings[input_id] += len(warnings)
        return Accepted(outcome, warnings)
