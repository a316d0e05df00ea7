"""Regenerate the UI screenshots in docs/screenshots/ (`make screenshots`).

Starts a real `milepost serve` on a temporary data directory with the demo data, builds a journey
with seven milestones (two remaining users splits) through the API, and photographs the journeys
list, that journey's canvas, the criteria builder with its live estimates, and the outputs page in
headless Chromium.

Usage: python scripts/screenshots.py [--users 1500] [--days 14] [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import Page, sync_playwright
from tests.ui.browser import CHROMIUM, CHROMIUM_ARGS, demo_server, sign_in, webhook_receiver

ROOT = Path(__file__).resolve().parents[1]
SIZED = "['estimate','too_small','actual','error'].includes"


def watched(times: int, days: int) -> dict[str, Any]:
    return {
        "type": "event",
        "event": {"event_type": "custom_event", "name": "watch_content"},
        "having": {"fn": "count", "op": "greater_or_equal", "value": times},
        "window": {"last": {"amount": days, "unit": "days"}},
    }


JOURNEY = {
    "name": "Trial to subscription",
    "inputs": ["ios", "android", "web_store"],
    "milestones": [
        {
            "name": "Engaged viewers",
            "criteria": {
                "all": [
                    watched(3, 14),
                    {
                        "type": "user_attribute",
                        "attribute": "country",
                        "op": "in",
                        "values": ["US", "GB", "DE"],
                    },
                    {"type": "identity", "identity": "email", "op": "exists"},
                ]
            },
            "children": [
                {
                    "name": "Email subscribers",
                    "criteria": {
                        "type": "user_attribute",
                        "attribute": "email_subscriber",
                        "op": "equals",
                        "value": True,
                    },
                    "children": [
                        {
                            "name": "Opened no email in 2 days",
                            "criteria": {
                                "not": {
                                    "type": "event",
                                    "event": {"event_type": "custom_event", "name": "open_email"},
                                    "window": {"last": {"amount": 2, "unit": "days"}},
                                }
                            },
                        }
                    ],
                },
                {
                    "name": "Binge watchers",
                    "criteria": watched(10, 7),
                },
                {"name": "Other engaged viewers", "remaining": True},
            ],
        },
        {
            "name": "Browsed the catalogue",
            "criteria": {
                "type": "event",
                "event": {"event_type": "custom_event", "name": "view_content"},
                "window": {"last": {"amount": 7, "unit": "days"}},
            },
        },
        {"name": "Everyone else", "remaining": True},
    ],
}


def wait_sizes(page: Page) -> None:
    page.wait_for_function(
        f"[...document.querySelectorAll('[data-size] [data-size-kind]')].every(e => {SIZED}(e.dataset.sizeKind))",
        timeout=60_000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, webhook_receiver() as (hook, _):
        print(f"loading demo data ({args.users} users)…", flush=True)
        with demo_server(Path(tmp) / "data", users=args.users, days=args.days) as (server, creds):
            api = httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {creds['admin_token']}"}, timeout=60
            )
            journey = api.post("/api/v1/journeys", json=JOURNEY)
            journey.raise_for_status()
            doc = journey.json()
            engaged = doc["milestones"][0]
            subscribers = engaged["children"][0]
            out = api.post(
                "/api/v1/outputs",
                json={
                    "type": "webhook",
                    "name": "Lifecycle webhook",
                    "settings": {"url": hook, "secret": "demo"},
                },
            )
            out.raise_for_status()
            api.post(
                f"/api/v1/audiences/{subscribers['children'][0]['audience']['id']}/connections",
                json={"output_id": out.json()["id"], "status": "active"},
            ).raise_for_status()

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
                sign_in(page, server.url, creds["admin_token"])
                page.screenshot(path=str(args.out / "journeys.png"))

                page.goto(f"{server.url}/journeys/{doc['id']}")
                wait_sizes(page)
                page.wait_for_timeout(300)
                page.screenshot(path=str(args.out / "canvas.png"))

                page.goto(f"{server.url}/milestones/{engaged['id']}/edit")
                page.wait_for_selector('[data-criterion-estimate="2"] [data-size-kind]', timeout=60_000)
                page.fill('[data-path="all[0].having.value"]', "4")
                page.wait_for_timeout(1200)
                page.screenshot(path=str(args.out / "criteria-builder.png"))

                page.goto(f"{server.url}/outputs")
                page.wait_for_function(
                    "[...document.querySelectorAll('[data-field=sent]')].every(e => e.textContent !== '…')",
                    timeout=60_000,
                )
                page.locator(".output", has_text="Lifecycle webhook").locator("[data-live]").click()
                page.wait_for_selector(".live-table, .live p", timeout=60_000)
                page.screenshot(path=str(args.out / "outputs.png"), full_page=False)
                browser.close()
    for name in ("journeys", "canvas", "criteria-builder", "outputs"):
        print(args.out / f"{name}.png")


if __name__ == "__main__":
    main()
