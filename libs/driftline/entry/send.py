"""``driftline send events|labels FILE``: post a CSV, JSON-lines or Parquet file to ingest in batches.

Columns become the event format by :mod:`driftline.columns`, typed by the
champion's feature contract (from ``DRIFTLINE_REGISTRY_URL``, the registry API
of the ``--url`` server, or the local registry); :class:`driftline.client.Client`
posts them, retrying what a full bus refused. It ends with the counts, the first
reasons for rejections, and the SQL that lists the rejects in ``dead_letters``.

Exit status: 0 every row accepted (or already accepted); 1 some row rejected or
unreadable, or ingest could not be used.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from driftline.client import Client, IngestError, SendResult
from driftline.columns import EventColumns, LabelColumns
from driftline.config import Settings
from driftline.contract import FeatureContract
from driftline.rowfile import BadRow, Row, RowFile, RowFileError
from driftline.timeutil import now_ms

#: How many rejection reasons the summary shows.
REASONS_SHOWN = 5


class ProgressBar:
    """A one-line progress bar on ``stream``: redrawn in place on a terminal, a line per tenth otherwise."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, width: int = 30):
        self.total, self.stream, self.width = max(total, 1), stream, width
        self.interactive = stream.isatty()
        self.started = time.monotonic()
        self._last_drawn = 0.0
        self._last_tenth = -1

    def update(self, done: int, result: SendResult, final: bool = False) -> None:
        fraction = min(done / self.total, 1.0)
        now = time.monotonic()
        if self.interactive:
            if not final and now - self._last_drawn < 0.1:
                return
        else:
            tenth = int(fraction * 10)
            if tenth == self._last_tenth and not final:
                return
            self._last_tenth = tenth
        self._last_drawn = now
        filled = int(fraction * self.width)
        rate = result.sent / max(now - self.started, 1e-6)
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%}  {result.sent:,} rows  "
                f"accepted {result.accepted + result.already_accepted:,}  rejected {result.rejected:,}  "
                f"{rate:,.0f} rows/s")
        self.stream.write(("\r" + line + ("\n" if final else "")) if self.interactive else line + "\n")
        self.stream.flush()


class ContractSource:
    """The champion's contract of a model, looked up once: the registry service, the ``--url`` server's
    registry API (``driftline up`` serves one), then the local registry under DRIFTLINE_HOME."""

    def __init__(self, settings: Settings, url: str, notice: TextIO = sys.stderr):
        self.settings, self.url, self.notice = settings, url, notice
        self._found: dict[str, FeatureContract | None] = {}

    def __call__(self, model: str) -> FeatureContract | None:
        if model not in self._found:
            self._found[model] = self._look_up(model)
        return self._found[model]

    def _look_up(self, model: str) -> FeatureContract | None:
        from driftline.registry.client import RegistryClient

        token = self.settings.registry_token.get_secret_value() if self.settings.registry_token else None
        for url in [u for u in (self.settings.registry_url, self.url) if u]:
            client = RegistryClient(url, token=token, timeout_s=10)
            try:
                champion = client.resolve(model, "champion")
            except Exception:  # unreachable, or not a registry: try the next place
                champion = None
            finally:
                client.close()
            if champion is not None:
                return champion.contract
        local = self.settings.registry_home / "registry.sqlite"
        if local.is_file():
            from driftline.registry import Registry

            registry = Registry(self.settings.registry_home)
            try:
                champion = registry.resolve(model, "champion")
            finally:
                registry.close()
            if champion is not None:
                return champion.contract
        print(f"note: no champion of model {model!r} found (registry, {self.url}, local registry): features are "
              "typed by their values (numbers numeric, text categorical); ingest will say what it expects",
              file=self.notice)
        return None


def _rows(source: RowFile, lines: list[int], unreadable: list[BadRow], mapping) -> Iterator[dict[str, Any]]:
    """The records to send; remembers each one's line and sets unreadable lines aside."""
    for row in source.rows():
        if isinstance(row, BadRow):
            unreadable.append(row)
            continue
        lines.append(row.line)
        yield mapping.record(row.values)


def _first(source: RowFile) -> Row | None:
    return next((row for row in source.rows() if isinstance(row, Row)), None)


def _checked_columns(args: argparse.Namespace, source: RowFile) -> tuple[Row, list[str]]:
    """The first row and the columns of a file that has rows and says which model they are for."""
    first = _first(source)
    if first is None:
        raise RowFileError(f"{source.path.name} has no rows")
    if args.model is None and "model" not in source.columns:
        raise RowFileError("name the model with --model (the file has no 'model' column)")
    return first, source.columns


def _event_mapping(args: argparse.Namespace, source: RowFile, contracts: ContractSource) -> EventColumns:
    first, columns = _checked_columns(args, source)
    if args.id_column not in columns:
        raise RowFileError(f"{source.path.name} has no column {args.id_column!r} for the event id; name it with "
                           f"--id-column (columns: {', '.join(columns)})")
    time_column = args.time_column or "event_time"
    if time_column not in columns:
        if args.time_column:
            raise RowFileError(f"{source.path.name} has no column {time_column!r} (columns: {', '.join(columns)})")
        print(f"note: no {time_column!r} column: every event is stamped with the time it is sent", file=sys.stderr)
        time_column = None
    entity_column = args.entity_column or "entity_id"
    if entity_column not in columns:
        if args.entity_column:
            raise RowFileError(f"{source.path.name} has no column {entity_column!r} (columns: {', '.join(columns)})")
        entity_column = None
    ignore = set(args.ignore or [])
    if args.label_column:  # a file with features and outcome together: the label is not a feature
        ignore.add(args.label_column)
    mapping = EventColumns(args.model, contracts, args.id_column, time_column, entity_column,
                           now=now_ms if time_column is None else None, ignore=ignore)
    model = args.model or first.values.get("model")
    if isinstance(model, str):
        extra, missing = mapping.not_in_contract(columns, model)
        if extra:
            print(f"note: columns that are no feature of {model!r} are not sent: {', '.join(extra)}", file=sys.stderr)
        if missing:
            print(f"warning: no column for required features of {model!r}: {', '.join(missing)} "
                  "(ingest will reject those events)", file=sys.stderr)
    return mapping


def _label_mapping(args: argparse.Namespace, source: RowFile) -> LabelColumns:
    _, columns = _checked_columns(args, source)
    label_column = args.label_column or "label"
    # A regression's labels may carry only the value (--value-column): then no label column is needed.
    needed = [(args.id_column, "--id-column")]
    if args.label_column or args.value_column is None:
        needed.append((label_column, "--label-column"))
    for name, flag in needed:
        if name not in columns:
            raise RowFileError(f"{source.path.name} has no column {name!r}; name it with {flag} "
                               f"(columns: {', '.join(columns)})")
    time_column = args.time_column or ("label_time" if "label_time" in columns else None)
    if time_column is not None and time_column not in columns:
        raise RowFileError(f"{source.path.name} has no column {time_column!r} (columns: {', '.join(columns)})")
    value_column = args.value_column
    if value_column is not None and value_column not in columns:
        raise RowFileError(f"{source.path.name} has no column {value_column!r} (columns: {', '.join(columns)})")
    return LabelColumns(args.model, args.id_column, label_column, value_column, time_column)


def dead_letters_query(route: str, since: datetime) -> str:
    """The SQL that lists the rejects of a send that began at ``since`` (ingest's clock)."""
    start = (since.astimezone(timezone.utc) - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S")
    return (f"SELECT received_at, error, payload FROM dead_letters FINAL WHERE service = 'ingest' "
            f"AND topic = '{route}' AND received_at >= '{start}' ORDER BY received_at")


def summary(kind: str, source: RowFile, url: str, result: SendResult, lines: list[int],
            unreadable: list[BadRow], started: datetime) -> str:
    """What a user reads at the end: counts, where the rejects went, the first reasons."""
    out = [f"{kind}: {result.sent:,} rows of {source.path.name} sent to {url}",
           f"accepted {result.accepted:,}   already accepted {result.already_accepted:,} (retries, not published "
           f"again)   rejected {result.rejected:,}   unreadable lines {len(unreadable):,} (not sent)"]
    # A body ingest refused whole for its size (413, "(body)") was not read, so not stored; every other
    # rejection, a record too large once encoded included, is in dead_letters.
    stored = [r for r in result.rejections if not (r.status == 413 and r.errors[:1] and
                                                   r.errors[0].get("field") == "(body)")]
    if stored:
        route = "/v1/events" if kind == "events" else "/v1/labels"
        out.append("rejected rows are kept by ingest in dead_letters, with the bytes sent; list them with:")
        out.append(f'  driftline sql "{dead_letters_query(route, result.server_started_at or started)}"')
    if len(stored) < result.rejected:
        out.append(f"{result.rejected - len(stored)} rows too large for one request were not stored (413)")
    if result.rejections:
        out.append("first reasons:")
        for r in result.rejections[:REASONS_SHOWN]:
            event = f", event {r.event_id}" if r.event_id else ""
            out.append(f"  line {lines[r.index]}{event}: {r.reason}")
    for bad in unreadable[:REASONS_SHOWN]:
        out.append(f"  line {bad.line} (not sent): {bad.reason}")
    return "\n".join(out)


def cmd_send(args: argparse.Namespace) -> int:
    settings = Settings()
    url = args.url or settings.url
    token = args.token or (settings.ingest_token.get_secret_value() if settings.ingest_token else None)
    try:
        source = RowFile(args.file, args.format)
        if args.kind == "events":
            mapping = _event_mapping(args, source, ContractSource(settings, url))
        else:
            mapping = _label_mapping(args, source)
    except RowFileError as exc:
        print(f"driftline send: {exc}", file=sys.stderr)
        return 1
    lines: list[int] = []
    unreadable: list[BadRow] = []
    bar = ProgressBar(source.total) if not args.quiet else None
    started = datetime.now(timezone.utc)

    def progress(result: SendResult) -> None:
        if bar is not None:
            bar.update(source.done, result)

    records = _rows(source, lines, unreadable, mapping)
    with Client(url, token, retry_for_s=args.retry_for) as client:
        send = client.send_events if args.kind == "events" else client.send_labels
        try:
            result = send(records, batch_size=args.batch_size, progress=progress)
        except IngestError as exc:
            print(f"\ndriftline send: {exc} (rows before line {lines[-1] if lines else 1} may have been accepted; "
                  "sending the file again is harmless for events)", file=sys.stderr)
            return 1
    if bar is not None:
        bar.update(source.total, result, final=True)
    print(summary(args.kind, source, url, result, lines, unreadable, started))
    return 0 if result.ok and not unreadable else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``driftline send events|labels FILE``."""
    send = sub.add_parser(
        "send", help="post a CSV / JSON-lines / Parquet file of events or labels to ingest",
        description="Post a file to ingest in batches. Every column that is not the model, id, entity, time or "
                    "label column is a feature, typed by the model's contract; empty cells are missing values; "
                    "times are ISO-8601 or epoch milliseconds. Exit status 0 when every row was accepted.")
    send.add_argument("kind", choices=["events", "labels"])
    send.add_argument("file")
    send.add_argument("--url", help="ingest's URL (default DRIFTLINE_URL, else http://127.0.0.1:8000)")
    send.add_argument("--token", help="ingest's bearer token (default DRIFTLINE_INGEST_TOKEN)")
    send.add_argument("--model", help="the model every row is for (default: each row's 'model' column)")
    send.add_argument("--id-column", default="event_id", help="the event id (default event_id)")
    send.add_argument("--time-column", help="events: event time (default event_time, else the send time); "
                                            "labels: label time (default label_time if present, else arrival)")
    send.add_argument("--entity-column", help="events: the entity, the Kafka key (default entity_id, else the id)")
    send.add_argument("--label-column", help="labels: the true class (default label); events: a column to leave out")
    send.add_argument("--value-column", help="labels: the true value of a regression target")
    send.add_argument("--ignore", action="append", metavar="COLUMN", help="events: a column not to send (repeatable)")
    send.add_argument("--format", choices=["csv", "tsv", "jsonl", "parquet"], help="default: from the file's extension")
    send.add_argument("--batch-size", type=int, default=1000, help="rows per request (default 1000)")
    send.add_argument("--retry-for", type=float, default=120.0, metavar="SECONDS",
                      help="how long a batch is retried while the bus is full (default 120)")
    send.add_argument("--quiet", action="store_true", help="no progress bar")
    send.set_defaults(func=cmd_send)
