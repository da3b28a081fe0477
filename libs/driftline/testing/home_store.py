"""A count in the store of ``DRIFTLINE_HOME`` for tests that run ``driftline up`` as a user would."""

from __future__ import annotations


def home_count(query: str) -> int:
    """``query``'s single number, through the running ``up``'s store endpoint (Settings finds it
    in ``HOME/up.json``), or its chDB store when ``up`` is stopped."""
    from driftline.config import Settings
    from driftline.store import Store

    store = Store(Settings().resolved_store_dsn)
    try:
        return int(store.scalar(query))
    finally:
        store.close()
