"""Avro encode/decode cost per record, per topic: the codec before issue 12, the codec now,
raw fastavro, and cavro (when installed).

``python -m bench codec``. Each line is one record type: microseconds per encode and per
decode of

* ``before``: the codec as it was up to issue 12 (58e215e-style): confluent-kafka's
  ``AvroSerializer`` for every record, and fastavro reading with the schema's logical types
  (timestamp-millis fields come back as datetimes, which driftline converted back to ms);
* ``now``: :class:`driftline.codec.Codec` (cached per-topic writer with a prebuilt header,
  logical types stripped both ways: times stay int ms), reading bodies with its default
  backend (cavro when installed); ``now_fastavro``: the same codec reading with fastavro;
* ``fastavro``: bare ``schemaless_writer`` / ``schemaless_reader`` on the stripped schema,
  no header and no checks: the floor for a fastavro-based codec;
* ``cavro``: cavro 1.0's ``binary_encode`` / ``binary_decode`` on the stripped schema, with
  ``record_decodes_to_dict`` (by default cavro decodes a record to a generated ``Record``
  class, which never compares equal to a dict, and timestamp-millis to a datetime: that is
  why a first try's decoded record was not equal to the input). cavro is a driftline
  dependency (the codec decodes with it); skipped only in an environment installed before
  it was added, where the codec falls back to fastavro.

Timings alternate the implementations round by round and keep each one's best round, so a
ratio compares runs under the same load. Every implementation's bytes are checked equal to
the ``before`` codec's, and every decoded record equal to the input (after ms conversion for
``before``), before anything is timed.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
from datetime import datetime
from typing import Any

from confluent_kafka.schema_registry import topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from bench.common import report
from driftline.codec import DECODE_BACKEND, Codec, registry_client, schema_text, without_logical_types
from driftline.timeutil import to_ms
from driftline.topics import RECORD_OF_TOPIC

ROUNDS = int(os.environ.get("BENCH_CODEC_ROUNDS", "21"))  # many short rounds: a shared machine's best
PER_ROUND = int(os.environ.get("BENCH_CODEC_RECORDS", "300"))
T = 1_767_225_600_123

NUMERIC = {f"sensor_{i}": 1000.0 / (i + 3) for i in range(10)}  # not the demo's credit features
CATEGORICAL = {"site": "north-ridge", "line": "b7", "shift": "night"}

#: One record per topic, shaped as the pipeline's (a prediction carries its feature maps).
SAMPLES: dict[str, dict[str, Any]] = {
    "features": {"model": "turbines", "event_id": "ev-000123", "entity_id": "unit-42", "event_time": T,
                 "numeric_features": NUMERIC, "categorical_features": CATEGORICAL},
    "predictions": {"prediction_id": "ev-000123:3:champion", "event_id": "ev-000123", "entity_id": "unit-42",
                    "model": "turbines", "model_version": 3, "role": "champion", "score": 0.25,
                    "scores": {"0": 0.75, "1": 0.25}, "predicted_label": "0", "numeric_features": NUMERIC,
                    "categorical_features": CATEGORICAL, "event_time": T, "prediction_time": T + 5},
    "labels": {"model": "turbines", "event_id": "ev-000123", "label": "1", "value": None, "label_time": T + 9},
    "labeled": {"prediction_id": "ev-000123:3:champion", "event_id": "ev-000123", "model": "turbines",
                "model_version": 3, "role": "champion", "score": 0.25, "predicted_label": "0", "label": "1",
                "value": None, "error": 1.0, "event_time": T, "prediction_time": T + 5, "label_time": T + 9},
    "drift": {"model": "turbines", "model_version": 3, "kind": "data", "feature": "sensor_1", "statistic": "psi",
              "value": 0.31, "band": "act", "window_start": 0, "window_end": 10, "n": 10, "detected_at": T,
              "threshold": 0.25, "threshold_mode": "fixed", "event_time": T, "partition": 0, "offset": 17,
              "stream_index": 17},
}


class BeforeCodec:
    """The codec up to issue 12, kept here as the baseline: ``AvroSerializer`` per record;
    decode checks the header and the (cached) subject membership, then reads with logical types."""

    def __init__(self, registry):
        self.registry = registry
        self._serializers: dict[str, AvroSerializer] = {}
        self._writers: dict[int, Any] = {}
        self._belongs: dict[tuple[str, int], bool] = {}

    def encode(self, topic: str, record: dict[str, Any]) -> bytes:
        serializer = self._serializers.get(topic)
        if serializer is None:
            serializer = self._serializers[topic] = AvroSerializer(
                self.registry, schema_text(RECORD_OF_TOPIC[topic]),
                conf={"auto.register.schemas": True, "subject.name.strategy": topic_subject_name_strategy})
        return serializer(record, SerializationContext(topic, MessageField.VALUE))

    def decode(self, topic: str, data: bytes) -> dict[str, Any]:
        if not data or data[0] != 0 or len(data) < 5:
            raise ValueError("not Confluent wire format")
        (schema_id,) = struct.unpack(">I", data[1:5])
        if not self._belongs.setdefault((topic, schema_id), True):
            raise ValueError("another subject")
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._writers[schema_id] = parse_schema(json.loads(self.registry.get_schema(schema_id).schema_str))
        return schemaless_reader(io.BytesIO(data[5:]), writer, None)


def _stripped(topic: str) -> dict:
    return without_logical_types(json.loads(schema_text(RECORD_OF_TOPIC[topic])))


def _as_ms(record: dict[str, Any]) -> dict[str, Any]:
    return {k: to_ms(v) if isinstance(v, datetime) else v for k, v in record.items()}


def _cavro_schema(topic: str):
    try:
        import cavro
    except ImportError:
        return None
    options = cavro.Options(record_decodes_to_dict=True, logical_types=())
    return cavro.Schema(json.dumps(_stripped(topic)), options=options)


def _implementations(topic: str, registry) -> dict[str, tuple]:
    """name -> (encode(record) -> bytes, decode(bytes) -> record, bytes it decodes)."""
    before, now, now_fastavro = BeforeCodec(registry), Codec(registry), Codec(registry, backend="fastavro")
    fast = parse_schema(_stripped(topic))

    def fastavro_encode(record):
        out = io.BytesIO()
        schemaless_writer(out, fast, record)
        return out.getvalue()

    impls = {
        "before": (lambda r: before.encode(topic, r), lambda b: before.decode(topic, b)),
        "now": (lambda r: now.encode(topic, r), lambda b: now.decode(topic, b)),
        "now_fastavro": (lambda r: now_fastavro.encode(topic, r), lambda b: now_fastavro.decode(topic, b)),
        "fastavro": (fastavro_encode, lambda b: schemaless_reader(io.BytesIO(b), fast, None)),
    }
    cavro_schema = _cavro_schema(topic)
    if cavro_schema is not None:
        impls["cavro"] = (cavro_schema.binary_encode, cavro_schema.binary_decode)
    record = SAMPLES[topic]
    wire = before.encode(topic, record)
    checked = {}
    for name, (encode, decode) in impls.items():
        data = encode(record)
        framed = name in ("before", "now", "now_fastavro")
        assert data == (wire if framed else wire[5:]), f"{name} writes other bytes for {topic}"
        assert _as_ms(decode(data)) == record, f"{name} reads another record for {topic}"
        checked[name] = (encode, decode, data)
    return checked


def _time_us(fn, arg, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn(arg)
    return (time.perf_counter() - started) / n * 1e6


def measure(topic: str, registry) -> dict[str, dict[str, float]]:
    impls = _implementations(topic, registry)
    best = {name: {"encode_us": float("inf"), "decode_us": float("inf")} for name in impls}
    record = SAMPLES[topic]
    for _ in range(ROUNDS):  # alternate: every implementation sees the same load
        for name, (encode, decode, data) in impls.items():
            best[name]["encode_us"] = min(best[name]["encode_us"], _time_us(encode, record, PER_ROUND))
            best[name]["decode_us"] = min(best[name]["decode_us"], _time_us(decode, data, PER_ROUND))
    return {name: {k: round(v, 2) for k, v in times.items()} | {"bytes": len(impls[name][2])}
            for name, times in best.items()}


def run() -> dict[str, object]:
    registry = registry_client(None)
    results = {}
    for topic in SAMPLES:
        results[topic] = times = measure(topic, registry)
        line = "  ".join(f"{name} {t['encode_us']:.1f}/{t['decode_us']:.1f}" for name, t in times.items())
        print(f"  {RECORD_OF_TOPIC[topic]:<18} {times['now']['bytes']:>4} B  enc/dec us: {line}", flush=True)
    before = sum(t["before"]["encode_us"] + t["before"]["decode_us"] for t in results.values())
    now = sum(t["now"]["encode_us"] + t["now"]["decode_us"] for t in results.values())
    return report("codec", backend=DECODE_BACKEND, before_over_now=round(before / now, 2), records=results)
