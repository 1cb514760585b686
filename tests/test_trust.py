"""An answer a careful reader can trust: laws chosen inside the resampling, verdicts, pooled variance,
domain-respecting parameter intervals, converged fits, test-set resampling. Each test plants a truth."""

import numpy as np
import pytest
import xarray as xr
from scipy.optimize import least_squares

import scaling
from analysis.equivalence import fit_law, law_neq
from analysis.variance import fit_variance_model
from analysis.verdict import ESTIMATED_MAX_RATIO, seeds_needed, verdicts
from analysis.cube import CubeError, correct_items


def _fit(cube, source="gen", **kw):
    """One source's fit (an EquivalenceResult); these tests look at its internals."""
    return scaling.fit_equivalence(cube, source, n_boot=kw.pop("n_boot", 100), **kw)[source]


# ---------------------------------------------------------------------------------------------- laws


def test_saturating_truth_is_recovered_by_the_saturating_law():
    cube = scaling.simulate_cube(seeds=12, sources={"gen": {"saturating": [3.0, 1.0]}}, random_state=5)
    fit = _fit(cube, n_boot=200)
    p = fit.param_table()
    assert p.loc["saturating.rho0", "lower"] <= 3.0 <= p.loc["saturating.rho0", "upper"], p.loc["saturating.rho0"]
    assert p.loc["saturating.R*", "lower"] <= 1.0 <= p.loc["saturating.R*", "upper"], p.loc["saturating.R*"]
    assert fit.law_chosen == "saturating", fit.law_selection


def test_auto_law_gives_the_planted_wang_law_the_most_weight():
    cube = scaling.simulate_cube(seeds=12, sources={"gen": {"wang": [2.0, 3.0, 1000.0]}}, random_state=3)
    fit = _fit(cube)
    assert fit.law_chosen == "wang", fit.law_selection
    assert fit.law_selection.loc["wang", "weight"] > 0.5


def test_law_weights_are_probabilities_in_every_replicate():
    cube = scaling.simulate_cube(seeds=4, sources={"gen": {"exchange_rate": 4.0}}, random_state=0)
    fit = _fit(cube)
    mix = fit._reps.law_mix["gen"]
    np.testing.assert_allclose(mix.sum(1), 1.0)
    assert (mix >= 0).all()
    assert fit.law_selection["mean_weight"].sum() == pytest.approx(1.0)


def test_offset_reference_curve_prefers_m3_and_removes_the_power_laws_bias():
    """e(n) = E + 60 (n + 300)^-0.8: the power law bends to fit and biases rho; auto weighs M3 up."""
    kw = dict(E=0.03, B=60.0, beta=0.8, C=300.0)
    errs = {"power": [], "auto": []}
    for r in range(4):
        cube = scaling.simulate_cube(seeds=10, sources={"gen": {"exchange_rate": 3.0}}, random_state=40 + r, **kw)
        for law in errs:
            f = _fit(cube, curve_law=law, n_boot=60)
            errs[law].append(abs(np.log(float(f.exchange_rate(200, 400).estimate) / 3.0)))
        if r == 0:
            assert f.curve_selection["weight"].idxmax() == "m3", f.curve_selection
    assert np.mean(errs["auto"]) < np.mean(errs["power"])


def test_levenberg_marquardt_matches_scipy_least_squares_on_row_zero():
    cube = scaling.simulate_cube(seeds=5, sources={"gen": {"wang": [2.0, 3.0, 1000.0]}}, random_state=8)
    fit = _fit(cube, law="effective", curve_law="power")
    reps, src = fit._reps, fit._src
    curve = reps.curve.take(0)
    err, w = reps.cell_err["gen"][:1], reps.law_weights["gen"][:1]
    ours = {k: v[:1] for k, v in reps.laws["gen"]["effective"].items()}

    def resid(theta):
        p = {"log_k": theta[:1], "alpha": theta[1:2], "beta": theta[2:3]}
        neq = law_neq("effective", p, src.n_real, src.n_synth)
        return (np.sqrt(w) * (err - curve.predict(src.n_real[None, :] + neq)))[0]

    start = np.array([ours["log_k"][0] + 0.3, ours["alpha"][0] - 0.1, ours["beta"][0] + 0.05])
    ref = least_squares(resid, start, xtol=1e-12, ftol=1e-12, gtol=1e-12)
    assert float(ours["sse"][0]) <= 2 * ref.cost * (1 + 1e-6)
    np.testing.assert_allclose([ours["log_k"][0], ours["alpha"][0], ours["beta"][0]], ref.x, atol=1e-3)
    assert bool(ours["converged"][0])


def test_a_fit_stopped_early_is_flagged_not_converged():
    cube = scaling.simulate_cube(seeds=5, sources={"gen": {"exchange_rate": 4.0}}, random_state=8)
    fit = _fit(cube, law="effective", curve_law="power")
    reps, src = fit._reps, fit._src
    far = {"log_k": np.array([-6.0]), "alpha": np.array([2.5]), "beta": np.array([-1.0])}
    out = fit_law(
        "effective",
        reps.curve.take(0),
        src.n_real,
        src.n_synth,
        reps.cell_err["gen"][:1],
        reps.law_weights["gen"][:1],
        far,
        fit_beta=True,
        iters=1,
    )
    assert not bool(out["converged"][0])
    assert fit.law_selection.loc["effective", "converged_share"] > 0.95


# ---------------------------------------------------------------------------------------------- verdicts


def test_verdict_rules():
    v = verdicts(
        [-0.05, -0.01, 0.01, 0.01, 0.01],
        [-0.01, 0.02, 0.05, 0.05, 0.05],
        [1.0, 1.0, 2.0, 2.0, 2.0],
        [2.0, 2.0, 2.0 * ESTIMATED_MAX_RATIO, 2.0 * ESTIMATED_MAX_RATIO * 1.01, np.inf],
    )
    assert v.tolist() == ["hurts", "no measurable gain", "estimated", "not identified", "not identified"]


def test_a_worthless_generator_reads_no_measurable_gain_with_no_bold_number():
    cube = scaling.simulate_cube(seeds=3, sources={"gen": {"exchange_rate": 1e6}}, random_state=2)
    fit = _fit(cube)
    assert {row["verdict"] for row in fit.answer_rows()} == {"no measurable gain"}
    assert "no measurable gain" in fit.summary()


def test_a_source_that_lowers_accuracy_reads_hurts():
    cube = scaling.simulate_cube(seeds=5, sources={"gen": {"exchange_rate": 4.0}}, random_state=2)
    acc = cube["accuracy"].sel(source="gen")
    rng = np.random.default_rng(0)  # every added image costs accuracy: 5 points below the same seed's base
    worse = (acc.sel(n_synth=0) - 0.05).broadcast_like(acc).transpose(*acc.dims) + 0.005 * rng.standard_normal(
        acc.shape
    )
    cube["accuracy"].loc[dict(source="gen")] = acc.where(acc["n_synth"] == 0, worse)
    fit = _fit(cube)
    assert bool(fit.cells["hurts"].all())
    assert {row["verdict"] for row in fit.answer_rows()} == {"hurts"}


def test_hurts_needs_the_interval_not_the_point_estimate():
    """A planted rate of 4 must not read 'hurts' (it did on the point estimate alone)."""
    hurts = cells = 0
    for r in range(6):
        cube = scaling.simulate_cube(seeds=3, sources={"gen": {"exchange_rate": 4.0}}, random_state=70 + r)
        fit = _fit(cube, n_boot=60)
        hurts += int(fit.cells["hurts"].sum())
        cells += fit.cells["hurts"].size
    assert hurts / cells <= 0.05


def test_a_well_measured_source_is_estimated_with_a_bold_answer():
    cube = scaling.simulate_cube(seeds=10, sources={"gen": {"exchange_rate": 4.0}}, random_state=4)
    fit = _fit(cube)
    row = fit.exchange_rate(100, 800)
    assert str(row["verdict"].values) == "estimated"
    assert float(row.upper) / float(row.lower) <= ESTIMATED_MAX_RATIO


def test_noisy_few_seeds_read_not_identified_and_say_how_many_seeds_would_help():
    cube = scaling.simulate_cube(seeds=3, seed_sd=0.25, sources={"gen": {"exchange_rate": 4.0}}, random_state=9)
    fit = _fit(cube)
    rows = [r for r in fit.answer_rows() if r["verdict"] == "not identified"]
    assert rows, fit.answer_rows()
    assert any("seeds" in r["note"] for r in rows)


def test_seeds_needed_projects_the_jackknife_width():
    assert seeds_needed(5.0, 3, 0.95) is None  # already narrow enough
    s = seeds_needed(100.0, 3, 0.95)
    assert s is not None and s > 3
    assert seeds_needed(30.0, 3, 0.95) <= s  # a narrower interval needs fewer


def test_interval_methods_table_has_every_method():
    cube = scaling.simulate_cube(seeds=5, sources={"gen": {"exchange_rate": 4.0}}, random_state=1)
    table = _fit(cube, n_boot=200).interval_methods(200, 400)
    assert list(table.index) == ["jackknife", "expanded", "percentile", "bca"]
    assert (table["lower"] < table["estimate"]).all() and (table["estimate"] < table["upper"]).all()


# ---------------------------------------------------------------------------------------------- parameters


def test_parameter_intervals_respect_their_domains_and_flag_bounds():
    # a curve with no floor: E is estimated at (or near) 0 and its interval may not go below 0
    cube = scaling.simulate_cube(seeds=5, E=0.0, sources={"gen": {"exchange_rate": 4.0}}, random_state=0)
    fit = _fit(cube, curve_law="power")
    p = fit.param_table()
    assert p.loc["reference.power.E", "lower"] >= 0.0
    assert (p.loc[[i for i in p.index if i.endswith(".c2")], "lower"] >= 1.0).all()
    if p.loc["reference.power.E", "estimate"] == 0:
        assert p.loc["reference.power.E", "flag"] == "on bound"
    # the saturating law's cap is unbounded for a source that never saturates: flagged, not printed as a number
    assert p.loc["saturating.R*", "flag"] == "not identified"


def test_params_are_plain_floats_and_conf_int_recomputes_without_refitting():
    cube = scaling.simulate_cube(seeds=5, sources={"gen": {"exchange_rate": 4.0}}, random_state=1)
    fit = _fit(cube, n_boot=200)
    assert fit.param_table()["upper"].dtype == float and fit.params.dtype == float
    np.log(fit.conf_int().loc["effective.k", "upper"])  # works on a float
    wide, narrow = fit.conf_int(0.99), fit.conf_int(0.68)
    assert (wide["upper"] - wide["lower"]).loc["effective.alpha"] > (narrow["upper"] - narrow["lower"]).loc[
        "effective.alpha"
    ]


# ---------------------------------------------------------------------------------------------- variance


def test_pooled_variance_model_recovers_the_planted_seed_variance():
    cube = scaling.simulate_cube(seeds=40, seed_sd=0.08, sources={"gen": {"exchange_rate": 4.0}}, random_state=3)
    acc = {
        s: cube["accuracy"].sel(source=s).stack(c=("n_real", "n_synth")).transpose("seed", "c").values
        for s in ("real", "gen")
    }
    model = fit_variance_model(acc, int(cube.attrs["n_test"]))
    sample = np.nanvar(acc["real"], axis=0, ddof=1)
    predicted = model.per_seed("real", np.nanmean(acc["real"], 0))
    ratio = np.median(sample / predicted)
    assert 0.7 < ratio < 1.4, ratio


def test_the_variance_model_finds_a_seed_variance_below_the_binomial_floor():
    """450 test images: the binomial floor is three times the seed variance (sd 0.04 on the error) and the
    likelihood is flat far below the floor, where a start of the optimiser stays (a seed variance of ~1e-7).
    Planted truth, 40 draws of 5 seeds x 48 cells per source: the fit is a maximum of the likelihood — at least
    the planted truth's likelihood — in all but a few draws (a start at the median excess over the floor: 13 of
    40), and the variance ratio between the smallest and largest base size is recovered on average."""
    rng = np.random.default_rng(2)
    n_test, seeds = 450, 5
    err = 0.03 + 2.0 * np.repeat([50.0, 100.0, 200.0, 400.0], 12) ** -0.5  # 48 cells, four accuracy levels
    truth = (1 - err) * err / n_test + (np.exp(0.04**2) - 1) * np.exp(0.04**2) * err**2
    worse, ratios = 0, []
    for _ in range(40):
        acc = {
            s: rng.binomial(n_test, 1 - err * np.exp(rng.normal(0, 0.04, size=(seeds, err.size)))) / n_test
            for s in ("real", "gen")
        }
        model = fit_variance_model(acc, n_test)

        def nll(variance):
            return sum(
                np.sum((seeds - 1) * (np.var(a, axis=0, ddof=1) / variance(s, a) + np.log(variance(s, a)))) / 2
                for s, a in acc.items()
            )

        worse += nll(lambda s, a: model.per_seed(s, a.mean(0))) > nll(lambda s, a: truth)
        fitted = model.per_seed("real", 1 - err)
        ratios.append(fitted[0] / fitted[-1])
    assert worse <= 4, worse
    assert abs(np.mean(ratios) / (truth[0] / truth[-1]) - 1) < 0.05, np.mean(ratios)


def test_pooled_variance_never_collapses_where_three_seed_cell_variances_do():
    """A 3-seed cell variance is a chi-square with 2 df: below a tenth of the truth ~10% of the time, handing that
    cell 10x too much weight. The pooled model, fitted on the same 3 seeds, does not collapse."""
    cube = scaling.simulate_cube(seeds=40, sources={"gen": {"exchange_rate": 4.0}}, random_state=12)
    acc = {
        s: cube["accuracy"].sel(source=s).stack(c=("n_real", "n_synth")).transpose("seed", "c").values
        for s in ("real", "gen")
    }
    truth = {s: np.var(a, axis=0, ddof=1) for s, a in acc.items()}
    low_cell, low_pooled, cells = 0, 0, 0
    for start in range(0, 39, 3):
        three = {s: a[start : start + 3] for s, a in acc.items()}
        model = fit_variance_model(three, int(cube.attrs["n_test"]))
        for s, a in three.items():
            low_cell += int((np.var(a, axis=0, ddof=1) < truth[s] / 10).sum())
            low_pooled += int((model.per_seed(s, a.mean(0)) < truth[s] / 10).sum())
            cells += a.shape[1]
    assert low_cell / cells > 0.04
    assert low_pooled == 0


# ---------------------------------------------------------------------------------------------- test-set noise


def test_cube_records_test_items_and_validation_checks_them():
    cube = scaling.simulate_cube(seeds=3, n_test=300, item_sd=1.0, random_state=0)
    items = correct_items(cube)
    np.testing.assert_allclose(items.mean("test_item").values, cube["accuracy"].values)
    bad = cube.copy(deep=True)
    bad["test_correct"].values[0, 0, 0, 0, 0] ^= 0xFF
    with pytest.raises(CubeError, match="test_correct"):
        scaling.validate_cube(bad)


def test_test_items_survive_save_and_merge(tmp_path):
    cube = scaling.simulate_cube(seeds=3, n_test=300, item_sd=1.0, random_state=0)
    a, b = cube.isel(seed=[0, 1]), cube.isel(seed=[2])
    merged = scaling.merge_cubes(a, b)
    path = scaling.save_cube(merged, tmp_path / "m.nc")
    back = scaling.open_cube(path)
    np.testing.assert_array_equal(back["test_correct"].values, cube["test_correct"].values)


def test_resampling_test_images_never_narrows_the_interval_and_keeps_the_estimate():
    cube = scaling.simulate_cube(
        seeds=5, n_test=300, item_sd=1.5, sources={"gen": {"exchange_rate": 4.0}}, random_state=6
    )
    with_items = _fit(cube).exchange_rate(200, 400)
    without = _fit(cube, test_resampling=False).exchange_rate(200, 400)
    assert float(with_items.estimate) == pytest.approx(float(without.estimate))
    # only the test set's variance beyond what the seed jackknife already holds is added (it may be 0 when
    # the shared item effects cancel between the reference and the source)
    assert float(with_items.lower) <= float(without.lower) * (1 + 1e-6)  # items are summed in float32
    assert float(with_items.upper) >= float(without.upper) * (1 - 1e-6)
    assert _fit(cube).test_resampled and not _fit(cube, test_resampling=False).test_resampled


# ---------------------------------------------------------------------------------------------- misspecification


@pytest.mark.slow  # a coverage study: the full suite runs it, the fast lane does not
def test_generator_random_effects_keep_coverage_in_a_small_study():
    """Full table: bench/coverage.py. Here 16 cubes of a truth the fit does not assume."""
    hits = 0
    for r in range(16):
        cube = scaling.simulate_cube(
            seeds=5, sources={"gen": {"exchange_rate": 4.0, "generator_sd": 0.3}}, random_state=500 + r
        )
        q = _fit(cube, n_boot=60).exchange_rate(200, 400)
        hits += float(q.lower) <= 4.0 <= float(q.upper)
    assert hits >= 13  # >= 81%: a 95% interval misses 3 of 16 with probability < 1%


@pytest.mark.slow  # fits and renders a whole report
def test_report_answer_uses_verdicts(tmp_path):
    cube = scaling.simulate_cube(
        seeds=5, sources={"good": {"exchange_rate": 4.0}, "bad": {"exchange_rate": 1e6}}, random_state=1
    )
    path = scaling.save_cube(cube, tmp_path / "c.nc")
    from scaling.report import write_report

    text = write_report(path, tmp_path / "rep", n_boot=100).read_text()
    answer = text.split("## Answer")[1].split("## What this answer rests on")[0]
    bad = (
        answer.split("**bad**")[1].split("**good**")[0]
        if answer.index("**bad**") < answer.index("**good**")
        else answer.split("**bad**")[1]
    )
    assert "no measurable gain" in bad and "**" not in bad.replace("**bad**", "")
    assert "*estimated*" in answer
    for section in (
        "## What this answer rests on",
        "## How much the interval method matters",
        "## Checklist of the fit",
    ):
        assert section in text


def test_simulated_items_keep_every_cells_accuracy():
    cube = scaling.simulate_cube(seeds=2, n_test=200, item_sd=1.0, random_state=3)
    counts = np.unpackbits(cube["test_correct"].values, axis=-1, count=200).sum(-1)
    np.testing.assert_allclose(counts / 200, cube["accuracy"].values)
    assert isinstance(cube["test_correct"], xr.DataArray)


def test_levenberg_marquardt_retries_a_rejected_first_step_instead_of_stopping_at_the_start():
    """Regression: LM used to stop when every replicate's first step was rejected, reporting the grid start as
    a converged fit; the jackknife replicates then all sat on one grid point and the interval had zero width."""
    cube = scaling.simulate_cube(
        seeds=5, sources={"closed_set": {"exchange_rate": 4.0}, "open_set": {"exchange_rate": 2.0}}, random_state=0
    )
    fit = scaling.fit_equivalence(cube, "open_set", n_boot=100)["open_set"]
    for law, params in fit._jack.laws["open_set"].items():
        values = np.stack([np.asarray(v) for k, v in params.items() if k not in ("sse", "converged")], axis=1)
        assert len(np.unique(values.round(10), axis=0)) == len(values), f"{law}: identical jackknife fits"
    for name in ("saturating.rho0", "wang.c2", "effective.alpha"):
        row = fit.param_table().loc[name]
        assert row.upper > row.lower * 1.01, f"{name}: a zero-width interval {row.lower}..{row.upper}"
