"""The topics, and which Avro record each one carries. One place for both."""

FEATURES = "features"
PREDICTIONS = "predictions"
LABELS = "labels"
LABELED = "labeled"
DRIFT = "drift"
RETRAIN = "retrain"
MODELS = "models"
DLQ = "dlq"

#: topic -> Avro record name in ``schemas/``.
RECORD_OF_TOPIC: dict[str, str] = {
    FEATURES: "FeatureEvent",
    PREDICTIONS: "Prediction",
    LABELS: "Label",
    LABELED: "LabeledPrediction",
    DRIFT: "DriftSignal",
    RETRAIN: "RetrainRequest",
    MODELS: "ModelEvent",
    DLQ: "DeadLetter",
}

ALL_TOPICS = tuple(RECORD_OF_TOPIC)
