"""Change records, ids, the webhook and file outputs, the network rule and the registry."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from milepost.catalog.output_records import ConnectionRecord, OutputRecord
from milepost.clock import ManualClock
from milepost.errors import InvalidRequest
from milepost.outputs import registry
from milepost.outputs.file import FILE, FileOutput
from milepost.outputs.network import UrlRefused, check_url, private_outputs_allowed
from milepost.outputs.records import (
    Change,
    Identities,
    change_record,
    idempotency_key,
    outbox_change_id,
    sync_change_id,
)
from milepost.outputs.registry import OutputContext
from milepost.outputs.webhook import WEBHOOK, WebhookOutput, signature, verify

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000


def _output(kind: str, settings: dict, **kw: object) -> OutputRecord:
    return OutputRecord(
        id=7,
        type=kind,
        name="o",
        settings=settings,
        accepted_identities=kw.get("accepted_identities"),  # type: ignore[arg-type]
        hashing=kw.get("hashing"),  # type: ignore[arg-type]
        created_at=0,
        updated_at=0,
    )


def _connection(settings: dict | None = None) -> ConnectionRecord:
    return ConnectionRecord(3, 11, 7, "o", "webhook", "active", settings or {}, "keep", "ok", 0, 0)


def _record(mpid: int = 5, action: str = "add", seq: int = 42) -> dict:
    ids = Identities({"email": "A@x.io", "customer_id": "c1"}, (("ios_advertising_id", "idfa"),))
    change = Change(outbox_change_id(seq), 11, mpid, action, T0, seq)
    return change_record(change, "gold", "J – gold", ids)


def test_record_shape_and_stable_ids() -> None:
    r = _record()
    assert r == {
        "id": "c42",
        "audience_id": 11,
        "audience_name": "gold",
        "external_name": "J – gold",
        "mpid": 5,
        "action": "add",
        "identities": {"email": "A@x.io", "customer_id": "c1"},
        "device_identities": [{"type": "ios_advertising_id", "value": "idfa"}],
        "timestamp_ms": T0,
    }
    assert outbox_change_id(42) == _record(seq=42)["id"]
    assert sync_change_id("s", 3, 2, 5) == "s3-2-5" != sync_change_id("s", 3, 3, 5)
    key = idempotency_key(["c1", "c2"])
    assert key == idempotency_key(["c1", "c2"]) and key != idempotency_key(["c2", "c1"])


def test_identities_filtered_and_hashed() -> None:
    ids = Identities({"email": " A@x.io ", "customer_id": "c1"}, (("ios_advertising_id", "idfa"),))
    assert ids.only(None, None) == ids
    only = ids.only(["email"], "sha256")
    assert only.user == {"email": hashlib.sha256(b"a@x.io").hexdigest()} and only.devices == ()
    assert not ids.only(["mobile_number"], None)
    assert ids.only(["ios_advertising_id"], "md5").devices == (
        ("ios_advertising_id", hashlib.md5(b"idfa").hexdigest()),
    )


def test_signature_verifies_and_expires() -> None:
    body = b'{"output_id":1,"changes":[]}'
    header = signature("s3cret", 1_700_000_000, body)
    t, v1 = header.split(",")
    assert t == "t=1700000000" and len(v1) == len("v1=") + 64
    assert verify("s3cret", header, body, 1_700_000_100)
    assert not verify("s3cret", header, body + b" ", 1_700_000_100)
    assert not verify("other", header, body, 1_700_000_100)
    assert not verify("s3cret", header, body, 1_700_000_000 + 301)  # older than 5 minutes


def test_webhook_posts_signed_batches() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(429, headers={"Retry-After": "3"})

    clock = ManualClock(T0)
    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        ctx = OutputContext(http, clock, allow_private=False)
        out = WEBHOOK.open(
            _output("webhook", {"url": "https://93.184.215.14/hook", "secret": "k", "batch_size": 50}),
            _connection({"batch_size": 10}),
            ctx,
        )
        assert out.batch_size == 10
        attempt = out.send([_record()], "key-1")
    assert attempt.status == 429 and attempt.retry_after == "3"
    (req,) = seen
    assert req.headers["Idempotency-Key"] == "key-1"
    assert verify("k", req.headers["X-Milepost-Signature"], req.content, T0 // 1000)
    assert json.loads(req.content) == {"output_id": 7, "changes": [_record()]}


def test_webhook_timeouts_and_private_addresses() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    clock = ManualClock(T0)
    with httpx.Client(transport=httpx.MockTransport(hang)) as http:
        public = WEBHOOK.open(
            _output("webhook", {"url": "http://93.184.215.14/", "secret": "k"}),
            _connection(),
            OutputContext(http, clock, False),
        )
        assert public.send([_record()], "k").timed_out
        with pytest.raises(InvalidRequest, match="private"):
            WEBHOOK.open(
                _output("webhook", {"url": "http://127.0.0.1:9/", "secret": "k"}),
                _connection(),
                OutputContext(http, clock, False),
            )
        # checked again before each request (a name may come to resolve to a private address)
        sender = WebhookOutput(7, "http://10.0.0.8/", "k", 10, 1.0, http, clock, allow_private=False)
        refused = sender.send([_record()], "k")
        assert refused.refused and "private" in refused.error
    with pytest.raises(InvalidRequest):
        WEBHOOK.check_settings({"url": "ftp://x", "secret": "k"}, allow_private=True)
    with pytest.raises(InvalidRequest):
        WEBHOOK.check_settings({"url": "https://example.com"}, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://0.0.0.0/",
        "http://localhost:8080/",
        "http://api.localhost/",
    ],
)
def test_private_urls_refused_unless_allowed(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url(url, allow_private=False)
    assert check_url(url, allow_private=True) == url


def test_public_urls_allowed_and_operator_switch() -> None:
    assert check_url("https://93.184.215.14/hook", allow_private=False)
    assert check_url("https://hooks.example.com/x", allow_private=False, resolve=False)
    with pytest.raises(UrlRefused):
        check_url("not a url", allow_private=True)
    assert private_outputs_allowed({"MILEPOST_ALLOW_PRIVATE_OUTPUTS": "1"})
    assert not private_outputs_allowed({})


def test_file_output_appends_lines_and_rotates(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with httpx.Client() as http:
        ctx = OutputContext(http, clock, False)
        out = FILE.open(
            _output("file", {"directory": str(tmp_path / "d"), "max_bytes": 2048}), _connection(), ctx
        )
    assert isinstance(out, FileOutput)
    for i in range(30):
        assert out.send([_record(mpid=i, action="add" if i % 2 else "remove")], "k").ok
        clock.advance(1)
    files = sorted((tmp_path / "d").iterdir())
    assert len(files) > 1 and all(f.stat().st_size <= 2048 for f in files)
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(x["mpid"] for x in lines) == list(range(30))
    first = next(x for x in lines if x["mpid"] == 1)
    assert first["is_member"] is True and first["audience_id"] == 11 and first["audience_name"] == "gold"
    assert first["identities"] == {"email": "A@x.io", "customer_id": "c1"} and first["timestamp"] == T0
    with pytest.raises(InvalidRequest):
        FILE.check_settings({"directory": "relative/dir"}, allow_private=False)


def test_file_output_syncs_concurrent_batches_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches sent at once share syncs, and none counts as sent before a sync covering its line."""
    import os
    import threading
    import time

    from milepost.outputs import file as file_module

    synced_sizes: list[int] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        size = os.fstat(fd).st_size  # what this sync covers: the file as it is when the sync begins
        time.sleep(0.05)
        real_fsync(fd)
        synced_sizes.append(size)

    monkeypatch.setattr(file_module.os, "fsync", slow_fsync)
    clock = ManualClock(T0)
    with httpx.Client() as http:
        ctx = OutputContext(http, clock, False)
        outs = [
            FILE.open(_output("file", {"directory": str(tmp_path / "d")}), _connection(), ctx)
            for _ in range(8)
        ]
    uncovered: list[int] = []

    def send(i: int) -> None:
        assert outs[i].send([_record(mpid=i)], f"k{i}").ok
        path = outs[i].path
        data = path.read_bytes()
        end = next(
            at + len(line) + 1
            for at, line in ((data.index(line), line) for line in data.splitlines())
            if json.loads(line)["mpid"] == i
        )
        if max(synced_sizes, default=0) < end:
            uncovered.append(i)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(line) for line in outs[0].path.read_text().splitlines()]
    assert sorted(x["mpid"] for x in lines) == list(range(8))
    assert uncovered == []
    assert 1 <= len(synced_sizes) < 8


def test_builtins_come_through_the_registry() -> None:
    types = registry.output_types()
    assert types["webhook"] is WEBHOOK and types["file"] is FILE
    assert registry.output_type("carrier-pigeon") is None
