"""The journey document of `journeys export` / `apply` (SPEC §7.1): parsed, checked, written as YAML.

A file names everything by name: inputs, outputs, and the audiences that `audience` leaves refer
to (`journey` + `milestone`), so it can be applied to another data directory. Ids (`id:` on the
journey and its milestones) are optional; `apply` matches by them when present. The optional
top-level `calculated_attributes:` list is an extension: definitions (SPEC §4.5) that apply
creates when missing, since criteria may use them and the document has no other place for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from milepost.criteria import parse_calculated_attribute, parse_criteria, to_json
from milepost.criteria.document import calculated_attribute_json
from milepost.errors import InvalidRequest, MilepostError

STATUSES = ("active", "inactive")
ON_DEACTIVATE = ("keep", "remove_members")
AudienceNames = Callable[[int], tuple[str, str] | None]


def name_key(name: str) -> str:
    """Names are matched in any case, as the catalog keeps them unique."""
    return name.strip().casefold()


@dataclass(frozen=True)
class DocConnection:
    output: str
    status: str = "active"
    settings: dict[str, Any] = field(default_factory=dict)
    on_deactivate: str = "keep"


@dataclass(frozen=True)
class DocMilestone:
    name: str
    criteria: dict[str, Any] | None  # canonical JSON; None for a remaining users split
    remaining: bool = False
    connections: tuple[DocConnection, ...] = ()
    children: tuple[DocMilestone, ...] = ()
    id: int | None = None


@dataclass(frozen=True)
class JourneyDocument:
    name: str
    inputs: tuple[str, ...] | None  # None: every input existing at creation (left alone on update)
    milestones: tuple[DocMilestone, ...] = ()
    calculated_attributes: tuple[dict[str, Any], ...] = ()
    id: int | None = None

    def walk(self) -> list[tuple[tuple[str, ...], DocMilestone]]:
        """Every milestone with the names of its ancestors, parents before children, in order."""
        out: list[tuple[tuple[str, ...], DocMilestone]] = []

        def visit(path: tuple[str, ...], nodes: tuple[DocMilestone, ...]) -> None:
            for m in nodes:
                out.append((path, m))
                visit((*path, m.name), m.children)

        visit((), self.milestones)
        return out


# ---- criteria in canonical form --------------------------------------------------------------------


_LAST = ("op", "value", "values", "min", "max")


def _type_first(obj: Any) -> Any:
    """Canonical JSON in reading order: `type` first, a leaf's operator and value last (content unchanged)."""
    if isinstance(obj, dict):
        keys = sorted(obj, key=lambda k: (k != "type", _LAST.index(k) if k in _LAST else -1))
        return {k: _type_first(obj[k]) for k in keys}
    if isinstance(obj, list):
        return [_type_first(x) for x in obj]
    return obj


def canonical(criteria: object) -> dict[str, Any]:
    """Validated criteria in canonical JSON (InvalidCriteria names the offending part)."""
    out: dict[str, Any] = _type_first(to_json(parse_criteria(criteria)))
    return out


def map_audience_leaves(criteria: Any, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """A copy of criteria JSON with every `audience` leaf replaced by `change(leaf)`."""
    if isinstance(criteria, dict):
        if criteria.get("type") == "audience":
            return change(dict(criteria))
        return {k: map_audience_leaves(v, change) for k, v in criteria.items()}
    if isinstance(criteria, list):
        return [map_audience_leaves(x, change) for x in criteria]
    return criteria


def audience_leaves(criteria: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def keep(leaf: dict[str, Any]) -> dict[str, Any]:
        found.append(leaf)
        return leaf

    map_audience_leaves(criteria, keep)
    return found


def named_references(criteria: dict[str, Any], names: AudienceNames) -> dict[str, Any]:
    """Stored criteria with `audience_id` leaves rewritten to `journey` + `milestone` names."""

    def rename(leaf: dict[str, Any]) -> dict[str, Any]:
        audience_id = leaf.get("audience_id")
        found = names(audience_id) if isinstance(audience_id, int) else None
        if found is None:
            return leaf
        rest = {k: v for k, v in leaf.items() if k not in ("type", "audience_id")}
        return {"type": "audience", "journey": found[0], "milestone": found[1], **rest}

    out: dict[str, Any] = map_audience_leaves(criteria, rename)
    return out


# ---- reading -----------------------------------------------------------------------------------------


class DocumentError(InvalidRequest):
    """The file is not a valid journey document; `problems` lists every issue found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_yaml(text: str) -> JourneyDocument:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DocumentError([f"not valid YAML: {exc}"]) from None
    return parse_document(raw)


def parse_document(raw: object) -> JourneyDocument:
    """Check a journey document and return it with criteria in canonical form; DocumentError lists problems."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise DocumentError(["a journey document is a mapping with name, inputs and milestones"])
    _unknown(raw, {"id", "name", "inputs", "milestones", "calculated_attributes"}, "the document", problems)
    name = _name(raw.get("name"), "name", problems)
    journey_id = _id(raw.get("id"), "id", problems)
    inputs: tuple[str, ...] | None = None
    if raw.get("inputs") is not None:
        if not isinstance(raw["inputs"], list) or not all(isinstance(i, str) for i in raw["inputs"]):
            problems.append("inputs: a list of input names")
        else:
            inputs = tuple(i.strip() for i in raw["inputs"])
            if not inputs:
                problems.append("inputs: a journey selects at least one input (leave it out for every input)")
    calcs: list[dict[str, Any]] = []
    for i, c in enumerate(_list(raw.get("calculated_attributes"), "calculated_attributes", problems)):
        try:
            calcs.append(calculated_attribute_json(parse_calculated_attribute(c)))
        except MilepostError as exc:
            problems.append(f"calculated_attributes[{i}]: {exc.message}")
    milestones = _milestones(raw.get("milestones"), "milestones", problems)
    seen: dict[str, str] = {}
    doc = JourneyDocument(name, inputs, milestones, tuple(calcs), journey_id)
    for path, m in doc.walk():
        where = " / ".join((*path, m.name))
        if name_key(m.name) in seen:
            problems.append(f"{where}: milestone names are unique in a journey ({seen[name_key(m.name)]!r})")
        seen[name_key(m.name)] = where
    if problems:
        raise DocumentError(problems)
    return doc


def _milestones(raw: object, path: str, problems: list[str]) -> tuple[DocMilestone, ...]:
    out: list[DocMilestone] = []
    items = _list(raw, path, problems)
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: a milestone is a mapping with name and criteria")
            continue
        _unknown(item, {"id", "name", "criteria", "remaining", "connections", "children"}, where, problems)
        name = _name(item.get("name"), f"{where}.name", problems)
        where = f"{path}[{i}] ({name})" if name else where
        remaining = item.get("remaining", False)
        if not isinstance(remaining, bool):
            problems.append(f"{where}.remaining: true or false")
            remaining = False
        criteria: dict[str, Any] | None = None
        if remaining:
            if item.get("criteria") is not None:
                problems.append(f"{where}: a remaining users split has no criteria of its own")
            if i != len(items) - 1:
                problems.append(f"{where}: a remaining users split is always the last of its siblings")
            if i == 0:
                problems.append(f"{where}: a remaining users split needs a milestone before it")
        elif item.get("criteria") is None:
            problems.append(
                f"{where}: criteria are required (or remaining: true for a remaining users split)"
            )
        else:
            try:
                criteria = canonical(item["criteria"])
            except MilepostError as exc:
                problems.append(f"{where}.criteria: {exc.message}")
        connections = _connections(item.get("connections"), f"{where}.connections", problems)
        children = _milestones(item.get("children"), f"{where}.children", problems)
        out.append(
            DocMilestone(
                name, criteria, remaining, connections, children, _id(item.get("id"), where, problems)
            )
        )
    return tuple(out)


def _connections(raw: object, path: str, problems: list[str]) -> tuple[DocConnection, ...]:
    out: list[DocConnection] = []
    seen: set[str] = set()
    for i, item in enumerate(_list(raw, path, problems)):
        where = f"{path}[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: a connection is a mapping {{output, status}}")
            continue
        _unknown(item, {"output", "status", "settings", "on_deactivate"}, where, problems)
        output = _name(item.get("output"), f"{where}.output", problems)
        status = item.get("status", "active")
        if status not in STATUSES:
            problems.append(f"{where}.status: one of {', '.join(STATUSES)} (got {status!r})")
        on_deactivate = item.get("on_deactivate", "keep")
        if on_deactivate not in ON_DEACTIVATE:
            problems.append(
                f"{where}.on_deactivate: one of {', '.join(ON_DEACTIVATE)} (got {on_deactivate!r})"
            )
        settings = item.get("settings") or {}
        if not isinstance(settings, dict):
            problems.append(f"{where}.settings: a mapping")
            settings = {}
        if output and name_key(output) in seen:
            problems.append(f"{where}: an audience connects to output {output!r} once")
        seen.add(name_key(output))
        out.append(DocConnection(output, str(status), settings, str(on_deactivate)))
    return tuple(out)


def _list(raw: object, path: str, problems: list[str]) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"{path}: a list")
        return []
    return raw


def _name(raw: object, path: str, problems: list[str]) -> str:
    if not isinstance(raw, str) or not raw.strip():
        problems.append(f"{path}: a non-empty name is required")
        return ""
    return raw.strip()


def _id(raw: object, path: str, problems: list[str]) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        problems.append(f"{path}: an id is a positive whole number (got {raw!r})")
        return None
    return raw


def _unknown(raw: dict[str, Any], allowed: set[str], where: str, problems: list[str]) -> None:
    extra = sorted(str(k) for k in raw if k not in allowed)
    if extra:
        problems.append(f"{where}: unknown field{'s' if len(extra) > 1 else ''} {', '.join(extra)}")


# ---- writing ----------------------------------------------------------------------------------------


def to_dict(doc: JourneyDocument, *, ids: bool = False) -> dict[str, Any]:
    """The document as plain data in file order; ids only when asked for."""

    def node(m: DocMilestone) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if ids and m.id is not None:
            out["id"] = m.id
        out["name"] = m.name
        if m.remaining:
            out["remaining"] = True
        else:
            out["criteria"] = m.criteria
        if m.connections:
            out["connections"] = [_connection(c) for c in m.connections]
        if m.children:
            out["children"] = [node(c) for c in m.children]
        return out

    out: dict[str, Any] = {}
    if ids and doc.id is not None:
        out["id"] = doc.id
    out["name"] = doc.name
    if doc.inputs is not None:
        out["inputs"] = list(doc.inputs)
    if doc.calculated_attributes:
        out["calculated_attributes"] = [_type_first(c) for c in doc.calculated_attributes]
    out["milestones"] = [node(m) for m in doc.milestones]
    return out


def _connection(c: DocConnection) -> dict[str, Any]:
    out: dict[str, Any] = {"output": c.output, "status": c.status}
    if c.settings:
        out["settings"] = c.settings
    if c.on_deactivate != "keep":
        out["on_deactivate"] = c.on_deactivate
    return out


class _Dumper(yaml.SafeDumper):
    """Block style for the tree, flow style for small mappings and lists (leaves, selectors)."""


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    flow = all(not isinstance(v, dict | list) or _small(v) for v in data.values()) and _small(data)
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _small(data: Any) -> bool:
    """Short leaves, selectors and connections read best on one line; the tree itself never."""
    if isinstance(data, dict):
        if any(k in data for k in ("milestones", "children", "criteria", "remaining", "all", "any", "not")):
            return False
        return _width(data) <= 90 and all(_small(v) for v in data.values())
    if isinstance(data, list):
        return _width(data) <= 90 and all(_small(v) for v in data)
    return True


def _width(data: Any) -> int:
    """Roughly how wide `data` is in YAML flow style."""
    if isinstance(data, dict):
        return 2 + sum(len(str(k)) + 4 + _width(v) for k, v in data.items())
    if isinstance(data, list):
        return 2 + sum(2 + _width(v) for v in data)
    return len(str(data))


_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(list, _represent_list)


def dump_yaml(doc: JourneyDocument, *, ids: bool = False) -> str:
    text: str = yaml.dump(
        to_dict(doc, ids=ids), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110
    )
    return text
