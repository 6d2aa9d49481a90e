"""Sweeps: grids, planning, the isolated worker that builds and times, serving memory,
runbook replay, Dask."""
