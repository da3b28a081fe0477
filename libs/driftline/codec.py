"""Avro in the Confluent wire format (magic byte 0, 4-byte schema id, body).

Encoding registers each topic's schema once (as confluent-kafka's ``AvroSerializer``
does: topic name strategy, auto-register) and then writes every record with a
prebuilt 5-byte header and fastavro's ``schemaless_writer`` on the parsed schema,
which is what ``AvroSerializer`` writes too, minus its per-record subject,
data-contract and context bookkeeping; so any Confluent-compatible consumer reads
what we write, byte for byte. Decoding resolves the writer schema by the id in the
bytes through the same registry client (once per schema id, then a dict lookup on the id's
four bytes) and reads the body with cavro, a Cython Avro reader, or fastavro where cavro
is not installed: both return the same dicts for our schemas (``tests/unit/test_codec_wire.py``).

Times stay epoch-millisecond ints inside driftline: both directions use the
schemas with their ``logicalType`` annotations stripped. A ``timestamp-millis``
is a ``long`` on the wire either way, so the bytes are the same, and no record
pays for a datetime it would convert back to milliseconds. Encoding still
accepts datetimes: a record the stripped writer refuses is written again with
the annotated schema (fastavro converts datetimes there), and only if that fails
too is it a :class:`SchemaViolation`.

The schema registry is a real one in distributed mode, and confluent-kafka's
in-process ``mock://`` registry in embedded mode.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from functools import cache
from importlib import resources
from collections.abc import Callable
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from fastavro import parse_schema, schemaless_reader, schemaless_writer

try:  # a Cython Avro reader: about twice as fast as fastavro's on our records (``python -m bench codec``)
    import cavro
except ImportError:  # an environment installed before it became a dependency: fastavro reads alone
    cavro = None

from driftline.failure import DependencyUnavailable, is_transient
from driftline.topics import RECORD_OF_TOPIC

EMBEDDED_REGISTRY_URL = "mock://driftline"
#: Which library reads record bodies by default.
DECODE_BACKEND = "fastavro" if cavro is None else "cavro"


class SchemaViolation(ValueError):
    """A record does not match its Avro schema; the message names the field."""


class UndecodableRecord(ValueError):
    """Bytes on a topic that are not a valid record of that topic's schema."""


def subject_of(topic: str) -> str:
    """The schema registry subject of a topic's values (the topic name strategy)."""
    return f"{topic}-value"


@cache
def schema_text(record_name: str) -> str:
    """The ``.avsc`` contract for ``record_name``, as shipped in ``driftline.schemas``."""
    return resources.files("driftline.schemas").joinpath(f"{record_name}.avsc").read_text()


def schema_fields(record_name: str) -> list[str]:
    return [field["name"] for field in json.loads(schema_text(record_name))["fields"]]


def without_logical_types(schema: Any) -> Any:
    """``schema`` (parsed JSON) with every ``logicalType`` annotation removed: each such
    field reads and writes as its underlying Avro type (a timestamp-millis as a long)."""
    if isinstance(schema, dict):
        return {k: without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [without_logical_types(v) for v in schema]
    return schema


@cache
def registered_schema(record_name: str) -> Schema:
    """The ``Schema`` registered for ``record_name``: the text as shipped, stripped, as
    ``AvroSerializer`` registers a schema string (same text, so the registry finds the same id)."""
    return Schema(schema_text(record_name).strip(), schema_type="AVRO")


@dataclass(frozen=True)
class _TopicWriter:
    """Everything needed to write one topic's records, resolved once per topic."""

    header: bytes  # magic byte 0 + the schema id, big-endian
    fast: Any  # the parsed schema without logical types: ints for times
    annotated: Any  # the parsed schema as written: also takes datetimes (the slow path)


def _parse_writer(backend: str, schema: dict[str, Any]) -> Any:
    """A reader's parsed form of a writer schema (logical types already stripped).

    cavro decodes records to plain dicts (not its generated record classes) and applies no
    logical types, so it returns exactly what fastavro returns for the stripped schema."""
    if backend == "cavro":
        return cavro.Schema(json.dumps(schema), options=cavro.Options(record_decodes_to_dict=True, logical_types=()))
    return parse_schema(schema)


def registry_client(url: str | None) -> SchemaRegistryClient:
    """A client for ``url``, or the in-process registry when ``url`` is None."""
    return SchemaRegistryClient.new_client({"url": url or EMBEDDED_REGISTRY_URL})


class _RecentDecodes:
    """The latest decoded records of some topics, by their bytes: two generations of ``size``
    each per topic, the older dropped whole when the newer fills (bounded, O(1) per record). In
    one process a record's bytes are one object handed to every consumer, so a lookup hashes
    them once and compares by identity."""

    def __init__(self, size: int, topics: list[str]):
        self.size = size
        self.topics = frozenset(topics)
        self._newer: dict[str, dict[bytes, dict]] = {topic: {} for topic in self.topics}
        self._older: dict[str, dict[bytes, dict]] = {topic: {} for topic in self.topics}

    def get(self, topic: str, data: bytes) -> dict | None:
        record = self._newer[topic].get(data)
        return self._older[topic].get(data) if record is None else record

    def put(self, topic: str, data: bytes, record: dict) -> None:
        newer = self._newer[topic]
        if len(newer) >= self.size:
            self._older[topic] = newer
            newer = self._newer[topic] = {}
        newer[data] = record


class Codec:
    """Turns records (dicts) into wire-format bytes for a topic, and back.

    Parameters
    ----------
    registry
        A confluent-kafka ``SchemaRegistryClient`` (real or ``mock://``).
    backend
        What reads record bodies: ``"cavro"`` (the default when it is installed) or
        ``"fastavro"``. Writing is always fastavro's.

    Examples
    --------
    >>> codec = Codec(registry_client(None))
    >>> data = codec.encode("labels", {"model": "m", "event_id": "e1", "label": "1",
    ...                                "value": None, "label_time": 0})
    >>> data[0], len(data) > 5
    (0, True)
    >>> codec.decode("labels", data)["event_id"]
    'e1'
    """

    def __init__(self, registry: SchemaRegistryClient, backend: str | None = None):
        self.registry = registry
        self._shared: _RecentDecodes | None = None
        self.backend = backend or DECODE_BACKEND
        if self.backend not in ("cavro", "fastavro") or (self.backend == "cavro" and cavro is None):
            raise ValueError(f"no Avro decoding backend {self.backend!r} here (cavro installed: {cavro is not None})")
        self._readers: dict[tuple[str, bytes], Callable[[bytes], dict[str, Any]]] = {}  # (topic, id bytes) -> reader
        self._topic_writers: dict[str, _TopicWriter] = {}
        self._writer_schemas: dict[int, Any] = {}
        self._subject_ids: dict[str, set[int]] = {}  # subject -> schema ids of its versions (as last read)
        self._belongs: dict[tuple[str, int], bool] = {}  # (topic, schema id) -> a version of the topic's subject?
        if registry.__class__.__name__ == "MockSchemaRegistryClient":
            self._register_in_fixed_order()

    def share_decodes(self, topics: list[str], size: int) -> None:
        """Keep the latest ``size`` to ``2 * size`` decoded records of each of ``topics``, for a
        codec that several consumers of those topics share in one process (the embedded mode):
        the label-joiner and the drift-detector both read every prediction, and the second gets
        the first's decode of the very same bytes. Each caller gets its own copy of a record's
        top level; nested maps are shared, and nothing may change them."""
        self._shared = _RecentDecodes(size, topics) if topics and size > 0 else None

    def _register_in_fixed_order(self) -> None:
        """The in-process registry numbers schemas in the order they are registered, and starts
        empty in every process; records on a persistent embedded bus outlive it. Registering every
        topic's schema up front, in the order of ``RECORD_OF_TOPIC``, gives each the same id in
        every process, so a restarted ``driftline up`` reads the ids its previous run wrote."""
        for topic in RECORD_OF_TOPIC:
            self._topic_writer(topic)

    def _topic_writer(self, topic: str) -> _TopicWriter:
        """The topic's schema id (registered on first use, as ``AvroSerializer`` with
        ``auto.register.schemas`` and the topic name strategy) and parsed schemas."""
        writer = self._topic_writers.get(topic)
        if writer is None:
            record_name = RECORD_OF_TOPIC[topic]
            schema = registered_schema(record_name)
            try:
                schema_id = self.registry.register_schema(subject_of(topic), schema)
            except Exception as exc:
                if is_transient(exc):  # the registry could not be asked: the record is not at fault
                    raise DependencyUnavailable(f"schema registry, encoding for {topic!r}: {exc}") from exc
                raise
            parsed = json.loads(schema.schema_str)
            writer = _TopicWriter(header=struct.pack(">bI", 0, schema_id),
                                  fast=parse_schema(without_logical_types(parsed)), annotated=parse_schema(parsed))
            self._topic_writers[topic] = writer
        return writer

    def encode(self, topic: str, record: dict[str, Any]) -> bytes:
        """``record`` in the Confluent wire format of ``topic``'s schema.

        Raises
        ------
        SchemaViolation
            The record does not fit the schema; the message names the field.
        DependencyUnavailable
            The schema registry could not be reached to register the topic's schema.
        """
        writer = self._topic_writers.get(topic) or self._topic_writer(topic)
        out = io.BytesIO()
        out.write(writer.header)
        try:
            schemaless_writer(out, writer.fast, record)
        except Exception:
            # Datetimes for times (or a bad record): the annotated schema converts the former.
            out = io.BytesIO()
            out.write(writer.header)
            try:
                schemaless_writer(out, writer.annotated, record)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                raise SchemaViolation(f"{RECORD_OF_TOPIC[topic]} on topic {topic!r}: {exc}") from exc
        return out.getvalue()

    def decode(self, topic: str, data: bytes | None) -> dict[str, Any]:
        """The record in ``data``, written with a version of ``topic``'s subject.

        Raises
        ------
        UndecodableRecord
            The bytes are not a record of this topic: no wire-format header, an unknown
            schema id, a schema id of another subject (valid Avro of another topic), a bad body.
        DependencyUnavailable
            The schema registry could not be reached to resolve the schema id: the record may
            well be good, so it must be retried later, never dead-lettered.
        """
        if not data or data[0] != 0:
            raise UndecodableRecord(f"not Confluent wire format on topic {topic!r} (no magic byte 0)")
        if len(data) < 5:
            raise UndecodableRecord(f"cannot decode a {RECORD_OF_TOPIC[topic]} on topic {topic!r}: "
                                    f"{len(data)} bytes, no room for a schema id")
        shared = self._shared if self._shared is not None and topic in self._shared.topics else None
        if shared is not None and (record := shared.get(topic, data)) is not None:
            return dict(record)
        read = self._readers.get((topic, data[1:5]))  # keyed by the id's 4 bytes: no unpacking per record
        if read is None:
            read = self._reader(topic, data[1:5])
        try:
            record = read(data)
        except Exception as exc:  # truncated bytes, bad body: "bad bytes"
            raise UndecodableRecord(f"cannot decode a {RECORD_OF_TOPIC[topic]} on topic {topic!r}: {exc}") from exc
        if shared is None:
            return record
        shared.put(topic, data, record)
        return dict(record)

    def _reader(self, topic: str, id_bytes: bytes) -> Callable[[bytes], dict[str, Any]]:
        """The body reader for records of ``topic`` written with the schema id in ``id_bytes``,
        once that id is known to be a version of the topic's subject (else UndecodableRecord)."""
        (schema_id,) = struct.unpack(">I", id_bytes)
        if not self._schema_of_topic(topic, schema_id):
            raise UndecodableRecord(f"schema id {schema_id} is not a version of subject {subject_of(topic)!r}: "
                                    f"not a {RECORD_OF_TOPIC[topic]} (a record of another topic?)")
        writer = self._writer(topic, schema_id)
        if self.backend == "cavro":
            decode_body = writer.binary_decode
            read = lambda data: decode_body(data[5:])  # noqa: E731 - the hot path, one call deep
        else:
            read = lambda data: schemaless_reader(io.BytesIO(data[5:]), writer, None)  # noqa: E731
        self._readers[(topic, id_bytes)] = read
        return read

    def _ask_registry(self, what: str, call):
        """``call()`` against the registry. Only a 404 (an unknown id or subject) says something
        about the record; any other failure (unreachable, 5xx, refused credentials) means the
        registry cannot answer now: DependencyUnavailable, retried, never dead-lettered."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return call()
        except SchemaRegistryError as exc:
            if getattr(exc, "http_status_code", None) == 404:
                raise
            raise DependencyUnavailable(f"schema registry, {what}: {exc}") from exc
        except Exception as exc:
            if is_transient(exc):
                raise DependencyUnavailable(f"schema registry, {what}: {exc}") from exc
            raise

    def _writer(self, topic: str, schema_id: int) -> Any:
        writer = self._writer_schemas.get(schema_id)
        if writer is None:
            try:
                schema = self._ask_registry(f"schema id {schema_id}", lambda: self.registry.get_schema(schema_id))
                writer = _parse_writer(self.backend, without_logical_types(json.loads(schema.schema_str)))
            except DependencyUnavailable:
                raise
            except Exception as exc:  # an id the registry does not know, a schema we cannot parse
                raise UndecodableRecord(f"cannot decode a {RECORD_OF_TOPIC[topic]} on topic {topic!r}: "
                                        f"schema id {schema_id}: {exc}") from exc
            self._writer_schemas[schema_id] = writer
        return writer

    def _schema_of_topic(self, topic: str, schema_id: int) -> bool:
        """Whether ``schema_id`` is a version of the topic's subject; cached per (topic, id).

        The subject's ids are read again when an id is not among them (a version registered
        since), so a miss costs a registry round trip once per (topic, id), never per record.
        """
        known = self._belongs.get((topic, schema_id))
        if known is not None:
            return known
        subject = subject_of(topic)
        ids = self._subject_ids.get(subject)
        if ids is None or schema_id not in ids:
            ids = self._subject_ids[subject] = self._ask_registry(f"versions of {subject!r}",
                                                                 lambda: self._versions_of(subject))
        self._belongs[(topic, schema_id)] = schema_id in ids
        return schema_id in ids

    def _versions_of(self, subject: str) -> set[int]:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            versions = self.registry.get_versions(subject)
        except SchemaRegistryError as exc:
            if getattr(exc, "http_status_code", None) == 404:  # no such subject: nothing written to the topic yet
                return set()
            raise
        ids = set()
        for version in versions:
            registered = self.registry.get_version(subject, version)
            if registered is not None:
                ids.add(registered.schema_id)
        return ids


def encode_key(key: str | None) -> bytes | None:
    return None if key is None else key.encode()
