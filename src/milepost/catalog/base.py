"""What every part of the Catalog shares: the clock, the session factory and the transaction helper."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from milepost.clock import Clock
from milepost.errors import Conflict


class CatalogBase:
    """The state the Catalog and its mixins work with; `Catalog.__init__` sets it up."""

    _clock: Clock
    _sessions: sessionmaker[Session]

    @contextmanager
    def _transaction(self, conflict: str) -> Iterator[Session]:
        """A session committed on success; a unique-constraint race surfaces as Conflict(conflict)."""
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError as error:
            raise Conflict(conflict) from error
