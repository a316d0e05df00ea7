"""The demo account layout: workspaces and the inputs that feed them."""

from __future__ import annotations

from dataclasses import dataclass, field

PLATFORMS: tuple[str, ...] = ("ios", "android", "web", "server", "feed")
CLIENT_PLATFORMS: frozenset[str] = frozenset({"ios", "android", "web"})
MOBILE_PLATFORMS: frozenset[str] = frozenset({"ios", "android"})
VERTICALS: tuple[str, ...] = ("media", "retail")


@dataclass(frozen=True, slots=True)
class InputPlan:
    """One input of a workspace: a unique name and the platform it sends from."""

    name: str
    platform: str

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ValueError(f"unknown platform {self.platform!r} for input {self.name!r}")


@dataclass(frozen=True, slots=True)
class WorkspacePlan:
    """A workspace, its inputs and the kind of business it models (media or retail)."""

    name: str
    inputs: list[InputPlan] = field(default_factory=list)
    vertical: str = "media"

    def __post_init__(self) -> None:
        if self.vertical not in VERTICALS:
            raise ValueError(f"unknown vertical {self.vertical!r} for workspace {self.name!r}")


@dataclass(frozen=True, slots=True)
class PlacedInput:
    """An input with its position in the flattened layout and its workspace."""

    index: int
    workspace_index: int
    workspace: WorkspacePlan
    input: InputPlan
    name: str
    platform: str


def demo_layout() -> list[WorkspacePlan]:
    """The demo account: a streaming service and a retail shop."""
    return [
        WorkspacePlan(
            "Streaming",
            [InputPlan("web", "web"), InputPlan("ios", "ios"), InputPlan("android", "android")],
            "media",
        ),
        WorkspacePlan(
            "Retail",
            [InputPlan("web_store", "web"), InputPlan("server", "server"), InputPlan("crm_feed", "feed")],
            "retail",
        ),
    ]


def flatten(layout: list[WorkspacePlan]) -> list[PlacedInput]:
    """All inputs of a layout in order; input names must be unique across the account."""
    placed: list[PlacedInput] = []
    seen: set[str] = set()
    for ws_index, ws in enumerate(layout):
        for inp in ws.inputs:
            if inp.name in seen:
                raise ValueError(f"duplicate input name {inp.name!r}")
            seen.add(inp.name)
            placed.append(PlacedInput(len(placed), ws_index, ws, inp, inp.name, inp.platform))
    if not placed:
        raise ValueError("the layout has no inputs")
    return placed


def layout_to_json(layout: list[WorkspacePlan]) -> list[dict[str, object]]:
    """A JSON-ready description of a layout."""
    return [
        {
            "name": ws.name,
            "vertical": ws.vertical,
            "inputs": [{"name": i.name, "platform": i.platform} for i in ws.inputs],
        }
        for ws in layout
    ]
