"""SIGHUP: re-read the configuration, log what changed, and apply what can change while running.

Each running component registers the keys it can take live and how to apply them (log level, pass
intervals, debounce, engine limits, retention, ...). Every other changed key (listen addresses, the
database, credentials, the upstream URL, log format, ...) is logged as ``restart_required`` and
keeps its running value until the next start. A reload that fails validation changes nothing:
``config_reload_failed`` lists every bad key, and the daemon runs on as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import structlog

from syncd.config import Settings, redacted
from syncd.errors import ConfigError
from syncd.logs import set_level
from syncd.metrics import CONFIG_RELOADS
from syncd.store.retention import ChangelogPruner, RetentionPolicy
from syncd.sync.heartbeat import Heartbeat

log = structlog.get_logger("syncd.reload")

Applier = Callable[[Settings], None]


class Schedulable(Protocol):
    apply_counts: bool

    def set_schedule(self, debounce: float, max_delay: float) -> None: ...


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"sync": {"max_concurrent_passes": 5}}`` -> ``{"sync.max_concurrent_passes": 5}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """Dotted keys whose value differs (secrets compared by value, never shown)."""
    before, after = flatten(old.model_dump()), flatten(new.model_dump())
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


class Reloader:
    """Loads the configuration again and hands it to the components that registered for its keys."""

    def __init__(self, load: Callable[[], Settings], running: Settings) -> None:
        self._load = load
        self._started = running
        self.current = running
        self._appliers: list[tuple[frozenset[str], Applier]] = []
        self._prefixed: list[tuple[tuple[str, ...], Applier]] = []

    def add(self, keys: Iterable[str], apply: Applier) -> None:
        """Call ``apply(new_settings)`` when any of ``keys`` changes on a reload."""
        self._appliers.append((frozenset(keys), apply))

    def add_prefix(self, prefixes: Iterable[str], apply: Applier) -> None:
        """Call ``apply(new_settings)`` when any key starting with one of ``prefixes`` changes."""
        self._prefixed.append((tuple(prefixes), apply))

    def is_live(self, key: str) -> bool:
        return any(key in keys for keys, _ in self._appliers) or any(
            key.startswith(prefixes) for prefixes, _ in self._prefixed
        )

    def reload(self) -> Settings | None:
        """Re-read and apply; return the new settings, or None when they were invalid."""
        try:
            new = self._load()
        except ConfigError as exc:
            CONFIG_RELOADS.labels(outcome="failed").inc()
            log.error(
                "config_reload_failed",
                problems=[list(p) for p in exc.problems],
                hint="fix the file and send SIGHUP again; the running configuration stays",
            )
            return None
        changed = changed_keys(self.current, new)
        applied = [k for k in changed if self.is_live(k)]
        for keys, apply in self._appliers:
            if keys.intersection(applied):
                apply(new)
        for prefixes, apply in self._prefixed:
            if any(k.startswith(prefixes) for k in applied):
                apply(new)
        restart = [k for k in changed_keys(self._started, new) if not self.is_live(k)]
        shown_old, shown_new = flatten(redacted(self.current)), flatten(redacted(new))
        CONFIG_RELOADS.labels(outcome="ok").inc()
        log.info(
            "config_reloaded",
            changed={k: [shown_old.get(k), shown_new.get(k)] for k in changed},
            applied=applied,
            restart_required=restart,
        )
        self.current = new
        return new


def logging_keys() -> tuple[set[str], Applier]:
    """The log level changes live; the format needs a restart."""
    return {"log.level"}, lambda s: set_level(s.log.level)


# Every key under these belongs to the sources: the daemon's reconciler takes them (a source added
# or removed starts or stops it; a changed one is applied live or restarted: ``SourceSet.apply``).
SOURCE_PREFIXES = ("sources.", "source_defaults.")


def schedule_keys(sources: Schedulable) -> tuple[set[str], Applier]:
    """Webhook debounce and maximum delay, for every source's trigger, and whether webhooks' counts
    take the fast path (read at each webhook)."""

    def apply(s: Settings) -> None:
        sources.set_schedule(s.webhooks.debounce, s.webhooks.max_delay)
        sources.apply_counts = s.webhooks.apply_counts

    return {"webhooks.debounce", "webhooks.max_delay", "webhooks.apply_counts"}, apply


def pruner_keys(pruner: ChangelogPruner) -> tuple[set[str], Applier]:
    """Change-log retention: limits apply at the next round, the interval after the current wait."""

    def apply(s: Settings) -> None:
        pruner.policy = RetentionPolicy(
            days=s.changelog.retain_days, max_rows=s.changelog.retain_max_rows
        )
        pruner.interval = s.changelog.prune_interval

    return {"changelog.retain_days", "changelog.retain_max_rows", "changelog.prune_interval"}, apply


def heartbeat_keys(heartbeat: Heartbeat) -> tuple[set[str], Applier]:
    """The heartbeat interval: the silence in progress is measured against the new one."""

    def apply(s: Settings) -> None:
        heartbeat.set_interval(s.changelog.heartbeat_interval)

    return {"changelog.heartbeat_interval"}, apply
