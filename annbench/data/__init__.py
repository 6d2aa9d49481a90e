"""Datasets: the catalog, the HDF5 format and its hashes, import, embedding, download, exact
ground truth and workloads (filters, runbooks)."""
