"""The official mParticle Python SDK talks to Milepost unchanged (SPEC §3: wire compatibility)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import mparticle
import pytest
from mparticle.rest import ApiException
from tests.api.conftest import Api, now_ms

pytestmark = pytest.mark.api


def _config(api: Api, key: str, secret: str) -> mparticle.Configuration:
    config = mparticle.Configuration()
    config.api_key = key
    config.api_secret = secret
    config.host = f"{api.server.url}/v2"
    return config


@pytest.fixture(scope="module")
def sdk(api: Api) -> Iterator[mparticle.EventsApi]:
    client = mparticle.EventsApi(_config(api, api.input["key"], api.input["secret"]))
    yield client
    client.api_client.rest_client.pool_manager.clear()


def _consent(consented: bool, ts: int, opt_out: bool) -> mparticle.ConsentState:
    state = mparticle.ConsentState()
    state.gdpr = {
        "marketing": mparticle.GDPRConsentState(
            document="privacy-v2",
            consented=consented,
            timestamp_unixtime_ms=ts,
            location="https://shop.test/privacy",
        )
    }
    state.ccpa = {
        "data_sale_opt_out": mparticle.CCPAConsentState(consented=opt_out, timestamp_unixtime_ms=ts)
    }
    return state


def _purchase(transaction_id: str, total: float) -> mparticle.CommerceEvent:
    action = mparticle.ProductAction("purchase")
    action.transaction_id = transaction_id
    action.total_amount = total
    action.products = [
        mparticle.Product(
            id="sku-1", name="Trail shoe", brand="Acme", category="shoes", price=total - 5, quantity=1
        ),
        mparticle.Product(id="sku-2", name="Socks", price=5, quantity=1),
    ]
    event = mparticle.CommerceEvent(action)
    event.currency_code = "EUR"
    return event


def _full_batch(mpid: int, *, idfv: str) -> mparticle.Batch:
    batch = mparticle.Batch()
    batch.environment = "production"
    batch.mpid = mpid
    batch.source_request_id = str(uuid.uuid4())
    identities = mparticle.UserIdentities()
    identities.customerid = f"sdk-cust-{mpid}"
    identities.email = f"SDK.{mpid}@Example.com"
    identities.other = f"sdk-other-{mpid}"
    batch.user_identities = identities
    batch.user_attributes = {
        "plan": "premium",
        "age": 37,
        "newsletter": True,
        "interests": ["running", "hiking"],
    }
    device = mparticle.DeviceInformation()
    device.platform = "iOS"
    device.ios_idfv = idfv
    device.os_version = "17.2"
    device.device_model = "iPhone15,2"
    batch.device_info = device
    app = mparticle.ApplicationInformation()
    app.application_name = "Shop"
    app.application_version = "4.2.0"
    batch.application_info = app
    batch.consent_state = _consent(True, now_ms() - 60_000, opt_out=False)
    signup = mparticle.AppEvent(event_name="Signed Up", custom_event_type="navigation")
    signup.custom_attributes = {"source": "ad", "step": 3}
    screen = mparticle.ScreenViewEvent(screen_name="Checkout")
    batch.events = [mparticle.SessionStartEvent(), signup, screen, _purchase(f"tx-{mpid}", 129.5)]
    return batch


def test_upload_events_stores_a_full_batch(api: Api, sdk: mparticle.EventsApi) -> None:
    mpid = api.mpid()
    idfv = str(uuid.uuid4()).upper()
    before = now_ms()
    sdk.upload_events(_full_batch(mpid, idfv=idfv))
    after = now_ms()

    prof = api.profile(mpid)
    assert before <= prof["first_seen"] <= after
    assert prof["attributes"] == {
        "plan": "premium",
        "age": 37,
        "newsletter": True,
        "interests": ["running", "hiking"],
    }
    # The SDK spells the identity `customerid`; the profile knows it as `customer_id`.
    assert prof["identities"]["customer_id"] == f"sdk-cust-{mpid}"
    assert prof["identities"]["email"].lower() == f"sdk.{mpid}@example.com"
    assert prof["identities"]["other"] == f"sdk-other-{mpid}"
    assert prof["device_identities"] == [{"type": "ios_idfv", "value": idfv}]
    assert prof["event_counts"] == {"realtime": 4, "development": 0, "historical": 0}

    by_type = {e["event_type"]: e for e in prof["recent_events"]}
    assert set(by_type) == {"session_start", "custom_event", "screen_view", "commerce_event"}
    assert by_type["custom_event"]["name"] == "Signed Up"
    assert by_type["custom_event"]["data"]["custom_attributes"] == {"source": "ad", "step": 3}
    assert by_type["screen_view"]["name"] == "Checkout"
    purchase = by_type["commerce_event"]
    assert purchase["action"] == "purchase"
    assert purchase["data"]["product_action"]["transaction_id"] == f"tx-{mpid}"
    assert purchase["data"]["product_action"]["total_amount"] == 129.5
    assert [p["id"] for p in purchase["data"]["product_action"]["products"]] == ["sku-1", "sku-2"]

    gdpr = prof["consent"]["gdpr"]["marketing"]
    assert gdpr["consented"] is True and gdpr["document"] == "privacy-v2"
    assert prof["consent"]["ccpa"]["data_sale_opt_out"]["consented"] is False

    [device] = prof["devices"]
    assert device["device_ids"] == {"ios_idfv": idfv}
    assert (
        device["platform"] == "iOS"
        and device["os_version"] == "17.2"
        and device["device_model"] == "iPhone15,2"
    )
    assert device["app_version"] == "4.2.0"
    assert [i["id"] for i in prof["inputs"]] == [api.input["id"]]


def test_bulk_upload_events_stores_every_batch(api: Api, sdk: mparticle.EventsApi) -> None:
    mpids = [api.mpid() for _ in range(3)]
    batches = []
    for n, mpid in enumerate(mpids):
        batch = mparticle.Batch()
        batch.environment = "production"
        batch.mpid = mpid
        identities = mparticle.UserIdentities()
        identities.customerid = f"bulk-cust-{mpid}"
        batch.user_identities = identities
        batch.user_attributes = {"rank": n, "vip": n == 2}
        batch.events = [
            mparticle.AppEvent(event_name=f"Bulk {n}", custom_event_type="other"),
            _purchase(f"btx-{mpid}", 20.0 + n),
        ]
        batches.append(batch)
    sdk.bulk_upload_events(batches)

    for n, mpid in enumerate(mpids):
        prof = api.profile(mpid)
        assert prof["attributes"] == {"rank": n, "vip": n == 2}
        assert prof["identities"] == {"customer_id": f"bulk-cust-{mpid}"}
        assert prof["event_counts"]["realtime"] == 2
        names = {e["name"] for e in prof["recent_events"] if e["event_type"] == "custom_event"}
        assert names == {f"Bulk {n}"}
        actions = [e["action"] for e in prof["recent_events"] if e["event_type"] == "commerce_event"]
        assert actions == ["purchase"]


def test_batch_without_mpid_resolves_by_customerid(api: Api, sdk: mparticle.EventsApi) -> None:
    mpid = api.mpid()
    sdk.upload_events(_full_batch(mpid, idfv=str(uuid.uuid4())))
    batch = mparticle.Batch()
    batch.environment = "production"
    identities = mparticle.UserIdentities()
    identities.customerid = f"sdk-cust-{mpid}"
    batch.user_identities = identities
    batch.user_attributes = {"plan": "basic"}
    batch.deleted_user_attributes = ["age"]
    batch.events = [mparticle.AppEvent(event_name="Downgraded", custom_event_type="transaction")]
    sdk.bulk_upload_events([batch])

    prof = api.profile(mpid)
    assert prof["attributes"] == {"plan": "basic", "newsletter": True, "interests": ["running", "hiking"]}
    assert prof["event_counts"]["realtime"] == 5
    assert "Downgraded" in {e["name"] for e in prof["recent_events"]}


def test_consent_updates_from_the_sdk_keep_the_latest(api: Api, sdk: mparticle.EventsApi) -> None:
    mpid = api.mpid()
    t = now_ms() - 3_600_000
    for consented, ts in [(True, t + 2), (False, t + 1), (False, t + 3)]:
        batch = mparticle.Batch()
        batch.environment = "production"
        batch.mpid = mpid
        batch.consent_state = _consent(consented, ts, opt_out=consented)
        sdk.upload_events(batch)
    consent = api.profile(mpid)["consent"]
    assert consent["gdpr"]["marketing"]["consented"] is False
    assert consent["gdpr"]["marketing"]["timestamp_unixtime_ms"] == t + 3


def test_development_batches_from_the_sdk_are_kept_apart(api: Api, sdk: mparticle.EventsApi) -> None:
    mpid = api.mpid()
    batch = mparticle.Batch()
    batch.environment = "development"
    batch.mpid = mpid
    batch.user_attributes = {"tester": True}
    batch.events = [mparticle.AppEvent(event_name="Debug", custom_event_type="other")]
    sdk.upload_events(batch)
    prof = api.profile(mpid)
    assert prof["event_counts"] == {"realtime": 0, "development": 1, "historical": 0}
    assert prof["first_seen"] is None
    assert prof["attributes"] == {}


def test_the_sdk_receives_400_for_a_bad_batch(api: Api, sdk: mparticle.EventsApi) -> None:
    mpid = api.mpid()
    batch = mparticle.Batch()
    batch.environment = "production"
    batch.mpid = mpid
    # Seconds instead of milliseconds: refused.
    batch.events = [
        mparticle.AppEvent(
            event_name="Old", custom_event_type="other", timestamp_unixtime_ms=int(time.time())
        )
    ]
    with pytest.raises(ApiException) as info:
        sdk.upload_events(batch)
    assert info.value.status == 400
    body: Any = info.value.body
    text = body.decode() if isinstance(body, bytes) else str(body)
    errors = json.loads(text)["errors"]
    assert errors[0]["code"] == "BAD_REQUEST"
    assert errors[0]["message"].startswith("batch.events[0].data.timestamp_unixtime_ms")
    assert api.absent(mpid)


def test_the_sdk_receives_403_for_a_wrong_secret(api: Api) -> None:
    client = mparticle.EventsApi(_config(api, api.input["key"], "not-the-secret"))
    mpid = api.mpid()
    batch = mparticle.Batch()
    batch.environment = "production"
    batch.mpid = mpid
    batch.user_attributes = {"x": 1}
    with pytest.raises(ApiException) as info:
        client.upload_events(batch)
    assert info.value.status == 403
    assert api.absent(mpid)
