"""annbench: benchmark approximate-nearest-neighbour indexes and pick one for deployment.

The public API (see docs/guides/python.md)::

    import annbench
    frame = annbench.run(["hnswlib", "faiss-ivf"], dataset="tiny", runs=1)
    annbench.summary(frame)

Importing annbench is cheap: the functions load their modules on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "MIN_SECONDS",
    "AnnbenchError",
    "LoadOptions",
    "load_dataset",
    "load_results",
    "memory_fit",
    "pareto_frontier",
    "recommend",
    "recommend_at_size",
    "run",
    "runbook_summary",
    "scale",
    "scale_points",
    "serving_summary",
    "summary",
    "export_results",
    "plot_results",
    "write_report",
    "import_dataset",
    "embed_dataset",
]

if TYPE_CHECKING:
    from annbench.api import (
        MIN_SECONDS,
        LoadOptions,
        embed_dataset,
        export_results,
        import_dataset,
        load_dataset,
        load_results,
        memory_fit,
        pareto_frontier,
        plot_results,
        recommend,
        recommend_at_size,
        run,
        runbook_summary,
        scale,
        scale_points,
        serving_summary,
        summary,
        write_report,
    )
    from annbench.errors import AnnbenchError


def __getattr__(name: str) -> Any:
    """The public functions, imported from ``annbench.api`` when first used."""
    if name == "AnnbenchError":
        from annbench.errors import AnnbenchError

        return AnnbenchError
    if name in __all__:
        from annbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'annbench' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
