"""Embedded mode: every service in one process over the in-process bus and chDB.

The services are the same classes that run as separate processes in
distributed mode; only the bus and the store differ. Runners take turns in
one thread: the demo calls :meth:`Embedded.pump` between chunks, which keeps
runs deterministic; ``driftline up`` calls :meth:`Embedded.run` in a background
thread, which pumps until stopped and waits on the bus when idle.

With ``persistent=True`` the bus keeps its log and committed offsets under
``HOME/bus`` (see :class:`MemoryBus`), so a restart resumes where it stopped.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import Counter

from driftline.bus.memory import MemoryBus
from driftline.codec import Codec, registry_client
from driftline.heap import settle_heap
from driftline.config import Settings
from driftline.registry import Registry
from driftline.registry.outbox import OutboxPublisher
from driftline.store import Store
from driftline.topics import ALL_TOPICS, MODELS
from driftline.services.ingest.gateway import IngestGateway
from driftline.services.ingest.bounds import Bounds
from driftline.services.ingest.logic import Ingest
from driftline.entry.wiring import RUNNER_SERVICES, Context, make_runner

log = logging.getLogger(__name__)


#: Per partition, the bytes of records every group has committed that the in-process bus keeps.
EMBEDDED_RETENTION_BYTES = 256 << 10


class Embedded:
    def __init__(self, settings: Settings | None = None, persistent: bool = False):
        self.settings = settings or Settings()
        self.settings.home.mkdir(parents=True, exist_ok=True)
        # Every reader of the in-process bus is a runner (or the demo's monitor) that joins its group
        # before the first record, so records every group has committed serve no one: keeping
        # 4 MB of them per partition, as a Kafka-like retention would, held about 100 MB of
        # small Python objects in a long demo.
        self.bus = MemoryBus(retention_bytes=EMBEDDED_RETENTION_BYTES,
                             log_dir=self.settings.home / "bus" if persistent else None)
        self.bus.create_topics({topic: self.settings.partitions for topic in ALL_TOPICS})
        self.codec = Codec(registry_client(None))
        self.store = Store(self.settings.resolved_store_dsn)
        self.store.migrate()
        self.registry = Registry(self.settings.registry_home, trusted_types=self.settings.trusted_types)
        self.registry.warm_load_probe()  # the retrainer registers challengers
        self._model_events = self.bus.producer()
        self._contracts: dict[str, object] = {}
        # Model events leave the registry's outbox on the runners' turn (pump, run), before the runners
        # step: deterministic for the demo, and a change made over HTTP while `up` runs reaches the
        # bus within one turn. Draining here sends what a crash left in the outbox.
        self.outbox = OutboxPublisher(self.registry, self._publish_model_event)
        self.registry.listeners.append(self._forget_contract)
        self._drain_outbox()
        self.ingest = IngestGateway(Ingest(self.contract_of, Bounds.from_settings(self.settings)), self.bus.producer(),
                                    self.codec, self.store, dlq_producer=self.bus.producer())
        context = Context(self.settings, self.bus, self.codec, self.store, self.registry)
        self.runners = [make_runner(name, context) for name in RUNNER_SERVICES]
        # One codec for every service: a record read by several (every prediction, by the
        # label-joiner and the drift-detector) is decoded once, its bytes one object in the log.
        readers = Counter(topic for runner in self.runners for topic in runner.service.topics)
        self.codec.share_decodes([topic for topic, n in readers.items() if n > 1], size=self.settings.batch_size)
        settle_heap()

    def contract_of(self, model: str):
        """The champion's feature contract, cached until a model event for ``model``."""
        if model not in self._contracts:
            champion = self.registry.resolve(model, "champion")
            self._contracts[model] = None if champion is None else champion.contract
        return self._contracts[model]

    def _drain_outbox(self) -> int:
        try:
            return self.outbox.drain()
        except Exception as exc:  # noqa: BLE001 - the bus refused (full): the rows stay, retried next turn
            log.warning("embedded: publishing model events failed, retrying on the next turn: %s", exc)
            return 0

    def _forget_contract(self, event: dict) -> None:
        self._contracts.pop(event["model"], None)

    def _publish_model_event(self, event: dict) -> None:
        self._model_events.produce(MODELS, self.codec.encode(MODELS, event), key=event["model"].encode())
        self._model_events.flush()

    def pump(self) -> int:
        """Give every runner turns until none has anything left to do; returns messages processed."""
        total = 0
        while True:
            self._drain_outbox()
            moved = sum(runner.step(timeout_s=0.0) for runner in self.runners)
            total += moved
            if not moved and not self._training_collected():
                return total

    def _training_collected(self) -> bool:
        """Wait for a training under way in a worker (the retrainer's), so that a pump ends with its result
        registered and runs stay deterministic; True when the next turn has a result to collect."""
        timeout_s = self.settings.retrain_timeout_s
        return any(runner.service.wait_for_training(timeout_s) for runner in self.runners
                   if hasattr(runner.service, "wait_for_training"))

    def run(self, stop: threading.Event, idle_wait_s: float = 0.2) -> int:
        """Pump until ``stop`` is set, then checkpoint every runner's state; returns messages processed.

        A stop request is seen between batches, so the batch in hand is always finished
        and checkpointed (offsets committed after its outputs) before this returns.
        """
        total = 0
        while not stop.is_set():
            moved = self._drain_outbox()
            for runner in self.runners:
                if stop.is_set():
                    break
                moved += runner.step(timeout_s=0.0)
            total += moved
            if not moved:
                stop.wait(idle_wait_s)  # nothing to do: give the CPU to HTTP instead of spinning
        self.checkpoint()
        return total

    def checkpoint(self) -> None:
        """Persist every stateful runner's state with the offsets it covers."""
        for runner in self.runners:
            runner.persist_state()

    def close(self) -> None:
        for runner in self.runners:
            runner.close()
        self.bus.close()
        self.registry.close()
        self.store.close()
        # What was frozen may be garbage now (a process that builds several, like the tests): collectable again.
        gc.unfreeze()

