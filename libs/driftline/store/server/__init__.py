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

Run it with ``driftline store serve`` (or ``python -m driftline.store.server
--path P --port N``). It is not an open door: every request but ``/ping``
needs the user and password from a 0600 file under ``DRIFTLINE_HOME``
(``driftline.store.credentials``, created on first start, read by
driftline's own clients), any request from a web browser (``Origin``) is
refused, and a deny-by-default statement policy refuses what would reach
files, URLs, other databases or programs, and what destroys or administers,
unless the operator starts it with ``--allow-admin``. It binds to loopback
unless told otherwise, and ``--no-auth`` is refused off loopback.

One module per concept: ``errors`` (ClickHouse-style errors), ``compression``
(request/response bodies), ``statements`` (what a request asks to run),
``options`` (URL and form parameters), ``sessions`` (``session_id`` state),
``auth`` (who may call), ``lexer`` (ClickHouse's tokens), ``access`` (what a
caller may run), ``engine`` (the chDB connections) and ``app`` (HTTP, ASGI
and entry points).
"""

from __future__ import annotations

from driftline.store.server.app import main, make_app, serve

__all__ = ["main", "make_app", "serve"]
