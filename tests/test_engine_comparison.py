"""A database beside the library it is built on, at the same recall."""

from __future__ import annotations

import pandas as pd
import pytest
from tests_helpers import a_record

from annbench.results.analysis import engine_comparison


def frame(*records) -> pd.DataFrame:
    rows = [{**r.summary_dict(), "qps_spread": r.qps_spread} for r in records]
    return pd.DataFrame(rows)


def test_the_best_qps_at_each_recall_on_both_sides_and_their_ratio():
    table = engine_comparison(
        frame(
            a_record(16, backend="hnswlib", recall=0.91, qps=9000.0),
            a_record(32, backend="hnswlib", recall=0.96, qps=6000.0),
            a_record(64, backend="hnswlib", recall=0.99, qps=3000.0),
            a_record(16, backend="redis", recall=0.90, qps=3000.0),
            a_record(32, backend="redis", recall=0.955, qps=2400.0),
            a_record(64, backend="redis", recall=0.94, qps=5000.0),  # no level's best
            a_record(16, backend="chroma", recall=0.99, qps=100.0),  # no engine measured
        ),
        {"redis": "hnswlib", "chroma": "hnswlib-missing"},
    ).set_index("recall_level")
    assert list(table.index) == [0.9, 0.95]
    assert table.loc[0.9, "qps_ratio"] == pytest.approx(5000 / 9000)
    assert table.loc[0.95, "qps_ratio"] == pytest.approx(2400 / 6000)
    assert table.loc[0.95, "database_recall"] == pytest.approx(0.955)
    assert table.loc[0.95, "engine_recall"] == pytest.approx(0.96)
    assert (table["database"] == "redis").all() and (table["engine"] == "hnswlib").all()


def test_only_like_measurements_are_compared():
    table = engine_comparison(
        frame(
            a_record(16, backend="hnswlib", recall=0.95, qps=9000.0, mode="single"),
            a_record(16, backend="redis", recall=0.95, qps=3000.0, mode="batch"),
            a_record(
                16, backend="redis", recall=0.95, qps=300.0, mode="concurrent", clients=4, cores=2
            ),
            a_record(
                16, backend="hnswlib", recall=0.95, qps=900.0, mode="concurrent", clients=4, cores=2
            ),
            a_record(
                16, backend="hnswlib", recall=0.95, qps=100.0, mode="concurrent", clients=1, cores=2
            ),
        ),
        {"redis": "hnswlib"},
    )
    assert list(table["mode"]) == ["concurrent 4 clients, 2 cores"] * 2
    assert table["qps_ratio"].tolist() == pytest.approx([300 / 900] * 2)


@pytest.mark.slow
def test_the_report_sets_each_database_beside_its_engine(tmp_path, monkeypatch):
    from annbench import registry
    from annbench.report.html import write_report

    monkeypatch.setattr(registry, "database_engines", lambda names: {"redis": "hnswlib"})
    records = frame(
        a_record(16, backend="hnswlib", recall=0.96, qps=6000.0),
        a_record(16, backend="redis", recall=0.955, qps=2400.0),
    )
    page = write_report(records, tmp_path).read_text()
    assert "Databases beside their engines" in page
    assert "0.40" in page  # 2,400 / 6,000
    alone = write_report(records[records["backend"] == "hnswlib"], tmp_path / "alone")
    assert "Databases beside their engines" not in alone.read_text()
