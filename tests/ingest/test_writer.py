"""The group-commit writer: requests its submitters' event loop is still preparing join the commit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from milepost.engines.duckdb import DuckDBStore
from milepost.errors import EngineError
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import CommitPlan, DedupeWindows
from milepost.ingest.writer import IngestWriter, _catch_up
from milepost.model.batch import IngestOutcome, IngestRequest

DAY = 86_400_000
T0 = 1_780_000_000_000
WINDOWS = DedupeWindows(request_ms=30 * DAY, message_ms=7 * DAY)


def _request(i: int) -> IngestRequest:
    body = {
        "mpid": 1000 + i,
        "events": [{"event_type": "custom_event", "data": {"event_name": "e", "custom_event_type": "other"}}],
    }
    return IngestRequest(
        1, T0 + i, normalize_request(body, bulk=False, historical=False, received_at=T0 + i)[0]
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    s = DuckDBStore(tmp_path / "store")
    yield s
    s.close()


def _writer(store: DuckDBStore, catch_up_s: float, regroup_s: float = 0.0) -> IngestWriter:
    writer = IngestWriter(store, lambda: WINDOWS, catch_up_s=catch_up_s, regroup_s=regroup_s, seed=1)
    writer.start()
    return writer


def test_requests_the_loop_is_still_preparing_join_the_commit(store: DuckDBStore) -> None:
    writer = _writer(store, catch_up_s=5.0)

    async def first() -> IngestOutcome:
        task = asyncio.ensure_future(writer.accept(_request(0)))
        await asyncio.sleep(0)  # queued
        while writer.backlog:  # hold the loop until the writer has taken it: the others come later
            time.sleep(0.001)
        return await task

    async def one(i: int) -> IngestOutcome:
        await asyncio.sleep(0)  # like a request task's first step, which reads, then submits
        return await writer.accept(_request(i))

    async def main() -> list[IngestOutcome]:
        return await asyncio.gather(first(), *(one(i) for i in range(1, 6)))

    try:
        outcomes = asyncio.run(main())
    finally:
        writer.stop()
    assert [o.mpids for o in outcomes] == [(1000 + i,) for i in range(6)]
    assert writer.commits == 1
    rows = store.reader().execute("SELECT count(*) FROM events").fetchall()
    assert rows == [(6,)]


def test_a_lone_request_does_not_wait(store: DuckDBStore) -> None:
    writer = _writer(store, catch_up_s=30.0)

    async def main() -> IngestOutcome:
        return await writer.accept(_request(0))

    try:
        start = time.monotonic()
        outcome = asyncio.run(main())
        elapsed = time.monotonic() - start
    finally:
        writer.stop()
    assert outcome.stored_events == 1
    assert elapsed < 10.0  # far below the catch-up limit: the idle loop answers at once


def test_a_request_without_an_event_loop_commits(store: DuckDBStore) -> None:
    writer = _writer(store, catch_up_s=30.0)
    try:
        start = time.monotonic()
        outcome = writer.submit(_request(0)).result(timeout=20)
        elapsed = time.monotonic() - start
    finally:
        writer.stop()
    assert outcome.stored_events == 1
    assert elapsed < 10.0


def test_a_closed_loop_is_not_waited_for() -> None:
    loop = asyncio.new_event_loop()
    loop.close()  # the server stopped with requests of its loop still queued
    assert _catch_up(loop, time.monotonic() + 30.0) is False


async def _submit(writer: IngestWriter, i: int) -> IngestOutcome:
    return await writer.accept(_request(i))


def test_a_group_smaller_than_the_last_waits_for_more(store: DuckDBStore) -> None:
    writer = _writer(store, catch_up_s=5.0, regroup_s=20.0)

    async def main() -> tuple[list[IngestOutcome], float]:
        await asyncio.gather(*(_submit(writer, i) for i in range(3)))  # one commit of three
        start = time.monotonic()
        first = asyncio.ensure_future(_submit(writer, 3))
        await asyncio.sleep(0.3)  # the clients of the last commit come back later
        rest = await asyncio.gather(_submit(writer, 4), _submit(writer, 5))
        return [await first, *rest], time.monotonic() - start

    try:
        outcomes, elapsed = asyncio.run(main())
    finally:
        writer.stop()
    assert [o.mpids for o in outcomes] == [(1003,), (1004,), (1005,)]
    assert writer.commits == 2  # the three late requests joined one commit
    assert 0.3 <= elapsed < 10.0  # it waited for them, not for the limit
    rows = store.reader().execute("SELECT count(*) FROM events").fetchall()
    assert rows == [(6,)]


def test_a_lone_request_after_a_lone_request_does_not_wait(store: DuckDBStore) -> None:
    writer = _writer(store, catch_up_s=5.0, regroup_s=30.0)

    async def main() -> float:
        await _submit(writer, 0)
        start = time.monotonic()
        await _submit(writer, 1)
        return time.monotonic() - start

    try:
        elapsed = asyncio.run(main())
    finally:
        writer.stop()
    assert writer.commits == 2
    assert elapsed < 10.0  # far below the regroup limit


class _Refusing(DuckDBStore):
    """A store whose commits fail when they hold the user 1003's events (as a broken request would)."""

    def apply(self, plan: CommitPlan) -> None:
        if any(chunk[0] == 1003 for chunk in plan.events):
            raise ValueError("refused")
        super().apply(plan)


def test_an_accepted_request_that_breaks_its_commit_gets_the_error_and_the_others_land(
    tmp_path: Path,
) -> None:
    store = _Refusing(tmp_path / "store")
    writer = _writer(store, catch_up_s=5.0)

    async def main() -> list[IngestOutcome | BaseException]:
        return await asyncio.gather(*(writer.accept(_request(i)) for i in range(6)), return_exceptions=True)

    try:
        results = asyncio.run(main())
        assert isinstance(results[3], EngineError)
        assert [r.mpids for r in results if isinstance(r, IngestOutcome)] == [
            (1000 + i,) for i in (0, 1, 2, 4, 5)
        ]
        assert store.reader().execute("SELECT count(*) FROM events").fetchall() == [(5,)]
    finally:
        writer.stop()
        store.close()


def test_a_cancelled_accept_is_committed_and_the_writer_goes_on(store: DuckDBStore) -> None:
    writer = _writer(store, catch_up_s=0.0)

    async def main() -> IngestOutcome:
        task = asyncio.ensure_future(writer.accept(_request(0)))
        await asyncio.sleep(0)  # queued
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await writer.accept(_request(1))

    try:
        outcome = asyncio.run(main())
        assert writer.is_alive
    finally:
        writer.stop()
    assert outcome.mpids == (1001,)
    assert store.reader().execute("SELECT count(*) FROM events").fetchall() == [(2,)]


def test_a_cancelled_submission_is_committed_and_the_writer_goes_on(store: DuckDBStore) -> None:
    writer = _writer(store, catch_up_s=0.0)
    try:
        blocker = threading.Thread(target=writer.run_exclusive, args=(lambda: time.sleep(0.3),))
        blocker.start()
        time.sleep(0.05)
        fut = writer.submit(_request(0))
        assert fut.cancel()  # still queued behind the blocker
        blocker.join()
        outcome = writer.submit(_request(1)).result(timeout=20)
        assert writer.is_alive
    finally:
        writer.stop()
    assert outcome.mpids == (1001,)
    assert store.reader().execute("SELECT count(*) FROM events").fetchall() == [(2,)]
