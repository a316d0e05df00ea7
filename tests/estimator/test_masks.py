"""`SampleIndex` finds each MPID's row whether it looks few up (a binary search) or many (a hash)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from milepost.audiences.masks import SampleIndex


@pytest.mark.parametrize("lookups", [0, 1, 7, 400, 1_001, 5_000])
def test_positions_of_any_number_of_mpids_are_their_rows(lookups: int) -> None:
    rng = np.random.default_rng(lookups)
    index = SampleIndex(rng.integers(-(2**62), 2**62, 1_000))
    rows = {int(m): r for r, m in enumerate(index.mpids)}
    mpids = np.where(
        rng.random(lookups) < 0.7,
        rng.choice(index.mpids, lookups),
        rng.integers(-(2**62), 2**62, lookups),
    ).astype(np.int64)
    mpids[: min(lookups, 2)] = [index.mpids.max() + 1, index.mpids.min() - 1][: min(lookups, 2)]
    expected = [rows.get(int(m), -1) for m in mpids]
    assert index.positions_of(mpids).tolist() == expected
    assert index.positions(mpids).tolist() == [r for r in expected if r >= 0]


def test_held_keeps_the_rows_of_sampled_users_only() -> None:
    index = SampleIndex(np.array([5, 3, 9], dtype=np.int64))
    for mpids in ([9, 3, 3, 5, 9], [9, 4, 3, None, 5, 10, 3]):
        table = pa.table({"mpid": pa.array(mpids, pa.int64()), "k": pa.array(range(len(mpids)))})
        held, rows = index.held(table)
        kept = [(k, m) for k, m in enumerate(mpids) if m in (3, 5, 9)]
        assert held.column("k").to_pylist() == [k for k, _ in kept]
        assert rows.tolist() == [[3, 5, 9].index(m) for _, m in kept]
