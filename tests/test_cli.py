import csv
import re

import pytest
from click.testing import CliRunner

from annbench.cli import main
from annbench.results.store import ResultStore


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_run_results_csv_and_plot(cli, tiny_path, tmp_path, isolated_folders):
    result = cli(
        "run",
        "-b",
        "hnswlib",
        "-b",
        "faiss-ivf",
        "-d",
        str(tiny_path),
        "--runs",
        "1",
        "--min-time",
        "0",
        "-g",
        "M=8",
        "-g",
        "ef=10,64",
        "-g",
        "nlist=16",
        "-g",
        "nprobe=1,8",
    )
    assert result.exit_code == 0, result.output
    assert "Stored 4 results (0 already stored, 0 failed)" in result.output
    assert "hnswlib" in result.output and "nprobe=8" in result.output

    again = cli(
        *["run", "-b", "hnswlib", "-d", str(tiny_path), "--runs", "1", "--min-time", "0"],
        *["-g", "M=8", "-g", "ef=10,64"],
    )
    assert "Stored 0 results (2 already stored" in again.output

    listing = cli("results", "-d", "tiny")
    assert listing.exit_code == 0 and listing.output.count("tiny") == 4

    out_csv = tmp_path / "all.csv"
    assert cli("results", "--csv", str(out_csv)).exit_code == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 4 and {"recall", "qps", "latency_p99_ms", "provenance"} <= set(rows[0])

    png = tmp_path / "plot.png"
    plotted = cli("plot", "-d", "tiny", "--out", str(png))
    assert plotted.exit_code == 0, plotted.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "-b", "nope"], "Unknown backend 'nope'. Valid backends:"),
        (["run", "-b", "hnswlib", "-d", "nope"], "Unknown dataset 'nope'. Available:"),
        (["run", "-b", "hnswlib", "-g", "nprobe=4"], "Grid key 'nprobe' is not a parameter"),
        (["run", "-b", "hnswlib", "-g", "ef"], "must look like key=value"),
        (["run", "-b", "faiss-flat", "--k", "5000"], "k must be between 1 and the"),
        (["run", "-b", "faiss-ivfpq", "-g", "m=7"], "m=7 does not divide the dimension"),
        (["plot", "-d", "nothing-here"], "No results store at"),
        (["datasets", "info", "nope"], "Unknown dataset 'nope'"),
        (["datasets", "create", "x", "--metric", "manhattan"], "Metric 'manhattan' not valid"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(cli, args, message, tiny_path):
    if args[0] == "run" and "-d" not in args:
        args += ["-d", str(tiny_path)]
    result = cli(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0, result.output


@pytest.mark.slow
def test_bad_input_keeps_stored_results(cli, tiny_path, isolated_folders):
    cli("run", "-b", "faiss-flat", "-d", str(tiny_path), "--runs", "1")
    cli("run", "-b", "nope", "-d", str(tiny_path))
    with ResultStore(isolated_folders / "results") as store:
        assert store.count() == 1


def test_debug_shows_traceback(tiny_path):
    result = CliRunner().invoke(main, ["--debug", "run", "-b", "nope", "-d", str(tiny_path)])
    assert result.exit_code != 0 and result.exc_info is not None


def test_datasets_create_list_info(cli):
    created = cli(
        "datasets",
        "create",
        "mini",
        "--n",
        "500",
        "--nq",
        "20",
        "--d",
        "8",
        "--metric",
        "cosine",
        "--clusters",
        "4",
    )
    assert created.exit_code == 0, created.output
    listing = cli("datasets", "list")
    assert "mini: stored" in listing.output and "(default)" in listing.output
    info = cli("datasets", "info", "mini")
    assert "metric:     angular" in info.output and "base:       500 x 8" in info.output
    exists = cli("datasets", "create", "mini")
    assert exists.exit_code != 0 and "pass --force" in exists.output


def commands(group=main, path=()):
    """Every command of the CLI as its argument path, groups included."""
    yield path
    for name, command in getattr(group, "commands", {}).items():
        yield from commands(command, (*path, name))


def test_help_everywhere_ends_with_real_examples(cli):
    for path in commands():
        result = cli(*path, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, path
        examples = result.output.split("Examples:")[-1].strip().splitlines()
        assert "Examples:" in result.output and len(examples) >= 2, (path, result.output)
        for line in examples:  # each example names a real command of this CLI
            words = line.split()
            while "=" in words[0]:  # an environment variable before the command
                words = words[1:]
            command = tuple(w for w in words[1:] if not w.startswith("-"))[: len(path)]
            assert words[0] == "annbench" and command in set(commands()), line
    assert "Override a grid parameter" in cli("run", "--help").output


@pytest.mark.parametrize(
    "args",
    [
        ["run", "-b", "hnswlib", "--runs", value]
        for value in ("0", "-1", "nan", "inf", "1e9", "two", "1001")
    ]
    + [["run", "-b", "hnswlib", "--min-time", value] for value in ("nan", "inf", "-1", "1e6")]
    + [["run", "-b", "hnswlib", "--timeout", value] for value in ("0", "-5", "nan", "inf")]
    + [["run", "-b", "hnswlib", "--k", value] for value in ("0", "-3", "nan", "1e99")]
    + [["run", "-b", "hnswlib", "--threads", value] for value in ("0", "1,x", "nan", "-2")]
    + [["run", "-b", "hnswlib", "--build-threads", value] for value in ("0", "nan")]
    + [["run", "-b", "hnswlib", "--workers", value] for value in ("0", "-1", "inf")]
    + [
        ["run", "-b", "hnswlib", "--memory-limit", value]
        for value in ("0", "-1GB", "lots", "nanGB")
    ]
    + [["recommend", "--min-recall", value] for value in ("0", "1.5", "nan", "-0.1")]
    + [["recommend", "--min-recall", "0.9", "--max-p99-ms", value] for value in ("0", "nan")]
    + [["recommend", "--min-recall", "0.9", "--max-build-s", value] for value in ("-1", "inf")]
    + [["recommend", "--min-recall", "0.9", "--max-memory", value] for value in ("0", "x")]
    + [["summary", "--latency-budget-ms", value] for value in ("0", "nan", "inf")]
    + [["report", "--latency-budget-ms", value] for value in ("-1", "nan")]
    + [["plot", "--k", value] for value in ("0", "nan")],
)
def test_bad_numbers_fail_in_the_parser_with_a_usage_message(cli, args):
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert "Invalid value for" in result.output and "--help" in result.output, result.output
    assert result.output.strip().count("\n") == 0, result.output


def test_help_shows_ranges_and_defaults(cli):
    text = cli("run", "--help").output
    assert "1<=x<=1000" in text and "--min-time" in text and "default: 1.0" in text


def test_backends_lists_every_backend(cli):
    output = cli("backends").output
    for name in ("faiss-flat", "faiss-ivf", "faiss-ivfpq", "faiss-hnsw", "hnswlib", "annoy"):
        assert name in output


@pytest.mark.slow
def test_sweep_progress_names_backend_configuration_and_step(tiny_path, isolated_folders):
    args = ["run", "-b", "hnswlib", "-d", str(tiny_path), "--runs", "1", "--min-time", "0"]
    args += ["-g", "M=8", "-g", "ef_construction=20", "-g", "ef=10,40"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Measuring [0/2] hnswlib [M=8 ef_construction=20]: building" in lines
    assert "Measuring [0/2] hnswlib [M=8 ef_construction=20]: searching ef=10" in lines
    assert "Measuring [1/2] hnswlib [M=8 ef_construction=20]: searching ef=40" in lines
    assert any(line.startswith("Measuring: 2/2 in ") for line in lines)
    assert "\r" not in result.output  # single lines when output is not a terminal
    quiet = CliRunner().invoke(main, [*args, "--force", "--quiet"])
    assert quiet.exit_code == 0 and "Measuring" not in quiet.output
    assert "Stored 2 results" in quiet.output


def test_progress_on_a_terminal_is_a_bar_with_counts_and_time_left():
    import io

    from annbench.progress import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    with progress_bar(4, "Measuring", file=out) as shown:
        shown.update(1)
        shown.status("hnswlib [M=8]: building")
        shown.update(3)
    text = out.getvalue()
    assert "\r" in text and "4/4" in text and "hnswlib [M=8]: building" in text
    assert re.search(r"<\d\d:\d\d", text)  # time left


def test_a_log_hears_of_a_long_step_every_half_minute(monkeypatch):
    """Output to a file or pipe (no terminal): a line with the rate and time left at least
    every LINE_EVERY_S seconds while units get done, not only at the end."""
    import io

    from annbench import progress

    clock = iter(range(0, 10_000, 20))  # each reading of the clock 20 s after the last
    monkeypatch.setattr(progress.time, "monotonic", lambda: float(next(clock)))
    out = io.StringIO()
    with progress.progress_bar(100, "Embedding texts", file=out) as shown:
        for _ in range(10):
            shown.update(10)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 5 and lines[-1].startswith("Embedding texts: 100/100 in ")
    assert re.fullmatch(r"Embedding texts \[\d+/100\] [\d.]+/s, about \d+ (s|min) left", lines[0])


def test_results_lists_both_recalls_only_where_they_differ(cli, isolated_folders):
    from tests_helpers import a_record

    with ResultStore(isolated_folders / "results") as store:
        store.put(a_record(ef=16, recall=0.9, ann_benchmarks_recall=0.9))
    same = cli("results")
    assert "ab_recall" not in same.output and "0.9000" in same.output
    with ResultStore(isolated_folders / "results") as store:
        store.put(a_record(ef=32, recall=0.8303, ann_benchmarks_recall=0.8408))
    both = cli("results")
    assert "ab_recall" in both.output and "0.8408" in both.output


def test_results_show_a_single_repeat_spread_as_unknown_and_label_precision(cli, isolated_folders):
    from tests_helpers import a_record

    with ResultStore(isolated_folders / "results") as store:
        store.put(a_record(ef=16, runs=1, qps_min=1000.0, qps_max=1000.0))
        store.put(a_record(ef=32, runs=3, label_precision=0.8125))
    table = cli("results").output.splitlines()
    header, once, thrice = table[0], table[1], table[2]
    assert "label_precision" in header and "0.8125" in thrice
    assert "unknown" in once and "unknown" not in thrice and " 20%" in thrice
    assert a_record(runs=1).qps_spread is None


def test_every_numeric_option_is_bounded_and_finite():
    import click

    from annbench.cli.types import FiniteFloat

    for path in commands():
        command = main
        for name in path:
            command = command.commands[name]
        for param in command.params:
            kind = param.type
            if isinstance(kind, click.types.FloatParamType):  # FLOAT and FloatRange take nan
                raise AssertionError(f"{' '.join(path)} {param.name}: use cli.types.FiniteFloat")
            if isinstance(kind, click.types.IntParamType):
                assert isinstance(kind, click.IntRange), f"{' '.join(path)} {param.name}"
                assert kind.min is not None and kind.max is not None, param.name
            assert not isinstance(kind, FiniteFloat) or None not in (kind.min, kind.max)


@pytest.mark.slow
def test_load_results_history_keeps_every_attempt(tiny_path, isolated_folders):
    import annbench

    args = dict(dataset=tiny_path, grid={"M": 8, "ef": 10}, runs=1, min_time=0, progress=False)
    annbench.run("hnswlib", **args)
    annbench.run("hnswlib", force=True, **args)
    assert len(annbench.load_results()) == 1
    history = annbench.load_results(history=True)
    assert len(history) == 2 and (history["build.M"] == 8).all()


@pytest.mark.slow
def test_output_cut_short_by_its_reader_is_no_error():
    """``annbench backends | head -1``: the reader closes the pipe; no message, no traceback."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "annbench.cli", "backends"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # before annbench writes anything
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and err == b"", err.decode()
