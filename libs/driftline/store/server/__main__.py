"""``python -m driftline.store.server --path P --port N``: serve one chDB store over HTTP."""

from __future__ import annotations

from driftline.store.server.app import main

if __name__ == "__main__":
    main()
