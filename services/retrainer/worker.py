"""One training run in a worker thread, outside the retrainer's poll loop, with a deadline.

A thread rather than a process: embedded mode runs chDB inside the process,
and forking after chDB's threads have started is unsafe. The price is that a
thread cannot be killed: a training past its deadline is *abandoned* (its
request is recorded as failed and the service goes on), and the thread runs
to its end in the background, its result discarded. Each job has its own
daemon thread, so an abandoned one never queues the next training behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainingJob:
    """The run of ``work()`` in a daemon thread; poll :attr:`finished` and :meth:`expired`, never join.

    Examples
    --------
    >>> job = TrainingJob.start("r1", lambda: 42, timeout_s=5.0)
    >>> job.wait(5.0)
    True
    >>> job.value, job.error
    (42, None)
    """

    request_id: str
    timeout_s: float
    started_at: float = field(default_factory=time.monotonic)
    value: Any = None
    error: BaseException | None = None
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @classmethod
    def start(cls, request_id: str, work: Callable[[], Any], *, timeout_s: float) -> TrainingJob:
        job = cls(request_id, timeout_s)
        thread = threading.Thread(target=job._run, args=(work,), name=f"retrain-{request_id}", daemon=True)
        thread.start()
        return job

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self.value = work()
        except BaseException as exc:  # noqa: BLE001 - whatever the fit raised is the request's outcome
            self.error = exc
        finally:
            self._finished.set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def expired(self, now: float | None = None) -> bool:
        """True once the deadline has passed without a result."""
        return not self.finished and (time.monotonic() if now is None else now) - self.started_at >= self.timeout_s

    def wait(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` (never past the job's own deadline) for the result; True if it came."""
        remaining = self.timeout_s - (time.monotonic() - self.started_at)
        return self._finished.wait(max(0.0, min(timeout_s, remaining)))

    def join(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` for the run's end, past the deadline too (an abandoned run); True if it ended."""
        return self._finished.wait(timeout_s)
