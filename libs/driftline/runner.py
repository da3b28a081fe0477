"""The runner: poll a batch, let the service's logic turn it into outputs, checkpoint.

A service's logic never touches the bus or the store. It gets decoded records
and returns an :class:`Output`; the runner does all I/O, in the one order that
makes at-least-once delivery effectively-once where it matters
(:meth:`Runner.checkpoint`), and decides what a failure means, in one place
(:meth:`Runner.process`): a record that makes the logic raise is dead-lettered
alone, a dependency that is down is waited for, a refused commit is replayed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from driftline.bus import Bus, BusFull, Consumer, Message, Offsets, next_offsets
from driftline.bus.single_owner import SingleOwnerConsumer
from driftline.codec import Codec, UndecodableRecord
from driftline.deadletter import dead_letter, dead_letter_row
from driftline.failure import Backoff, CommitRefused, Outage, Stopped, is_transient, retry_transient
from driftline.store import ColumnBatch, Store
from driftline.telemetry import OTHER, SERVICE_HEALTHY, UNDECODABLE, RunnerMetrics
from driftline.timeutil import now_ms
from driftline.topics import DLQ

log = logging.getLogger(__name__)

#: (topic, encoded value, encoded key): a record as the producer takes it.
Encoded = tuple[str, bytes, bytes | None]


@dataclass
class Output:
    """What a batch produced: records to publish, rows to store, and state to persist.

    A table's rows are a list of dicts (:meth:`add_rows`) or, for a service that builds
    them column-wise, a :class:`ColumnBatch` (:meth:`add_columns`), never both: either
    way the checkpoint makes one insert per table.
    """

    records: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)  # (topic, key, record)
    rows: dict[str, list[dict[str, Any]] | ColumnBatch] = field(default_factory=dict)  # table -> rows
    dead_reasons: dict[str, int] = field(default_factory=dict)  # reason category -> dead letters (metrics)

    def add_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        held = self.rows.setdefault(table, [])
        if isinstance(held, ColumnBatch):
            raise ValueError(f"rows of dicts for {table!r}, whose rows this output holds column-wise")
        held.extend(rows)

    def add_columns(self, table: str, batch: ColumnBatch) -> None:
        """Rows given column-wise; the batch becomes this output's (batches added later extend it)."""
        if not len(batch):
            return
        held = self.rows.get(table)
        if held is None:
            self.rows[table] = batch
        elif isinstance(held, ColumnBatch):
            held.extend(batch)
        else:
            raise ValueError(f"column-wise rows for {table!r}, whose rows this output holds as dicts")

    def publish(self, topic: str, key: str | None, record: dict[str, Any]) -> None:
        self.records.append((topic, key, record))

    def dead(self, record: dict[str, Any], reason: str = OTHER) -> None:
        """A dead letter goes to both the ``dlq`` topic and the ``dead_letters`` table.

        ``reason`` is a bounded category (:mod:`driftline.telemetry`) for the metrics.
        """
        self.publish(DLQ, record["dead_letter_id"], record)
        self.add_rows("dead_letters", [dead_letter_row(record)])
        self.dead_reasons[reason] = self.dead_reasons.get(reason, 0) + 1

    def merge(self, other: Output) -> None:
        """Add ``other``'s records, rows and dead letters after this one's (order kept)."""
        self.records.extend(other.records)
        for table, rows in other.rows.items():
            if isinstance(rows, ColumnBatch):
                self.add_columns(table, rows.copy())
            else:
                self.add_rows(table, rows)
        for reason, n in other.dead_reasons.items():
            self.dead_reasons[reason] = self.dead_reasons.get(reason, 0) + n


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    record: dict[str, Any]
    message: Message


class Service(Protocol):
    """What a runner needs from a service's logic wrapper."""

    name: str
    topics: list[str]

    def handle(self, batch: list[Incoming], now_ms: int) -> Output: ...


class StatefulService(Service, Protocol):
    """A service with state to checkpoint (step 4); the runner persists it when it has these."""

    def snapshot(self) -> bytes: ...
    def restore(self, snapshot: bytes) -> None: ...


class RollbackPoint:
    """Puts a stateful service's state back to before the batch in hand, cheaply.

    A snapshot before every batch would be exact but not free: a drift-detector remembering
    100,000 record keys (its dedupe memory) snapshots in a few milliseconds, several
    microseconds per event of a 1,000-record batch (see the README, "When things fail"). So
    a point is taken at most every ``every_s`` seconds (and never more often than 20 times
    its own cost), and the batches handled since are kept; going back restores the point
    and handles those batches again, discarding their outputs (they are already delivered).
    A service whose snapshot is cheaper than ``cheap_s`` (1 ms: under a microsecond per
    event of a full batch) simply gets a point before every batch (nothing to replay).

    Replaying assumes what ``handle`` does to the state depends only on the batch and the
    ``now_ms`` it was given, as driftline's stateful services do. A service whose ``restore``
    is meant for a restart (the drift-detector's watermarks give every partition a fresh idle
    timeout then) offers ``rollback_to(snapshot)``, which puts its state back exactly; the
    point uses it when it is there.
    """

    def __init__(self, service: StatefulService, every_s: float = 1.0, cheap_s: float = 0.001,
                 max_batches: int = 100):
        self.service = service
        self.every_s, self.cheap_s, self.max_batches = every_s, cheap_s, max_batches
        self._point: bytes | None = None
        self._since: list[tuple[list[Incoming], int]] = []  # batches handled after the point
        self._taken_at = float("-inf")
        self._dirty = False  # a rollback did not finish (a replay raised): do it again before handling
        self.cost_s = 0.0  # the last snapshot's duration

    def before_batch(self) -> None:
        """A new point if the last one is old (or snapshots are cheap): replays stay short."""
        age = time.monotonic() - self._taken_at
        if (self._point is None or self.cost_s <= self.cheap_s or len(self._since) >= self.max_batches
                or age >= max(self.every_s, 20 * self.cost_s)):
            self.mark()

    def mark(self) -> None:
        started = time.perf_counter()
        self._point = self.service.snapshot()
        self.cost_s = time.perf_counter() - started
        self._taken_at = time.monotonic()
        self._since = []

    def handled(self, batch: list[Incoming], now_ms: int) -> None:
        self._since.append((batch, now_ms))

    def undo_last(self) -> None:
        """Back to before the last batch handled (its commit was refused)."""
        if self._since:
            self._since.pop()
        self.rollback()

    def rollback(self) -> None:
        """Back to the state after the last batch :meth:`handled` (nothing of a failed attempt kept)."""
        if self._point is None:
            return
        self._dirty = True
        getattr(self.service, "rollback_to", self.service.restore)(self._point)
        for batch, now_ms in self._since:
            self.service.handle(batch, now_ms)
        self._dirty = False

    def ready(self) -> None:
        """Finish a rollback that a failure (a dependency down during the replay) cut short."""
        if self._dirty:
            self.rollback()


class Runner:
    """Runs one service over a bus and a store: poll a batch, :meth:`process` it, :meth:`checkpoint`.

    Parameters
    ----------
    batch_size, poll_timeout_s, linger_s
        A poll waits up to ``poll_timeout_s`` for a first record, then returns once
        ``batch_size`` records are there or ``linger_s`` after the first one arrived (a
        micro-batch flushed by size or by linger: :meth:`driftline.bus.Consumer.poll_batch`).
    backoff
        Waits between retries while a dependency is down (capped exponential).
    commit_patience_s
        How long a commit that fails transiently is retried before it counts as refused (the
        batch is read again): longer than the group session, which a broker outage outlives.
    overlap_acks
        For a stateless service (the predictor, whose callers wait for its answers): handle
        the next batch while the broker acknowledges the last one's records, and commit each
        batch once they all are (:meth:`checkpoint`, steps 2 and 3). The order that makes a
        crash replay rather than lose stays; only the wait moves off the critical path.
    stop
        Set to interrupt a wait for a dependency (:meth:`run` sets it to its own event).
    """

    def __init__(self, service: Service, bus: Bus, codec: Codec, store: Store, *, batch_size: int = 1000,
                 poll_timeout_s: float = 0.2, linger_s: float = 0.0, clock: Callable[[], int] | None = None,
                 state: Any | None = None, state_every_s: float = 5.0, backoff: Backoff | None = None,
                 commit_patience_s: float = 30.0, overlap_acks: bool = False, stop: threading.Event | None = None):
        self.service = service
        self.bus = bus
        self.codec = codec
        self.store = store
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.linger_s = linger_s
        self.clock = clock or now_ms
        self.state = state  # a StateStore, for stateful services
        self.state_every_s = state_every_s
        self.backoff = backoff or Backoff()
        self.commit_patience_s = commit_patience_s
        self.overlap_acks = overlap_acks
        self.stop = stop
        self._state_saved_at = time.monotonic()
        self._abandoned = False  # a batch was left unfinished on stop: its state must not be saved
        self._full_topic: str | None = None  # a topic the bus had no room on for the last batch's outputs
        self._assignment: set[tuple[str, int]] | None = None  # the partitions last seen assigned here
        self.outage = Outage(service.name, on_change=lambda ok: SERVICE_HEALTHY.labels(service.name).set(int(ok)))
        # Before the consumer: a single owner may take its group, and restore the state, at once.
        self._stateful = hasattr(service, "snapshot") and hasattr(service, "restore")
        if overlap_acks and self._stateful:
            raise ValueError(f"{service.name}: a state saved with its offsets needs each commit before the next batch")
        self._unacknowledged: deque[_Unacknowledged] = deque()  # produced, not yet committed (oldest first)
        self.rollback_point = RollbackPoint(service) if self._stateful else None
        self.producer = bus.producer()
        self.consumer = self._data_consumer()
        if overlap_acks and hasattr(self.consumer, "before_revoke"):
            self.consumer.before_revoke(self._commit_all_quietly)  # the partitions' next owner starts there
        # Control topics (model events) are read by a consumer of their own, before every batch,
        # so a model swap applies from the next batch however busy the data topics are. Its group
        # is per instance: every replica must see every control record.
        control_topics = getattr(service, "control_topics", [])
        self.control = self._control_consumer(bus, control_topics) if control_topics else None
        self.processed = 0
        self.dead_lettered = 0
        self.metrics = RunnerMetrics(service.name)
        if state is not None and not isinstance(self.consumer, SingleOwnerConsumer):
            self._resume_saved()

    def _control_consumer(self, bus: Bus, topics: list[str]) -> Consumer:
        """Every control record, in every replica: a group-less reader where the bus has one
        (Kafka: no coordinator to lose in a broker restart), else a group of this instance's own."""
        reader = getattr(bus, "reader", None)
        if reader is not None:
            return reader(topics)
        return bus.consumer(f"driftline-{self.service.name}-control-{uuid.uuid4().hex[:8]}", topics)

    @property
    def healthy(self) -> bool:
        """False while the runner waits for a dependency (broker, registries, store) to answer."""
        return self.outage.healthy

    def _data_consumer(self) -> Consumer:
        """The consumer of the data topics. A service whose state is one snapshot for all its
        partitions (the drift-detector, the retrainer) runs as the single owner of its group: a
        second instance stands by, and restores the state when it takes over (README, 'Scaling out')."""
        group = f"driftline-{self.service.name}"
        if self.state is not None and hasattr(self.bus, "group_members"):
            return SingleOwnerConsumer(self.bus, group, self.service.topics, on_acquire=self._resume_saved,
                                       service=self.service.name)
        return self.bus.consumer(group, self.service.topics)

    def _resume_saved(self) -> None:
        """Restore the saved state and seek to its offsets, waiting out a store that is away."""
        self._retry(self._resume, "the store (saved state)")
        if self.rollback_point is not None:
            self.rollback_point.mark()

    def _resume(self) -> bool:
        saved = self.state.load(self.service.name)
        if saved is None:
            return False
        snapshot, offsets = saved
        self.service.restore(snapshot)
        self.consumer.seek(offsets)
        return True

    def _retry(self, work: Callable[[], Any], what: str, on_retry: Callable[[], None] | None = None) -> Any:
        return retry_transient(work, what, self.outage, self.backoff, self.stop, on_retry)

    def step(self, timeout_s: float | None = None) -> int:
        """Poll one batch, :meth:`process` it and :meth:`checkpoint` it; return how many messages it held.

        A refused commit returns 0 after going back to the last saved state (the batch comes
        again), and so does a bus without room for the batch's outputs (the state as before the
        batch); a stop requested while waiting for a dependency returns 0 with the batch
        uncommitted (the next run reads it again).
        """
        if not self._room_again():
            return 0
        control = self.control.poll_batch(self.batch_size, 0.0) if self.control else []
        messages = self._poll(self.poll_timeout_s if timeout_s is None else timeout_s)
        started = time.perf_counter()
        try:
            self._follow_assignment()
            output = self.process(control + messages)
            if messages or control or output.records or output.rows:
                with self.metrics.checkpoint_seconds.time():
                    self.checkpoint(messages, output, control)
                self.metrics.received(control + messages)  # counted once checkpointed, as the records out
                self.metrics.delivered(output.records, output.dead_reasons)
                self.metrics.batch_seconds.observe(time.perf_counter() - started)
            elif self._unacknowledged:  # idle: commit what the broker has acknowledged since
                self._commit_acknowledged()
        except CommitRefused as exc:
            self._go_back(messages, exc)
            return 0
        except BusFull as exc:
            self._undo_batch(messages, control, exc)
            return 0
        except Stopped:
            log.warning("%s: stopping with a batch of %d records unfinished; it is read again on restart",
                        self.service.name, len(messages))
            self._abandoned = True
            return 0
        self.metrics.lag(self.consumer)
        self.processed += len(messages)
        self.dead_lettered += sum(output.dead_reasons.values())
        return len(messages)

    def _poll(self, timeout_s: float) -> list[Message]:
        return self.consumer.poll_batch(self.batch_size, timeout_s, linger_s=self.linger_s)

    def _follow_assignment(self) -> None:
        """Tell a service that keeps per-key memory (the label-joiner's waiting labels) that
        partitions moved to or from this instance, before it handles their records."""
        on_assignment = getattr(self.service, "on_assignment", None)
        assigned = self.consumer.assigned() if on_assignment is not None else None
        if assigned is None or assigned == self._assignment:
            return
        if self._assignment is not None:  # the first assignment is what the service started with
            self._retry(lambda: on_assignment(self.clock()), f"the store ({self.service.name} after a rebalance)")
        self._assignment = assigned

    def process(self, messages: list[Message]) -> Output:
        """Turn a polled batch into its output; the error policy, in this order:

        1. decode every record; bytes that are not a record of their topic (no wire format,
           a schema id not of the topic's subject, a bad body) are dead letters. While the
           schema registry cannot be asked, the same record's decoding is retried with
           backoff: a good record is never dead-lettered because a dependency is down;
        2. make sure the service's state can be put back to before the batch (stateful
           services, :class:`RollbackPoint`) and handle the whole batch;
        3. if handling raises a *transient* error (:func:`driftline.failure.is_transient`:
           broker, registry or store unreachable, a timeout), put the state back, wait
           (capped exponential backoff, the runner unhealthy meanwhile) and handle the same
           batch again, until it succeeds or the runner is stopped;
        4. if it raises anything else, put the state back and handle each record alone,
           as a batch of one, with steps 2-3; a record that still raises is dead-lettered
           (``dlq`` and ``dead_letters``) with the exception, service, topic, partition,
           offset and its original bytes, and the next record is handled;
        5. the outputs of the records handled are merged, in order, with the dead letters:
           every record of the batch is either processed or dead-lettered, none is skipped.

        Nothing here commits: :meth:`checkpoint` does, after the outputs are durable.
        """
        # 1. Decode; bad bytes are dead letters, an unreachable registry is waited for.
        incoming, dead = self._decode(messages)
        # 2.-3. The whole batch, rolled back and retried while a dependency is down.
        if self.rollback_point is not None:
            self.rollback_point.before_batch()
        output, failure = self._handle_isolated(incoming)
        if failure is not None:
            # 4. One bad record must not take its batch with it: each record on its own.
            log.warning("%s: a batch of %d raised %s: %s; handling its records one by one",
                        self.service.name, len(incoming), type(failure).__name__, failure)
            if self.rollback_point is not None:
                self.rollback_point.mark()  # at the state before the batch: replays stay within it
            output = Output()
            for item in incoming:
                one, failure = (None, failure) if len(incoming) == 1 else self._handle_isolated([item])
                if failure is None:
                    output.merge(one)  # 5. in the order of the batch
                    continue
                m = item.message
                log.warning("%s: dead-lettering %s[%d]@%d: %s: %s", self.service.name, m.topic, m.partition,
                            m.offset, type(failure).__name__, failure)
                output.dead(dead_letter(self.service.name, m.topic, m.value, f"{type(failure).__name__}: {failure}",
                                        partition=m.partition, offset=m.offset, key=m.key), reason=OTHER)
        for record in dead:
            output.dead(record, reason=UNDECODABLE)
        return output

    def _handle_isolated(self, batch: list[Incoming]) -> tuple[Output | None, Exception | None]:
        """Steps 2-3 of :meth:`process`: the output, or the non-transient exception with the
        service's state as it was before (nothing of a failed attempt is kept)."""

        def attempt() -> Output:
            now = self.clock()
            try:
                if self.rollback_point is not None:
                    self.rollback_point.ready()
                output = self.service.handle(batch, now)
            except Exception:
                if self.rollback_point is not None:
                    self.rollback_point.rollback()
                raise
            if self.rollback_point is not None:
                self.rollback_point.handled(batch, now)
            return output

        try:
            return self._retry(attempt, f"a dependency of {self.service.name}'s logic"), None
        except Stopped:
            raise
        except Exception as exc:  # not transient: the input's fault
            return None, exc

    def checkpoint(self, messages: list[Message], output: Output, control: list[Message] = ()) -> Offsets:
        """Make a handled batch durable, in this order:

        1. write store rows (idempotent: ReplacingMergeTree keyed on the record id);
        2. produce the output records and flush the producer (acks=all, idempotent);
        3. commit the consumer offsets of the batch;
        4. persist the service's state together with the offsets it covers.

        A crash anywhere replays from the last commit. Steps 1 and 2 are safe to
        repeat; state persisted in step 4 carries its offsets, so a restart seeks
        there and replays what the state had not seen.

        With ``overlap_acks`` (stateless services), step 2 produces without waiting and step 3
        commits, oldest first, the batches whose records are all acknowledged by then; the
        rest are committed at a later batch, when idle, before a rebalance takes their
        partitions, or on close. A batch that lost records to a failed delivery is produced
        again and committed once that is acknowledged. A refused commit needs nothing undone:
        there is no state, and the records' next owner reads them again.

        A transient failure of a step (store, schema registry or broker unreachable, a
        flush not acknowledged in time) retries that step with backoff until it succeeds
        or the runner is stopped; it never reaches the records. A commit the bus refuses
        (the group rebalanced), or one still failing after ``commit_patience_s``, raises
        :class:`CommitRefused` before step 4: the state must not be saved with offsets that
        were not committed (see :meth:`step`).
        """
        # 1. Store rows first: if we die after this, the replay rewrites the same keys.
        for table, rows in output.rows.items():
            self._retry(lambda: self.store.insert(table, rows), f"the store (insert into {table})")
        offsets = next_offsets(messages)
        if self.overlap_acks:
            # 2. Publish; the broker acknowledges while the next batch is handled.
            encoded = self._retry(lambda: self._encode(output.records), "the schema registry (encode)")
            self._unacknowledged.append(self._send(encoded, offsets))
            # 3. Commit the batches acknowledged so far; wait once too many are in flight.
            self._commit_acknowledged(wait=len(self._unacknowledged) > MAX_UNACKNOWLEDGED_BATCHES)
            if control:
                self._commit_control(control)
            return offsets
        # 2. Publish and wait for the bus to acknowledge every record (all again after a failed
        #    flush: a duplicate on a topic is what a replay produces too; a loss would not be).
        self._retry(lambda: self._publish(output.records), "the broker (publish and flush)")
        # 3. Only now may the input be considered done.
        if offsets and not self._commit(offsets):
            raise CommitRefused(f"{self.service.name}: commit of {offsets} refused")
        if control:
            self._commit_control(control)
        # 4. State last, stamped with the offsets it reflects. Not after every batch: a
        #    restart seeks back to these offsets and replays the rest into the state.
        if offsets and time.monotonic() - self._state_saved_at >= self.state_every_s:
            self._retry(self.persist_state, "the store (state)")
        return offsets

    def _commit(self, offsets: Offsets) -> bool:
        """Commit the data consumer's offsets, retried while the broker is away, but only for
        ``commit_patience_s``: a consumer whose group session ran out meanwhile must be polled
        to rejoin before any commit can succeed ("Waiting for coordinator" until then), and a
        runner retrying the commit polls nothing. Past the patience the commit counts as refused:
        back to the last saved state, poll again, and the batch comes again (the group has
        moved on by then anyway)."""
        give_up_at = time.monotonic() + self.commit_patience_s

        def commit() -> bool:
            try:
                return self.consumer.commit(offsets)
            except Exception as exc:
                if is_transient(exc) and time.monotonic() >= give_up_at:
                    log.warning("%s: commit still failing after %.0f s (%s); polling again",
                                self.service.name, self.commit_patience_s, exc)
                    return False
                raise
        return self._retry(commit, "the broker (commit)") is not False

    def _commit_control(self, control: list[Message]) -> None:
        """Commit the control records read, if the broker takes it now; never wait for it.

        Control records are this instance's alone (over Kafka a group-less reader commits
        nothing), and what they say (model events) is handled idempotently, so a control record
        read again after a missed commit does no harm. Waiting
        would: after a broker outage longer than the group session, the control consumer must be
        polled to rejoin its group before any commit can succeed, and a runner retrying the
        commit polls nothing (seen in CI: the predictor waited for ever, its model swap unread).
        """
        try:
            self.control.commit(next_offsets(list(control)))
        except Exception as exc:  # noqa: BLE001 - the next batch's commit covers these records
            if not is_transient(exc):
                raise
            log.warning("%s: control records not committed now (%s); they may be read again", self.service.name, exc)

    def _publish(self, records: list[tuple[str, str | None, dict[str, Any]]]) -> None:
        self._produce_encoded(self._encode(records))
        self.producer.flush()

    def _encode(self, records: list[tuple[str, str | None, dict[str, Any]]]) -> list[Encoded]:
        encode = self.codec.encode  # bound once per batch, not per record
        return [(topic, encode(topic, record), None if key is None else key.encode())
                for topic, key, record in records]

    def _send(self, encoded: list[Encoded], offsets: Offsets) -> _Unacknowledged:
        """Produce an overlapped batch's records and take the producer's mark after them."""
        self._retry(lambda: self._produce_encoded(encoded), "the broker (publish)")
        return _Unacknowledged(self._retry(self.producer.mark, "the broker (publish)"), offsets, encoded)

    def _produce_encoded(self, encoded: list[Encoded]) -> None:
        produce_many = getattr(self.producer, "produce_many", None)
        if produce_many is not None:  # the embedded bus: one lock and one consumer wake-up per batch
            produce_many(encoded)
        else:
            produce = self.producer.produce
            for topic, value, key in encoded:
                produce(topic, value, key=key)

    def _commit_acknowledged(self, wait: bool = False, flush_timeout_s: float = 30.0) -> None:
        """Overlapped step 3: commit the oldest batches whose records the broker has all
        acknowledged; when ``wait``, every batch, flushing until the broker has them all.

        A batch that lost records to a failed delivery is produced again, under a new mark,
        and committed once that is acknowledged (a duplicate is what a replay produces too;
        a loss would not be)."""
        done: Offsets = {}
        try:
            while True:
                if wait:
                    self._retry(lambda: self.producer.flush(flush_timeout_s), "the broker (flush)")
                while self._unacknowledged and self._acknowledged(self._unacknowledged[0]):
                    _advance(done, self._unacknowledged.popleft().offsets)
                if not (wait and self._unacknowledged):
                    break
        finally:  # what was acknowledged before a failure is done all the same
            if done and wait:
                self._commit(done)  # refused: the partitions moved, and their next owner reads them again
            elif done:
                self._commit_soon(done)

    def _acknowledged(self, batch: _Unacknowledged) -> bool:
        failure = None
        try:
            return self.producer.acknowledged(batch.mark)
        except Exception as exc:
            if not is_transient(exc):
                raise  # the records' or the configuration's fault: nothing is committed after them
            failure = exc
        log.warning("%s: %s; producing the batch again", self.service.name, failure)
        self._unacknowledged[0] = self._send(batch.records, batch.offsets)
        return False

    def _commit_soon(self, offsets: Offsets) -> None:
        """Commit without waiting for the broker's answer: a broker slow to answer holds up no
        batch, and a commit lost meanwhile is covered by the next one."""
        try:
            self.consumer.commit_soon(offsets)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("%s: commit not sent now (%s); the next one covers it", self.service.name, exc)

    def _commit_all_quietly(self) -> None:
        """Commit every overlapped batch now if the broker answers within 10 s (before a
        rebalance, on close): one attempt at each step, no waiting out an outage, since the
        partitions or the process are leaving."""
        stop, self.stop = self.stop, threading.Event()
        self.stop.set()  # _retry: a transient failure raises Stopped instead of waiting
        try:
            self._commit_acknowledged(wait=True, flush_timeout_s=10.0)
        except Exception as exc:  # noqa: BLE001 - uncommitted records are read again, not lost
            log.warning("%s: produced records not committed (%s); they will be read again",
                        self.service.name, exc)
        finally:
            self.stop = stop

    def _go_back(self, messages: list[Message], exc: CommitRefused) -> None:
        """After a refused commit: the state as last saved, and its offsets, so the records
        the group hands out again are counted once (step 4 was skipped for this batch)."""
        log.warning("%s: %s (the group rebalanced); going back to the last saved state and re-polling",
                    self.service.name, exc)
        if self._stateful and self.state is not None and self._retry(self._resume, "the store (state)"):
            self.rollback_point.mark()
            return  # the saved snapshot and its offsets: what it had not seen is read again
        self._rewind(messages)  # nothing saved yet: the state before this batch

    def _undo_batch(self, messages: list[Message], control: list[Message], exc: BusFull) -> None:
        """The bus had no room for the batch's outputs (their readers lag by its limit): the
        state as before the batch, and the batch (with its control records) read again later.
        Waiting for room here instead would wait for ever in the embedded mode, where those
        readers run on this very thread. Outputs of the batch already on the bus are published
        again then (at least once; their readers are idempotent on the record keys)."""
        log.warning("%s: %s; handling this batch of %d records again once its readers catch up",
                    self.service.name, exc, len(messages))
        self._full_topic = getattr(exc, "topic", None)
        self._rewind(messages)
        if control:
            self.control.seek(_first_offsets(control))

    def _rewind(self, messages: list[Message]) -> None:
        """The state as before this batch, and the data consumer back at its first records."""
        if self.rollback_point is not None:
            self.rollback_point.undo_last()
        self.consumer.seek(_first_offsets(messages))

    def _room_again(self) -> bool:
        """After a batch the bus had no room for: whether the full topic is at most half full
        again (on a bus that can tell), so the next batch is not handled only to be undone."""
        if self._full_topic is None:
            return True
        room = getattr(self.producer, "room", None)
        if room is not None and not room(self._full_topic, share=0.5):
            return False
        self._full_topic = None
        return True

    def persist_state(self) -> None:
        # A standby holds no state of its own: saving it would overwrite the owner's.
        if self.state is not None and not getattr(self.consumer, "standby", False):
            self.state.save(self.service.name, self.service.snapshot(), self.consumer.positions())
            self._state_saved_at = time.monotonic()

    def _decode(self, messages: list[Message]) -> tuple[list[Incoming], list[dict[str, Any]]]:
        incoming, dead = [], []
        decode = self.codec.decode
        for m in messages:
            try:
                try:  # a plain call per record: the retrying path only once the registry is away
                    record = decode(m.topic, m.value)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    record = self._retry(lambda: decode(m.topic, m.value), "the schema registry (decode)")
                incoming.append(Incoming(m.topic, record, m))
            except UndecodableRecord as exc:
                log.warning("%s: dead-lettering %s[%d]@%d: %s", self.service.name, m.topic, m.partition, m.offset, exc)
                dead.append(dead_letter(self.service.name, m.topic, m.value, str(exc),
                                        partition=m.partition, offset=m.offset, key=m.key))
        return incoming, dead

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set; the batch in hand is finished and checkpointed first
        (unless the runner is waiting for a dependency: then it stops at once, uncommitted).
        """
        self.stop = stop
        while not stop.is_set():
            self.step()

    def close(self) -> None:
        if self.overlap_acks and hasattr(self.consumer, "before_revoke"):
            self.consumer.before_revoke(None)  # closing revokes everything: committed just below, once
        if self._unacknowledged:
            self._commit_all_quietly()
        if self.processed and not self._abandoned:
            try:
                self.persist_state()
            except Exception as exc:  # the store is away: the next start replays from the last save
                log.warning("%s: state not saved on close (%s); a restart replays from the last save",
                            self.service.name, exc)
        self.consumer.close()
        if self.control:
            self.control.close()


#: Overlapped batches in flight before a checkpoint waits for the broker (memory stays bounded
#: when it falls behind).
MAX_UNACKNOWLEDGED_BATCHES = 32


@dataclass(frozen=True, slots=True)
class _Unacknowledged:
    """A batch produced with ``overlap_acks`` and not committed yet."""

    mark: Any  # the producer's mark after the batch's records
    offsets: Offsets  # to commit once they are acknowledged
    records: list[Encoded]  # to produce again if a delivery fails


def _advance(offsets: Offsets, later: Offsets) -> None:
    for tp, offset in later.items():
        offsets[tp] = max(offsets.get(tp, 0), offset)


def _first_offsets(messages: list[Message]) -> Offsets:
    """Per (topic, partition), the offset of the first message of the batch: where to read again."""
    offsets: Offsets = {}
    for m in messages:
        tp = (m.topic, m.partition)
        offsets[tp] = min(offsets.get(tp, m.offset), m.offset)
    return offsets
