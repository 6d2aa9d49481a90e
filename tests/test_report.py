"""The HTML report, opened for real in headless Chromium and driven with mouse events."""

import os
import re
import time

import pytest
from browser import CHROMIUM, Browser
from click.testing import CliRunner

from annbench.cli import main
from annbench.results.store import ResultStore
from annbench.sweep.runner import plan_sweep, run_sweep

pytestmark = pytest.mark.slow  # the report in headless Chromium

GRID = {"M": [8], "ef_construction": [40], "ef": [10, 40], "nlist": [16], "nprobe": [1, 8]}


@pytest.fixture(scope="module")
def store(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    with ResultStore(folder) as results:
        jobs = plan_sweep(tiny, ["hnswlib", "faiss-ivf"], runs=1, min_seconds=0, overrides=GRID)
        run_sweep(jobs, results)
    return folder


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(main, ["report", "--results", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "index.html"


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    opened = Browser(tmp_path / "profile")
    yield opened
    opened.close()


def test_report_is_self_contained(report):
    text = report.read_text()
    assert "tiny, single mode, k=10: recall against cost" in text
    assert text.count("Plotly.newPlot(") == 1  # one figure for the one (mode, k)
    assert len(re.findall(r"plotly\.js v\d", text)) == 1  # the library inlined once
    for title in ("recall ≥ 0.8", "recall ≥ 0.99", "Best recall with p99 latency within 1 ms"):
        assert title in text
    for column in ("serving MB", "build peak MB", "file MB", "label mAP", "QPS"):
        assert f">{column}</th>" in text
    # nothing is fetched: no external scripts, styles or images outside the inlined library
    markup = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)
    assert not re.search(r"""(src|href)=['"](https?:)?//""", markup)
    assert not re.search(r"<script[^>]+src=", text)


def test_report_in_chromium_renders_hovers_toggles_and_fits(report, browser, tmp_path):
    browser.open(report.as_uri())
    body = browser.evaluate("Object.assign({}, document.body.dataset)")
    body.pop("sortable", None)  # set when DataTables is ready, awaited below
    assert body == {"plots": "1", "plotsRendered": "1", "tables": body["tables"]}, body
    # four tables of one row per backend per recall level, the budget table and every run
    assert int(body["tables"]) == 4 * 2 + 2 + 4
    wait_until(browser, "document.body.dataset.sortable === '1'")  # DataTables took the runs
    assert browser.evaluate("document.documentElement.scrollWidth") <= 1280  # no side scroll
    runs = "document.querySelector('table.sortable tbody')"
    first = f"{runs}.rows[0].cells[0].textContent"
    before = browser.evaluate(first)
    header = browser.evaluate(
        "(() => { const h = Array.from(document.querySelectorAll('table.sortable thead th'))"
        ".find(th => th.textContent.trim() === 'QPS'); h.scrollIntoView({block: 'center'}); "
        "const r = h.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; "
        "})()"
    )
    browser.click(*header)  # sort by QPS: rows in ascending QPS
    column = (
        "Array.from(document.querySelectorAll('table.sortable thead th'))"
        ".findIndex(th => th.textContent.trim() === 'QPS')"
    )
    cell = f"r.cells[{column}].textContent.replace(/,/g, '')"
    qps = f"Array.from({runs}.rows).map(r => Number({cell}))"
    wait_until(browser, f"(q => q.every((v, i) => i === 0 || q[i - 1] <= v))({qps})")
    values = browser.evaluate(qps)
    assert values == sorted(values) and len(values) == 4, values
    search = "document.querySelector('.dt-search input')"
    browser.evaluate(
        f"(() => {{ const i = {search}; i.value = 'hnswlib'; "
        "i.dispatchEvent(new Event('input', {bubbles: true})); })()"
    )
    wait_until(browser, f"Array.from({runs}.rows).every(r => r.textContent.includes('hnswlib'))")
    assert browser.evaluate(f"{runs}.rows.length") == 2 and before
    browser.evaluate("window.scrollTo(0, 0)")

    # hover: a real mouse move over a point shows its configuration
    x, y = browser.evaluate(
        "(() => { const r = document.querySelector('.scatterlayer .trace .points path')"
        ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    browser.mouse("mouseMoved", x, y)
    tip = wait_text(browser, "document.querySelector('.hoverlayer').textContent")
    assert re.search(r"(faiss-ivf|hnswlib)build: .*search: (nprobe|ef)=\d+recall 0\.\d{4}", tip)
    assert "QPS" in tip and "p99" in tip and "serving memory" in tip

    # legend: clicking an entry hides that backend's traces
    visible = "document.querySelectorAll('.scatterlayer .trace').length"
    hidden = (
        "document.querySelector('.plotly-graph-div').data"
        ".filter(t => t.visible === 'legendonly').length"
    )
    assert browser.evaluate(hidden) == 0
    before = browser.evaluate(visible)
    lx, ly = browser.evaluate(
        "(() => { const r = document.querySelector('.legend .traces .legendtoggle')"
        ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    browser.click(lx, ly)
    wait_until(browser, f"{hidden} === 2")
    assert browser.evaluate(visible) < before

    # axis switch: the p99 button puts latency on the y axis
    buttons = browser.evaluate(
        "Array.from(document.querySelectorAll('.updatemenu-button')).map(b => "
        "{ const r = b.getBoundingClientRect(); return [b.textContent, r.x + r.width / 2, "
        "r.y + r.height / 2]; })"
    )
    label, bx, by = next(b for b in buttons if b[0].startswith("p99"))
    browser.click(bx, by)
    wait_until(browser, "document.querySelector('.ytitle').textContent === 'p99 latency (ms)'")
    assert (
        browser.evaluate("document.querySelector('.plotly-graph-div').layout.yaxis.type") == "log"
    )
    assert browser.console == []  # no console errors or warnings, no uncaught exceptions
    # blob: the DataTables module, inlined in the page, is imported from an object URL
    assert all(url.startswith(("file:", "data:", "about:", "blob:")) for url in browser.requests)


def test_console_errors_would_be_caught(report, browser, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(report.read_text().replace("</body>", "<script>nope();</script></body>"))
    browser.open(broken.as_uri())
    assert any("nope is not defined" in line for line in browser.console), browser.console


def test_thread_scaling_plot_and_report_section(tiny_path, tmp_path):
    runner = CliRunner()
    ran = runner.invoke(
        main,
        [
            "run",
            "-d",
            str(tiny_path),
            "-b",
            "faiss-ivf",
            "--mode",
            "batch",
            "--threads",
            "1,2",
            "--runs",
            "1",
            "--min-time",
            "0",
            "-g",
            "nlist=16",
            "-g",
            "nprobe=2,8",
            "--results",
            str(tmp_path),
        ],
    )
    assert ran.exit_code == 0, ran.output
    png = tmp_path / "threads.png"
    plotted = runner.invoke(
        main, ["plot", "-d", "tiny", "--threads", "--out", str(png), "--results", str(tmp_path)]
    )
    assert plotted.exit_code == 0, plotted.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    written = runner.invoke(
        main, ["report", "--results", str(tmp_path), "--out", str(tmp_path / "r")]
    )
    assert written.exit_code == 0
    text = (tmp_path / "r" / "index.html").read_text()
    assert "QPS vs search threads" in text and text.count("Plotly.newPlot(") == 2
    ResultStore(tmp_path / "x").close()  # a store without batch runs
    none = runner.invoke(
        main, ["plot", "-d", "tiny", "--threads", "--results", str(tmp_path / "x")]
    )
    assert none.exit_code == 1 and "No successful batch-mode results" in none.output


def wait_until(browser, expression, seconds=10):
    deadline = time.monotonic() + seconds
    while not browser.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {seconds} s: {expression}")
        time.sleep(0.05)


def wait_text(browser, expression, seconds=10):
    deadline = time.monotonic() + seconds
    while True:
        text = browser.evaluate(f"({expression}) || ''")
        if text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_a_backend_keeps_its_colour_whatever_is_drawn_beside_it(tmp_path):
    from matplotlib.colors import to_hex
    from tests_helpers import a_record

    from annbench.report.colors import backend_color
    from annbench.report.plot import interactive_figure, recall_qps_figure

    def colours(backends: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        with ResultStore(tmp_path / "-".join(backends)) as store:
            for backend in backends:
                store.put(a_record(backend=backend, build_s=1.0, index_bytes=1000))
            frame = store.dataframe()
        plotly = {t.name: t.line.color for t in interactive_figure(frame, "t").data if t.name}
        axes = recall_qps_figure(frame, "t").axes[0]
        matplotlib = {line.get_label(): to_hex(line.get_color()) for line in axes.get_lines()}
        return plotly, matplotlib

    first = colours(["faiss-ivf", "hnswlib"])
    second = colours(["annoy", "faiss-ivf", "my-plugin"])
    for drawn in (*first, *second):
        for backend, colour in drawn.items():
            assert colour == backend_color(backend), (backend, drawn)
    assert first[0]["faiss-ivf"] == second[0]["faiss-ivf"] == second[1]["faiss-ivf"]
    assert len({backend_color(b) for b in ("faiss-ivf", "hnswlib", "annoy")}) == 3
