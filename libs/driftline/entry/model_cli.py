"""``driftline model ...``: register, list, show, promote, roll back, card.

Every command is written once against the registry's methods, which the local
registry (:class:`driftline.registry.Registry` under ``DRIFTLINE_HOME``) and
the registry API (:class:`driftline.registry.client.RegistryClient`, when
``DRIFTLINE_REGISTRY_URL`` is set, with ``DRIFTLINE_REGISTRY_TOKEN`` for
writes) share. Every write takes a ``--reason`` and is an audit row whose
actor is ``cli:<os user>``.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from driftline.config import Settings, running_up

MODEL_NAME_HELP = "a letter or digit, then up to 127 letters, digits, '_', '.' or '-'"


class UserError(Exception):
    """A mistake the user can fix; printed as one line, without a traceback."""


def actor() -> str:
    """Who the audit log names for a command typed at this terminal."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (e.g. a container user without a passwd entry)
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"cli:{user}"


def _registry_url(settings: Settings) -> str | None:
    """``DRIFTLINE_REGISTRY_URL``, else the API of a ``driftline up`` running on this home.

    A change made while ``up`` runs must go through its API: only the process that
    moves an alias publishes the model event its predictor hot-swaps on.
    """
    if settings.registry_url:
        return settings.registry_url
    up = running_up(settings.home)
    return up.get("url") if up else None


def open_registry(settings: Settings):
    """The registry API (``DRIFTLINE_REGISTRY_URL`` or a running ``up``), the local registry otherwise."""
    url = _registry_url(settings)
    if url:
        from driftline.registry.client import RegistryClient

        token = settings.registry_token.get_secret_value() if settings.registry_token else None
        read_token = settings.registry_read_token.get_secret_value() if settings.registry_read_token else None
        return RegistryClient(url, token, read_token=read_token, trusted_types=settings.trusted_types)
    from driftline.registry import Registry

    return Registry(settings.registry_home, trusted_types=settings.trusted_types)


def _where(settings: Settings) -> str:
    return _registry_url(settings) or str(settings.registry_home)


def _user_errors(command):
    """Turn the errors a user can fix into one clear line on stderr and exit status 2."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        import httpx

        from driftline.datasets import UnreadableTable
        from driftline.registry import (InvalidModelName, MonitoringRequired, RegistryError, TamperedArtifact,
                                        UntrustedArtifact)

        settings = Settings()
        try:
            return command(args, settings)
        except (UserError, UnreadableTable, ValueError, RegistryError, MonitoringRequired, InvalidModelName,
                UntrustedArtifact, TamperedArtifact, httpx.HTTPStatusError, httpx.TransportError) as exc:
            if getattr(args, "verbose", False):  # -v: the whole traceback, for a bug report
                raise
            message = str(exc)
            if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 401:
                message = (f"the registry at {_registry_url(settings)} refused the write (401): set "
                           f"DRIFTLINE_REGISTRY_TOKEN to its token")
            elif isinstance(exc, httpx.TransportError):
                message = f"cannot reach the registry at {_registry_url(settings)}: {exc}"
        print(f"driftline model {args.model_command}: {message}", file=sys.stderr)
        return 2

    return run


def _names(values: list[str] | None) -> list[str]:
    """``--numeric a,b --numeric c`` -> ["a", "b", "c"]."""
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def _check_name(model: str) -> None:
    from driftline.registry.core import MODEL_NAME_PATTERN

    if not re.fullmatch(MODEL_NAME_PATTERN, model):
        raise UserError(f"{model[:200]!r} is not a valid model name: use {MODEL_NAME_HELP} "
                        f"(pattern {MODEL_NAME_PATTERN})")


def _recipe(args: argparse.Namespace, task: str) -> dict[str, Any]:
    from driftline.models import ESTIMATORS, default_recipe

    if args.recipe:
        text = Path(args.recipe).read_text(encoding="utf-8") if Path(args.recipe).is_file() else args.recipe
        try:
            recipe = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"--recipe is neither a JSON file nor JSON ({exc}); "
                            'e.g. {"estimator": "random_forest", "params": {"n_estimators": 200}}') from exc
        if not isinstance(recipe, dict) or "estimator" not in recipe:
            raise UserError(f'--recipe must be a JSON object with "estimator" (one of {", ".join(sorted(ESTIMATORS))})')
        return recipe
    if args.estimator:
        if args.estimator not in ESTIMATORS:
            raise UserError(f"unknown --estimator {args.estimator!r}; choose from {', '.join(sorted(ESTIMATORS))}")
        return {"estimator": args.estimator, "params": {}}
    return json.loads(json.dumps(default_recipe(task)))


def _fmt_metrics(metrics: dict[str, Any]) -> str:
    shown = [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(metrics.items())
             if k not in ("evaluated_on",)]
    return ", ".join(shown) or "none"


def _profiled(profile: dict[str, Any]) -> list[str]:
    """The feature names a reference profile covers (the score included, as ``__score__``)."""
    return sorted(f["name"] for f in profile.get("features", []))


def _move_text(model: str, alias: str, event: dict[str, Any]) -> str:
    previous = event.get("previous_version")
    was = "none" if previous is None else f"v{previous}"
    return f"{model} {alias}: {was} -> v{event['version']} ({event['action'].replace('_', ' ')} by {event['actor']}: " \
           f"{event['reason']})"


# -- register -------------------------------------------------------------------------------------


@_user_errors
def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.contract_inference import ContractInference
    from driftline.datasets import read_table
    from driftline.registration import from_artifact, from_table

    _check_name(args.name)
    if bool(args.data) == bool(args.artifact):
        raise UserError("give either --data FILE (driftline trains the model) or --artifact FILE "
                        "(a scikit-learn pipeline trained elsewhere, saved with skops)")
    if args.data and not args.target:
        raise UserError("--data needs --target COLUMN: the column the model predicts")
    if args.artifact and (args.recipe or args.estimator):
        raise UserError("--recipe and --estimator are for --data; an --artifact is already trained")
    inference = ContractInference(
        target=args.target, numeric=_names(args.numeric), categorical=_names(args.categorical),
        ignore=_names(args.ignore), id_column=args.id, time_column=args.time, task=args.task)
    reference = read_table(args.reference) if args.reference else None

    if args.data:
        frame, source = read_table(args.data)
        prepared = from_table(frame, source, inference, _recipe(args, inference.task), reference=reference,
                              holdout_fraction=args.holdout, seed=args.seed)
        artifact = None
    else:
        from driftline.registry.artifacts import loads_verified, sha256_hex

        path = Path(args.artifact)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        artifact = path.read_bytes()
        digest = sha256_hex(artifact)
        try:  # refuses untrusted types before building anything
            estimator = loads_verified(artifact, digest, path.name, settings.trusted_types)
        except (ValueError, OSError, KeyError) as exc:
            raise UserError(f"{path.name} is not a skops file driftline can read ({exc}); save the pipeline with "
                            "skops.io.dump(pipeline, 'model.skops')") from exc
        prepared = from_artifact(estimator, path.name, digest, inference, reference)

    if args.champion and not prepared.profile and not args.no_monitoring:
        raise UserError(f"{args.name} would have no reference profile (give --reference FILE), so as champion its "
                        "drift would go unmonitored; say --no-monitoring to make it champion anyway. "
                        "Nothing was registered.")

    registry = open_registry(settings)
    try:
        fields = dict(recipe=prepared.recipe, params=prepared.params, metrics=prepared.metrics,
                      lineage=prepared.lineage, profile=prepared.profile)
        if artifact is None:
            version = registry.register(args.name, prepared.estimator, prepared.contract, actor=actor(),
                                        reason=args.reason, **fields)
        else:
            version = registry.register_artifact(args.name, artifact, prepared.contract, actor=actor(),
                                                 reason=args.reason, **fields)
        event = None
        if args.champion:
            event = registry.set_alias(args.name, "champion", version.version, actor=actor(), reason=args.reason,
                                       no_monitoring=args.no_monitoring)
    finally:
        registry.close()

    if args.json:
        print(json.dumps({"model": args.name, "version": version.version, "sha256": version.sha256,
                          "contract": version.contract.to_dict(), "metrics": version.metrics,
                          "lineage": version.lineage, "profiled": _profiled(version.profile),
                          "champion": event is not None, "notes": prepared.notes}, default=str))
        return 0
    contract, lineage = version.contract, version.lineage
    print(f"registered {args.name} v{version.version} in {_where(settings)}  (sha256 {version.sha256[:16]}…)")
    print(f"  features: numeric {', '.join(contract.numeric) or '-'}; categorical {', '.join(contract.categorical) or '-'}")
    if lineage.get("not_features"):
        print("  not features: " + ", ".join(f"{c} ({r})" for c, r in lineage["not_features"].items()))
    if contract.task == "classification":
        print(f"  classes: {', '.join(contract.classes)}")
    if "data" in lineage:
        data = lineage["data"]
        print(f"  trained on {lineage['train_rows']:,} of {data['rows']:,} rows of {data['file']} "
              f"(sha256 {data['sha256'][:16]}…), recipe {json.dumps(version.recipe)}")
    else:
        print(f"  artifact {lineage['artifact']['file']} ({lineage['artifact']['type']}), trained outside driftline; "
              f"retrained by refitting a clone of it")
    if version.profile:
        print(f"  reference profile: {len(_profiled(version.profile)) - 1} features and the score, from "
              f"{lineage['profile_rows']:,} rows the model did not train on")
    else:
        print("  reference profile: none (drift is not monitored)")
    print(f"  metrics ({version.metrics.get('evaluated_on', 'none')}): {_fmt_metrics(version.metrics)}")
    for note in prepared.notes:
        print(f"  note: {note}")
    if event is not None:
        print(_move_text(args.name, "champion", event))
    return 0


# -- reads ----------------------------------------------------------------------------------------


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _holders(aliases: dict[str, int], version: int) -> str:
    return ", ".join(sorted(a for a, v in aliases.items() if v == version))


@_user_errors
def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.entry.cli import _table

    registry = open_registry(settings)
    try:
        rows = []
        for model in registry.models():
            versions, aliases = registry.versions(model), registry.aliases(model)
            rows.append({"model": model, "versions": len(versions), "latest": versions[-1].version if versions else None,
                         "aliases": aliases})
    finally:
        registry.close()
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print(f"no models in {_where(settings)}; register one with: driftline model register NAME --data FILE "
              "--target COLUMN --champion --reason '...'")
    else:
        print(_table(["model", "versions", "latest", "champion", "other aliases"],
                     [[r["model"], r["versions"], f"v{r['latest']}",
                       f"v{r['aliases']['champion']}" if "champion" in r["aliases"] else "-",
                       ", ".join(f"{a} v{v}" for a, v in sorted(r["aliases"].items()) if a != "champion") or "-"]
                      for r in rows]))
    return 0


@_user_errors
def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.entry.cli import _table
    from driftline.registry import RegistryError

    registry = open_registry(settings)
    try:
        models = registry.models()
        if args.name not in models:
            raise RegistryError(f"no model {args.name!r}; models: {', '.join(models) or 'none yet'}")
        aliases = registry.aliases(args.name)
        if args.version is None:
            versions = registry.versions(args.name)
            if args.json:
                print(json.dumps({"model": args.name, "aliases": aliases,
                                  "versions": [_summary(v, aliases) for v in versions]}, default=str))
                return 0
            print(f"{args.name}: {len(versions)} versions; "
                  + (", ".join(f"{a} v{v}" for a, v in sorted(aliases.items())) or "no aliases"))
            print(_table(["version", "aliases", "created (UTC)", "by", "metrics", "profile", "origin"],
                         [[f"v{v.version}", _holders(aliases, v.version) or "-", _utc(v.created_at), v.created_by,
                           _fmt_metrics(v.metrics), "yes" if v.profile else "none",
                           v.lineage.get("origin", "-")] for v in versions]))
            return 0
        meta = registry.get(args.name, args.version)
    finally:
        registry.close()
    if args.json:
        print(json.dumps({**meta.to_dict(), "aliases": [a for a, v in sorted(aliases.items()) if v == meta.version]},
                         default=str))
        return 0
    print(f"{args.name} v{meta.version}  (aliases: {_holders(aliases, meta.version) or 'none'})")
    print(f"  sha256 {meta.sha256}; created {_utc(meta.created_at)} UTC by {meta.created_by}")
    print(f"  task {meta.contract.task}; classes {', '.join(meta.contract.classes) or '-'}")
    print(f"  numeric: {', '.join(meta.contract.numeric) or '-'}")
    print(f"  categorical: {', '.join(meta.contract.categorical) or '-'}")
    if meta.contract.optional:
        print(f"  may be missing: {', '.join(meta.contract.optional)}")
    print(f"  recipe: {json.dumps(meta.recipe, sort_keys=True)}")
    print(f"  metrics: {_fmt_metrics(meta.metrics)}")
    profiled = ", ".join(_profiled(meta.profile)) if meta.profile else "none (drift not monitored)"
    print(f"  reference profile: {profiled}")
    print(f"  lineage: {json.dumps(meta.lineage, sort_keys=True)}")
    return 0


def _summary(version, aliases: dict[str, int]) -> dict[str, Any]:
    return {"version": version.version, "aliases": [a for a, v in sorted(aliases.items()) if v == version.version],
            "created_at": version.created_at, "created_by": version.created_by, "metrics": version.metrics,
            "monitored": bool(version.profile), "origin": version.lineage.get("origin")}


@_user_errors
def cmd_card(args: argparse.Namespace, settings: Settings) -> int:
    from driftline.registry.card import model_card

    registry = open_registry(settings)
    try:
        card = model_card(registry.get(args.name, args.version), registry.aliases(args.name),
                          registry.audit_log(args.name))
    finally:
        registry.close()
    if args.out:
        Path(args.out).write_text(card, encoding="utf-8")
        print(f"wrote the card of {args.name} v{args.version} to {args.out}")
    else:
        print(card, end="")
    return 0


# -- alias moves ----------------------------------------------------------------------------------


@_user_errors
def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    registry = open_registry(settings)
    try:
        event = registry.set_alias(args.name, args.alias, args.version, actor=actor(), reason=args.reason,
                                   no_monitoring=args.no_monitoring)
    finally:
        registry.close()
    print(_move_text(args.name, args.alias, event))
    return 0


@_user_errors
def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    registry = open_registry(settings)
    try:
        event = registry.rollback(args.name, actor=actor(), reason=args.reason, alias=args.alias)
    finally:
        registry.close()
    print(_move_text(args.name, args.alias, event))
    return 0


# -- parsers --------------------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``driftline model ...`` to the ``driftline`` parser.

    Nothing here imports the registry (skops, scikit-learn: seconds): every
    ``driftline`` command builds this parser. The registry checks ``--alias``.
    """
    model = sub.add_parser("model", help="register, list, show, promote, roll back models; write model cards",
                           description="Model versions in the registry (DRIFTLINE_REGISTRY_URL, or the local one "
                                       "under DRIFTLINE_HOME). Every write needs --reason and is audited.")
    commands = model.add_subparsers(dest="model_command", required=True)

    def reason(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--reason", required=True, help="why: recorded in the audit log")

    register = commands.add_parser(
        "register", help="train a model from a table (or take a skops pipeline) and register it",
        description="Train a model from --data (CSV, Parquet or JSON lines) or take a pipeline trained elsewhere "
                    "(--artifact model.skops); infer its feature contract; profile it on data it did not train on "
                    "(a held-out part of --data, or --reference); register it with its lineage and metrics.")
    register.add_argument("name", help=f"model name: {MODEL_NAME_HELP}")
    source = register.add_argument_group("what to register")
    source.add_argument("--data", metavar="FILE", help="training table: .csv, .parquet or .jsonl")
    source.add_argument("--artifact", metavar="FILE", help="a fitted scikit-learn pipeline saved with skops")
    source.add_argument("--reference", metavar="FILE",
                        help="rows the model did not train on, for the reference profile and the metrics "
                             "(default: a held-out part of --data)")
    source.add_argument("--target", metavar="COLUMN", help="the column the model predicts")
    training = register.add_argument_group("training (with --data)")
    training.add_argument("--recipe", metavar="JSON", help='JSON or a JSON file: {"estimator": ..., "params": {...}}')
    training.add_argument("--estimator", help="an estimator name with default parameters (default logistic_regression)")
    training.add_argument("--holdout", type=float, default=0.25, help="share of --data held out (default 0.25)")
    training.add_argument("--seed", type=int, default=0, help="of the holdout split")
    columns = register.add_argument_group("columns (default: numbers are numeric features, anything else categorical)")
    columns.add_argument("--numeric", action="append", metavar="A,B", help="force these columns numeric")
    columns.add_argument("--categorical", action="append", metavar="A,B", help="force these columns categorical")
    columns.add_argument("--ignore", action="append", metavar="A,B", help="columns that are not features")
    columns.add_argument("--id", metavar="COLUMN", help="the event id column (default event_id or id, if present)")
    columns.add_argument("--time", metavar="COLUMN", help="the event time column (default event_time or timestamp)")
    columns.add_argument("--task", choices=("classification", "regression"), default="classification")
    register.add_argument("--champion", action="store_true", help="make the new version the champion")
    register.add_argument("--no-monitoring", action="store_true",
                          help="allow a champion without a reference profile (its drift goes unmonitored)")
    reason(register)
    register.add_argument("--json", action="store_true", help="print the result as one JSON object")
    register.set_defaults(func=cmd_register)

    listing = commands.add_parser("list", help="models, their versions and aliases")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    show = commands.add_parser("show", help="a model's versions, or one version's contract, metrics and lineage")
    show.add_argument("name")
    show.add_argument("version", nargs="?", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    promote = commands.add_parser("promote", help="point an alias (default champion) at a version")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    promote.add_argument("--alias", default="champion", help="champion (default), challenger, shadow or canary")
    promote.add_argument("--no-monitoring", action="store_true",
                         help="allow a champion without a reference profile (its drift goes unmonitored)")
    reason(promote)
    promote.set_defaults(func=cmd_promote)

    rollback = commands.add_parser("rollback", help="move an alias (default champion) back to its previous version")
    rollback.add_argument("name")
    rollback.add_argument("--alias", default="champion", help="champion (default), challenger, shadow or canary")
    reason(rollback)
    rollback.set_defaults(func=cmd_rollback)

    card = commands.add_parser("card", help="the model card (markdown) of a version")
    card.add_argument("name")
    card.add_argument("version", type=int)
    card.add_argument("--out", metavar="FILE", help="write it to FILE instead of printing it")
    card.set_defaults(func=cmd_card)
