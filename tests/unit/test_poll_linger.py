"""A poll is a micro-batch flushed by size or by a short linger (issue 12), on the in-process bus.

Wall-clock bounds here are generous ceilings (a poll that should return early must not take
its 30 s timeout or linger); nothing asserts how fast the machine is.
"""

import threading
import time

from driftline.bus.memory import MemoryBus
from driftline.config import Settings
from driftline.entry.wiring import _linger_s


def _bus_and_consumer(partitions: int = 2):
    bus = MemoryBus()
    bus.create_topics({"readings": partitions})
    return bus, bus.consumer("g", ["readings"])


def _produce(bus: MemoryBus, first: int, n: int) -> None:
    producer = bus.producer()
    for i in range(first, first + n):
        producer.produce("readings", f"r{i}".encode(), key=f"turbine-{i % 5}".encode())


class _Polled:
    """One poll_batch in a thread of its own, so records can be produced while it lingers."""

    def __init__(self, consumer, *args, **kwargs):
        self.result, self.took = None, None
        self._thread = threading.Thread(target=self._run, args=(consumer, args, kwargs))
        self._thread.start()

    def _run(self, consumer, args, kwargs):
        started = time.monotonic()
        self.result = consumer.poll_batch(*args, **kwargs)
        self.took = time.monotonic() - started

    def join(self, timeout_s: float = 20.0):
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the poll did not return"
        return self.result


def test_a_poll_returns_as_soon_as_the_batch_is_full_not_after_the_linger():
    bus, consumer = _bus_and_consumer()
    _produce(bus, 0, 1)
    poll = _Polled(consumer, 5, 30.0, linger_s=30.0)
    _produce(bus, 1, 4)  # arrive while the poll lingers (or before it starts): either way one batch
    got = poll.join()
    assert sorted(m.value for m in got) == [f"r{i}".encode() for i in range(5)]
    assert poll.took < 15.0  # full: flushed by size, long before its 30 s linger


def test_a_poll_with_fewer_records_returns_after_the_linger_not_the_timeout():
    bus, consumer = _bus_and_consumer()
    _produce(bus, 0, 3)
    poll = _Polled(consumer, 1000, 30.0, linger_s=0.2)
    got = poll.join()
    assert len(got) == 3
    assert 0.2 <= poll.took < 15.0  # it lingered for more, then flushed what it had
    assert consumer.poll_batch(1000, 0.0) == []  # nothing read twice or held back


def test_a_poll_that_must_not_wait_does_not_linger():
    bus, consumer = _bus_and_consumer()
    _produce(bus, 0, 2)
    started = time.monotonic()
    got = consumer.poll_batch(1000, 0.0, linger_s=30.0)
    assert len(got) == 2 and time.monotonic() - started < 15.0  # the embedded pump's polls never wait


def test_an_idle_poll_sleeps_until_its_timeout_without_spinning():
    bus, consumer = _bus_and_consumer()
    reads = 0
    read = consumer._read

    def counting_read(max_records):
        nonlocal reads
        reads += 1
        return read(max_records)

    consumer._read = counting_read
    started = time.monotonic()
    assert consumer.poll_batch(100, 0.3, linger_s=0.01) == []
    assert time.monotonic() - started >= 0.3  # an idle poll still blocks up to its timeout
    assert reads <= 3  # woken by producers only (there are none): no busy loop


def test_an_idle_poll_wakes_for_the_first_record_then_lingers_for_the_rest():
    bus, consumer = _bus_and_consumer()
    poll = _Polled(consumer, 4, 30.0, linger_s=30.0)
    _produce(bus, 0, 4)  # one by one, each waking the poll: flushed when the fourth is there
    got = poll.join()
    assert sorted(m.value for m in got) == [f"r{i}".encode() for i in range(4)]
    assert poll.took < 15.0


def test_the_predictor_lingers_a_few_ms_and_the_other_runners_for_fuller_batches():
    settings = Settings(predictor_linger_ms=7, batch_linger_ms=300)
    assert _linger_s("predictor", settings) == 0.007
    assert _linger_s("label-joiner", settings) == 0.3
    assert _linger_s("drift-detector", settings) == 0.3
    assert Settings().predictor_linger_ms == 5  # default: a few ms
    assert Settings().batch_linger_ms == 250


def test_the_embedded_pipeline_freezes_its_startup_heap_out_of_the_collector(tmp_path):
    """What the pipeline builds at start is moved out of the collector's sight (settle_heap:
    gc.freeze; `driftline serve` does the same before a service's loop), so the objects every
    batch allocates do not make each full collection walk the whole heap; close undoes it."""
    import gc

    from driftline.entry.embedded import Embedded

    gc.unfreeze()
    app = Embedded(Settings(home=tmp_path))
    try:
        assert gc.get_freeze_count() > 0
    finally:
        app.close()
    assert gc.get_freeze_count() == 0


def test_a_rebalance_while_a_poll_lingers_never_puts_a_record_twice_in_its_batch():
    """Found at review: a member joining while a poll lingered reset the poller's positions to the
    group's commits, and the poll read the records it already held again ([r0, r0, r1])."""
    bus, consumer = _bus_and_consumer(partitions=2)
    _produce(bus, 0, 2)  # one record on each partition (turbine-0 and turbine-1)
    poll = _Polled(consumer, 1000, 30.0, linger_s=1.0)
    deadline = time.monotonic() + 20
    while not bus._lock._waiters and time.monotonic() < deadline:  # until the poll lingers on the bus
        time.sleep(0.001)
    bus.consumer("g", ["readings"])  # another member joins: the group rebalances
    _produce(bus, 2, 3)  # wakes the lingering poll
    got = poll.join()
    offsets = [(m.partition, m.offset) for m in got]
    assert got and len(offsets) == len(set(offsets)), offsets
