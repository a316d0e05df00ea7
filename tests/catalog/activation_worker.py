"""A separate process that activates audiences in a shared catalog, for the concurrency tests.

It lives in its own module so that a spawned process imports only this, not the test module.
"""

from __future__ import annotations

from typing import Any

from milepost.catalog import Catalog
from milepost.errors import CreditLimitReached


def activate_each(url: str, pairs: list[tuple[int, int]], barrier: Any, results: Any) -> None:
    """Once every process is ready, connect each (audience, output) actively; report each outcome."""
    with Catalog(url) as catalog:
        barrier.wait()
        for audience_id, output_id in pairs:
            try:
                catalog.create_connection(audience_id, output_id)
                outcome = "activated"
            except CreditLimitReached:
                outcome = "refused"
            except Exception as error:  # anything else is a failure of the test
                outcome = f"{type(error).__name__}: {error}"
            results.put((audience_id, outcome))
