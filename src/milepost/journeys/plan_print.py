"""The plan of `milepost journeys apply`, printed for a person to confirm."""

from __future__ import annotations

from typing import Any

from milepost.journeys.code import Plan

STYLE = {
    "add": ("+", "green"),
    "connect": ("+", "green"),
    "activate": ("↑", "green"),
    "change": ("~", "yellow"),
    "move": ("↕", "yellow"),
    "remove": ("-", "red"),
    "disconnect": ("-", "red"),
    "deactivate": ("↓", "red"),
    "credits": ("=", "cyan"),
}


def print_plan(plan: Plan, console: Any) -> None:
    """The plan as Rich text: one line per change, dry-run effects on activated audiences under it."""
    from rich.markup import escape

    target = f"journey {plan.document.name!r}" + (f" (id {plan.live.id})" if plan.live else " (new)")
    console.print(f"[bold]Plan for {escape(target)}[/bold]")
    for line in plan.lines:
        symbol, colour = STYLE.get(line.kind, ("·", "white"))
        console.print(f"  [{colour}]{symbol}[/{colour}] {escape(line.text)}")
        for row in line.effects:
            console.print(
                f"      [dim]{escape(row['journey'])} / {escape(row['milestone'])} (activated): "
                f"+{row['enter']:,} enter, −{row['leave']:,} leave[/dim]"
            )
        if line.note:
            console.print(f"      [dim]{escape(line.note)}[/dim]")
    for warning in plan.warnings:
        console.print(f"  [yellow]warning:[/yellow] {escape(warning)}")
