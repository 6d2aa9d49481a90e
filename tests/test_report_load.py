"""Serving under load in the report: latency against offered load, throughput against clients,
the load point in the table of runs; absent from reports of stores without load runs."""

import re

import pytest
from click.testing import CliRunner
from tests_helpers import a_record

from annbench.cli import main
from annbench.report.colors import backend_color
from annbench.report.html import write_report
from annbench.report.load_plot import (
    OVER_CEILING_SYMBOL,
    SYMBOL,
    latency_load_figure,
    throughput_clients_figure,
)
from annbench.results.store import ResultStore

CEILING = 10_000.0  # the load generator's own ceiling: points offered above 5,000/s are marked
#: (ef, offered rate, p50 ms, p99 ms) of hnswlib, stored out of order
RATE_POINTS = [
    (16, 4000.0, 0.30, 2.0),
    (16, 1000.0, 0.10, 0.3),
    (16, 6000.0, 5.00, 30.0),
    (16, 5000.0, 0.80, 9.0),
    (16, 2000.0, 0.12, 0.4),
    (64, 3000.0, 0.50, 6.0),
    (64, 1000.0, 0.20, 0.5),
]
#: (ef, clients, achieved QPS, p50 ms, p99 ms) of hnswlib
CLIENT_POINTS = [(16, 4, 3500.0, 1.1, 4.0), (16, 1, 1500.0, 0.6, 0.9), (16, 2, 2900.0, 0.7, 1.2)]


def rate_record(ef: int, rate: float, p50: float, p99: float, **fields):
    values = dict(
        mode="rate",
        clients=2,
        cores=2,
        rate=rate,
        qps=rate * 0.99,
        runs=1,
        qps_min=None,
        qps_max=None,
        saturation_qps=8000.0,
        generator_max_qps=CEILING,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_p999_ms=p99 * 2,
        deadline_ms=5.0,
        deadline_miss=0.02 if p99 > 5 else 0.0,
        unfinished=0,
        latencies_ns=None,
    )
    return a_record(ef=ef, **(values | fields))


def concurrent_record(ef: int, clients: int, qps: float, p50: float, p99: float, **fields):
    values = dict(
        mode="concurrent",
        clients=clients,
        cores=2,
        qps=qps,
        runs=1,
        qps_min=None,
        qps_max=None,
        saturation_qps=3500.0,
        generator_max_qps=1e6,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_p999_ms=p99 * 2,
        latencies_ns=None,
    )
    return a_record(ef=ef, **(values | fields))


def load_records():
    records = [rate_record(*point) for point in RATE_POINTS]
    # 4,000/s asked for as half of saturation: its own load point, beside the 4,000/s above
    records.append(rate_record(64, 4000.0, 2.0, 12.0, rate_share=0.5))
    records.append(rate_record(16, 1000.0, 0.2, 0.6, backend="faiss-ivf", build_params={}))
    records += [concurrent_record(*point) for point in CLIENT_POINTS]
    records += [
        concurrent_record(16, c, q, 0.5, 1.0, backend="faiss-ivf", build_params={})
        for c, q in ((2, 2500.0), (1, 1400.0))
    ]
    return records


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("load-store")
    with ResultStore(folder) as results:
        results.put(a_record(ef=16, build_s=1.0, index_bytes=1000))  # a single-mode run
        for record in load_records():
            results.put(record)
    return folder


@pytest.fixture(scope="module")
def frame(store):
    with ResultStore(store) as results:
        return results.dataframe()


@pytest.fixture(scope="module")
def page(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("load-report")
    result = CliRunner().invoke(main, ["report", "--results", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return (out / "index.html").read_text()


def by_name(figure):
    traces = {}
    for trace in figure.data:
        traces.setdefault(trace.name, []).append(trace)
    return traces


HNSW_16 = "hnswlib [M=16] [ef=16]"
HNSW_64 = "hnswlib [M=16] [ef=64]"
FAISS = "faiss-ivf [-] [ef=16]"


def test_latency_against_offered_load_has_p50_and_p99_per_configuration_in_rate_order(frame):
    figure = latency_load_figure(frame, "t")
    traces = by_name(figure)
    assert set(traces) == {HNSW_16, HNSW_64, FAISS}
    for name, pair in traces.items():
        lines = {trace.meta: trace for trace in pair}
        assert set(lines) == {"p50", "p99"} and len(pair) == 2, name
        assert lines["p99"].line.dash == "solid" and lines["p50"].line.dash == "dash"
        assert lines["p99"].line.color == lines["p50"].line.color
        assert [t.showlegend for t in (lines["p99"], lines["p50"])] == [True, False]
        assert lines["p99"].x == lines["p50"].x
    p99 = next(t for t in traces[HNSW_16] if t.meta == "p99")
    p50 = next(t for t in traces[HNSW_16] if t.meta == "p50")
    expected = sorted(point[1:] for point in RATE_POINTS if point[0] == 16)
    assert list(p99.x) == [rate for rate, _, _ in expected]  # the knee in order
    assert list(p50.y) == [p for _, p, _ in expected]
    assert list(p99.y) == [p for _, _, p in expected]
    ef64 = next(t for t in traces[HNSW_64] if t.meta == "p99")
    assert list(ef64.x) == [1000.0, 3000.0, 4000.0]
    assert "(50% of saturation)" in ef64.text[2] and "of saturation" not in ef64.text[1]
    assert figure.layout.yaxis.type == "log"
    assert "2 cores" in figure.layout.xaxis.title.text


def test_each_configuration_has_its_own_colour_in_its_backends_shades(frame):
    colours = {
        name: pair[0].line.color for name, pair in by_name(latency_load_figure(frame, "t")).items()
    }
    assert len(set(colours.values())) == 3, colours
    assert colours[FAISS] == backend_color("faiss-ivf")  # alone: the backend's own colour
    assert backend_color("hnswlib") not in (colours[HNSW_16], colours[HNSW_64])


def test_points_offered_above_half_the_generator_ceiling_are_marked(frame):
    traces = by_name(latency_load_figure(frame, "t"))
    for trace in traces[HNSW_16]:
        marked = [
            x for x, symbol in zip(trace.x, trace.marker.symbol, strict=True) if symbol != SYMBOL
        ]
        assert marked == [6000.0], trace.marker.symbol  # 5,000/s is half: not above it
        assert trace.marker.symbol[-1] == OVER_CEILING_SYMBOL
        notes = ["load generator's own limits" in text for text in trace.text]
        assert notes == [False, False, False, False, True]
    assert "30.000 ms" in trace.text[-1] and "missed by 2.0%" in trace.text[-1]
    for trace in traces[HNSW_64] + traces[FAISS]:
        assert set(trace.marker.symbol) == {SYMBOL}


def test_points_whose_p99_is_close_to_the_generators_own_are_marked(frame):
    own = frame.assign(generator_p99_ms=0.25)  # HNSW_16: p99 0.3 and 0.4 ms at 1,000, 2,000/s
    (p99,) = [t for t in by_name(latency_load_figure(own, "t"))[HNSW_16] if t.meta == "p99"]
    marked = [x for x, symbol in zip(p99.x, p99.marker.symbol, strict=True) if symbol != SYMBOL]
    assert marked == [1000.0, 2000.0, 6000.0]  # 0.3 and 0.4 ms are under 2 x 0.25 ms
    assert "its own p99 0.25 ms" in p99.text[0] and "own limits" not in p99.text[2]
    assert "p99 under 2x its own" in latency_load_figure(own, "t").layout.title.text


def test_no_marks_where_the_generator_ceiling_is_unknown(frame):
    unknown = frame.assign(generator_max_qps=None)
    for trace in latency_load_figure(unknown, "t").data:
        assert set(trace.marker.symbol) == {SYMBOL}
    assert "crosses" not in latency_load_figure(unknown, "t").layout.title.text
    assert "crosses" in latency_load_figure(frame, "t").layout.title.text


def test_throughput_against_clients_one_line_per_configuration(frame):
    figure = throughput_clients_figure(frame, "t")
    traces = by_name(figure)
    assert set(traces) == {HNSW_16, FAISS} and len(figure.data) == 2
    (line,) = traces[HNSW_16]
    assert list(line.x) == [1, 2, 4]
    assert list(line.y) == [1500.0, 2900.0, 3500.0]
    assert "p50 0.600 ms, p99 0.900 ms" in line.text[0] and "1 client, 2 cores" in line.text[0]
    assert "p99 4.000 ms" in line.text[2] and "4 clients" in line.text[2]
    assert list(figure.layout.xaxis.tickvals) == [1, 2, 4]
    assert [shape.x0 for shape in figure.layout.shapes] == [2]  # the core count
    with pytest.raises(ValueError, match="concurrent"):
        throughput_clients_figure(frame[frame["mode"] != "concurrent"], "t")


def test_report_has_a_serving_section_with_both_plots_and_load_points(page):
    assert page.count(">Serving under load</h3>") == 1
    assert 'id="load-latency-d"' in page and 'id="load-clients-d"' in page
    assert page.count("Plotly.newPlot(") == 3  # recall/cost of the single run, and the two
    library = re.search(r"plotly\.js v\d", page)
    assert library and library.start() < page.index("Plotly.newPlot(")  # defined before use
    # load runs are no recall/cost trade-off of their own
    assert "rate mode, k=10" not in page and "concurrent mode, k=10" not in page
    assert ">load point</th>" in page and ">p99.9 ms</th>" in page
    for label in (
        "rate 1,000/s 2 clients, 2 cores",
        "rate 4,000/s (50% sat) 2 clients, 2 cores",
        "concurrent 4 clients, 2 cores",
        "concurrent 1 client, 2 cores",
    ):
        assert f">{label}</td>" in page, label
    assert page.count(">near generator ceiling</td>") == 1  # 6,000/s of a 10,000/s ceiling


def test_a_store_without_load_runs_has_no_serving_section(tmp_path, frame):
    single = frame[frame["mode"] == "single"]
    text = write_report(single, tmp_path / "single").read_text()
    assert "Serving under load" not in text and "load-latency" not in text
    assert ">load point</th>" not in text and ">p99.9 ms</th>" not in text
    assert ">spread %</th>" in text and text.count("Plotly.newPlot(") == 1
    load = frame[frame["mode"] != "single"]
    text = write_report(load, tmp_path / "load").read_text()
    assert "Serving under load" in text and "No successful runs of this dataset" not in text


@pytest.mark.parametrize("mode", ["rate", "concurrent"])
def test_a_store_with_one_load_mode_has_its_plot_only(tmp_path, frame, mode):
    text = write_report(frame[frame["mode"] == mode], tmp_path).read_text()
    assert text.count(">Serving under load</h3>") == 1 and text.count("Plotly.newPlot(") == 1
    assert ('id="load-latency-d"' in text) == (mode == "rate")
    assert ('id="load-clients-d"' in text) == (mode == "concurrent")
    assert f">{mode} " in text  # the load point in the table of runs
