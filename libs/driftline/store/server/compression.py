"""Request and response bodies: undoing ``Content-Encoding`` and honouring ``Accept-Encoding``."""

from __future__ import annotations

import gzip
import zlib

import lz4.frame

try:  # Python 3.14+ ships zstd; before that clickhouse-connect itself uses the backport
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd

from driftline.store.server.errors import ServerError


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """Undo ``Content-Encoding`` (applied last-first, as HTTP lists them).

    clickhouse-connect compresses each insert block as its own frame, so every
    decoder here accepts a concatenation of frames/members.
    """
    for encoding in reversed([e.strip().lower() for e in (content_encoding or "").split(",") if e.strip()]):
        body = _decode_one(body, encoding)
    return body


def _decode_one(body: bytes, encoding: str) -> bytes:
    try:
        if encoding in ("identity", ""):
            return body
        if encoding == "lz4":
            return _lz4_frames(body)
        if encoding == "zstd":
            return zstd.decompress(body)
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding == "deflate":
            return _inflate(body)
    except Exception as exc:  # corrupt or truncated input: the client's fault, report it as ClickHouse would
        raise ServerError.make(271, "CANNOT_DECOMPRESS", f"Cannot decode {encoding} request body: {exc}") from exc
    raise ServerError.make(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown Content-Encoding {encoding!r}")


def _lz4_frames(body: bytes) -> bytes:
    """lz4.frame.decompress stops after one frame; clickhouse-connect sends one per block."""
    view, pos, parts = memoryview(body), 0, []
    while pos < len(body):
        part, used = lz4.frame.decompress(view[pos:], return_bytes_read=True)
        parts.append(part)
        pos += used
    return b"".join(parts)


def _inflate(body: bytes) -> bytes:
    """HTTP 'deflate' is zlib-wrapped, but some clients send a raw deflate stream."""
    try:
        return zlib.decompress(body)
    except zlib.error:
        return zlib.decompress(body, -zlib.MAX_WBITS)


def encode_body(body: bytes, encoding: str | None) -> bytes:
    """Compress a whole response as one frame (clickhouse-connect's lz4 reader expects exactly one)."""
    if encoding == "lz4":
        return lz4.frame.compress(body)
    if encoding == "zstd":
        return zstd.compress(body)
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=3)  # ClickHouse's http_zlib_compression_level
    if encoding == "deflate":
        return zlib.compress(body, 3)
    return body


def choose_encoding(accept_encoding: str | None, enabled: bool) -> str | None:
    """First of the client's listed encodings we can produce; ClickHouse compresses only when enabled."""
    if not enabled or not accept_encoding:
        return None
    for item in accept_encoding.split(","):
        name = item.split(";")[0].strip().lower()
        if name in ("lz4", "zstd", "gzip", "deflate"):
            return name
    return None
