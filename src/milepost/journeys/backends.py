"""Where journeys-as-code reads and writes: an in-process runtime, or a running server's API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from milepost.config import Config
from milepost.errors import CreditLimitReached, MilepostError, NotFound
from milepost.journeys.code import (
    Account,
    Backend,
    DryRows,
    LiveConnection,
    LiveJourney,
    LiveMilestone,
)
from milepost.journeys.documents import name_key


def live_from_document(doc: dict[str, Any], settings_of: Callable[[int], dict[str, Any]]) -> LiveJourney:
    """A LiveJourney from the journey document with ids and audiences (`GET /api/v1/journeys/{id}`)."""
    out: list[LiveMilestone] = []

    def visit(nodes: list[dict[str, Any]], parent_id: int | None) -> None:
        for n in nodes:
            audience = n.get("audience") or {}
            size = audience.get("size") or {}
            value = size.get("value") if size.get("kind") in ("actual", "estimate") else None
            connections = tuple(
                LiveConnection(
                    int(c["id"]),
                    int(c["output_id"]),
                    str(c["output"]),
                    str(c["status"]),
                    settings_of(int(c["id"])),
                    str(c.get("on_deactivate", "keep")),
                )
                for c in audience.get("connections") or []
            )
            out.append(
                LiveMilestone(
                    int(n["id"]),
                    parent_id,
                    int(n.get("position", 0)),
                    str(n["name"]),
                    n.get("criteria") if not n.get("remaining") else None,
                    bool(n.get("remaining", False)),
                    int(audience["id"]),
                    int(value) if isinstance(value, int | float) else None,
                    connections,
                )
            )
            visit(n.get("children") or [], int(n["id"]))

    visit(doc.get("milestones") or [], None)
    return LiveJourney(int(doc["id"]), str(doc["name"]), tuple(doc.get("inputs") or ()), tuple(out))


def _rows(report: object) -> DryRows:
    if isinstance(report, dict):
        return list(report.get("activated_audiences") or [])
    return []


class LocalBackend:
    """The journey service of an in-process runtime (no server runs on the data directory)."""

    def __init__(self, runtime: Any) -> None:
        from milepost.runtime import Runtime

        self.rt: Runtime = runtime
        self.catalog = runtime.catalog
        self.service = runtime.journeys

    def account(self) -> Account:
        c = self.catalog
        return Account(
            tuple(i.name for i in c.list_inputs()),
            {name_key(o.name): (o.id, o.name) for o in c.list_outputs()},
            {name_key(a.name): a.definition for a in c.list_calculated_attributes()},
            c.get_settings().audience_limit,
            c.activated_count(),
        )

    def journey_id(self, ref: int | str) -> int | None:
        try:
            return int(self.catalog.get_journey(ref).id)
        except NotFound:
            return None

    def journey(self, journey_id: int) -> LiveJourney:
        doc = self.rt.views.document(journey_id)
        return live_from_document(doc, lambda cid: self.catalog.get_connection(cid).settings)

    def audience_names(self, audience_id: int) -> tuple[str, str] | None:
        try:
            m = self.catalog.milestone_by_audience(audience_id)
            return self.catalog.get_journey(m.journey_id).name, m.name
        except NotFound:
            return None

    def find_audience(self, journey: str, milestone: str) -> int | None:
        try:
            return int(self.catalog.find_audience(journey, milestone))
        except NotFound:
            return None

    def create_calculated_attribute(self, definition: dict[str, Any]) -> None:
        self.catalog.create_calculated_attribute(definition)
        self.service.refresh()

    def delete_calculated_attribute(self, name: str) -> None:
        self.catalog.delete_calculated_attribute(name)
        self.service.refresh()

    def create_journey(self, name: str, inputs: list[str] | None) -> int:
        return int(self.service.create({"name": name, "inputs": inputs, "milestones": []}))

    def delete_journey(self, journey_id: int) -> None:
        self.service.delete(journey_id)

    def rename_journey(self, journey_id: int, name: str) -> None:
        self.service.rename(journey_id, name)

    def set_inputs(self, journey_id: int, inputs: list[str], dry_run: bool = False) -> DryRows:
        return _rows(self.service.set_inputs(journey_id, inputs, dry_run=dry_run))

    def add_milestone(
        self,
        journey_id: int,
        parent_id: int | None,
        name: str,
        criteria: dict[str, Any] | None,
        remaining: bool,
        dry_run: bool = False,
    ) -> tuple[tuple[int, int] | None, DryRows]:
        result = self.service.add_milestone(
            journey_id,
            parent_id=parent_id,
            name=name,
            criteria=criteria,
            remaining=remaining,
            dry_run=dry_run,
        )
        if isinstance(result, dict):
            return None, _rows(result)
        return (result.id, result.audience_id), []

    def update_milestone(
        self,
        milestone_id: int,
        *,
        name: str | None = None,
        criteria: dict[str, Any] | None = None,
        position: int | None = None,
        dry_run: bool = False,
    ) -> DryRows:
        result = self.service.update_milestone(
            milestone_id, name=name, criteria=criteria, position=position, dry_run=dry_run
        )
        return _rows(result)

    def delete_milestone(self, milestone_id: int, dry_run: bool = False) -> DryRows:
        return _rows(self.service.delete_milestone(milestone_id, dry_run=dry_run))

    def apply_connection_plan(
        self, creates: list[tuple[int, int, str, dict[str, Any], str]], updates: list[tuple[int, str]]
    ) -> None:
        self.catalog.apply_connection_plan(creates, updates)
        self.service.refresh()

    def update_connection(self, connection_id: int, settings: dict[str, Any], on_deactivate: str) -> None:
        self.catalog.update_connection(connection_id, settings=settings, on_deactivate=on_deactivate)
        self.service.refresh()

    def delete_connection(self, connection_id: int) -> None:
        self.catalog.delete_connection(connection_id)
        self.service.refresh()


class HttpBackend:
    """A running server's management API (`/api/v1`)."""

    def __init__(self, client: Any) -> None:
        import httpx

        self.client: httpx.Client = client

    def _call(self, method: str, path: str, *, json: Any = None, dry_run: bool = False) -> Any:
        from milepost import errors

        params = {"dry_run": "true"} if dry_run else None
        resp = self.client.request(method, path, json=json, params=params)
        if resp.status_code == 204:
            return None
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code < 400:
            return body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        message = str(error.get("message") or resp.text[:500] or f"HTTP {resp.status_code}")
        code = error.get("code")
        cls: type[MilepostError] = {
            400: errors.InvalidRequest,
            401: errors.Unauthorized,
            403: errors.Forbidden,
            404: errors.NotFound,
            409: errors.Conflict,
        }.get(resp.status_code, MilepostError)
        if code == "CREDIT_LIMIT":
            cls = CreditLimitReached
        elif code == "JOURNEY_RULE":
            cls = errors.JourneyRuleViolation
        raise cls(message)

    def account(self) -> Account:
        inputs = self._call("GET", "/api/v1/inputs")["inputs"]
        outputs = self._call("GET", "/api/v1/outputs")["outputs"]
        settings = self._call("GET", "/api/v1/settings")
        return Account(
            tuple(i["name"] for i in inputs),
            {name_key(o["name"]): (int(o["id"]), o["name"]) for o in outputs},
            {
                name_key(a["name"]): a["definition"]
                for a in self._call("GET", "/api/v1/calculated-attributes")["calculated_attributes"]
            },
            int(settings["audience_limit"]),
            int(settings["activated"]),
        )

    def _journeys(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "/api/v1/journeys")["journeys"]
        return found

    def journey_id(self, ref: int | str) -> int | None:
        for j in self._journeys():
            if (isinstance(ref, int) and j["id"] == ref) or (
                isinstance(ref, str) and name_key(j["name"]) == name_key(ref)
            ):
                return int(j["id"])
        return None

    def journey(self, journey_id: int) -> LiveJourney:
        doc = self._call("GET", f"/api/v1/journeys/{journey_id}")
        return live_from_document(
            doc, lambda cid: dict(self._call("GET", f"/api/v1/connections/{cid}").get("settings") or {})
        )

    def audience_names(self, audience_id: int) -> tuple[str, str] | None:
        try:
            audience = self._call("GET", f"/api/v1/audiences/{audience_id}")
        except NotFound:
            return None
        names = {j["id"]: j["name"] for j in self._journeys()}
        return str(names.get(audience["journey_id"], "?")), str(audience["name"])

    def find_audience(self, journey: str, milestone: str) -> int | None:
        journey_id = self.journey_id(journey)
        if journey_id is None:
            return None
        for m in self.journey(journey_id).milestones:
            if name_key(m.name) == name_key(milestone):
                return m.audience_id
        return None

    def create_calculated_attribute(self, definition: dict[str, Any]) -> None:
        self._call("POST", "/api/v1/calculated-attributes", json=definition)

    def delete_calculated_attribute(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/calculated-attributes/{name}")

    def create_journey(self, name: str, inputs: list[str] | None) -> int:
        body: dict[str, Any] = {"name": name, "milestones": []}
        if inputs is not None:
            body["inputs"] = inputs
        return int(self._call("POST", "/api/v1/journeys", json=body)["id"])

    def delete_journey(self, journey_id: int) -> None:
        self._call("DELETE", f"/api/v1/journeys/{journey_id}")

    def rename_journey(self, journey_id: int, name: str) -> None:
        self._call("PATCH", f"/api/v1/journeys/{journey_id}", json={"name": name})

    def set_inputs(self, journey_id: int, inputs: list[str], dry_run: bool = False) -> DryRows:
        body = {"inputs": inputs}
        return _rows(self._call("PATCH", f"/api/v1/journeys/{journey_id}", json=body, dry_run=dry_run))

    def add_milestone(
        self,
        journey_id: int,
        parent_id: int | None,
        name: str,
        criteria: dict[str, Any] | None,
        remaining: bool,
        dry_run: bool = False,
    ) -> tuple[tuple[int, int] | None, DryRows]:
        body: dict[str, Any] = {"parent_id": parent_id, "name": name}
        if remaining:
            body["remaining"] = True
        else:
            body["criteria"] = criteria
        result = self._call("POST", f"/api/v1/journeys/{journey_id}/milestones", json=body, dry_run=dry_run)
        if dry_run:
            return None, _rows(result)
        return (int(result["id"]), int(result["audience"]["id"])), []

    def update_milestone(
        self,
        milestone_id: int,
        *,
        name: str | None = None,
        criteria: dict[str, Any] | None = None,
        position: int | None = None,
        dry_run: bool = False,
    ) -> DryRows:
        body = {
            k: v for k, v in (("name", name), ("criteria", criteria), ("position", position)) if v is not None
        }
        result = self._call("PATCH", f"/api/v1/milestones/{milestone_id}", json=body, dry_run=dry_run)
        return _rows(result) if dry_run else []

    def delete_milestone(self, milestone_id: int, dry_run: bool = False) -> DryRows:
        return _rows(self._call("DELETE", f"/api/v1/milestones/{milestone_id}", dry_run=dry_run))

    def apply_connection_plan(
        self, creates: list[tuple[int, int, str, dict[str, Any], str]], updates: list[tuple[int, str]]
    ) -> None:
        # The server checks the whole plan against the credit limit in one transaction.
        body = {
            "creates": [
                {"audience_id": a, "output_id": o, "status": st, "settings": se, "on_deactivate": od}
                for a, o, st, se, od in creates
            ],
            "updates": [{"connection_id": c, "status": st} for c, st in updates],
        }
        self._call("POST", "/api/v1/connection-plans", json=body)

    def update_connection(self, connection_id: int, settings: dict[str, Any], on_deactivate: str) -> None:
        body = {"settings": settings, "on_deactivate": on_deactivate}
        self._call("PATCH", f"/api/v1/connections/{connection_id}", json=body)

    def delete_connection(self, connection_id: int) -> None:
        self._call("DELETE", f"/api/v1/connections/{connection_id}")


@contextmanager
def open_backend(config: Config) -> Iterator[Backend]:
    """The running server's API when one serves the data directory, else an in-process runtime."""
    from milepost.local import load_cli_token, running_server

    server = running_server(config.data_dir)
    if server is not None:
        import httpx

        token = load_cli_token(config.data_dir)
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        ) as client:
            yield HttpBackend(client)
        return
    from milepost.runtime import Runtime

    runtime = Runtime.open(config)
    try:
        runtime.start(background=False)
        yield LocalBackend(runtime)
    finally:
        runtime.close()
