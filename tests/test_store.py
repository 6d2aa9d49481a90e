from pathlib import Path

import numpy as np
import pytest
from tests_helpers import a_record

from annbench.errors import AnnbenchError
from annbench.results.store import ResultStore, _pack

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


def test_same_key_keeps_every_attempt_and_shows_the_latest(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(make_record(recall=0.5))
        store.put(make_record(recall=0.7))
        store.put(make_record(ef=32))
        assert store.count() == 2 and store.count(history=True) == 3
        assert sorted(r.recall for r in store.records()) == [0.7, 0.9]
        assert [r.recall for r in store.records(history=True)] == [0.5, 0.7, 0.9]


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


def failure(**fields):
    values = dict(status="failed", error="timed out after 1 s", recall=None, qps=None)
    return make_record(**(values | fields))


def test_a_failed_re_measure_keeps_the_success_and_shows_the_failure_beside_it(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(make_record(recall=0.8, created_at="2026-01-01T00:00:00+00:00"))
        store.put(failure(created_at="2026-01-02T00:00:00+00:00"))
        (shown,) = store.records(with_raw=True)
        frame = store.dataframe()
        history = store.dataframe(history=True)
        assert store.completed_keys() == {make_record().key}
    assert shown.status == "ok" and shown.recall == 0.8 and shown.ids is not None
    assert frame.loc[0, "last_failure"] == "timed out after 1 s"
    assert frame.loc[0, "last_failure_at"] == "2026-01-02T00:00:00+00:00"
    assert list(history["status"]) == ["ok", "failed"]
    assert "last_failure" not in history


def test_a_failure_before_the_success_is_history_not_the_current_state(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(failure())
        store.put(make_record())
        assert store.dataframe().loc[0, "last_failure"] is None
        assert store.count(history=True) == 2


def test_a_key_that_never_succeeded_shows_its_latest_failure(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(failure(error="first"))
        store.put(failure(error="second"))
        (shown,) = store.records()
        assert shown.status == "failed" and shown.error == "second"
        assert store.completed_keys() == set()


def test_a_probe_never_hides_or_replaces_a_full_measurement(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(make_record(recall=0.8, runs=3))
        store.put(make_record(recall=0.7, runs=1, probe=True))  # later, same key
        store.put(make_record(ef=64, recall=0.95, runs=1, probe=True))  # probed only
        (shown,) = store.records()
        assert shown.runs == 3 and not shown.probe
        assert store.count() == 1 and len(store.dataframe()) == 1
        assert store.completed_keys() == {make_record().key}  # a probe is not a finished run
        with_probes = {r.search_params["ef"]: r for r in store.records(probes=True)}
        assert with_probes[16].runs == 3 and not with_probes[16].probe
        assert with_probes[64].probe and with_probes[64].recall == 0.95
        assert sum(r.probe for r in store.records(history=True)) == 2


def test_a_probe_failure_is_not_a_result_either(tmp_path):
    with ResultStore(tmp_path) as store:
        store.put(failure(probe=True))
        assert store.records() == [] and store.count() == 0
        assert store.dataframe().empty


def _v1_store(path, records):
    """A store as schema 1 wrote it: one row per key in ``results``, arrays in ``raw``."""
    import sqlite3

    from annbench.results.store import _row, _types

    db = sqlite3.connect(path)
    columns = ", ".join(f"{n} {t}" for n, t in _types().items())
    db.execute(
        f"CREATE TABLE results (id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, {columns})"
    )
    db.execute(
        "CREATE TABLE raw (result_id INTEGER PRIMARY KEY REFERENCES results(id) "
        "ON DELETE CASCADE, ids BLOB, latencies_ns BLOB)"
    )
    for record in records:
        row = _row(record)
        marks = ", ".join("?" for _ in row)
        cursor = db.execute(
            f"INSERT INTO results ({', '.join(row)}) VALUES ({marks})", list(row.values())
        )
        db.execute(
            "INSERT INTO raw VALUES (?, ?, ?)",
            (cursor.lastrowid, _pack(record.ids), _pack(record.latencies_ns)),
        )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


def test_a_schema_1_store_is_read_as_is_and_migrated_in_place_losing_nothing(tmp_path):
    import sqlite3

    path = tmp_path / "annbench.sqlite"
    old = [make_record(ef=16), failure(ef=32), make_record(ef=64, dataset="other")]
    _v1_store(path, old)
    before = path.read_bytes()
    with ResultStore.open_existing(path) as store:  # read-only: nothing changes
        assert [r.summary_dict() for r in store.records()] == [r.summary_dict() for r in old]
        assert store.completed_keys() == {old[0].key, old[2].key}
    assert path.read_bytes() == before
    with ResultStore(path) as store:  # a writer migrates
        loaded = store.records(with_raw=True)
        store.put(make_record(ef=16, recall=0.99))
        assert store.count() == 3 and store.count(history=True) == 4
        assert store.records("d")[0].recall == 0.99
    assert [r.summary_dict() for r in loaded] == [r.summary_dict() for r in old]
    np.testing.assert_array_equal(loaded[0].ids, old[0].ids)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    tables = dict(db.execute("SELECT name, type FROM sqlite_master").fetchall())
    assert tables["results"] == "view" and "raw" not in tables
    assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3  # for other tools
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_a_store_from_a_newer_annbench_is_refused(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "annbench.sqlite")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(AnnbenchError, match="newer annbench"):
        ResultStore(tmp_path)


def test_read_only_opening_never_creates_a_store_or_folders(tmp_path):
    missing = tmp_path / "resluts"
    with pytest.raises(AnnbenchError, match=f"No results store at {missing}"):
        ResultStore.open_existing(missing)
    with pytest.raises(AnnbenchError, match="run 'annbench run' first or pass --results"):
        ResultStore(missing / "x.sqlite", create=False)
    assert not missing.exists()


def test_another_programs_database_is_refused_untouched(tmp_path):
    import sqlite3

    path = tmp_path / "app.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users (name) VALUES ('ada')")
    db.commit()
    db.close()
    before = path.read_bytes()
    for opener in (ResultStore, ResultStore.open_existing):
        with pytest.raises(AnnbenchError, match="another program's SQLite database .*users"):
            opener(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.sqlite"]


def test_a_results_table_without_annbench_columns_is_foreign(tmp_path):
    import sqlite3

    path = tmp_path / "exam.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE results (student TEXT, grade REAL)")
    db.commit()
    db.close()
    with pytest.raises(AnnbenchError, match="another program's"):
        ResultStore(path)


def test_an_output_path_that_is_the_store_is_refused(tmp_path):
    from annbench.paths import check_output_file

    with ResultStore(tmp_path / "results") as store:
        store.put(make_record())
    target = tmp_path / "results" / "annbench.sqlite"
    for out in [
        target,
        tmp_path / "results" / ".." / "results" / "annbench.sqlite",
        tmp_path / "results" / "annbench.sqlite-wal",
        tmp_path / "results" / "annbench.sqlite-shm",
    ]:
        with pytest.raises(AnnbenchError, match="results store"):
            check_output_file(out, "--csv")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    with pytest.raises(AnnbenchError, match="results store"):
        check_output_file(link, "--csv")
    check_output_file(tmp_path / "results" / "out.csv", "--csv")  # fine


def test_disk_full_mid_append_keeps_every_earlier_attempt(tmp_path):
    """A real write failure: the file-size limit makes SQLite's writes fail with EFBIG."""
    import subprocess
    import sys

    script = (
        "import resource, sys\n"
        "import numpy as np\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from tests_helpers import a_record\n"
        "from annbench.errors import AnnbenchError\n"
        "from annbench.results.store import ResultStore\n"
        "store = ResultStore(sys.argv[1])\n"
        "store.put(a_record(recall=0.5))\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    for i in range(1000):\n"
        "        store.put(a_record(ef=i % 3, ids=np.arange(4000).reshape(400, 10)))\n"
        "except AnnbenchError as exc:\n"
        "    print(exc)\n"
    )
    helpers = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), helpers],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Cannot write to results store" in done.stdout, done.stdout + done.stderr
    assert "results stored before are kept" in done.stdout
    with ResultStore(tmp_path) as store:
        attempts = store.records(history=True, with_raw=True)
        assert 1 < len(attempts) < 1001
        assert attempts[0].recall == 0.5
        assert all(r.ids is not None and r.ids.size in (20, 4000) for r in attempts)
        store.put(make_record(ef=99))  # still writable once space is back
    import sqlite3

    with sqlite3.connect(tmp_path / "annbench.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _cli(*args):
    from click.testing import CliRunner

    from annbench.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_forced_re_measure_that_fails_keeps_the_earlier_success(tiny_path, isolated_folders):
    sweep = ("run", "-b", "faiss-flat", "-d", tiny_path, "--runs", "1", "--min-time", "0")
    assert _cli(*sweep).exit_code == 0
    failed = _cli(*sweep, "--force", "--timeout", "0.01")
    assert "1 failed" in failed.output and "timed out" in failed.output
    with ResultStore(isolated_folders / "results") as store:
        (shown,) = store.records()
        frame = store.dataframe()
        assert store.count(history=True) == 2
    assert shown.status == "ok" and shown.recall == 1.0
    assert frame.loc[0, "last_failure"].startswith("timed out")
    listing = _cli("results")
    assert listing.exit_code == 0 and "last_failure" in listing.output
    assert "timed out" in listing.output and " ok " in listing.output
    history = _cli("results", "--history")
    assert history.exit_code == 0
    lines = history.output.strip().splitlines()
    assert len(lines) == 3 and " ok " in lines[1] and "failed" in lines[2]
    again = _cli(*sweep)  # resume: the success still counts as done
    assert "Stored 0 results (1 already stored" in again.output


@pytest.mark.parametrize(
    "args",
    [
        ["results"],
        ["results", "--history"],
        ["summary"],
        ["report"],
        ["plot"],
        ["recommend", "--min-recall", "0.9", "-d", "{tiny}"],
    ],
)
def test_read_only_commands_never_create_a_store_at_a_mistyped_path(args, tmp_path, tiny_path):
    mistyped = tmp_path / "resluts" / "deeper"
    result = _cli(*(a.format(tiny=tiny_path) for a in args), "--results", mistyped)
    assert result.exit_code == 1, result.output
    assert f"No results store at {mistyped / 'annbench.sqlite'}" in result.output
    assert not (tmp_path / "resluts").exists()


def test_results_refuses_another_programs_database_untouched(tmp_path):
    import sqlite3

    path = tmp_path / "inventory.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (sku TEXT)")
    before = path.read_bytes()
    for args in (["results"], ["run", "-b", "faiss-flat"]):
        result = _cli(*args, "--results", path)
        assert result.exit_code == 1 and "another program's SQLite database" in result.output
    assert path.read_bytes() == before
