"""Service state with the bus offsets it reflects (step 4 of the runner's checkpoint).

Kept in the store, so a service restarted on another machine finds it. On
restart the runner restores the snapshot and seeks to its offsets: records
committed after the snapshot was taken are replayed into the state instead of
being missed.
"""

from __future__ import annotations

import base64
import json

from driftline.bus import Offsets
from driftline.store import Store
from driftline.timeutil import now_ms, to_datetime


class StateStore:
    def __init__(self, store: Store):
        self.store = store

    def save(self, service: str, snapshot: bytes, offsets: Offsets) -> None:
        encoded = json.dumps([[t, p, o] for (t, p), o in sorted(offsets.items())])
        self.store.insert("service_state", [{"service": service, "snapshot": base64.b64encode(snapshot).decode(), "offsets": encoded,
                                             "saved_at": to_datetime(now_ms())}])

    def load(self, service: str) -> tuple[bytes, Offsets] | None:
        _, rows = self.store.query(
            "SELECT snapshot, offsets FROM service_state FINAL WHERE service = {s:String}", {"s": service}
        )
        if not rows:
            return None
        snapshot, offsets = rows[0]
        return base64.b64decode(snapshot), {(t, p): o for t, p, o in json.loads(offsets)}
