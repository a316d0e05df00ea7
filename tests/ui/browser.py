"""Headless Chromium (the system's package, never a downloaded browser) against a real server with demo data."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.server import Server, free_port, init_data_dir

CHROMIUM = os.environ.get("MILEPOST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def load_demo_data(data_dir: Path, users: int, days: int) -> None:
    """The demo account (two workspaces, example journeys) with `users` synthetic users, loaded in-process."""
    from milepost.config import Config
    from milepost.demo import load_demo

    load_demo(Config.from_env(data_dir), users=users, days=days)


@contextmanager
def demo_server(
    data_dir: Path, *, users: int = 300, days: int = 7, env: dict[str, str] | None = None
) -> Iterator[tuple[Server, dict[str, Any]]]:
    """`milepost init`, demo data, then `milepost serve`; yields the server and init's credentials."""
    env = {"MILEPOST_ALLOW_PRIVATE_OUTPUTS": "1", **(env or {})}
    creds = init_data_dir(data_dir, env)
    load_demo_data(data_dir, users, days)
    server = Server(data_dir, free_port(), env)
    server.start(timeout=60)
    try:
        yield server, creds
    finally:
        server.stop()


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.bodies.append(self.rfile.read(length))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback HTTP endpoint that accepts every webhook POST; yields its URL and the bodies received."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    httpd.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", httpd.bodies  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


def sign_in(page: Any, base_url: str, token: str) -> None:
    page.goto(f"{base_url}/signin")
    page.fill("#token", token)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{base_url}/journeys")
