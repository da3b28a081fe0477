"""The store endpoint's user and password: generated once, kept in a 0600 file, found by driftline's clients.

``driftline store serve`` creates ``DRIFTLINE_HOME/store-credentials.json``
on its first start (``--credentials FILE`` or
``DRIFTLINE_STORE_CREDENTIALS_FILE`` put it elsewhere) and reuses it on every
later start, whatever ``--path`` the store itself has. A driftline client
whose DSN is ``http(s)://`` without a user reads the same file, so services,
``driftline sql`` and ``driftline report`` started with the same
``DRIFTLINE_HOME`` need no configuration. A user in the DSN
(``http://user:password@host:8123``, as for a real ClickHouse server) always
wins over the file.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

CREDENTIALS_FILENAME = "store-credentials.json"
DEFAULT_USER = "driftline"
PASSWORD_BYTES = 32  # token_urlsafe(32): 43 characters, 256 bits


@dataclass(frozen=True)
class StoreCredentials:
    """A user and password for the store endpoint (the password never appears in ``repr``)."""

    user: str
    password: str = field(repr=False)


def default_credentials_file() -> Path:
    """Where the endpoint keeps, and driftline's clients look for, the credentials.

    ``DRIFTLINE_STORE_CREDENTIALS_FILE`` if set, otherwise ``DRIFTLINE_HOME/store-credentials.json``.
    """
    from driftline.config import Settings

    settings = Settings()
    return Path(settings.store_credentials_file or settings.home / CREDENTIALS_FILENAME).absolute()


def load_credentials(path: Path) -> StoreCredentials | None:
    """The credentials in ``path``, or None if there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    data = json.loads(text)
    return StoreCredentials(user=str(data["user"]), password=str(data["password"]))


def load_or_create_credentials(path: Path) -> StoreCredentials:
    """The endpoint's credentials: those in ``path``, or new ones written there with mode 0600.

    The new file is written in full under a temporary name opened with 0600
    (never readable by others, not even for a moment) and then linked into
    place, which fails if another process got there first: then its file is
    used. An existing file that others can read is refused: its password
    must be considered known.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = _load_private(path)
    if existing is not None:
        return existing
    credentials = StoreCredentials(user=DEFAULT_USER, password=secrets.token_urlsafe(PASSWORD_BYTES))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump({"user": credentials.user, "password": credentials.password}, out)
            out.write("\n")
        os.link(temporary, path)
    except FileExistsError:
        return _load_private(path)  # another endpoint created it meanwhile
    finally:
        temporary.unlink(missing_ok=True)
    return credentials


def _load_private(path: Path) -> StoreCredentials | None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(mode):
        raise PermissionError(f"store credentials {path} is not a regular file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(
            f"store credentials {path} can be read by other users (mode {stat.S_IMODE(mode):04o}); "
            "delete it and restart the endpoint to generate new ones"
        )
    return load_credentials(path)


def dsn_has_user(dsn: str) -> bool:
    """Whether an http(s) DSN names a user itself (``http://user:pw@host``, ``?username=``)."""
    parts = urlsplit(dsn)
    return bool(parts.username) or any(key in ("username", "user") for key, _ in _query_items(parts.query))


def credentials_for_dsn(dsn: str, credentials_file: Path | None = None) -> StoreCredentials | None:
    """The credentials a driftline client sends with ``dsn``: the endpoint's, for an http(s) DSN without a user.

    None for other DSNs (``chdb://``, or one naming its user: that one wins),
    and when there is no credentials file (a ClickHouse server that needs
    none, or an endpoint never started with this home: its 401 then says so).
    """
    if urlsplit(dsn).scheme not in ("http", "https") or dsn_has_user(dsn):
        return None
    return load_credentials(credentials_file or default_credentials_file())


def _query_items(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)
