"""Accuracy laws: recovery, independence from starting values, identifiability flags."""

import numpy as np
import pytest
from scipy.optimize import least_squares

from analysis.laws import (
    EVIDENCE_SE,
    crossval_curve_predictions,
    evidence_against_simplest,
    fit_curve_auto,
    fit_m3,
    fit_m4,
    fit_power,
    heldout_curve_scores,
    m4_predict,
    predictive_weights,
    stacking_weights,
)

N = np.array([20, 50, 100, 200, 400, 800, 1600.0])


def test_noise_free_power_law_is_recovered_exactly():
    err = 0.04 + 1.5 * N**-0.45
    fit = fit_power(N, err, np.ones_like(err))
    p = fit.row(0)
    assert p["E"] == pytest.approx(0.04, abs=1e-4)
    assert p["B"] == pytest.approx(1.5, rel=1e-3)
    assert p["beta"] == pytest.approx(0.45, abs=1e-4)
    assert not fit.on_bound[0]


def test_fit_is_the_global_minimum_whatever_start_a_local_solver_uses():
    rng = np.random.default_rng(4)
    err = 0.05 + 3.0 * N**-0.7 + rng.normal(0, 0.004, N.size)
    ours = fit_power(N, err, np.ones_like(err))
    ours_sse = float(ours.sse[0])

    def resid(p):
        return p[0] + p[1] * N ** -p[2] - err

    local = []
    for start in rng.uniform([0, 0.1, 0.05], [0.3, 50, 2.5], size=(30, 3)):
        sol = least_squares(resid, start, bounds=([0, 0, 0.02], [1, np.inf, 3.0]))
        local.append(2 * sol.cost)
    # no local start beats the grid-profiled fit (which takes no start at all)
    assert ours_sse <= min(local) * (1 + 1e-6)
    # and the answer does not move with the order of the data
    perm = rng.permutation(N.size)
    again = fit_power(N[perm], err[perm], np.ones_like(err))
    assert again.row(0)["beta"] == pytest.approx(ours.row(0)["beta"], abs=1e-6)


def test_flat_curve_sits_on_a_bound():
    err = np.full(N.size, 0.3)
    fit = fit_power(N, err, np.ones_like(err))
    assert fit.on_bound[0]
    assert "B=0" in fit.bound_names


def test_m4_recovers_a_curve_near_chance():
    params = {
        "E": np.array([0.05]),
        "alpha": np.array([0.6]),
        "log_b": np.array([np.log(3.0)]),
        "c": np.array([0.5]),
        "e0": np.array([0.9]),
    }
    err = m4_predict(params, N)
    fit = fit_m4(N, err, np.ones_like(err), e0=0.9)
    np.testing.assert_allclose(fit.predict(N)[0], err[0], atol=2e-3)
    # the power law cannot bend to chance level, so M4 extrapolates better on such a curve
    scores = heldout_curve_scores(
        ("power", "m4"),
        np.r_[N, 2400.0, 3200.0],
        m4_predict(params, np.r_[N, 2400.0, 3200.0]),
        np.ones((1, N.size + 2)),
        e0=0.9,
    )
    assert scores["m4"][0] < scores["power"][0]


def test_batched_fit_equals_one_at_a_time():
    rng = np.random.default_rng(0)
    errs = 0.03 + 2 * N**-0.5 + rng.normal(0, 0.005, (5, N.size))
    batch = fit_power(N, errs, np.ones_like(errs))
    for r in range(5):
        single = fit_power(N, errs[r : r + 1], np.ones((1, N.size)))
        assert single.row(0)["beta"] == pytest.approx(batch.row(r)["beta"], abs=1e-9)


def test_vectorised_isotonic_regression_matches_sklearn():
    from sklearn.isotonic import isotonic_regression

    from analysis.equivalence import isotonic_decreasing

    rng = np.random.default_rng(0)
    y = -0.1 * rng.normal(size=(40, 9)).cumsum(1) + rng.normal(size=(40, 9))
    w = rng.uniform(0.1, 2, (40, 9))
    ref = np.array([isotonic_regression(y[i], sample_weight=w[i], increasing=False) for i in range(40)])
    np.testing.assert_allclose(isotonic_decreasing(y, w), ref, atol=1e-12)


def test_m3_recovers_a_curve_that_flattens_at_small_n():
    err = 0.03 + 60 * (N + 300) ** -0.8
    fit = fit_m3(N, err[None], np.ones((1, N.size)))
    np.testing.assert_allclose(fit.predict(N)[0], err, rtol=1e-2)  # C sits on a 12-point log grid
    assert fit.row(0)["C"] > 50  # the offset is found, not left at 0
    power = fit_power(N, err[None], np.ones((1, N.size)))
    assert fit.sse[0] < power.sse[0] / 10


def test_m4_prediction_solves_its_implicit_equation():
    params = {
        "E": np.array([0.05, 0.1]),
        "alpha": np.array([0.0, 2.0]),
        "log_b": np.array([1.0, 3.0]),
        "c": np.array([0.5, 0.9]),
        "e0": np.array([0.9, 0.9]),
    }
    e = m4_predict(params, N)
    p = {k: v[:, None] for k, v in params.items()}
    lhs = np.log(e - p["E"]) - p["alpha"] * np.log(p["e0"] - e)
    np.testing.assert_allclose(lhs, p["log_b"] - p["c"] * np.log(N)[None], atol=1e-9)


def test_mixed_curve_inverts_its_own_prediction():
    rng = np.random.default_rng(2)
    errs = 0.03 + 60 * (N + 300) ** -0.8 + rng.normal(0, 0.002, (4, N.size))
    curve = fit_curve_auto(N, errs, np.full(errs.shape, 1e5), e0=0.9)
    np.testing.assert_allclose(curve.weights.sum(1), 1.0)
    pred = curve.predict(N)
    np.testing.assert_allclose(curve.invert(pred), np.broadcast_to(N, pred.shape), rtol=1e-6)


def test_predictive_weights_favour_the_smaller_held_out_error_smoothly():
    w = predictive_weights({"a": np.array([1.0, 10.0, 1.0]), "b": np.array([2.0, 10.0, 60.0])})
    assert w[0, 0] == pytest.approx(1 / (1 + np.exp(-0.5)))  # exp(-SS/2): a difference of 1 is a mild preference
    assert w[1].tolist() == [0.5, 0.5]
    assert w[2, 1] < 1e-12  # a clearly worse law gets no weight


def test_stacking_puts_all_weight_on_a_law_that_predicts_the_held_out_points():
    obs = np.array([[0.10, 0.08, 0.07]])
    preds = {"a": obs + 0.01, "b": obs.copy(), "c": obs - 0.02}
    w = stacking_weights(preds, obs, np.ones_like(obs))
    np.testing.assert_allclose(w, [[0.0, 1.0, 0.0]], atol=1e-6)


def test_stacking_combines_laws_biased_in_opposite_directions():
    """One law over-, one under-predicts: their 2:1 blend is exact, which neither law alone (nor a choice) is."""
    obs = np.array([[0.10, 0.08, 0.07, 0.065]])
    preds = {"over": obs * 1.1, "under": obs * 0.8, "far": obs + 0.05}
    w = stacking_weights(preds, obs, np.ones_like(obs))
    np.testing.assert_allclose(w, [[2 / 3, 1 / 3, 0.0]], atol=1e-4)
    assert (w >= 0).all() and np.allclose(w.sum(1), 1.0)


def test_rolling_origin_splits_hold_out_the_largest_sizes():
    n = np.geomspace(20, 2000, 15)
    err = (0.05 + 2 * n**-0.5)[None]
    preds, obs, wts = crossval_curve_predictions(("power",), n, err, np.ones_like(err), e0=0.9)
    assert obs.shape == (1, 1 + 2)  # splits holding out the largest 1 and 2 sizes
    np.testing.assert_allclose(preds["power"], obs, rtol=1e-6)  # a noise-free power law extrapolates exactly
    assert crossval_curve_predictions(("power",), n[:4], err[:, :4], np.ones((1, 4)), e0=0.9) is None


def test_the_mixture_leaves_the_simplest_law_in_proportion_to_the_held_out_evidence():
    """The share of the stacked weights: the first law's held-out sum of squares minus the best law's, in
    chi-square standard errors sqrt(2 M), over EVIDENCE_SE; none without evidence, all of it beyond."""
    wts = np.array([[1.0, 1.0, 1.0, 0.0]] * 4)  # M = 3 held-out points per replicate (the 4th is not held out)
    se = np.sqrt(2 * 3)
    scores = {
        "power": np.array([5.0, 5.0 + 0.5 * EVIDENCE_SE * se, 5.0 + 3 * EVIDENCE_SE * se, 4.0]),
        "m3": np.array([5.0, 5.0, 5.0, 9.0]),
        "m4": np.array([6.0, 7.0, 8.0, 9.0]),
    }
    share = evidence_against_simplest(scores, wts, ("power", "m3", "m4"))
    np.testing.assert_allclose(share, [0.0, 0.5, 1.0, 0.0])  # the last: power is the best law itself


def test_planted_curves_keep_the_power_law_on_noise_and_leave_it_on_evidence():
    """A planted power law with test noise keeps most weight on the power law (M3 and M4 can only bend to the
    noise); a planted M3 curve measured precisely at many sizes moves the mixture to the laws that fit it."""
    n = np.geomspace(25, 3200, 13)
    rng = np.random.default_rng(5)
    sd = 0.004
    power = 0.02 + 2.0 * n**-0.6
    noisy = power[None] + rng.normal(0, sd, (200, n.size))
    mixed = fit_curve_auto(n, noisy, np.full(noisy.shape, sd**-2), e0=0.9)
    assert mixed.weights[:, 0].mean() > 0.7, mixed.weights.mean(0)
    offset = 0.03 + 60 * (n + 300) ** -0.8  # flattens at small n: the power law bends and extrapolates badly
    precise = offset[None] + rng.normal(0, 1e-5, (20, n.size))
    mixed = fit_curve_auto(n, precise, np.full(precise.shape, 1e10), e0=0.9)
    assert mixed.weights[:, 0].max() < 0.2, mixed.weights.mean(0)
