"""The report's Scaling section: per quantity a log-log figure of the measured points, the law
fitted on every size carried on to 10x as a labelled prediction with its band, and the held-out
check (the largest size predicted from the smaller ones, its interval as an error bar, its
error as a label), beside a table of the laws; absent from stores without size ladders."""

from __future__ import annotations

import math
import os
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from tests_helpers import a_record

from annbench.cli import main
from annbench.data.format import read_dataset
from annbench.data.subsets import size_hash
from annbench.data.synthetic import create_synthetic
from annbench.metrics import Metric
from annbench.record import RunRecord
from annbench.report import scale_plot
from annbench.report.html import write_report
from annbench.report.scale_plot import (
    HELD_OUT_SYMBOL,
    REACH,
    growth_curves,
    growth_figure,
    growth_rows,
    ladder_points,
    scale_section,
)
from annbench.results.store import ResultStore
from annbench.scaling.curves import growth_table
from annbench.scaling.growth import fit_growth, held_out_check

SIZES = [10_000, 20_000, 40_000, 80_000]
QUANTITY_DIVS = (
    "build-s",
    "index-bytes",
    "serving-memory-bytes",
    "effort-0-95",
    "qps-0-95",
    "qps-0-9",
)


def memory(n, M=16):
    return 2e6 + 100 * M * n


def build(n, M=16):
    return 3e-5 * (M / 16) * n**1.2


def _record(size, ef, recall, qps, M=16, **fields):
    values = dict(
        dataset="synthetic",
        dataset_hash=f"h{size}",
        backend="hnswlib",
        build_params={"M": M},
        search_params={"ef": ef},
        k=10,
        mode="single",
        threads=1,
        base_size=size,
        recall=recall,
        qps=qps,
        runs=3,
        build_s=build(size, M),
        index_bytes=int(memory(size, M)),
        serving_memory_bytes=int(memory(size, M) * 1.05),
    )
    return RunRecord(**(values | fields))


def ladder(sizes=SIZES, M=16, noise=0.0, seed=0):
    """The ef reaching recall 0.95 grows as 4 * (n/1e4)^0.3; QPS falls with ef and n.
    ``noise``: relative scatter of build times (seeded)."""
    rng = np.random.default_rng(seed)
    records = []
    for n in sizes:
        needed = 4 * (n / 1e4) ** 0.3
        scatter = 1 + noise * rng.standard_normal()
        for ef in (2, 4, 8, 16, 32, 64):
            recall = max(0.1, min(0.999, 0.95 + 0.05 * math.log2(ef / needed)))
            qps = 1e6 / (ef * (n / 1e4) ** 0.1)
            records.append(_record(n, ef, recall, qps, M=M, build_s=build(n, M) * scatter))
    return records


def _store(folder, records):
    with ResultStore(folder) as store:
        for record in records:
            store.put(record)
        return store.dataframe()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ladder-store")
    _store(folder, ladder(M=16, noise=0.05) + ladder(M=32) + [a_record(dataset="synthetic")])
    return folder


@pytest.fixture(scope="module")
def frame(store):
    with ResultStore(store) as results:
        return results.dataframe()


@pytest.fixture(scope="module")
def page(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("scale-report")
    result = CliRunner().invoke(main, ["report", "--results", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return (out / "index.html").read_text()


def traces(figure, config):
    """The traces of ``config`` by their role (measured, fitted, predicted, band, held-out)."""
    return {t.meta: t for t in figure.data if t.legendgroup == config}


M16 = "hnswlib [M=16]"
M32 = "hnswlib [M=32]"


@pytest.mark.slow  # the report written through the CLI
def test_report_has_a_scaling_section_with_a_figure_and_a_table_per_quantity(page):
    assert page.count(">Scaling</h3>") == 1
    section = page[page.index('id="scaling-synthetic"') :]
    for tag in QUANTITY_DIVS:
        assert f'id="scale-synthetic-{tag}"' in section, tag
        assert f'id="T_scale-synthetic-{tag}-laws"' in section, tag
    assert "build time against base size" in section
    assert "ef for recall 0.95 against base size" in section
    # the laws, held-out checks and predictions are in the tables, predictions called so
    assert "N^1.2" in section and "PREDICTED at 800,000" in section
    assert ">held-out error %</th>" in section and ">held-out check</th>" in section
    figures = re.findall(r'<div id="scale-synthetic-([\w-]+)" class="plotly-graph-div"', page)
    assert figures == re.findall(r'id="T_scale-synthetic-([\w-]+)-laws"', page)  # one table each
    # the whole page keeps one plotly library: the recall/cost figure, then the section's
    assert len(re.findall(r"plotly\.js v\d", page)) == 1
    assert page.count("Plotly.newPlot(") == 1 + len(figures)


def test_each_configuration_has_measured_points_fitted_law_prediction_band_and_held_out(frame):
    points = ladder_points(frame)
    curves = growth_curves(points, "index_bytes")
    figure = growth_figure(curves, "index_bytes", "t")
    assert figure.layout.xaxis.type == "log" and figure.layout.yaxis.type == "log"
    assert "MB" in figure.layout.yaxis.title.text
    for config, M in ((M16, 16), (M32, 32)):
        drawn = traces(figure, config)
        assert set(drawn) == {"measured", "fitted", "predicted", "band", "held-out"}, config
        assert [t.showlegend for t in drawn.values()].count(True) == 1  # one legend entry
        assert drawn["measured"].showlegend and drawn["measured"].name == config
        assert list(drawn["measured"].x) == SIZES
        expected = [memory(n, M) / 1e6 for n in SIZES]
        assert list(drawn["measured"].y) == pytest.approx(expected, rel=1e-6)
        # the fit covers the sizes measured, the prediction goes on from there to 10x
        assert drawn["fitted"].x[0] == pytest.approx(SIZES[0])
        assert drawn["fitted"].x[-1] == pytest.approx(SIZES[-1])
        assert drawn["predicted"].x[0] == pytest.approx(SIZES[-1])
        assert drawn["predicted"].x[-1] == pytest.approx(REACH * SIZES[-1])
        assert drawn["predicted"].line.dash == "dash" and "predicted" in drawn["predicted"].name
        assert all(text.startswith("<b>PREDICTED</b>") for text in drawn["predicted"].text)
        assert all("held-out check" in text for text in drawn["predicted"].text)
        assert drawn["predicted"].y[-1] == pytest.approx(memory(REACH * SIZES[-1], M) / 1e6)
        assert drawn["band"].fill == "toself" and "prediction interval" in drawn["band"].name


def test_the_held_out_point_is_the_largest_size_predicted_from_the_smaller_ones(frame):
    points = ladder_points(frame)
    (curve,) = [c for c in growth_curves(points, "build_s") if c.config == M16]
    drawn = traces(growth_figure([curve], "build_s", "t"), M16)["held-out"]
    sizes, values = np.array(curve.sizes, float), np.array(curve.values)
    fit = fit_growth(sizes[:-1], values[:-1], "power")
    guess = fit.predict(SIZES[-1])
    assert list(drawn.x) == [SIZES[-1]]
    assert drawn.y[0] == pytest.approx(guess.value)
    assert drawn.marker.symbol == HELD_OUT_SYMBOL
    assert drawn.error_y.array[0] == pytest.approx(guess.high - guess.value)
    assert drawn.error_y.arrayminus[0] == pytest.approx(guess.value - guess.low)
    error = guess.value / values[-1] - 1
    assert abs(error) > 0.001  # the scatter makes the check a real one
    assert drawn.text[0] == f"held out {error:+.1%}"
    assert f"{error:+.1%}" in drawn.hovertext[0]
    assert "PREDICTED from N = 10,000, 20,000, 40,000" in drawn.hovertext[0]


def test_the_table_gives_each_law_its_held_out_error_and_prediction(frame):
    points = ladder_points(frame)
    curves = growth_curves(points, "index_bytes")
    table = growth_rows(curves, "index_bytes").set_index("configuration")
    assert list(table.index) == [M16, M32]
    assert table.loc[M32, "law"] == "2e+06 B + 3,200 B * N"
    assert table.loc[M32, "held-out error %"] == pytest.approx(0, abs=1e-6)
    assert table.loc[M32, "held-out check"] == "ok"
    assert table.loc[M32, "PREDICTED at 800,000"].startswith(f"{memory(8e5, 32) / 1e6:,.0f} MB")
    assert "(90% interval)" in table.loc[M32, "PREDICTED at 800,000"]


@pytest.mark.parametrize("name", ["build_s", "index_bytes", "effort@0.95", "qps@0.95"])
def test_the_figures_and_tables_show_the_laws_annbench_scale_prints(frame, name):
    points = ladder_points(frame)
    printed = growth_table(points).set_index(["config", "quantity"])
    curves = growth_curves(points, name)
    figure = growth_figure(curves, name, "t")
    table = growth_rows(curves, name).set_index("configuration")
    for curve in curves:
        row = printed.loc[(curve.config, name)]
        assert table.loc[curve.config, "law"] == row["formula"]
        assert table.loc[curve.config, "model"] == row["model"]
        assert table.loc[curve.config, "held-out error %"] == pytest.approx(
            row["held_out_error"] * 100
        )
        drawn = traces(figure, curve.config)["held-out"]
        assert drawn.y[0] * (1e6 if name == "index_bytes" else 1) == pytest.approx(
            row["held_out_predicted"]
        )


def test_a_law_that_misses_its_held_out_size_is_marked_failed(tmp_path):
    records = [
        _record(n, ef, 0.99, 1000.0, index_bytes=int(50 * n**1.5)) for n in SIZES for ef in (8, 16)
    ]
    points = ladder_points(_store(tmp_path, records))
    (curve,) = growth_curves(points, "index_bytes")
    check = held_out_check(np.array(SIZES), 50 * np.array(SIZES, float) ** 1.5, "linear", 0.9, 0.1)
    assert curve.held_out.error == pytest.approx(check.error) and not check.passed
    drawn = traces(growth_figure([curve], "index_bytes", "t"), M16)["held-out"]
    assert drawn.text[0].endswith("FAILED")
    table = growth_rows([curve], "index_bytes")
    assert table["held-out check"].iloc[0].startswith("FAILED: over 10%")


def test_two_sizes_give_a_fitted_law_but_no_prediction(tmp_path):
    points = ladder_points(_store(tmp_path, ladder(sizes=SIZES[:2])))
    (curve,) = growth_curves(points, "build_s")
    assert curve.held_out is None
    assert set(traces(growth_figure([curve], "build_s", "t"), M16)) == {"measured", "fitted"}
    table = growth_rows([curve], "build_s")
    assert table["held-out check"].iloc[0] == "needs 3 sizes"
    assert table.filter(like="PREDICTED").iloc[0, 0] == "none (needs 3 sizes)"


def test_configurations_at_several_k_are_told_apart(tmp_path):
    records = ladder() + [
        _record(r.base_size, r.search_params["ef"], r.recall, r.qps, k=1) for r in ladder()
    ]
    points = ladder_points(_store(tmp_path, records))
    names = {c.config for c in growth_curves(points, "build_s")}
    assert names == {f"{M16} k=1", f"{M16} k=10"}


def test_whole_base_runs_join_the_ladder_when_the_dataset_file_is_found(tiny_path, tmp_path):
    from annbench.paths import data_dir

    data_dir().mkdir(parents=True, exist_ok=True)
    path = shutil.copy(tiny_path, data_dir() / "tiny.hdf5")
    data = read_dataset(path)
    n = len(data.train)
    records = []
    for size in (n // 4, n // 2, n):
        hash_ = size_hash(data, size)  # computes and caches each size's ground truth
        for ef in (8, 16):
            records.append(
                _record(
                    size,
                    ef,
                    0.99,
                    1000.0,
                    dataset="tiny",
                    dataset_hash=hash_,
                    base_size=None if size == n else size,
                    build_s=build(size),
                    index_bytes=int(memory(size)),
                )
            )
    frame = _store(tmp_path / "results", records)
    assert list(growth_curves(ladder_points(frame), "build_s")[0].sizes) == [n // 4, n // 2]
    with_file = growth_curves(ladder_points(frame, data), "build_s")
    assert list(with_file[0].sizes) == [n // 4, n // 2, n]
    text = scale_section("tiny", frame, _title, targets=[0.95])
    assert 'id="scale-tiny-build-s"' in text and f"{n // 4:,}, {n // 2:,}, {n:,}<" in text
    assert "Runs on the whole base are left out" not in text
    (data_dir() / "tiny.hdf5").unlink()
    text = scale_section("tiny", frame, _title, targets=[0.95])
    assert "Runs on the whole base are left out" in text  # a ladder of two sizes, said so
    assert f"{n // 4:,}, {n // 2:,}<" in text
    # another file of that name: its hashes match no run, so it does not hide the ladder
    create_synthetic(data_dir() / "tiny.hdf5", 300, 10, 8, Metric.EUCLIDEAN, 4, seed=1)
    text = scale_section("tiny", frame, _title, targets=[0.95])
    assert 'id="scale-tiny-build-s"' in text and "Runs on the whole base are left out" in text


def _title(figure, div_id):
    """A figure drawn as its title: what scale_section's figures say, without plotly's HTML."""
    return f'<div id="{div_id}">{figure.layout.title.text}|</div>'


def test_a_figure_of_more_configurations_than_it_shows_says_so(tmp_path, monkeypatch):
    records = [r for M in (4, 8, 16, 32) for r in ladder(M=M)]
    records += [_record(n, 16, 0.99, 1e4, M=64) for n in SIZES[:1]]  # one size: no curve
    frame = _store(tmp_path, records)
    shown = growth_curves(ladder_points(frame), "build_s", most=3)
    assert [c.config for c in shown] == ["hnswlib [M=16]", "hnswlib [M=32]", "hnswlib [M=4]"]
    titles = scale_section("synthetic", frame, _title, targets=[0.95])
    assert "synthetic: build time against base size|" in titles  # all 4 with the default
    monkeypatch.setattr(scale_plot, "MOST", 3)
    titles = scale_section("synthetic", frame, _title, targets=[0.95])
    assert "build time against base size (3 of 4 configurations" in titles
    assert "those measured at most sizes)|" in titles


def test_a_store_without_ladders_has_no_scaling_section(tmp_path):
    frame = _store(tmp_path, [a_record(ef=16), a_record(ef=64, recall=0.95)])
    text = write_report(frame, tmp_path / "report").read_text()
    assert "Scaling</h3>" not in text and 'id="scale-' not in text


def test_a_ladder_of_one_size_has_no_scaling_section(tmp_path):
    frame = _store(tmp_path, ladder(sizes=SIZES[:1]))
    text = write_report(frame, tmp_path / "report").read_text()
    assert "Scaling</h3>" not in text


@pytest.mark.slow  # headless Chromium
def test_the_section_renders_in_chromium_without_errors(store, tmp_path):
    from browser import CHROMIUM, Browser

    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", "--results", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    browser = Browser(tmp_path / "profile")
    try:
        browser.open((out / "index.html").as_uri())
        figures = "document.querySelectorAll('[id^=scale-synthetic-].plotly-graph-div')"
        drawn = f"Array.from({figures}).filter(p => p.querySelector('.main-svg') !== null)"
        assert browser.evaluate(f"{figures}.length") >= len(QUANTITY_DIVS)
        assert browser.evaluate(f"{drawn}.length") == browser.evaluate(f"{figures}.length")
        legend = f"{figures}[0].querySelectorAll('.legend .traces').length"
        assert browser.evaluate(legend) == 2  # one entry per configuration
        assert browser.evaluate("document.documentElement.scrollWidth") <= 1280
        assert browser.console == []
    finally:
        browser.close()
