"""The pieces of ``driftline send`` without a server: columns to records, reading files, the client's retries."""

from __future__ import annotations

import json

import httpx
import pytest

from driftline.client import Client, Unauthorized
from driftline.columns import EventColumns, LabelColumns
from driftline.contract import FeatureContract
from driftline.rowfile import BadRow, Row, RowFile, RowFileError

CONTRACT = FeatureContract(numeric=("pressure", "flow"), categorical=("site", "zone"))


def contract_of(model: str) -> FeatureContract | None:
    return CONTRACT if model == "pumps" else None


def test_columns_are_typed_by_the_contract_and_missing_values_are_absent():
    mapping = EventColumns("pumps", contract_of, id_column="id", time_column="at", entity_column="pump")
    event = mapping.record({"id": "7", "at": "1700000000000", "pump": "p1", "pressure": "2.5", "flow": "",
                            "site": "12", "zone": 3.0, "comment": "noisy"})
    assert event == {"model": "pumps", "event_id": "7", "entity_id": "p1", "event_time": 1700000000000,
                     "numeric_features": {"pressure": 2.5}, "categorical_features": {"site": "12", "zone": "3"}}
    # Text where a number belongs is passed on as it is: ingest rejects that event and keeps it.
    assert mapping.record({"id": "8", "at": "2026-01-01T00:00:00Z", "pressure": "n/a"})["numeric_features"] == {
        "pressure": "n/a"}
    assert mapping.not_in_contract(["id", "at", "pump", "pressure", "site", "comment"], "pumps") == (
        ["comment"], ["flow", "zone"])


def test_without_a_contract_numbers_are_numeric_and_text_categorical():
    mapping = EventColumns(None, contract_of, entity_column=None)
    event = mapping.record({"model": "other", "event_id": 5, "event_time": 1.7e12, "a": "1e3", "b": "x",
                            "c": float("nan"), "d": None, "e": 4})
    assert event == {"model": "other", "event_id": "5", "entity_id": "5", "event_time": 1_700_000_000_000,
                     "numeric_features": {"a": 1000.0, "e": 4.0}, "categorical_features": {"b": "x"}}


def test_a_file_without_time_column_is_stamped_with_the_send_time():
    mapping = EventColumns("pumps", contract_of, time_column=None, now=lambda: 42)
    assert mapping.record({"event_id": "a"})["event_time"] == 42


def test_label_columns():
    mapping = LabelColumns("pumps", id_column="id", label_column="failed", value_column="loss", time_column="t")
    assert mapping.record({"id": "e1", "failed": "1", "loss": "3.5", "t": "1700000000000"}) == {
        "model": "pumps", "event_id": "e1", "label": "1", "value": 3.5, "label_time": 1700000000000}
    assert mapping.record({"id": "e2", "failed": "", "loss": ""}) == {"model": "pumps", "event_id": "e2"}
    assert mapping.record({"id": "e3", "failed": 1.0})["label"] == "1"


def test_files_are_read_row_by_row_and_bad_lines_are_set_aside(tmp_path):
    csv_path = tmp_path / "x.csv"
    csv_path.write_text('\ufeffid,note\n1,"two\nlines"\n2,a,b\n3,c\n')
    source = RowFile(csv_path)
    assert list(source.rows()) == [Row(2, {"id": "1", "note": "two\nlines"}), BadRow(4, "3 cells where the header has 2"),
                                   Row(5, {"id": "3", "note": "c"})]
    assert source.done == source.total == csv_path.stat().st_size
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text('{"id": 1}\n\n[1]\n{"id": 2\n')
    rows = list(RowFile(jsonl).rows())
    assert rows[0] == Row(1, {"id": 1}) and rows[1] == BadRow(3, "a JSON list, not an object")
    assert rows[2].line == 4 and rows[2].reason.startswith("not JSON")
    parquet = tmp_path / "x.parquet"
    import pandas as pd

    pd.DataFrame({"id": ["a", "b"], "v": [1.5, None]}).to_parquet(parquet)
    assert [r.values for r in RowFile(parquet).rows()][1]["id"] == "b"
    with pytest.raises(RowFileError, match="cannot tell the format"):
        RowFile(tmp_path / "x.csv").__class__(csv_path.rename(tmp_path / "x.txt"))


class FakeIngest:
    """Answers like ingest: refuses bodies over ``max_records`` with 413, and the first ``full`` requests with 503."""

    def __init__(self, max_records: int = 1000, full: int = 0):
        self.max_records, self.full = max_records, full
        self.bodies: list[list] = []
        self.accepted: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != "Bearer tok":
            return httpx.Response(401, json={"detail": "missing or wrong bearer token"})
        records = json.loads(request.content)
        self.bodies.append(records)
        if len(records) > self.max_records:
            return httpx.Response(413, json={"accepted": 0, "accepted_indexes": [], "already_accepted": [], "rejected": [
                {"index": None, "event_id": None, "status": 413, "errors": [{"field": "(body)", "message": "big"}]}]})
        answer = {"accepted_indexes": [], "already_accepted": [], "rejected": []}
        for i, r in enumerate(records):
            if "event_id" not in r:
                answer["rejected"].append({"index": i, "event_id": None, "status": 422,
                                           "errors": [{"field": "event_id", "message": "Field required"}]})
            elif self.full and i % 2:  # the bus took every other record
                answer["rejected"].append({"index": i, "event_id": r["event_id"], "status": 503,
                                           "errors": [{"field": "(bus)", "message": "the bus is full"}]})
            elif r["event_id"] in self.accepted:
                answer["already_accepted"].append({"index": i, "event_id": r["event_id"]})
            else:
                self.accepted.add(r["event_id"])
                answer["accepted_indexes"].append(i)
        self.full = max(self.full - 1, 0)
        answer["accepted"] = len(answer["accepted_indexes"])
        return httpx.Response(207 if answer["rejected"] else 200, json=answer, headers={"Retry-After": "1"})


def test_the_client_splits_on_413_retries_what_the_bus_refused_and_counts_each_record_once():
    ingest = FakeIngest(max_records=3, full=2)
    waits: list[float] = []
    records = [{"event_id": f"e{i}"} for i in range(10)] + [{"entity_id": "no id"}]
    with Client("http://ingest", "tok", sleep=waits.append, transport=httpx.MockTransport(ingest)) as client:
        result = client.send_events(records, model="m", batch_size=8)
    assert result.sent == 11 and result.accepted == 10 and result.already_accepted == 0
    assert [(r.index, r.status) for r in result.rejections] == [(10, 422)]
    assert ingest.accepted == {f"e{i}" for i in range(10)}
    assert [len(b) for b in ingest.bodies[:3]] == [8, 4, 2]  # halved until it fits, first half first
    assert all(r["model"] == "m" for b in ingest.bodies for r in b)
    assert waits and set(waits) == {1.0} and result.retries == len(waits)


def test_the_client_gives_up_on_a_bus_that_stays_full_and_says_so():
    ingest = FakeIngest(full=10**9)
    with Client("http://ingest", "tok", sleep=lambda s: None, retry_for_s=0.0,
                transport=httpx.MockTransport(ingest)) as client:
        result = client.send_events([{"event_id": "a"}, {"event_id": "b"}])
    assert result.accepted == 1 and [(r.index, r.status) for r in result.rejections] == [(1, 503)]
    with Client("http://ingest", "wrong", transport=httpx.MockTransport(ingest)) as client:
        with pytest.raises(Unauthorized, match="DRIFTLINE_INGEST_TOKEN"):
            client.send_labels([{"event_id": "a"}])


def test_the_progress_bar_off_a_terminal_writes_a_line_per_tenth():
    import io

    from driftline.client import SendResult
    from driftline.entry.send import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(1000, stream)
    for done in range(0, 1001, 5):
        bar.update(done, SendResult(sent=done, accepted=done))
    bar.update(1000, SendResult(sent=1000, accepted=990, rejections=[]), final=True)
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 12 and "\r" not in stream.getvalue()
    assert lines[-1].startswith("[" + "#" * 30 + "] 100%  1,000 rows  accepted 990  rejected 0")
