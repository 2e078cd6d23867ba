"""`syncd sync [--full] [--source NAME] [--no-catalog]`: one pass of each source (or the named
ones): its catalog first (when ``catalog_sync`` is on, so the count entries carry SKUs), then its
counts; a progress line on a TTY, one summary line per pass at the end; exit 0 when every pass
succeeded, else 1."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from functools import partial
from typing import Any

from syncd.cli.common import EXIT_FAILURE, EXIT_OK, add_common, settings_from, setup_logging
from syncd.components import open_components
from syncd.config import Settings, require_upstream_credentials
from syncd.errors import ConfigError
from syncd.model import PassSummary
from syncd.store import sources as registry
from syncd.sync.catalog import CATALOG_KINDS
from syncd.timeutil import NS_PER_S, format_ns, now_ns


def register(sub: Any) -> None:
    parser = sub.add_parser("sync", help="run one sync pass and exit (0 = ok, 1 = failed)")
    add_common(parser)
    parser.add_argument(
        "--full",
        action="store_true",
        help="full pass: re-read everything and remove counts that vanished upstream",
    )
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="override every source's base_url (e.g. a running `syncd simulate`)",
    )
    parser.add_argument(
        "--no-catalog",
        action="store_true",
        help="counts only: skip the catalog pass of sources with catalog_sync on",
    )
    parser.add_argument(
        "--source",
        action="append",
        metavar="NAME",
        help="only this source (repeatable); default: every configured source",
    )
    parser.set_defaults(handler=handle)


class Progress:
    """A single self-overwriting status line on a TTY (stderr); silent otherwise."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0

    def __call__(self, summary: PassSummary) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.1:
            return
        self._last = now
        rate = summary.counts / max(now - self.t0, 1e-6)
        sys.stderr.write(
            f"\rpages {summary.pages}  counts {summary.counts}  "
            f"changes {summary.changes}  {rate:,.0f} counts/s "
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def handle(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings)
    names = args.source or list(settings.sources)
    unknown = sorted(set(names) - set(settings.sources))
    if unknown:
        raise ConfigError(
            [("--source", name, "no such source") for name in unknown],
            hint=f"configured sources: {', '.join(sorted(settings.sources))}",
        )
    if not args.base_url:
        require_upstream_credentials(settings)
    summaries = asyncio.run(
        _passes(
            settings,
            names,
            base_url=args.base_url,
            full=True if args.full else None,
            catalog=not args.no_catalog,
        )
    )
    for summary in summaries:
        print(describe(summary))
    return EXIT_OK if all(s.ok for s in summaries) else EXIT_FAILURE


async def _passes(
    settings: Settings,
    names: list[str],
    *,
    base_url: str | None,
    full: bool | None,
    catalog: bool = True,
) -> list[PassSummary]:
    """One pass of each named source, one after the other (the progress line is per pass); its
    catalog pass before it (``catalog``, for sources that mirror the catalog)."""
    summaries: list[PassSummary] = []
    for name in names:
        progress = Progress()
        try:
            async with open_components(
                settings, base_url=base_url, on_page=progress, only=name
            ) as parts:
                # Registered like the daemon registers it (`syncd sources list` shows it active).
                await parts.store.write(
                    partial(
                        registry.register,
                        source=name,
                        merchant_id=settings.sources[name].merchant_id,
                        at=format_ns(now_ns()),
                    )
                )
                source = parts.sources[name]
                if catalog and source.catalog is not None:
                    summaries.append(await source.catalog.run_pass(full=full))
                summaries.append(await source.engine.run_pass(full=full))
        finally:
            progress.done()
    return summaries


def describe(summary: PassSummary) -> str:
    """One line: what the pass did."""
    seconds = ((summary.finished_ns or summary.started_ns) - summary.started_ns) / NS_PER_S
    rate = summary.counts / seconds if seconds > 0 else 0.0
    head = "ok" if summary.ok else "FAILED"
    what = "objects" if summary.kind in CATALOG_KINDS else "counts"
    line = (
        f"{head}: {summary.kind} pass {summary.pass_id} of {summary.source}: {summary.pages} pages,"
        f" {summary.counts} {what}, {summary.changes} changes, {summary.removed} removed"
        f" in {seconds:.2f}s ({rate:,.0f} {what}/s)"
    )
    return line if summary.ok else f"{line}: {summary.error}"
