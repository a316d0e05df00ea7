"""The `webhook` output: signed JSON batches of change records POSTed to a URL (SPEC §6, §7.2).

Settings `{url, secret, batch_size?, timeout_s?}`; a connection's settings may set its own
`batch_size`. Each request carries `X-Milepost-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">` and an `Idempotency-Key` naming the batch by the ids it carries.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from milepost import __version__
from milepost.catalog.output_records import ConnectionRecord, OutputRecord
from milepost.clock import Clock
from milepost.errors import InvalidRequest
from milepost.outputs.network import UrlRefused, check_url
from milepost.outputs.policy import Attempt, clamp_batch_size
from milepost.outputs.registry import OutputContext

DEFAULT_BATCH_SIZE = 100
DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 120.0
SIGNATURE_HEADER = "X-Milepost-Signature"


def signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """The value of the signature header for `body` sent at `timestamp_s`."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp_s}.".encode(), hashlib.sha256)
    mac.update(body)  # not joined to the prefix: a batch's body is megabytes
    return f"t={timestamp_s},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now_s: int, tolerance_s: int = 300) -> bool:
    """What a receiver does: the signature matches and is not older than `tolerance_s`."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        t = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now_s - t) > tolerance_s:
        return False
    expected = signature(secret, t, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return DEFAULT_TIMEOUT_S
    return min(float(value), MAX_TIMEOUT_S)


class WebhookOutput:
    def __init__(
        self,
        output_id: int,
        url: str,
        secret: str,
        batch_size: int,
        timeout_s: float,
        http: httpx.Client,
        clock: Clock,
        allow_private: bool,
    ) -> None:
        self.output_id = output_id
        self.url = url
        self.secret = secret
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.http = http
        self.clock = clock
        self.allow_private = allow_private

    def send(self, records: Sequence[dict[str, Any]], idempotency_key: str) -> Attempt:
        return self._post(
            orjson.dumps({"output_id": self.output_id, "changes": list(records)}), idempotency_key
        )

    def send_json(self, changes: bytes, idempotency_key: str) -> Attempt:
        body = b'{"output_id":%d,"changes":[%s]}' % (self.output_id, changes)
        return self._post(body, idempotency_key)

    def _post(self, body: bytes, idempotency_key: str) -> Attempt:
        try:
            check_url(self.url, allow_private=self.allow_private)
        except UrlRefused as refused:
            return Attempt(None, error=str(refused), refused=True)
        except OSError as error:  # the name did not resolve: perhaps a passing DNS failure
            return Attempt(None, error=f"cannot resolve the output url's host: {error}")
        t = self.clock.now_ms() // 1000
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"milepost/{__version__}",
            "Idempotency-Key": idempotency_key,
            SIGNATURE_HEADER: signature(self.secret, t, body),
        }
        try:
            resp = self.http.post(
                self.url, content=body, headers=headers, timeout=self.timeout_s, follow_redirects=False
            )
        except httpx.TimeoutException as error:
            return Attempt(None, error=type(error).__name__, timed_out=True)
        except httpx.HTTPError as error:
            return Attempt(None, error=f"{type(error).__name__}: {error}")
        return Attempt(resp.status_code, retry_after=resp.headers.get("Retry-After"), body=resp.text[:2000])


class WebhookType:
    name = "webhook"

    def check_settings(self, settings: Mapping[str, Any], *, allow_private: bool) -> dict[str, Any]:
        try:
            url = check_url(settings.get("url"), allow_private=allow_private, resolve=False)
        except UrlRefused as refused:
            raise InvalidRequest(f"settings.url: {refused}") from None
        secret = settings.get("secret")
        if not isinstance(secret, str) or not secret:
            raise InvalidRequest("settings.secret: a webhook output needs a secret to sign its requests with")
        return {
            "url": url,
            "secret": secret,
            "batch_size": clamp_batch_size(settings.get("batch_size"), DEFAULT_BATCH_SIZE),
            "timeout_s": _timeout(settings.get("timeout_s")),
        }

    def open(
        self, output: OutputRecord, connection: ConnectionRecord, context: OutputContext
    ) -> WebhookOutput:
        s = self.check_settings(output.settings, allow_private=context.allow_private)
        batch_size = clamp_batch_size(connection.settings.get("batch_size"), s["batch_size"])
        return WebhookOutput(
            output.id,
            s["url"],
            s["secret"],
            batch_size,
            s["timeout_s"],
            context.http,
            context.clock,
            context.allow_private,
        )


WEBHOOK = WebhookType()
