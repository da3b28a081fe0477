"""Request options: URL and multipart-form parameters, split into transport, bind values and settings."""

from __future__ import annotations

import email.parser
import email.policy
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from driftline.store.server.errors import ServerError, _not_implemented
from driftline.store.server.statements import DEFAULT_FORMAT

DEFAULT_SESSION_TIMEOUT = 60.0  # as ClickHouse's default_session_timeout

# URL parameters that steer the HTTP exchange, not the engine. Several are also
# ClickHouse settings, but they mean nothing to an embedded engine and
# forwarding them would only cost SET statements.
TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "session_id", "session_timeout", "session_check",
        "query_id", "quota_key", "user", "password", "role", "buffer_size", "wait_end_of_query",
        "compress", "decompress", "enable_http_compression", "http_zlib_compression_level",
        "client_protocol_version", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close", "http_response_buffer_size",
        "http_native_compression_disable_checksumming_on_decompress", "add_http_cors_header",
        "readonly",
    }
)  # fmt: skip

# chDB's Python layer turns these pseudo formats into Python objects, not bytes.
PSEUDO_FORMATS = frozenset({"dataframe", "arrowtable", "datastore", "debug"})


@dataclass
class RequestOptions:
    """What a request's URL (and form) parameters ask for, split by who consumes them."""

    query: str = ""
    database: str | None = None
    default_format: str = DEFAULT_FORMAT
    session_id: str | None = None
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    session_check: bool = False
    query_id: str = ""
    http_compression: bool | None = None
    readonly: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    bind: dict[str, str] = field(default_factory=dict)


def read_options(params: Mapping[str, str], method: str) -> RequestOptions:
    """Split parameters into transport, bind values (``param_x``) and engine settings.

    ClickHouse's own compressed-block protocol (``compress=1`` / ``decompress=1``)
    needs CityHash checksums nobody here can compute; clickhouse-connect does not
    use it (it relies on Content-Encoding), so it is refused rather than faked.
    """
    if params.get("compress") == "1" or params.get("decompress") == "1":
        raise _not_implemented("ClickHouse block compression (compress=1 / decompress=1)")
    opts = RequestOptions(
        query=params.get("query", ""),
        database=params.get("database") or None,
        default_format=params.get("default_format") or DEFAULT_FORMAT,
        session_id=params.get("session_id") or None,
        session_timeout=_float(params.get("session_timeout"), DEFAULT_SESSION_TIMEOUT),
        session_check=params.get("session_check") == "1",
        query_id=params.get("query_id") or str(uuid.uuid4()),
        http_compression=None if "enable_http_compression" not in params else params["enable_http_compression"] == "1",
        readonly=method in ("GET", "HEAD") or params.get("readonly", "0") not in ("", "0"),
    )
    if opts.default_format.lower() in PSEUDO_FORMATS:
        raise ServerError.make(73, "UNKNOWN_FORMAT", f"Unknown output format {opts.default_format}")
    for name, value in params.items():
        if name.startswith("param_"):
            opts.bind[name[len("param_") :]] = value
        elif name not in TRANSPORT_PARAMS:
            opts.settings[name] = value
    return opts


def _float(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


def read_form(content_type: str, body: bytes) -> dict[str, str]:
    """Fields of a multipart/form-data body (clickhouse-connect sends ``query`` and ``param_*`` this way).

    A part with a filename is ClickHouse "external data" (a temporary table
    sent with the query), which chDB cannot attach; it is refused.
    """
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        if part.get_filename():
            raise _not_implemented("External data (file parts in a form)")
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_payload(decode=True) or b"").decode()
    return fields
