"""The `braze` output: audience membership as Braze user attributes, through `POST /users/track`.

Settings `{base_url, api_key, mode?, attribute?, attribute_prefix?, identifier?, identity_type?,
batch_size?, timeout_s?}`:

- `mode` `segment_membership` (default): one array attribute (`attribute`, default
  `milepost_audiences`) that gains the audience's external name on an add (`{"add": [name]}`) and
  loses it on a remove (`{"remove": [name]}`), so a Braze segment can filter on it;
- `mode` `attribute_per_audience`: one boolean attribute per audience, named `attribute_prefix`
  (default `milepost_`) + the external name, or the connection's own `attribute` setting.

A user is named by `identifier` (`external_id`, default, or `braze_id`) taken from the identity
type `identity_type` (default `customer_id`); members without it are not sent (ineligible). Braze
takes at most 75 attribute objects per request, so batches are at most 75 changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from milepost.catalog.output_records import ConnectionRecord, OutputRecord
from milepost.errors import InvalidRequest
from milepost.outputs import http as h
from milepost.outputs.policy import Attempt
from milepost.outputs.registry import OutputContext

MAX_BATCH_SIZE = 75  # Braze's limit of attribute objects per /users/track request
MODES = ("segment_membership", "attribute_per_audience")
IDENTIFIERS = ("external_id", "braze_id")
DEFAULT_ATTRIBUTE = "milepost_audiences"
DEFAULT_PREFIX = "milepost_"


def _attribute_name(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or value.startswith("$") or len(value) > 255:
        raise InvalidRequest(
            f"settings.{name}: a Braze attribute name (1 to 255 characters, not starting with $; got {value!r})"
        )
    return value


class BrazeOutput:
    def __init__(
        self,
        url: str,
        api_key: str,
        mode: str,
        attribute: str | None,
        prefix: str,
        identifier: str,
        identity_type: str,
        batch_size: int,
        timeout_s: float,
        http: httpx.Client,
        allow_private: bool,
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.mode = mode
        self.attribute = attribute
        self.prefix = prefix
        self.identifier = identifier
        self.identity_type = identity_type
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.http = http
        self.allow_private = allow_private

    def attributes(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """The attributes object for one change; None when the user lacks the identity Braze knows them by."""
        user = record["identities"].get(self.identity_type)
        if user is None:
            devices = {d["type"]: d["value"] for d in record["device_identities"]}
            user = devices.get(self.identity_type)
        if user is None:
            return None
        name = record["external_name"]
        add = record["action"] == "add"
        if self.mode == "segment_membership":
            field = self.attribute or DEFAULT_ATTRIBUTE
            return {self.identifier: user, field: {"add" if add else "remove": [name]}}
        return {self.identifier: user, self.attribute or f"{self.prefix}{name}": add}

    def send(self, records: Sequence[dict[str, Any]], idempotency_key: str) -> Attempt:
        attributes = [a for a in (self.attributes(r) for r in records) if a is not None]
        if not attributes:
            return Attempt(200)
        body = orjson.dumps({"attributes": attributes})
        headers = {"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": idempotency_key}
        attempt, _ = h.post(
            self.http, self.url, body, headers, timeout_s=self.timeout_s, allow_private=self.allow_private
        )
        return attempt


class BrazeType:
    name = "braze"
    secret_settings = ("api_key",)

    def default_identities(self, settings: Mapping[str, Any]) -> tuple[str, ...]:
        kind = settings.get("identity_type")
        return (kind if isinstance(kind, str) and kind else "customer_id",)

    def check_settings(self, settings: Mapping[str, Any], *, allow_private: bool) -> dict[str, Any]:
        base = h.url_setting(settings, "base_url", allow_private=allow_private)
        api_key = h.text_setting(
            settings, "api_key", required=True, what="a Braze REST API key with the users.track permission"
        )
        mode = settings.get("mode", MODES[0])
        if mode not in MODES:
            raise InvalidRequest(f"settings.mode: one of {', '.join(MODES)} (got {mode!r})")
        identifier = settings.get("identifier", IDENTIFIERS[0])
        if identifier not in IDENTIFIERS:
            raise InvalidRequest(f"settings.identifier: one of {', '.join(IDENTIFIERS)} (got {identifier!r})")
        identity_type = settings.get("identity_type", "customer_id")
        if not isinstance(identity_type, str) or not identity_type:
            raise InvalidRequest(
                f"settings.identity_type: an identity type such as customer_id (got {identity_type!r})"
            )
        attribute = settings.get("attribute")
        prefix = settings.get("attribute_prefix", DEFAULT_PREFIX)
        if not isinstance(prefix, str) or prefix.startswith("$"):
            raise InvalidRequest(f"settings.attribute_prefix: text not starting with $ (got {prefix!r})")
        return {
            "base_url": base,
            "api_key": api_key,
            "mode": mode,
            "attribute": None if attribute is None else _attribute_name(attribute, "attribute"),
            "attribute_prefix": prefix,
            "identifier": identifier,
            "identity_type": identity_type,
            "batch_size": h.batch_setting(settings, MAX_BATCH_SIZE, MAX_BATCH_SIZE),
            "timeout_s": h.timeout_setting(settings),
        }

    def open(self, output: OutputRecord, connection: ConnectionRecord, context: OutputContext) -> BrazeOutput:
        s = self.check_settings(output.settings, allow_private=context.allow_private)
        attribute = connection.settings.get("attribute")
        if attribute is not None:
            attribute = _attribute_name(attribute, "attribute")
        return BrazeOutput(
            s["base_url"].rstrip("/") + "/users/track",
            s["api_key"],
            s["mode"],
            attribute if attribute is not None else s["attribute"],
            s["attribute_prefix"],
            s["identifier"],
            s["identity_type"],
            h.batch_setting(connection.settings, s["batch_size"], MAX_BATCH_SIZE),
            s["timeout_s"],
            context.http,
            context.allow_private,
        )


BRAZE = BrazeType()
