"""The result object: source as a dimension, compare() across sources (coverage measured), tables."""

import numpy as np
import pandas as pd
import pytest

import scaling
from analysis.cube import CubeError
from analysis.formatting import format_interval
from analysis.options import ExtrapolationWarning

TWO = {"closed_set": {"exchange_rate": 4.0}, "open_set": {"exchange_rate": 2.0}}


@pytest.fixture(scope="module")
def both():
    cube = scaling.simulate_cube(seeds=5, sources=TWO, random_state=3)
    return scaling.fit_equivalence(cube, None, n_boot=200, random_state=3)


def test_queries_carry_a_source_dimension_and_index_per_source(both):
    q = both.exchange_rate([50, 200], 400)
    assert q["estimate"].dims == ("source", "n_real") and list(q["source"].values) == ["closed_set", "open_set"]
    one = both["open_set"].exchange_rate([50, 200], 400)
    np.testing.assert_allclose(q["estimate"].sel(source="open_set").values, one["estimate"].values)
    assert q["source"].values.dtype.kind == "U"  # NetCDF-safe strings
    assert set(both) == {"closed_set", "open_set"} and len(both) == 2
    with pytest.raises(AttributeError, match="index one first"):
        both.params  # noqa: B018 - two sources: which one's parameters is ambiguous
    with pytest.raises(KeyError, match="was not fitted"):
        both["retrieval"]


def test_a_single_named_source_keeps_source_as_a_scalar_coordinate():
    cube = scaling.simulate_cube(seeds=4, sources=TWO, random_state=0)
    res = scaling.fit_equivalence(cube, "open_set", n_boot=100)
    q = res.exchange_rate(200, 400)
    assert q["estimate"].ndim == 0 and str(q["source"].values) == "open_set"
    assert isinstance(float(q["estimate"]), float)
    assert res.params["effective.alpha"] == res["open_set"].params["effective.alpha"]


def test_an_extrapolated_query_warns_once_naming_how_many_points(both):
    with pytest.warns(ExtrapolationWarning, match="2 queried point"):
        both.exchange_rate(5000, 400)  # beyond the largest n_real, for both sources


@pytest.mark.slow  # a coverage study: the full suite runs it, the fast lane does not
def test_compare_ratio_covers_the_planted_ratio():
    """rho_closed / rho_open = 4 / 2 = 2 planted; paired replicates of a joint fit give the interval."""
    hits, estimates, widths = [], [], []
    for r in range(20):
        cube = scaling.simulate_cube(seeds=5, sources=TWO, random_state=100 + r)
        t = scaling.fit_equivalence(cube, None, n_boot=100, random_state=r).compare(200, 400)
        row = t.iloc[0]
        assert (row.a, row.b) == ("closed_set", "open_set")
        hits.append(row.lower <= 2.0 <= row.upper)
        estimates.append(row.ratio)
        widths.append(row.upper / row.lower)
    assert np.mean(hits) >= 0.85, f"coverage {np.mean(hits):.2f}"
    assert abs(np.median(estimates) / 2.0 - 1) < 0.1
    assert np.median(widths) < 1.6  # an interval that says something, not [0, inf]


METHODS = {f"m{rho:g}": {"exchange_rate": rho} for rho in (1.5, 2.0, 4.0, 8.0, 16.0, 1000.0)}


@pytest.mark.slow  # a coverage study: the full suite runs it, the fast lane does not
def test_the_ranking_of_six_planted_methods_orders_them_and_its_paired_differences_cover():
    """Six sources of planted rates 1.5 ... 1000: n_eq = n_synth / rho. At (n_real 200, n_synth 400) the best
    (rho 1.5) is worth 400/1.5 - 400/4 = 166.7 real images more than rho 4: the paired interval of that difference
    covers it, the true rank of every source lies in its rank range, and the order of well-separated sources is
    right."""
    truth = {name: 400 / spec["exchange_rate"] for name, spec in METHODS.items()}
    hits, ranks_hit, orders = [], [], []
    for r in range(16):
        cube = scaling.simulate_cube(seeds=5, sources=METHODS, random_state=200 + r)
        res = scaling.fit_equivalence(cube, None, n_boot=100, random_state=r)
        t = res.ranking(400, n_real=200).set_index("source")
        best = t["best"].iloc[0]
        d = res[best].neq_difference(res["m4"], 200, 400)
        hits.append(d[1] <= truth[best] - truth["m4"] <= d[2])
        true_rank = {name: i + 1 for i, name in enumerate(sorted(truth, key=lambda n: -truth[n]))}
        ranks_hit.append(np.mean([t.loc[n, "rank_low"] <= true_rank[n] <= t.loc[n, "rank_high"] for n in truth]))
        orders.append(list(t.index[2:]) == ["m4", "m8", "m16", "m1000"])
    assert np.mean(hits) >= 0.8, f"coverage {np.mean(hits):.2f}"
    assert np.mean(ranks_hit) >= 0.9, f"rank ranges hold the true rank {np.mean(ranks_hit):.2f}"
    assert np.mean(orders) >= 0.8


def test_compare_against_the_best_is_one_row_per_other_source():
    cube = scaling.simulate_cube(seeds=4, sources=METHODS, random_state=5)
    res = scaling.fit_equivalence(cube, None, n_boot=60, random_state=0)
    every = res.compare(200, 400)
    assert len(every) == 15  # 6 sources: every pair
    t = res.compare(200, 400, against="best")
    best = res.ranking(400, n_real=200)["best"].iloc[0]
    assert len(t) == 5 and set(t["b"]) == {best} and best not in set(t["a"])
    assert list(res.compare(200, 400, against="m2")["b"].unique()) == ["m2"]
    with pytest.raises(ValueError, match="^against: 'sd' is not a fitted source"):
        res.compare(200, 400, against="sd")
    table = res.ranking_markdown(400)
    assert table.count("| best |") == len(res["m2"].cells["n_real"].values)  # one best per base size


def test_compare_needs_one_joint_fit(both):
    cube = scaling.simulate_cube(seeds=4, sources=TWO, random_state=0)
    other = scaling.fit_equivalence(cube, "open_set", n_boot=50)["open_set"]
    with pytest.raises(ValueError, match="fitted together"):
        both["closed_set"].rate_ratio(other, 200, 400)


def test_tables_show_every_source_and_mark_unestimated_rates(both):
    md = both.to_markdown()
    assert md.splitlines()[0] == "| source | n_real | rho | CI | verdict |"
    assert len(md.splitlines()) == 2 + 2 * 5  # header, rule, 2 sources x 5 base sizes
    tex = both.to_latex()
    assert tex.startswith(r"\begin{tabular}{lccccc}") and r"closed\_set &" in tex and r"\bottomrule" in tex
    t = both.table()
    for (source, n_real), row in t.iterrows():
        cell = f"{row.rho:.3f}"[:4]
        line = next(l for l in tex.splitlines() if l.startswith(source.replace("_", r"\_")))
        assert cell in line
        if row.verdict != "estimated":  # shown in parentheses, never as a bare number
            assert "(" in line


def test_every_source_writes_to_one_netcdf_file(both, tmp_path):
    import xarray as xr

    ds = both.to_dataset()
    assert list(ds["source"].values) == ["closed_set", "open_set"] and "param_estimate" in ds
    ds.to_netcdf(tmp_path / "fit.nc", engine="h5netcdf")
    back = xr.open_dataset(tmp_path / "fit.nc", engine="h5netcdf")
    np.testing.assert_allclose(back["param_estimate"].values, ds["param_estimate"].values)
    np.testing.assert_array_equal(back["verdict"].values, ds["verdict"].values)


def test_rate_bounds_that_carry_no_information_print_as_0_and_inf():
    # bounds like these came out of the digits default (closed_set / open_set at n_real 50: [1.07, 3.19e+92])
    assert format_interval(1.07, 3.19e92) == "[1.070, inf]"
    assert format_interval(2.68e-16, np.inf, inf="∞") == "[0, ∞]"
    assert format_interval(0.441, 1.42e4) == "[0.441, 1.42e+04]"  # informative bounds keep their digits
    assert format_interval(2.73, 4.03) == "[2.730, 4.030]"


def test_a_single_source_result_offers_its_fit_attributes_to_tab_completion():
    cube = scaling.simulate_cube(seeds=3, sources={"gen": {"exchange_rate": 4.0}}, random_state=0)
    res = scaling.fit_equivalence(cube, "gen", n_boot=60)
    names = dir(res)
    for name in ("params", "cells", "plot", "conf_int", "gain", "exchange_rate", "compare"):
        assert name in names, name


def test_results_and_summaries_render_as_html_tables_and_keep_their_text():
    cube = scaling.simulate_cube(
        seeds=3, sources={"a": {"exchange_rate": 4.0}, "b": {"exchange_rate": 2.0}}, random_state=0
    )
    res = scaling.fit_equivalence(cube, None, n_boot=60)
    html = res._repr_html_()
    assert html.count("<table") == 1 and "verdict" in html and ">a<" in html and ">b<" in html
    summary = res["a"].summary()
    assert summary._repr_html_().count("<table") == 2  # the answer and the parameters
    assert repr(summary).startswith("Equivalence fit: source 'a'")  # the text repr is unchanged


def test_a_finished_sweep_ends_with_the_answer_and_the_next_command(tmp_path, capsys):
    from scaling.cli import _print_answer

    cube = scaling.simulate_cube(seeds=3, sources={"gen": {"exchange_rate": 4.0}}, random_state=0)
    path = scaling.save_cube(cube, tmp_path / "results.nc")
    _print_answer(path)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("answer (synthetic images per real image")
    rows = [line for line in out if line.strip().startswith("gen")]
    assert len(rows) == cube.sizes["n_real"] and all("rho = " in r or "no rate" in r for r in rows)
    assert out[-1] == f"next: scaling report {path} --out {tmp_path / 'report'}"


def test_the_result_reads_as_statsmodels_and_the_former_forms_warn():
    """params: a Series of estimates whose index does not depend on the law the fit chose; bse, flags,
    conf_int(ci, ci_method) beside it; answer() a DataFrame; summary() as text, Markdown, LaTeX and HTML. The
    former table forms keep working for one release, each with a DeprecationWarning."""

    cube = scaling.simulate_cube(seeds=5, sources={"gen": {"exchange_rate": 4.0}}, random_state=0)
    power = scaling.fit_equivalence(cube, "gen", curve_law="power")
    auto = scaling.fit_equivalence(cube, "gen")
    assert list(power.params.index) == list(auto.params.index)  # fixed per law family
    assert power.params.dtype == float and np.isnan(power.params["reference.m3.C"])  # m3 not fitted
    assert power.param_table().loc["reference.m3.C", "note"].startswith("not fitted")
    assert list(auto.bse.dropna().index) == ["effective.k", "effective.alpha", "effective.beta"]
    assert auto.flags["wang.k"] == "fixed"
    ci = auto.conf_int(0.9, "percentile")
    assert list(ci.columns) == ["lower", "upper"] and (ci["lower"] <= auto.params + 1e-12).all()
    answer = auto.answer()
    assert isinstance(answer, pd.DataFrame) and answer.index.names == ["source", "n_real"]
    assert {"rho", "lower", "upper", "verdict", "gain", "seeds_needed"} <= set(answer.columns)
    summary = auto.summary()
    assert str(summary).startswith("Equivalence fit") and summary.as_text() == str(summary)
    assert "| reference.power.E |" in summary.as_markdown() and r"\toprule" in summary.as_latex()
    assert "<table" in summary.as_html() and summary._repr_html_() == auto["gen"]._repr_html_()
    # params is a plain Series of estimates; the former table's readings are gone, not silently remapped
    assert type(auto["gen"].params) is pd.Series and "reference.E" not in auto["gen"].params.index
    with pytest.raises(KeyError):
        auto["gen"].params["reference.E"]
    assert not hasattr(auto, "headline")


def test_the_report_follows_the_reference_and_shows_a_source_with_the_numbers_of_the_whole_cube(tmp_path):
    from scaling.report import write_report

    cube = scaling.simulate_cube(seeds=3, random_state=6)
    cube = cube.assign_coords(source=["more_real" if s == "real" else s for s in cube["source"].values])
    path = scaling.save_cube(cube, tmp_path / "c.nc")
    with pytest.raises(CubeError, match="the cube has no 'real' source"):
        scaling.fit_equivalence(cube)
    full = write_report(path, tmp_path / "all", n_boot=50, reference="more_real").read_text()
    one = write_report(path, tmp_path / "one", n_boot=50, reference="more_real", sources=["open_set"]).read_text()
    res = scaling.fit_equivalence(cube, "open_set", reference="more_real")
    rate = res.answer_rows()[0]
    line = next(x for x in one.splitlines() if x.startswith("  - n_real = 50:"))
    assert line in full  # the same numbers whether the report shows one source or all
    assert f"{rate['estimate']:.3g}" in line and "closed_set" not in one.split("## Answer")[1].split("##")[0]
