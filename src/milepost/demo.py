"""`milepost demo`: the demo account's workspaces and inputs, filled with synthetic data."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import orjson

from milepost.config import Config
from milepost.errors import MilepostError, NotFound
from milepost.runtime import Runtime

DEMO_MARKER = "demo-loaded"
DEMO_SEED = 7
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
# The outputs the example journeys connect to: `file` outputs writing under the data directory.
DEMO_OUTPUTS = {
    "Email platform": "email",
    "SMS provider": "sms",
    "Paid media": "paid-media",
    "On-site coupons": "on-site-coupons",
    "Referral program": "referral",
    "Cross-sell": "cross-sell",
}


def load_demo(config: Config, *, users: int, days: int = 30) -> str:
    """Create the demo layout and ingest its synthetic batches once; return a summary line."""
    from milepost.synthetic import demo_layout, generate

    runtime = Runtime.open(config)
    runtime.start()
    try:
        if (config.data_dir / DEMO_MARKER).exists():
            return "demo data already loaded\n" + example_journeys(runtime, only_new=True)
        credentials: list[str] = []
        input_ids: dict[str, int] = {}
        for ws_plan in demo_layout():
            try:
                ws = runtime.catalog.get_workspace(ws_plan.name)
            except NotFound:
                ws = runtime.catalog.create_workspace(ws_plan.name)
            for ip in ws_plan.inputs:
                try:
                    inp = runtime.catalog.get_input(ip.name)
                except NotFound:
                    inp, secret = runtime.catalog.create_input(ws.id, ip.name, ip.platform)
                    credentials.append(f"  {ws.name}/{inp.name}: key {inp.key} secret {secret}")
                input_ids[ip.name] = inp.id
        pending: dict[str, list[bytes]] = defaultdict(list)
        loop = asyncio.new_event_loop()
        now = runtime.clock.now_ms()
        sent = 0

        def flush(name: str) -> None:
            body = b"[" + b",".join(pending[name]) + b"]"
            loop.run_until_complete(
                runtime.ingest.accept_for_input(input_ids[name], body, "bulkevents", runtime.clock.now_ms())
            )
            pending[name].clear()

        for input_name, batch in generate(seed=DEMO_SEED, users=users, days=days, end_ms=now):
            pending[input_name].append(orjson.dumps(batch))
            sent += 1
            if len(pending[input_name]) >= 50:
                flush(input_name)
        for name in list(pending):
            if pending[name]:
                flush(name)
        loop.close()
        (config.data_dir / DEMO_MARKER).write_text(str(sent))
        stats = runtime.store.stats()
        journeys = example_journeys(runtime, only_new=False)
    finally:
        runtime.close()
    lines = [f"demo data: {sent} batches, {stats['users']} users, {stats['events']} events"]
    if credentials:
        lines.append("demo inputs (secrets shown once):")
        lines += credentials
    lines.append(journeys)
    return "\n".join(lines)


def ensure_demo_outputs(runtime: Runtime) -> list[str]:
    """Create the `file` outputs the example journeys connect to, where missing; return those created."""
    created = []
    for name, folder in DEMO_OUTPUTS.items():
        try:
            runtime.catalog.get_output(name)
        except NotFound:
            directory = runtime.config.data_dir / "outputs" / folder
            runtime.catalog.create_output("file", name, {"directory": str(directory)})
            created.append(name)
    return created


def example_journeys(runtime: Runtime, *, only_new: bool) -> str:
    """Apply the example journeys (`examples/*.yaml`) as `journeys apply --yes` would; one summary line.

    With `only_new`, journeys that already exist are left alone, so edits made in the demo survive
    a second `milepost demo`.
    """
    from milepost.journeys.backends import LocalBackend
    from milepost.journeys.code import apply_plan, gather
    from milepost.journeys.documents import load_yaml

    files = sorted(EXAMPLES_DIR.glob("*.yaml")) if EXAMPLES_DIR.is_dir() else []
    if not files:
        return f"example journeys: none found in {EXAMPLES_DIR}"
    outputs = ensure_demo_outputs(runtime)
    backend = LocalBackend(runtime)
    applied: list[str] = []
    failed: list[str] = []
    for path in files:
        try:
            document = load_yaml(path.read_text())
            if only_new and backend.journey_id(document.name) is not None:
                continue
            plan = gather(document, backend)
            if plan.problems:
                failed.append(f"{path.name} ({'; '.join(plan.problems)})")
                continue
            if not plan.empty:
                apply_plan(plan, backend)
                applied.append(document.name)
        except MilepostError as exc:
            failed.append(f"{path.name} ({exc.message})")
    settings = runtime.catalog.get_settings()
    line = (
        f"example journeys: {len(applied)} applied ({', '.join(applied) or 'already up to date'}), "
        f"{len(outputs)} outputs created, {runtime.catalog.activated_count()}/{settings.audience_limit} "
        "audience credits in use"
    )
    if failed:
        line += "; not applied: " + "; ".join(failed)
    return line
