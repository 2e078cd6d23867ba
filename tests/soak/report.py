"""The soak summary: each scenario run records one row; the rows print as one table.

A test calls ``record(ScenarioResult(...))``; when ``$SYNCD_SOAK_REPORT`` names a file, the row is
appended to it as a JSON line (safe from several pytest-xdist workers: one ``write`` per row, in append
mode). ``tests/conftest.py`` prints the table at the end of the session, and
``python -m tests.soak.report FILE`` prints it again.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import orjson

REPORT_ENV = "SYNCD_SOAK_REPORT"
SEED_ENV = "SYNCD_SOAK_SEED"


def scenario_seed() -> int:
    """``$SYNCD_SOAK_SEED`` when set (to replay a run), else a fresh random seed (printed by the
    caller, so any run can be replayed)."""
    raw = os.environ.get(SEED_ENV)
    seed = int(raw) if raw else random.SystemRandom().randrange(1, 2**31)
    # On stderr, which pytest shows with a failing test (also one that fails by an exception, not
    # an assertion), so every seeded run can be replayed.
    print(f"seed {seed} ({SEED_ENV}={seed} replays it)", file=sys.stderr)
    return seed


@dataclass
class ScenarioResult:
    """One scenario run: what was done to syncd and what was checked."""

    scenario: str
    seed: int | str
    rounds: int = 0  # kills and restarts, requests, examples, reads: the scenario's unit of work
    faults: int = 0  # faults injected: kills, chaos answers, hostile inputs
    checks: int = 0  # invariant checks evaluated
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: str = ""

    def describe(self) -> str:
        """One line for assertion messages and logs, with the seed to replay it."""
        head = (
            f"{self.scenario}: seed={self.seed} rounds={self.rounds} faults={self.faults}"
            f" checks={self.checks} violations={len(self.violations)} ({self.notes})"
        )
        return "\n  ".join([head, *self.violations[:20]])


@dataclass
class PropertyRun:
    """A hypothesis property run with a known seed (``$SYNCD_SOAK_SEED`` or a fresh one) and its
    examples counted; the test's inner ``@given`` function calls ``count()`` once per example."""

    name: str
    seed: int = field(default_factory=scenario_seed)
    examples: int = 0
    checks: int = 0
    seconds: float = 0.0

    def count(self, checks: int = 1) -> None:
        self.examples += 1
        self.checks += checks

    def run(self, test: Callable[[], None]) -> None:
        """Run ``test`` (a ``@given`` function taking no arguments) under the seed."""
        print(
            f"{self.name}: hypothesis seed {self.seed} (SYNCD_SOAK_SEED={self.seed} replays it)",
            file=sys.stderr,
        )
        started = time.monotonic()
        hypothesis.seed(self.seed)(test)()
        self.seconds = time.monotonic() - started

    def record(self, *, checks: int = 0, notes: str = "") -> ScenarioResult:
        """Record the run (``checks`` more made after it) in the soak report."""
        result = ScenarioResult(
            self.name,
            seed=self.seed,
            rounds=self.examples,
            faults=self.examples,
            checks=self.checks + checks,
            seconds=self.seconds,
            notes=notes,
        )
        record(result)
        return result


def record(result: ScenarioResult) -> None:
    """Append the row to ``$SYNCD_SOAK_REPORT`` (if set); always print the line (``-s`` shows it)."""
    print(result.describe(), file=sys.stderr)
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    row = asdict(result) | {
        "violations": len(result.violations),
        "first_violations": result.violations[:5],
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as out:
        out.write(orjson.dumps(row) + b"\n")


def load(path: Path) -> list[dict[str, Any]]:
    """The rows recorded so far (none if the file does not exist)."""
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


_COLUMNS = (
    ("scenario", "scenario"),
    ("rounds", "rounds"),
    ("faults", "faults injected"),
    ("checks", "invariants checked"),
    ("violations", "violations"),
    ("seed", "seed"),
    ("seconds", "seconds"),
    ("notes", "notes"),
)


def render(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows, plus a total line."""

    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key, "")
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    lines = [
        "| " + " | ".join(title for _, title in _COLUMNS) + " |",
        "|" + "|".join("---" for _ in _COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(cell(row, key) for key, _ in _COLUMNS) + " |" for row in rows]
    total = {
        k: sum(int(r.get(k, 0)) for r in rows) for k in ("rounds", "faults", "checks", "violations")
    }
    seconds = sum(float(r.get("seconds", 0.0)) for r in rows)
    lines.append(
        f"\ntotal: {len(rows)} scenario runs, {total['rounds']} rounds,"
        f" {total['faults']} faults injected, {total['checks']} invariant checks,"
        f" {total['violations']} violations, {seconds:.0f} s"
    )
    for row in rows:
        for text in row.get("first_violations", []):
            lines.append(f"  VIOLATION {row['scenario']} (seed {row['seed']}): {text}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``python -m tests.soak.report FILE``: print the table of FILE's rows."""
    if len(argv) != 1:
        print("usage: python -m tests.soak.report FILE", file=sys.stderr)
        return 2
    rows = load(Path(argv[0]))
    print(render(rows))
    return 1 if any(r.get("violations") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
