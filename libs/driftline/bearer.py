"""Bearer tokens on driftline's HTTP endpoints (ingest, registry)."""

from __future__ import annotations

import hmac


def bearer_matches(authorization: str | None, *tokens: str | None) -> bool:
    """True if ``authorization`` is ``Bearer <t>`` for one of the configured ``tokens``.

    Every configured token is compared (no early exit), in constant time, so the
    timing says nothing about which one matched or how much of it.

    >>> bearer_matches("Bearer s3cret", None, "s3cret")
    True
    >>> bearer_matches("Bearer s3cre", "s3cret"), bearer_matches(None, "s3cret"), bearer_matches("Bearer ", None)
    (False, False, False)
    """
    given = (authorization or "").encode()
    matches = [hmac.compare_digest(given, f"Bearer {t}".encode()) for t in tokens if t]
    return any(matches)
