"""`syncd changes`: the change log as NDJSON, one entry per line.

``--after SEQ`` starts after SEQ, ``--limit N`` stops after N entries, ``--follow`` keeps printing
entries as they are committed, ``--source NAME`` (repeatable) prints only the entries whose
``source`` is one of the names (job entries carry their provider's name), ``--kind GLOB``
(repeatable, or a comma list) only the entries whose ``kind`` matches a glob (``count.*``).
``--consumer NAME`` resumes after the last seq NAME acknowledged;
``--ack`` acknowledges each batch once it has been written and flushed to stdout, ``--ack-seq SEQ``
records SEQ for NAME and exits (for tools that acknowledge after their own processing). Entries that
retention pruned are a gap: exit code 3 and a hint to re-read the mirror (docs/changelog.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from syncd.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    add_common,
    require_database,
    settings_from,
    setup_logging,
    sqlite_int,
)
from syncd.store import Store, changelog, consumers
from syncd.store.consumers import OffsetWriter

# How often --follow looks at PRAGMA data_version: a cheap read, no busy loop, well within 100 ms.
FOLLOW_CHECK_S = 0.05
BATCH = 1000


def register(sub: Any) -> None:
    parser = sub.add_parser("changes", help="print change-log entries as NDJSON")
    add_common(parser)
    parser.add_argument(
        "--after",
        type=sqlite_int,
        metavar="SEQ",
        help="print entries with seq > SEQ (default: the consumer's acknowledged"
        " seq with --consumer, else 0: from the start)",
    )
    parser.add_argument("--limit", type=sqlite_int, metavar="N", help="stop after N entries")
    parser.add_argument(
        "--follow", action="store_true", help="keep printing new entries as they are committed"
    )
    parser.add_argument(
        "--source",
        dest="sources",
        action="append",
        default=[],
        metavar="NAME",
        help="only entries whose source is NAME; repeat for several (a job entry's source is"
        " its provider's name)",
    )
    parser.add_argument(
        "--kind",
        dest="kinds",
        action="append",
        default=[],
        metavar="GLOB",
        help="only entries whose kind matches GLOB ('*' any characters, '?' one), e.g."
        " 'count.*' for the changes of the mirror; repeat or separate with commas for several",
    )
    group = parser.add_argument_group("named consumers (docs/changelog.md)")
    group.add_argument(
        "--consumer",
        metavar="NAME",
        help="resume after the last seq NAME acknowledged (0 for a new NAME)",
    )
    group.add_argument(
        "--ack",
        action="store_true",
        help="with --consumer: acknowledge each batch after it is written and"
        " flushed to stdout (needs write access to the database)",
    )
    group.add_argument(
        "--ack-seq",
        type=sqlite_int,
        metavar="SEQ",
        help="with --consumer: record SEQ as acknowledged and exit, printing nothing",
    )
    parser.set_defaults(handler=handle)


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the option combination, if anything."""
    if (args.after is not None and args.after < 0) or (args.limit is not None and args.limit < 1):
        return "--after must be >= 0 and --limit >= 1"
    try:
        changelog.split_kind_globs(args.kinds)
    except ValueError as exc:
        return f"--kind: {exc}"
    if args.consumer is None:
        if args.ack or args.ack_seq is not None:
            return "--ack and --ack-seq need --consumer NAME"
        return None
    if not consumers.valid_name(args.consumer):
        return (
            "--consumer NAME: 1-64 letters, digits, '_', '.' or '-',"
            " starting with a letter or digit"
        )
    if args.ack_seq is not None and (
        args.ack_seq < 0
        or args.ack
        or args.follow
        or args.after is not None
        or args.limit is not None
        or args.sources
        or args.kinds
    ):
        return "--ack-seq SEQ (>= 0) records an offset and exits: use it without other options"
    return None


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings)
    require_database(settings.database)
    problem = usage_problem(args)
    if problem is not None:
        print(f"syncd: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.ack_seq is not None:
        asyncio.run(_ack_only(settings.database, args.consumer, args.ack_seq))
        return EXIT_OK
    asyncio.run(
        _stream(
            settings.database,
            after=args.after,
            limit=args.limit,
            follow=args.follow,
            consumer=args.consumer,
            ack=args.ack,
            sources=tuple(args.sources),
            kinds=changelog.split_kind_globs(args.kinds),
        )
    )
    return EXIT_OK


async def _ack_only(path: Path, consumer: str, seq: int) -> None:
    writer = await OffsetWriter.open(path, consumer)
    try:
        await writer.ack(seq)
    finally:
        await writer.aclose()


async def _start(store: Store, consumer: str | None) -> int:
    """Where reading starts without --after: after the consumer's acknowledged seq, else 0."""
    if consumer is None:
        return 0

    async def offset(conn: Any) -> int | None:
        await consumers.require_table(conn)
        return await consumers.acked(conn, consumer)

    return await store.read(offset) or 0


async def _stream(
    path: Path,
    *,
    after: int | None,
    limit: int | None,
    follow: bool,
    consumer: str | None = None,
    ack: bool = False,
    sources: tuple[str, ...] = (),
    kinds: tuple[str, ...] = (),
) -> None:
    store = await Store.open(path, readonly=True)
    acker: OffsetWriter | None = None
    remaining = limit
    try:
        position = after if after is not None else await _start(store, consumer)
        if ack and consumer is not None:
            acker = await OffsetWriter.open(path, consumer)
        while True:
            want = BATCH if remaining is None else min(BATCH, remaining)
            # Read the version before the entries, so a commit between the two is never missed.
            version = await store.read(_data_version)
            batch = await store.read(
                partial(
                    changelog.read_batch, after=position, limit=want, sources=sources, kinds=kinds
                )
            )
            for entry in batch.entries:
                sys.stdout.write(orjson.dumps(entry.to_record()).decode() + "\n")
            sys.stdout.flush()
            # With --source or --kind the position can pass the last entry printed: the other
            # entries up to it were skipped, and are not read again.
            position = batch.position
            if batch.entries:
                if acker is not None:  # only after the batch is out of our hands (written, flushed)
                    await acker.ack(position)
                if remaining is not None:
                    remaining -= len(batch.entries)
                    if remaining <= 0:
                        return
                continue
            if not follow:
                return
            await _wait_for_commit(store, version)
    finally:
        if acker is not None:
            await acker.aclose()
        await store.aclose()


async def _wait_for_commit(store: Store, seen: int) -> None:
    """Return once another connection has committed since ``seen`` (PRAGMA data_version moved).

    Another process's commit raises no event here: a cheap, bounded-rate check is the mechanism.
    """
    while await store.read(_data_version) == seen:  # noqa: ASYNC110 - no cross-process event
        await asyncio.sleep(FOLLOW_CHECK_S)


async def _data_version(conn: Any) -> int:
    async with conn.execute("PRAGMA data_version") as cur:
        row = await cur.fetchone()
    return int(row[0])
