"""Every Prometheus metric syncd exports, declared once, on one registry. Nothing else lives here.

Names follow Prometheus conventions (``syncd_`` prefix, ``_total`` counters, base units). docs/metrics.md
lists them; a test fails when one is missing there.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

SYNC_PASSES = Counter(
    "syncd_sync_passes_total", "Sync passes by kind and outcome", ["source", "kind", "outcome"],
    registry=REGISTRY)
SYNC_PASS_SECONDS = Histogram(
    "syncd_sync_pass_duration_seconds", "Duration of sync passes", ["source", "kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900), registry=REGISTRY)
SYNC_PAGES = Counter(
    "syncd_sync_pages_total", "Pages of counts fetched and applied", ["source"], registry=REGISTRY)
SYNC_COUNTS = Counter(
    "syncd_sync_counts_total", "Counts fetched from the upstream", ["source"], registry=REGISTRY)
CHANGES_WRITTEN = Counter(
    "syncd_changes_written_total", "Change-log entries written", ["kind"], registry=REGISTRY)
UPSTREAM_REQUESTS = Counter(
    "syncd_upstream_requests_total", "Upstream HTTP requests by operation and status",
    ["op", "status"], registry=REGISTRY)
UPSTREAM_RETRIES = Counter(
    "syncd_upstream_retries_total", "Upstream retries by operation", ["op"], registry=REGISTRY)
WATERMARK_LAG = Gauge(
    "syncd_watermark_lag_seconds", "Seconds between now and the partition's watermark",
    ["source", "partition"], registry=REGISTRY)
CHANGELOG_HEAD = Gauge(
    "syncd_changelog_head_seq", "Newest seq in the change log", registry=REGISTRY)
