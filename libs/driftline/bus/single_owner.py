"""A consumer for a service that must run as one instance: a second one stands by.

The drift-detector's windows span every partition of a model (a PSI window is one
histogram of all of a model's predictions), and its state is one snapshot. Two
instances would each see half of every window, write different PSI values for the
same window key, and overwrite each other's snapshot. Until windows can be merged
from partial histograms (the event-time issue), such a service runs as a single
owner of its consumer group:

- An instance joins the group only when the group is empty. While another member
  is in it, it *stands by*: it does not join (joining would move partitions away
  from the owner), says so in its log, and asks again every ``check_every_s``.
  A member that died without leaving (SIGKILL) is listed until its session times
  out, then the standby takes over and restores the state the owner saved.
- Two instances can find the group empty at the same moment and both join. Before
  it hands out a single record, a new member checks that it is alone in the group;
  if not, it leaves without having processed or committed anything and stands by
  again after a random pause, so one of them ends up alone.

The group coordinator (Kafka's, or the in-process bus's) is the arbiter: no lease
table, no clock shared between machines.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from driftline.bus.base import Consumer, Message, Offsets

log = logging.getLogger(__name__)


class SingleOwnerConsumer(Consumer):
    """
    Parameters
    ----------
    bus
        A bus whose consumers have ``member_id()`` and which has ``group_members(group)``
        (both of driftline's buses).
    group, topics
        As for ``bus.consumer``.
    on_acquire
        Called once this instance owns the group and before its first record is handed
        out: the place to restore state and seek (a standby's state at start-up is stale).
    check_every_s
        How often a standby asks whether the group is empty.
    """

    def __init__(self, bus: Any, group: str, topics: list[str], on_acquire: Callable[[], None] | None = None,
                 check_every_s: float = 2.0, service: str | None = None):
        self.bus, self.group, self.topics = bus, group, list(topics)
        self.on_acquire = on_acquire
        self.check_every_s = check_every_s
        self.service = service or group
        self._inner: Consumer | None = None
        self._confirmed = False
        self._last_check = float("-inf")
        self._pause = 0.0  # extra wait after leaving a group that two instances joined at once
        self._standing_by_since: float | None = None
        self._held: list[Message] = []  # read while joining, handed out once ownership is confirmed
        # Join now when the group is empty, as a plain consumer would: on the in-process bus a
        # group that has not subscribed yet does not hold back retention for itself.
        self._try_to_join()

    @property
    def standby(self) -> bool:
        """True while another instance owns the group (or before this one has confirmed it is alone)."""
        return not self._confirmed

    # -- taking and confirming ownership ------------------------------------------------

    def _members(self) -> list[str] | None:
        try:
            return list(self.bus.group_members(self.group))
        except Exception as exc:  # the coordinator cannot be asked now: stay as we are, ask again
            log.warning("%s: cannot describe group %s (%s); asking again in %.0fs",
                        self.service, self.group, exc, self.check_every_s)
            return None

    def _stand_by(self, members: list[str]) -> None:
        if self._standing_by_since is None:
            self._standing_by_since = time.monotonic()
            log.warning("%s: another instance owns consumer group %s (members %s); this one stands by and takes "
                        "over when the group is empty. The %s runs as one instance: its drift windows span every "
                        "partition (README, 'Scaling out').", self.service, self.group, ", ".join(members),
                        self.service)

    def _try_to_join(self) -> None:
        if time.monotonic() - self._last_check < self.check_every_s + self._pause:
            return
        self._last_check, self._pause = time.monotonic(), 0.0
        members = self._members()
        if members is None:
            return
        if members:
            self._stand_by(members)
            return
        self._inner = self.bus.consumer(self.group, self.topics)

    def _confirm(self) -> bool:
        """After joining: alone in the group -> owner; otherwise leave and stand by again."""
        me = self._inner.member_id()
        members = self._members() if me else None
        if not members or me not in members:
            return False  # not joined yet (no assignment) or the coordinator does not list us yet
        if members != [me]:
            log.warning("%s: %d instances joined group %s at once; this one leaves and stands by",
                        self.service, len(members), self.group)
            self._inner.close()  # nothing was handed out from it: nothing to commit, nothing lost
            self._inner = None
            self._last_check, self._pause = time.monotonic(), self.check_every_s * random.random()
            self._stand_by([m for m in members if m != me])
            return False
        self._confirmed = True
        if self._standing_by_since is not None:
            log.warning("%s: taking over group %s after standing by for %.0fs", self.service, self.group,
                        time.monotonic() - self._standing_by_since)
            self._standing_by_since = None
        if self.on_acquire is not None:
            self.on_acquire()
        return True

    # -- Consumer -----------------------------------------------------------------------

    def poll_batch(self, max_records: int, timeout_s: float, linger_s: float = 0.0) -> list[Message]:
        if self._inner is None:
            self._try_to_join()
            if self._inner is None:
                time.sleep(timeout_s)  # a standby's poll waits as a real one would
                return []
        if not self._confirmed:
            # Polling is what joins the group and brings the assignment; what it reads is held
            # back until this instance knows it is alone (and dropped, uncommitted, if not).
            self._held.extend(self._inner.poll_batch(max_records, timeout_s))
            if not self._confirm():
                self._held = [] if self._inner is None else self._held
                return []
            timeout_s = 0.0  # the wait was spent joining; hand out what is there now
        if self._held:
            held, self._held = self._held[:max_records], self._held[max_records:]
            return held
        return self._inner.poll_batch(max_records, timeout_s, linger_s)

    def commit(self, offsets: Offsets) -> Any:
        if self._inner is None or not self._confirmed:
            return not offsets
        return self._inner.commit(offsets)

    def positions(self) -> Offsets:
        return self._inner.positions() if self._inner is not None and self._confirmed else {}

    def seek(self, offsets: Offsets) -> None:
        if self._inner is not None:
            # Records held back from a partition that is sought (restored state) are read again from there.
            self._held = [m for m in self._held if (m.topic, m.partition) not in offsets]
            self._inner.seek(offsets)

    def lag(self) -> Offsets:
        return self._inner.lag() if self._inner is not None and self._confirmed else {}

    def member_id(self) -> str | None:
        return self._inner.member_id() if self._inner is not None else None

    def assigned(self) -> set[tuple[str, int]] | None:
        return self._inner.assigned() if self._inner is not None and self._confirmed else set()

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None
