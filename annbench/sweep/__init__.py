"""Sweeps: grid overrides, planning, the isolated worker that builds and times, serving memory,
runbook replay, Dask."""
