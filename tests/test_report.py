"""The HTML report, opened for real in headless Chromium."""

import os
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from annbench.cli import main
from annbench.runner import plan_sweep, run_sweep
from annbench.store import ResultStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def report(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    grid = {"M": [8], "ef_construction": [40], "ef": [10, 40], "nlist": [16], "nprobe": [1, 8]}
    with ResultStore(folder) as store:
        run_sweep(plan_sweep(tiny, ["hnswlib", "faiss-ivf"], runs=1, overrides=grid), store)
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(main, ["report", "--results", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "index.html"


def test_report_is_self_contained(report):
    text = report.read_text()
    assert "tiny, single mode, k=10: recall vs QPS" in text
    assert text.count("data:image/png;base64,") == 3
    assert "label mAP" in text and "Best QPS at each recall level" in text
    assert "Best recall with p99 latency within 1 ms" in text
    # nothing is fetched: no external scripts, styles or images
    assert not re.search(r"""(src|href)=['"](https?:)?//""", text)


def chromium(*args, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_renders_in_headless_chromium_without_console_errors(report, tmp_path):
    result = chromium(
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        report.as_uri(),
        tmp_path=tmp_path,
    )
    body = re.search(r"<body[^>]*>", result.stdout).group(0)
    assert 'data-plots="3"' in body and 'data-plots-rendered="3"' in body, body
    rows = int(re.search(r'data-tables="(\d+)"', body).group(1))
    assert rows == 4 + 2 + 2  # every run, one summary row and one budget row per backend
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console


def test_console_errors_would_be_caught(report, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(report.read_text().replace("</body>", "<script>nope();</script></body>"))
    result = chromium(
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        broken.as_uri(),
        tmp_path=tmp_path,
    )
    assert any(":CONSOLE" in line and "nope" in line for line in result.stderr.splitlines())


def test_screenshot(report, tmp_path):
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,1600", report.as_uri(), tmp_path=tmp_path)
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 20_000


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
    assert "QPS vs search threads" in (tmp_path / "r" / "index.html").read_text()
    ResultStore(tmp_path / "x").close()  # a store without batch runs
    none = runner.invoke(
        main, ["plot", "-d", "tiny", "--threads", "--results", str(tmp_path / "x")]
    )
    assert none.exit_code == 1 and "No successful batch-mode results" in none.output
