"""Every Prometheus metric syncd exports, declared once, on one registry, and ``child``. Nothing
else lives here.

Names follow Prometheus conventions (``syncd_`` prefix, ``_total`` counters, base units). docs/metrics.md
lists them; a test fails when one is missing there.
"""

from __future__ import annotations

import functools
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from syncd import __version__

M = TypeVar("M", Counter, Histogram)


@functools.lru_cache(maxsize=8192)
def child(metric: M, *values: str) -> M:
    """``metric.labels(*values)``, memoised: ``labels`` builds its key and takes a lock on every
    call, which a pass or a webhook paid several times (issue 11). Only for metrics whose
    children are never removed (the counters and histograms; gauges of a removed source are)."""
    return metric.labels(*values)


# No ``*_created`` series: they double the output and Prometheus does not need them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
REGISTRY = CollectorRegistry(auto_describe=True)

SYNC_PASSES = Counter(
    "syncd_sync_passes_total",
    "Sync passes by kind and outcome",
    ["source", "kind", "outcome"],
    registry=REGISTRY,
)
SYNC_PASS_SECONDS = Histogram(
    "syncd_sync_pass_duration_seconds",
    "Duration of sync passes",
    ["source", "kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
    registry=REGISTRY,
)
SYNC_PAGES = Counter(
    "syncd_sync_pages_total", "Pages of counts fetched and applied", ["source"], registry=REGISTRY
)
SYNC_COUNTS = Counter(
    "syncd_sync_counts_total", "Counts fetched from the upstream", ["source"], registry=REGISTRY
)
CATALOG_PASSES = Counter(
    "syncd_catalog_passes_total",
    "Catalog passes by kind (catalog, catalog_full) and outcome",
    ["source", "kind", "outcome"],
    registry=REGISTRY,
)
CATALOG_PASS_SECONDS = Histogram(
    "syncd_catalog_pass_duration_seconds",
    "Duration of catalog passes",
    ["source", "kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
    registry=REGISTRY,
)
CATALOG_OBJECTS = Counter(
    "syncd_catalog_objects_total",
    "Catalog items and variations fetched from the upstream",
    ["source"],
    registry=REGISTRY,
)
CATALOG_UNKNOWN_VARIATIONS = Gauge(
    "syncd_catalog_unknown_variation_counts",
    "Mirrored counts whose variation the catalog mirror does not know (yet), as last counted"
    " after a catalog pass or a full counts pass (at scrape)",
    ["source"],
    registry=REGISTRY,
)
CHANGES_WRITTEN = Counter(
    "syncd_changes_written_total",
    "Change-log entries written, by source and kind",
    ["source", "kind"],
    registry=REGISTRY,
)
UPSTREAM_REQUESTS = Counter(
    "syncd_upstream_requests_total",
    "Upstream HTTP requests by source (or job provider), operation and status",
    ["source", "op", "status"],
    registry=REGISTRY,
)
UPSTREAM_RETRIES = Counter(
    "syncd_upstream_retries_total",
    "Upstream retries by source (or job provider) and operation",
    ["source", "op"],
    registry=REGISTRY,
)
WATERMARK_LAG = Gauge(
    "syncd_watermark_lag_seconds",
    "Seconds between now and the partition's watermark",
    ["source", "partition"],
    registry=REGISTRY,
)
CHANGELOG_HEAD = Gauge(
    "syncd_changelog_head_seq", "Newest seq in the change log", registry=REGISTRY
)

# Webhook ingress (issue 3).
WEBHOOKS_ACCEPTED = Counter(
    "syncd_webhooks_accepted_total",
    "Webhooks answered 200, by whether they were new or repeats",
    ["source", "outcome"],
    registry=REGISTRY,
)
FAST_PATH_COUNTS = Counter(
    "syncd_fast_path_counts_total",
    "Counts carried by inventory.count.updated webhooks and applied at once (issue 14), by outcome:"
    " changed, unchanged, stale (older than the mirror), unknown (not in the mirror: left to the pull),"
    " out_of_scope (filtered as the pull would)",
    ["source", "outcome"],
    registry=REGISTRY,
)
FAST_PATH_EVENTS = Counter(
    "syncd_fast_path_events_total",
    "inventory.count.updated webhooks offered to the fast path, by outcome: applied, invalid"
    " (counts that fail validation: left to the pull), failed (could not be written: left to the"
    " pull), unauthorized (the source's grant is revoked)",
    ["source", "outcome"],
    registry=REGISTRY,
)
WEBHOOKS_REJECTED = Counter(
    "syncd_webhooks_rejected_total",
    "Webhooks refused, by reason (signature, size, body, ...)",
    ["source", "reason"],
    registry=REGISTRY,
)
WEBHOOK_COMMIT_BATCH = Histogram(
    "syncd_webhook_commit_batch_size",
    "Webhook events committed per inbox transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
WEBHOOK_EVENTS_PROCESSED = Counter(
    "syncd_webhook_events_processed_total",
    "Inbox rows marked processed after a covering pass",
    ["source"],
    registry=REGISTRY,
)
WEBHOOK_EVENTS_PRUNED = Counter(
    "syncd_webhook_events_pruned_total",
    "Processed inbox rows deleted by retention",
    registry=REGISTRY,
)

# Job tracking (issue 4).
JOB_POLLS = Counter(
    "syncd_job_polls_total",
    "Job status polls by provider and outcome (ok, not_found, error)",
    ["provider", "outcome"],
    registry=REGISTRY,
)
JOB_POLL_SECONDS = Histogram(
    "syncd_job_poll_duration_seconds",
    "Duration of one job status request",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
JOB_TRANSITIONS = Counter(
    "syncd_job_transitions_total",
    "Job state transitions recorded, by provider and new state",
    ["provider", "state"],
    registry=REGISTRY,
)
JOB_UNKNOWN_STATUS = Counter(
    "syncd_job_unknown_status_total",
    "Polls that returned a vendor status syncd does not know",
    ["provider"],
    registry=REGISTRY,
)
JOBS_TRACKED = Gauge(
    "syncd_jobs_tracked", "Unfinished jobs the poller is tracking", ["provider"], registry=REGISTRY
)
JOB_DOWNLOADS = Counter(
    "syncd_job_downloads_total",
    "Job result downloads by outcome (ok, refused, failed, retry)",
    ["provider", "outcome"],
    registry=REGISTRY,
)
JOB_DOWNLOAD_BYTES = Counter(
    "syncd_job_download_bytes_total",
    "Bytes of job result files downloaded",
    ["provider"],
    registry=REGISTRY,
)

# Service, change-log delivery and scrape-time state (issue 5). The gauges below marked "at scrape"
# are set from one database read when /metrics is scraped (web/admin_metrics.py).
BUILD_INFO = Info("syncd_build", "syncd version", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})
ProcessCollector(registry=REGISTRY)  # process_*: CPU, resident memory, open fds, start time
PlatformCollector(registry=REGISTRY)  # python_info
SYNC_POKES = Counter(
    "syncd_sync_pokes_total",
    "Requests for a pass soon (webhooks, jobs, admin), before coalescing",
    ["source"],
    registry=REGISTRY,
)
OAUTH_REFRESHES = Counter(
    "syncd_oauth_refreshes_total",
    "Access-token refreshes by outcome (ok, revoked, failed)",
    ["source", "outcome"],
    registry=REGISTRY,
)
SOURCE_UNAUTHORIZED = Gauge(
    "syncd_source_unauthorized",
    "1 while the source's OAuth grant is revoked or invalid (its passes stop until fixed)",
    ["source"],
    registry=REGISTRY,
)
OAUTH_TOKEN_AGE = Gauge(
    "syncd_oauth_token_age_seconds",
    "Age of the source's current access token (alert past oauth.alert_after)",
    ["source"],
    registry=REGISTRY,
)
SYNC_LAST_SUCCESS = Gauge(
    "syncd_sync_last_success_timestamp_seconds",
    "Unix time the partition last finished a good pass (at scrape)",
    ["source", "partition"],
    registry=REGISTRY,
)
CHANGELOG_OLDEST = Gauge(
    "syncd_changelog_oldest_seq",
    "Oldest seq still kept; readers behind it get a gap (at scrape)",
    registry=REGISTRY,
)
CHANGELOG_PRUNED = Counter(
    "syncd_changelog_pruned_total", "Change-log entries deleted by retention", registry=REGISTRY
)
CHANGE_STREAM_CLIENTS = Gauge(
    "syncd_change_stream_clients",
    "Open change-log streams and long-polls on the admin API",
    ["kind"],
    registry=REGISTRY,
)
WEBHOOK_INBOX_BACKLOG = Gauge(
    "syncd_webhook_inbox_backlog",
    "Webhook events received but not yet covered by a pass (at scrape)",
    ["source"],
    registry=REGISTRY,
)
JOBS_BY_STATE = Gauge(
    "syncd_jobs",
    "Tracked jobs by state, finished ones included (at scrape)",
    ["state"],
    registry=REGISTRY,
)
CONFIG_RELOADS = Counter(
    "syncd_config_reloads_total",
    "SIGHUP config reloads by outcome (ok, failed)",
    ["outcome"],
    registry=REGISTRY,
)

# Publishing the change log to Redis Streams (issue 7).
PUBLISH_LAG = Gauge(
    "syncd_publish_lag_entries",
    "Change-log entries not yet published: head seq - published seq",
    ["target"],
    registry=REGISTRY,
)
PUBLISH_SEQ = Gauge(
    "syncd_publish_published_seq",
    "Newest seq published to the target's stream",
    ["target"],
    registry=REGISTRY,
)
PUBLISH_ENTRIES = Counter(
    "syncd_publish_entries_total", "Change-log entries published", ["target"], registry=REGISTRY
)
PUBLISH_REFUSED = Counter(
    "syncd_publish_refused_total",
    "Entries the stream refused as already there (ID not above its last one)",
    ["target"],
    registry=REGISTRY,
)
PUBLISH_SKIPPED = Counter(
    "syncd_publish_skipped_total",
    "Entries retention pruned before they could be published",
    ["target"],
    registry=REGISTRY,
)
PUBLISH_FAILURES = Counter(
    "syncd_publish_failures_total",
    "Failed publish attempts, each retried after a backoff",
    ["target"],
    registry=REGISTRY,
)
PUBLISH_STREAM_CONFLICT = Gauge(
    "syncd_publish_stream_conflict",
    "1 while the relay refuses its stream: another database claimed it (reason owned), or it holds"
    " seqs this change log never wrote (ahead); nothing is written to it meanwhile",
    ["target", "reason"],
    registry=REGISTRY,
)
PUBLISH_BATCH_SECONDS = Histogram(
    "syncd_publish_batch_duration_seconds",
    "Round trip of one published batch",
    ["target"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
    registry=REGISTRY,
)
PUBLISH_DELAY = Histogram(
    "syncd_publish_delay_seconds",
    "Seconds from a change's commit to its publication (the oldest entry of each batch)",
    ["target"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300),
    registry=REGISTRY,
)

OUTBOUND_DELIVERED = Counter(
    "syncd_outbound_delivered_entries_total",
    "Change-log entries an outbound endpoint acknowledged with a 2xx",
    ["endpoint"],
    registry=REGISTRY,
)
OUTBOUND_ATTEMPTS = Counter(
    "syncd_outbound_attempts_total",
    "POSTs to an outbound endpoint by outcome: ok (2xx), http_error (another status), gone (410),"
    " timeout, connection",
    ["endpoint", "outcome"],
    registry=REGISTRY,
)
OUTBOUND_LAG = Gauge(
    "syncd_outbound_lag_entries",
    "Change-log entries an outbound endpoint has not acknowledged yet: head seq - its position",
    ["endpoint"],
    registry=REGISTRY,
)
OUTBOUND_ACKED_SEQ = Gauge(
    "syncd_outbound_acked_seq",
    "The seq up to which an outbound endpoint has acknowledged the log",
    ["endpoint"],
    registry=REGISTRY,
)
OUTBOUND_DISABLED = Gauge(
    "syncd_outbound_disabled",
    "1 while an outbound endpoint is disabled (410, or failing longer than disable_after)",
    ["endpoint"],
    registry=REGISTRY,
)
OUTBOUND_SKIPPED = Counter(
    "syncd_outbound_skipped_total",
    "Entries retention pruned before an outbound endpoint got them",
    ["endpoint"],
    registry=REGISTRY,
)
OUTBOUND_DELAY = Histogram(
    "syncd_outbound_delivery_delay_seconds",
    "Seconds from a change's commit to its endpoint's 2xx (the oldest entry of each batch)",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600),
    registry=REGISTRY,
)
