"""The `milepost` command: thin wrappers over the same services the API uses."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from milepost.clock import DAY_MS
from milepost.config import DEFAULT_PORT, Config
from milepost.errors import MilepostError
from milepost.local import load_cli_token, running_server, save_cli_token

app = typer.Typer(help="Milepost: journey orchestration on real-time audiences.", no_args_is_help=True)
console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="MILEPOST_DATA_DIR", help="Data directory (default ./milepost-data)"),
]


def _config(data_dir: Path | None) -> Config:
    try:
        return Config.from_env(data_dir)
    except MilepostError as exc:
        raise _fail(exc.message) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _initialise(config: Config) -> dict[str, Any] | None:
    """Create the default workspace, input and admin token; None if already initialised."""
    from milepost.catalog import Catalog

    config.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(config.catalog_url)
    try:
        if catalog.list_workspaces():
            return None
        ws = catalog.create_workspace("Default")
        inp, secret = catalog.create_input(ws.id, "web", "web")
        _, admin = catalog.create_token("admin", "admin")
        _, cli_token = catalog.create_token("local-cli", "admin")
        save_cli_token(config.data_dir, cli_token)
    finally:
        catalog.close()
    return {
        "admin_token": admin,
        "workspace": {"id": ws.id, "name": ws.name},
        "input": {"id": inp.id, "name": inp.name, "platform": inp.platform, "key": inp.key, "secret": secret},
    }


@app.command()
def init(
    data_dir: DataDir = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the JSON of the created credentials")
    ] = False,
) -> None:
    """Create the data directory, a default workspace and input, and an admin token (printed once)."""
    config = _config(data_dir)
    try:
        created = _initialise(config)
    except MilepostError as exc:
        raise _fail(exc.message) from None
    if created is None:
        raise _fail(f"{config.data_dir} is already initialised")
    if as_json:
        sys.stdout.write(orjson.dumps(created).decode() + "\n")
        return
    inp = created["input"]
    console.print(f"Initialised [bold]{config.data_dir}[/bold]")
    console.print(f"Input '{inp['name']}' key:    {inp['key']}")
    console.print(f"Input '{inp['name']}' secret: {inp['secret']}   (shown once)")
    console.print(f"Admin API token:     {created['admin_token']}   (shown once)")


def _serve(config: Config, host: str, port: int) -> None:
    import uvicorn

    from milepost.api.app import create_app
    from milepost.clock import ManualClock
    from milepost.local import clear_server_info, write_server_info
    from milepost.runtime import Runtime

    clock = ManualClock(config.fake_clock_start_ms) if config.fake_clock_start_ms is not None else None
    runtime = Runtime.open(config, clock)
    app_ = create_app(runtime)
    _tune_gc()
    server = uvicorn.Server(uvicorn.Config(app_, host=host, port=port, log_level="warning", access_log=False))
    write_server_info(config.data_dir, host, port)
    console.print(f"Milepost serving {config.data_dir} at http://{host}:{port}")
    try:
        server.run()
    finally:
        clear_server_info(config.data_dir)


GC_YOUNG_THRESHOLD = 50_000


def _tune_gc() -> None:
    """Keep the cycle collector off the ingest path.

    The modules, schemas and catalog loaded at start-up live as long as the process; frozen, full
    collections no longer walk them (they took 10-25% of the server's CPU under ingest load). Each
    request's parsed body is acyclic and freed by reference counting, so a larger young generation
    mostly saves the collector from re-scanning bodies that are still waiting for their commit.
    """
    import gc

    gc.collect()
    gc.freeze()
    _, mid, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, mid, old)


def _require_initialised(config: Config) -> None:
    if not (config.data_dir / "cli-token").exists() and "MILEPOST_CATALOG_URL" not in os.environ:
        raise _fail(f"{config.data_dir} is not initialised; run `milepost init` first")


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = DEFAULT_PORT,
) -> None:
    """Serve the Events API, the management API and background work."""
    config = _config(data_dir)
    _require_initialised(config)
    try:
        _serve(config, host, port)
    except MilepostError as exc:
        raise _fail(exc.message) from None


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Directory for <input>.jsonl files and manifest.json")],
    users: Annotated[int, typer.Option(min=1, help="Number of users")] = 1000,
    days: Annotated[int, typer.Option(min=1, help="Days of activity, ending now")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data")] = 1,
    end_ms: Annotated[
        int | None, typer.Option(help="End of the span, epoch ms (default: the start of today, UTC)")
    ] = None,
) -> None:
    """Write synthetic mParticle batches (deterministic by seed and end time)."""
    from milepost.synthetic import write_jsonl

    if end_ms is None:
        end_ms = int(time.time() * 1000) // DAY_MS * DAY_MS
    counts = write_jsonl(out, seed=seed, users=users, days=days, end_ms=end_ms)
    for name, n in counts.items():
        console.print(f"{out / (name + '.jsonl')}: {n} batches")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL file, one batch per line")],
    input_name: Annotated[str, typer.Option("--input", help="Name of the input the batches arrive through")],
    data_dir: DataDir = None,
    historical: Annotated[bool, typer.Option(help="Send to the historical endpoint (analysis only)")] = False,
) -> None:
    """Import batches from a JSONL file, through the running server when there is one."""
    from milepost.importer import run_import

    config = _config(data_dir)
    _require_initialised(config)
    progress_file = config.data_dir / "imports" / f"{file.resolve().name}.{input_name}.progress.json"
    total = sum(1 for _ in file.open("rb"))
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} lines"),
        console=console,
    ) as bar:
        task = bar.add_task(f"importing {file.name}", total=total)
        with _batch_sender(config, input_name, historical) as send:
            report = run_import(
                file,
                send,
                progress_file,
                now_ms=int(time.time() * 1000),
                historical=historical,
                on_progress=lambda line: bar.update(task, completed=line),
            )
            bar.update(task, completed=total)
    if report.resumed_from_line:
        console.print(f"resumed after line {report.resumed_from_line}")
    console.print(f"{report.sent} batches imported, {len(report.rejected)} lines rejected")
    for lineno, reason in report.rejected[:50]:
        console.print(f"  line {lineno}: {reason}")
    if report.rejected:
        raise typer.Exit(2)


class _batch_sender:
    """Context manager yielding a send(body) callable: over HTTP to a running server, else in-process."""

    def __init__(self, config: Config, input_name: str, historical: bool) -> None:
        self.config, self.input_name, self.historical = config, input_name, historical

    def __enter__(self) -> Any:
        server = running_server(self.config.data_dir)
        if server is not None:
            token = load_cli_token(self.config.data_dir)
            self.client = httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            )
            resp = self.client.get("/api/v1/inputs")
            matches = [i for i in resp.json().get("inputs", []) if i["name"] == self.input_name]
            if not matches:
                raise _fail(f"no input named '{self.input_name}'")
            url = f"/api/v1/inputs/{matches[0]['id']}/batches"

            def send_http(body: bytes) -> None:
                for _ in range(100):
                    r = self.client.post(url, content=body, params={"historical": self.historical})
                    if r.status_code in (429, 503):
                        time.sleep(float(r.headers.get("Retry-After", "1")))
                        continue
                    if r.status_code != 202:
                        raise _fail(f"the server refused a chunk ({r.status_code}): {r.text[:500]}")
                    return
                raise _fail("the server stayed busy; run the import again to resume")

            return send_http
        from milepost.runtime import Runtime

        self.runtime = Runtime.open(self.config)
        self.runtime.start()
        try:
            inp = self.runtime.catalog.get_input(self.input_name)
        except MilepostError as exc:
            self.runtime.close()
            raise _fail(exc.message) from None
        self.loop = asyncio.new_event_loop()
        endpoint = "historical" if self.historical else "bulkevents"

        def send_local(body: bytes) -> None:
            self.loop.run_until_complete(
                self.runtime.ingest.accept_for_input(inp.id, body, endpoint, self.runtime.clock.now_ms())
            )

        return send_local

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "client"):
            self.client.close()
        if hasattr(self, "runtime"):
            self.loop.close()
            self.runtime.close()


@app.command()
def demo(
    data_dir: DataDir = None,
    users: Annotated[int, typer.Option(min=1, help="Synthetic users to load")] = 2000,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = DEFAULT_PORT,
) -> None:
    """Initialise (if needed), load synthetic demo data, and serve."""
    from milepost.demo import load_demo

    config = _config(data_dir)
    created = _initialise(config)
    if created is not None:
        console.print(f"Admin API token: {created['admin_token']}   (shown once)")
    try:
        summary = load_demo(config, users=users)
    except MilepostError as exc:
        raise _fail(exc.message) from None
    console.print(summary)
    _serve(config, host, port)


# ---- journeys as code -----------------------------------------------------------------------------

journeys_app = typer.Typer(
    help="Journeys as code: a journey as a YAML document (SPEC §7.1).", no_args_is_help=True
)
app.add_typer(journeys_app, name="journeys")


@journeys_app.command("export")
def journeys_export(
    journey: Annotated[str, typer.Argument(help="Journey id (or name)")],
    data_dir: DataDir = None,
    ids: Annotated[
        bool, typer.Option("--ids", help="Include ids, so apply matches this data directory's journey by id")
    ] = False,
) -> None:
    """Print a journey as a YAML document on standard output."""
    from milepost.journeys.backends import open_backend
    from milepost.journeys.code import export_document
    from milepost.journeys.documents import dump_yaml

    config = _config(data_dir)
    _require_initialised(config)
    ref: int | str = int(journey) if journey.isdigit() else journey
    try:
        with open_backend(config) as backend:
            document = export_document(backend, ref)
    except MilepostError as exc:
        raise _fail(exc.message) from None
    sys.stdout.write(dump_yaml(document, ids=ids))


@journeys_app.command("apply")
def journeys_apply(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Journey document (YAML)")],
    data_dir: DataDir = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking for confirmation")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing")] = False,
) -> None:
    """Create or update a journey to match a YAML document: print the plan, confirm, apply."""
    from milepost.journeys.backends import open_backend
    from milepost.journeys.code import apply_plan, gather
    from milepost.journeys.documents import DocumentError, load_yaml
    from milepost.journeys.plan_print import print_plan

    config = _config(data_dir)
    _require_initialised(config)
    out = Console()
    try:
        document = load_yaml(file.read_text())
    except DocumentError as exc:
        for problem in exc.problems:
            console.print(f"[red]error:[/red] {file}: {problem}")
        raise typer.Exit(1) from None
    try:
        with open_backend(config) as backend:
            plan = gather(document, backend)
            if plan.problems:
                console.print(f"[red]error:[/red] cannot apply {file}:")
                for problem in plan.problems:
                    console.print(f"  - {problem}")
                raise typer.Exit(1)
            if plan.empty:
                out.print(f"journey {document.name!r}: nothing to change")
                return
            print_plan(plan, out)
            if plan.over_limit:
                raise _fail(plan.credit_message)
            if dry_run:
                out.print("dry run: nothing changed")
                return
            if not yes and not _confirm(out, "Apply these changes?"):
                raise _fail("not applied")
            journey_id = apply_plan(plan, backend)
    except MilepostError as exc:
        raise _fail(exc.message) from None
    out.print(f"applied: journey {document.name!r} (id {journey_id}), {plan.changes} changes")


def _confirm(out: Console, question: str) -> bool:
    """Ask on standard input; no answer (no terminal, end of input) is no."""
    out.print(f"{question} \\[y/N] ", end="")
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        answer = ""
    if not answer:
        out.print()
        console.print("no answer on standard input; pass --yes to apply without asking")
    return answer.strip().lower() in ("y", "yes")


def main() -> None:
    app()
