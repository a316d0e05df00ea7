"""A real, throwaway PostgreSQL server for tests.

initdb and pg_ctl refuse to run as root, so under root (as in CI) they run as the `postgres` user
on a directory that user owns.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

DATABASE = "milepost_test"
SERVER_USER = "postgres"


def postgres_bin_dir() -> Path:
    """The bin directory of the newest installed PostgreSQL, or a RuntimeError saying how to get one."""
    candidates = [path for path in Path("/usr/lib/postgresql").glob("*/bin") if (path / "initdb").exists()]
    if not candidates:
        found = shutil.which("initdb")
        if found:
            return Path(found).parent
        raise RuntimeError(
            "PostgreSQL server binaries (initdb, pg_ctl) were not found under /usr/lib/postgresql/*/bin "
            "or on PATH; install them with `apt-get install postgresql` to run the PostgreSQL tests"
        )

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())

    return max(candidates, key=version)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(args: list[str], as_root_user: bool) -> None:
    command = ["runuser", "-u", SERVER_USER, "--", *args] if as_root_user else args
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed with exit code {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """Start a throwaway server and yield `postgresql+psycopg://postgres@127.0.0.1:PORT/milepost_test`."""
    bin_dir = postgres_bin_dir()
    as_root = os.geteuid() == 0
    # tempfile under /tmp, opened to others so the postgres user can reach its data directory.
    base = Path(tempfile.mkdtemp(prefix="milepost-pg-", dir="/tmp"))
    base.chmod(0o755)
    data_dir = base / "data"
    data_dir.mkdir(mode=0o700)
    if as_root:
        account = pwd.getpwnam(SERVER_USER)
        for path in (base, data_dir):
            os.chown(path, account.pw_uid, account.pw_gid)
    port = free_port()
    try:
        _run(
            [str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres", "-E", "UTF8"],
            as_root,
        )
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base} -c fsync=off"
        _run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data_dir),
                "-l",
                str(base / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            as_root,
        )
        create_database(f"postgresql://postgres@127.0.0.1:{port}/postgres", DATABASE)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        try:
            # Also stops a server whose start timed out but which did come up.
            if (data_dir / "postmaster.pid").exists():
                _run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "stop"], as_root)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def create_database(admin_url: str, name: str) -> None:
    """Create database `name` through the server that `admin_url` (a libpq URL) points at."""
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def fresh_database(url: str, name: str) -> str:
    """Create database `name` on the server of SQLAlchemy URL `url` and return a URL to it."""
    head, _, _ = url.rpartition("/")
    create_database(head.replace("postgresql+psycopg://", "postgresql://", 1) + "/postgres", name)
    return f"{head}/{name}"
