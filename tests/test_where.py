"""Filters as a database's own where-clause: fields stored with the vectors, conditions per
filter, through the conformance kit and the whole pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from annbench import api
from annbench.cli import main
from annbench.data.format import read_dataset
from annbench.data.synthetic import create_synthetic
from annbench.data.workloads import load_workload
from annbench.index import Condition
from annbench.metrics import Metric
from annbench.report.html import write_report
from annbench.testing import check_backend


@pytest.fixture(scope="module")
def attr_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("where") / "attr.hdf5"
    return create_synthetic(
        path, n=800, nq=30, d=8, metric=Metric.EUCLIDEAN, n_clusters=10, seed=2, random_attr="u"
    )


def test_a_condition_allows_what_its_workload_mask_allows(attr_path):
    data = read_dataset(attr_path)
    for name in ("label", "range:0.2"):
        workload = load_workload(data, name)
        assert len(workload.conditions) == len(workload.masks)
        for condition, mask in zip(workload.conditions, workload.masks, strict=True):
            assert (condition.allows(workload.labels, workload.values) == mask).all()


def test_the_conformance_kit_checks_where_clauses(test_backends):
    from annbench_test_backends import WhereExact, WhereIgnored

    check_backend(WhereExact)
    with pytest.raises(AssertionError, match="search_where .* excludes"):
        check_backend(WhereIgnored)


def test_where_filters_run_through_the_pipeline_with_load_phases(
    attr_path, tmp_path, test_backends
):
    frame = api.run(
        "test-where",
        dataset=attr_path,
        filters=["label", "range:0.2"],
        grid={"filter_strategy": ["where"]},
        runs=1,
        min_time=0,
        results=tmp_path,
        progress=False,
    )
    assert len(frame) == 2 and (frame["status"] == "ok").all(), frame["error"].tolist()
    assert set(frame["search_params"].map(lambda p: json.loads(p)["filter_strategy"])) == {"where"}
    assert np.allclose(frame["recall"], 1.0)  # exact under the database's own condition
    for column in ("insert_s", "index_build_s", "ready_s"):
        assert (frame[column] >= 0).all()
    assert (frame["build_s"] >= frame["insert_s"] + frame["index_build_s"]).all()
    assert np.allclose(frame["inserts_per_s"], 800 / frame["insert_s"])  # 800 base rows
    shown = CliRunner().invoke(main, ["results", "--results", str(tmp_path)])
    assert shown.exit_code == 0 and "inserts/s" in shown.output and "ready_s" in shown.output
    page = write_report(frame, tmp_path / "report").read_text()
    assert ">inserts/s<" in page and ">index s<" in page and ">ready s<" in page


def test_a_backend_without_where_clauses_refuses_the_strategy(attr_path, tmp_path):
    from annbench.errors import AnnbenchError

    with pytest.raises(AnnbenchError, match="no where-clause"):
        api.run(
            "hnswlib",
            dataset=attr_path,
            filters=["label"],
            grid={"filter_strategy": ["where"]},
            results=tmp_path,
            progress=False,
        )
    assert Condition("value", low=0, high=1).allows(None, np.array([0.5, 2.0])).tolist() == [
        True,
        False,
    ]
