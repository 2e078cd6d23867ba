"""Many sources in one daemon (issue 11): N sellers x C counts against the simulator. Prints figures;
not a test.

    .venv/bin/python bench/many_sources.py                  # 200 sources x 2,000 counts, real rate
    .venv/bin/python bench/many_sources.py --quick          # 1 and 20 sources, compressed: 1.5 min
    .venv/bin/python bench/many_sources.py --sources 200 --counts 2000 --minutes 3 \\
        --scales 1,20,200 --idle-seconds 60 --fault-seconds 60

Each scale (1 source is the baseline, printed beside the others) is a fresh pair of processes, as a
user runs them: ``syncd simulate --sellers N --oauth`` (the app's signed webhooks going to the
daemon's one ``/webhooks`` URL) and ``syncd run --config`` with N ``[sources.seller-K]`` tables on
OAuth refresh tokens granted by the simulator, the app's client, key and notification URL in
``[source_defaults]``, every other setting at its default. Phases:

(1) first full sync: wall clock from starting the daemon process to every source's first full pass
    committed (read from its database), and the same inside the process (``passes`` rows);
(2) idle: no upstream change for ``--idle-seconds`` (the safety-net polls every ``poll_interval``
    still run): CPU of the daemon process from /proc/PID/stat (utime + stime), as % of one core;
(3) changes: 1 change per source per minute (``--minute-seconds`` < 60 compresses that minute, and
    the output says so), each made with ``POST /_sim/mutate`` for one seller, evenly spread; the
    simulator then sends its webhook. Every change must reach the change log; latency is from the
    change's own ``calculated_at`` (the simulator's clock at the change) to the entry's
    ``recorded_at`` (the daemon's commit), both read from the database read-only; beside it from
    the webhook's receipt (``webhook_events.received_ns``) to the entry;
(4) one source failing: seller-1 answers every batch-retrieve with 500 for ``--fault-seconds``
    (``POST /_sim/fail {"seconds": ...}``) while the changes go on at the same rate; the other
    sources' latency is compared with (3), and seller-1's changes must arrive after it recovers.
Peak RSS is VmHWM of the daemon process over the whole run (/proc/PID/status).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, free_port, sim_post
from syncd.timeutil import parse_ns

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1
TARGETS = {"p50_ms": 300.0, "rss_mb": 150.0, "idle_cpu_pct": 1.0}
CATALOG_INTERVAL = 300.0  # the daemon's default catalog_interval, not changed here
POLL_INTERVAL = 60.0  # the daemon's default poll_interval (the safety net), not changed here


# ---- processes -------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the bench dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def spawned(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in ``log``; SIGTERM (then SIGKILL) on exit, always."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            preexec_fn=_die_with_parent,  # the bench runs no threads
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), seconds."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of the whole process (all threads), seconds: user space and kernel."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak resident set since the process started), MB."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) / 1024
    return out


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:g} s") from None
            time.sleep(0.05)


# ---- the database, read-only ----------------------------------------------------------------------


class Db:
    """The daemon's database opened read-only, as any reader on the host does (docs/schema.md)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def conn(self) -> sqlite3.Connection | None:
        if self._conn is None:
            if not self.path.exists():
                return None
            try:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
                conn.execute("PRAGMA busy_timeout = 5000")
                conn.execute("SELECT 1 FROM passes LIMIT 1")  # migrated yet?
            except sqlite3.Error:
                return None
            self._conn = conn
        return self._conn

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.conn()
        if conn is None:
            return []
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _ns(text: str) -> int:
    return parse_ns(text)


# ---- driving changes ------------------------------------------------------------------------------


@dataclass
class Change:
    source: str
    key: tuple[str, str, str]
    calculated_at: str
    asked_ns: int


@dataclass
class Phase:
    """The changes of one phase and what became of them."""

    name: str
    changes: list[Change] = field(default_factory=list)
    head_seq: int = 0  # last change-log seq before the phase
    started_ns: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    sim_cpu_seconds: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)  # per change key -> ms
    receipt_ms: dict[str, float] = field(default_factory=dict)
    missing: list[Change] = field(default_factory=list)
    extra: int = 0


class SimClient:
    """One keep-alive connection to the simulator's control routes."""

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        self._conn.request(
            "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        resp = self._conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status} {data[:200]!r}")
        return json.loads(data)

    def close(self) -> None:
        self._conn.close()


def drive_changes(
    sim: SimClient, merchants: dict[str, str], rounds: int, minute: float, phase: Phase
) -> None:
    """``rounds`` changes per source, one per source per ``minute`` seconds, sources evenly spread
    over the minute (open loop: each change at its due time, whatever the previous one took)."""
    names = list(merchants)
    t0 = time.monotonic() + 0.05
    for r in range(rounds):
        for i, name in enumerate(names):
            due = t0 + (r + (i + 0.5) / len(names)) * minute
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            asked = time.time_ns()
            answer = sim.post("/_sim/mutate", {"merchant_id": merchants[name], "n": 1})
            for row in answer["changed"]:
                key = (row["catalog_object_id"], row["location_id"], row["state"])
                phase.changes.append(Change(name, key, row["calculated_at"], asked))
    tail = t0 + rounds * minute - time.monotonic()  # the last minute runs to its end
    if tail > 0:
        time.sleep(tail)


def _change_id(source: str, key: tuple[str, str, str], at_ns: int) -> str:
    return f"{source}|{key[0]}|{key[1]}|{key[2]}|{at_ns}"


def collect(db: Db, phase: Phase, deadline: float) -> None:
    """Wait (until ``deadline``) for every change of the phase to reach the log; then match."""
    want = {_change_id(c.source, c.key, _ns(c.calculated_at)): c for c in phase.changes}
    found: dict[str, str] = {}
    while True:
        found.clear()
        extra = 0
        for source, obj, loc, state, new, recorded in db.query(
            "SELECT source, catalog_object_id, location_id, state, new, recorded_at FROM changes"
            " WHERE seq > ? AND kind = 'count.updated'",
            (phase.head_seq,),
        ):
            at = _ns(json.loads(new)["calculated_at"])
            cid = _change_id(source, (obj, loc, state), at)
            if cid in want and cid not in found:
                found[cid] = recorded
            else:
                extra += 1
        if len(found) == len(want) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    receipts: dict[str, int] = {}
    for source, received_ns, body in db.query(
        "SELECT source, received_ns, body FROM webhook_events WHERE received_ns >= ?",
        (phase.started_ns,),
    ):
        event = json.loads(body)
        for count in event.get("data", {}).get("object", {}).get("inventory_counts", []):
            key = (count["catalog_object_id"], count["location_id"], count["state"])
            cid = _change_id(source, key, _ns(count["calculated_at"]))
            receipts.setdefault(cid, received_ns)
    phase.extra = extra
    phase.missing = [c for cid, c in want.items() if cid not in found]
    for cid, recorded in found.items():
        c = want[cid]
        recorded_ns = _ns(recorded)
        phase.latency_ms[cid] = (recorded_ns - _ns(c.calculated_at)) / 1e6
        if cid in receipts:
            phase.receipt_ms[cid] = (recorded_ns - receipts[cid]) / 1e6


def pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(len(ordered) * p / 100) - 1)]


def head_seq(db: Db) -> int:
    rows = db.query("SELECT COALESCE(MAX(seq), 0) FROM changes")
    return int(rows[0][0]) if rows else 0


# ---- one scale --------------------------------------------------------------------------------------


def daemon_config(
    tmp: Path,
    sim_url: str,
    http_port: int,
    key: str,
    tokens: dict[str, str],
    poll_interval: float | None,
) -> Path:
    notification_url = f"http://127.0.0.1:{http_port}/webhooks"
    lines = [
        f'database = "{tmp / "syncd.db"}"',
        "[http]",
        f'listen = "127.0.0.1:{http_port}"',
        "[admin]",
        f'listen = "127.0.0.1:{free_port()}"',
        "[log]",
        'format = "json"',
        "[source_defaults]",
        f'base_url = "{sim_url}"',
        f'notification_url = "{notification_url}"',
        f'webhook_signature_keys = ["{key}"]  # a bench key; keep real ones in credential files',
        "[source_defaults.oauth]",
        'client_id = "sim-client"',
        'client_secret = "sim-secret"',
    ]
    if poll_interval is not None:
        lines.insert(lines.index("[source_defaults.oauth]"), f"poll_interval = {poll_interval}")
    for name, token in tokens.items():
        lines += [f"[sources.{name}.oauth]", f'refresh_token = "{token}"']
    config = tmp / "syncd.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def run_scale(n: int, args: argparse.Namespace, keep: Path | None) -> dict[str, Any]:
    """One scale in its own directory (removed afterwards unless ``keep``)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"syncd-many-{n}-", dir=keep))
    try:
        return _run_scale(n, args, tmp)
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _run_scale(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    key = secrets.token_urlsafe(24)
    (tmp / "key.txt").write_text(key + "\n")
    sim_port, http_port = free_port(), free_port()
    webhook_url = f"http://127.0.0.1:{http_port}/webhooks"
    items = args.counts // args.locations
    sim_cmd = [
        sys.executable,
        "-m",
        "syncd",
        "simulate",
        "--port",
        str(sim_port),
        "--sellers",
        str(n),
        "--oauth",
        "--locations",
        str(args.locations),
        "--items",
        str(items),
        "--webhook-url",
        webhook_url,
        "--webhook-key-file",
        str(tmp / "key.txt"),
        "--log-level",
        "warning",
    ]
    out: dict[str, Any] = {"sources": n, "counts": n * items * args.locations, "dir": str(tmp)}
    with contextlib.ExitStack() as stack:
        sim_proc = stack.enter_context(spawned(sim_cmd, tmp / "simulator.log"))
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_http(f"{sim_url}/_sim/stats", sim_proc, timeout=600)
        sellers = sim_post(sim_url, "/_sim/sellers", {})["sellers"]
        merchants = {f"seller-{i + 1}": s["merchant_id"] for i, s in enumerate(sellers)}
        tokens = {
            name: sim_post(sim_url, "/_sim/oauth/grant", {"merchant_id": mid})["refresh_token"]
            for name, mid in merchants.items()
        }
        config = daemon_config(tmp, sim_url, http_port, key, tokens, args.poll_interval)
        db = Db(tmp / "syncd.db")
        stack.callback(db.close)
        sim = SimClient(sim_port)
        stack.callback(sim.close)

        # (1) first full sync: daemon start -> every source's first full pass committed
        t_start = time.monotonic()
        daemon = stack.enter_context(
            spawned(
                [sys.executable, "-m", "syncd", "run", "--config", str(config)],
                tmp / "daemon.log",
            )
        )
        pid = daemon.pid
        wait_http(f"http://127.0.0.1:{http_port}/healthz", daemon, timeout=120)
        out["t_http_s"] = time.monotonic() - t_start
        deadline = t_start + args.sync_timeout
        while True:
            done = db.query(
                "SELECT COUNT(DISTINCT source) FROM passes WHERE kind = 'full' AND outcome = 'ok'"
            )
            if done and done[0][0] >= n:
                break
            if daemon.poll() is not None:
                raise RuntimeError(f"daemon exited with {daemon.returncode}; see {tmp}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{done} of {n} sources synced after {args.sync_timeout} s")
            time.sleep(0.05)
        out["sync_wall_s"] = time.monotonic() - t_start
        out["sync_cpu_s"] = cpu_seconds(pid)
        out["mem_after_sync"] = memory_mb(pid)
        rows = db.query(
            "SELECT started_at, finished_at, counts FROM passes WHERE kind = 'full' AND outcome = 'ok'"
        )
        starts = [_ns(r[0]) for r in rows]
        ends = [_ns(r[1]) for r in rows]
        out["sync_inproc_s"] = (max(ends) - min(starts)) / 1e9
        durations = [(e - s) / 1e9 for s, e in zip(starts, ends, strict=True)]
        out["full_pass_p50_s"] = pct(durations, 50)
        out["full_pass_max_s"] = max(durations)
        out["mirrored"] = db.query("SELECT COUNT(*) FROM inventory_counts")[0][0]

        # (2) idle: no upstream change; safety-net polls only
        time.sleep(args.settle)
        passes_before = db.query("SELECT COUNT(*) FROM passes")[0][0]
        catalog_before = _count_events(tmp / "daemon.log", "catalog_pass")
        spy = _profile(args, pid, tmp / "idle.pyspy.txt", args.idle_seconds)
        (u0, k0), w0 = cpu_split(pid), time.monotonic()
        time.sleep(args.idle_seconds)
        (u1, k1), w1 = cpu_split(pid), time.monotonic()
        c0, c1 = u0 + k0, u1 + k1
        out["idle_sys_pct"] = 100 * (k1 - k0) / (w1 - w0)
        if spy is not None:
            spy.wait(30)
            # Read now: the run's directory is gone by the time the table prints.
            out["idle_profile"] = (tmp / "idle.pyspy.txt").read_text(errors="replace")
        out["idle_cpu_pct"] = 100 * (c1 - c0) / (w1 - w0)
        out["idle_passes"] = db.query("SELECT COUNT(*) FROM passes")[0][0] - passes_before
        out["idle_catalog_passes"] = (
            _count_events(tmp / "daemon.log", "catalog_pass") - catalog_before
        )
        out["mem_idle"] = memory_mb(pid)

        # (3) changes: 1 per source per minute
        normal = run_phase("changes", db, sim, merchants, args.minutes, args, pid, sim_proc.pid)
        out["normal"] = summarize(normal, merchants, failing=None)

        # (4) seller-1 answers 500 for --fault-seconds while the changes go on
        if n >= 2 and args.fault_seconds > 0:
            failing = "seller-1"
            rounds = max(1, round(args.fault_seconds / args.minute_seconds))
            sim.post(
                "/_sim/fail",
                {"merchant_id": merchants[failing], "status": 500, "seconds": args.fault_seconds},
            )
            fault = run_phase("fault", db, sim, merchants, rounds, args, pid, sim_proc.pid)
            out["fault"] = summarize(fault, merchants, failing=failing)
            out["fault"]["rounds"] = rounds
        out["mem_end"] = memory_mb(pid)
        out["passes"] = dict(
            db.query("SELECT outcome || '/' || kind, COUNT(*) FROM passes GROUP BY 1")
        )
        stats = json.loads(urllib.request.urlopen(f"{sim_url}/_sim/stats", timeout=10).read())  # noqa: S310
        out["sim_statuses"] = stats["oauth"]["by_status"]
        out["sim_webhooks"] = {k: stats["webhooks"][k] for k in ("sent", "failed", "attempts")}
        out["cpu_total_s"] = cpu_seconds(pid)
    out["log_levels"] = _log_levels(tmp / "daemon.log")
    return out


def _profile(
    args: argparse.Namespace, pid: int, path: Path, seconds: float
) -> subprocess.Popen[bytes] | None:
    """With ``--profile-idle``: py-spy samples the daemon (without pausing it) for ``seconds``,
    collapsed stacks to ``path`` (py-spy is no dependency of syncd: ``pip install py-spy``).
    Only the thread holding the GIL is sampled (``--gil``): a thread blocked in fdatasync or
    in SQLite's C code uses no Python CPU, and py-spy would otherwise count it as busy."""
    if not args.profile_idle:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--nonblocking",
        "--gil",
    ]
    cmd += ["--format", "raw", "--rate", "1000", "--output", str(path)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_phase(
    name: str,
    db: Db,
    sim: SimClient,
    merchants: dict[str, str],
    rounds: int,
    args: argparse.Namespace,
    pid: int,
    sim_pid: int,
) -> Phase:
    phase = Phase(name, head_seq=head_seq(db), started_ns=time.time_ns())
    c0, s0, w0 = cpu_seconds(pid), cpu_seconds(sim_pid), time.monotonic()
    drive_changes(sim, merchants, rounds, args.minute_seconds, phase)
    phase.seconds = time.monotonic() - w0
    phase.cpu_seconds = cpu_seconds(pid) - c0
    phase.sim_cpu_seconds = cpu_seconds(sim_pid) - s0
    poll = args.poll_interval or POLL_INTERVAL
    wait = max(30.0, args.fault_seconds + 2 * poll) if name == "fault" else 30.0
    collect(db, phase, time.monotonic() + wait)
    return phase


def summarize(phase: Phase, merchants: dict[str, str], failing: str | None) -> dict[str, Any]:
    """Figures of one phase; with ``failing``, the other sources' and the failing one's apart."""
    by_id = {_change_id(c.source, c.key, _ns(c.calculated_at)): c for c in phase.changes}

    def lat(which: dict[str, float], keep: Any) -> list[float]:
        return [v for cid, v in which.items() if keep(by_id[cid].source)]

    def others(s: str) -> bool:
        return s != failing

    def only_failing(s: str) -> bool:
        return s == failing

    out: dict[str, Any] = {
        "seconds": phase.seconds,
        "sent": len(phase.changes),
        "logged": len(phase.latency_ms),
        "missing": len(phase.missing),
        "extra": phase.extra,
        "rate_per_s": len(phase.changes) / phase.seconds if phase.seconds else math.nan,
        "cpu_pct": 100 * phase.cpu_seconds / phase.seconds if phase.seconds else math.nan,
        "sim_cpu_pct": 100 * phase.sim_cpu_seconds / phase.seconds if phase.seconds else math.nan,
    }
    for label, keep in (("all", lambda s: True), ("others", others)):
        if label == "others" and failing is None:
            continue
        values, receipts = lat(phase.latency_ms, keep), lat(phase.receipt_ms, keep)
        out[label] = {
            "n": len(values),
            "p50_ms": pct(values, 50),
            "p99_ms": pct(values, 99),
            "max_ms": max(values, default=math.nan),
            "receipt_p50_ms": pct(receipts, 50),
            "receipt_p99_ms": pct(receipts, 99),
        }
    if failing is not None:
        mine = lat(phase.latency_ms, only_failing)
        out["failing"] = {
            "source": failing,
            "sent": sum(1 for c in phase.changes if c.source == failing),
            "logged": len(mine),
            "max_s": max(mine, default=math.nan) / 1000,
        }
    if phase.missing:
        out["missing_sample"] = [(c.source, c.key, c.calculated_at) for c in phase.missing[:5]]
    return out


def _count_events(path: Path, event: str) -> int:
    """How many lines of the daemon's log are ``event`` (catalog passes have no table row)."""
    needle = f'"event":"{event}"'
    with path.open(encoding="utf-8", errors="replace") as f:
        return sum(needle in line for line in f)


def _log_levels(path: Path) -> dict[str, int]:
    levels: dict[str, int] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                level = json.loads(line).get("level", "?")
            except ValueError:
                level = "non-json"
            levels[level] = levels.get(level, 0) + 1
    return levels


# ---- printing -------------------------------------------------------------------------------------


def _f(value: float, digits: int = 0) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:,.{digits}f}")
    )


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    cols = [f"{r['sources']} src" for r in results]
    width = max(14, *(len(c) + 2 for c in cols))
    rows: list[tuple[str, list[str], str]] = []

    def row(label: str, values: list[str], target: str = "") -> None:
        rows.append((label, values, target))

    def get(r: dict[str, Any], *path: str) -> Any:
        for p in path:
            if not isinstance(r, dict) or p not in r:
                return math.nan
            r = r[p]
        return r

    row("counts mirrored", [f"{r['mirrored']:,}" for r in results])
    row("(1) first full sync, wall s", [_f(r["sync_wall_s"], 1) for r in results])
    row("    of which start -> /healthz s", [_f(r["t_http_s"], 1) for r in results])
    row("    in-process (passes) s", [_f(r["sync_inproc_s"], 1) for r in results])
    row(
        "    one full pass p50 / max s",
        [f"{_f(r['full_pass_p50_s'], 2)} / {_f(r['full_pass_max_s'], 1)}" for r in results],
    )
    row("    CPU core-s to first sync", [_f(r["sync_cpu_s"], 1) for r in results])
    row("    RSS after it MB", [_f(r["mem_after_sync"]["VmRSS"]) for r in results])
    row(
        f"(2) idle CPU % core ({args.idle_seconds:g} s)",
        [_f(r["idle_cpu_pct"], 2) for r in results],
        f"< {TARGETS['idle_cpu_pct']:g}",
    )
    row("    of which kernel (stime)", [_f(r["idle_sys_pct"], 2) for r in results])
    row("    passes in that window", [str(r["idle_passes"]) for r in results])
    row("    catalog passes in it", [str(r["idle_catalog_passes"]) for r in results])
    row(
        "    CPU ms per pass in it",
        [
            _f(10 * r["idle_cpu_pct"] * args.idle_seconds / max(1, r["idle_passes"]), 2)
            for r in results
        ],
    )
    row(
        "(3) changes sent / logged",
        [f"{get(r, 'normal', 'sent')} / {get(r, 'normal', 'logged')}" for r in results],
        "all",
    )
    row(
        "    extra / missing entries",
        [f"{get(r, 'normal', 'extra')} / {get(r, 'normal', 'missing')}" for r in results],
        "0 / 0",
    )
    row("    change rate /s", [_f(get(r, "normal", "rate_per_s"), 2) for r in results])
    row(
        "    change -> log p50 ms",
        [_f(get(r, "normal", "all", "p50_ms")) for r in results],
        f"< {TARGETS['p50_ms']:g}",
    )
    row(
        "    change -> log p99 / max ms",
        [
            f"{_f(get(r, 'normal', 'all', 'p99_ms'))} / {_f(get(r, 'normal', 'all', 'max_ms'))}"
            for r in results
        ],
    )
    row(
        "    receipt -> log p50 / p99 ms",
        [
            f"{_f(get(r, 'normal', 'all', 'receipt_p50_ms'))} / "
            f"{_f(get(r, 'normal', 'all', 'receipt_p99_ms'))}"
            for r in results
        ],
    )
    row("    daemon CPU % core", [_f(get(r, "normal", "cpu_pct"), 1) for r in results])
    row("    simulator CPU % core", [_f(get(r, "normal", "sim_cpu_pct"), 1) for r in results])
    row(
        f"(4) 1 source 500s {args.fault_seconds:g} s: sent/logged",
        [
            f"{get(r, 'fault', 'sent')} / {get(r, 'fault', 'logged')}" if "fault" in r else "n/a"
            for r in results
        ],
        "all",
    )
    row(
        "    others p50 / p99 ms",
        [
            f"{_f(get(r, 'fault', 'others', 'p50_ms'))} / {_f(get(r, 'fault', 'others', 'p99_ms'))}"
            if "fault" in r
            else "n/a"
            for r in results
        ],
        "p99 ~ (3)",
    )
    row(
        "    others p99 / p99 of (3)",
        [
            _f(get(r, "fault", "others", "p99_ms") / get(r, "normal", "all", "p99_ms"), 2)
            if "fault" in r
            else "n/a"
            for r in results
        ],
    )
    row(
        "    failing source logged, max s",
        [
            f"{get(r, 'fault', 'failing', 'logged')}/{get(r, 'fault', 'failing', 'sent')}, "
            f"{_f(get(r, 'fault', 'failing', 'max_s'), 1)}"
            if "fault" in r
            else "n/a"
            for r in results
        ],
    )
    row(
        "peak RSS (VmHWM, whole run) MB",
        [_f(r["mem_end"]["VmHWM"]) for r in results],
        f"< {TARGETS['rss_mb']:g}",
    )
    row("RSS at end MB", [_f(r["mem_end"]["VmRSS"]) for r in results])

    label_w = max(len(r[0]) for r in rows) + 2
    print(f"{'':<{label_w}}" + "".join(f"{c:>{width}}" for c in cols) + "   target")
    for label, values, target in rows:
        print(f"{label:<{label_w}}" + "".join(f"{v:>{width}}" for v in values) + f"   {target}")

    if len(results) >= 2:
        a, b = results[0], results[-1]
        dn = b["sources"] - a["sources"]
        print(
            f"\ngrowth {a['sources']} -> {b['sources']} sources:"
            f" peak RSS {(b['mem_end']['VmHWM'] - a['mem_end']['VmHWM']) / dn:+.2f} MB/source,"
            f" RSS after sync {(b['mem_after_sync']['VmRSS'] - a['mem_after_sync']['VmRSS']) / dn:+.2f}"
            f" MB/source, idle CPU {(b['idle_cpu_pct'] - a['idle_cpu_pct']) / dn:+.4f} % core/source,"
            f" first-sync CPU {(b['sync_cpu_s'] - a['sync_cpu_s']) / dn:+.3f} core-s/source"
        )
    poll = args.poll_interval or POLL_INTERVAL
    if args.idle_seconds < poll:
        print(
            f"NOTE: the idle window ({args.idle_seconds:g} s) is shorter than poll_interval"
            f" ({poll:g} s), so it may hold none of the safety-net polls: (2) is a lower bound;"
            f" use --idle-seconds {poll:g} for the real idle cost"
        )
    if args.idle_seconds < CATALOG_INTERVAL:
        print(
            f"NOTE: the idle window ({args.idle_seconds:g} s) is shorter than catalog_interval"
            f" ({CATALOG_INTERVAL:g} s): it may hold few or none of the sources' catalog passes;"
            f" use --idle-seconds {CATALOG_INTERVAL:g} to count them in (2)"
        )
    biggest = results[-1]
    misses = []
    if not get(biggest, "normal", "all", "p50_ms") < TARGETS["p50_ms"]:
        misses.append("p50 change -> log")
    if not biggest["mem_end"]["VmHWM"] < TARGETS["rss_mb"]:
        misses.append("peak RSS")
    if not biggest["idle_cpu_pct"] < TARGETS["idle_cpu_pct"]:
        misses.append("idle CPU")
    for phase in ("normal", "fault"):
        if phase in biggest and (biggest[phase]["missing"] or biggest[phase]["extra"]):
            misses.append(f"{phase}: changes missing or extra")
    print(
        f"targets at {biggest['sources']} sources: "
        + ("all met" if not misses else "MISSED " + ", ".join(misses))
    )
    for r in results:
        print(
            f"  {r['sources']} src: passes {r['passes']}; simulator answers {r['sim_statuses']};"
            f" webhooks {r['sim_webhooks']}; daemon log lines {r['log_levels']}"
        )
        for phase in ("normal", "fault"):
            if r.get(phase, {}).get("missing_sample"):
                print(f"    {phase} missing e.g. {r[phase]['missing_sample']}")


def _frame(text: str) -> str:
    """``fn (syncd/sync/engine.py:120)`` -> ``fn (syncd/sync/engine.py)``: one entry per function."""
    name, _, where = text.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def print_profile(collapsed: str, top: int = 25) -> None:
    """Self and inclusive share of samples per function, from py-spy's collapsed stacks (py-spy
    leaves out threads it sees idle, so the samples are where CPU went)."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    print(f"  {total} samples; top by inclusive share (% of samples)")
    for name, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f} %  self {100 * own.get(name, 0) / total:5.1f} %  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=200, help="the largest scale")
    parser.add_argument("--scales", help="comma-separated source counts (default 1,N/10,N)")
    parser.add_argument("--counts", type=int, default=2000, help="counts per source")
    parser.add_argument("--locations", type=int, default=4, help="locations per source")
    parser.add_argument("--minutes", type=int, default=3, help="changes per source in (3)")
    parser.add_argument(
        "--minute-seconds",
        type=float,
        default=60.0,
        help="how long a 'minute' of (3) and (4) lasts: < 60 compresses the rate",
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--fault-seconds", type=float, default=60.0)
    parser.add_argument(
        "--poll-interval",
        type=float,
        help="sources' poll_interval (the safety-net pass); default: syncd's own (60 s)",
    )
    parser.add_argument(
        "--profile-idle",
        action="store_true",
        help="sample the daemon with py-spy during (2); prints the top frames",
    )
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after (1) before (2)")
    parser.add_argument("--sync-timeout", type=float, default=900.0)
    parser.add_argument(
        "--quick", action="store_true", help="1 and 20 sources, compressed (~1.5 min)"
    )
    parser.add_argument("--keep", type=Path, help="keep databases and logs under this directory")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.sources, args.minutes, args.minute_seconds = 20, 2, 6.0
        args.idle_seconds, args.fault_seconds = 15.0, 12.0
        args.scales = args.scales or "1,20"
    scales = (
        [int(s) for s in args.scales.split(",")]
        if args.scales
        else sorted({1, max(1, args.sources // 10), args.sources})
    )
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    compressed = args.minute_seconds < 60
    print(
        f"many sources in one daemon: scales {scales} x {args.counts:,} counts"
        f" ({args.locations} locations each), {os.cpu_count()} CPUs; defaults of syncd"
        f" (poll_interval {args.poll_interval or POLL_INTERVAL:g} s, max_concurrent_passes 8,"
        " debounce 0.1 s)"
    )
    rate = (
        f"COMPRESSED: 1 change per source every {args.minute_seconds:g} s (instead of 60 s)"
        if compressed
        else "1 change per source per minute (real rate)"
    )
    print(
        f"changes: {rate}, {args.minutes} per source; idle window {args.idle_seconds:g} s;"
        f" one source answering 500 for {args.fault_seconds:g} s\n"
    )
    results = []
    for n in scales:
        t0 = time.monotonic()
        result = run_scale(n, args, args.keep)
        where = f": {result['dir']}" if args.keep else ""
        print(f"  [{n} sources done in {time.monotonic() - t0:.0f} s{where}]", flush=True)
        results.append(result)
    print()
    print_table(results, args)
    for r in results:
        if "idle_profile" in r:
            print(f"\nidle profile of {r['sources']} sources (py-spy, {args.idle_seconds:g} s):")
            print_profile(r["idle_profile"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
