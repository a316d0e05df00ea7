"""How CLI commands find a running server on the same data directory, and the local CLI token."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

SERVER_FILE = "server.json"
CLI_TOKEN_FILE = "cli-token"


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    url: str


def write_server_info(data_dir: Path, host: str, port: int) -> None:
    path = data_dir / SERVER_FILE
    path.write_bytes(orjson.dumps({"pid": os.getpid(), "url": f"http://{host}:{port}"}))


def clear_server_info(data_dir: Path) -> None:
    path = data_dir / SERVER_FILE
    try:
        if orjson.loads(path.read_bytes()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def running_server(data_dir: Path) -> ServerInfo | None:
    """The server serving this data directory, if one is alive and answering."""
    try:
        info = orjson.loads((data_dir / SERVER_FILE).read_bytes())
        pid, url = int(info["pid"]), str(info["url"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
            return ServerInfo(pid, url)
    except httpx.HTTPError:
        return None
    return None


def save_cli_token(data_dir: Path, token: str) -> None:
    path = data_dir / CLI_TOKEN_FILE
    path.write_text(token)
    path.chmod(0o600)


def load_cli_token(data_dir: Path) -> str | None:
    env = os.environ.get("MILEPOST_TOKEN")
    if env:
        return env
    try:
        return (data_dir / CLI_TOKEN_FILE).read_text().strip()
    except OSError:
        return None
