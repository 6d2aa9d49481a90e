"""``annbench datasets``: list, inspect, create, fetch, import and embed datasets."""

from __future__ import annotations

from pathlib import Path

import click

from annbench.cli import types
from annbench.cli.base import AnnbenchGroup, workers_option
from annbench.data.datasets import (
    BUILTIN,
    BUNDLED,
    DEFAULT_DATASET,
    available_datasets,
    create_synthetic,
    read_dataset,
    recompute_truth,
    resolve_dataset,
)
from annbench.data.importer import DEFAULT_QUERIES, new_dataset_path, plain_dataset_name
from annbench.errors import AnnbenchError, BadUsage
from annbench.metrics import Metric
from annbench.paths import check_input_file, data_dir
from annbench.progress import Stages


def _new_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The name of a dataset to write, given with or without its .hdf5 suffix (said so)."""
    if value is None:
        return None
    name = plain_dataset_name(value)
    if name != value:
        click.echo(f"Dataset name: {name} (annbench adds the .hdf5 suffix)", err=True)
    return name


#: ``--random-attr NAME`` of create, import and embed.
random_attr_option = click.option(
    "--random-attr",
    default=None,
    metavar="NAME",
    help="Add a uniform random numeric attribute NAME (seeded), for range filters unrelated "
    "to the vectors.",
)


@click.group(
    cls=AnnbenchGroup,
    epilog="""\b
Examples:
  annbench datasets list
  annbench datasets info clustered-10k-64-angular
  annbench datasets create mini --n 5000 --d 32
""",
)
def datasets() -> None:
    """List, inspect and create datasets (ann-benchmarks HDF5 layout)."""


@datasets.command(
    "list",
    epilog="""\b
Examples:
  annbench datasets list
  ANNBENCH_DATA=/data/ann annbench datasets list
""",
)
def datasets_list() -> None:
    """Datasets in the data folder and the built-in ones."""
    folder = data_dir()
    click.echo(f"Data folder: {folder}")
    for name in available_datasets():
        stored = (folder / f"{name}.hdf5").is_file()
        note = BUILTIN[name].description if name in BUILTIN else BUNDLED.get(name, "")
        state = (
            "stored"
            if stored
            else "bundled"
            if name in BUNDLED
            else "built-in, generated on first use"
        )
        default = " (default)" if name == DEFAULT_DATASET else ""
        click.echo(f"  {name}{default}: {state}{'; ' + note if note else ''}")
    from annbench.data.download import STANDARD

    click.echo("Standard ann-benchmarks datasets (annbench datasets fetch NAME):")
    for name, spec in sorted(STANDARD.items()):
        state = "stored" if (folder / f"{name}.hdf5").is_file() else f"~{spec.size_mb} MB"
        click.echo(
            f"  {name}: {spec.n:,} x {spec.d}, {spec.nq:,} queries, {spec.metric.value}; {state}"
        )


@datasets.command(
    "fetch",
    epilog="""\b
Examples:
  annbench datasets fetch glove-25-angular
  annbench datasets fetch sift-128-euclidean --url http://mirror.example/ann
""",
)
@click.argument("name")
@click.option(
    "--url",
    default=None,
    help="Mirror base URL [default: $ANNBENCH_DATASET_URL or ann-benchmarks.com].",
)
@types.quiet_option
def datasets_fetch(name: str, url: str | None, quiet: bool) -> None:
    """Download a standard ann-benchmarks dataset (resumable, verified) into the data folder."""
    from annbench.data.download import STANDARD, check_base_url, fetch_standard

    if url is not None and not url.strip():
        raise BadUsage("--url is empty; give a mirror's base URL or leave --url out")
    if url is not None:
        check_base_url(url)  # before anything is printed
    spec = STANDARD.get(name)
    if spec is not None:
        click.echo(f"{name}: {spec.description}, about {spec.size_mb} MB")
    with Stages(quiet) as stages:

        def progress(received: int, total: int | None) -> None:
            stages("downloading", received, total or 0)

        path = fetch_standard(name, data_dir(), base_url=url, progress=progress)
    click.echo(f"Ready: {path}")


@datasets.command(
    "import",
    epilog="""\b
Examples:
  annbench datasets import vectors.npy --name mine --metric angular
  annbench datasets import emb.parquet --name docs --metric dot --column embedding --queries 500
  annbench datasets import base.fvecs --name sift --metric euclidean --queries-file query.fvecs
""",
)
@click.argument("source", type=types.InputPath())
@click.option(
    "--name",
    required=True,
    callback=_new_name,
    help="Name of the dataset to write in the data folder.",
)
@click.option("--metric", required=True, help="euclidean, angular (cosine) or dot.")
@click.option(
    "--queries",
    default=DEFAULT_QUERIES,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="Rows held out of the base as queries (seeded).",
)
@click.option(
    "--queries-file",
    type=types.InputPath(),
    default=None,
    help="Take queries from this file instead of holding rows out.",
)
@click.option(
    "--labels",
    "labels_path",
    type=types.InputPath(),
    default=None,
    help="Class labels of the base rows: .npy or one label per line.",
)
@click.option("--normalize", is_flag=True, help="Scale vectors to unit length.")
@click.option("--seed", default=0, show_default=True, type=types.SEED, help="Query split seed.")
@click.option("--key", default=None, help="HDF5 dataset holding the vectors.")
@click.option("--column", default=None, help="Parquet column holding the vectors.")
@random_attr_option
@click.option("--force", is_flag=True, help="Overwrite an existing dataset of that name.")
@types.quiet_option
@click.pass_context
def datasets_import(
    ctx: click.Context,
    source: Path,
    name: str,
    metric: str,
    queries: int,
    queries_file: Path | None,
    labels_path: Path | None,
    normalize: bool,
    seed: int,
    key: str | None,
    column: str | None,
    random_attr: str | None,
    force: bool,
    quiet: bool,
) -> None:
    """Import your own embeddings (.npy, .fvecs/.ivecs/.bvecs, .parquet, .hdf5) with exact
    ground truth; files larger than memory are processed in chunks."""
    from annbench import api

    source_of = click.core.ParameterSource
    given = ctx.get_parameter_source("queries") in (source_of.COMMANDLINE, source_of.ENVIRONMENT)
    data = api.import_dataset(
        source,
        name,
        metric,
        queries=queries if given or queries_file is None else None,
        queries_file=queries_file,
        labels=labels_path,
        normalize=normalize,
        seed=seed,
        key=key,
        column=column,
        random_attr=random_attr,
        force=force,
        progress=not quiet,
    )
    click.echo(
        f"Wrote {data.path}: {len(data.train)} base vectors, {len(data.test)} queries, "
        f"d={data.train.shape[1]}, {data.metric.value}"
    )


@datasets.command(
    "info",
    epilog="""\b
Examples:
  annbench datasets info clustered-10k-64-angular
  annbench datasets info debian-packages-384-angular
""",
)
@click.argument("name")
def datasets_info(name: str) -> None:
    """Shapes, metric, hash and attributes of a dataset."""
    data = read_dataset(resolve_dataset(name, progress=click.echo))
    click.echo(f"name:       {data.name}")
    click.echo(f"file:       {data.path}")
    click.echo(f"metric:     {data.metric.value}")
    click.echo(f"base:       {len(data.train)} x {data.train.shape[1]}")
    click.echo(f"queries:    {len(data.test)}")
    click.echo(f"truth k:    {data.neighbors.shape[1]}")
    click.echo(f"labels:     {'yes' if data.train_labels is not None else 'no'}")
    click.echo(f"attributes: {', '.join(data.attr_names) or 'none'}")
    click.echo(f"hash:       {data.content_hash}")
    for key, value in sorted(data.attrs.items()):
        click.echo(f"attr {key}: {value}")


@datasets.command(
    "runbook",
    epilog="""\b
Examples:
  annbench datasets runbook debian-packages-384-angular sliding-window
  annbench datasets runbook my-import path/to/my-runbook.yaml --force
""",
)
@click.argument("name")
@click.argument("runbook")
@click.option("--force", is_flag=True, help="Recompute even if the ground truth is cached.")
def datasets_runbook(name: str, runbook: str, force: bool) -> None:
    """Exact ground truth of every search step of RUNBOOK (a shipped name or a YAML file)."""
    from annbench.data.runbooks import prepare_runbook

    data = read_dataset(resolve_dataset(name, progress=click.echo))
    with Stages() as stages:

        def progress(done: int, total: int) -> None:
            stages("ground truth", done, total)

        plan, computed = prepare_runbook(data, runbook, recompute=force, progress=progress)
    steps = plan.runbook.search_steps()
    state = "computed" if computed else "already cached"
    click.echo(
        f"{plan.runbook.name}: {len(plan.runbook.steps)} steps, ground truth of {len(steps)} "
        f"search steps {state} in {plan.truth_path} (fewest live rows: {plan.min_live})"
    )


@datasets.command(
    "truth",
    epilog="""\b
Examples:
  annbench datasets truth my-import --force
  annbench datasets truth path/to/file.hdf5 --name file-fixed
  annbench datasets truth big.hdf5 --name big --chunk-rows 100000
  annbench datasets truth big.hdf5 --name big --scheduler tcp://10.0.0.5:8786
""",
)
@click.argument("source")
@click.option(
    "--name",
    default=None,
    callback=_new_name,
    help="Name to write in the data folder [default: the source's].",
)
@click.option("--force", is_flag=True, help="Overwrite an existing dataset of that name.")
@click.option(
    "--chunk-rows",
    default=None,
    type=click.IntRange(1, 10**9),
    help="Stream the base from the file this many rows at a time, for a base larger than "
    "memory (peak memory bounded by the chunk, printed) [default: all in memory].",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="local|tcp://HOST:PORT",
    help="Shard the base over a Dask cluster: each worker streams its own rows, the top-k "
    "lists are merged (same ids as one machine, ties included).",
)
@workers_option
def datasets_truth(
    source: str,
    name: str | None,
    force: bool,
    chunk_rows: int | None,
    scheduler: str | None,
    workers: int,
) -> None:
    """Recompute a dataset's exact ground truth (neighbors, distances) from its vectors."""
    from annbench.data import scale_truth

    src = resolve_dataset(source)
    path = new_dataset_path(name or src.stem, force)
    if scheduler is not None:
        from annbench.sweep.distributed import dask_client

        with dask_client(scheduler, workers) as client:
            scale_truth.recompute_ground_truth(src, chunk_rows, client=client, dest=path)
    elif chunk_rows is not None:
        scale_truth.recompute_ground_truth(src, chunk_rows, dest=path)
    else:
        recompute_truth(src, path)
    data = read_dataset(path)
    if chunk_rows is not None or scheduler is not None:
        rows = chunk_rows or scale_truth.chunk_rows_for(data.train.shape[1])
        bound = scale_truth.streamed_peak_bytes(
            rows, data.train.shape[1], len(data.test), data.neighbors.shape[1]
        )
        where = "each Dask task" if scheduler is not None else "the stream"
        click.echo(
            f"Streamed {rows:,} base rows at a time: {where} held at most "
            f"{bound / 2**20:,.0f} MiB of arrays, whatever the base size"
        )
    click.echo(
        f"Wrote {path}: ground truth of {len(data.test)} queries (k={data.neighbors.shape[1]}) "
        f"recomputed over {len(data.train)} base vectors"
    )


@datasets.command(
    "create",
    epilog="""\b
Examples:
  annbench datasets create mini --n 5000 --nq 200 --d 32
  annbench datasets create cos --metric angular --clusters 16 --seed 7
""",
)
@click.argument("name", callback=_new_name)
@click.option(
    "--n", default=20_000, show_default=True, type=click.IntRange(1, 10**9), help="Base vectors."
)
@click.option(
    "--nq",
    default=1_000,
    show_default=True,
    type=click.IntRange(1, 10**7),
    help="Held-out queries.",
)
@click.option(
    "--d", "dim", default=128, show_default=True, type=click.IntRange(1, 65_536), help="Dimension."
)
@click.option("--metric", default="euclidean", show_default=True, help="euclidean, angular or dot.")
@click.option(
    "--clusters",
    default=64,
    show_default=True,
    type=click.IntRange(1, 10**6),
    help="Gaussian clusters.",
)
@click.option("--seed", default=0, show_default=True, type=types.SEED)
@random_attr_option
@click.option("--force", is_flag=True, help="Overwrite an existing dataset of that name.")
def datasets_create(
    name: str,
    n: int,
    nq: int,
    dim: int,
    metric: str,
    clusters: int,
    seed: int,
    random_attr: str | None,
    force: bool,
) -> None:
    """Generate a clustered-Gaussian dataset with exact ground truth into the data folder."""
    path = new_dataset_path(name, force)
    if clusters < 1:
        raise BadUsage(f"--clusters must be at least 1, got {clusters}")
    create_synthetic(
        path, n, nq, dim, Metric.parse(metric), clusters, seed, random_attr=random_attr
    )
    click.echo(f"Wrote {path}")


@datasets.command(
    "synth",
    epilog="""\b
Examples:
  annbench datasets synth debian-like-1m --n 1000000
  annbench datasets synth mine-10x --like path/to/mine.hdf5 --n 500000 --save-model mine.npz
  annbench datasets synth mine-50x --like mine.npz --n 2500000 --no-truth
""",
)
@click.argument("name", callback=_new_name)
@click.option(
    "--like",
    "source",
    default=DEFAULT_DATASET,
    show_default=True,
    help="Real dataset (name or HDF5 path) to fit the model to, or a model saved with "
    "--save-model (.npz).",
)
@click.option(
    "--n",
    default=1_000_000,
    show_default=True,
    type=click.IntRange(1, 10**10),
    help="Base vectors.",
)
@click.option(
    "--nq",
    default=1_000,
    show_default=True,
    type=click.IntRange(1, 10**7),
    help="Held-out queries.",
)
@click.option("--seed", default=0, show_default=True, type=types.SEED)
@click.option("--metric", default=None, help="euclidean, angular or dot [default: the source's].")
@click.option(
    "--clusters",
    default=None,
    type=click.IntRange(1, 10**6),
    help="Topic clusters of the model [default: one per 40 source vectors, at most 4,096].",
)
@click.option(
    "--intrinsic-dim",
    default=None,
    type=click.IntRange(1, 65_536),
    help="Principal directions of every cluster [default: as many as explain 70% of its variance].",
)
@click.option(
    "--save-model",
    default=None,
    type=types.OutputPath(),
    help="Also save the fitted model (.npz) to draw more later with --like.",
)
@click.option(
    "--no-truth",
    is_flag=True,
    help="Leave out the exact ground truth (add it later with 'annbench datasets truth').",
)
@click.option(
    "--check",
    is_flag=True,
    help="Also compare a sample of the source's size with the source: intrinsic dimension, "
    "relative contrast, HNSW recall.",
)
@types.quiet_option
@click.option("--force", is_flag=True, help="Overwrite an existing dataset of that name.")
def datasets_synth(
    name: str,
    source: str,
    n: int,
    nq: int,
    seed: int,
    metric: str | None,
    clusters: int | None,
    intrinsic_dim: int | None,
    save_model: Path | None,
    no_truth: bool,
    check: bool,
    quiet: bool,
    force: bool,
) -> None:
    """Write a SYNTHETIC dataset shaped like real embeddings (clusters with their principal
    directions, near-duplicates), drawn from a model fitted to a real dataset, with held-out
    queries and exact ground truth. The file says it is synthetic and what it was fitted to."""
    from annbench.data.embedding_like import EmbeddingModel, create_like, fit_embedding_model

    try:
        chosen = Metric.parse(metric) if metric is not None else None
    except AnnbenchError as exc:
        raise BadUsage(str(exc)) from exc
    path = new_dataset_path(name, force)
    real = None
    if source.endswith(".npz"):
        if clusters is not None or intrinsic_dim is not None:
            raise BadUsage(
                "--clusters and --intrinsic-dim fit a model; a saved model (--like *.npz) is "
                "drawn from as it is"
            )
        if check:
            raise BadUsage("--check compares with a real dataset; give one to --like")
        model = EmbeddingModel.load(check_input_file(Path(source), "Model file"))
    else:
        real = read_dataset(resolve_dataset(source, progress=click.echo))
        model = fit_embedding_model(
            real, n_clusters=clusters, intrinsic_dim=intrinsic_dim, seed=seed
        )
    if save_model is not None:
        click.echo(f"Model saved to {model.save(save_model)}")
    with Stages(quiet) as stages:
        create_like(path, model, n, nq, seed, chosen, truth=not no_truth, progress=stages)
    summary = model.summary()
    fitted = summary.get("fitted from", {}).get("name", "no dataset")
    click.echo(
        f"Wrote {path}: {n:,} x {model.d} SYNTHETIC vectors and {nq:,} held-out queries drawn "
        f"from a model of {summary['clusters']} clusters fitted to {fitted}"
    )
    if no_truth:
        click.echo(f"No ground truth yet: add it with 'annbench datasets truth {name} --force'")
    if check and real is not None:
        import numpy as np

        from annbench.data.embedding_like import held_out_sample
        from annbench.data.resemblance import compare, profile

        base, queries, _, _ = held_out_sample(model, len(real.train), len(real.test), seed + 1)
        checks = compare(
            profile(real.train, real.test, real.metric),
            profile(np.asarray(base), queries, real.metric),
        )
        click.echo(f"Resemblance of a {len(real.train):,}-vector sample to {real.name}:")
        for label, found in checks.items():
            verdict = "ok" if found["ok"] else "DIFFERS"
            click.echo(
                f"  {label:18} real {found['real']:8.3f}  synthetic {found['other']:8.3f}  "
                f"difference {found['difference']:.3f} (limit {found['limit']}): {verdict}"
            )


@datasets.command(
    "embed",
    epilog="""\b
Examples:
  annbench datasets embed notes.txt --name notes
  annbench datasets embed packages.tsv --name pkgs --label-column section --float16
  annbench datasets embed photos/ --name photos --model clip-ViT-B-32
""",
)
@click.argument("source", type=types.InputPath())
@click.option(
    "--name",
    required=True,
    callback=_new_name,
    help="Name of the dataset to write in the data folder.",
)
@click.option("--text-column", default="text", show_default=True, help="CSV/TSV text column.")
@click.option("--label-column", default=None, help="CSV/TSV column holding class labels.")
@click.option(
    "--model",
    default="all-MiniLM-L6-v2",
    show_default=True,
    help="sentence-transformers model name or path (a CLIP model for images).",
)
@click.option(
    "--queries",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="Held-out queries.",
)
@click.option("--seed", default=0, show_default=True, type=types.SEED, help="Query split seed.")
@click.option(
    "--batch-size",
    default=64,
    show_default=True,
    type=click.IntRange(1, 65_536),
    help="Texts or images per model call.",
)
@click.option("--float16", is_flag=True, help="Store vectors as float16 (half the size).")
@click.option(
    "--threads",
    type=types.THREADS,
    default=None,
    help="Threads the model computes with [default: torch's, one per core]; on a small or busy "
    "machine one can be faster.",
)
@click.option(
    "--attr-column",
    "attr_columns",
    multiple=True,
    metavar="COLUMN",
    help="CSV/TSV column of numbers to keep as a numeric attribute (for range filters).",
)
@random_attr_option
@click.option("--force", is_flag=True, help="Overwrite an existing dataset of that name.")
@types.quiet_option
def datasets_embed(
    source: Path,
    name: str,
    text_column: str,
    label_column: str | None,
    model: str,
    queries: int,
    seed: int,
    batch_size: int,
    float16: bool,
    threads: int | None,
    attr_columns: tuple[str, ...],
    random_attr: str | None,
    force: bool,
    quiet: bool,
) -> None:
    """Embed texts (a .txt file, or CSV/TSV with a text column) or a folder of images (one
    sub-folder per class) into a labelled angular dataset. Needs the [embed] extra."""
    from annbench import api

    data = api.embed_dataset(
        source,
        name,
        text_column=text_column,
        label_column=label_column,
        model=model,
        queries=queries,
        seed=seed,
        batch_size=batch_size,
        float16=float16,
        threads=threads,
        attr_columns=attr_columns,
        random_attr=random_attr,
        force=force,
        progress=not quiet,
    )
    click.echo(
        f"Wrote {data.path}: {len(data.train)} base vectors, {len(data.test)} queries, "
        f"d={data.train.shape[1]}"
    )
