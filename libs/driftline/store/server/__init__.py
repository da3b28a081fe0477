"""Serve one embedded chDB store over ClickHouse's HTTP protocol.

Only one process may open a chDB path ("Error initializing EmbeddedServer"
for a second one), yet several driftline services share one store. The owner
process runs this endpoint; every other process uses an ordinary
``clickhouse_connect.get_client(host=..., port=...)``, exactly as it would
against the real ClickHouse server that production points the same DSN at.
So this package speaks what clickhouse-connect really sends:

* the SQL in the POST body, the ``query`` URL parameter, or a multipart form
  (clickhouse-connect's form encoding for large bind values);
* a ``FORMAT`` clause or the ``default_format`` parameter for the result;
* settings and ``param_*`` bind values as URL parameters, next to transport
  parameters (``database``, ``session_id``, ``query_id``, ...);
* an insert as one body: ``INSERT INTO t (cols) FORMAT Native`` plus the data,
  possibly compressed as a whole (``Content-Encoding`` lz4/zstd/gzip/deflate);
* ``Accept-Encoding`` for compressed results;
* errors as ``Code: N. DB::Exception: ...`` with HTTP 4xx/5xx and
  ``X-ClickHouse-Exception-Code``, so the client raises ``DatabaseError``.

chDB gets one connection, used under a lock: statements run one at a time.
ClickHouse scopes settings and the current database to a request (or to a
``session_id``); here they are switched on the shared connection with SET and
USE before each statement, and only when they differ from what the previous
statement ran with, so a request never sees another's settings and a steady
stream of requests costs no extra statements.

Run it with ``python -m driftline.store.server --path P --port N``.
There is no authentication: bind it to 127.0.0.1 (the default).

One module per concept: ``errors`` (ClickHouse-style errors), ``compression``
(request/response bodies), ``statements`` (what a request asks to run),
``options`` (URL and form parameters), ``sessions`` (``session_id`` state),
``engine`` (the chDB connection) and ``app`` (HTTP, ASGI and entry points).
"""

from __future__ import annotations

from driftline.store.server.app import main, make_app, serve

__all__ = ["main", "make_app", "serve"]
