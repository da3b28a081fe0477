"""ClickHouse sessions (``session_id``), emulated on the one shared chDB connection."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from driftline.store.server.errors import ServerError
from driftline.store.server.options import RequestOptions


@dataclass
class SessionState:
    """What ClickHouse keeps per ``session_id``: SET values and the current database."""

    settings: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    expires: float = 0.0


class SessionStore:
    """ClickHouse sessions, emulated: the one chDB connection is shared, so the server
    remembers each session's SET / USE and re-applies them to that session's requests.
    Temporary tables are not session-scoped (they live on the shared connection)."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionState] = {}
        self._lock = threading.Lock()

    def get(self, opts: RequestOptions) -> SessionState | None:
        if not opts.session_id:
            return None
        now = time.monotonic()
        with self._lock:
            self._drop_expired(now)
            state = self._sessions.get(opts.session_id)
            if state is None and opts.session_check:
                raise ServerError.make(372, "SESSION_NOT_FOUND", f"Session {opts.session_id} not found")
            if state is None:
                state = self._sessions[opts.session_id] = SessionState()
            state.expires = now + opts.session_timeout
            return state

    def _drop_expired(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires < now]:
            del self._sessions[key]
