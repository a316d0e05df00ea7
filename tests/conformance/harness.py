"""Runs one conformance case (shared/conformance/cases.yaml) through the Events API and the journey service.

Ingestion goes through the real Events API app (in process, over ASGI); journeys through the
journey service; the clock is a ManualClock that the steps move. Two modes:
- "realtime": the engine evaluates after every ingest step and fires timers as time passes;
- "full": membership is recomputed by a full calculation at each expectation.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from milepost.api.app import create_app
from milepost.audiences.engine import FullCalculator
from milepost.audiences.user_events import UserEventsSettings
from milepost.clock import ManualClock
from milepost.config import Config
from milepost.runtime import Runtime

DEFAULT_INPUTS = [{"name": "web", "workspace": "main", "platform": "web"}]


def at_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


class CaseRunner:
    def __init__(
        self, case: dict[str, Any], mode: str, data_dir: Path, calculator: FullCalculator | None = None
    ) -> None:
        self.case = case
        self.mode = mode
        steps = case["steps"]
        self.clock = ManualClock(at_ms(steps[0]["at"]))
        config = Config.from_env(data_dir)
        self.runtime = Runtime.open(config, self.clock, seed=1)
        if calculator is not None:  # full calculations on another engine (tests/spark)
            self.runtime.audiences.calculator = calculator
        self.runtime.journeys.maintain_all = True  # every audience of a case is calculated
        if mode == "realtime":  # evaluations read the events held by user (a store this small
            # would be scanned), taking in the newest at every evaluation
            self.runtime.audiences.user_events.settings = UserEventsSettings(
                min_events=0, tail_rows=1, check_every=1, wait=True
            )
        self.runtime.start(background=False)
        self.app = create_app(self.runtime, manage_lifecycle=False)
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://milepost"
        )
        self.credentials: dict[str, str] = {}
        self.audiences: dict[str, int] = {}
        self.milestones: dict[str, int] = {}

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
        self.runtime.close()

    # ---- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        setup = self.case.get("setup") or {}
        catalog = self.runtime.catalog
        for spec in setup.get("inputs") or DEFAULT_INPUTS:
            try:
                ws = catalog.get_workspace(spec["workspace"])
            except Exception:
                ws = catalog.create_workspace(spec["workspace"])
            inp, secret = catalog.create_input(ws.id, spec["name"], spec.get("platform", "web"))
            self.runtime.inputs.invalidate()
            self.credentials[spec["name"]] = (
                "Basic " + base64.b64encode(f"{inp.key}:{secret}".encode()).decode()
            )
        if setup.get("settings"):
            catalog.update_settings(**setup["settings"])
        for definition in setup.get("calculated_attributes") or []:
            catalog.create_calculated_attribute(definition)
        for journey in self.case["journeys"]:
            self.runtime.journeys.create(journey)
        for j in self.runtime.journeys.journeys():
            for m in j.milestones:
                self.audiences[m.name] = m.audience_id
                self.milestones[m.name] = m.id

    # ---- steps -----------------------------------------------------------------------------------

    def run(self) -> None:
        self.setup()
        engine = self.runtime.audiences
        for i, step in enumerate(self.case["steps"]):
            now = at_ms(step["at"])
            self.clock.set(now)
            if self.mode == "realtime":
                engine.advance(now)
            for item in step.get("ingest") or []:
                self._ingest(item)
            if step.get("ingest") and self.mode == "realtime":
                self._settle()
                engine.catch_up(now)
            if "edit" in step:
                edit = step["edit"]
                self.runtime.journeys.edit_criteria(self.milestones[edit["milestone"]], edit["criteria"])
            if "reorder" in step:
                r = step["reorder"]
                parent = None if r.get("parent") is None else self.milestones[r["parent"]]
                journey = self.runtime.catalog.get_journey(r["journey"]).id
                self.runtime.journeys.reorder(journey, parent, [self.milestones[n] for n in r["order"]])
            if "expect" in step:
                if self.mode == "full":
                    self._settle()
                    engine.full_calculation(now)
                self._check(i, step["at"], step["expect"])

    def _ingest(self, item: dict[str, Any]) -> None:
        historical = item.get("endpoint") == "historical"
        path = "/v2/bulkevents/historical" if historical else "/v2/events"
        body = [item["batch"]] if historical else item["batch"]
        resp = self.loop.run_until_complete(
            self.client.post(
                path,
                content=orjson.dumps(body),
                headers={
                    "Authorization": self.credentials[item["input"]],
                    "Content-Type": "application/json",
                },
            )
        )
        assert resp.status_code == 202, f"ingest refused: {resp.status_code} {resp.text}"

    def _settle(self) -> None:
        """Every 202 means committed; nothing to wait for beyond the writer's queue being empty."""
        self.runtime.writer.run_exclusive(lambda: None)

    def _check(self, index: int, at: str, expect: dict[str, list[Any]]) -> None:
        for milestone, expected in expect.items():
            want = sorted(self._mpid(e) for e in expected)
            got = sorted(self.runtime.audiences.members(self.audiences[milestone]))
            assert got == want, (
                f"step {index} at {at}: '{milestone}' has {got}, expected {want} ({self.mode})"
            )

    def _mpid(self, expected: Any) -> int:
        if isinstance(expected, int):
            return expected
        ((id_type, value),) = expected.items()
        key = value.strip().lower() if id_type == "email" else value.strip()
        rows = (
            self.runtime.store.reader()
            .execute("SELECT mpid FROM identities WHERE identity_type = ? AND value_key = ?", [id_type, key])
            .fetchall()
        )
        assert rows, f"no user holds {id_type} {value!r}"
        return int(rows[0][0])
