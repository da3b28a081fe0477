"""Versioned DDL. Each migration runs once, in order, and is recorded in ``schema_migrations``.

Idempotency on replay: every table is a ReplacingMergeTree keyed on the
record's id, so a replayed batch writes the same keys again and ``FINAL``
(or ``count(DISTINCT …)``) counts each record once. See README, "Querying".
"""

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "predictions, labels, dead_letters",
        [
            """
            CREATE TABLE IF NOT EXISTS predictions (
                prediction_id String,
                event_id String,
                entity_id String,
                model LowCardinality(String),
                model_version UInt32,
                role LowCardinality(String),
                score Float64,
                scores Map(String, Float64),
                predicted_label String,
                numeric_features Map(String, Float64),
                categorical_features Map(String, String),
                event_time DateTime64(3, 'UTC'),
                prediction_time DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree
            ORDER BY (model, role, event_id)
            """,
            # status: pending (waiting for its prediction), joined, or unmatched (TTL passed).
            # The version column makes the most advanced status win when rows are merged.
            """
            CREATE TABLE IF NOT EXISTS labels (
                event_id String,
                model LowCardinality(String),
                label String,
                value Nullable(Float64),
                label_time DateTime64(3, 'UTC'),
                status LowCardinality(String),
                status_rank UInt8,
                reason String,
                model_version UInt32,
                predicted_label String,
                error Nullable(Float64),
                event_time Nullable(DateTime64(3, 'UTC')),
                updated_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(status_rank)
            ORDER BY (model, event_id)
            """,
            """
            CREATE TABLE IF NOT EXISTS dead_letters (
                dead_letter_id String,
                service LowCardinality(String),
                topic String,
                partition Nullable(Int32),
                offset Nullable(Int64),
                key Nullable(String),
                payload String,
                error String,
                received_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree
            ORDER BY dead_letter_id
            """,
        ],
    ),
    (
        2,
        "service_state",
        [
            # Step 4 of the checkpoint: a stateful service's snapshot with the offsets it covers.
            """
            CREATE TABLE IF NOT EXISTS service_state (
                service LowCardinality(String),
                snapshot String,
                offsets String,
                saved_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(saved_at)
            ORDER BY service
            """,
        ],
    ),
    (
        3,
        "drift_metrics",
        [
            # One row per (window, feature, statistic); coverage rows are rewritten as late
            # labels arrive, and the newest computed_at wins.
            """
            CREATE TABLE IF NOT EXISTS drift_metrics (
                model LowCardinality(String),
                model_version UInt32,
                kind LowCardinality(String),
                feature LowCardinality(String),
                statistic LowCardinality(String),
                value Float64,
                band LowCardinality(String),
                window_start Int64,
                window_end Int64,
                n UInt64,
                computed_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(computed_at)
            ORDER BY (model, model_version, kind, feature, statistic, window_start, window_end)
            """,
        ],
    ),
    (
        4,
        "ingest_accepted",
        [
            # Ingest's duplicate policy: the (model, event_id) of every feature event it published,
            # with the sha256 of its canonical content, so a later event with the same id is told
            # apart from a byte-identical client retry. Read once per batch by key.
            """
            CREATE TABLE IF NOT EXISTS ingest_accepted (
                model LowCardinality(String),
                event_id String,
                digest String,
                accepted_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree
            ORDER BY (model, event_id)
            """,
        ],
    ),
    (
        5,
        "labels.source",
        [
            # Where the record that set a label row's status sits on the bus (topic/partition/offset):
            # the label-joiner tells a replay of the record that joined an event (joined again,
            # identically) from a second label for it (absorbed or refused: the first wins).
            "ALTER TABLE labels ADD COLUMN IF NOT EXISTS source String DEFAULT ''",
        ],
    ),
    (
        6,
        "event time, thresholds, retrain_requests, audit",
        [
            # Issue 11. Data rows: the alarm threshold in force for the window and how it was set
            # ('fixed' band or 'calibrated' false-alarm rate). Concept rows: the record that fired
            # (event time, bus position) and the detection's index in the error stream; their
            # window_start / window_end are that event time in ms. Rows without them hold NULL.
            "ALTER TABLE drift_metrics ADD COLUMN IF NOT EXISTS threshold Nullable(Float64)",
            "ALTER TABLE drift_metrics ADD COLUMN IF NOT EXISTS threshold_mode LowCardinality(String) DEFAULT ''",
            "ALTER TABLE drift_metrics ADD COLUMN IF NOT EXISTS event_time Nullable(DateTime64(3, 'UTC'))",
            "ALTER TABLE drift_metrics ADD COLUMN IF NOT EXISTS partition Nullable(Int32)",
            "ALTER TABLE drift_metrics ADD COLUMN IF NOT EXISTS offset Nullable(Int64)",
            "ALTER TABLE drift_metrics ADD COLUMN IF NOT EXISTS stream_index Nullable(Int64)",
            # One row per retrain request, rewritten as it moves: 'requested' (drift-detector, rank 0),
            # 'training' (retrainer, rank 1), then 'promoted', 'rejected', 'failed' or 'skipped'
            # (retrainer, rank 2). The highest status_rank wins, so a replayed 'requested' row never
            # hides an outcome; within a rank the last row written wins.
            """
            CREATE TABLE IF NOT EXISTS retrain_requests (
                request_id String,
                incident_id String,
                attempt UInt32,
                model LowCardinality(String),
                model_version UInt32,
                reason String,
                signals String,
                window_start DateTime64(3, 'UTC'),
                window_end DateTime64(3, 'UTC'),
                requested_at DateTime64(3, 'UTC'),
                min_rows UInt64,
                status LowCardinality(String),
                status_rank UInt8,
                decision String,
                challenger_version Nullable(UInt32),
                rows_used Nullable(UInt64),
                updated_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(status_rank)
            ORDER BY (model, request_id)
            """,
            # The registry's audit log, mirrored from the ModelEvents on the models topic: who moved
            # which alias, rejected or refused which version, and why. Keyed so a re-read topic
            # writes the same rows again.
            """
            CREATE TABLE IF NOT EXISTS audit (
                model LowCardinality(String),
                version UInt32,
                action LowCardinality(String),
                alias String,
                previous_version Nullable(UInt32),
                actor String,
                reason String,
                request_id String,
                sha256 String,
                occurred_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree
            ORDER BY (model, occurred_at, version, action, alias)
            """,
        ],
    ),
]
