"""The `milepost` command (SPEC §7), run as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import httpx
import pytest
from tests.support.server import Server, free_port, init_data_dir, running_server

pytestmark = pytest.mark.api

MILEPOST = [sys.executable, "-m", "milepost"]
# Wide, colourless output so messages are not wrapped or decorated.
CLI_ENV = {"COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"}


def milepost(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **CLI_ENV}
    env.pop("MILEPOST_DATA_DIR", None)
    env.pop("MILEPOST_TOKEN", None)
    return subprocess.run(
        [*MILEPOST, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def store_rows(data_dir: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(data_dir / "store" / "store.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def batch_line(mpid: int, marker: str, **extra: object) -> str:
    batch = {
        "mpid": mpid,
        "user_attributes": {"imported": True},
        "events": [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "imported",
                    "custom_event_type": "other",
                    "custom_attributes": {"marker": marker},
                },
            }
        ],
        **extra,
    }
    return json.dumps(batch)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def markers_in_store(data_dir: Path) -> list[str]:
    return [r[0] for r in store_rows(data_dir, "SELECT json_extract_string(attrs, '$.marker') FROM events")]


# ---- init -------------------------------------------------------------------------------------


def test_init_json_prints_exactly_the_credentials(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = milepost("init", "--data-dir", data_dir, "--json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)  # stdout is the JSON document and nothing else
    assert result.stdout.strip().count("\n") == 0
    assert set(created) == {"admin_token", "workspace", "input"}
    assert set(created["workspace"]) == {"id", "name"}
    assert set(created["input"]) == {"id", "name", "platform", "key", "secret"}
    assert isinstance(created["admin_token"], str) and created["admin_token"]
    assert isinstance(created["workspace"]["id"], int)
    assert created["input"]["name"] == "web"
    assert created["input"]["platform"] == "web"
    assert created["input"]["key"] and created["input"]["secret"]
    assert (data_dir / "cli-token").exists()

    # The printed credentials work against a server on that directory.
    server = Server(data_dir, free_port())
    server.start()
    try:
        headers = {"Authorization": f"Bearer {created['admin_token']}"}
        inputs = httpx.get(f"{server.url}/api/v1/inputs", headers=headers).json()["inputs"]
        assert [(i["id"], i["name"], i["key"]) for i in inputs] == [
            (created["input"]["id"], "web", created["input"]["key"])
        ]
        workspaces = httpx.get(f"{server.url}/api/v1/workspaces", headers=headers).json()["workspaces"]
        assert [(w["id"], w["name"]) for w in workspaces] == [
            (created["workspace"]["id"], created["workspace"]["name"])
        ]
        batch = [json.loads(batch_line(11, "init-check"))]
        auth = (created["input"]["key"], created["input"]["secret"])
        assert httpx.post(f"{server.url}/v2/bulkevents", json=batch, auth=auth).status_code == 202
    finally:
        server.stop()


def test_second_init_fails_clearly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = milepost("init", "--data-dir", data_dir, "--json")
    assert first.returncode == 0, first.stderr
    token_before = (data_dir / "cli-token").read_text()

    for extra in (["--json"], []):
        again = milepost("init", "--data-dir", data_dir, *extra)
        assert again.returncode != 0
        assert "already initialised" in again.stderr
        assert again.stdout.strip() == ""
    assert (data_dir / "cli-token").read_text() == token_before


def test_init_honours_milepost_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "from-env"
    env = {**os.environ, **CLI_ENV, "MILEPOST_DATA_DIR": str(data_dir)}
    result = subprocess.run(
        [*MILEPOST, "init", "--json"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (data_dir / "cli-token").exists()


# ---- generate ---------------------------------------------------------------------------------


def test_generate_writes_jsonl_per_input_and_a_manifest(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    result = milepost("generate", "--out", out, "--users", "50", "--days", "5", "--seed", "3")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3
    assert manifest["users"] == 50
    assert manifest["days"] == 5
    assert manifest["files"], manifest
    total = 0
    for name, filename in manifest["files"].items():
        assert filename == f"{name}.jsonl"
        path = out / filename
        assert path.exists()
        lines = path.read_bytes().splitlines()
        assert len(lines) == manifest["batches"][name]
        total += len(lines)
        events = 0
        for line in lines:
            batch = json.loads(line)
            assert isinstance(batch, dict)
            assert batch.get("mpid") or batch.get("user_identities"), batch
            events += len(batch["events"])
        assert events == manifest["events"][name]
    assert total > 0
    assert {p.name for p in out.iterdir()} == {"manifest.json", *manifest["files"].values()}


def test_generate_is_deterministic_by_seed(tmp_path: Path) -> None:
    runs = []
    for run in ("a", "b"):
        out = tmp_path / run
        result = milepost("generate", "--out", out, "--users", "50", "--days", "5", "--seed", "3")
        assert result.returncode == 0, result.stderr
        runs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
        time.sleep(1.1)  # a run a little later must still give the same bytes
    assert runs[0].keys() == runs[1].keys()
    different = [name for name in runs[0] if runs[0][name] != runs[1][name]]
    assert different == [], f"same seed, different bytes in {different}"

    other = tmp_path / "other-seed"
    assert milepost("generate", "--out", other, "--users", "50", "--days", "5", "--seed", "4").returncode == 0
    assert (other / "web.jsonl").read_bytes() != runs[0]["web.jsonl"]


# ---- import without a server ------------------------------------------------------------------


def test_import_without_a_server_loads_the_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    creds = init_data_dir(data_dir)
    markers = [f"m-{i}" for i in range(250)]  # more than one bulk chunk of 100
    path = write_lines(
        tmp_path / "batches.jsonl", [batch_line(100 + i % 40, m) for i, m in enumerate(markers)]
    )

    result = milepost("import", path, "--input", "web", "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    assert "250 batches imported" in result.stderr
    assert "0 lines rejected" in result.stderr

    rows = store_rows(data_dir, "SELECT request_id, input_id, endpoint FROM batches")
    assert len(rows) == 250
    assert {r[1] for r in rows} == {creds["input"]["id"]}
    assert {r[2] for r in rows} == {"events"}  # real-time, not historical
    request_ids = [r[0] for r in rows]
    assert len(set(request_ids)) == 250
    assert all(rid.startswith("import:") for rid in request_ids)
    assert {int(rid.rsplit(":", 1)[1]) for rid in request_ids} == set(range(1, 251))
    assert sorted(markers_in_store(data_dir)) == sorted(markers)
    assert store_rows(data_dir, "SELECT count(*) FROM users")[0][0] == 40

    # The data is there for a server started afterwards.
    with_server = Server(data_dir, free_port())
    with_server.start()
    try:
        headers = {"Authorization": f"Bearer {creds['admin_token']}"}
        profile = httpx.get(f"{with_server.url}/api/v1/users/100", headers=headers)
        assert profile.status_code == 200, profile.text
        assert profile.json()["attributes"] == {"imported": True}
        assert profile.json()["event_counts"]["realtime"] == len(range(0, 250, 40))
    finally:
        with_server.stop()


def test_import_keeps_a_source_request_id_given_in_the_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir)
    path = write_lines(
        tmp_path / "own-ids.jsonl",
        [
            batch_line(7, "own-1", source_request_id="mine-1"),
            batch_line(7, "own-2", source_request_id="mine-1"),
        ],
    )
    result = milepost("import", path, "--input", "web", "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    # The second line repeats an accepted request id: acknowledged and dropped.
    assert store_rows(data_dir, "SELECT request_id FROM batches") == [("mine-1",)]
    assert markers_in_store(data_dir) == ["own-1"]


def test_import_reports_rejected_lines(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir)
    lines = [
        batch_line(1, "ok-1"),  # 1
        "{not json",  # 2
        batch_line(0, "zero-mpid"),  # 3: mpid 0 is refused
        batch_line(2, "ok-2"),  # 4
        json.dumps({"mpid": 3, "events": [{"event_type": "teleport", "data": {}}]}),  # 5
        "",  # 6: blank lines are skipped, not rejected
        json.dumps({"mpid": 4, "events": [{"event_type": "custom_event", "data": {"event_name": "x"}}]}),  # 7
        batch_line(5, "ok-3"),  # 8
    ]
    path = write_lines(tmp_path / "mixed.jsonl", lines)

    result = milepost("import", path, "--input", "web", "--data-dir", data_dir)
    assert result.returncode != 0, "an import with rejected lines must exit non-zero"
    err = result.stderr
    assert "3 batches imported" in err
    assert "4 lines rejected" in err
    rejected = {
        int(line.split("line ")[1].split(":")[0])
        for line in err.splitlines()
        if line.strip().startswith("line ")
    }
    assert rejected == {2, 3, 5, 7}, err
    reason = {n: next(x for x in err.splitlines() if x.strip().startswith(f"line {n}:")) for n in rejected}
    assert "JSON" in reason[2]
    assert "mpid" in reason[3]
    assert "teleport" in reason[5] or "event_type" in reason[5]
    assert "custom_event_type" in reason[7]

    # The valid lines are stored all the same.
    assert sorted(markers_in_store(data_dir)) == ["ok-1", "ok-2", "ok-3"]
    ids = sorted(r[0] for r in store_rows(data_dir, "SELECT request_id FROM batches"))
    assert [int(i.rsplit(":", 1)[1]) for i in ids] == [1, 4, 8]


def test_import_into_an_unknown_input_fails(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir)
    path = write_lines(tmp_path / "b.jsonl", [batch_line(1, "x")])
    result = milepost("import", path, "--input", "no-such-input", "--data-dir", data_dir)
    assert result.returncode != 0
    assert "no-such-input" in result.stderr
    assert "Traceback" not in result.stderr
    assert store_rows(data_dir, "SELECT count(*) FROM batches")[0][0] == 0


def test_import_on_an_uninitialised_dir_fails(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "b.jsonl", [batch_line(1, "x")])
    result = milepost("import", path, "--input", "web", "--data-dir", tmp_path / "nothing-here")
    assert result.returncode != 0
    assert "not initialised" in result.stderr


# ---- import through a running server ----------------------------------------------------------


def test_import_goes_through_a_running_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    markers = [f"srv-{i}" for i in range(150)]
    path = write_lines(tmp_path / "live.jsonl", [batch_line(500 + i % 10, m) for i, m in enumerate(markers)])
    bad = write_lines(tmp_path / "live-bad.jsonl", [batch_line(600, "srv-ok"), "[1, 2"])
    with running_server(data_dir) as (server, creds):
        # The server holds the store: nobody else can open it, so a successful import went through it.
        with pytest.raises(duckdb.Error):
            store_rows(data_dir, "SELECT 1")

        result = milepost("import", path, "--input", "web", "--data-dir", data_dir)
        assert result.returncode == 0, result.stderr
        assert "150 batches imported" in result.stderr

        headers = {"Authorization": f"Bearer {creds['admin_token']}"}
        for mpid in range(500, 510):
            profile = httpx.get(f"{server.url}/api/v1/users/{mpid}", headers=headers)
            assert profile.status_code == 200, profile.text
            assert profile.json()["event_counts"]["realtime"] == 15
        metrics = httpx.get(f"{server.url}/metrics").text
        assert (
            f'milepost_ingest_batches_accepted_total{{input="{creds["input"]["id"]}",endpoint="bulkevents"}} 150'
            in metrics
        )

        result = milepost("import", bad, "--input", "web", "--data-dir", data_dir)
        assert result.returncode != 0
        assert "line 2:" in result.stderr
        assert httpx.get(f"{server.url}/api/v1/users/600", headers=headers).status_code == 200

        result = milepost("import", path, "--input", "nope", "--data-dir", data_dir)
        assert result.returncode != 0
        assert "nope" in result.stderr
        assert httpx.get(f"{server.url}/healthz").status_code == 200

    assert sorted(markers_in_store(data_dir)) == sorted([*markers, "srv-ok"])


# ---- resumability and de-duplication ----------------------------------------------------------


def _progress_file(data_dir: Path, path: Path) -> Path:
    return data_dir / "imports" / f"{path.resolve().name}.web.progress.json"


def test_running_the_same_import_twice_stores_nothing_new(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir)
    markers = [f"twice-{i}" for i in range(230)]
    path = write_lines(tmp_path / "twice.jsonl", [batch_line(1 + i % 5, m) for i, m in enumerate(markers)])

    first = milepost("import", path, "--input", "web", "--data-dir", data_dir)
    assert first.returncode == 0, first.stderr
    assert store_rows(data_dir, "SELECT count(*) FROM batches")[0][0] == 230

    # Rerun as is: the progress file says everything was sent.
    second = milepost("import", path, "--input", "web", "--data-dir", data_dir)
    assert second.returncode == 0, second.stderr
    assert "resumed after line 230" in second.stderr

    # Rerun without the progress file: every chunk is sent again, and de-duplicated by the
    # `import:<file>:<line>` request ids.
    _progress_file(data_dir, path).unlink()
    third = milepost("import", path, "--input", "web", "--data-dir", data_dir)
    assert third.returncode == 0, third.stderr

    rows = store_rows(data_dir, "SELECT request_id FROM batches")
    assert len(rows) == 230
    assert len({r[0] for r in rows}) == 230
    assert sorted(markers_in_store(data_dir)) == sorted(markers)


def test_import_resumes_after_a_crash_between_commit_and_progress(tmp_path: Path) -> None:
    """A crash after a chunk was stored but before the progress file moved: the rerun resends it,
    and request-id de-duplication keeps it stored once."""
    data_dir = tmp_path / "data"
    init_data_dir(data_dir)
    markers = [f"resume-{i}" for i in range(350)]
    path = write_lines(tmp_path / "resume.jsonl", [batch_line(1 + i % 7, m) for i, m in enumerate(markers)])
    assert milepost("import", path, "--input", "web", "--data-dir", data_dir).returncode == 0

    progress = _progress_file(data_dir, path)
    saved = json.loads(progress.read_text())
    assert saved["line"] == 350
    progress.write_text(json.dumps({**saved, "line": 100}))  # as if the crash came after chunk 1

    rerun = milepost("import", path, "--input", "web", "--data-dir", data_dir)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed after line 100" in rerun.stderr
    assert "250 batches imported" in rerun.stderr
    assert json.loads(progress.read_text())["line"] == 350

    rows = store_rows(data_dir, "SELECT request_id FROM batches")
    assert len(rows) == len({r[0] for r in rows}) == 350
    assert sorted(markers_in_store(data_dir)) == sorted(markers)


@pytest.mark.parametrize(
    "torn", [b"", b'{"file": "abc", "li', b"\x00\x00\x00"], ids=["empty", "cut-short", "zeros"]
)
def test_import_recovers_from_a_torn_progress_file(tmp_path: Path, torn: bytes) -> None:
    """A kill while the progress file is being rewritten leaves it empty or cut short; the next
    run must still import (from the start: request-id de-duplication makes that safe)."""
    data_dir = tmp_path / "data"
    init_data_dir(data_dir)
    markers = [f"torn-{i}" for i in range(120)]
    path = write_lines(tmp_path / "torn.jsonl", [batch_line(1 + i % 3, m) for i, m in enumerate(markers)])
    assert milepost("import", path, "--input", "web", "--data-dir", data_dir).returncode == 0
    progress = _progress_file(data_dir, path)
    progress.write_bytes(torn)

    rerun = milepost("import", path, "--input", "web", "--data-dir", data_dir)
    assert rerun.returncode == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    rows = store_rows(data_dir, "SELECT request_id FROM batches")
    assert len(rows) == len({r[0] for r in rows}) == 120
    assert sorted(markers_in_store(data_dir)) == sorted(markers)


def test_import_killed_midway_completes_exactly_once_on_rerun(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir)
    total = 6000
    markers = [f"kill-{uuid.uuid4().hex}" for _ in range(total)]
    path = write_lines(tmp_path / "big.jsonl", [batch_line(1 + i % 50, m) for i, m in enumerate(markers)])
    progress = _progress_file(data_dir, path)

    env = {**os.environ, **CLI_ENV}
    proc = subprocess.Popen(
        [*MILEPOST, "import", str(path), "--input", "web", "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.exists():
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    if proc.returncode == 0:
        pytest.skip("the import finished before it could be interrupted")

    try:
        line_at_kill = json.loads(progress.read_text())["line"] if progress.exists() else 0
    except ValueError:
        line_at_kill = None  # a torn progress file; the rerun must cope with it
    assert line_at_kill is None or line_at_kill < total

    rerun = milepost("import", path, "--input", "web", "--data-dir", data_dir)
    assert rerun.returncode == 0, rerun.stderr
    rows = store_rows(data_dir, "SELECT request_id FROM batches")
    assert len(rows) == total
    assert len({r[0] for r in rows}) == total
    stored = markers_in_store(data_dir)
    assert len(stored) == total
    assert set(stored) == set(markers)


# ---- serve ------------------------------------------------------------------------------------


def test_serve_on_an_uninitialised_dir_fails(tmp_path: Path) -> None:
    data_dir = tmp_path / "empty"
    result = milepost("serve", "--data-dir", data_dir, "--port", str(free_port()), timeout=60)
    assert result.returncode != 0
    assert "not initialised" in result.stderr
    assert "milepost init" in result.stderr


def test_second_serve_on_the_same_dir_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir) as (server, _creds):
        info_before = (data_dir / "server.json").read_text()
        result = milepost("serve", "--data-dir", data_dir, "--port", str(free_port()), timeout=60)
        assert result.returncode != 0
        assert "another" in result.stderr and "process" in result.stderr, result.stderr
        assert "store" in result.stderr
        assert "Traceback" not in result.stderr
        # The first server is untouched and still the one the CLI finds.
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        assert (data_dir / "server.json").read_text() == info_before


def test_a_malformed_setting_fails_clearly(tmp_path: Path) -> None:
    env = {**os.environ, **CLI_ENV, "MILEPOST_STORE_THREADS": "two"}
    result = subprocess.run(
        [*MILEPOST, "init", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "MILEPOST_STORE_THREADS must be a whole number" in result.stderr
    assert not (tmp_path / "data").exists()
