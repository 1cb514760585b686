"""The verdict is one inference with its interval: the gain test behind it, the rate printed under it, the
interval methods' agreement, and the bootstrap computed only when a method needs it. Error rates on planted
truths at scale: bench/verdicts.py; here a quick version of the same claims."""

import numpy as np
import pytest
from scipy import stats

import scaling
from analysis.equivalence import BASE_CELL_SHARE
from analysis.verdict import ESTIMATED_MAX_RATIO, bound_disagreement, rate_under_verdict, surviving_verdict


def _fit(cube, source="gen", **kw):
    return scaling.fit_equivalence(cube, source, n_boot=kw.pop("n_boot", 100), **kw)[source]


def _harmful(cube, drop=0.04, seed=0):
    """Every added image costs accuracy: the source's cells sit ``drop`` below the same seed's base."""
    acc = cube["accuracy"].sel(source="gen")
    rng = np.random.default_rng(seed)
    worse = (acc.sel(n_synth=0) - drop).broadcast_like(acc).transpose(*acc.dims) + 0.01 * rng.standard_normal(acc.shape)
    cube["accuracy"].loc[dict(source="gen")] = acc.where(acc["n_synth"] == 0, worse)
    return cube


def _contradicts(verdict: str, lower: float, upper: float) -> bool:
    finite = np.isfinite(lower) and np.isfinite(upper) and lower > 0
    if verdict in ("no measurable gain", "hurts"):
        return finite
    if verdict == "estimated":
        return not (finite and upper / lower <= ESTIMATED_MAX_RATIO)
    return False


def test_the_rate_printed_obeys_its_verdict():
    est, lo, hi = rate_under_verdict(
        ["estimated", "not identified", "no measurable gain", "hurts"],
        [4.0, 4.0, 4.0, 4.0],
        [3.0, 1.0, 3.0, 3.0],
        [5.0, 50.0, 5.0, 5.0],
    )
    np.testing.assert_array_equal(hi[:3], [5.0, 50.0, np.inf])  # no measurable gain: may be worth nothing
    np.testing.assert_array_equal(lo[:3], [3.0, 1.0, 3.0])
    assert np.isnan([est[3], lo[3], hi[3]]).all()  # hurts: no rate at all


def test_the_verdict_every_method_supports():
    assert surviving_verdict(["estimated"] * 4) == "estimated"
    assert surviving_verdict(["estimated", "not identified", "estimated", "estimated"]) == "not identified"
    assert surviving_verdict(["estimated", "no measurable gain", "estimated", "estimated"]) == "no measurable gain"
    assert surviving_verdict(["hurts", "hurts", "no measurable gain", "hurts"]) == "no measurable gain"
    assert surviving_verdict(["hurts"] * 4) == "hurts"


def test_bound_disagreement_is_the_largest_ratio_between_methods():
    assert bound_disagreement([1.0, 2.0, 1.5], [10.0, 12.0, 30.0]) == pytest.approx(3.0)
    assert bound_disagreement([1.0, 1.0], [10.0, np.inf]) == np.inf  # one bounded, one not
    assert bound_disagreement([1.0, 1.2], [np.inf, np.inf]) == pytest.approx(1.2)
    assert bound_disagreement([np.nan, np.nan], [np.nan, np.nan]) == 1.0  # no rate under any method


def test_the_gain_test_is_each_bases_paired_jackknife_t_against_a_blended_base():
    """By hand: per seed the weighted gain of a base's cells over a base that is a share BASE_CELL_SHARE of that
    seed's base cell and the rest the fitted reference curve (the base cell alone at the smallest base); its
    interval the leave-one-seed-out jackknife t of that base alone, S - 1 degrees of freedom."""
    cube = scaling.simulate_cube(seeds=5, sources={"gen": {"exchange_rate": 4.0}}, random_state=3)
    fit = _fit(cube)
    g = fit.gain()
    acc = cube["accuracy"]
    bases = acc["n_real"].values.astype(float)
    curve_acc = 1 - fit._pt.curve.predict(bases)[0]  # (B,) the fitted reference curve at each base size
    jack_curve_acc = 1 - fit._jack.curve.predict(bases)  # (S, B) the same, each seed left out
    d, w_cells, base_cell = [], [], []
    for r in bases:
        cells = acc.sel(source="gen", n_real=r).sel(n_synth=acc["n_synth"] > 0)
        w = np.log1p(cells["n_synth"] / r)
        base = acc.sel(source="real", n_real=r, n_synth=0)
        d.append((((cells - base) * w).sum("n_synth") / w.sum()).values)
        w_cells.append(((cells * w).sum("n_synth") / w.sum()).values)
        base_cell.append(base.values)
    d, w_cells, base_cell = np.array(d), np.array(w_cells), np.array(base_cell)  # (B, S)
    B, S = d.shape

    def leave_one_out(x):  # (B, S) per-seed values -> (S, B) means without each seed
        return ((x.sum(1, keepdims=True) - x) / (S - 1)).T

    share = np.r_[1.0, np.full(B - 1, BASE_CELL_SHARE)]  # the smallest base is measured against its cell alone
    point = w_cells.mean(1) - share * base_cell.mean(1) - (1 - share) * curve_acc
    jack = leave_one_out(w_cells) - share * leave_one_out(base_cell) - (1 - share) * jack_curve_acc
    half = stats.t.ppf(0.975, S - 1) * np.sqrt((S - 1) * jack.var(axis=0, ddof=0))
    np.testing.assert_allclose(g["estimate"].values, point, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(g["lower"].values, point - half, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g["upper"].values, point + half, rtol=1e-6, atol=1e-9)
    # the smallest base: the paired t test of the seeds' gains over their base cell
    paired = stats.ttest_1samp(d[0], 0.0).confidence_interval(0.95)
    np.testing.assert_allclose([g["lower"].values[0], g["upper"].values[0]], [paired.low, paired.high], rtol=1e-6)
    assert (g["cells"] == 5).all()


@pytest.mark.filterwarnings("ignore:.*extrapolates")
@pytest.mark.parametrize("truth", ["worthless", "strong", "harmful"])
def test_no_query_contradicts_its_interval(truth):
    spec = {"exchange_rate": 1e6 if truth == "worthless" else 4.0}
    cube = scaling.simulate_cube(seeds=4, sources={"gen": spec}, random_state=11)
    fit = _fit(_harmful(cube) if truth == "harmful" else cube)
    for ci_method in ("jackknife", "percentile"):
        q = fit.exchange_rate([50, 75, 200, 800], [10, 50, 400, 2000], ci_method=ci_method)
        for v, lo, hi in zip(q["verdict"].values.ravel(), q["lower"].values.ravel(), q["upper"].values.ravel()):
            assert not _contradicts(str(v), float(lo), float(hi)), (truth, ci_method, v, lo, hi)
    cells = fit.cells
    for v, lo, hi in zip(
        cells["verdict"].values.ravel(),
        cells["exchange_rate_lower"].values.ravel(),
        cells["exchange_rate_upper"].values.ravel(),
    ):
        assert v == "" or not _contradicts(str(v), float(lo), float(hi))


def test_a_worthless_source_never_gets_a_finite_rate_interval():
    for r in range(3):
        cube = scaling.simulate_cube(seeds=5, sources={"gen": {"exchange_rate": 1e6}}, random_state=20 + r)
        for row in _fit(cube).answer_rows():
            assert row["verdict"] != "estimated"
            assert row["upper"] == np.inf or np.isnan(row["upper"]), row


def test_a_harmful_source_reads_hurts_with_no_rate():
    cube = _harmful(scaling.simulate_cube(seeds=5, sources={"gen": {"exchange_rate": 4.0}}, random_state=2))
    for row in _fit(cube).answer_rows():
        assert row["verdict"] == "hurts"
        assert np.isnan([row["estimate"], row["lower"], row["upper"]]).all()
        assert row["gain"][2] < 0


def test_verdict_error_rates_smoke():
    """A quick version of bench/verdicts.py: worthless never 'estimated', rarely 'hurts'; a strong source
    mostly 'estimated' (planted with simulate_cube; the bench plants seed effects independent per source)."""
    worthless, strong = {}, {}
    for r in range(10):
        for spec, tally in (({"exchange_rate": 1e6}, worthless), ({"exchange_rate": 4.0}, strong)):
            cube = scaling.simulate_cube(seeds=5, sources={"gen": spec}, random_state=300 + r)
            v = str(_fit(cube).exchange_rate(100, 200)["verdict"].values)
            tally[v] = tally.get(v, 0) + 1
    # a false "hurts" is 2% of 100 such cubes at this query; 3 or more of 10 has a probability under 0.3%
    assert worthless.get("estimated", 0) == 0 and worthless.get("hurts", 0) <= 2, worthless
    assert strong.get("estimated", 0) >= 8, strong


def test_the_default_fit_computes_no_bootstrap_and_a_bootstrap_method_computes_it_once():
    cube = scaling.simulate_cube(
        seeds=5, sources={"a": {"exchange_rate": 4.0}, "b": {"exchange_rate": 2.0}}, random_state=4
    )
    res = scaling.fit_equivalence(cube, None, n_boot=200)
    a, b = res["a"], res["b"]
    before = a.exchange_rate(200, 400)
    a.summary()
    a.answer_rows()
    assert not a._boot.computed  # the default (jackknife) answer never needed the 2000-replicate bootstrap
    pct = a.exchange_rate(200, 400, ci_method="percentile")
    assert a._boot.computed and b._boot.computed and a._boot is b._boot  # computed once, shared by the sources
    assert a._reps.n_eq["a"].shape[0] == 201
    after = a.exchange_rate(200, 400)
    for key in ("estimate", "lower", "upper"):  # asking for a bootstrap interval never moves the default one
        assert float(after[key]) == float(before[key])
    assert float(pct.lower) < float(pct.estimate) < float(pct.upper)


def test_method_agreement_names_the_factor_and_the_surviving_verdict():
    cube = scaling.simulate_cube(seeds=5, sources={"gen": {"exchange_rate": 4.0}}, random_state=1)
    out = _fit(cube, n_boot=200).method_agreement(200, 400)
    t = out["table"]
    assert list(t.index) == ["jackknife", "expanded", "percentile", "bca"]
    assert out["factor"] == pytest.approx(bound_disagreement(t["lower"], t["upper"]))
    assert out["reliable"] == (out["factor"] <= 3.0)
    assert out["survives"] == surviving_verdict(t["verdict"])


def test_a_cell_whose_real_equivalent_lies_below_zero_reads_hurts_with_no_rate():
    # one harmful cell in an otherwise worthless source: its accuracy far below its base in every seed
    cube = scaling.simulate_cube(seeds=5, sources={"gen": {"exchange_rate": 1e6}}, random_state=31)
    # (the smallest n_synth: the least weight in its base's pooled gain test, which stays without a claim)
    cell = dict(source="gen", n_real=200, n_synth=50)
    cube["accuracy"].loc[cell] = cube["accuracy"].sel(source="gen", n_real=200, n_synth=0) - 0.03
    fit = _fit(cube)
    c = fit.cells.sel(n_real=200, n_synth=50)
    assert float(c["n_eq_upper"]) < 0
    assert c["verdict"].item() == "hurts" and bool(c["hurts"])
    assert np.isnan([float(c[k]) for k in ("exchange_rate", "exchange_rate_lower", "exchange_rate_upper")]).all()
    # and the summary says where the cell and its base size's answer differ, and why
    text = str(fit.summary())
    assert "Where a cell's verdict differs from its base size's answer" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("n_real=200: the answer reads"))
    assert "the answer reads no measurable gain" in line
    assert "n_synth=50 reads hurts" in line and "lies below 0" in line


def test_no_cell_prints_a_zero_width_infinite_interval():
    for r in range(3):
        cube = scaling.simulate_cube(seeds=4, sources={"gen": {"exchange_rate": 1e6}}, random_state=40 + r)
        c = _fit(cube).cells
        lo, hi = c["exchange_rate_lower"].values.ravel(), c["exchange_rate_upper"].values.ravel()
        assert not np.any(np.isinf(lo) & np.isinf(hi)), (lo, hi)
        # a cell interval wholly below zero is harm, whatever the gain's interval says
        below = c["n_eq_upper"].values.ravel() < 0
        assert (c["verdict"].values.ravel()[below] != "estimated").all()


def test_cell_verdicts_combine_the_gain_and_the_real_equivalent():
    from analysis.verdict import cell_verdicts

    v = cell_verdicts(
        gain_lower=[-0.02, 0.01, -0.03, 0.01],
        gain_upper=[0.01, 0.03, -0.01, 0.03],
        neq_upper=[-1.0, -1.0, 5.0, 50.0],
        rate_lower=[np.nan, np.nan, 1.0, 2.0],
        rate_upper=[np.inf, np.inf, np.inf, 8.0],
    )
    assert v.tolist() == ["hurts", "no measurable gain", "hurts", "estimated"]


def test_batch_means_error_of_a_bootstrap_endpoint_matches_its_spread_over_fresh_draws():
    """Plant the truth: draw 300 independent sets of 2000 replicates from one distribution; the spread of
    their percentile endpoints is the Monte-Carlo error, and the batch-means estimate from one set recovers it."""
    from analysis.bootstrap import endpoint_mcse, percentile_interval

    rng = np.random.default_rng(5)
    draws = rng.lognormal(0.0, 0.5, size=(300, 2000, 2))
    ends = np.array([percentile_interval(d, 0.95) for d in draws])  # (300, 2, 2)
    truth = ends.std(axis=0, ddof=1)
    est = np.array([endpoint_mcse(lambda b: percentile_interval(b, 0.95), d) for d in draws[:60]])
    ratio = np.sqrt((est**2).mean(axis=0)) / truth
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio


def test_stable_digits_and_replicates_for_digits():
    from analysis.bootstrap import replicates_for_digits, stable_digits

    assert float(stable_digits(2.386, 0.025)) == 2  # 1.96 x 0.025 = 0.049 fits in half of 0.1, not of 0.01
    assert float(stable_digits(12.29, 0.37)) == 1
    assert float(stable_digits(2.386, np.inf)) == 0
    # a quarter of the error needs sixteen times the replicates
    need = float(replicates_for_digits(2.386, 0.025, 2000, digits=2))
    assert need == 2000  # already stable to 2 digits
    assert float(replicates_for_digits(2.386, 0.025, 2000, digits=3)) == np.ceil(2000 * (0.049 / 0.005) ** 2)


@pytest.mark.filterwarnings("ignore:.*extrapolates")
def test_a_bootstrap_interval_comes_with_its_endpoints_monte_carlo_error():
    cube = scaling.simulate_cube(seeds=5, sources={"gen": {"exchange_rate": 4.0}}, random_state=6)
    fit = _fit(cube, n_boot=1000, ci_method="percentile")
    q = fit.exchange_rate(100, 200)
    assert float(q["lower_mcse"]) > 0 and float(q["upper_mcse"]) > 0
    # the rate's bound is n_synth over n_eq's: the same relative error
    eq = fit.real_equivalent(100, 200)
    np.testing.assert_allclose(float(q["lower_mcse"]) / float(q["lower"]), float(eq["upper_mcse"]) / float(eq["upper"]))
    assert "Monte-Carlo error over 1,000 replicates" in str(fit.summary())
    # refits with other draws move the bound by about the stated error
    lows = [
        float(_fit(cube, n_boot=1000, ci_method="percentile", random_state=k).exchange_rate(100, 200)["lower"])
        for k in range(1, 9)
    ]
    assert 0.4 < np.std(lows, ddof=1) / float(q["lower_mcse"]) < 2.5
    # the jackknife draws nothing: no Monte-Carlo error to state
    assert "lower_mcse" not in _fit(cube).exchange_rate(100, 200)
