"""The ``driftline`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from driftline.config import Settings


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in columns]] + [["NULL" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    line = "+".join("-" * (w + 2) for w in widths)
    fmt = lambda r: " | ".join(v.ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(cells[0]), line] + [fmt(r) for r in cells[1:]] + [f"({len(rows)} rows)"])


def cmd_demo(args: argparse.Namespace) -> int:
    from driftline.entry.demo import EXAMPLE_QUERY, DemoPlan, reset_home, run_demo

    settings = Settings()
    if not args.keep:
        reset_home(settings.home)
    plan = DemoPlan(events=args.events, drift=not args.no_drift)
    summary = run_demo(settings, plan, progress=not args.json, report_path=None if args.no_report else Path(args.report))
    if args.json:
        print(json.dumps(summary))
        return 0
    print(_table(["metric", "value"], list(summary.items())))
    print(f'\nTry:  driftline sql "{EXAMPLE_QUERY}"')
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from driftline.store import Store

    store = Store(Settings().resolved_store_dsn)
    try:
        store.migrate()
        columns, rows = store.query(args.query)
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], default=str))
    else:
        print(_table(columns, rows))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from driftline.entry.model_cli import open_registry
    from driftline.entry.report import UnknownModel, write_report
    from driftline.store import Store

    settings = Settings()
    registry = open_registry(settings)
    try:
        models = list(registry.models())
        if args.model is not None and args.model not in models:
            print(f"driftline report: no model {args.model!r} in the registry; models: {', '.join(models) or 'none yet'}"
                  + ("" if models else " (register one with: driftline model register NAME --data FILE "
                                       "--target COLUMN --champion --reason '...')"), file=sys.stderr)
            return 2
        store = Store(settings.resolved_store_dsn)
        try:
            store.migrate()
            path = write_report(store, registry, Path(args.out), args.model)
        except UnknownModel as exc:
            print(f"driftline report: {exc}", file=sys.stderr)
            return 2
        finally:
            store.close()
    finally:
        registry.close()
    print(path if args.model else f"{path} ({len(models)} models: {', '.join(models)})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from driftline.entry.serve import serve

    return serve(args.service, args.host, args.port)


def cmd_store_serve(args: argparse.Namespace) -> int:
    from driftline.store.server.app import serve_from_args

    path = args.path or str((Settings().home / "store").resolve())
    serve_from_args(args, path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftline", description="Keep ML models honest in production.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole pipeline in one process on a synthetic scenario")
    demo.add_argument("--events", type=int, default=200_000)
    demo.add_argument("--no-drift", action="store_true", help="no covariate shift or concept change")
    demo.add_argument("--report", default="driftline-report.html", help="where to write the HTML report")
    demo.add_argument("--no-report", action="store_true")
    demo.add_argument("--keep", action="store_true",
                      help="replay onto the existing DRIFTLINE_HOME instead of starting from an empty one")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    demo.set_defaults(func=cmd_demo)

    sql = sub.add_parser("sql", help="run SQL on the store and print the result")
    sql.add_argument("query")
    sql.add_argument("--format", choices=["table", "json"], default="table")
    sql.set_defaults(func=cmd_sql)

    report = sub.add_parser("report", help="write the HTML report on a model, or on every model (drift, accuracy, "
                                           "coverage, timeline)")
    report.add_argument("--out", default="driftline-report.html", help="where to write the HTML report")
    report.add_argument("--model", default=None, help="the model to report on (default: every model, one page)")
    report.set_defaults(func=cmd_report)

    from driftline.entry.serve import SERVICES

    serve = sub.add_parser("serve", help="run one service as its own process (distributed mode)")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--host", default="127.0.0.1", help="for ingest and registry")
    serve.add_argument("--port", type=int, default=8000, help="for ingest and registry")
    serve.set_defaults(func=cmd_serve)

    store = sub.add_parser("store", help="the store").add_subparsers(dest="store_command", required=True)
    store_serve = store.add_parser("serve", help="serve the chDB store over ClickHouse's HTTP protocol")
    store_serve.add_argument("--path", help="chDB folder (default DRIFTLINE_HOME/store)")
    from driftline.store.server.app import build_parser as store_serve_options

    store_serve_options(store_serve)
    store_serve.set_defaults(func=cmd_store_serve)

    # Commands with a module of their own add their parsers themselves.
    from driftline.entry import model_cli, send, up

    for module in (up, model_cli, send):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line for a user; -v shows the traceback
        if args.verbose:
            raise
        print(f"driftline {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
