"""Prometheus metrics, served on ``--metrics-port`` when given."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

BACKLOG = Gauge("cdc_outbox_backlog", "Changes in the outbox not yet confirmed by the broker")
OLDEST_AGE = Gauge(
    "cdc_outbox_oldest_age_seconds", "Age of the oldest unpublished change (0 when empty)"
)
PUBLISHED = Counter("cdc_published_total", "Changes the broker confirmed it stored")
BATCH_LATENCY = Histogram(
    "cdc_publish_batch_seconds",
    "From sending a batch to the broker's receipt",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECONNECTS = Counter("cdc_reconnects_total", "Reconnections after a failure", ["service"])
for _service in ("postgres", "broker"):  # exported as 0 from the start, so increase() works
    RECONNECTS.labels(service=_service)
LEADER = Gauge("cdc_leader", "1 while this relay holds the leader lock, else 0")


def serve(port: int) -> None:
    start_http_server(port)
    logger.info("metrics on port %d", port, extra={"action": "metrics_started"})


def observe_backlog(count: int, oldest_age: float | None) -> None:
    BACKLOG.set(count)
    OLDEST_AGE.set(oldest_age or 0.0)
