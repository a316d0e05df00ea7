"""`milepost journeys export / apply` as real subprocesses, with and without a running server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.journeys.conftest import EXAMPLES, prepare
from tests.support.server import Server, free_port

from milepost.catalog import Catalog

MILEPOST = [sys.executable, "-m", "milepost"]
CLI_ENV = {"COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"}
CHURN = EXAMPLES / "churn-prevention.yaml"


def milepost(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **CLI_ENV}
    env.pop("MILEPOST_DATA_DIR", None)
    env.pop("MILEPOST_TOKEN", None)
    return subprocess.run(
        [*MILEPOST, *map(str, args)],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )


@pytest.fixture(params=["in-process", "server"])
def data_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A prepared data directory, served by a running server in the `server` case."""
    path = tmp_path / "data"
    prepare(path)
    if request.param == "in-process":
        yield path
        return
    server = Server(path, free_port())
    server.start()
    try:
        yield path
    finally:
        server.stop()


def test_apply_then_export_then_no_op(data_dir: Path) -> None:
    applied = milepost("journeys", "apply", CHURN, "--data-dir", data_dir, "--yes")
    assert applied.returncode == 0, applied.stderr
    assert "+ milestone High churn risk" in applied.stdout
    assert "+ connect High churn risk / No email open within 2 days → SMS provider" in applied.stdout
    assert "credits: 0 in use → 2" in applied.stdout
    assert "applied: journey 'Churn prevention'" in applied.stdout

    exported = milepost("journeys", "export", "1", "--data-dir", data_dir)
    assert exported.returncode == 0, exported.stderr
    doc = yaml.safe_load(exported.stdout)
    assert doc["name"] == "Churn prevention"
    assert doc["milestones"][0]["criteria"]["value"] == 0.8
    assert doc == yaml.safe_load(
        milepost("journeys", "export", "Churn prevention", "--data-dir", data_dir).stdout
    )

    again = milepost("journeys", "apply", CHURN, "--data-dir", data_dir)
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stdout

    with_ids = data_dir / "with-ids.yaml"
    with_ids.write_text(milepost("journeys", "export", "1", "--ids", "--data-dir", data_dir).stdout)
    doc = yaml.safe_load(with_ids.read_text())
    doc["milestones"][0]["criteria"]["value"] = 0.75
    doc["milestones"][0]["name"] = "Churn risk"
    with_ids.write_text(yaml.safe_dump(doc, sort_keys=False))

    dry = milepost("journeys", "apply", with_ids, "--data-dir", data_dir, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "~ milestone High churn risk: rename 'High churn risk' → 'Churn risk', criteria" in dry.stdout
    assert "dry run: nothing changed" in dry.stdout

    declined = milepost("journeys", "apply", with_ids, "--data-dir", data_dir)  # no stdin: treated as no
    assert declined.returncode != 0
    assert "not applied" in declined.stderr

    refused = milepost("journeys", "apply", with_ids, "--data-dir", data_dir, stdin="n\n")
    assert refused.returncode != 0

    confirmed = milepost("journeys", "apply", with_ids, "--data-dir", data_dir, stdin="y\n")
    assert confirmed.returncode == 0, confirmed.stderr
    after = yaml.safe_load(milepost("journeys", "export", "1", "--data-dir", data_dir).stdout)
    assert after["milestones"][0]["name"] == "Churn risk"
    assert after["milestones"][0]["criteria"]["value"] == 0.75


def test_apply_refuses_unknown_names_and_plans_over_the_credit_limit(data_dir: Path) -> None:
    doc = yaml.safe_load(CHURN.read_text())
    doc["inputs"] = ["web", "smart_tv"]
    doc["milestones"][0]["connections"] = [{"output": "Carrier pigeon", "status": "active"}]
    path = data_dir / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = milepost("journeys", "apply", path, "--data-dir", data_dir, "--yes")
    assert result.returncode == 1
    assert "'smart_tv'" in result.stderr and "'Carrier pigeon'" in result.stderr

    with Catalog(f"sqlite:///{data_dir / 'catalog.sqlite'}") as catalog:
        catalog.update_settings(audience_limit=1)
    result = milepost("journeys", "apply", CHURN, "--data-dir", data_dir, "--yes")
    assert result.returncode == 1
    assert "limit of 1" in result.stderr
    assert milepost("journeys", "export", "Churn prevention", "--data-dir", data_dir).returncode != 0
