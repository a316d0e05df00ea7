"""`milepost demo`: the demo account's workspaces and inputs, filled with synthetic data."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import orjson

from milepost.config import Config
from milepost.errors import NotFound
from milepost.runtime import Runtime

DEMO_MARKER = "demo-loaded"
DEMO_SEED = 7


def load_demo(config: Config, *, users: int, days: int = 30) -> str:
    """Create the demo layout and ingest its synthetic batches once; return a summary line."""
    from milepost.synthetic import demo_layout, generate

    if (config.data_dir / DEMO_MARKER).exists():
        return "demo data already loaded"
    runtime = Runtime.open(config)
    runtime.start()
    try:
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
    finally:
        runtime.close()
    lines = [f"demo data: {sent} batches, {stats['users']} users, {stats['events']} events"]
    if credentials:
        lines.append("demo inputs (secrets shown once):")
        lines += credentials
    return "\n".join(lines)
