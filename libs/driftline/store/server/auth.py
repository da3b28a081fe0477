"""Who may call the endpoint: never a web browser, and only with the store's user and password.

A web page the user visits can send requests to ``127.0.0.1`` from their
browser. A cross-origin POST with ``Content-Type: text/plain`` needs no CORS
preflight, but browsers always attach ``Origin`` to it (and to every
non-GET request, same-origin or not), so any request with an ``Origin``
header is refused. A GET a page triggers (an image, a link) carries no
``Origin`` but a ``Sec-Fetch-Site`` naming another site, and is refused for
that; it could not authenticate anyway. Non-browser clients (clickhouse-connect,
curl) send neither header.

Credentials are accepted in each way ClickHouse's HTTP interface takes them:
HTTP Basic (what clickhouse-connect sends), ``X-ClickHouse-User`` /
``X-ClickHouse-Key`` headers, and ``user`` / ``password`` URL parameters.
They are compared in constant time; the password is never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping

from driftline.store.credentials import StoreCredentials
from driftline.store.server.errors import ServerError

AUTHENTICATION_FAILED = 516
BROWSER_SITES_REFUSED = frozenset({"cross-site", "same-site"})


def refuse_browser_requests(headers: Mapping[str, str]) -> None:
    """Raise 403 for a request a web page could have made (``headers`` keys are lower-case)."""
    if "origin" in headers:
        raise _refused("Requests with an Origin header (from a web browser) are refused by the store endpoint")
    if headers.get("sec-fetch-site", "").lower() in BROWSER_SITES_REFUSED:
        raise _refused("Cross-site browser requests are refused by the driftline store endpoint")


def _refused(message: str) -> ServerError:
    return ServerError.make(497, "ACCESS_DENIED", message)


class Authenticator:
    """Check a request's user and password against the endpoint's credentials.

    Parameters
    ----------
    credentials
        The one user the endpoint accepts; None turns authentication off
        (``--no-auth``, loopback only).
    """

    def __init__(self, credentials: StoreCredentials | None):
        self._credentials = credentials

    @property
    def enabled(self) -> bool:
        return self._credentials is not None

    def check(self, headers: Mapping[str, str], params: Mapping[str, str]) -> None:
        """Raise ``ServerError`` 516 (HTTP 401) unless the request carries the endpoint's credentials."""
        if self._credentials is None:
            return
        user, password = presented_credentials(headers, params)
        # Both comparisons always run, so the answer takes as long for a wrong user as for a wrong password.
        user_ok = hmac.compare_digest(user.encode(), self._credentials.user.encode())
        password_ok = hmac.compare_digest(password.encode(), self._credentials.password.encode())
        if not (user_ok and password_ok):
            shown = user if user_ok or len(user) <= 64 else user[:64] + "..."
            raise ServerError.make(
                AUTHENTICATION_FAILED,
                "AUTHENTICATION_FAILED",
                f"{shown or 'default'}: Authentication failed: password is incorrect, or there is no user with such "
                "name. The driftline store endpoint's credentials are in the store-credentials.json file "
                "it printed at startup",
            )


def presented_credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> tuple[str, str]:
    """The (user, password) a request presents, in ClickHouse's order: Basic, X-ClickHouse-*, URL parameters.

    No credentials at all reads as ClickHouse's ``default`` user with an empty password.
    """
    authorization = headers.get("authorization", "")
    if authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        user, _, password = decoded.partition(":")
        return user, password
    if "x-clickhouse-user" in headers or "x-clickhouse-key" in headers:
        return headers.get("x-clickhouse-user", "default"), headers.get("x-clickhouse-key", "")
    return params.get("user", "default"), params.get("password", "")
