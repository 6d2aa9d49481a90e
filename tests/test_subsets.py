"""Size ladders: parsing sizes, nested subsets, per-size ground truth and its hash."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from annbench.data.format import read_dataset
from annbench.data.groundtruth import exact_knn
from annbench.data.subsets import (
    base_subset,
    check_sizes,
    nested_rows,
    parse_count,
    parse_sizes,
    prepare_sizes,
    size_hash,
)
from annbench.errors import BadUsage


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1/16,1/8,1/4,1/2,1", [125, 250, 500, 1000, 2000]),
        ("0.25,0.5,1.0", [500, 1000, 2000]),
        ("100,1k,2000", [100, 1000, 2000]),
        ("1.5k,2k", [1500, 2000]),
        ("1/4, 1/2", [500, 1000]),
    ],
)
def test_sizes_are_fractions_or_counts(text, expected):
    assert parse_sizes(text, 2000, k=10) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0", "at least 1"),
        ("0/4", "(0, 1]"),
        ("2001", "above the 2,000"),
        ("1/2,1/4", "must increase"),
        ("500,500", "must increase"),
        ("abc", "not a count"),
        ("1/0", "not a fraction"),
        ("1/x", "not a fraction"),
        ("1/2,,1", "empty entry"),
        ("5", "fewer than k=10"),
        ("-3", "not a count"),
        ("nan", "not a count"),
        ("1.5", "whole number"),
        ("3/2", "(0, 1]"),
        ("0.5k5", "not a count"),
    ],
)
def test_bad_sizes_are_usage_errors(text, says):
    with pytest.raises(BadUsage) as raised:
        parse_sizes(text, 2000, k=10)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_counts_take_suffixes():
    assert parse_count("50M") == 50_000_000
    assert parse_count("2.5k") == 2500
    assert parse_count("1,000,000") == 1_000_000
    assert parse_count("1B") == 10**9
    with pytest.raises(BadUsage):
        parse_count("0.5")
    with pytest.raises(BadUsage):
        check_sizes([10, 5], 100)
    with pytest.raises(BadUsage):
        check_sizes([True], 100)


def test_subsets_are_nested_and_seeded():
    sizes = [10, 100, 500, 1000]
    rows = [nested_rows(1000, m) for m in sizes]
    for small, large in zip(rows, rows[1:], strict=False):
        assert set(small) <= set(large)
    assert all((np.diff(r) > 0).all() for r in rows)  # ascending, no repeats
    np.testing.assert_array_equal(rows[-1], np.arange(1000))
    np.testing.assert_array_equal(nested_rows(1000, 100), rows[1])
    assert not np.array_equal(rows[1], np.arange(100))  # not just the first rows


def test_each_size_has_exact_truth_in_base_ids_and_a_hash_of_its_own(tiny_path, tmp_path):
    path = shutil.copy(tiny_path, tmp_path / "tiny.hdf5")
    data = read_dataset(path)
    assert prepare_sizes(data, [500, 1000, 2000]) == [500, 1000]  # the whole base has its own
    assert prepare_sizes(data, [500, 1000]) == []  # cached in the file
    data = read_dataset(path)
    subset, rows = base_subset(data, 500)
    assert len(subset.train) == 500 and len(subset.test) == len(data.test)
    distances, ids = exact_knn(data.train[rows], data.test, 100, data.metric)
    np.testing.assert_array_equal(subset.neighbors, ids)
    np.testing.assert_allclose(subset.distances, distances, rtol=1e-5)
    np.testing.assert_array_equal(subset.train, data.train[rows])
    np.testing.assert_array_equal(subset.train_labels, data.train_labels[rows])
    hashes = {size_hash(data, m) for m in (500, 1000)}
    assert len(hashes | {data.content_hash}) == 3
    assert size_hash(data, 2000) == data.content_hash
    assert base_subset(data, 2000)[0] is data
    assert read_dataset(path).content_hash == data.content_hash  # plain keys unchanged


def test_the_bundled_dataset_is_left_alone_and_gets_a_side_file():
    from annbench.data.catalog import DEFAULT_DATASET, resolve_dataset

    path = resolve_dataset(DEFAULT_DATASET)
    before = path.read_bytes()
    data = read_dataset(path)
    assert size_hash(data, 300) != data.content_hash
    subset, rows = base_subset(data, 300)
    assert len(subset.train) == 300 and (subset.neighbors[:, :10] < 300).all()
    assert path.read_bytes() == before
