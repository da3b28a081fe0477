"""Content-addressed model artifacts: stored by sha256, loaded only after it matches.

scikit-learn models are serialized with skops, which refuses to build any type
that is not explicitly trusted; we trust scikit-learn, numpy and scipy types
only, so a planted artifact cannot run code on load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import skops.io as sio

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


class TamperedArtifact(RuntimeError):
    """The bytes on disk do not hash to the sha256 the registry recorded."""


class UntrustedArtifact(RuntimeError):
    """The artifact would build types outside scikit-learn, numpy and scipy."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dumps(model: Any) -> bytes:
    return sio.dumps(model)


def loads_verified(data: bytes, expected_sha256: str, where: str) -> Any:
    """Deserialize ``data`` only if its sha256 is ``expected_sha256`` and its types are trusted."""
    actual = sha256_hex(data)
    if actual != expected_sha256:
        raise TamperedArtifact(
            f"refusing to load {where}: sha256 is {actual}, the registry recorded {expected_sha256}"
        )
    return sio.loads(data, trusted=check_trusted(data, where))


def check_trusted(data: bytes, where: str) -> list[str]:
    """The non-default types ``data`` would build, if all are trusted; else raise."""
    try:
        types = sio.get_untrusted_types(data=data)
    except Exception as exc:  # not a skops file at all
        raise UntrustedArtifact(f"refusing {where}: not a skops artifact ({exc})") from exc
    untrusted = [t for t in types if not t.startswith(TRUSTED_PREFIXES)]
    if untrusted:
        raise UntrustedArtifact(f"refusing {where}: untrusted types {untrusted}")
    return types


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
