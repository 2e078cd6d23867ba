"""Every exported metric is documented in docs/metrics.md, and the Grafana dashboard only queries
metrics that exist."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from syncd.metrics import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "config" / "grafana-dashboard.json"
SUFFIX = {"counter": "_total", "info": "_info"}


def exported_names() -> set[str]:
    """The names a scrape shows for each metric family (``_total`` counters, ``_info`` infos)."""
    return {family.name + SUFFIX.get(family.type, "") for family in REGISTRY.collect()}


def test_every_metric_is_documented() -> None:
    """Each metric family on syncd's registry has a row in docs/metrics.md, and the page lists
    nothing that does not exist."""
    text = DOCS.read_text(encoding="utf-8")
    names = exported_names()
    missing = sorted(n for n in names if f"| `{n}` |" not in text)
    assert not missing, f"docs/metrics.md lacks: {missing}"
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))
    assert documented <= names, f"docs/metrics.md lists unknown metrics: {documented - names}"


def test_dashboard_queries_known_metrics() -> None:
    """The Grafana dashboard is valid JSON and every metric it queries is exported."""
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    known = exported_names()
    histograms = {f.name for f in REGISTRY.collect() if f.type == "histogram"}
    for expr in exprs:
        for name in re.findall(r"\b((?:syncd|process|python)_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in known or base in histograms, f"{name} in {expr!r}"
