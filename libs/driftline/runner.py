"""The runner: poll a batch, let the service's logic turn it into outputs, checkpoint.

A service's logic never touches the bus or the store. It gets decoded records
and returns an :class:`Output`; the runner does all I/O, in the one order that
makes at-least-once delivery effectively-once where it matters.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from driftline.bus import Bus, Consumer, Message, Offsets, Producer, next_offsets
from driftline.bus.single_owner import SingleOwnerConsumer
from driftline.codec import Codec, UndecodableRecord
from driftline.deadletter import dead_letter, dead_letter_row
from driftline.store import Store
from driftline.telemetry import OTHER, UNDECODABLE, RunnerMetrics
from driftline.timeutil import now_ms
from driftline.topics import DLQ

log = logging.getLogger(__name__)


@dataclass
class Output:
    """What a batch produced: records to publish, rows to store, and state to persist."""

    records: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)  # (topic, key, record)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # table -> rows
    dead_reasons: dict[str, int] = field(default_factory=dict)  # reason category -> dead letters (metrics)

    def add_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.rows.setdefault(table, []).extend(rows)

    def publish(self, topic: str, key: str | None, record: dict[str, Any]) -> None:
        self.records.append((topic, key, record))

    def dead(self, record: dict[str, Any], reason: str = OTHER) -> None:
        """A dead letter goes to both the ``dlq`` topic and the ``dead_letters`` table.

        ``reason`` is a bounded category (:mod:`driftline.telemetry`) for the metrics.
        """
        self.publish(DLQ, record["dead_letter_id"], record)
        self.add_rows("dead_letters", [dead_letter_row(record)])
        self.dead_reasons[reason] = self.dead_reasons.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    record: dict[str, Any]
    message: Message


def deliver(output: Output, store: Store, producer: Producer, codec: Codec) -> None:
    """Steps 1 and 2 of a checkpoint: write the store rows, then publish and flush the records."""
    for table, rows in output.rows.items():
        store.insert(table, rows)
    for topic, key, record in output.records:
        producer.produce(topic, codec.encode(topic, record), key=None if key is None else key.encode())
    producer.flush()


class Service(Protocol):
    """What a runner needs from a service's logic wrapper."""

    name: str
    topics: list[str]

    def handle(self, batch: list[Incoming], now_ms: int) -> Output: ...


class StatefulService(Service, Protocol):
    """A service with state to checkpoint (step 4); the runner persists it when it has these."""

    def snapshot(self) -> bytes: ...
    def restore(self, snapshot: bytes) -> None: ...


class Runner:
    """Runs one service over a bus and a store: poll a batch, handle it, :meth:`checkpoint`."""

    def __init__(self, service: Service, bus: Bus, codec: Codec, store: Store, *, batch_size: int = 1000,
                 poll_timeout_s: float = 0.2, clock: Callable[[], int] | None = None,
                 state: Any | None = None, state_every_s: float = 5.0):
        self.service = service
        self.bus = bus
        self.codec = codec
        self.store = store
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.clock = clock or now_ms
        self.state = state  # a StateStore, for stateful services
        self.state_every_s = state_every_s
        self._state_saved_at = time.monotonic()
        self.producer = bus.producer()
        self.consumer = self._data_consumer()
        # Control topics (model events) are read by a consumer of their own, before every batch,
        # so a model swap applies from the next batch however busy the data topics are. Its group
        # is per instance: every replica must see every control record.
        control_topics = getattr(service, "control_topics", [])
        self.control = bus.consumer(f"driftline-{service.name}-control-{uuid.uuid4().hex[:8]}",
                                    control_topics) if control_topics else None
        self.processed = 0
        self.metrics = RunnerMetrics(service.name)
        if state is not None and not isinstance(self.consumer, SingleOwnerConsumer):
            self._resume()

    def _data_consumer(self) -> Consumer:
        """The consumer of the data topics. A service whose state is one snapshot for all its
        partitions (the drift-detector, the retrainer) runs as the single owner of its group: a
        second instance stands by, and restores the state when it takes over (README, 'Scaling out')."""
        group = f"driftline-{self.service.name}"
        if self.state is not None and hasattr(self.bus, "group_members"):
            return SingleOwnerConsumer(self.bus, group, self.service.topics, on_acquire=self._resume,
                                       service=self.service.name)
        return self.bus.consumer(group, self.service.topics)

    def _resume(self) -> None:
        saved = self.state.load(self.service.name)
        if saved is not None:
            snapshot, offsets = saved
            self.service.restore(snapshot)
            self.consumer.seek(offsets)

    def step(self, timeout_s: float | None = None) -> int:
        """Process one batch; return how many messages it held."""
        control = self.control.poll_batch(self.batch_size, 0.0) if self.control else []
        messages = self.consumer.poll_batch(self.batch_size, self.poll_timeout_s if timeout_s is None else timeout_s)
        started = time.perf_counter()
        incoming, dead = self._decode(control + messages)
        output = self.service.handle(incoming, self.clock())
        for record in dead:
            output.dead(record, reason=UNDECODABLE)
        if messages or control or output.records or output.rows:
            with self.metrics.checkpoint_seconds.time():
                self.checkpoint(messages, output, control)
            self.metrics.received(control + messages)  # counted once checkpointed, as the records out
            self.metrics.delivered(output.records, output.dead_reasons)
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.lag(self.consumer)
        self.processed += len(messages)
        return len(messages)

    def checkpoint(self, messages: list[Message], output: Output, control: list[Message] = ()) -> Offsets:
        """Make a handled batch durable, in this order:

        1. write store rows (idempotent: ReplacingMergeTree keyed on the record id);
        2. produce the output records and flush the producer (acks=all, idempotent);
        3. commit the consumer offsets of the batch;
        4. persist the service's state together with the offsets it covers.

        A crash anywhere replays from the last commit. Steps 1 and 2 are safe to
        repeat; state persisted in step 4 carries its offsets, so a restart seeks
        there and replays what the state had not seen.
        """
        # 1. Store rows first: if we die after this, the replay rewrites the same keys.
        # 2. Publish and wait for the bus to acknowledge every record.
        deliver(output, self.store, self.producer, self.codec)
        # 3. Only now may the input be considered done.
        offsets = next_offsets(messages)
        if offsets:
            self.consumer.commit(offsets)
        if control:
            self.control.commit(next_offsets(list(control)))
        # 4. State last, stamped with the offsets it reflects. Not after every batch: a
        #    restart seeks back to these offsets and replays the rest into the state.
        if offsets and time.monotonic() - self._state_saved_at >= self.state_every_s:
            self.persist_state()
        return offsets

    def persist_state(self) -> None:
        # A standby holds no state of its own: saving it would overwrite the owner's.
        if self.state is not None and not getattr(self.consumer, "standby", False):
            self.state.save(self.service.name, self.service.snapshot(), self.consumer.positions())
            self._state_saved_at = time.monotonic()

    def _decode(self, messages: list[Message]) -> tuple[list[Incoming], list[dict[str, Any]]]:
        incoming, dead = [], []
        for m in messages:
            try:
                incoming.append(Incoming(m.topic, self.codec.decode(m.topic, m.value), m))
            except UndecodableRecord as exc:
                log.warning("%s: dead-lettering %s[%d]@%d: %s", self.service.name, m.topic, m.partition, m.offset, exc)
                dead.append(dead_letter(self.service.name, m.topic, m.value, str(exc),
                                        partition=m.partition, offset=m.offset, key=m.key))
        return incoming, dead

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set; the batch in hand is finished and checkpointed first."""
        while not stop.is_set():
            self.step()

    def close(self) -> None:
        if self.processed:
            self.persist_state()
        self.consumer.close()
        if self.control:
            self.control.close()
