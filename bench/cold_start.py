"""CLI cold start as a shell script feels it (issue 13): each command as a whole process, from
start to exit, wall time and CPU time (user + system; medians of --reps runs) and peak RSS, beside
its baseline in the same run. On a shared machine the CPU time is the steadier figure: wall time
also counts the time other processes had the CPU.

- `syncd --help` and `syncd --version`, beside `python -c pass` (the interpreter's own floor);
- `syncd status`, `syncd status --json` and `syncd counts --limit 10` on a database of --counts
  counts (and as many change-log entries), beside a bare `python -c` that opens the same file with
  sqlite3 and runs one equivalent query (what a hand-written script would pay).

Targets: `--help` <= 120 ms and <= 25 MB; `status` and `counts --limit 10` <= 200 ms each on
1,000,000 counts. `syncd status --config` (a config file: the settings are loaded and validated) is
shown beside them without a target.

Each command runs once untimed first, with bytecode caching on (in a temporary
PYTHONPYCACHEPREFIX, whatever PYTHONDONTWRITEBYTECODE says): an installed syncd has its .pyc files,
and compiling its modules on every run is not what a script calling it pays.

Usage: ``python bench/cold_start.py [--counts 1000000] [--reps 7]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, make_counts_db, spawn_measured

BARE_QUERY = (
    "import sqlite3, sys; c = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True);"
    " print(c.execute(sys.argv[2]).fetchall())"
)


def measure(argv: list[str], reps: int, pycache: Path) -> tuple[float, float, float]:
    """(median wall ms, median CPU ms, max peak RSS MB) of ``reps`` runs of ``argv``, each a fresh process, after
    one untimed run that fills the bytecode cache ``pycache``."""
    walls: list[float] = []
    cpus: list[float] = []
    rss: list[float] = []
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SYNCD_")
        and k not in ("PYTHONDONTWRITEBYTECODE", "CREDENTIALS_DIRECTORY")
    }
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, check=True)
    for _ in range(reps):
        spawned = spawn_measured(argv, env=env)
        if spawned.code != 0:
            raise RuntimeError(f"{argv} exited {spawned.code}")
        walls.append(spawned.wall * 1000)
        cpus.append(spawned.cpu * 1000)
        rss.append(spawned.rss_mb)
    return statistics.median(walls), statistics.median(cpus), max(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    py = sys.executable
    syncd = [py, "-m", "syncd"]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "syncd.db"
        pycache = Path(tmp) / "pycache"
        t0 = time.perf_counter()
        make_counts_db(db, args.counts, with_changes=True)
        print(
            f"database: {args.counts:,} counts and change-log entries, built in"
            f" {time.perf_counter() - t0:.1f} s"
        )
        floor = measure([py, "-c", "pass"], args.reps, pycache)
        rows = [
            (
                "syncd --help",
                measure([*syncd, "--help"], args.reps, pycache),
                floor,
                "python -c pass",
                "<= 120 ms, <= 25 MB",
            ),
            (
                "syncd --version",
                measure([*syncd, "--version"], args.reps, pycache),
                floor,
                "python -c pass",
                "",
            ),
        ]
        bare_status = measure(
            [
                py,
                "-c",
                BARE_QUERY,
                str(db),
                "SELECT COUNT(*), (SELECT MAX(seq) FROM changes) FROM inventory_counts",
            ],
            args.reps,
            pycache,
        )
        bare_counts = measure(
            [py, "-c", BARE_QUERY, str(db), "SELECT * FROM inventory_counts LIMIT 10"],
            args.reps,
            pycache,
        )
        for label, argv, base, base_label in (
            ("syncd status", ["status"], bare_status, "bare sqlite3 count + head"),
            ("syncd status --json", ["status", "--json"], bare_status, "bare sqlite3 count + head"),
            (
                "syncd counts --limit 10",
                ["counts", "--limit", "10"],
                bare_counts,
                "bare sqlite3 LIMIT 10",
            ),
        ):
            figures = measure([*syncd, *argv, "--database", str(db)], args.reps, pycache)
            rows.append((label, figures, base, base_label, "<= 200 ms"))
        example = str(ROOT / "config" / "syncd.example.toml")
        figures = measure(
            [*syncd, "status", "--config", example, "--database", str(db)], args.reps, pycache
        )
        rows.append(
            ("syncd status --config", figures, bare_status, "bare sqlite3 count + head", "")
        )
    print(f"\nwhole process, start to exit: medians of {args.reps} runs, peak RSS (max)")
    print(
        f"{'command':<24} {'wall ms':>8} {'cpu ms':>7} {'RSS MB':>7}   {'baseline':<26}"
        f" {'wall ms':>8} {'cpu ms':>7} {'RSS MB':>7}  target"
    )
    for label, (wall, cpu, rss), (bwall, bcpu, brss), blabel, target in rows:
        print(
            f"{label:<24} {wall:>8.1f} {cpu:>7.1f} {rss:>7.1f}   {blabel:<26}"
            f" {bwall:>8.1f} {bcpu:>7.1f} {brss:>7.1f}  {target}"
        )


if __name__ == "__main__":
    main()
