"""Prometheus metrics; labels are route templates and kinds, never card data."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "giftsync_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "giftsync_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
JOBS_FINISHED = Counter(
    "giftsync_jobs_finished_total", "Job attempts by outcome", ["kind", "outcome"]
)

# --- reconcile (app/sync/reconcile/); `mode` is `repair` or `dry_run` ---
RECONCILE_CARDS_CHECKED = Counter(
    "giftsync_reconcile_cards_checked_total", "Cards a reconcile compared", ["mode"]
)
RECONCILE_CARDS_IN_SYNC = Counter(
    "giftsync_reconcile_cards_in_sync_total", "Cards a reconcile found in agreement", ["mode"]
)
RECONCILE_CARDS_REPAIRED = Counter(
    "giftsync_reconcile_cards_repaired_total",
    "Cards a reconcile repaired (or, dry, would repair)",
    ["mode"],
)
RECONCILE_FINDINGS = Counter(
    "giftsync_reconcile_findings_total", "Findings a reconcile recorded, by type", ["type", "mode"]
)
RECONCILE_DRIFT_MINOR = Counter(
    "giftsync_reconcile_drift_minor_total",
    "Money moved to repair drift: the sum of absolute moves, in minor units",
    ["mode"],
)
RECONCILE_RUN_SECONDS = Histogram(
    "giftsync_reconcile_run_seconds",
    "Wall time of one reconcile run (one execution; a resumed run counts each)",
    ["mode"],
    buckets=(1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0),
)

# --- Shopify (app/clients/shopify) ---
SHOPIFY_API_VERSION_MISMATCH = Gauge(
    "giftsync_shopify_api_version_mismatch",
    "1 when Shopify answers another Admin API version (X-Shopify-API-Version) than the one asked",
    ["asked", "answered"],
)
