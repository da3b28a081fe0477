"""The model registry: immutable versions, moving aliases, lineage and an audit trail.

Metadata lives in SQLite under ``DRIFTLINE_HOME/registry``; artifacts are
content-addressed files beside it. Every change writes one audit row and, in the
same transaction, its ModelEvent into the ``outbox`` table: once a change has
answered it is durable, and its event is published by an
:class:`driftline.registry.outbox.OutboxPublisher` (retrying until the bus
acknowledges), even if the bus is down now or the process dies before
publishing. After the commit, in-process listeners (telemetry, caches) are told
too; a listener that raises is logged and never undoes or fails the change. A
change that names a model, version or alias that does not exist raises before
any row is written.

A new version is accepted only if its artifact names trusted types alone (see
:mod:`driftline.registry.artifacts`) and loads, in a sandboxed child process,
into an object that can predict (see :mod:`driftline.registry.sandbox`).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftline.contract import FeatureContract
from driftline.registry.artifacts import ArtifactStore, check_trusted, dumps, loads_verified
from driftline.registry.sandbox import LoadProbe, shared_load_probe
from driftline.registry.trusted_types import validated_extra_types

log = logging.getLogger(__name__)

ALIASES = ("champion", "challenger", "shadow", "canary")

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""Model names: a letter or digit, then up to 127 letters, digits, ``_``, ``.`` or ``-``."""

MAX_VERSION = 2**63 - 1
"""The largest version SQLite can store; a larger number cannot name a version."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL, created_by TEXT NOT NULL,
    contract TEXT NOT NULL, recipe TEXT NOT NULL, params TEXT NOT NULL, metrics TEXT NOT NULL,
    lineage TEXT NOT NULL, profile TEXT NOT NULL,
    PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS aliases (
    model TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (model, alias));
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    model TEXT NOT NULL, version INTEGER, alias TEXT, previous_version INTEGER, reason TEXT NOT NULL,
    request_id TEXT);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, audit_id INTEGER NOT NULL, event TEXT NOT NULL,
    created_at INTEGER NOT NULL, published_at INTEGER);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (published_at, id);
"""

#: Columns added after a registry's first release: (table, column, type). A registry
#: created before one of them gets it at open time; its older rows hold NULL there.
_ADDED_COLUMNS = (
    ("audit", "request_id", "TEXT"),  # issue 11: the retrain request an audit row answers
)

_AUDIT_KEYS = ("id", "at", "actor", "action", "model", "version", "alias", "previous_version", "reason", "request_id")


class RegistryError(LookupError):
    """A model, version or alias that does not exist, or a move that is not allowed."""


class InvalidModelName(ValueError):
    """A model name outside :data:`MODEL_NAME_PATTERN`."""


class MonitoringRequired(ValueError):
    """A version without a reference profile would become champion: its drift would go unmonitored."""


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    sha256: str
    created_at: int
    created_by: str
    contract: FeatureContract
    recipe: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["contract"] = self.contract.to_dict()
        return data


@dataclass(frozen=True)
class LoadedModel:
    meta: ModelVersion
    estimator: Any


def _now_ms() -> int:
    return int(time.time() * 1000)


class Registry:
    """Register, alias, roll back and load model versions.

    Parameters
    ----------
    home
        Folder for ``registry.sqlite`` and ``artifacts/``.
    trusted_types
        Exact type names an artifact may build beyond driftline's allow-list
        (``Settings.trusted_types``). Names driftline never trusts raise ValueError.
    load_probe
        The sandboxed load check new versions must pass; by default one warm
        probe shared by every registry of this process, started at the first
        registration or by :meth:`warm_load_probe` (a registry that only reads
        never starts it).
    """

    def __init__(self, home: Path, *, trusted_types: Iterable[str] = (), load_probe: LoadProbe | None = None):
        self.trusted_types = validated_extra_types(trusted_types)
        self._load_probe = load_probe
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.artifacts = ArtifactStore(self.home / "artifacts")
        self._db = sqlite3.connect(self.home / "registry.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._lock = threading.RLock()
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    @property
    def load_probe(self) -> LoadProbe:
        if self._load_probe is None:
            self._load_probe = shared_load_probe()
        return self._load_probe

    def warm_load_probe(self) -> None:
        """Start the load check's process now, in the background, so the first registration does not wait for it."""
        self.load_probe  # noqa: B018 - the property starts it

    # -- writes ---------------------------------------------------------------------------

    def register(self, model: str, estimator: Any, contract: FeatureContract, **fields: Any) -> ModelVersion:
        """Serialize ``estimator`` with skops and register it (see :meth:`register_artifact`)."""
        return self.register_artifact(model, dumps(estimator), contract, **fields)

    def register_artifact(
        self,
        model: str,
        artifact: bytes,
        contract: FeatureContract,
        *,
        actor: str,
        reason: str = "",
        recipe: dict | None = None,
        params: dict | None = None,
        metrics: dict | None = None,
        lineage: dict | None = None,
        profile: dict | None = None,
        request_id: str | None = None,
    ) -> ModelVersion:
        """Store a skops artifact by its sha256 and record a new immutable version.

        ``request_id`` names the retrain request the version answers (the retrainer's);
        it is stored on the audit row and carried by the ModelEvent.

        Raises
        ------
        InvalidModelName
            ``model`` does not match :data:`MODEL_NAME_PATTERN`.
        UntrustedArtifact
            The artifact names a type that is not trusted, or (``UnloadableArtifact``)
            it does not load in the sandbox into an object with ``predict`` (and
            ``predict_proba`` for a classification contract).
        ProbeUnavailable
            The sandboxed load check could not run; nothing is registered.
        """
        if not re.fullmatch(MODEL_NAME_PATTERN, model):
            raise InvalidModelName(f"model names match {MODEL_NAME_PATTERN}, {model[:200]!r} does not")
        where = f"a new version of {model}"
        check_trusted(artifact, where, self.trusted_types)
        self.load_probe.check(artifact, contract.task, self.trusted_types, where)
        sha = self.artifacts.put(artifact)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            (latest,) = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM versions WHERE model=?", (model,)).fetchone()
            version = ModelVersion(
                model, latest + 1, sha, _now_ms(), actor, contract,
                recipe or {}, params or {}, metrics or {}, lineage or {}, profile or {},
            )
            self._db.execute(
                "INSERT INTO versions VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (model, version.version, sha, version.created_at, actor, json.dumps(contract.to_dict()),
                 json.dumps(version.recipe), json.dumps(version.params), json.dumps(version.metrics),
                 json.dumps(version.lineage), json.dumps(version.profile)),
            )
            event = self._audit(actor, "registered", model, version.version, None, None, reason or "registered",
                                request_id)
            model_event = self._enqueue(event, sha)
        self._announce(model_event)
        return version

    def set_alias(self, model: str, alias: str, version: int, *, actor: str, reason: str,
                  no_monitoring: bool = False, request_id: str | None = None) -> dict[str, Any]:
        """Point ``alias`` at ``version``; returns the audit event (with ``request_id``, the retrain request
        the move answers, when given).

        A version without a reference profile becomes champion only with
        ``no_monitoring=True`` (its data and concept drift would go unwatched);
        the audit reason then says so. Otherwise :class:`MonitoringRequired`.
        """
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}; use one of {ALIASES}")
        meta = self.get(model, version)
        if alias == "champion" and not meta.profile.get("features"):  # a profile of nothing monitors nothing
            if not no_monitoring:
                raise MonitoringRequired(
                    f"{model} v{version} has no reference profile, so as champion its data and concept drift would "
                    f"go unmonitored; register it with reference data (--reference FILE), or say --no-monitoring "
                    f"(no_monitoring: true over HTTP) to promote it anyway")
            reason = f"{reason} [no monitoring: no reference profile]".strip()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            previous = self._alias_version(model, alias)
            self._db.execute("INSERT OR REPLACE INTO aliases VALUES (?,?,?,?)", (model, alias, version, _now_ms()))
            event = self._audit(actor, "alias_moved", model, version, alias, previous, reason, request_id)
            model_event = self._enqueue(event, meta.sha256)
        self._announce(model_event)
        return event

    def rollback(self, model: str, *, actor: str, reason: str, alias: str = "champion") -> dict[str, Any]:
        """Move ``alias`` back to the version it pointed at before its last move."""
        with self._lock:
            row = self._db.execute(
                "SELECT version, previous_version FROM audit WHERE model=? AND alias=? "
                "AND action IN ('alias_moved', 'rolled_back') ORDER BY id DESC LIMIT 1",
                (model, alias),
            ).fetchone()
            if row is None or row[1] is None:
                raise RegistryError(f"{model}@{alias} has no previous version to roll back to")
            current, previous = row
            meta = self.get(model, previous)
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO aliases VALUES (?,?,?,?)", (model, alias, previous, _now_ms()))
                event = self._audit(actor, "rolled_back", model, previous, alias, current, reason)
                model_event = self._enqueue(event, meta.sha256)
        self._announce(model_event)
        return event

    def record(self, model: str, version: int, action: str, *, actor: str, reason: str,
               request_id: str | None = None) -> dict[str, Any]:
        """An audit row for a decision that moves nothing, e.g. a rejected challenger.

        ``request_id`` names the retrain request the decision answers (``rejected``,
        ``retrain_failed``, ``retrain_skipped`` by the retrainer).

        Raises :class:`RegistryError`, and writes nothing, if the version does not exist.
        """
        meta = self.get(model, version)  # versions are never deleted, so it still exists below
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            event = self._audit(actor, action, model, version, None, None, reason, request_id)
            model_event = self._enqueue(event, meta.sha256)
        self._announce(model_event)
        return event

    # -- reads ----------------------------------------------------------------------------

    def get(self, model: str, version: int) -> ModelVersion:
        if not 0 <= version <= MAX_VERSION:  # SQLite would raise OverflowError on a larger integer
            raise RegistryError(f"no version {version} of model {model!r}")
        row = self._db.execute("SELECT * FROM versions WHERE model=? AND version=?", (model, version)).fetchone()
        if row is None:
            raise RegistryError(f"no version {version} of model {model!r}")
        return _version_from_row(row)

    def resolve(self, model: str, alias: str) -> ModelVersion | None:
        version = self._alias_version(model, alias)
        return None if version is None else self.get(model, version)

    def load(self, model: str, alias: str = "champion", version: int | None = None) -> LoadedModel:
        """The estimator of ``version`` (or of ``alias``), after its sha256 is checked."""
        meta = self.get(model, version) if version is not None else self.resolve(model, alias)
        if meta is None:
            raise RegistryError(f"model {model!r} has no {alias!r} alias")
        data = self.artifacts.get(meta.sha256)
        estimator = loads_verified(data, meta.sha256, f"{model} v{meta.version}", self.trusted_types)
        return LoadedModel(meta, estimator)

    def models(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT model FROM versions ORDER BY model")]

    def versions(self, model: str) -> list[ModelVersion]:
        rows = self._db.execute("SELECT * FROM versions WHERE model=? ORDER BY version", (model,)).fetchall()
        return [_version_from_row(r) for r in rows]

    def aliases(self, model: str) -> dict[str, int]:
        return dict(self._db.execute("SELECT alias, version FROM aliases WHERE model=?", (model,)).fetchall())

    def audit_log(self, model: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(_AUDIT_KEYS)} FROM audit"
        rows = self._db.execute(sql + (" WHERE model=? ORDER BY id" if model else " ORDER BY id"), (model,) if model else ()).fetchall()
        return [dict(zip(_AUDIT_KEYS, r)) for r in rows]

    # -- outbox ---------------------------------------------------------------------------

    def pending_events(self, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
        """``(outbox id, ModelEvent)`` not yet published, oldest first (the order they were committed)."""
        with self._lock:  # never read inside another thread's open transaction on this connection
            rows = self._db.execute("SELECT id, event FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
                                    (limit,)).fetchall()
        return [(row_id, json.loads(event)) for row_id, event in rows]

    def mark_published(self, ids: Iterable[int]) -> None:
        """Record that the bus acknowledged the events of these outbox rows."""
        ids = list(ids)
        if not ids:
            return
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE outbox SET published_at=? WHERE id=? AND published_at IS NULL",
                                 [(_now_ms(), i) for i in ids])

    def close(self) -> None:
        self._db.close()

    # -- helpers --------------------------------------------------------------------------

    def _alias_version(self, model: str, alias: str) -> int | None:
        row = self._db.execute("SELECT version FROM aliases WHERE model=? AND alias=?", (model, alias)).fetchone()
        return None if row is None else row[0]

    def _migrate(self) -> None:
        """Add the columns a registry created by an older driftline lacks (idempotent, at every open)."""
        for table, column, kind in _ADDED_COLUMNS:
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                try:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:  # another process sharing the home added it first
                    if "duplicate column" not in str(exc):
                        raise

    def _audit(self, actor, action, model, version, alias, previous, reason, request_id=None) -> dict[str, Any]:
        at = _now_ms()
        cursor = self._db.execute(
            "INSERT INTO audit (at, actor, action, model, version, alias, previous_version, reason, request_id) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (at, actor, action, model, version, alias, previous, reason, request_id),
        )
        return {"id": cursor.lastrowid, "at": at, "actor": actor, "action": action, "model": model,
                "version": version, "alias": alias, "previous_version": previous, "reason": reason,
                "request_id": request_id}

    def _enqueue(self, event: dict[str, Any], sha256: str) -> dict[str, Any]:
        """Write the ModelEvent of audit ``event`` to the outbox, inside the caller's transaction."""
        model_event = {
            "model": event["model"], "version": event["version"], "action": event["action"],
            "alias": event["alias"], "previous_version": event["previous_version"], "sha256": sha256,
            "actor": event["actor"], "reason": event["reason"], "occurred_at": event["at"],
            "request_id": event["request_id"],
        }
        self._db.execute("INSERT INTO outbox (audit_id, event, created_at) VALUES (?,?,?)",
                         (event["id"], json.dumps(model_event), event["at"]))
        return model_event

    def _announce(self, model_event: dict[str, Any]) -> None:
        # The change is committed and its event is in the outbox: a listener that fails
        # (telemetry, a cache) must not turn a durable change into an error for the caller.
        for listener in self.listeners:
            try:
                listener(model_event)
            except Exception:  # noqa: BLE001
                log.exception("registry: a listener failed on %s %s v%s; the change stands and its event is in "
                              "the outbox", model_event["action"], model_event["model"], model_event["version"])


def _version_from_row(row: tuple) -> ModelVersion:
    model, version, sha, created_at, created_by, contract, recipe, params, metrics, lineage, profile = row
    return ModelVersion(
        model, version, sha, created_at, created_by, FeatureContract.from_dict(json.loads(contract)),
        json.loads(recipe), json.loads(params), json.loads(metrics), json.loads(lineage), json.loads(profile),
    )
