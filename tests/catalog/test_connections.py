"""Connections and audience credits: activation, the credit limit (also under concurrency from
threads and processes), deactivation, plans checked as a whole, and cascades from milestones."""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Callable

import pytest
from tests.catalog.activation_worker import activate_each

from milepost.catalog import Catalog, ConnectionRecord, OutputRecord
from milepost.clock import ManualClock
from milepost.errors import Conflict, CreditLimitReached, InvalidRequest, NotFound

HOOK = {"url": "https://hooks.example.com/milepost", "secret": "s3cret"}


def make_audiences(catalog: Catalog, count: int) -> list[int]:
    """`count` audiences: the milestones m0, m1, … under the root of journey "Churn"."""
    workspace = catalog.create_workspace("Main").id
    catalog.create_input(workspace, "web", "web")
    journey = catalog.create_journey("Churn", None).id
    criteria = {"type": "user_attribute", "attribute": "tier", "op": "equals"}
    return [
        catalog.add_milestone(
            journey, parent_id=None, name=f"m{i}", criteria={**criteria, "value": str(i)}
        ).audience_id
        for i in range(count)
    ]


@pytest.fixture
def hook(catalog: Catalog) -> OutputRecord:
    return catalog.create_output("webhook", "Hook", HOOK)


@pytest.fixture
def files(catalog: Catalog) -> OutputRecord:
    return catalog.create_output("file", "Files", {"directory": "/var/milepost/out"})


def limit_reached(limit: int, activated: int) -> str:
    return (
        f"the account's limit of {limit} activated audiences? is reached \\({activated} activated\\); "
        "deactivate an audience or raise the limit"
    )


# creating, reading, changing and deleting connections


def test_create_connection_returns_it(catalog: Catalog, clock: ManualClock, hook: OutputRecord) -> None:
    [audience] = make_audiences(catalog, 1)
    created = catalog.create_connection(audience, hook.id, settings={"tag": "vip"})
    assert created == ConnectionRecord(
        id=created.id,
        audience_id=audience,
        output_id=hook.id,
        output_name="Hook",
        output_type="webhook",
        status="active",
        settings={"tag": "vip"},
        on_deactivate="keep",
        health="ok",
        created_at=clock.now_ms(),
        updated_at=clock.now_ms(),
    )
    assert catalog.get_connection(created.id) == created
    assert catalog.connections(audience) == [created]
    assert catalog.connections() == [created]
    assert catalog.activated_audience_ids() == {audience}
    assert catalog.activated_count() == 1


def test_an_inactive_connection_does_not_activate(
    catalog: Catalog, hook: OutputRecord, files: OutputRecord
) -> None:
    first, second = make_audiences(catalog, 2)
    created = catalog.create_connection(first, "files", status="inactive", on_deactivate="remove_members")
    assert (created.status, created.output_id, created.settings) == ("inactive", files.id, {})
    assert created.on_deactivate == "remove_members"
    assert catalog.activated_count() == 0
    catalog.create_connection(second, hook.id)
    catalog.create_connection(second, files.id)
    assert catalog.activated_audience_ids() == {second}
    assert [c.output_name for c in catalog.connections(second)] == ["Hook", "Files"]
    assert [c.audience_id for c in catalog.connections()] == [first, second, second]


def test_create_connection_refusals_change_nothing(catalog: Catalog, hook: OutputRecord) -> None:
    [audience] = make_audiences(catalog, 1)
    existing = catalog.create_connection(audience, hook.id, status="inactive")
    refusals: list[tuple[type[Exception], str, Callable[[], object]]] = [
        (
            Conflict,
            f"audience {audience} is already connected to output 'Hook' \\(connection {existing.id}\\); "
            "change that connection instead",
            lambda: catalog.create_connection(audience, hook.id),
        ),
        (NotFound, "there is no audience with id 999", lambda: catalog.create_connection(999, hook.id)),
        (NotFound, "there is no output with id 999", lambda: catalog.create_connection(audience, 999)),
        (
            InvalidRequest,
            "an audience is referred to by its id",
            lambda: catalog.create_connection("1", hook.id),  # type: ignore[arg-type]
        ),
        (
            InvalidRequest,
            r"status must be one of active, inactive \(got 'on'\)",
            lambda: catalog.create_connection(audience, hook.id, status="on"),
        ),
        (
            InvalidRequest,
            "on_deactivate must be one of keep, remove_members",
            lambda: catalog.create_connection(audience, hook.id, on_deactivate="drop"),
        ),
        (
            InvalidRequest,
            "connection settings must be a JSON object",
            lambda: catalog.create_connection(audience, hook.id, settings=[1]),  # type: ignore[arg-type]
        ),
    ]
    for error, message, call in refusals:
        with pytest.raises(error, match=message):
            call()
    assert catalog.connections() == [existing]
    assert catalog.activated_count() == 0


def test_update_connection(catalog: Catalog, clock: ManualClock, hook: OutputRecord) -> None:
    [audience] = make_audiences(catalog, 1)
    created = catalog.create_connection(audience, hook.id, settings={"tag": "a"})
    clock.advance(10)
    assert catalog.update_connection(created.id) == created
    changed = catalog.update_connection(created.id, settings={"tag": "b"}, on_deactivate="remove_members")
    assert (changed.settings, changed.on_deactivate, changed.status) == (
        {"tag": "b"},
        "remove_members",
        "active",
    )
    assert changed.updated_at == clock.now_ms()
    assert catalog.update_connection(created.id, settings={}).settings == {}
    off = catalog.update_connection(created.id, status="inactive")
    assert off.status == "inactive"
    assert catalog.get_connection(created.id) == off
    for kwargs, message in [
        ({"status": "paused"}, "status must be one of active, inactive"),
        ({"on_deactivate": "keep_all"}, "on_deactivate must be one of keep, remove_members"),
        ({"settings": "x"}, "connection settings must be a JSON object"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            catalog.update_connection(created.id, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="there is no connection with id 999"):
        catalog.update_connection(999, status="active")
    assert catalog.get_connection(created.id) == off


def test_health_is_recorded_and_a_faulted_connection_keeps_its_credit(
    catalog: Catalog, clock: ManualClock, hook: OutputRecord
) -> None:
    [audience] = make_audiences(catalog, 1)
    created = catalog.create_connection(audience, hook.id)
    clock.advance(5)
    faulted = catalog.set_connection_health(created.id, "faulted")
    assert (faulted.health, faulted.status, faulted.updated_at) == ("faulted", "active", clock.now_ms())
    assert catalog.activated_audience_ids() == {audience}
    assert catalog.set_connection_health(created.id, "retrying").health == "retrying"
    assert catalog.set_connection_health(created.id, "ok").health == "ok"
    with pytest.raises(InvalidRequest, match="health must be one of ok, retrying, faulted"):
        catalog.set_connection_health(created.id, "broken")
    with pytest.raises(NotFound):
        catalog.set_connection_health(999, "ok")


def test_delete_connection_returns_it_and_frees_the_credit(catalog: Catalog, hook: OutputRecord) -> None:
    [audience] = make_audiences(catalog, 1)
    created = catalog.create_connection(audience, hook.id, on_deactivate="remove_members")
    assert catalog.delete_connection(created.id) == created
    assert catalog.connections(audience) == []
    assert catalog.activated_count() == 0
    with pytest.raises(NotFound, match=f"there is no connection with id {created.id}"):
        catalog.get_connection(created.id)
    with pytest.raises(NotFound):
        catalog.delete_connection(created.id)


def test_unknown_audiences_and_connections(catalog: Catalog) -> None:
    assert catalog.connections(5) == []
    with pytest.raises(InvalidRequest, match="an audience is referred to by its id"):
        catalog.connections("5")  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="there is no connection with id 5"):
        catalog.get_connection(5)
    with pytest.raises(InvalidRequest, match="a connection is referred to by its id"):
        catalog.get_connection("5")  # type: ignore[arg-type]
    assert catalog.connections() == []
    assert catalog.activated_audience_ids() == set()
    assert catalog.activated_count() == 0


# credits


def test_the_credit_limit_counts_activated_audiences(
    catalog: Catalog, hook: OutputRecord, files: OutputRecord
) -> None:
    audiences = make_audiences(catalog, 4)
    catalog.update_settings(audience_limit=3)
    for audience in audiences[:3]:
        catalog.create_connection(audience, hook.id)
    with pytest.raises(
        CreditLimitReached,
        match=f"cannot activate audience {audiences[3]}: the account's limit of 3 activated audiences "
        "is reached \\(3 activated\\); deactivate an audience or raise the limit",
    ):
        catalog.create_connection(audiences[3], hook.id)
    assert catalog.connections(audiences[3]) == []
    # A second active connection of an activated audience costs nothing.
    catalog.create_connection(audiences[0], files.id)
    assert catalog.activated_count() == 3
    # An inactive connection is allowed at the limit, but cannot be switched on.
    waiting = catalog.create_connection(audiences[3], files.id, status="inactive")
    with pytest.raises(CreditLimitReached, match=limit_reached(3, 3)):
        catalog.update_connection(waiting.id, status="active", settings={"changed": True})
    assert catalog.get_connection(waiting.id) == waiting
    # Raising the limit frees a credit.
    catalog.update_settings(audience_limit=4)
    assert catalog.update_connection(waiting.id, status="active").status == "active"
    assert catalog.activated_audience_ids() == set(audiences)


def test_deactivating_every_connection_frees_the_credit(
    catalog: Catalog, hook: OutputRecord, files: OutputRecord
) -> None:
    first, second = make_audiences(catalog, 2)
    catalog.update_settings(audience_limit=1)
    a = catalog.create_connection(first, hook.id)
    b = catalog.create_connection(first, files.id)
    with pytest.raises(CreditLimitReached, match=limit_reached(1, 1)):
        catalog.create_connection(second, hook.id)
    catalog.update_connection(a.id, status="inactive")
    assert catalog.activated_audience_ids() == {first}  # b is still active
    with pytest.raises(CreditLimitReached):
        catalog.create_connection(second, hook.id)
    catalog.delete_connection(b.id)
    assert catalog.activated_count() == 0
    catalog.create_connection(second, hook.id)
    assert catalog.activated_audience_ids() == {second}
    with pytest.raises(CreditLimitReached):
        catalog.update_connection(a.id, status="active")


def test_a_limit_of_zero_refuses_every_activation(catalog: Catalog, hook: OutputRecord) -> None:
    [audience] = make_audiences(catalog, 1)
    catalog.update_settings(audience_limit=0)
    with pytest.raises(
        CreditLimitReached, match="limit of 0 activated audiences is reached \\(0 activated\\)"
    ):
        catalog.create_connection(audience, hook.id)
    assert catalog.create_connection(audience, hook.id, status="inactive").status == "inactive"


def test_a_limit_of_one_reads_well(catalog: Catalog, hook: OutputRecord) -> None:
    first, second = make_audiences(catalog, 2)
    catalog.update_settings(audience_limit=1)
    catalog.create_connection(first, hook.id)
    with pytest.raises(CreditLimitReached, match="the account's limit of 1 activated audience is reached"):
        catalog.create_connection(second, hook.id)


def test_the_limit_cannot_go_below_the_activated_audiences(catalog: Catalog, hook: OutputRecord) -> None:
    audiences = make_audiences(catalog, 3)
    for audience in audiences:
        catalog.create_connection(audience, hook.id)
    message = (
        "audience_limit cannot be set below the 3 audiences currently activated; "
        "deactivate audiences first or choose a limit of at least 3"
    )
    with pytest.raises(InvalidRequest, match=message):
        catalog.update_settings(audience_limit=2)
    # The catalog's own count decides, whatever the caller says.
    with pytest.raises(InvalidRequest, match=message):
        catalog.update_settings(audience_limit=0, activated=0)
    assert catalog.get_settings().audience_limit == 20
    assert catalog.update_settings(audience_limit=3).audience_limit == 3
    assert catalog.update_settings(lookback_days=30).lookback_days == 30
    catalog.update_connection(catalog.connections(audiences[0])[0].id, status="inactive")
    assert catalog.update_settings(audience_limit=2).audience_limit == 2


# plans


def test_a_plan_is_applied_in_one_go(catalog: Catalog, hook: OutputRecord, files: OutputRecord) -> None:
    audiences = make_audiences(catalog, 4)
    catalog.update_settings(audience_limit=3)
    old = catalog.create_connection(audiences[0], hook.id)
    spare = catalog.create_connection(audiences[1], hook.id, status="inactive")
    # Switching audience 0 off frees the credit audience 3 takes: the plan fits as a whole.
    done = catalog.apply_connection_plan(
        [
            (audiences[2], hook.id, "active", {"tag": "x"}, "keep"),
            (audiences[2], "files", "active", None, "remove_members"),
            (audiences[3], hook.id, "active", {}, "keep"),
        ],
        [(old.id, "inactive"), (spare.id, "active")],
    )
    assert [(c.audience_id, c.output_id, c.status) for c in done] == [
        (audiences[2], hook.id, "active"),
        (audiences[2], files.id, "active"),
        (audiences[3], hook.id, "active"),
        (audiences[0], hook.id, "inactive"),
        (audiences[1], hook.id, "active"),
    ]
    assert done[0].settings == {"tag": "x"}
    assert (done[1].on_deactivate, done[1].settings) == ("remove_members", {})
    assert catalog.activated_audience_ids() == set(audiences[1:])
    assert catalog.apply_connection_plan([], []) == []


def test_a_plan_over_the_limit_changes_nothing(catalog: Catalog, hook: OutputRecord) -> None:
    audiences = make_audiences(catalog, 5)
    catalog.update_settings(audience_limit=3)
    first = catalog.create_connection(audiences[0], hook.id)
    spare = catalog.create_connection(audiences[1], hook.id, status="inactive")
    before = catalog.connections()
    with pytest.raises(
        CreditLimitReached,
        match="the connection plan cannot be applied: it would bring the activated audiences to 5, over "
        "the account's limit of 3 activated audiences \\(1 activated, 2 available\\); deactivate audiences",
    ):
        catalog.apply_connection_plan(
            [(audience, hook.id, "active", {}, "keep") for audience in audiences[2:]],
            [(spare.id, "active"), (first.id, "active")],
        )
    assert catalog.connections() == before
    assert catalog.activated_count() == 1
    # Each step alone would have fitted; the plan as a whole does not.
    catalog.update_settings(audience_limit=2)
    with pytest.raises(CreditLimitReached, match="to 3, over the account's limit of 2 activated audiences"):
        catalog.apply_connection_plan([(audiences[2], hook.id, "active", {}, "keep")], [(spare.id, "active")])
    assert catalog.connections() == before


def test_a_plan_with_a_bad_step_changes_nothing(catalog: Catalog, hook: OutputRecord) -> None:
    first, second = make_audiences(catalog, 2)
    existing = catalog.create_connection(first, hook.id, status="inactive")
    refusals: list[tuple[type[Exception], str, Callable[[], object]]] = [
        (
            NotFound,
            "there is no audience with id 999",
            lambda: catalog.apply_connection_plan(
                [(second, hook.id, "active", {}, "keep"), (999, hook.id, "active", {}, "keep")], []
            ),
        ),
        (
            Conflict,
            f"audience {second} is already connected to output 'Hook'",
            lambda: catalog.apply_connection_plan(
                [(second, hook.id, "active", {}, "keep"), (second, hook.id, "inactive", {}, "keep")], []
            ),
        ),
        (
            NotFound,
            "there is no connection with id 999",
            lambda: catalog.apply_connection_plan(
                [(second, hook.id, "active", {}, "keep")], [(999, "active")]
            ),
        ),
        (
            InvalidRequest,
            "a connection plan may change each connection once",
            lambda: catalog.apply_connection_plan([], [(existing.id, "active"), (existing.id, "inactive")]),
        ),
        (
            InvalidRequest,
            "a planned connection is \\(audience_id, output_id, status, settings, on_deactivate\\)",
            lambda: catalog.apply_connection_plan([(second, hook.id)], []),  # type: ignore[list-item]
        ),
        (
            InvalidRequest,
            "a planned connection update is \\(connection_id, status\\)",
            lambda: catalog.apply_connection_plan([], [(existing.id,)]),  # type: ignore[list-item]
        ),
        (
            InvalidRequest,
            "status must be one of active, inactive",
            lambda: catalog.apply_connection_plan([], [(existing.id, "on")]),
        ),
    ]
    for error, message, call in refusals:
        with pytest.raises(error, match=message):
            call()
    assert catalog.connections() == [existing]


# milestones and outputs


def test_deleting_a_milestone_deletes_its_connections_and_frees_its_credit(
    catalog: Catalog, hook: OutputRecord, files: OutputRecord
) -> None:
    kept_audience, deleted = make_audiences(catalog, 2)  # the last one can be deleted
    catalog.update_settings(audience_limit=1)
    catalog.create_connection(deleted, hook.id)
    catalog.create_connection(deleted, files.id, status="inactive")
    kept = catalog.create_connection(kept_audience, files.id, status="inactive")
    catalog.delete_milestone(catalog.milestone_by_audience(deleted).id)
    assert catalog.connections() == [kept]
    assert catalog.activated_count() == 0
    catalog.delete_output(hook.id)
    assert catalog.update_connection(kept.id, status="active").status == "active"
    with pytest.raises(Conflict, match="output 'Files' still has 1 connection"):
        catalog.delete_output(files.id)


# concurrency


def test_racing_threads_never_exceed_the_limit(catalog: Catalog, hook: OutputRecord) -> None:
    threads = 16
    audiences = make_audiences(catalog, threads)
    catalog.update_settings(audience_limit=5)
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []
    lock = threading.Lock()

    def activate(audience: int) -> None:
        barrier.wait()
        try:
            catalog.create_connection(audience, hook.id)
            outcome = "activated"
        except CreditLimitReached:
            outcome = "refused"
        except Exception as error:  # anything else is a failure of the test
            outcome = f"{type(error).__name__}: {error}"
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=activate, args=(audience,)) for audience in audiences]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(outcomes) == ["activated"] * 5 + ["refused"] * (threads - 5)
    assert catalog.activated_count() == 5
    assert len(catalog.connections()) == 5


def test_racing_threads_on_one_audience_use_one_credit(catalog: Catalog) -> None:
    threads = 8
    [audience] = make_audiences(catalog, 1)
    outputs = [catalog.create_output("file", f"Files {i}", {}).id for i in range(threads)]
    catalog.update_settings(audience_limit=1)
    barrier = threading.Barrier(threads)
    errors: list[Exception] = []

    def connect(output_id: int) -> None:
        barrier.wait()
        try:
            catalog.create_connection(audience, output_id)
        except Exception as error:
            errors.append(error)

    workers = [threading.Thread(target=connect, args=(output,)) for output in outputs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert len(catalog.connections(audience)) == threads
    assert catalog.activated_count() == 1


def test_lowering_the_limit_while_threads_activate_keeps_the_limit(
    catalog: Catalog, hook: OutputRecord
) -> None:
    threads = 8
    audiences = make_audiences(catalog, threads)
    catalog.update_settings(audience_limit=threads)
    barrier = threading.Barrier(threads + 1)
    unexpected: list[Exception] = []

    def activate(audience: int) -> None:
        barrier.wait()
        try:
            catalog.create_connection(audience, hook.id)
        except CreditLimitReached:
            pass
        except Exception as error:
            unexpected.append(error)

    def lower() -> None:
        barrier.wait()
        for limit in range(threads - 1, 2, -1):
            try:
                catalog.update_settings(audience_limit=limit)
            except InvalidRequest:
                pass
            except Exception as error:
                unexpected.append(error)

    workers = [threading.Thread(target=activate, args=(audience,)) for audience in audiences]
    workers.append(threading.Thread(target=lower))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert unexpected == []
    assert catalog.activated_count() <= catalog.get_settings().audience_limit


def test_racing_processes_never_exceed_the_limit(
    catalog: Catalog, catalog_url: str, hook: OutputRecord
) -> None:
    processes, each = 4, 4
    audiences = make_audiences(catalog, processes * each)
    catalog.update_settings(audience_limit=5)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(
            target=activate_each,
            args=(
                catalog_url,
                [(a, hook.id) for a in audiences[n * each : (n + 1) * each]],
                barrier,
                results,
            ),
        )
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes: list[str] = []
    try:
        for _ in audiences:
            outcomes.append(results.get(timeout=120)[1])
    except queue.Empty:
        pass
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * processes
    assert sorted(outcomes) == ["activated"] * 5 + ["refused"] * (len(audiences) - 5)
    assert catalog.activated_count() == 5
    assert len(catalog.connections()) == 5
