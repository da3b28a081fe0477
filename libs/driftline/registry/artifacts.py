"""Content-addressed model artifacts: stored by sha256, loaded only after it matches.

scikit-learn models are serialized with skops. skops builds whatever type a
file names if the caller trusts that name, so driftline decides what it trusts
by exact name: the names in :mod:`driftline.registry.trusted_types` (scikit-learn
estimators and their fitted internals, numpy arrays and scalars, scipy sparse
matrices, plain containers) plus the exact names a user configured. Every
``module.Class`` an artifact's schema mentions is checked, including the ones
skops would trust by default, and names that run code (``builtins.eval``,
``os.system``, ``operator.methodcaller``, ``numpy.load`` ...) are refused even
when configured. An artifact that names anything else is refused before a
single object is built.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import skops.io as sio

from driftline.registry.trusted_types import TRUSTED_TYPES, never_trusted

# A skops file is a zip; its declared sizes bound how much decompressing it may
# allocate, so a small upload cannot expand into gigabytes in the registry.
MAX_UNCOMPRESSED_BYTES = 1 << 30


class TamperedArtifact(RuntimeError):
    """The bytes on disk do not hash to the sha256 the registry recorded."""


class UntrustedArtifact(RuntimeError):
    """The artifact is refused: it names types driftline does not trust, or it is not a usable model."""


class UnloadableArtifact(UntrustedArtifact):
    """Every type is trusted, but the artifact does not load into a model driftline can serve."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dumps(model: Any) -> bytes:
    return sio.dumps(model)


def loads_verified(data: bytes, expected_sha256: str, where: str,
                   extra_trusted_types: Collection[str] = frozenset()) -> Any:
    """Deserialize ``data`` only if its sha256 is ``expected_sha256`` and every type it names is trusted.

    Parameters
    ----------
    data
        The skops artifact.
    expected_sha256
        The digest the registry recorded for this version.
    where
        What is being loaded, for error messages (e.g. ``"churn v3"``).
    extra_trusted_types
        Exact type names trusted beyond :data:`~driftline.registry.trusted_types.TRUSTED_TYPES`.

    Raises
    ------
    TamperedArtifact
        The digest differs.
    UntrustedArtifact
        The artifact names an untrusted type, or (:class:`UnloadableArtifact`) fails to load.
    """
    actual = sha256_hex(data)
    if actual != expected_sha256:
        raise TamperedArtifact(
            f"refusing to load {where}: sha256 is {actual}, the registry recorded {expected_sha256}"
        )
    trusted = check_trusted(data, where, extra_trusted_types)
    try:
        return sio.loads(data, trusted=trusted)
    except Exception as exc:  # e.g. a pickled object array, which numpy refuses with allow_pickle=False
        raise UnloadableArtifact(f"refusing {where}: it does not load ({type(exc).__name__}: {exc})") from exc


def check_trusted(data: bytes, where: str, extra_trusted_types: Collection[str] = frozenset()) -> list[str]:
    """Every type name ``data`` would build, if all are trusted; else raise :class:`UntrustedArtifact`.

    The names are those skops reports as untrusted together with every
    ``module.Class`` in the artifact's schema, so a type skops trusts by
    default still has to be on driftline's list.
    """
    try:
        names = named_types(data) | set(sio.get_untrusted_types(data=data))
    except UntrustedArtifact:
        raise
    except Exception as exc:  # not a skops file at all, or a malformed one
        raise UntrustedArtifact(f"refusing {where}: not a skops artifact ({type(exc).__name__}: {exc})") from exc
    never = sorted(n for n in names if never_trusted(n))
    unknown = sorted(n for n in names if n not in TRUSTED_TYPES and n not in extra_trusted_types and n not in never)
    if never or unknown:
        parts = []
        if never:
            parts.append(f"types that can run code, which driftline never trusts: {never}")
        if unknown:
            parts.append(f"types that are not on driftline's allow-list: {unknown} "
                         "(a type of your own can be added to DRIFTLINE_TRUSTED_TYPES by its exact name)")
        raise UntrustedArtifact(f"refusing {where}: untrusted types; it names " + "; and ".join(parts))
    return sorted(names)


def named_types(data: bytes) -> set[str]:
    """Every ``module.Class`` named by a node of the artifact's ``schema.json``."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        declared = sum(info.file_size for info in archive.infolist())
        if declared > MAX_UNCOMPRESSED_BYTES:
            raise UntrustedArtifact(
                f"refusing an artifact that unpacks to {declared} bytes (at most {MAX_UNCOMPRESSED_BYTES})")
        schema = json.loads(archive.read("schema.json"))
    names: set[str] = set()
    pending: list[Any] = [schema]
    while pending:  # iterative: a deeply nested schema must not exhaust the stack here
        node = pending.pop()
        if isinstance(node, dict):
            if "__loader__" in node:
                names.add(f"{node.get('__module__')}.{node.get('__class__')}")
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return names


class ArtifactStore:
    """Files named by their sha256 under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.skops"

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        path = self.path(digest)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return digest

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()
