"""``annbench recommend``: the configuration that meets every limit with the best objective."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
import pandas as pd

from annbench.cli import types
from annbench.cli.base import filter_workloads, grid_option, results_option
from annbench.cli.tables import missing, num
from annbench.data.datasets import DEFAULT_DATASET, read_dataset, resolve_dataset
from annbench.paths import results_dir
from annbench.recommender import DEFAULT_TIME_BUDGET_S, EXIT_NOTHING_FITS, FULL_PROTOCOL
from annbench.record import MODES, PLAIN
from annbench.results.store import ResultStore
from annbench.sweep.grids import parse_overrides


@click.command(
    "recommend",
    epilog="""\b
Examples:
  annbench recommend --min-recall 0.95
  annbench recommend -d clustered-10k-64-angular --min-recall 0.9 --max-p99-ms 1 --max-memory 1GB
  annbench recommend --max-latency-ms 0.3 --max-memory 12MB --measure --emit python
  annbench recommend --min-recall 0.99 --optimize memory --measure -b hnswlib
  annbench recommend --at-qps 2000 --max-p99-ms 1 --min-recall 0.9
  annbench recommend --at-qps 2000 --max-p99-ms 1 --measure -b hnswlib --time-budget 120
""",
)
@click.option("--dataset", "-d", default=DEFAULT_DATASET, show_default=True)
@click.option(
    "--min-recall",
    type=types.RECALL,
    default=None,
    help="Recall@k the choice must reach (needed unless --optimize recall).",
)
@click.option(
    "--max-latency-ms",
    type=types.MILLISECONDS,
    default=None,
    help="Largest mean latency per query (ms).",
)
@click.option("--max-p99-ms", type=types.MILLISECONDS, default=None, help="Largest p99 (ms).")
@click.option(
    "--at-qps",
    type=types.FiniteFloat(0, 1_000_000, min_open=True),
    default=None,
    metavar="QPS",
    help="Answer for queries arriving at this rate (queries/s, open loop; needs --max-p99-ms): "
    "each configuration is judged by its rate-mode record at the lowest offered rate measured "
    "at or above it, and only if it kept up.",
)
@click.option(
    "--max-memory",
    default=None,
    metavar="SIZE",
    callback=lambda ctx, param, value: _size_text(ctx, param, value),
    help="Largest memory (see --memory-figure), e.g. 40MB (10^6 bytes) or 38MiB (2^20).",
)
@click.option(
    "--latency-clock",
    type=click.Choice(["wall", "cpu"]),
    default="wall",
    show_default=True,
    help="Which time --max-latency-ms and --max-p99-ms mean: wall (what a caller waits) or "
    "cpu (the search thread's CPU time, without the host's interference; single mode).",
)
@click.option(
    "--memory-figure",
    type=click.Choice(["serving", "rss"]),
    default="serving",
    show_default=True,
    help="Which memory --max-memory means: serving (the index's own resident pages in a fresh "
    "process) or rss (that process's whole resident set gain, library code too).",
)
@click.option(
    "--max-build-s", type=types.SECONDS, default=None, help="Longest build time allowed (s)."
)
@click.option(
    "--optimize",
    type=click.Choice(["recall", "qps", "memory", "build", "latency"]),
    default=None,
    help="What to make best among what fits (latency: p99) "
    "[default: qps with --min-recall, else recall].",
)
@click.option("--k", type=types.K, default=10, show_default=True)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="single",
    show_default=True,
    help="Query mode the limits are for: single (one query per call, one thread) or batch "
    "(--at-qps implies rate).",
)
@click.option(
    "--threads",
    type=types.THREADS,
    default=None,
    help="Batch mode: search threads [default: all cores].",
)
@click.option(
    "--filter",
    "filter_spec",
    default="none",
    show_default=True,
    metavar="SPEC",
    help="Recommend for this filter workload (label, range:0.01...).",
)
@click.option(
    "--measure",
    is_flag=True,
    help="First measure: index structures sized to --max-memory (or the grids of -b "
    "backends), bisecting each one's search parameter, within --time-budget; with --at-qps, "
    "then the settings whose single-query figures make that rate plausible, at the rate.",
)
@click.option(
    "--backend",
    "-b",
    "backends",
    multiple=True,
    help="With --measure: bisect these backends' grids instead of proposing structures.",
)
@grid_option("With --measure -b: grid overrides, as for run.")
@click.option(
    "--time-budget",
    "time_budget_s",
    type=types.SECONDS,
    default=DEFAULT_TIME_BUDGET_S,
    show_default=True,
    help="With --measure: seconds to spend building and measuring.",
)
@click.option(
    "--build-threads",
    type=types.THREADS,
    default=None,
    help="With --measure: threads for building [default: all cores].",
)
@click.option(
    "--load-seconds",
    type=types.LOAD_SECONDS,
    default=None,
    help="With --measure --at-qps: measured seconds of each load run [default: 3].",
)
@click.option(
    "--runs",
    default=FULL_PROTOCOL.runs,
    show_default=True,
    type=types.RUNS,
    help="With --measure: timed repeats of every full measurement (probes take one).",
)
@click.option(
    "--min-time",
    "min_seconds",
    default=FULL_PROTOCOL.min_seconds,
    show_default=True,
    type=types.MIN_TIME,
    help="With --measure: repeat a full measurement until its repeats add up to this (s).",
)
@click.option(
    "--at-size",
    default=None,
    metavar="N",
    help="Answer for a base of N vectors (50M) from the growth laws of size ladders "
    "('annbench run --sizes'): PREDICTED figures, not measured ones.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON on stdout.")
@click.option(
    "--emit",
    type=click.Choice(["python"]),
    default=None,
    help="Print a runnable snippet that builds and queries the pick with its library.",
)
@click.option(
    "--save-index",
    type=types.OutputPath(),
    default=None,
    help="Build the pick on the dataset and save it here, with PATH.json describing it.",
)
@results_option
def recommend_command(
    dataset: str,
    min_recall: float | None,
    max_latency_ms: float | None,
    max_p99_ms: float | None,
    at_qps: float | None,
    max_memory: float | None,
    latency_clock: str,
    memory_figure: str,
    max_build_s: float | None,
    optimize: str | None,
    k: int,
    mode: str,
    threads: int | None,
    filter_spec: str,
    measure: bool,
    backends: tuple[str, ...],
    grid_overrides: tuple[str, ...],
    time_budget_s: float,
    build_threads: int | None,
    load_seconds: float | None,
    runs: int,
    min_seconds: float,
    at_size: str | None,
    as_json: bool,
    emit: str | None,
    save_index: Path | None,
    results_path: Path | None,
) -> None:
    """Pick the configuration that meets every limit with the best objective.

    With --at-qps the limits hold while queries arrive at that rate, from rate-mode records
    (annbench run --mode rate); the answer states the client and core counts its figure was
    measured with.

    Exit status: 0 with a pick, 3 when nothing meets the targets (the closest misses are
    listed, nearest the budget first) or nothing was measured at the --at-qps rate, 1 on
    errors, 2 on usage errors.
    """
    import json

    from annbench.recommend_load import load_figures, load_warnings
    from annbench.recommender import MeasurementPolicy, recommend_index
    from annbench.results.analysis import Constraints, describe_bytes
    from annbench.results.deploy import emit_python
    from annbench.results.deploy import save_index as save_index_to
    from annbench.sweep.load import LoadOptions
    from annbench.time_budget import process_started

    if as_json and emit:
        raise click.UsageError("--json and --emit both print to stdout; use one of them")
    if at_size is not None:
        sized_options = {
            "--measure": measure,
            "--at-qps": at_qps is not None,
            "--max-p99-ms": max_p99_ms is not None,
            "--emit": emit is not None,
            "--save-index": save_index is not None,
            "--optimize": optimize is not None,
            "--filter": filter_spec not in ("none", PLAIN),
        }
        clash = [name for name, given in sized_options.items() if given]
        if clash:
            raise click.UsageError(
                f"--at-size answers from predicted figures of plain single-query sweeps; "
                f"{clash[0]} does not apply to it"
            )
        _recommend_at_size(
            at_size,
            dataset,
            results_path,
            max_memory,
            min_recall,
            max_latency_ms,
            max_build_s,
            k,
            as_json,
        )
        return
    if (backends or grid_overrides) and not measure:
        option = "-b" if backends else "--grid"
        raise click.UsageError(
            f"{option} chooses what --measure measures; add --measure, or leave {option} out to "
            "pick among what is stored"
        )
    memory_bytes = types.SIZE.convert(max_memory, None, None) if max_memory else None
    constraints = Constraints(
        min_recall=min_recall,
        max_p99_ms=max_p99_ms,
        max_memory_bytes=memory_bytes,
        max_build_s=max_build_s,
        max_latency_ms=max_latency_ms,
        clock=latency_clock,
        memory_figure=memory_figure,
    )
    mode_given = click.get_current_context().get_parameter_source("mode") not in (
        click.core.ParameterSource.DEFAULT,
        None,
    )
    if at_qps is not None:
        if mode_given and mode != "rate":
            raise click.UsageError(
                f"--at-qps asks about queries arriving at a rate (open-loop rate mode); "
                f"--mode {mode} contradicts it: leave --mode out"
            )
        if max_p99_ms is None:
            raise click.UsageError(
                f"--at-qps {at_qps:g} needs --max-p99-ms: the p99 latency the configuration "
                "must keep while queries arrive at that rate"
            )
        mode = "rate"
    elif load_seconds is not None:
        raise click.UsageError("--load-seconds sets the load runs of --at-qps; add --at-qps")
    if load_seconds is not None and not measure:
        raise click.UsageError(
            "--load-seconds sets how long --measure measures each setting at the rate; "
            "add --measure"
        )
    if latency_clock == "cpu" and at_qps is not None:
        raise click.UsageError(
            "--at-qps figures are wall time from each query's intended send time; "
            "--latency-clock cpu needs single mode"
        )
    if latency_clock == "cpu" and mode != "single":
        raise click.UsageError("--latency-clock cpu needs --mode single (CPU times are per query)")
    quiet = as_json or emit is not None  # stdout carries only the JSON or the snippet

    def say(text: str) -> None:
        click.echo(text, err=quiet)

    data = read_dataset(resolve_dataset(dataset, progress=lambda t: click.echo(t, err=True)))
    workloads = filter_workloads((filter_spec,), data)
    if len(workloads) != 1:
        raise click.BadParameter("give one workload, e.g. range:0.01", param_hint="--filter")
    overrides = parse_overrides(grid_overrides)
    location = results_path or results_dir()
    with ResultStore(location) if measure else ResultStore.open_existing(location) as store:
        if measure:
            say(_limits_line(constraints, max_memory, mode, threads, at_qps))
        outcome = recommend_index(
            data,
            store,
            constraints,
            optimize,
            k=k,
            mode=mode if mode_given or at_qps is not None else None,
            threads=threads,
            measure=measure,
            backends=list(backends) or None,
            overrides=overrides or None,
            time_budget_s=time_budget_s,
            policy=MeasurementPolicy(runs, min_seconds),
            progress=say,
            workload=workloads[0],
            build_threads=build_threads,
            started=process_started(),
            at_qps=at_qps,
            load=None if load_seconds is None else LoadOptions(seconds=load_seconds),
        )
    result = outcome.recommendation
    for line in outcome.budget_report():  # what --measure's time budget bought
        say(line)
    if as_json:
        payload = outcome.to_dict()
        if max_memory:
            payload["constraints"]["max_memory"] = describe_bytes(max_memory)
        click.echo(json.dumps(payload, indent=2, default=str))
    if not measure:
        say(_limits_line(constraints, max_memory, mode, outcome.threads, at_qps))
    if at_qps is not None:
        cores = outcome.cores or 1

        def figures(row: pd.Series) -> str:
            return load_figures(row, at_qps, cores)

    else:
        figures = _figures
    if result.choice is None:
        under = "" if workloads[0] == PLAIN else f", filter {workloads[0]}"
        say(
            f"Nothing stored for {data.name} (k={k}, {outcome.query_mode}{under}) meets the "
            "constraints."
        )
        if result.closest is not None and len(result.closest):
            say("Closest misses, nearest the budget first:")
            for _, row in result.closest.iterrows():
                say(f"  {row['config']}: {figures(row)} - breaks {row['violations']}")
        say(outcome.hint or "Measure more with --measure, or relax a constraint.")
        sys.exit(EXIT_NOTHING_FITS)
    choice = result.choice
    say(f"Recommended: {choice['config']}")
    if at_qps is not None:
        say(f"  {figures(choice)}")
        for warning in load_warnings(choice):
            say(f"  [{warning}]")
    else:
        say(f"  {_figures(choice)}{_noisy(choice)}{_interfered(choice)}")
    say(
        f"  best {outcome.objective} of {result.candidates} stored configurations meeting "
        f"every constraint; figures for {outcome.query_mode}"
    )
    if result.indistinguishable is not None and len(result.indistinguishable):
        others = "; ".join(result.indistinguishable["config"].head(3))
        say(
            f"  indistinguishable within the measured spread from: {others} "
            "(picked the simpler, smaller index)"
        )
    for reason in result.binding:
        say(f"  bound by {reason}")
    if len(result.runners_up):
        say("Runners-up:")
        for _, row in result.runners_up.iterrows():
            say(f"  {row['config']}: {figures(row)}")
    if emit == "python":
        click.echo(emit_python(choice, data, k), nl=False)
    if save_index is not None:
        meta = save_index_to(choice, data, save_index, k, outcome.query_mode)
        say(f"Saved the index to {save_index} and its description to {meta}")


def _size_text(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A memory size checked as one (a usage error if not), kept as typed to echo its unit."""
    if value is not None:
        types.SIZE.convert(value, param, ctx)
    return value


def _recommend_at_size(
    at_size: str,
    dataset: str,
    results_path: Path | None,
    max_memory: float | None,
    min_recall: float | None,
    max_latency_ms: float | None,
    max_build_s: float | None,
    k: int,
    as_json: bool,
) -> None:
    """``recommend --at-size``: the pick from predicted figures, said to be predicted."""
    import json

    from annbench import api
    from annbench.cli.scale import format_value

    pick = api.recommend_at_size(
        at_size, dataset, results_path, max_memory, min_recall, max_latency_ms, max_build_s, k
    )
    if as_json:
        payload = {
            "predicted": True,
            "at_size": pick.at_size,
            "choice": pick.choice,
            "candidates": pick.candidates.to_dict("records"),
        }
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        click.echo(sized_text(pick, format_value))
    if pick.choice is None:
        sys.exit(EXIT_NOTHING_FITS)


def sized_text(pick: Any, value: Any) -> str:
    """``recommend --at-size``'s answer as text: the pick or the misses, all PREDICTED."""
    lines = [
        f"PREDICTED for {pick.at_size:,} vectors: every figure below is extrapolated from "
        "size ladders by fitted laws, not measured (intervals at 90%; held-out: the error "
        "of each law predicting the largest size measured from the smaller ones)."
    ]

    def describe(row: dict[str, Any]) -> list[str]:
        held = row["qps_held_out_error"]
        checked = "" if row["held_out_passed"] else "  [a law FAILED its held-out check]"
        out = [
            f"{row['config']}, recall {row['recall']:g}"
            + (
                f" at {row['effort_label'].split(' ')[0]} ~ {row['effort']:.3g}"
                if not missing(row["effort"])
                else ""
            )
            + f"  (x{row['extrapolation']:,.0f} beyond the largest size measured){checked}",
            f"  QPS {value(row['qps'], 'q/s')} [{_or(row['qps_low'], value, 'q/s')}, "
            f"{_or(row['qps_high'], value, 'q/s')}], {row['latency_ms']:.3g} ms per query"
            + ("" if missing(held) else f"; held-out {held:+.0%}"),
        ]
        if not missing(row["memory_bytes"]):
            out.append(
                f"  {row['memory_figure']} {value(row['memory_bytes'], 'B')} "
                f"(up to {value(row['memory_high'], 'B')})"
                + (
                    ""
                    if missing(row["memory_held_out_error"])
                    else f"; held-out {row['memory_held_out_error']:+.0%}"
                )
            )
        if not missing(row["build_s"]):
            out.append(
                f"  build {value(row['build_s'], 's')} (up to {value(row['build_high'], 's')})"
                + (
                    ""
                    if missing(row["build_held_out_error"])
                    else f"; held-out {row['build_held_out_error']:+.0%}"
                )
            )
        return out

    if pick.choice is not None:
        lines += ["", "Pick:", *describe(pick.choice)]
        others = pick.candidates[
            pick.candidates["problem"].isna() & (pick.candidates["config"] != pick.choice["config"])
        ]
        if len(others):
            lines += ["", "Also within the limits (predicted):"]
            lines += [
                f"  {r['config']}, recall {r['recall']:g}: QPS {value(r['qps'], 'q/s')}"
                for r in others.to_dict("records")
            ]
    else:
        lines += ["", "Nothing is predicted to meet the limits at this size. Closest:"]
        for row in pick.candidates.to_dict("records")[:5]:
            lines.append(f"  {row['config']}, recall {row['recall']:g}: {row['problem']}")
    return "\n".join(lines)


def _or(number: Any, value: Any, unit: str) -> str:
    return "?" if missing(number) else value(number, unit)


def _limits_line(
    constraints: Any,
    max_memory: str | None,
    mode: str,
    threads: int | None,
    at_qps: float | None = None,
) -> str:
    """The limits as understood, memory in both MB and MiB."""
    from annbench.recommender import query_mode
    from annbench.results.analysis import describe_bytes

    parts = []
    clock = "CPU time" if constraints.clock == "cpu" else "wall time"
    if constraints.min_recall is not None:
        parts.append(f"recall >= {constraints.min_recall:g}")
    if constraints.max_latency_ms is not None:
        parts.append(f"mean latency <= {constraints.max_latency_ms:g} ms ({clock})")
    if constraints.max_p99_ms is not None:
        at = f" at {at_qps:,.0f} queries/s offered" if at_qps is not None else ""
        parts.append(f"p99 <= {constraints.max_p99_ms:g} ms ({clock}){at}")
    if max_memory:
        figure = (
            "process RSS gain (fresh process, library code included)"
            if constraints.memory_figure == "rss"
            else "serving memory (the index's own resident pages, fresh process)"
        )
        parts.append(f"{figure} <= {describe_bytes(max_memory)}")
    if constraints.max_build_s is not None:
        parts.append(f"build <= {constraints.max_build_s:g} s")
    threads = threads or (1 if mode in ("single", "rate") else os.cpu_count() or 1)
    mode_text = query_mode(mode, threads, at_qps)
    return f"Limits: {', '.join(parts) or 'none'}; query mode: {mode_text}"


def _figures(row: pd.Series) -> str:
    """A point's recall, latencies (wall, with CPU time beside where measured), QPS, memory
    (serving, with the process's whole RSS gain beside) and build time in one line."""
    memory = "serving memory" if pd.notna(row.get("serving_memory_bytes")) else "memory"
    size, rss = row.get("index_bytes"), row.get("serving_rss_bytes")
    cpu = pd.notna(row.get("cpu_p99_ms"))
    return (
        f"recall {row['recall']:.4f}, mean {num(row.get('latency_mean_ms'), '.3f')} ms"
        + (f" (CPU {row['cpu_mean_ms']:.3f})" if cpu else "")
        + f", p99 {num(row.get('latency_p99_ms'), '.3f')} ms"
        + (f" (CPU {row['cpu_p99_ms']:.3f})" if cpu else "")
        + f", {row['qps']:,.0f} QPS, {memory} {num(row['memory_footprint'] / 1e6, '.1f')} MB"
        + (f" (process RSS gain {rss / 1e6:.1f} MB)" if pd.notna(rss) else "")
        + (f", file {size / 1e6:.1f} MB" if pd.notna(size) and size else "")
        + f", build {num(row.get('build_s'), '.2f')} s"
    )


def _interfered(row: pd.Series) -> str:
    """A mark on figures measured while the host took the core away, with the ratios."""
    from annbench.results.analysis import describe_interference

    if not row.get("interference"):
        return ""
    return (
        f"  [host interference: {describe_interference(row)}; the CPU figures describe the "
        "index, the wall figures this host at that moment]"
    )


def _noisy(row: pd.Series) -> str:
    """Why a pick's figures are unstable across repeats, if they are (or cannot be told)."""
    if pd.isna(row.get("qps_spread")):
        return "  [spread unknown: one timed repeat]"
    reasons = []
    if row.get("qps_noisy"):
        reasons.append(f"QPS spread {row['qps_spread']:.0%}")
    if row.get("p99_noisy"):
        reasons.append(f"p99 spread {row['p99_spread']:.0%}")
    return f"  [noisy: {', '.join(reasons)} across repeats]" if reasons else ""
