"""Growth curves: fits recover known laws, intervals cover the truth as often as they claim,
the held-out check catches a wrong model, and the edge cases are decided."""

import numpy as np
import pytest

from annbench.errors import AnnbenchError
from annbench.scaling.growth import (
    MODELS,
    TOLERANCE,
    best_model,
    fit_growth,
    held_out_check,
)

#: The issue's ladder: 1/16 .. 1 of a 1M base.
LADDER = np.array([62_500, 125_000, 250_000, 500_000, 1_000_000], dtype=np.float64)
TARGET = 100 * LADDER[-1]


def memory_law(n):
    return 3e6 + 1500 * n


def time_law(n):
    return 2e-6 * n**1.2


@pytest.fixture
def rng():
    return np.random.default_rng(22)


def test_models_are_registered_once():
    assert set(MODELS) == {"linear", "power"}


def test_linear_recovers_an_exact_law():
    fit = fit_growth(LADDER, memory_law(LADDER), "linear")
    assert fit.model == "linear"
    assert fit.a == pytest.approx(3e6, rel=1e-9)
    assert fit.b == pytest.approx(1500, rel=1e-12)
    assert fit.params == {"a": fit.a, "b": fit.b}
    assert np.allclose(fit.residuals, 0, atol=1e-12)
    assert fit.dof == 3 and fit.has_interval
    prediction = fit.predict(TARGET)
    assert prediction.value == pytest.approx(memory_law(TARGET), rel=1e-12)
    assert prediction.extrapolation == pytest.approx(100)
    assert prediction.model == "linear" and prediction.note is None


def test_power_recovers_an_exact_law():
    fit = fit_growth(LADDER, time_law(LADDER), "power")
    assert fit.a == pytest.approx(2e-6, rel=1e-9)
    assert fit.b == pytest.approx(1.2, rel=1e-12)
    assert np.allclose(fit.residuals, 0, atol=1e-12)
    assert fit.predict(TARGET).value == pytest.approx(time_law(TARGET), rel=1e-9)


def test_linear_recovers_a_noisy_law_and_its_interval_holds_the_truth_at_100x(rng):
    measured = memory_law(LADDER) * np.exp(rng.normal(0, 0.005, len(LADDER)))
    fit = fit_growth(LADDER, measured, "linear")
    assert fit.b == pytest.approx(1500, rel=0.01)
    # the intercept is 0.2 % of the largest value, within the noise there (least squares
    # weighs the large sizes most): the curve is what the points pin down
    fitted = fit.a + fit.b * LADDER
    assert np.allclose(fitted, memory_law(LADDER), rtol=0, atol=0.01 * memory_law(LADDER[-1]))
    assert np.allclose(fit.residuals, measured / (fit.a + fit.b * LADDER) - 1)
    assert 0 < max(abs(r) for r in fit.residuals) < 0.05  # largest at the smallest size
    prediction = fit.predict(TARGET)
    assert prediction.value == pytest.approx(memory_law(TARGET), rel=0.02)
    assert prediction.low < memory_law(TARGET) < prediction.high
    assert prediction.high / prediction.low < 1.2  # informative, not merely wide


def test_power_recovers_a_noisy_law_and_its_interval_holds_the_truth_at_100x(rng):
    measured = time_law(LADDER) * np.exp(rng.normal(0, 0.02, len(LADDER)))
    fit = fit_growth(LADDER, measured, "power")
    assert fit.b == pytest.approx(1.2, abs=0.03)
    assert fit.sigma == pytest.approx(0.02, rel=0.8)
    prediction = fit.predict(TARGET)
    assert prediction.low < time_law(TARGET) < prediction.high
    assert prediction.value == pytest.approx(time_law(TARGET), rel=0.25)
    # in log space, exponentiated: the interval reaches further above than below
    assert prediction.high - prediction.value > prediction.value - prediction.low
    assert np.log(prediction.high / prediction.value) == pytest.approx(
        np.log(prediction.value / prediction.low)
    )


def test_a_wider_confidence_gives_a_wider_interval(rng):
    measured = time_law(LADDER) * np.exp(rng.normal(0, 0.05, len(LADDER)))
    fit = fit_growth(LADDER, measured, "power")
    narrow, wide = fit.predict(TARGET, 0.5), fit.predict(TARGET, 0.99)
    assert wide.low < narrow.low < narrow.value < narrow.high < wide.high
    near, far = fit.predict(2 * LADDER[-1]), fit.predict(TARGET)
    assert far.high / far.low > near.high / near.low  # further out, less certain


@pytest.mark.parametrize("model", ["linear", "power"])
def test_prediction_intervals_cover_the_truth_as_often_as_they_claim(model):
    """400 ladders of 5 sizes with relative scatter, a new measurement at 100x (3 degrees of
    freedom, where Student-t and the leverage term matter: a normal quantile or a bare sigma
    would cover about 80 % or less; for linear, unweighted least squares covers about 45 %)."""
    law = memory_law if model == "linear" else time_law
    rng = np.random.default_rng(7)
    covered, replicates = 0, 400
    for _ in range(replicates):
        measured = law(LADDER) * np.exp(rng.normal(0, 0.05, 5))
        new_measurement = law(TARGET) * np.exp(rng.normal(0, 0.05))
        prediction = fit_growth(LADDER, measured, model).predict(TARGET, 0.9)
        covered += prediction.low <= new_measurement <= prediction.high
    assert 0.85 <= covered / replicates <= 0.95


def test_linear_interval_errs_wide_under_absolute_scatter():
    """The same absolute scatter at every size is relatively largest at the smallest: the
    linear fit's relative interval then covers more than it claims, never less."""
    rng = np.random.default_rng(8)
    covered, replicates = 0, 400
    for _ in range(replicates):
        measured = memory_law(LADDER) + rng.normal(0, 3e6, 5)
        new_measurement = memory_law(TARGET) + rng.normal(0, 3e6)
        prediction = fit_growth(LADDER, measured, "linear").predict(TARGET, 0.9)
        covered += prediction.low <= new_measurement <= prediction.high
    assert covered / replicates >= 0.9


def test_held_out_check_flags_a_wrong_model_and_passes_the_right_one():
    measured = 1e-6 * LADDER**1.5
    wrong = held_out_check(LADDER, measured, "linear")
    assert not wrong.passed
    assert wrong.error < -0.25  # a line under-predicts a convex law
    # and misses the measured points by far more than the right model does
    assert fit_growth(LADDER, measured, "linear").sigma > 0.1
    assert fit_growth(LADDER, measured, "power").sigma < 1e-9
    assert wrong.measured == measured[-1]
    assert wrong.error == pytest.approx(wrong.prediction.value / measured[-1] - 1)
    assert wrong.prediction.extrapolation == pytest.approx(2)
    right = held_out_check(LADDER, measured, "power")
    assert right.passed and right.inside
    assert right.error == pytest.approx(0, abs=1e-9)
    assert right.tolerance == TOLERANCE


def test_held_out_check_on_noisy_ladders_passes_the_right_model_as_often_as_its_interval():
    rng = np.random.default_rng(3)
    passed = {"linear": 0, "power": 0}
    for _ in range(200):
        measured = 1e-6 * LADDER**1.5 * np.exp(rng.normal(0, 0.01, len(LADDER)))
        for model in passed:
            passed[model] += held_out_check(LADDER, measured, model).passed
    assert passed["linear"] == 0
    assert 0.8 <= passed["power"] / 200 <= 0.97  # a 90 % interval: about 1 in 10 misses


def test_held_out_check_fails_on_a_large_error_even_inside_a_wide_interval():
    measured = time_law(LADDER) * np.exp([0.2, -0.2, -0.2, 0.2, 0.1])  # scattered widely
    check = held_out_check(LADDER, measured, "power", tolerance=0.05)
    assert check.inside and abs(check.error) > 0.05
    assert not check.passed
    assert held_out_check(LADDER, measured, "power", tolerance=0.15).passed


def test_held_out_check_needs_three_sizes():
    assert held_out_check(LADDER[:2], time_law(LADDER[:2]), "power") is None
    assert held_out_check([1e5, 1e5, 2e5], [1.0, 1.1, 2.0], "power") is None
    # with 3 sizes the fit on 2 has no interval: judged on the error alone
    check = held_out_check(LADDER[:3], time_law(LADDER[:3]), "power")
    assert check.inside is None and check.prediction.low is None
    assert check.passed
    assert not held_out_check(LADDER[:3], 1e-6 * LADDER[:3] ** 2, "linear", tolerance=0.1).passed


def test_two_sizes_give_a_point_prediction_without_an_interval():
    fit = fit_growth(LADDER[:2], memory_law(LADDER[:2]), "linear")
    assert not fit.has_interval and "3 different sizes" in fit.interval_note
    prediction = fit.predict(TARGET)
    assert prediction.value == pytest.approx(memory_law(TARGET))
    assert prediction.low is None and prediction.high is None
    assert prediction.note == fit.interval_note
    value, low, high = fit.band(LADDER)
    assert np.allclose(value, memory_law(LADDER)) and np.isnan(low).all() and np.isnan(high).all()


@pytest.mark.parametrize("sizes", [[1e6], [1e6, 1e6, 1e6], []])
def test_fewer_than_two_sizes_is_an_error(sizes):
    with pytest.raises(AnnbenchError, match="2 or more different sizes"):
        fit_growth(sizes, [1.0] * len(sizes), "linear")


@pytest.mark.parametrize("model", ["linear", "power"])
@pytest.mark.parametrize("bad", [0.0, -3.0])
def test_non_positive_values_are_refused_with_what_to_do(model, bad):
    values = time_law(LADDER)
    values[2] = bad
    with pytest.raises(AnnbenchError, match=f"{model} growth model needs positive values.*drop"):
        fit_growth(LADDER, values, model)
    with pytest.raises(AnnbenchError, match="positive values"):
        held_out_check(LADDER, values, model)


@pytest.mark.parametrize(
    "sizes, values, message",
    [
        ([0, 1e5, 2e5], [1, 2, 3], "positive numbers of vectors"),
        ([np.nan, 1e5, 2e5], [1, 2, 3], "positive numbers of vectors"),
        ([1e5, 2e5, 3e5], [1, np.inf, 3], "finite"),
        ([1e5, 2e5, 3e5], [1, 2], "same length"),
        ([[1e5, 2e5]], [[1, 2]], "flat"),
    ],
)
def test_bad_points_are_one_line_errors(sizes, values, message):
    with pytest.raises(AnnbenchError, match=message):
        fit_growth(sizes, values, "linear")


def test_bad_model_confidence_and_target_are_errors():
    with pytest.raises(AnnbenchError, match="use one of linear, power"):
        fit_growth(LADDER, memory_law(LADDER), "cubic")
    fit = fit_growth(LADDER, memory_law(LADDER), "linear")
    for confidence in (0, 1, 1.5, -0.1):
        with pytest.raises(AnnbenchError, match="between 0 and 1"):
            fit.predict(TARGET, confidence)
    with pytest.raises(AnnbenchError, match="positive number of vectors"):
        fit.predict(0)
    with pytest.raises(AnnbenchError, match="fraction >= 0"):
        held_out_check(LADDER, memory_law(LADDER), "linear", tolerance=-1)


def test_unsorted_sizes_are_sorted(rng):
    measured = time_law(LADDER) * np.exp(rng.normal(0, 0.05, len(LADDER)))
    order = rng.permutation(len(LADDER))
    shuffled = fit_growth(list(LADDER[order]), list(measured[order]), "power")
    ordered = fit_growth(LADDER, measured, "power")
    assert shuffled == ordered
    assert shuffled.sizes == tuple(LADDER)
    assert held_out_check(LADDER[order], measured[order], "power") == held_out_check(
        LADDER, measured, "power"
    )


def test_repeated_sizes_are_replicates(rng):
    sizes = np.repeat(LADDER[:3], 2)
    measured = memory_law(sizes) + rng.normal(0, 1e6, len(sizes))
    fit = fit_growth(sizes, measured, "linear")
    assert fit.dof == len(sizes) - 2  # every replicate is a point
    assert len(fit.residuals) == len(sizes)
    # balanced replicates: the same line as through the sizes' means
    means = measured.reshape(3, 2).mean(axis=1)
    on_means = fit_growth(LADDER[:3], means, "linear")
    assert fit.a == pytest.approx(on_means.a) and fit.b == pytest.approx(on_means.b)
    # two sizes, however many replicates, leave the shape untested: no interval
    assert not fit_growth(np.repeat(LADDER[:2], 3), np.arange(1.0, 7.0), "linear").has_interval


def test_held_out_check_compares_the_mean_of_replicates_at_the_largest_size():
    sizes = np.array([1e5, 2e5, 4e5, 4e5])
    check = held_out_check(sizes, [1.0, 2.0, 3.0, 12.0], "power")
    assert check.measured == pytest.approx(6.0)  # geometric mean of 3 and 12
    assert check.prediction.value == pytest.approx(4.0)
    assert held_out_check(sizes, [1.0, 2.0, 3.0, 5.0], "linear").measured == pytest.approx(4.0)


def test_band_matches_predict(rng):
    measured = time_law(LADDER) * np.exp(rng.normal(0, 0.05, len(LADDER)))
    fit = fit_growth(LADDER, measured, "power")
    at = np.array([1e5, 1e7, TARGET])
    value, low, high = fit.band(at, 0.95)
    for i, n in enumerate(at):
        prediction = fit.predict(n, 0.95)
        assert (value[i], low[i], high[i]) == pytest.approx(
            (prediction.value, prediction.low, prediction.high)
        )


def test_formulas_read_as_the_law():
    power = fit_growth(LADDER, 1.62e3 * LADDER**0.93, "power")
    assert power.formula() == "1,620 * N^0.93"
    assert fit_growth(LADDER, 2e-6 * LADDER**1.2, "power").formula("s") == "2e-06 s * N^1.2"
    linear = fit_growth(LADDER, 4.1e6 + 1544 * LADDER, "linear")
    assert linear.formula("B") == "4.1e+06 B + 1,544 B * N"
    assert linear.formula() == "4.1e+06 + 1,544 * N"
    falling = fit_growth(LADDER, 5e3 - 0.002 * LADDER, "linear")
    assert falling.formula() == "5,000 - 0.002 * N"


def test_best_model_chooses_by_held_out_error(rng):
    noise = np.exp(rng.normal(0, 0.01, len(LADDER)))
    convex = best_model(LADDER, 1e-6 * LADDER**1.5 * noise)
    assert convex.model == "power"
    assert set(convex.held_out) == {"linear", "power"}
    assert abs(convex.held_out["power"].error) < abs(convex.held_out["linear"].error)
    # memory: a large fixed part beside bytes per vector bends a power law's log-log line
    memory = best_model(LADDER, 5e8 + 1500 * LADDER * noise)
    assert memory.model == "linear"
    assert abs(memory.held_out["power"].error) > abs(memory.held_out["linear"].error) + 0.01


def test_best_model_ties_go_to_the_first_candidate():
    proportional = 5.0 * LADDER  # both models fit it exactly
    assert best_model(LADDER, proportional).model == "linear"
    assert best_model(LADDER, proportional, ("power", "linear")).model == "power"


def test_best_model_without_evidence_or_candidates():
    few = best_model(LADDER[:2], time_law(LADDER[:2]), ("power", "linear"))
    assert few.model == "power" and few.held_out == {}
    with pytest.raises(AnnbenchError, match="No candidate"):
        best_model(LADDER, memory_law(LADDER), ())
    with pytest.raises(AnnbenchError, match="not known"):
        best_model(LADDER, memory_law(LADDER), ("linear", "cubic"))


def test_a_negligible_error_passes_even_outside_a_needle_thin_interval():
    from annbench.scaling.growth import passes

    assert passes(0.001, False, 0.10)  # memory: 0.1 % off, interval 0.01 % wide
    assert not passes(0.05, False, 0.10)  # 5 % off and outside: the interval was wrong
    assert passes(0.05, True, 0.10) and passes(0.05, None, 0.10)
    assert not passes(0.2, True, 0.10)
