"""Prometheus metrics of every driftline service, on prometheus_client's default registry.

Both run modes use the same objects: ``driftline serve <service>`` exposes them on
``DRIFTLINE_METRICS_PORT``; the embedded ``driftline up`` mounts
``prometheus_client.make_asgi_app()`` at ``/metrics``. Labels are bounded on purpose:
service, topic, partition, model, feature, detector and a dead-letter *category* —
never an event id or an error message, whose values grow without limit.

The runner and the services' adapters record into these; the pure logic classes
never do (they stay free of I/O and of global state).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RECORDS_IN = Counter("driftline_records_in", "Records a service read from a topic.", ["service", "topic"])
RECORDS_OUT = Counter("driftline_records_out", "Records a service published to a topic (acknowledged).",
                      ["service", "topic"])
DEAD_LETTERS = Counter("driftline_dead_letters", "Records a service dead-lettered, by reason category.",
                       ["service", "reason"])
BATCH_SECONDS = Histogram("driftline_batch_seconds", "Time to handle and checkpoint one non-empty batch.",
                          ["service"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
CHECKPOINT_SECONDS = Histogram("driftline_checkpoint_seconds",
                               "Time of a checkpoint: store rows, publish and flush, commit, state.",
                               ["service"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CONSUMER_LAG = Gauge("driftline_consumer_lag", "Records on a partition the service's group has not committed yet "
                     "(high watermark minus committed offset).", ["service", "topic", "partition"])
INGEST_RECORDS = Counter("driftline_ingest_records", "Records posted to ingest, by outcome "
                         "(accepted, already_accepted, rejected).", ["topic", "outcome"])
LABEL_COVERAGE = Gauge("driftline_label_coverage", "Share of the champion's predictions with a joined label, "
                       "in the newest coverage window reported.", ["model"])
PSI = Gauge("driftline_psi", "PSI of a feature in the latest closed drift window of the champion.",
            ["model", "feature"])
CONCEPT_DETECTIONS = Counter("driftline_concept_detections", "Concept-drift detections on the error stream.",
                             ["model", "detector"])
RETRAIN_REQUESTS = Counter("driftline_retrain_requests", "Retrain requests the drift-detector issued.", ["model"])
CHAMPION_VERSION = Gauge("driftline_champion_version", "The version a service knows as a model's champion.",
                         ["service", "model"])
SERVICE_HEALTHY = Gauge("driftline_service_healthy", "1 while the service works; 0 while it waits for a dependency "
                        "(broker, schema registry, model registry, store) that is down.", ["service"])

#: Dead-letter reason categories, chosen where a letter is made (the full reason is in
#: the ``dead_letters`` table).
UNDECODABLE = "undecodable"  # the runner could not decode the bytes
UNSCORABLE = "unscorable"  # the predictor had no model to score the event with
OTHER = "other"


# -- models that fail to load, events the predictor refuses ------------------------
MODEL_LOAD_FAILURES = Counter("driftline_model_load_failures", "Model versions a service refused to load "
                              "(sha256 mismatch, untrusted or unloadable artifact), once per version and reason.",
                              ["service", "model", "alias"])
BAD_FEATURES = "bad_features"  # a numeric feature the model cannot compute with (inf, beyond float32)
SCORING_FAILED = "scoring_failed"  # the model raised on this event alone

def ingest_reason(status: int | None) -> str:
    """The bounded category of an ingest rejection, from its per-record status."""
    return {400: "bad_body", 409: "duplicate", 413: "too_large", 422: "invalid", 503: "unavailable"}.get(
        status or 400, "other")


class RunnerMetrics:
    """What a :class:`driftline.runner.Runner` records, bound to its service's name.

    Parameters
    ----------
    service
        The ``service`` label of every series.
    lag_every_s
        Consumer lag asks the bus for high watermarks (a broker round trip on Kafka), so
        it is refreshed at most this often.
    """

    def __init__(self, service: str, lag_every_s: float = 5.0):
        self.service = service
        self.lag_every_s = lag_every_s
        self._lag_next = float("-inf")  # monotonic time of the next lag refresh
        self.batch_seconds = BATCH_SECONDS.labels(service)
        self.checkpoint_seconds = CHECKPOINT_SECONDS.labels(service)

    def received(self, messages: Iterable[Any]) -> None:
        counts: dict[str, int] = {}
        for message in messages:
            counts[message.topic] = counts.get(message.topic, 0) + 1
        for topic, n in counts.items():
            RECORDS_IN.labels(self.service, topic).inc(n)

    def delivered(self, records: Iterable[tuple[str, str | None, dict[str, Any]]],
                  dead_reasons: dict[str, int]) -> None:
        """Count acknowledged records per topic, and dead letters per reason category."""
        counts: dict[str, int] = {}
        for topic, _key, _record in records:
            counts[topic] = counts.get(topic, 0) + 1
        for topic, n in counts.items():
            RECORDS_OUT.labels(self.service, topic).inc(n)
        for reason, n in dead_reasons.items():
            DEAD_LETTERS.labels(self.service, reason).inc(n)

    def lag(self, consumer: Any, force: bool = False) -> None:
        """Refresh the lag gauges from ``consumer.lag()`` if ``lag_every_s`` has passed.

        Asking costs a round trip per partition (over Kafka: 24 partitions took 12 s against a
        busy broker), and it happens on the poll loop: the next refresh waits at least ten
        times as long as this one took, so the gauges never take more than a tenth of the
        runner's time, however many partitions it reads.
        """
        started = time.monotonic()
        if not force and started < self._lag_next:
            return
        try:
            lags = consumer.lag()
        except Exception:  # a broker that does not answer now is not the batch's failure
            lags = {}
        took = time.monotonic() - started
        self._lag_next = started + took + max(self.lag_every_s, 10 * took)
        for (topic, partition), value in lags.items():
            CONSUMER_LAG.labels(self.service, topic, str(partition)).set(value)


def observe_drift(metric_rows: Iterable[dict[str, Any]], signals: Iterable[dict[str, Any]],
                  requests: Iterable[Any], newest_coverage: dict[str, int]) -> None:
    """Domain gauges and counters from a drift-detector batch.

    ``newest_coverage`` (model -> window start) is the caller's memory of the newest
    coverage window reported, so a late label that rewrites an old window's row does not
    set the gauge back to that old window.
    """
    for row in metric_rows:
        if row.get("kind") == "data" and row.get("statistic") == "psi":
            PSI.labels(row["model"], row["feature"]).set(row["value"])
        elif row.get("kind") == "coverage" and row.get("statistic") == "coverage":
            start = int(row["window_start"])
            if start >= newest_coverage.get(row["model"], start):
                newest_coverage[row["model"]] = start
                LABEL_COVERAGE.labels(row["model"]).set(row["value"])
    for signal in signals:
        if signal.get("kind") == "concept":
            CONCEPT_DETECTIONS.labels(signal["model"], signal["statistic"]).inc()
    for request in requests:
        RETRAIN_REQUESTS.labels(request.model).inc()


def observe_ingest(topic: str, accepted: int, already_accepted: int, rejected_statuses: Iterable[int | None]) -> None:
    """One ingest request's outcome: records per outcome, published records, dead letters by category."""
    rejected = list(rejected_statuses)
    for outcome, n in (("accepted", accepted), ("already_accepted", already_accepted), ("rejected", len(rejected))):
        if n:
            INGEST_RECORDS.labels(topic, outcome).inc(n)
    if accepted:
        RECORDS_OUT.labels("ingest", topic).inc(accepted)
    for status in rejected:
        DEAD_LETTERS.labels("ingest", ingest_reason(status)).inc()


def observe_champions(service: str, versions: dict[tuple[str, str], int]) -> None:
    """``(model, role) -> version`` as the champion-version gauge (other roles ignored)."""
    for (model, role), version in versions.items():
        if role == "champion":
            CHAMPION_VERSION.labels(service, model).set(version)


def observe_model_event(service: str, event: dict[str, Any]) -> None:
    """A registry ModelEvent: a champion alias move sets the gauge."""
    if event.get("alias") == "champion" and event.get("version") is not None:
        CHAMPION_VERSION.labels(service, event["model"]).set(event["version"])


def start_server(port: int, host: str = "127.0.0.1") -> None:
    """Serve the default registry's text format on ``host:port`` from a daemon thread."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host)
