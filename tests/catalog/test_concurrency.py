"""Several threads racing for the same name: exactly one wins and the others get Conflict."""

from __future__ import annotations

import threading

from milepost.catalog import Catalog
from milepost.errors import Conflict


def test_racing_creates_of_one_name_yield_one_input_and_conflicts(catalog: Catalog) -> None:
    workspace = catalog.create_workspace("Main")
    threads = 8
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        barrier.wait()
        try:
            catalog.create_input(workspace.id, "web", "web")
            outcome = "created"
        except Conflict:
            outcome = "conflict"
        except Exception as error:  # anything else is a failure of the test
            outcome = f"{type(error).__name__}: {error}"
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=create) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(outcomes) == ["conflict"] * (threads - 1) + ["created"]
    assert [i.name for i in catalog.list_inputs()] == ["web"]


def test_two_catalogs_share_one_database(catalog: Catalog, catalog_url: str) -> None:
    with Catalog(catalog_url) as other:
        created = other.create_workspace("Main")
        assert catalog.get_workspace("main") == created
        catalog.rename_workspace(created.id, "Primary")
        assert other.get_workspace(created.id).name == "Primary"
