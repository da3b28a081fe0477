"""Settings shared by every service, read from ``DRIFTLINE_*`` environment variables.

Embedded mode needs none of them: everything defaults to local state under
``DRIFTLINE_HOME`` (``.driftline/``). Distributed mode points the same fields
at a Kafka cluster, a schema registry, a ClickHouse server and the registry
service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", extra="ignore")

    home: Path = Field(Path(".driftline"), description="All local state: store, registry, checkpoints.")
    kafka_bootstrap: str | None = Field(None, description="host:port list; unset means the in-process bus.")
    kafka_config: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description='Extra librdkafka settings as JSON, e.g. {"security.protocol": "SASL_SSL"}.')
    schema_registry_url: str | None = Field(None, description="Confluent-compatible registry; unset means in-process.")
    store_dsn: str | None = Field(None, description="clickhouse-connect DSN; unset means chdb://HOME/store.")
    registry_url: str | None = Field(None, description="Registry service URL; unset means the local registry under HOME.")
    registry_token: SecretStr | None = Field(None, description="Bearer token required by registry write endpoints.")
    partitions: int = Field(3, ge=1, description="Partitions per topic when driftline creates topics.")
    # 2,000: the embedded demo's label-joiner and drift-detector then take a chunk's 1,000 predictions
    # and its labels in one batch, one store insert per table (embedded bench: +17 %, 2 A/B pairs).
    batch_size: int = Field(2000, ge=1, description="Records per poll.")
    poll_timeout_s: float = Field(0.2, gt=0)
    label_ttl_ms: int = Field(3_600_000, ge=0, description="How long an early label waits for its prediction.")

    # drift-detector
    drift_window_kind: str = Field("tumbling", description="tumbling or hopping")
    drift_window_by: str = Field("time", description="time (event time, ms) or count (events)")
    drift_window_size: int = Field(60_000, ge=1, description="ms for time windows, events for count windows")
    drift_window_step: int | None = Field(None, description="hop of hopping windows")
    # event time (README, "Event time and late events")
    drift_allowed_lateness_ms: int = Field(
        60_000, ge=0, description="How long after the watermark passes a window's end it still takes events; "
                                  "later ones are counted as late_events rows. One default window: the watermark "
                                  "is already the minimum over partitions, so this only needs to cover disorder "
                                  "within a partition (batched or retried producers), and a window's PSI is "
                                  "written at most one window later.")
    drift_max_skew_ms: int = Field(
        3_600_000, ge=0, description="An event later than its partition's watermark, or than the wall clock, by "
                                     "more than this cannot move the watermark: it is counted in its own window "
                                     "and as an ahead_events row.")
    drift_idle_timeout_ms: int = Field(
        60_000, ge=0, description="Wall time without records after which a partition no longer holds the "
                                  "watermark back (and after which a partition whose events all stay ahead "
                                  "is followed).")
    drift_psi_threshold: float = Field(0.25, gt=0)
    drift_consecutive_windows: int = Field(1, ge=1, description="windows in a row at or above the threshold")
    drift_reset_below: float = Field(0.10, ge=0, description="an incident ends when every PSI falls below this")
    drift_cooldown_ms: int = Field(3_600_000, ge=0, description="event time after a promotion without a request for "
                                   "the model (and between two requests no retrainer answers)")
    drift_min_events: int = Field(200, ge=1, description="smaller windows are not judged")
    concept_detectors: dict[str, str] = Field(default_factory=dict, description='model -> detector, e.g. {"credit": "KSWIN"}; default ADWIN')
    concept_params: dict[str, dict] = Field(default_factory=dict, description="model -> detector parameters")

    # retrainer
    retrain_margin: float = Field(0.01, description="accuracy the challenger must gain to be promoted")
    retrain_holdout_fraction: float = Field(0.3, gt=0, lt=1)
    retrain_min_rows: int = Field(
        3000, ge=10, description="absolute lower bound on the labelled rows a challenger is trained and judged on "
                                 "(the need is usually the champion's training size: see retrain_floor_share)")
    retrain_max_rows: int = Field(50_000, ge=10, description="most recent labelled rows used at most; caps the need")
    retrain_wait_ms: int = Field(3_600_000, ge=0, description="how long a request waits for enough labels")
    retrain_floor_share: float = Field(
        1.0, ge=0, description="a challenger trains on at least this share of the champion's training rows (its "
                               "lineage train_rows); the labelled rows needed are that over (1 - holdout fraction), "
                               "doubled for each later attempt of an incident, capped at retrain_max_rows; "
                               "0: retrain_min_rows and the request's min_rows alone")

    # retrainer gate per task (classification: accuracy; regression: MAE, lower is better)
    retrain_metric: str | None = Field(
        None, description="holdout metric of the gate: accuracy, log_loss, roc_auc, mae or rmse; "
                          "unset means accuracy for classification and mae for regression. "
                          "retrain_margin is in this metric's units.")

    # retrainer failures: training runs in a worker thread, bounded in time
    retrain_timeout_s: float = Field(
        600.0, gt=0, description="seconds a challenger's training may take; past it the request's outcome is "
                                 "failed (timed out) and the retrainer goes on with the next request")

    # ingest: who may post, and the bounds of what it accepts
    # Every record over a bound is rejected on its own and kept in dead_letters; see SECURITY.md.
    ingest_token: SecretStr | None = Field(
        None, description="When set, POST /v1/events and /v1/labels need Authorization: Bearer <this>; 401 otherwise.")
    ingest_max_body_bytes: int = Field(16 << 20, ge=1024, description="Largest request body; 413 past it (not stored).")
    ingest_max_records: int = Field(10_000, ge=1, description="Most records in one body; 413 past it.")
    ingest_max_depth: int = Field(32, ge=2, le=256, description="Most containers nested in one record (an event is 2).")
    ingest_max_string_chars: int = Field(1024, ge=16, description="Longest string in a record, keys included.")
    ingest_max_features: int = Field(1024, ge=1, description="Most numeric plus categorical features per event.")
    ingest_max_record_bytes: int = Field(1_000_000, ge=1024, description="Largest record once Avro-encoded.")
    ingest_max_future_ms: int = Field(86_400_000, ge=0, description="How far ahead of now an event or label time may be.")
    ingest_max_past_ms: int | None = Field(
        315_619_200_000, ge=0, description="How far behind now an event time may be (default 3653 days); "
                                           "null: back to 1900. Label times are not held to it.")
    ingest_max_abs_number: float | None = Field(None, gt=0, description="Largest |number| in a record; null: any finite.")

    # registry and artifacts: allow-listed types, read token
    trusted_types: list[str] = Field(
        default_factory=list,
        description='Exact type names a model artifact may build beyond driftline\'s allow-list, as JSON, '
                    'e.g. ["mypackage.features.RatioTransformer", "numpy.log1p"]; never builtins, os, operator ... callables.')
    registry_read_token: SecretStr | None = Field(
        None, description="When set, artifact downloads need Authorization: Bearer <this or DRIFTLINE_REGISTRY_TOKEN>.")
    registry_max_body_bytes: int = Field(
        256 << 20, ge=1024, description="Largest registration request the registry accepts (413 beyond).")

    # registry outbox and model loading: model events reach the bus after their change is
    # durable, and a model that fails to load never stops the predictor
    registry_outbox_timeout_s: float = Field(
        10.0, gt=0, description="How long one attempt to publish a model event waits for the broker's acknowledgement.")
    registry_outbox_backoff_max_s: float = Field(
        10.0, gt=0, description="Longest wait between attempts to publish a model event while the broker is away.")
    model_load_retry_s: float = Field(
        30.0, gt=0, description="How long the predictor waits before loading a refused model version again "
                                "(a model event for it retries at once).")

    # driftline send / driftline.client: where ingest is; the token is DRIFTLINE_INGEST_TOKEN above
    url: str = Field("http://127.0.0.1:8000", description="ingest's URL for `driftline send` (`driftline up`'s port).")

    # store endpoint (issue 8: credentials)
    store_credentials_file: Path | None = Field(
        None, description="User and password of `driftline store serve` (0600 JSON); unset means HOME/store-credentials.json.")

    # metrics: Prometheus text format of `driftline serve <service>`; see SECURITY.md
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Port of the service's own /metrics (Prometheus); unset means none.")
    metrics_host: str = Field("127.0.0.1", description="Address the metrics port listens on (0.0.0.0 in a container).")

    # --- calibrated thresholds (issue 11): the PSI alarm set by a false-alarm rate ---------
    # fixed: DRIFTLINE_DRIFT_PSI_THRESHOLD / _RESET_BELOW for every window. calibrated: per feature
    # and window, the PSI a window without drift exceeds with probability rate / features
    # (Monte-Carlo null of the feature's bins for the window's n and the reference's m); see
    # driftline.drift.calibration and the README's "Calibrated thresholds".
    drift_threshold_mode: Literal["fixed", "calibrated"] = Field(
        "fixed", description="fixed (PSI bands 0.25 / 0.10) or calibrated (set by drift_false_alarm_rate)")
    drift_false_alarm_rate: float = Field(
        0.01, gt=0, lt=0.5, description="calibrated mode: probability that a window without drift alarms "
                                        "on any feature (score included)")

    # runner error policy: how long to wait between retries while a dependency is down
    retry_backoff_initial_s: float = Field(
        0.5, gt=0, description="First wait before retrying work that failed because a dependency was unreachable.")
    retry_backoff_max_s: float = Field(
        30.0, gt=0, description="Longest wait between two retries (the wait doubles up to this).")

    # --- exactly-once where users count, and the memory it may use ---------
    label_max_pending: int = Field(
        100_000, ge=1, description="Most labels waiting for their prediction; beyond, a label is dead-lettered "
                                   "as 'pending labels full' (with its bytes) instead of growing memory.")
    label_joined_memory: int = Field(
        200_000, ge=1, description="Recent joins the label-joiner remembers; older ones are looked up in the store.")
    drift_dedupe_predictions: int = Field(
        50_000, ge=1, description="Recent prediction ids the drift-detector remembers, so a republished batch "
                                   "of predictions is not counted twice in its windows.")
    drift_dedupe_labeled: int = Field(
        50_000, ge=1, description="Recent joined labels (model, event_id) the drift-detector remembers, so a "
                                   "replayed `labeled` record is not counted twice.")
    drift_retire_after_ms: int = Field(
        3_600_000, ge=0, description="A version no longer receiving records for this long (wall time), once a "
                                     "newer version of its model is seen, is retired: its last partial window "
                                     "is written and its state freed.")
    ingest_deadline_s: float = Field(
        10.0, gt=0, description="How long ingest waits for the bus to acknowledge a request's records before it "
                                "answers 503 with the records still in flight (they may yet arrive; a retry is "
                                "harmless).")

    # --- drift-detector: a policy that stays awake (issue 11) ---------------
    drift_rearm_after_ms: int = Field(
        300_000, ge=0, description="Event time after a retrain request's challenger is rejected (or the request "
                                   "failed or was skipped) before its model may ask again; doubled with each "
                                   "attempt of an incident, capped at drift_cooldown_ms. drift_cooldown_ms "
                                   "itself applies after a promotion (or to requests no retrainer answers).")

    # --- micro-batches by size or linger (issue 12: latency under load) -----
    # A runner's poll waits up to poll_timeout_s for a first record, then returns once batch_size
    # records are there or this long after the first one arrived: a lightly loaded predictor
    # answers within the linger, a loaded one fills its batches. (Polls of the embedded pump
    # never wait, so never linger.)
    predictor_linger_ms: float = Field(
        5.0, ge=0, description="How long the predictor's poll waits, after its first record, for more before "
                               "scoring the batch (0: score what has arrived at once).")
    # The other services work per batch on no caller's clock: each checkpoint costs them store
    # inserts (a fixed few ms of the store's CPU each, however small) and a commit, so under
    # load they wait for fuller batches and leave the CPU to the predictor.
    batch_linger_ms: float = Field(
        250.0, ge=0, description="How long the label-joiner's, drift-detector's and retrainer's polls wait, after "
                                 "their first record, for more before handling the batch (0: at once).")

    @field_validator("concept_detectors")
    @classmethod
    def _known_detectors(cls, detectors: dict[str, str]) -> dict[str, str]:
        """A misspelt detector is refused when the settings load, not at the first joined label."""
        if not detectors:
            return detectors
        from driftline.drift.detectors import METHODS, canonical_method

        for model, method in detectors.items():
            try:
                canonical_method(method)
            except ValueError:
                raise ValueError(f"unknown concept drift detector {method!r} for model {model!r} "
                                 f"(DRIFTLINE_CONCEPT_DETECTORS); choose one of {', '.join(sorted(METHODS))}") from None
        return detectors

    @model_validator(mode="after")
    def _detector_params_fit(self) -> Settings:
        """Each model's detector parameters are ones its detector takes, with values it accepts."""
        if not self.concept_params:
            return self
        import inspect

        from driftline.drift.detectors import METHODS, canonical_method

        for model, params in self.concept_params.items():
            method = canonical_method(self.concept_detectors.get(model, "ADWIN"))
            accepted = [name for name in inspect.signature(METHODS[method]).parameters if name != "self"]
            unknown = sorted(set(params) - set(accepted))
            if unknown:
                raise ValueError(f"concept_params for model {model!r}: {method} has no parameter "
                                 f"{', '.join(map(repr, unknown))}; it takes {', '.join(accepted)}")
            try:
                METHODS[method](**params)
            except Exception as exc:  # river checks its own values; say which model and detector
                raise ValueError(f"concept_params for model {model!r}: {method}({params}) is refused: {exc}") from None
        return self

    @property
    def resolved_store_dsn(self) -> str:
        if self.store_dsn:
            return self.store_dsn
        up = running_up(self.home)  # a running `driftline up` owns the chDB store: go through its endpoint
        return up["store_url"] if up else f"chdb://{(self.home / 'store').resolve()}"

    @property
    def registry_home(self) -> Path:
        return self.home / "registry"


# --- driftline up: where a running `up` says it serves ---------------------------------------
UP_FILE = "up.json"  # written by `driftline up` under HOME while it runs: {"pid", "url", "store_url"}


def running_up(home: Path) -> dict | None:
    """What ``HOME/up.json`` says, if the ``driftline up`` that wrote it is still alive; otherwise None.

    chDB admits one process per store, so while ``up`` runs other commands reach the store
    through the endpoint it serves. A file left by a killed ``up`` (its pid gone) is ignored.
    """
    import json
    import os

    try:
        up = json.loads((Path(home) / UP_FILE).read_text())
        os.kill(int(up["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, TypeError, ProcessLookupError):
        return None
    except PermissionError:  # alive, owned by someone else
        pass
    return up
