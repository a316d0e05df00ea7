"""Web UI responsiveness (issue 7): time to interactive of every page, and estimates streaming in.

A real `milepost serve` (its clock fixed at the population's T0) over a store bulk-loaded with
tests/estimator/population.py (default 1,000,000 users, ~5 events each), a 30-milestone journey
over its two inputs, driven by headless Chromium (the system's package).

Per page, over `--reps` loads (median and worst):
  - server: navigation start to the end of the HTML response;
  - interactive: navigation start to DOMContentLoaded's end (the page's module scripts have run
    and attached their handlers; the UI renders no estimate on the server, so nothing waits for one).
Each load starts once the previous one's estimate requests are answered (network idle).
On the canvas, also: when the first and the last of its 30 audience sizes appeared (they come
from one request for the journey's document, the inputs' size from another, side by side), the
longest main-thread stall (gap between animation frames) until then, and how fast a click on a
button answered while the sizes were still on their way. In the editor: from a keystroke to the
updated estimate (includes the 300 ms debounce).

Usage: python benchmarks/ui.py [--users 1000000] [--reps 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import Page, sync_playwright
from tests.estimator.population import T0, load_population
from tests.support.server import Server, free_port, init_data_dir
from tests.ui.browser import CHROMIUM, CHROMIUM_ARGS, sign_in

from milepost.engines.duckdb import DuckDBStore

ROOT = Path(__file__).resolve().parents[1]
TARGET_MS = 300.0
SIZED = ["estimate", "too_small", "actual", "error"]

# Recorded in every page from its first script on: when each audience size appeared, frame gaps.
RECORDER = """
window.__ui = {sizes: {}, maxGap: 0, frames: 0};
(() => {
  const sized = SIZED_KINDS;
  let last = performance.now();
  const frame = (t) => { window.__ui.maxGap = Math.max(window.__ui.maxGap, t - last); last = t; window.__ui.frames++; requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
  new MutationObserver(() => {
    for (const e of document.querySelectorAll('[data-size] [data-size-kind]')) {
      const id = e.closest('[data-size]').dataset.size;
      if (sized.includes(e.dataset.sizeKind) && !(id in window.__ui.sizes)) window.__ui.sizes[id] = performance.now();
    }
  }).observe(document, {subtree: true, childList: true});
})();
""".replace("SIZED_KINDS", str(SIZED))


def criteria(i: int) -> dict[str, Any]:
    """Varied criteria, so the estimates are not all alike."""
    kinds: list[dict[str, Any]] = [
        {"type": "user_attribute", "attribute": "tier", "op": "equals", "value": "gold"},
        {
            "type": "event",
            "event": {"event_type": "custom_event", "name": "watch"},
            "having": {"fn": "count", "op": "greater_or_equal", "value": 1 + i % 3},
            "window": {"last": {"amount": 30, "unit": "days"}},
        },
        {"type": "user_attribute", "attribute": "country", "op": "in", "values": ["US", "GB", "DE"]},
        {"type": "user_attribute", "attribute": "score", "op": "greater_than", "value": 100 * (i % 9)},
        {
            "type": "event",
            "event": {"event_type": "commerce_event", "action": "purchase"},
            "having": {"fn": "sum", "attribute": "total_amount", "op": "greater_than", "value": 50},
        },
        {"type": "user_attribute", "attribute": "newsletter", "op": "equals", "value": True},
    ]
    return kinds[i % len(kinds)]


def journey_document() -> dict[str, Any]:
    """30 milestones: 4 paths of 1 + 5 or 6 children and a remaining users split each, and a top-level split."""
    n = 0
    milestones: list[dict[str, Any]] = []
    for p in range(4):
        children: list[dict[str, Any]] = []
        for c in range(6 if p == 0 else 5):
            n += 1
            children.append({"name": f"Step {p + 1}.{c + 1}", "criteria": criteria(n)})
        children.append({"name": f"Rest of path {p + 1}", "remaining": True})
        n += 1
        milestones.append({"name": f"Path {p + 1}", "criteria": criteria(n + p), "children": children})
    milestones.append({"name": "Everyone else", "remaining": True})
    return {"name": "Thirty milestones", "inputs": [1, 2], "milestones": milestones}


def count(doc: list[dict[str, Any]]) -> int:
    return sum(1 + count(m.get("children", [])) for m in doc)


def timing(page: Page) -> dict[str, float]:
    return page.evaluate(
        """() => { const n = performance.getEntriesByType('navigation')[0];
        return {server: n.responseEnd - n.startTime, interactive: n.domContentLoadedEventEnd - n.startTime}; }"""
    )


def measure_page(page: Page, url: str, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"server": [], "interactive": []}
    for _ in range(reps):
        page.goto(url, wait_until="domcontentloaded")
        t = timing(page)
        out["server"].append(t["server"])
        out["interactive"].append(t["interactive"])
        page.wait_for_load_state(
            "networkidle", timeout=300_000
        )  # its estimates done: the next load starts quiet
    return out


def canvas_stream(page: Page, url: str, audiences: int) -> dict[str, float]:
    page.goto(url, wait_until="domcontentloaded")
    interactive = timing(page)["interactive"]
    # a click as soon as the page is interactive, before the sizes are in: it answers at once
    click = page.evaluate(
        """() => new Promise((resolve) => {
            const b = document.querySelector('[data-zoom="in"]');
            const pending = document.querySelectorAll('[data-size] .size-none').length;
            const t0 = performance.now();
            b.addEventListener('click', () => resolve({ms: performance.now() - t0, pending}), {once: true});
            b.click();
        })"""
    )
    page.wait_for_function(
        f"Object.keys(window.__ui.sizes).filter(k => k !== 'root').length >= {audiences}", timeout=300_000
    )
    ui = page.evaluate("window.__ui")
    times = sorted(v for k, v in ui["sizes"].items() if k != "root")
    return {
        "interactive": interactive,
        "first_size": times[0],
        "all_sizes": times[-1],
        "root_size": ui["sizes"].get("root", float("nan")),
        "max_frame_gap": ui["maxGap"],
        "click_ms": click["ms"],
        "sizes_pending_at_click": click["pending"],
    }


def editor_keystroke(page: Page, url: str) -> float:
    page.goto(url)
    page.wait_for_selector('[data-estimate="total"] [data-size-kind]', timeout=120_000)
    before = page.inner_text('[data-estimate="total"]')
    box = page.locator('[data-path="all[0].value"], [data-path="all[0].having.value"]').first
    t0 = time.perf_counter()
    box.fill("7")
    page.wait_for_function(
        "(b) => document.querySelector('[data-estimate=\"total\"]').innerText !== b && !document.getElementById('estimate-panel').classList.contains('updating')",
        arg=before,
        timeout=120_000,
    )
    return (time.perf_counter() - t0) * 1000


def fmt_row(name: str, values: dict[str, list[float]]) -> str:
    med = statistics.median(values["interactive"])
    worst = max(values["interactive"])
    return (
        f"| {name} | {statistics.median(values['server']):.0f} | {med:.0f} | {worst:.0f} | "
        f"{'yes' if worst <= TARGET_MS else 'no'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=float, default=5.0, help="mean events per user")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="50,000 users and 3 loads per page")
    args = parser.parse_args()
    if args.quick:
        args.users, args.reps = 50_000, 3
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        env = {"MILEPOST_FAKE_CLOCK": str(T0)}
        creds = init_data_dir(data_dir, env)
        t = time.perf_counter()
        store = DuckDBStore(data_dir / "store")
        con = store.connect()
        for first in range(0, args.users, 1_000_000):
            load_population(con, min(1_000_000, args.users - first), events_per_user=args.events, first=first)
        events = int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])
        con.close()
        store.close()
        print(
            f"{args.users:,} users, {events:,} events loaded in {time.perf_counter() - t:.0f} s", flush=True
        )

        server = Server(data_dir, free_port(), env)
        server.start(timeout=300)
        try:
            api = httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {creds['admin_token']}"}, timeout=600
            )
            api.post(
                "/api/v1/inputs", json={"workspace": "Default", "name": "ios", "platform": "ios"}
            ).raise_for_status()
            document = journey_document()
            created = api.post("/api/v1/journeys", json=document)
            created.raise_for_status()
            journey = created.json()
            n = count(document["milestones"])
            first = journey["milestones"][0]
            t = time.perf_counter()
            api.get(f"/api/v1/journeys/{journey['id']}").raise_for_status()  # builds the estimator's sample
            print(f"journey of {n} milestones; first estimate of all of them {time.perf_counter() - t:.1f} s")

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                context.add_init_script(RECORDER)
                page = context.new_page()
                sign_in(page, server.url, creds["admin_token"])
                pages = {
                    "journeys list": "/journeys",
                    "new journey": "/journeys/new",
                    f"canvas ({n} milestones)": f"/journeys/{journey['id']}",
                    "milestone editor": f"/milestones/{first['id']}/edit",
                    "outputs": "/outputs",
                    "settings": "/settings",
                }
                results = {
                    name: measure_page(page, server.url + path, args.reps) for name, path in pages.items()
                }
                stream = canvas_stream(page, f"{server.url}/journeys/{journey['id']}", n)
                keystroke = editor_keystroke(page, f"{server.url}/milestones/{first['id']}/edit")
                browser.close()
        finally:
            server.stop()

    load = os.getloadavg()
    print(
        f"\n{args.users:,} users, {events:,} events, {args.reps} loads per page; load average {load[0]:.1f}"
    )
    print(
        f"\n| page | server ms (median) | interactive ms (median) | interactive ms (worst) | ≤ {TARGET_MS:.0f} ms |"
    )
    print("|---|---:|---:|---:|---|")
    for name, values in results.items():
        print(fmt_row(name, values))
    print(
        f"\nCanvas estimates: interactive at {stream['interactive']:.0f} ms; first audience size at "
        f"{stream['first_size']:.0f} ms, all {n} at {stream['all_sizes']:.0f} ms, the inputs' size at "
        f"{stream['root_size']:.0f} ms after navigation start; longest frame gap from navigation to the "
        f"last size {stream['max_frame_gap']:.0f} ms; a click once interactive answered in "
        f"{stream['click_ms']:.1f} ms with {stream['sizes_pending_at_click']} of {n + 1} sizes still pending."
    )
    print(
        f"Milestone editor: keystroke to updated estimate {keystroke:.0f} ms (includes the 300 ms debounce)."
    )
    print(
        f"git {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=ROOT).stdout.strip()}"
    )


if __name__ == "__main__":
    main()
