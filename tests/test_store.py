import numpy as np
import pytest
from tests_helpers import a_record

from annbench.errors import AnnbenchError
from annbench.store import ResultStore

make_record = a_record


def test_round_trip_keeps_every_field_and_raw_arrays(tmp_path):
    record = make_record()
    with ResultStore(tmp_path) as store:
        store.put(record)
    with ResultStore(tmp_path / "annbench.sqlite") as store:
        (loaded,) = store.records(with_raw=True)
    assert loaded.summary_dict() == record.summary_dict()
    np.testing.assert_array_equal(loaded.ids, record.ids)
    np.testing.assert_array_equal(loaded.latencies_ns, record.latencies_ns)


def test_same_key_replaces_instead_of_duplicating(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(make_record(recall=0.5))
        store.put(make_record(recall=0.7))
        store.put(make_record(ef=32))
        assert store.count() == 2
        assert sorted(r.recall for r in store.records()) == [0.7, 0.9]


def test_completed_keys_leave_out_failures(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(make_record(ef=16))
        store.put(make_record(ef=32, status="failed", error="boom", recall=None))
        assert store.completed_keys() == {make_record(ef=16).key}


def test_dataframe_has_one_row_per_record_with_spread(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(make_record(ef=16))
        store.put(make_record(ef=32, dataset="other"))
        frame = store.dataframe("d")
    assert len(frame) == 1
    assert frame.loc[0, "qps_spread"] == pytest.approx(0.2)
    assert frame.loc[0, "build_params"] == {"M": 16}


def test_key_ignores_parameter_order():
    a = make_record(build_params={"M": 16, "ef_construction": 100})
    b = make_record(build_params={"ef_construction": 100, "M": 16})
    assert a.key == b.key


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "annbench.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AnnbenchError, match="Cannot use results store"):
        ResultStore(bad)


def test_store_from_an_older_schema_gains_new_columns(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "annbench.sqlite")
    db.execute(
        "CREATE TABLE results (id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, recall REAL)"
    )
    db.execute("INSERT INTO results (key, recall) VALUES ('old', 0.5)")
    db.commit()
    db.close()
    with ResultStore(tmp_path) as store:
        store.put(make_record())
        assert store.count() == 2


def test_spread_is_the_interquartile_range_when_quartiles_are_stored(tmp_path):
    record = make_record(ef=16, qps_q1=950.0, qps_q3=1030.0)  # min 900, max 1100, median 1000
    assert record.qps_spread == pytest.approx(0.08)
    with ResultStore(tmp_path) as store:
        store.put(record)
        assert store.dataframe().loc[0, "qps_spread"] == pytest.approx(0.08)
