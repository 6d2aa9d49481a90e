import numpy as np
import pytest

from annbench.errors import AnnbenchError
from annbench.metrics import Metric, label_metrics, pair_distances, recall_at_k, true_distances


def test_recall_hand_computed_with_ties_duplicates_and_missing():
    # query 0: true top-3 = 0,1,2; id 7 ties the 3rd distance exactly -> a hit
    # query 1: id 5 returned twice (second is a miss), -1 a miss
    gt_ids = np.array([[0, 1, 2, 7], [4, 5, 6, 9]])
    gt_d = np.array([[0.1, 0.2, 0.3, 0.3], [1.0, 2.0, 3.0, 4.0]])
    ids = np.array([[0, 7, 1], [5, 5, -1]])
    found = np.array([[0.1, 0.3, 0.2], [2.0, 2.0, np.inf]])
    result = recall_at_k(ids, found, gt_ids, gt_d, k=3)
    np.testing.assert_allclose(result.recall, [1.0, 1 / 3])
    assert result.duplicates == 1
    assert result.missing == 1
    # ann-benchmarks counts any returned distance <= d_k + 1e-3, duplicates included
    np.testing.assert_allclose(result.ann_benchmarks_recall, [1.0, 2 / 3])


def test_recall_tie_tolerance_is_relative():
    gt_ids = np.array([[0, 1]])
    gt_d = np.array([[1000.0, 2000.0]])
    near_tie = recall_at_k(
        np.array([[0, 9]]), np.array([[1000.0, 2000.0 * (1 + 5e-6)]]), gt_ids, gt_d, 2
    )
    beyond = recall_at_k(
        np.array([[0, 9]]), np.array([[1000.0, 2000.0 * (1 + 1e-3)]]), gt_ids, gt_d, 2
    )
    assert near_tie.recall[0] == 1.0
    assert beyond.recall[0] == 0.5


def test_recall_pads_short_results_and_rejects_bad_k():
    gt_ids = np.array([[0, 1, 2]])
    gt_d = np.array([[0.0, 1.0, 2.0]])
    result = recall_at_k(np.array([[0]]), np.array([[0.0]]), gt_ids, gt_d, k=2)
    assert result.recall[0] == 0.5 and result.missing == 1
    with pytest.raises(AnnbenchError, match="positive"):
        recall_at_k(np.array([[0]]), np.array([[0.0]]), gt_ids, gt_d, k=0)
    with pytest.raises(AnnbenchError, match="exceeds"):
        recall_at_k(np.array([[0]]), np.array([[0.0]]), gt_ids, gt_d, k=4)


@pytest.mark.parametrize("metric", list(Metric))
def test_pair_distances_match_definitions(metric, rng):
    xq = rng.normal(size=(3, 5))
    xr = rng.normal(size=(3, 4, 5))
    got = pair_distances(metric, xq, xr)
    for i in range(3):
        for j in range(4):
            a, b = xq[i], xr[i, j]
            want = {
                Metric.EUCLIDEAN: np.linalg.norm(a - b),
                Metric.ANGULAR: 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)),
                Metric.DOT: -(a @ b),
            }[metric]
            assert got[i, j] == pytest.approx(want)


def test_true_distances_marks_missing_as_infinite(rng):
    xb = rng.normal(size=(10, 4))
    xq = rng.normal(size=(2, 4))
    d = true_distances(Metric.EUCLIDEAN, xb, xq, np.array([[3, -1], [9, 0]]))
    assert np.isinf(d[0, 1])
    assert d[1, 0] == pytest.approx(np.linalg.norm(xq[1] - xb[9]))


def test_metric_parse_aliases_and_error():
    assert Metric.parse("cosine") is Metric.ANGULAR
    assert Metric.parse("L2") is Metric.EUCLIDEAN
    assert Metric.parse("ip") is Metric.DOT
    with pytest.raises(AnnbenchError, match="not valid. Use one of"):
        Metric.parse("hamming")


def test_label_metrics_hand_computed():
    train_labels = np.array([0, 0, 0, 1, 1, 2])
    test_labels = np.array([0, 1, 2])
    ids = np.array([[0, 3, 1], [0, 2, 5], [5, -1, 4]])
    result = label_metrics(ids, train_labels, test_labels, k=3)
    np.testing.assert_allclose(result.top_k_accuracy, [1, 0, 1])
    np.testing.assert_allclose(result.precision, [2 / 3, 0, 1 / 3])
    # query 0: relevant at ranks 1 and 3 -> (1/1 + 2/3) / min(3, 3 items labelled 0)
    # query 2: relevant at rank 1 only, one item labelled 2 -> 1 / 1
    np.testing.assert_allclose(result.average_precision, [(1 + 2 / 3) / 3, 0, 1.0])
