"""Rows built column-wise (ColumnBatch) go into the store as one insert, mixed with rows given as
dicts for the same table, with epoch-ms ints in DateTime64 columns."""

from __future__ import annotations

import pytest

from driftline.runner import Output
from driftline.store import ColumnBatch


def _rows(*ids: str) -> list[dict]:
    return [{"dead_letter_id": i, "service": "sorter", "topic": "parcels", "partition": 2, "offset": n,
             "key": None, "payload": "ff", "error": "bad parcel", "received_at": 1_790_000_000_000 + n}
            for n, i in enumerate(ids)]


def test_column_batches_for_one_table_become_one_batch_in_order_and_never_mix_with_dicts():
    out = Output()
    out.add_columns("dead_letters", ColumnBatch.from_rows(_rows("p-1", "p-2")))
    out.add_columns("dead_letters", ColumnBatch.from_rows(_rows("p-3")))
    other = Output()
    other.add_columns("dead_letters", ColumnBatch.from_rows(_rows("p-4")))
    out.merge(other)
    batch = out.rows["dead_letters"]
    assert isinstance(batch, ColumnBatch) and batch.columns["dead_letter_id"] == ["p-1", "p-2", "p-3", "p-4"]
    assert len(other.rows["dead_letters"]) == 1  # merging copied: the other output is unchanged
    with pytest.raises(ValueError, match="column-wise"):
        out.add_rows("dead_letters", _rows("p-5"))
    dicts = Output()
    dicts.add_rows("dead_letters", _rows("p-6"))
    with pytest.raises(ValueError, match="as dicts"):
        dicts.add_columns("dead_letters", ColumnBatch.from_rows(_rows("p-7")))


def test_a_batch_refuses_columns_of_different_lengths_or_names():
    with pytest.raises(ValueError, match="different lengths"):
        ColumnBatch({"a": [1, 2], "b": [1]})
    batch = ColumnBatch({"a": [1]})
    with pytest.raises(ValueError, match="cannot append"):
        batch.extend(ColumnBatch({"b": [2]}))


def test_a_column_batch_with_epoch_ms_is_stored_as_the_same_instants(store):
    store.insert("dead_letters", ColumnBatch.from_rows(_rows("p-1", "p-2")))
    store.insert("dead_letters", _rows("p-3"))  # the list-of-dicts form still works
    _, rows = store.query("SELECT dead_letter_id, toUnixTimestamp64Milli(received_at), toString(received_at) "
                          "FROM dead_letters FINAL ORDER BY dead_letter_id")
    assert rows == [("p-1", 1_790_000_000_000, "2026-09-21 14:13:20.000"),
                    ("p-2", 1_790_000_000_001, "2026-09-21 14:13:20.001"),
                    ("p-3", 1_790_000_000_000, "2026-09-21 14:13:20.000")]
