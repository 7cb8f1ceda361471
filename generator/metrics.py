"""Prometheus metrics of the generator, in a registry of its own."""

from __future__ import annotations

import logging
import time

import prometheus_client

logger = logging.getLogger(__name__)

RESULTS = ("applied", "unchanged", "failed", "refused", "db_unavailable")
APPLY_KINDS = ("omapi", "restart", "unchanged")
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)  # seconds


class Metrics:
    """Every metric the daemon updates; ``serve`` exposes them over HTTP."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        r = self.registry
        self.renders = prometheus_client.Counter(
            "dhcp_generator_renders", "Renders by result", ["result"], registry=r
        )
        for result in RESULTS:
            self.renders.labels(result)
        self.messages = prometheus_client.Counter(
            "dhcp_generator_messages",
            "Change messages received, by kind (relevant, unrelated, bad)",
            ["kind"],
            registry=r,
        )
        self.covered = prometheus_client.Counter(
            "dhcp_generator_messages_covered",
            "Relevant messages acknowledged without a render: the applied snapshot had them",
            registry=r,
        )
        self.pending = prometheus_client.Gauge(
            "dhcp_generator_pending_messages",
            "Relevant messages received and not yet acknowledged (waiting for a render)",
            registry=r,
        )
        self.reservations = prometheus_client.Gauge(
            "dhcp_generator_reservations", "Reservations in the last rendered config", registry=r
        )
        self.rows_skipped = prometheus_client.Gauge(
            "dhcp_generator_rows_skipped",
            "Rows left out of the last render by validation",
            registry=r,
        )
        self.render_seconds = prometheus_client.Histogram(
            "dhcp_generator_render_seconds",
            "Read, validate and render time",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.apply_seconds = prometheus_client.Histogram(
            "dhcp_generator_apply_seconds",
            "Write, check and reload time",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.commit_to_applied = prometheus_client.Histogram(
            "dhcp_generator_commit_to_applied_seconds",
            "From a change's capture in the database to the config covering it being in place",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.applies = prometheus_client.Counter(
            "dhcp_generator_applies",
            "Configs put in place, by how the server got them: omapi (hosts sent to the"
            " running dhcpd), restart (the reload command), unchanged (nothing to do)",
            ["kind"],
            registry=r,
        )
        for kind in APPLY_KINDS:
            self.applies.labels(kind)
        self.omapi_fallbacks = prometheus_client.Counter(
            "dhcp_generator_omapi_fallbacks",
            "Host changes that OMAPI could not apply (or that dhcpd did not show afterwards),"
            " applied by a restart instead",
            registry=r,
        )
        self.omapi_mismatches = prometheus_client.Counter(
            "dhcp_generator_omapi_mismatches",
            "Hosts that dhcpd, looked up after an OMAPI apply, had otherwise than rendered",
            registry=r,
        )
        self.reconciliations = prometheus_client.Counter(
            "dhcp_generator_reconciliations",
            "Full reads compared with the state the incremental passes kept",
            registry=r,
        )
        self.reconcile_differences = prometheus_client.Counter(
            "dhcp_generator_reconcile_differences",
            "Reservations a reconciliation found different from the incremental state,"
            " with no message on its way to explain it (drift: should stay 0)",
            registry=r,
        )
        self.last_applied = prometheus_client.Gauge(
            "dhcp_generator_last_applied_timestamp_seconds",
            "Unix time the config in place was last confirmed current",
            registry=r,
        )
        self.config_age = prometheus_client.Gauge(
            "dhcp_generator_applied_config_age_seconds",
            "Seconds since the config in place was last confirmed current",
            registry=r,
        )
        self.clock_skew = prometheus_client.Gauge(
            "dhcp_generator_clock_skew_seconds",
            "This machine's clock minus the database's, measured at each full pass of a"
            " failover pair's scope (NaN until then); failover peers need it near 0",
            registry=r,
        )
        self.clock_skew.set(float("nan"))
        self._last_applied: float | None = None
        self.config_age.set_function(self._age)

    def confirmed(self, *, now: float | None = None) -> None:
        """The config in place matches the database as of now."""
        stamp = time.time() if now is None else now
        self._last_applied = stamp
        self.last_applied.set(stamp)

    def _age(self) -> float:
        if self._last_applied is None:
            return float("nan")
        return max(0.0, time.time() - self._last_applied)

    def serve(self, port: int, *, address: str = "0.0.0.0") -> None:  # noqa: S104
        prometheus_client.start_http_server(port, addr=address, registry=self.registry)
        logger.info("metrics on port %d", port, extra={"action": "metrics_listening"})
