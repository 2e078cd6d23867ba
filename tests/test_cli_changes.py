"""`syncd changes` for other tools: named consumers and --ack, the gap exit code, --follow latency,
and the richer `syncd status`."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import orjson
import pytest

from syncd.cli import main
from syncd.logs import reset_logging
from syncd.store import Store, changelog
from syncd.store.changelog import NewChange
from syncd.store.retention import prune_batch
from tests.process_kit import ROOT, clean_env

RECORDED = "2026-01-01T00:00:00.000000Z"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """main() configures logging onto the captured stderr; undo it so later tests do not log
    into a closed stream."""
    yield
    reset_logging()


def entry(i: int) -> NewChange:
    """A count.updated entry for item ``i``."""
    return NewChange(
        kind="count.updated",
        source="square",
        catalog_object_id=f"ITEM{i}",
        location_id="LOC1",
        state="IN_STOCK",
        old=None,
        new={"quantity": str(i)},
    )


async def fill(db: Path, n: int) -> None:
    """A migrated database holding ``n`` change-log entries."""
    store = await Store.open(db)
    try:
        await store.write(
            lambda conn: changelog.append(conn, [entry(i) for i in range(n)], RECORDED)
        )
    finally:
        await store.aclose()


def changes(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[int], str]:
    """Run `syncd changes ARGS` in-process: exit code, printed seqs, stderr."""
    code = main(["changes", *args])
    out, err = capsys.readouterr()
    return code, [orjson.loads(line)["seq"] for line in out.splitlines()], err


def test_consumer_resumes_after_what_it_acknowledged(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A named consumer starts at 0, `--ack` records each printed batch, the next run resumes after
    it; reading without --ack moves nothing; `--ack-seq` sets the offset by hand; `--after` wins over
    the stored offset; `status` lists the consumer and how far behind the head it is."""
    asyncio.run(fill(db_path, 10))
    db = ["--database", str(db_path)]
    assert changes(capsys, *db, "--consumer", "erp", "--ack", "--limit", "4") == (
        0,
        [1, 2, 3, 4],
        "",
    )
    assert changes(capsys, *db, "--consumer", "erp", "--ack", "--limit", "4")[1] == [5, 6, 7, 8]
    assert changes(capsys, *db, "--consumer", "erp")[1] == [9, 10]
    assert changes(capsys, *db, "--consumer", "erp")[1] == [9, 10]  # not acknowledged
    assert changes(capsys, *db, "--consumer", "erp", "--ack-seq", "10") == (0, [], "")
    assert changes(capsys, *db, "--consumer", "erp")[1] == []
    assert changes(capsys, *db, "--consumer", "erp", "--after", "8")[1] == [9, 10]
    assert changes(capsys, *db, "--consumer", "other")[1] == list(range(1, 11))

    assert main(["status", *db, "--json"]) == 0
    status = orjson.loads(capsys.readouterr()[0])
    assert [(c["name"], c["acked_seq"], c["behind"]) for c in status["consumers"]] == [
        ("erp", 10, 0)
    ]
    assert status["daemon"] == {"running": False, "pid": None}
    assert main(["status", *db]) == 0
    text = capsys.readouterr()[0]
    assert text.startswith("syncd      down")
    assert "consumer   erp: acked seq 10 (0 behind)" in text


def test_usage_errors_exit_2(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--ack without a consumer, a bad consumer name, or --ack-seq mixed with reading options is a
    usage error (exit 2) with the reason."""
    asyncio.run(fill(db_path, 1))
    db = ["--database", str(db_path)]
    for args, why in (
        (["--ack"], "need --consumer"),
        (["--consumer", "a b"], "--consumer NAME"),
        (["--consumer", "x", "--ack-seq", "1", "--follow"], "without other options"),
    ):
        code, _, err = changes(capsys, *db, *args)
        assert code == 2
        assert why in err


def test_gap_exits_3_with_the_way_out(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A reader (or consumer) behind what retention kept gets exit code 3, the oldest seq still kept,
    and the hint to re-read the mirror; from the oldest kept on, reading works."""
    asyncio.run(fill(db_path, 10))

    async def prune() -> None:
        store = await Store.open(db_path)
        try:
            await store.write(lambda conn: prune_batch(conn, cutoff=None, max_rows=4, batch=100))
        finally:
            await store.aclose()

    asyncio.run(prune())
    db = ["--database", str(db_path)]
    code, seqs, err = changes(capsys, *db)
    assert (code, seqs) == (3, [])
    assert "entries after seq 0 were pruned; oldest kept is 7" in err
    assert "Try: re-read the mirror" in err
    assert changes(capsys, *db, "--after", "6")[1] == [7, 8, 9, 10]


def sourced(i: int, source: str, kind: str = "count.updated") -> NewChange:
    """An entry for item ``i`` of ``source`` (a job entry when ``kind`` is a job kind)."""
    if kind.startswith("job."):
        return NewChange(kind=kind, source=source, job_id=i, old=None, new={"state": "pending"})
    return NewChange(
        kind=kind,
        source=source,
        catalog_object_id=f"ITEM{i}",
        location_id="LOC1",
        state="IN_STOCK",
        old=None,
        new={"quantity": str(i)},
    )


# seqs 1..8: north, south, north, a job entry of provider shop, south, north, south, south
MIXED = [
    ("north",),
    ("south",),
    ("north",),
    ("shop", "job.pending"),
    ("south",),
    ("north",),
    ("south",),
    ("south",),
]


async def fill_mixed(db: Path) -> None:
    """Entries of sources north and south and one job entry of provider shop, interleaved."""
    store = await Store.open(db)
    try:
        await store.write(
            lambda conn: changelog.append(
                conn, [sourced(i, *spec) for i, spec in enumerate(MIXED)], RECORDED
            )
        )
    finally:
        await store.aclose()


def test_source_filters_the_log(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--source prints only the entries of the named sources, in seq order, from --after on and
    within --limit; a job entry carries its provider's name, so it comes only when that name is
    asked for; an unknown name prints nothing."""
    asyncio.run(fill_mixed(db_path))
    db = ["--database", str(db_path)]
    assert changes(capsys, *db, "--source", "north") == (0, [1, 3, 6], "")
    assert changes(capsys, *db, "--source", "north", "--source", "shop")[1] == [1, 3, 4, 6]
    assert changes(capsys, *db, "--source", "south", "--after", "2", "--limit", "2")[1] == [5, 7]
    assert changes(capsys, *db, "--source", "nobody") == (0, [], "")
    code = main(["changes", *db, "--source", "north", "--limit", "1"])
    record = orjson.loads(capsys.readouterr()[0])
    assert (code, record["source"], record["kind"]) == (0, "north", "count.updated")


def test_source_with_a_consumer_acks_past_skipped_entries(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A consumer reading one source with --ack stores the position read up to (the head here:
    the other sources' entries after its last one were skipped, not lost), and resumes there;
    --ack-seq with --source is a usage error."""
    asyncio.run(fill_mixed(db_path))
    db = ["--database", str(db_path)]
    assert changes(capsys, *db, "--source", "north", "--consumer", "n", "--ack")[1] == [1, 3, 6]
    assert main(["status", *db, "--json"]) == 0
    status = orjson.loads(capsys.readouterr()[0])
    assert [(c["name"], c["acked_seq"]) for c in status["consumers"]] == [("n", 8)]
    assert changes(capsys, *db, "--source", "north", "--consumer", "n")[1] == []
    code, _, err = changes(capsys, *db, "--consumer", "n", "--ack-seq", "1", "--source", "x")
    assert code == 2
    assert "without other options" in err


async def fill_lifecycle(db: Path) -> None:
    """seqs 1..6: a count, its pass's pass.completed, a heartbeat, a count.removed, a job entry
    of provider shop, source.stale."""
    entries = [
        sourced(1, "north"),
        NewChange(kind="pass.completed", source="north", old=None, new={"pass_id": 1}),
        NewChange(kind="heartbeat", source="_syncd", old=None, new={"head_seq": 2}),
        sourced(2, "north", "count.removed"),
        sourced(3, "shop", "job.pending"),
        NewChange(kind="source.stale", source="north", old={"status": "ok"}, new={}),
    ]
    store = await Store.open(db)
    try:
        await store.write(lambda conn: changelog.append(conn, entries, RECORDED))
    finally:
        await store.aclose()


def test_kind_filters_the_log(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--kind GLOB (repeated or a comma list) prints only the entries whose kind matches, with
    --source, --limit and a consumer's --ack (which stores the position read up to); a bad
    pattern, or --kind with --ack-seq, is a usage error (exit 2)."""
    asyncio.run(fill_lifecycle(db_path))
    db = ["--database", str(db_path)]
    assert changes(capsys, *db, "--kind", "count.*") == (0, [1, 4], "")
    assert changes(capsys, *db, "--kind", "pass.*,source.*", "--kind", "heartbeat")[1] == [2, 3, 6]
    assert changes(capsys, *db, "--kind", "*", "--source", "north", "--limit", "3")[1] == [1, 2, 4]
    assert changes(capsys, *db, "--kind", "job.*", "--source", "north") == (0, [], "")
    assert changes(capsys, *db, "--kind", "count.*", "--consumer", "m", "--ack")[1] == [1, 4]
    assert main(["status", *db, "--json"]) == 0
    status = orjson.loads(capsys.readouterr()[0])
    assert [(c["name"], c["acked_seq"]) for c in status["consumers"]] == [("m", 6)]
    for args, why in (
        (["--kind", "count[!.]*"], "--kind: kind pattern"),
        (["--kind", ""], "--kind: a kind pattern must not be empty"),
        (["--consumer", "m", "--ack-seq", "1", "--kind", "count.*"], "without other options"),
    ):
        code, printed, err = changes(capsys, *db, *args)
        assert (code, printed) == (2, [])
        assert why in err


async def test_follow_with_source_prints_only_that_source(db_path: Path) -> None:
    """`syncd changes --follow --source north` (a separate process) prints north's entries as
    they commit and none of the others committed before and between them."""
    store = await Store.open(db_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        "changes",
        "--database",
        str(db_path),
        "--follow",
        "--source",
        "north",
        cwd=ROOT,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        printed = []
        for round_ in range(3):
            others = [sourced(10 * round_ + i, "south") for i in range(5)]
            await store.write(partial(changelog.append, entries=others, recorded_at=RECORDED))
            mine = [sourced(10 * round_ + 9, "north")]
            await store.write(partial(changelog.append, entries=mine, recorded_at=RECORDED))
            async with asyncio.timeout(10):
                printed.append(orjson.loads(await proc.stdout.readline()))
        assert [(r["seq"], r["source"]) for r in printed] == [
            (6, "north"),
            (12, "north"),
            (18, "north"),
        ]
    finally:
        proc.terminate()
        await proc.wait()
        await store.aclose()


async def test_follow_prints_a_commit_within_100ms(db_path: Path) -> None:
    """`syncd changes --follow` (a separate process) prints an entry within 100 ms of its commit,
    measured from the commit returning to the line arriving, over several commits."""
    store = await Store.open(db_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncd",
        "changes",
        "--database",
        str(db_path),
        "--follow",
        cwd=ROOT,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        latencies = []
        for i in range(6):
            await asyncio.sleep(0.037 * (i % 3))  # commit at different phases of the check
            await store.write(partial(changelog.append, entries=[entry(i)], recorded_at=RECORDED))
            t0 = time.monotonic()
            async with asyncio.timeout(10 if i == 0 else 2):  # the first includes start-up
                line = await proc.stdout.readline()
            latencies.append(time.monotonic() - t0)
            assert orjson.loads(line)["seq"] == i + 1
        assert max(latencies[1:]) < 0.1, latencies
    finally:
        proc.terminate()
        await proc.wait()
        await store.aclose()
