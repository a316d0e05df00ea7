"""A third-party output type goes through the same door as the built-ins (docs/outputs.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest
from tests.outputs.inprocess import Local, drive
from tests.outputs.partner import Partner

from milepost.catalog.output_records import ConnectionRecord, OutputRecord
from milepost.errors import InvalidRequest
from milepost.outputs import http as h
from milepost.outputs import registry
from milepost.outputs.policy import Attempt
from milepost.outputs.registry import OutputContext

pytestmark = pytest.mark.unit


class ChatSender:
    def __init__(self, url: str, context: OutputContext) -> None:
        self.url = url
        self.context = context
        self.batch_size = 2

    def send(self, records: Sequence[dict[str, Any]], idempotency_key: str) -> Attempt:
        body = orjson.dumps({"changes": [{"text": f"{r['action']} {r['mpid']}", **r} for r in records]})
        attempt, _ = h.post(
            self.context.http,
            self.url,
            body,
            {"Idempotency-Key": idempotency_key},
            timeout_s=5,
            allow_private=self.context.allow_private,
        )
        return attempt


class ChatType:
    name = "chat"
    secret_settings = ("url",)

    def check_settings(self, settings: Mapping[str, Any], *, allow_private: bool) -> dict[str, Any]:
        return {"url": h.url_setting(settings, "url", allow_private=allow_private)}

    def open(self, output: OutputRecord, connection: ConnectionRecord, context: OutputContext) -> ChatSender:
        return ChatSender(
            self.check_settings(output.settings, allow_private=context.allow_private)["url"], context
        )


def test_a_registered_type_is_accepted_checked_masked_and_delivered(local: Local) -> None:
    registry.register(ChatType())
    kind = registry.output_type("chat")
    assert kind is not None
    with pytest.raises(InvalidRequest, match=r"^settings\.url"):
        kind.check_settings({"url": "http://10.0.0.1/x"}, allow_private=False)
    partner = Partner()
    try:
        url = partner.url("/chat")
        out = local.runtime.catalog.create_output("chat", "chat room", {"url": url})
        assert registry.redacted(kind, out.settings) == {"url": "••••"}
        local.send(1, "gold")
        local.send(2, "gold")
        local.send(3, "gold")
        local.connect(out.id)
        runner = local.runner()
        try:
            drive(runner)
        finally:
            runner.close()
        assert [[c["text"] for c in r.changes] for r in partner.requests("/chat")] == [
            ["add 1", "add 2"],
            ["add 3"],
        ]
    finally:
        partner.close()
