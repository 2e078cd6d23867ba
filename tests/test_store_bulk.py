"""syncd.store.bulk: many rows in few multi-row statements, the same rows as executemany."""

from __future__ import annotations

import sqlite3

import pytest

from syncd.store import bulk, inline


def test_chunk_sizes_are_full_chunks_then_the_remainders_powers_of_two() -> None:
    assert bulk.chunk_sizes(0, 3) == []
    assert bulk.chunk_sizes(1, 3) == [1]
    assert bulk.chunk_sizes(10_000, 12) == [1024] * 9 + [512, 256, 16]
    assert sum(bulk.chunk_sizes(10_000, 12)) == 10_000
    # The variables of one statement stay within SQLite's limit.
    wide = bulk.chunk_sizes(5_000, 1_000)
    assert sum(wide) == 5_000
    assert max(wide) * 1_000 <= bulk.MAX_VARIABLES
    assert bulk.chunk_sizes(7, 2, max_rows=4) == [4, 2, 1]
    with pytest.raises(ValueError, match="at least one value"):
        bulk.chunk_sizes(3, 0)


@pytest.mark.parametrize("n", [1, 5, 1023, 1024, 1025, 3000])
def test_insert_values_writes_every_row_in_order(n: int) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT, w TEXT)")
    rows = [(i, f"v{i}", "" if i % 3 else f"w{i}") for i in range(n)]
    rows.append((0, "again", "x"))  # a later row of the same call sees the earlier ones

    async def write(c: object) -> None:
        await bulk.insert_values(
            c,  # type: ignore[arg-type]
            "INSERT INTO t (k, v, w)",
            "(?, ?, NULLIF(?, ''))",
            rows,
            "ON CONFLICT (k) DO UPDATE SET v = excluded.v || ' ' || t.v",
        )

    inline.run(write, conn)
    got = conn.execute("SELECT k, v, w FROM t ORDER BY k").fetchall()
    assert len(got) == n
    assert got[0] == (0, "again v0", "w0")
    assert got[1:] == [(i, f"v{i}", None if i % 3 else f"w{i}") for i in range(1, n)]
