"""Errors as ClickHouse reports them: a numeric code, ``Code: N. DB::Exception: ...`` and an HTTP status."""

from __future__ import annotations

import re

# HTTP status ClickHouse answers for the common error codes (everything else is 500).
HTTP_STATUS_BY_CODE = {
    6: 400, 26: 400, 27: 400, 32: 400, 38: 400, 41: 400, 53: 400, 62: 400, 69: 400, 72: 400, 117: 400,
    36: 400, 47: 404, 46: 404, 50: 404, 60: 404, 63: 404, 73: 404, 81: 404, 115: 404,
    164: 403, 48: 501, 372: 404, 373: 423, 497: 403, 516: 401,
}  # fmt: skip


class ServerError(Exception):
    """An error reported the way ClickHouse does: a numeric code and ``Code: N. DB::Exception: ...``.

    clickhouse-connect builds its DatabaseError from exactly this body and the
    ``X-ClickHouse-Exception-Code`` header, so callers see the engine's words.
    """

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code = code
        self.text = text

    @classmethod
    def make(cls, code: int, name: str, message: str) -> ServerError:
        """Build an error raised by the endpoint itself, worded like the engine's."""
        return cls(code, f"Code: {code}. DB::Exception: {message}. ({name})")

    @classmethod
    def from_engine(cls, exc: BaseException) -> ServerError:
        """Keep chDB's own ``Code: N. DB::Exception`` text; drop chDB's Python-side prefixes."""
        message = str(exc)
        start = message.find("Code: ")
        if start < 0:
            return cls.make(1001, "STD_EXCEPTION", message.strip())
        text = message[start:].strip()
        match = re.match(r"Code: (\d+)", text)
        return cls(int(match.group(1)) if match else 1001, text)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS_BY_CODE.get(self.code, 500)


def _not_implemented(what: str) -> ServerError:
    return ServerError.make(48, "NOT_IMPLEMENTED", f"{what} is not supported by the driftline chDB endpoint")
