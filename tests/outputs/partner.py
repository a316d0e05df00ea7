"""A recording partner for delivery tests: a real HTTP server that answers as it is told.

Each path has a script of statuses to answer in turn (then its default), or hangs until released.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG = -1


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def changes(self) -> list[dict[str, Any]]:
        return list(self.json["changes"])


@dataclass
class Route:
    default: int = 200
    script: list[int] = field(default_factory=list)
    retry_after: str | None = None
    refuse: Callable[[dict[str, Any]], bool] | None = None  # 400 for batches holding such a change
    reply: Callable[[Any], Any] | None = None  # the JSON answered for a request's JSON (default {})
    delay_s: float = 0.0  # a slow partner: wait this long before answering


class Partner:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        partner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the sender died mid-request: nothing was delivered, nothing to answer
                status, headers, answer, delay = partner._answer(self.path, body)
                if delay:
                    time.sleep(delay)
                if status == HANG:
                    partner.release.wait(30)
                    status = 200
                partner._record(self.path, dict(self.headers.items()), body, status)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def route(self, path: str, **kw: Any) -> Route:
        with self.lock:
            self.routes[path] = Route(**kw)
            return self.routes[path]

    def _answer(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes, float]:
        with self.lock:
            route = self.routes.setdefault(path, Route())
            status = route.script.pop(0) if route.script else route.default
            refuse = route.refuse
            if status == 200 and refuse is not None and any(refuse(c) for c in json.loads(body)["changes"]):
                status = 400
            headers = {"Retry-After": route.retry_after} if status == 429 and route.retry_after else {}
            answer = b"{}" if route.reply is None else json.dumps(route.reply(json.loads(body))).encode()
            return status, headers, answer, route.delay_s

    def _record(self, path: str, headers: dict[str, str], body: bytes, status: int) -> None:
        with self.lock:
            self.received.append(Received(path, headers, body, status, time.monotonic()))

    def requests(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def accepted(self, path: str) -> list[dict[str, Any]]:
        """Every change the partner acknowledged on `path`, in order."""
        return [c for r in self.requests(path) if r.status == 200 for c in r.changes]

    def wait(self, check: Callable[[], Any], timeout: float = 15.0, what: str = "the partner") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; received {self.received!r}")
            time.sleep(0.05)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
