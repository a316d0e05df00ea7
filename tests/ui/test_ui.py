"""The real UI in headless Chromium: the whole journey flow, the criteria builder's errors, settings."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import Page, expect
from tests.support.server import Server
from tests.ui.browser import sign_in, webhook_receiver

TIMEOUT = 20_000
SIZE_SHOWN = "estimate,too_small,actual"


def _size_kind(page: Page, audience_id: int) -> str:
    return str(page.get_attribute(f'[data-size="{audience_id}"] [data-size-kind]', "data-size-kind"))


def _wait_sized(page: Page, audience_id: int) -> None:
    page.wait_for_function(
        "([a, kinds]) => kinds.split(',').includes(document.querySelector(`[data-size=\"${a}\"] [data-size-kind]`)?.dataset.sizeKind)",
        arg=[audience_id, SIZE_SHOWN],
        timeout=TIMEOUT,
    )


def _node(page: Page, name: str) -> Any:
    return page.locator(f'.node[data-name="{name}"]')


def _audience_of(page: Page, name: str) -> int:
    return int(_node(page, name).get_attribute("data-audience") or 0)


def _credits(api: httpx.Client) -> tuple[int, int]:
    s = api.get("/api/v1/settings").json()
    return s["activated"], s["audience_limit"]


def _criterion_estimate(page: Page) -> str:
    return page.inner_text('[data-criterion-estimate="0"] [data-size-kind]')


def test_build_activate_deactivate_and_delete_a_journey(ui_server: tuple[Server, dict], page: Page) -> None:
    server, creds = ui_server
    base = server.url
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {creds['admin_token']}"}, timeout=30)
    activated_before, limit = _credits(api)

    # sign in; the journeys list shows the credit counter under New journey
    sign_in(page, base, creds["admin_token"])
    expect(page.locator("#credit-counter")).to_contain_text(
        f"{activated_before} of {limit} audiences activated"
    )

    # create a journey over inputs of two workspaces
    page.click("#new-journey")
    page.fill("#journey-name", "UI flow")
    page.check('[data-workspace="Streaming"] input[data-input-name="ios"]')
    page.check('[data-workspace="Retail"] input[data-input-name="web_store"]')
    page.click("#new-journey-form button[type=submit]")
    page.wait_for_url(re.compile(r"/journeys/\d+$"))
    journey_id = int(page.url.rsplit("/", 1)[1])
    assert api.get(f"/api/v1/journeys/{journey_id}").json()["inputs"] == ["ios", "web_store"]
    root = page.locator('[data-size="root"] [data-size-kind]')
    expect(root).to_have_attribute("data-size-kind", re.compile("estimate|actual"), timeout=TIMEOUT)

    # first milestone, under the inputs: watched content at least once in the last 30 days
    page.click('[data-action="add-top"]')
    page.wait_for_url(re.compile(r"/milestones/new"))
    page.fill("#milestone-name", "Watchers")
    page.select_option('[data-add-criterion="top"]', "event")
    page.fill('[data-path="all[0].event.name"]', "watch_content")
    total = page.locator('[data-estimate="total"] [data-size-kind]')
    expect(total).to_have_attribute("data-size-kind", re.compile("estimate|too_small"), timeout=TIMEOUT)
    expect(page.locator('[data-criterion-estimate="0"] [data-size-kind]')).to_be_visible(timeout=TIMEOUT)
    page.click("#save-milestone")
    page.wait_for_url(f"{base}/journeys/{journey_id}")
    watchers = _audience_of(page, "Watchers")

    # second milestone, below the first, through the + under its audience
    _node(page, "Watchers").locator("xpath=..").locator('[data-action="plus"]').click()
    page.click('[data-menu="add-milestone"]')
    page.wait_for_url(re.compile(r"/milestones/new\?parent_id="))
    page.fill("#milestone-name", "Has a plan")
    page.select_option('[data-add-criterion="top"]', "user_attribute")
    page.fill('[data-path="all[0].attribute"]', "plan")
    expect(total).to_have_attribute("data-size-kind", re.compile("estimate|too_small"), timeout=TIMEOUT)
    page.click("#save-milestone")
    page.wait_for_url(f"{base}/journeys/{journey_id}")
    planners = _audience_of(page, "Has a plan")

    # a remaining users split beside the first milestone, through the split control above it
    page.click(".split[data-for]:visible")
    page.click('[data-menu="add-remaining"]')
    page.fill('[data-field="split-name"]', "Everyone else")
    page.click("#dialog [data-confirm]")
    expect(_node(page, "Everyone else")).to_be_visible(timeout=TIMEOUT)
    rest = _audience_of(page, "Everyone else")

    # estimates stream in on every audience, with the drop-off from the parent
    for audience in (watchers, planners, rest):
        _wait_sized(page, audience)
    expect(page.locator(f'[data-dropoff="{watchers}"]')).to_have_text(re.compile(r"↓ \d+%"))

    # edit a criterion: its estimate follows the edit
    _node(page, "Watchers").locator('[data-action="edit"]').click()
    page.wait_for_url(re.compile(r"/milestones/\d+/edit"))
    crit = page.locator('[data-criterion-estimate="0"] [data-size-kind]')
    expect(crit).to_be_visible(timeout=TIMEOUT)
    before = _criterion_estimate(page)
    page.select_option('[data-path="all[0].having.op"]', "greater_or_equal")
    page.fill('[data-path="all[0].having.value"]', "4")
    expect(crit).not_to_have_text(before, timeout=TIMEOUT)
    page.click("#save-milestone")
    page.wait_for_url(f"{base}/journeys/{journey_id}")
    saved = api.get(f"/api/v1/audiences/{watchers}").json()
    milestone = api.get(f"/api/v1/milestones/{saved['milestone_id']}").json()
    assert milestone["criteria"]["all"][0]["having"] == {"fn": "count", "op": "greater_or_equal", "value": 4}

    with webhook_receiver() as (hook_url, _bodies):
        # a webhook output, created on the outputs page
        page.goto(f"{base}/outputs")
        page.click("#new-output")
        page.select_option('#dialog select[name="type"]', "webhook")
        page.fill('#dialog input[name="name"]', "UI webhook")
        page.fill('#dialog textarea[name="settings"]', f'{{"url": "{hook_url}", "secret": "s3cret"}}')
        page.click("#dialog [data-confirm]")
        expect(page.locator(".output", has_text="UI webhook")).to_be_visible(timeout=TIMEOUT)

        # connect it under the second milestone: it becomes ACTIVATED, its parent Calculating then exact
        page.goto(f"{base}/journeys/{journey_id}")
        _wait_sized(page, watchers)
        page.evaluate(
            """(a) => {
                window.__kinds = [];
                const record = () => {
                    const k = document.querySelector(`[data-size="${a}"] [data-size-kind]`)?.dataset.sizeKind;
                    if (k && window.__kinds[window.__kinds.length - 1] !== k) window.__kinds.push(k);
                };
                new MutationObserver(record).observe(document.getElementById('viewport'), {subtree: true, childList: true, attributes: true});
            }""",
            watchers,
        )
        _node(page, "Has a plan").locator("xpath=..").locator('[data-action="plus"]').click()
        page.click('[data-menu="connect"]')
        page.select_option('#dialog select[name="output_id"]', label="UI webhook (webhook)")
        page.click("#dialog [data-confirm]")
        expect(_node(page, "Has a plan").locator('[data-badge="activated"]')).to_have_text(
            "ACTIVATED", timeout=TIMEOUT
        )
        expect(_node(page, "Watchers").locator('[data-badge="calculated"]')).to_be_visible()
        page.wait_for_function(
            "(a) => window.__kinds.includes('calculating') && window.__kinds[window.__kinds.length - 1] === 'actual'",
            arg=watchers,
            timeout=TIMEOUT,
        )
        exact = page.inner_text(f'[data-size="{watchers}"]')
        assert re.fullmatch(r"[\d,]+", exact.strip()), exact
        assert int(exact.replace(",", "")) == api.get(f"/api/v1/audiences/{watchers}").json()["size"]["value"]

        # the credit counter counts it
        page.goto(f"{base}/journeys")
        expect(page.locator("#credit-counter")).to_contain_text(
            f"{activated_before + 1} of {limit} audiences activated"
        )
        row = page.locator(f'tr[data-journey="{journey_id}"]')
        expect(row.locator('[data-col="activated"]')).to_have_text("1")

        # deactivate: the out-of-sync warning, then the badge goes and the credit comes back
        page.goto(f"{base}/journeys/{journey_id}")
        _node(page, "Has a plan").locator("[data-connection]").click()
        page.click('[data-menu="deactivate"]')
        expect(page.locator('#dialog [data-warning="out-of-sync"]')).to_contain_text("out of sync")
        page.click("#dialog [data-confirm]")
        expect(_node(page, "Has a plan").locator('[data-badge="activated"]')).to_have_count(
            0, timeout=TIMEOUT
        )
        assert _credits(api)[0] == activated_before

    # delete milestones last to first; a milestone with something below it explains why it cannot go
    blocked = _node(page, "Watchers").locator('[data-action="delete"]')
    expect(blocked).to_have_attribute("aria-disabled", "true")
    expect(blocked).to_have_attribute("title", re.compile("Has a plan"))
    for name in ("Everyone else", "Has a plan", "Watchers"):
        _node(page, name).locator('[data-action="delete"]').click()
        page.click("#dialog [data-confirm]")
        expect(_node(page, name)).to_have_count(0, timeout=TIMEOUT)
    assert api.get(f"/api/v1/journeys/{journey_id}").json()["milestones"] == []

    # and then the journey, from the list
    page.goto(f"{base}/journeys")
    page.click(f'[data-delete-journey="{journey_id}"]')
    page.click("#dialog [data-confirm]")
    expect(page.locator(f'tr[data-journey="{journey_id}"]')).to_have_count(0)
    assert api.get(f"/api/v1/journeys/{journey_id}").status_code == 404


def test_the_builder_shows_a_refused_criterion_on_its_field(
    ui_server: tuple[Server, dict], page: Page
) -> None:
    server, creds = ui_server
    sign_in(page, server.url, creds["admin_token"])
    journey = page.locator("#journeys tbody tr").first.get_attribute("data-journey")
    page.goto(f"{server.url}/journeys/{journey}/milestones/new")
    page.select_option('[data-add-criterion="top"]', "user_attribute")
    page.fill('[data-path="all[0].attribute"]', "country")
    page.select_option('[data-path="all[0].op"]', "matches")
    page.fill('[data-path="all[0].value"]', "(?=US)")
    field = page.locator('[data-path="all[0].value"]')
    expect(field).to_have_attribute("aria-invalid", "true", timeout=TIMEOUT)
    expect(page.locator('[data-error-path="all[0].value"]')).to_contain_text("regular expression")
    # fixing it clears the error and the estimate comes back
    page.fill('[data-path="all[0].value"]', "^U")
    expect(field).not_to_have_attribute("aria-invalid", "true", timeout=TIMEOUT)
    expect(page.locator('[data-criterion-estimate="0"] [data-size-kind]')).to_be_visible(timeout=TIMEOUT)


def test_a_new_input_shows_its_secret_once(ui_server: tuple[Server, dict], page: Page) -> None:
    server, creds = ui_server
    sign_in(page, server.url, creds["admin_token"])
    page.goto(f"{server.url}/settings")
    page.locator('[data-new-input][data-workspace-name="Retail"]').click()
    page.fill('#dialog input[name="name"]', "pos_terminals")
    page.select_option('#dialog select[name="platform"]', "server")
    page.click("#dialog [data-confirm]")
    key = page.locator("[data-input-key]").inner_text(timeout=TIMEOUT)
    secret = page.locator("[data-input-secret]").inner_text()
    assert key and secret
    page.click("#dialog [data-confirm]")
    page.wait_for_load_state()
    expect(page.locator("tr[data-input]", has_text="pos_terminals")).to_contain_text(key)
    assert secret not in page.content()
    # the pair works on the Events API
    resp = httpx.post(
        f"{server.url}/v2/events",
        auth=(key, secret),
        json={"mpid": 4242, "events": [{"event_type": "session_start", "data": {}}]},
    )
    assert resp.status_code == 202, resp.text


def _tree(depth: int, fanout: int, prefix: str = "") -> list[dict[str, Any]]:
    if depth == 0:
        return []
    out: list[dict[str, Any]] = [
        {
            "name": f"Step {prefix}{i + 1}",
            "criteria": {
                "type": "user_attribute",
                "attribute": "tenure_days",
                "op": "greater_than",
                "value": i * 10,
            },
            "children": _tree(depth - 1, fanout, f"{prefix}{i + 1}."),
        }
        for i in range(fanout)
    ]
    out.append({"name": f"Rest {prefix or 'top'}", "remaining": True})
    return out


def test_a_large_journey_is_laid_out_without_overlaps(ui_server: tuple[Server, dict], page: Page) -> None:
    server, creds = ui_server
    api = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {creds['admin_token']}"}, timeout=60
    )
    doc = {"name": "Wide and deep", "inputs": ["ios", "web_store"], "milestones": _tree(4, 2)}
    created = api.post("/api/v1/journeys", json=doc)
    assert created.status_code == 201, created.text
    sign_in(page, server.url, creds["admin_token"])
    page.goto(f"{server.url}/journeys/{created.json()['id']}")
    nodes = page.locator(".node[data-node]")
    expect(nodes).to_have_count(45)  # 2 + 4 + 8 + 16 milestones and 15 remaining users splits
    boxes = [nodes.nth(i).bounding_box() for i in range(45)]
    assert all(b is not None and b["width"] > 0 for b in boxes)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a and b
            apart = (
                a["x"] + a["width"] <= b["x"]
                or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"]
                or b["y"] + b["height"] <= a["y"]
            )
            assert apart, (a, b)
    # Fit shows the whole journey at first; zooming in enlarges it
    canvas = page.locator("#canvas").bounding_box()
    assert canvas
    assert all(
        b and canvas["x"] <= b["x"] and b["x"] + b["width"] <= canvas["x"] + canvas["width"] for b in boxes
    )
    before = nodes.first.bounding_box()
    page.click('[data-zoom="in"]')
    after = nodes.first.bounding_box()
    assert before and after and after["width"] > before["width"]


def test_pickers_offer_what_the_journeys_inputs_received(ui_server: tuple[Server, dict], page: Page) -> None:
    server, creds = ui_server
    api = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {creds['admin_token']}"}, timeout=60
    )
    streaming = api.post(
        "/api/v1/journeys", json={"name": "Streaming only", "inputs": ["ios", "android"]}
    ).json()
    retail = api.post("/api/v1/journeys", json={"name": "Retail only", "inputs": ["server"]}).json()
    words = api.get(f"/api/v1/journeys/{streaming['id']}/vocabulary").json()
    names = {(e["event_type"], e["name"]) for e in words["events"]}
    assert ("custom_event", "watch_content") in names
    assert "plan" in words["user_attributes"]
    assert "email" in words["identities"]
    assert {"regulation": "gdpr", "purpose": "marketing"} in words["consent_purposes"]
    assert {a["journey"] for a in words["audiences"]} >= {"Churn prevention"}
    # events only count on the journey's own inputs: the retail server feed sends no streaming events
    other = api.get(f"/api/v1/journeys/{retail['id']}/vocabulary").json()
    assert ("custom_event", "watch_content") not in {(e["event_type"], e["name"]) for e in other["events"]}
    assert api.get("/api/v1/journeys/999999/vocabulary").status_code == 404

    sign_in(page, server.url, creds["admin_token"])
    page.goto(f"{server.url}/journeys/{streaming['id']}/milestones/new")
    expect(page.locator('#dl-events option[value="watch_content"]')).to_have_count(1, timeout=TIMEOUT)
    expect(page.locator('#dl-user-attrs option[value="plan"]')).to_have_count(1)
