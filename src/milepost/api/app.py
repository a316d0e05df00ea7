"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from milepost import __version__
from milepost.api import (
    accounts,
    audiences,
    calculated,
    errors,
    estimates,
    events,
    journeys,
    operations,
    testclock,
    users,
    vocabulary,
)
from milepost.clock import ManualClock
from milepost.runtime import Runtime
from milepost.web import pages


def create_app(runtime: Runtime, *, manage_lifecycle: bool = True) -> FastAPI:
    """An app over an opened runtime; with manage_lifecycle the app starts and closes it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            runtime.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                runtime.close()

    app = FastAPI(
        title="Milepost",
        version=__version__,
        description="Journey orchestration on real-time audiences. `/v2` is wire-compatible with mParticle's Events API.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    errors.install(app)
    app.add_middleware(events.EventsLane)
    app.include_router(events.router)
    app.include_router(events.imports)
    app.include_router(accounts.router)
    app.include_router(users.router)
    app.include_router(journeys.router)
    app.include_router(audiences.router)
    app.include_router(calculated.router)
    app.include_router(estimates.router)
    app.include_router(vocabulary.router)
    if isinstance(runtime.clock, ManualClock):
        app.include_router(testclock.router)
    app.include_router(operations.router)
    app.include_router(operations.evaluations)
    pages.install(app)

    return app
