"""Journeys as code: export a journey as a document, plan and apply a document (SPEC §7, §7.1).

Three layers, kept apart:
- **reading** (`gather`): a `Backend` answers what exists (inputs, outputs, the journey as it is);
- **planning** (`plan_changes`): pure; matches the file against the live journey (by id, else by
  name path), and lists milestones to add, change and remove, input changes and connections to add,
  activate, deactivate and remove, with the credits the plan consumes;
- **applying** (`apply_plan`): runs the plan through the backend in a safe order, undoing what it
  did if a step before the removals fails, so a refused plan (credits) changes nothing.

Backends (`backends.py`): `LocalBackend` over an in-process `Runtime`, and `HttpBackend` over a
running server's management API; `open_backend` picks one as the other CLI commands do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from milepost.criteria import parse_criteria, references
from milepost.errors import CreditLimitReached, MilepostError, NotFound
from milepost.journeys.documents import (
    DocConnection,
    DocMilestone,
    JourneyDocument,
    audience_leaves,
    canonical,
    map_audience_leaves,
    name_key,
    named_references,
)

NEW = -1  # a placeholder audience id: the audience of a milestone the plan creates
DryRows = list[dict[str, Any]]


# ---- what exists ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveConnection:
    id: int
    output_id: int
    output: str
    status: str
    settings: dict[str, Any]
    on_deactivate: str


@dataclass(frozen=True)
class LiveMilestone:
    id: int
    parent_id: int | None
    position: int
    name: str
    criteria: dict[str, Any] | None
    remaining: bool
    audience_id: int
    size: int | None  # current size when known (actual, or an estimate)
    connections: tuple[LiveConnection, ...] = ()

    @property
    def activated(self) -> bool:
        return any(c.status == "active" for c in self.connections)


@dataclass(frozen=True)
class LiveJourney:
    id: int
    name: str
    inputs: tuple[str, ...]
    milestones: tuple[LiveMilestone, ...]

    def children(self, parent_id: int | None) -> list[LiveMilestone]:
        kids = [m for m in self.milestones if m.parent_id == parent_id]
        return sorted(kids, key=lambda m: (m.remaining, m.position))

    def path(self, m: LiveMilestone) -> str:
        by_id = {x.id: x for x in self.milestones}
        names = [m.name]
        while m.parent_id is not None and m.parent_id in by_id:
            m = by_id[m.parent_id]
            names.append(m.name)
        return " / ".join(reversed(names))


@dataclass(frozen=True)
class Account:
    inputs: tuple[str, ...]
    outputs: dict[str, tuple[int, str]]  # name key -> (id, name)
    calculated_attributes: dict[str, dict[str, Any]]  # name key -> definition
    audience_limit: int
    activated: int


class Backend(Protocol):
    """What apply and export need from Milepost, in-process or over the management API."""

    def account(self) -> Account: ...
    def journey_id(self, ref: int | str) -> int | None: ...
    def journey(self, journey_id: int) -> LiveJourney: ...
    def audience_names(self, audience_id: int) -> tuple[str, str] | None: ...
    def find_audience(self, journey: str, milestone: str) -> int | None: ...
    def create_calculated_attribute(self, definition: dict[str, Any]) -> None: ...
    def delete_calculated_attribute(self, name: str) -> None: ...
    def create_journey(self, name: str, inputs: list[str] | None) -> int: ...
    def delete_journey(self, journey_id: int) -> None: ...
    def rename_journey(self, journey_id: int, name: str) -> None: ...
    def set_inputs(self, journey_id: int, inputs: list[str], dry_run: bool = False) -> DryRows: ...
    def add_milestone(
        self,
        journey_id: int,
        parent_id: int | None,
        name: str,
        criteria: dict[str, Any] | None,
        remaining: bool,
        dry_run: bool = False,
    ) -> tuple[tuple[int, int] | None, DryRows]: ...
    def update_milestone(
        self,
        milestone_id: int,
        *,
        name: str | None = None,
        criteria: dict[str, Any] | None = None,
        position: int | None = None,
        dry_run: bool = False,
    ) -> DryRows: ...
    def delete_milestone(self, milestone_id: int, dry_run: bool = False) -> DryRows: ...
    def apply_connection_plan(
        self, creates: list[tuple[int, int, str, dict[str, Any], str]], updates: list[tuple[int, str]]
    ) -> None: ...
    def update_connection(self, connection_id: int, settings: dict[str, Any], on_deactivate: str) -> None: ...
    def delete_connection(self, connection_id: int) -> None: ...


# ---- export ----------------------------------------------------------------------------------------


def export_document(backend: Backend, ref: int | str) -> JourneyDocument:
    """The journey as a document: criteria canonical, audience references by name, connections by output."""
    journey_id = backend.journey_id(ref)
    if journey_id is None:
        raise NotFound(f"there is no journey {ref!r}")
    live = backend.journey(journey_id)
    account = backend.account()
    used: set[str] = set()

    def node(m: LiveMilestone) -> DocMilestone:
        criteria = None
        if m.criteria is not None:
            criteria = canonical(named_references(m.criteria, backend.audience_names))
            used.update(references(parse_criteria(m.criteria)).calculated_attributes)
        connections = tuple(
            DocConnection(c.output, c.status, c.settings, c.on_deactivate) for c in m.connections
        )
        kids = tuple(node(k) for k in live.children(m.id))
        return DocMilestone(m.name, criteria, m.remaining, connections, kids, m.id)

    milestones = tuple(node(m) for m in live.children(None))
    calcs = tuple(
        account.calculated_attributes[name_key(n)]
        for n in sorted(used)
        if name_key(n) in account.calculated_attributes
    )
    return JourneyDocument(live.name, live.inputs, milestones, calcs, live.id)


# ---- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One milestone of the file: its index in file order, its parent's, and what it matched."""

    t: int
    parent: int | None
    node: DocMilestone
    path: str
    live: LiveMilestone | None


@dataclass
class Line:
    """One line of the printed plan; `dry` is a dry run that estimates its effect."""

    kind: str  # add | change | move | remove | input | connect | activate | deactivate | disconnect | ...
    text: str
    dry: Callable[[Backend], DryRows] | None = None
    effects: DryRows = field(default_factory=list)
    note: str = ""


@dataclass
class Plan:
    document: JourneyDocument
    live: LiveJourney | None
    account: Account
    targets: list[Target] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    calc_creates: list[dict[str, Any]] = field(default_factory=list)
    rename_journey: str | None = None
    inputs: list[str] | None = None  # the new input list, when it changes
    temp_names: list[tuple[int, str, str]] = field(default_factory=list)  # (milestone, temporary, original)
    adds: list[int] = field(default_factory=list)  # target indices, parents first
    edits: list[tuple[int, str | None, dict[str, Any] | None]] = field(default_factory=list)
    reorders: list[tuple[int | None, list[int]]] = field(default_factory=list)  # (live parent, target order)
    removes: list[LiveMilestone] = field(default_factory=list)  # deepest and last first
    creates: list[tuple[int, int, str, dict[str, Any], str]] = field(default_factory=list)  # t, output…
    updates: list[tuple[int, str]] = field(default_factory=list)  # (connection, status)
    settings_changes: list[tuple[int, dict[str, Any], str]] = field(default_factory=list)
    disconnects: list[int] = field(default_factory=list)
    external: dict[tuple[str, str], int | None] = field(default_factory=dict)
    credits_before: int = 0
    credits_after: int = 0

    @property
    def empty(self) -> bool:
        return not self.lines

    @property
    def changes(self) -> int:
        return sum(1 for line in self.lines if line.kind != "credits")

    @property
    def over_limit(self) -> bool:
        limit = self.account.audience_limit
        return self.credits_after > limit and self.credits_after > self.credits_before

    @property
    def credit_message(self) -> str:
        a = self.account
        return (
            f"this plan would bring the activated audiences to {self.credits_after}, over the account's "
            f"limit of {a.audience_limit} ({self.credits_before} activated, "
            f"{max(0, a.audience_limit - self.credits_before)} available); deactivate audiences or raise the limit"
        )


def gather(doc: JourneyDocument, backend: Backend) -> Plan:
    """Read what the plan depends on, then plan (pure) and estimate the effects (dry runs)."""
    account = backend.account()
    live: LiveJourney | None = None
    problems: list[str] = []
    if doc.id is not None:
        if backend.journey_id(doc.id) is None:
            problems.append(
                f"there is no journey with id {doc.id}; leave `id` out to match the journey by name"
            )
        else:
            live = backend.journey(doc.id)
    else:
        found = backend.journey_id(doc.name)
        live = backend.journey(found) if found is not None else None
    external: dict[tuple[str, str], int | None] = {}
    for _, m in doc.walk():
        for leaf in audience_leaves(m.criteria):
            j, ms = leaf.get("journey"), leaf.get("milestone")
            if isinstance(j, str) and isinstance(ms, str) and name_key(j) != name_key(doc.name):
                external.setdefault((j, ms), backend.find_audience(j, ms))
    plan = plan_changes(doc, live, account, external)
    plan.problems[:0] = problems
    if not plan.problems:
        estimate(plan, backend)
    return plan


def plan_changes(
    doc: JourneyDocument,
    live: LiveJourney | None,
    account: Account,
    external: dict[tuple[str, str], int | None],
) -> Plan:
    """Compare the file with the live journey (None: a new one) and list every change; no I/O."""
    plan = Plan(doc, live, account, external=external)
    _check_names(plan)
    _match(plan)
    if plan.problems:
        return plan
    _journey_level(plan)
    _milestone_changes(plan)
    _connections(plan)
    return plan


def _check_names(plan: Plan) -> None:
    doc, account = plan.document, plan.account
    known_inputs = {name_key(i) for i in account.inputs}
    unknown = [i for i in doc.inputs or () if name_key(i) not in known_inputs]
    if unknown:
        plan.problems.append(
            f"unknown input{'s' if len(unknown) > 1 else ''}: {', '.join(map(repr, unknown))}"
        )
    missing_outputs: list[str] = []
    calcs = set(account.calculated_attributes) | {name_key(c["name"]) for c in doc.calculated_attributes}
    missing_calcs: list[str] = []
    for path, m in doc.walk():
        where = " / ".join((*path, m.name))
        for c in m.connections:
            if name_key(c.output) not in account.outputs:
                missing_outputs.append(f"{c.output!r} (on {where})")
        if m.criteria is not None:
            for n in sorted(references(parse_criteria(m.criteria)).calculated_attributes):
                if name_key(n) not in calcs:
                    missing_calcs.append(f"{n!r} (in {where})")
    if missing_outputs:
        plan.problems.append(
            f"unknown output{'s' if len(missing_outputs) > 1 else ''}: {', '.join(missing_outputs)}"
        )
    if missing_calcs:
        plan.problems.append(
            "unknown calculated attribute"
            f"{'s' if len(missing_calcs) > 1 else ''}: {', '.join(missing_calcs)}; "
            "define them under calculated_attributes"
        )
    dangling = [f"{j!r} / {m!r}" for (j, m), a in plan.external.items() if a is None]
    own = {name_key(m.name) for _, m in doc.walk()}
    for _, m in doc.walk():
        for leaf in audience_leaves(m.criteria):
            j, ms = leaf.get("journey"), leaf.get("milestone")
            same = isinstance(j, str) and name_key(j) == name_key(doc.name)
            if same and isinstance(ms, str) and name_key(ms) not in own:
                dangling.append(f"{j!r} / {ms!r}")
    if dangling:
        plan.problems.append(
            f"unknown audience reference{'s' if len(dangling) > 1 else ''}: {', '.join(dangling)}"
        )
    for definition in plan.document.calculated_attributes:
        have = account.calculated_attributes.get(name_key(definition["name"]))
        if have is None:
            plan.calc_creates.append(definition)
        elif _without_name(have) != _without_name(definition):
            plan.warnings.append(
                f"calculated attribute {definition['name']!r} exists with another definition; "
                "it is left as it is"
            )


def _without_name(definition: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in definition.items() if k != "name"}


def _match(plan: Plan) -> None:
    """Pair each milestone of the file with a live one: by id when given, else by name under its parent."""
    live, doc = plan.live, plan.document
    by_id = {m.id: m for m in live.milestones} if live else {}
    claimed = {m.id for _, m in doc.walk() if m.id is not None}
    used: set[int] = set()

    def visit(
        nodes: tuple[DocMilestone, ...], parent_t: int | None, parent_live: LiveMilestone | None
    ) -> None:
        siblings = (
            []
            if live is None or (parent_t is not None and parent_live is None)
            else live.children(parent_live.id if parent_live else None)
        )
        parent_path = plan.targets[parent_t].path + " / " if parent_t is not None else ""
        for node in nodes:
            path = parent_path + node.name
            found: LiveMilestone | None = None
            if node.id is not None:
                m = by_id.get(node.id)
                if m is None:
                    plan.problems.append(f"{path}: journey {doc.name!r} has no milestone with id {node.id}")
                elif m.parent_id != (parent_live.id if parent_live else None):
                    plan.problems.append(
                        f"{path}: milestone {node.id} cannot move to another parent; "
                        "remove its id to replace it with a new milestone"
                    )
                elif m.remaining != node.remaining:
                    plan.problems.append(
                        f"{path}: milestone {node.id} cannot turn {'into' if node.remaining else 'from'} "
                        "a remaining users split; remove its id to replace it"
                    )
                elif m.id in used:
                    plan.problems.append(f"{path}: milestone id {node.id} appears twice")
                else:
                    found = m
            else:
                found = next(
                    (
                        m
                        for m in siblings
                        if m.id not in used
                        and m.id not in claimed
                        and name_key(m.name) == name_key(node.name)
                        and m.remaining == node.remaining
                    ),
                    None,
                )
            if found is not None:
                used.add(found.id)
            t = len(plan.targets)
            plan.targets.append(Target(t, parent_t, node, path, found))
            visit(node.children, t, found)

    visit(doc.milestones, None, None)
    if live is not None:
        gone = [m for m in live.milestones if m.id not in used]
        depth = {m.id: live.path(m).count(" / ") for m in live.milestones}
        plan.removes = sorted(gone, key=lambda m: (-depth[m.id], -int(m.remaining), -m.position))


def _journey_level(plan: Plan) -> None:
    doc, live = plan.document, plan.live
    for c in plan.calc_creates:
        plan.lines.append(Line("add", f"calculated attribute {c['name']!r} ({c['calculation']})"))
    if live is None:
        inputs = ", ".join(doc.inputs) if doc.inputs is not None else "every input"
        plan.lines.append(Line("add", f"journey {doc.name!r} (inputs: {inputs})"))
        return
    if doc.name != live.name:
        plan.rename_journey = doc.name
        plan.lines.append(Line("change", f"journey {live.name!r}: rename to {doc.name!r}"))
    if doc.inputs is not None and {name_key(i) for i in doc.inputs} != {name_key(i) for i in live.inputs}:
        plan.inputs = list(doc.inputs)
        journey_id, names = live.id, list(doc.inputs)
        plan.lines.append(
            Line(
                "change",
                f"inputs: {', '.join(live.inputs)} → {', '.join(doc.inputs)}",
                dry=lambda b: b.set_inputs(journey_id, names, dry_run=True),
            )
        )


def resolve_criteria(
    criteria: dict[str, Any], journey: str, own: dict[str, int], external: dict[tuple[str, str], int | None]
) -> dict[str, Any]:
    """Audience leaves by id: the journey's own milestones from `own` (name key -> audience id, NEW
    while not created), other journeys' from `external`."""

    def resolve(leaf: dict[str, Any]) -> dict[str, Any]:
        j, m = leaf.pop("journey", None), leaf.pop("milestone", None)
        if not isinstance(j, str) or not isinstance(m, str):
            return leaf
        found = own.get(name_key(m), NEW) if name_key(j) == name_key(journey) else external.get((j, m))
        return {**leaf, "audience_id": found if found is not None else NEW}

    out: dict[str, Any] = map_audience_leaves(criteria, resolve)
    return out


def _uses_new(criteria: dict[str, Any]) -> bool:
    return any(leaf.get("audience_id") == NEW for leaf in audience_leaves(criteria))


def _own_audiences(plan: Plan) -> dict[str, int]:
    return {name_key(x.node.name): (x.live.audience_id if x.live else NEW) for x in plan.targets}


def _milestone_changes(plan: Plan) -> None:
    live, doc = plan.live, plan.document
    own = _own_audiences(plan)
    targets = plan.targets
    journey_id = live.id if live else None
    # names wanted by a milestone other than the live one holding them now: free them first
    wanted = {name_key(x.node.name): x for x in targets}
    if live is not None:
        for m in live.milestones:
            holder = wanted.get(name_key(m.name))
            if holder is not None and (holder.live is None or holder.live.id != m.id):
                plan.temp_names.append((m.id, f"~{m.id}~ {m.name}"[:200], m.name))
    for x in targets:
        node = x.node
        resolved = (
            None if node.criteria is None else resolve_criteria(node.criteria, doc.name, own, plan.external)
        )
        parent_live = targets[x.parent].live if x.parent is not None else None
        parent_exists = x.parent is None or parent_live is not None
        if x.live is None:
            plan.adds.append(x.t)
            what = "remaining users split" if node.remaining else "milestone"
            dry = None
            if journey_id is not None and parent_exists and (resolved is None or not _uses_new(resolved)):
                pid = parent_live.id if parent_live else None
                dry = _dry_add(journey_id, pid, node.name, resolved, node.remaining)
            siblings = [s for s in targets if s.parent == x.parent and not s.node.remaining]
            at = siblings.index(x) if not node.remaining else len(siblings)
            place = f" (position {at})" if not node.remaining and at < len(siblings) - 1 else ""
            plan.lines.append(Line("add", f"{what} {x.path}{place}", dry=dry))
            continue
        m = x.live
        rename = node.name if node.name != m.name else None
        criteria = None
        if resolved is not None and m.criteria is not None and resolved != canonical(m.criteria):
            criteria = resolved
        if rename is not None or criteria is not None:
            plan.edits.append((x.t, rename, criteria))
            parts = []
            if rename is not None:
                parts.append(f"rename {m.name!r} → {node.name!r}")
            if criteria is not None:
                parts.append("criteria")
            dry = None
            if criteria is not None and not _uses_new(criteria):
                dry = _dry_update(m.id, criteria, None)
            where = x.path if rename is None else live.path(m) if live else x.path
            plan.lines.append(Line("change", f"milestone {where}: {', '.join(parts)}", dry=dry))
    _reorders(plan)
    referenced: dict[int, str] = {}
    for x in targets:
        if x.node.criteria is not None:
            for leaf in audience_leaves(resolve_criteria(x.node.criteria, doc.name, own, plan.external)):
                referenced.setdefault(leaf.get("audience_id", NEW), x.path)
    for m in plan.removes:
        assert live is not None
        what = "remaining users split" if m.remaining else "milestone"
        if m.audience_id in referenced:
            plan.problems.append(
                f"{live.path(m)} is removed but {referenced[m.audience_id]} still refers to its audience"
            )
        bottom = not any(c.parent_id == m.id for c in live.milestones)
        plan.lines.append(Line("remove", f"{what} {live.path(m)}", dry=_dry_delete(m.id) if bottom else None))


def _reorders(plan: Plan) -> None:
    """Sibling order: new milestones are added last (before a remaining split), then moved into place."""
    live = plan.live
    if live is None:
        return
    by_parent: dict[int | None, list[Target]] = {}
    for x in plan.targets:
        parent_live = plan.targets[x.parent].live if x.parent is not None else None
        if x.parent is not None and parent_live is None:
            continue
        by_parent.setdefault(parent_live.id if parent_live else None, []).append(x)
    for parent_id, kids in by_parent.items():
        regular = [x for x in kids if not x.node.remaining]
        current = [m.id for m in live.children(parent_id) if not m.remaining]
        kept = [x.live.id for x in regular if x.live is not None]
        after_adds = [mid for mid in current if mid in kept] + [-x.t - 1 for x in regular if x.live is None]
        wanted = [x.live.id if x.live is not None else -x.t - 1 for x in regular]
        if after_adds == wanted:
            continue
        plan.reorders.append((parent_id, [x.t for x in regular]))
        kept_now = [mid for mid in current if mid in kept]
        moved = [
            x for x in regular if x.live is not None and kept.index(x.live.id) != kept_now.index(x.live.id)
        ]
        for x in moved:
            assert x.live is not None
            position = wanted.index(x.live.id)
            plan.lines.append(
                Line(
                    "move",
                    f"milestone {x.path}: to position {position}",
                    dry=_dry_update(x.live.id, None, position),
                )
            )


def _dry_add(
    journey_id: int, parent_id: int | None, name: str, criteria: dict[str, Any] | None, remaining: bool
) -> Callable[[Backend], DryRows]:
    return lambda b: b.add_milestone(journey_id, parent_id, name, criteria, remaining, dry_run=True)[1]


def _dry_update(
    milestone_id: int, criteria: dict[str, Any] | None, position: int | None
) -> Callable[[Backend], DryRows]:
    return lambda b: b.update_milestone(milestone_id, criteria=criteria, position=position, dry_run=True)


def _dry_delete(milestone_id: int) -> Callable[[Backend], DryRows]:
    return lambda b: b.delete_milestone(milestone_id, dry_run=True)


def _connections(plan: Plan) -> None:
    account, live = plan.account, plan.live
    newly: list[str] = []
    freed: list[str] = []
    for x in plan.targets:
        want = {name_key(c.output): c for c in x.node.connections}
        have = {name_key(c.output): c for c in x.live.connections} if x.live else {}
        was = x.live is not None and x.live.activated
        will = any(c.status == "active" for c in x.node.connections)
        note = ""
        if will and not was:
            newly.append(x.path)
            if x.live is not None and x.live.size is not None:
                note = f"activates the audience: sends its {x.live.size:,} current members"
        elif was and not will:
            freed.append(x.path)
            note = "deactivates the audience (the partner's copy may go out of sync)"
        for key, c in want.items():
            output_id, output_name = account.outputs[key]
            old = have.get(key)
            if old is None:
                plan.creates.append((x.t, output_id, c.status, c.settings, c.on_deactivate))
                verb = "connect" if c.status == "active" else "connect (inactive)"
                plan.lines.append(Line("connect", f"{verb} {x.path} → {output_name}", note=note))
                note = ""
                continue
            if old.status != c.status:
                plan.updates.append((old.id, c.status))
                verb = "activate" if c.status == "active" else "deactivate"
                plan.lines.append(Line(verb, f"{verb} connection {x.path} → {output_name}", note=note))
                note = ""
            if old.settings != c.settings or old.on_deactivate != c.on_deactivate:
                plan.settings_changes.append((old.id, c.settings, c.on_deactivate))
                plan.lines.append(Line("change", f"connection {x.path} → {output_name}: settings"))
        for key, old in have.items():
            if key not in want:
                plan.disconnects.append(old.id)
                if old.status == "active":
                    plan.updates.append((old.id, "inactive"))
                plan.lines.append(Line("disconnect", f"disconnect {x.path} → {old.output}", note=note))
                note = ""
    for m in plan.removes:
        if m.activated:
            assert live is not None
            freed.append(live.path(m))
            plan.updates.extend((c.id, "inactive") for c in m.connections if c.status == "active")
    plan.credits_before = account.activated
    plan.credits_after = account.activated + len(newly) - len(freed)
    if newly or freed:
        plan.lines.append(
            Line(
                "credits",
                f"credits: {plan.credits_before} in use → {plan.credits_after} "
                f"(limit {account.audience_limit}; {len(newly)} activated, {len(freed)} freed)",
            )
        )


def estimate(plan: Plan, backend: Backend) -> None:
    """Run each line's dry run: per activated audience, how many users would enter and leave."""
    for line in plan.lines:
        if line.dry is None:
            continue
        try:
            line.effects = [r for r in line.dry(backend) if r.get("enter") or r.get("leave")]
        except MilepostError as exc:
            line.note = f"no estimate: {exc.message}"


# ---- applying --------------------------------------------------------------------------------------


class Applied:
    """What apply did, so a failure before the removals can be undone."""

    def __init__(self) -> None:
        self.undo: list[Callable[[], object]] = []
        self.count = 0

    def did(self, undo: Callable[[], object] | None = None) -> None:
        self.count += 1
        if undo is not None:
            self.undo.append(undo)

    def rollback(self) -> list[str]:
        failures = []
        for step in reversed(self.undo):
            try:
                step()
            except MilepostError as exc:
                failures.append(exc.message)
        self.undo.clear()
        return failures


def apply_plan(plan: Plan, backend: Backend) -> int:
    """Make the changes; returns the journey id. A refused step before the removals undoes the rest."""
    if plan.problems:
        raise MilepostError("; ".join(plan.problems))
    if plan.over_limit:
        raise CreditLimitReached(plan.credit_message)
    done = Applied()
    try:
        journey_id = _apply_reversible(plan, backend, done)
    except BaseException:
        failures = done.rollback()
        if failures:
            raise MilepostError(
                "the plan failed and could not be fully undone: " + "; ".join(failures)
            ) from None
        raise
    _apply_removals(plan, backend)
    return journey_id


def _apply_reversible(plan: Plan, backend: Backend, done: Applied) -> int:
    doc, live = plan.document, plan.live
    for c in plan.calc_creates:
        backend.create_calculated_attribute(c)
        name = str(c["name"])
        done.did(partial(backend.delete_calculated_attribute, name))
    if live is None:
        journey_id = backend.create_journey(doc.name, list(doc.inputs) if doc.inputs is not None else None)
        done.did(lambda: backend.delete_journey(journey_id))
    else:
        journey_id = live.id
        if plan.rename_journey is not None:
            backend.rename_journey(journey_id, plan.rename_journey)
            done.did(lambda: backend.rename_journey(journey_id, live.name))
        if plan.inputs is not None:
            backend.set_inputs(journey_id, plan.inputs)
            old_inputs = list(live.inputs)
            done.did(lambda: backend.set_inputs(journey_id, old_inputs))
    for mid, temporary, original in plan.temp_names:
        backend.update_milestone(mid, name=temporary)
        done.did(partial(backend.update_milestone, mid, name=original))
    ids: dict[int, tuple[int, int]] = {
        x.t: (x.live.id, x.live.audience_id) for x in plan.targets if x.live is not None
    }
    own: dict[str, int] = {}

    def own_audiences() -> dict[str, int]:
        own.update({name_key(x.node.name): ids[x.t][1] for x in plan.targets if x.t in ids})
        return own

    for t in plan.adds:
        x = plan.targets[t]
        parent_id = ids[x.parent][0] if x.parent is not None else None
        criteria = None
        if x.node.criteria is not None:
            criteria = resolve_criteria(x.node.criteria, doc.name, own_audiences(), plan.external)
        created, _ = backend.add_milestone(journey_id, parent_id, x.node.name, criteria, x.node.remaining)
        assert created is not None
        ids[t] = created
        done.did(partial(backend.delete_milestone, created[0]))
    for t, rename, criteria in plan.edits:
        x = plan.targets[t]
        assert x.live is not None
        m = x.live
        if criteria is not None and _uses_new(criteria):
            criteria = resolve_criteria(x.node.criteria or {}, doc.name, own_audiences(), plan.external)
        backend.update_milestone(m.id, name=rename, criteria=criteria)
        original = next((o for mid, _, o in plan.temp_names if mid == m.id), m.name)
        old_criteria = m.criteria if criteria is not None else None
        done.did(partial(backend.update_milestone, m.id, name=original, criteria=old_criteria))
    for parent_id, order in plan.reorders:
        assert live is not None
        before = [m.id for m in live.children(parent_id) if not m.remaining]
        added = [ids[t][0] for t in order if plan.targets[t].live is None]
        wanted = [ids[t][0] for t in order]
        _reorder(backend, before + added, wanted)
        done.did(partial(_reorder, backend, wanted, before))
    creates = [
        (ids[t][1], output_id, status, settings, od) for t, output_id, status, settings, od in plan.creates
    ]
    if creates or plan.updates:
        backend.apply_connection_plan(creates, plan.updates)
        done.did()
    for connection_id, settings, on_deactivate in plan.settings_changes:
        backend.update_connection(connection_id, settings, on_deactivate)
        done.did()
    return journey_id


def _reorder(backend: Backend, current: list[int], wanted: list[int]) -> None:
    """Move milestones one by one until the regular siblings are in `wanted` order."""
    order = list(current)
    for i, mid in enumerate(wanted):
        if i < len(order) and order[i] == mid:
            continue
        backend.update_milestone(mid, position=i)
        order.remove(mid)
        order.insert(i, mid)


def _apply_removals(plan: Plan, backend: Backend) -> None:
    for connection_id in plan.disconnects:
        backend.delete_connection(connection_id)
    for m in plan.removes:
        backend.delete_milestone(m.id)


# ---- backends --------------------------------------------------------------------------------------
