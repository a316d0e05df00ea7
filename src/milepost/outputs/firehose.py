"""The `firehose` output: mParticle's Firehose audience protocol over HTTP, Milepost in mParticle's role.

Settings `{url, api_key?, account_id?, account_settings?, batch_size?, timeout_s?, verify_interval_s?}`.
Every message is a JSON object POSTed to `url` (with `Authorization: Bearer <api_key>` when one is
set): `audience_subscription_request` (`action` add / update / remove) when a connection starts,
changes (its settings, the audience's name) or is deleted; `audience_membership_change_request`
with one `user_profiles` entry per change; and, every `verify_interval_s`, an empty membership change
request that checks the partner still answers. An answer with `"suspend_subscription": true` is a
permanent refusal: the connection is faulted until resumed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from milepost.catalog.output_records import ConnectionRecord, OutputRecord
from milepost.clock import Clock
from milepost.errors import InvalidRequest
from milepost.outputs import http as h
from milepost.outputs.policy import Attempt
from milepost.outputs.registry import OutputContext, Subscription

FIREHOSE_VERSION = "2.6.0"
DEFAULT_BATCH_SIZE = 100
MAX_BATCH_SIZE = 1000
DEFAULT_VERIFY_INTERVAL_S = 3600.0
MIN_VERIFY_INTERVAL_S = 1.0
MEMBERSHIP_RESPONSE = "audience_membership_change_response"

# Milepost's identity types → Firehose's names for them (others keep their names).
USER_IDENTITY_NAMES = {"customer_id": "customer"}
DEVICE_IDENTITY_NAMES = {
    "ios_idfv": "ios_vendor_id",
    "android_advertising_id": "google_advertising_id",
}


def _settings_map(value: object, name: str) -> dict[str, str]:
    """Firehose settings maps carry strings only."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"settings.{name}: a JSON object of settings (got {type(value).__name__})")
    return {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in value.items()}


def _audience_settings(settings: Mapping[str, Any]) -> dict[str, str]:
    """A connection's settings as the partner sees them (Milepost's own batch size left out)."""
    return _settings_map({k: v for k, v in settings.items() if k != "batch_size"}, "settings")


class FirehoseOutput:
    def __init__(
        self,
        url: str,
        api_key: str | None,
        account_id: int,
        account_settings: dict[str, str],
        audience_settings: dict[str, str],
        hashing: str | None,
        batch_size: int,
        timeout_s: float,
        verify_interval_s: float,
        http: httpx.Client,
        clock: Clock,
        allow_private: bool,
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.account = {"account_id": account_id, "account_settings": account_settings}
        self.audience_settings = audience_settings
        self.encoding = hashing or "raw"
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.verify_interval_s = verify_interval_s
        self.http = http
        self.clock = clock
        self.allow_private = allow_private

    def _message(self, kind: str, message_id: str, **fields: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "id": message_id,
            "timestamp_ms": self.clock.now_ms(),
            "firehose_version": FIREHOSE_VERSION,
            "account": self.account,
            **fields,
        }

    def _post(self, message: dict[str, Any], idempotency_key: str | None) -> tuple[Attempt, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        attempt, resp = h.post(
            self.http,
            self.url,
            orjson.dumps(message),
            headers,
            timeout_s=self.timeout_s,
            allow_private=self.allow_private,
        )
        answer = h.json_body(resp)
        if attempt.ok and isinstance(answer, dict) and answer.get("suspend_subscription") is True:
            return (
                Attempt(
                    attempt.status,
                    body=attempt.body,
                    error="the partner suspended the subscription (suspend_subscription)",
                    refused=True,
                ),
                answer,
            )
        return attempt, answer

    def profile(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One `user_profiles` entry for a change record."""
        return {
            "mpid": str(record["mpid"]),
            "user_identities": [
                {"type": USER_IDENTITY_NAMES.get(t, t), "encoding": self.encoding, "value": v}
                for t, v in record["identities"].items()
            ],
            "device_identities": [
                {
                    "type": DEVICE_IDENTITY_NAMES.get(d["type"], d["type"]),
                    "encoding": self.encoding,
                    "value": d["value"],
                }
                for d in record["device_identities"]
            ],
            "audiences": [
                {
                    "audience_id": record["audience_id"],
                    "audience_name": record["external_name"],
                    "audience_subscription_settings": self.audience_settings,
                    "action": "add" if record["action"] == "add" else "delete",
                }
            ],
        }

    def send(self, records: Sequence[dict[str, Any]], idempotency_key: str) -> Attempt:
        # The message id is derived from the batch, so a retried batch is recognisably the same.
        message_id = str(uuid.UUID(hex=idempotency_key[:32]))
        message = self._message(
            "audience_membership_change_request",
            message_id,
            user_profiles=[self.profile(r) for r in records],
        )
        attempt, _ = self._post(message, idempotency_key)
        return attempt

    def subscribe(self, subscription: Subscription) -> Attempt:
        fields: dict[str, Any] = {
            "audience_id": subscription.audience_id,
            "audience_name": subscription.audience_name,
            "audience_subscription_settings": _audience_settings(subscription.settings),
            "action": subscription.action,
        }
        if subscription.previous_settings is not None:
            fields["previous_audience_subscription_settings"] = _audience_settings(
                subscription.previous_settings
            )
        attempt, _ = self._post(
            self._message("audience_subscription_request", str(uuid.uuid4()), **fields), None
        )
        return attempt

    def verify(self) -> Attempt:
        """The empty membership change request; the answer must be a membership change response."""
        message = self._message("audience_membership_change_request", str(uuid.uuid4()), user_profiles=[])
        attempt, answer = self._post(message, None)
        if not attempt.ok:
            return attempt
        kind = answer.get("type") if isinstance(answer, dict) else None
        if kind != MEMBERSHIP_RESPONSE:
            return Attempt(
                attempt.status,
                body=attempt.body,
                error=f"the partner's answer to the verification request is not an {MEMBERSHIP_RESPONSE}",
                refused=True,
            )
        return attempt


class FirehoseType:
    name = "firehose"
    secret_settings = ("api_key",)

    def check_settings(self, settings: Mapping[str, Any], *, allow_private: bool) -> dict[str, Any]:
        url = h.url_setting(settings, "url", allow_private=allow_private)
        api_key = h.text_setting(settings, "api_key", required=False, what="the partner's API key, as text")
        account_id = settings.get("account_id", 0)
        if isinstance(account_id, bool) or not isinstance(account_id, int) or account_id < 0:
            raise InvalidRequest(f"settings.account_id: a whole number of at least 0 (got {account_id!r})")
        verify = settings.get("verify_interval_s", DEFAULT_VERIFY_INTERVAL_S)
        if isinstance(verify, bool) or not isinstance(verify, int | float) or verify < MIN_VERIFY_INTERVAL_S:
            raise InvalidRequest(
                f"settings.verify_interval_s: seconds between verification requests, at least "
                f"{MIN_VERIFY_INTERVAL_S:g} (got {verify!r})"
            )
        return {
            "url": url,
            "api_key": api_key,
            "account_id": account_id,
            "account_settings": _settings_map(settings.get("account_settings"), "account_settings"),
            "batch_size": h.batch_setting(settings, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE),
            "timeout_s": h.timeout_setting(settings),
            "verify_interval_s": float(verify),
        }

    def open(
        self, output: OutputRecord, connection: ConnectionRecord, context: OutputContext
    ) -> FirehoseOutput:
        s = self.check_settings(output.settings, allow_private=context.allow_private)
        batch_size = h.batch_setting(connection.settings, s["batch_size"], MAX_BATCH_SIZE)
        return FirehoseOutput(
            s["url"],
            s["api_key"],
            s["account_id"],
            s["account_settings"],
            _audience_settings(connection.settings),
            output.hashing,
            batch_size,
            s["timeout_s"],
            s["verify_interval_s"],
            context.http,
            context.clock,
            context.allow_private,
        )


FIREHOSE = FirehoseType()
