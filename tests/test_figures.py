"""Paper figures and the report: files written, and the plotted data equal the cube's numbers."""

import subprocess
import sys

import numpy as np
import pytest

import scaling
from paper_figures import accuracy_curves, exchange_rate, heatmap, render_all, source_comparison
from scaling.report import cost_table, write_report


@pytest.fixture(scope="module")
def cube():
    return scaling.simulate_cube(
        n_real=(50, 200, 800),
        n_synth=(0, 100, 400, 1600),
        seeds=3,
        sources={"closed_set": {"exchange_rate": 4.0}, "open_set": {"exchange_rate": 2.0}},
        random_state=3,
    )


@pytest.fixture(scope="module")
def results(cube):
    return scaling.fit_equivalence(cube, ["closed_set", "open_set"], n_boot=200, random_state=0)


def test_every_figure_is_written_as_png_and_pdf(cube, results, tmp_path):
    paths = render_all(cube, results, tmp_path)
    assert set(paths) == {
        "accuracy_vs_nsynth",
        "accuracy_heatmap",
        "source_comparison",
        "equivalence",
        "exchange_rate",
        "wang_coordinates",
    }
    for p in paths.values():
        assert p["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p["png"].stat().st_size > 10_000
        assert p["pdf"].read_bytes()[:5] == b"%PDF-"


def test_accuracy_figure_plots_the_seed_means(cube):
    fig = accuracy_curves.figure(cube)
    ax = fig.axes[1]  # n_real = 200
    lines = {ln.get_label(): ln for ln in ax.lines}
    expected = cube["accuracy"].sel(source="closed_set", n_real=200).mean("seed").values
    np.testing.assert_allclose(lines["closed-set diffusion"].get_ydata(), expected)
    np.testing.assert_allclose(lines["closed-set diffusion"].get_xdata()[1:], cube["n_synth"].values[1:])


def test_heatmap_and_comparison_data_match_the_cube(cube):
    np.testing.assert_allclose(
        heatmap.heat_data(cube).sel(source="open_set").values,
        cube["accuracy"].sel(source="open_set").mean("seed").values,
    )
    data = source_comparison.comparison_data(cube)
    assert data["budget"] == 1600
    mean, half = data["rows"][50]["real"]
    assert mean == pytest.approx(float(cube["accuracy"].sel(source="real", n_real=50, n_synth=1600).mean()))
    assert half > 0
    img = heatmap.figure(cube).axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(img), cube["accuracy"].sel(source="real").mean("seed").values)


def test_exchange_rate_figure_shows_the_fitted_rates(results):
    data = exchange_rate.rate_data(results)
    r, est, lo, hi, ns, verdict = data["closed_set"]
    q = results["closed_set"].exchange_rate(r, ns)
    np.testing.assert_allclose(est, q["estimate"].values)
    assert np.all(lo <= est) and np.all(est <= hi)
    # the planted rates (4 and 2) are ordered in the figure's numbers too
    assert np.median(data["closed_set"][1]) > np.median(data["open_set"][1])


def test_report_reads_without_the_code(cube, tmp_path):
    path = scaling.save_cube(cube, tmp_path / "results.nc")
    report = write_report(path, tmp_path / "report", n_boot=200)
    text = report.read_text()
    for needle in (
        "## Answer",
        "**closed_set**",
        "## Figures",
        "![equivalence](figures/equivalence.png)",
        "## Summary: open_set",
        "## Price of the answer",
    ):
        assert needle in text, needle
    assert (tmp_path / "report" / "figures" / "exchange_rate.pdf").exists()


def test_cost_table_divides_seconds_by_real_equivalents(cube, results):
    c = cube.copy(deep=True)
    c["train_seconds"][:] = 2.0
    c["source_seconds"][:] = 1.0
    rows = {(r["source"], r["n_real"]): r for r in cost_table(c, results)}
    assert rows[("real", 50)]["seconds_per_real_equivalent"] == pytest.approx(3.0 / 1600)
    neq = float(results["closed_set"].cells["n_eq"].sel(n_real=50, n_synth=1600))  # the per-cell table's n_eq
    assert rows[("closed_set", 50)]["seconds_per_real_equivalent"] == pytest.approx(3.0 / neq)


def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "scaling.cli", "report", str(tmp_path / "missing.nc"), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1 and "error" in out.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "scaling.cli", "figures", "--help"], capture_output=True, text=True
    ).stdout
    assert "--out" in help_text


def test_equivalence_figure_draws_the_fitted_laws_and_cell_estimates(results):
    from paper_figures import equivalence

    fig = equivalence.figure(results)
    ax = fig.axes[0]  # n_real = 50
    top = ax.get_ylim()[1]
    res = results["closed_set"]
    ns = res.cells["n_synth"].values  # synthetic cells only (n_synth > 0)
    grid = np.geomspace(ns.min(), ns.max(), 40)
    drawn = [ln.get_ydata() for ln in ax.lines if len(ln.get_xdata()) == 40]
    for law in ("effective", "wang"):
        curve = np.clip(res.real_equivalent(50, grid, law=law)["estimate"].values, equivalence.FLOOR, top)
        assert any(np.allclose(y, curve) for y in drawn), f"the {law} law of closed_set is not on the panel"
    points = [ln for ln in ax.lines if ln.get_label() == "closed-set diffusion"][0]
    neq = res.cells["n_eq"].sel(n_real=50).values
    np.testing.assert_allclose(points.get_ydata(), np.clip(neq[neq > equivalence.FLOOR], None, top))
    # the y-range follows the points: every estimate is inside the panel, however wide a band is
    assert top >= neq.max() and ax.get_ylim()[0] < equivalence.FLOOR


def test_a_source_with_unbounded_intervals_does_not_stretch_the_panels(results):
    """An interval reaching infinity becomes an arrow at the top; the panel keeps the other sources readable."""
    from paper_figures import equivalence

    res = results["open_set"]
    cells = res.cells
    saved = cells["n_eq_upper"].values.copy()
    cells["n_eq_upper"].values[:] = np.inf  # a source that may be worth everything
    try:
        fig = equivalence.figure(results)
    finally:
        cells["n_eq_upper"].values[:] = saved
    ax = fig.axes[0]
    top = ax.get_ylim()[1]
    assert top < 1e5  # not stretched to the clip value of an unbounded band
    arrows = [ln for ln in ax.lines if ln.get_marker() == r"$\uparrow$"]
    assert arrows and np.allclose(arrows[0].get_ydata(), top / 1.15)


def test_source_comparison_is_a_dot_plot_over_every_budget_with_intervals_inside_0_1(cube):
    fig = source_comparison.figure(cube)
    assert len(fig.axes) >= cube.sizes["n_real"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(int(b)) for b in cube["n_synth"].values]
    assert not ax.patches  # no bars
    for coll in ax.collections:  # error bars never leave [0, 1]
        for seg in coll.get_segments():
            assert np.all(seg[:, 1] <= 1.0 + 1e-12) and np.all(seg[:, 1] >= 0)


def _features(sources=("real", "closed_set"), n_real=(10, 20), seeds=(0, 1), items=12, dim=6):
    import xarray as xr

    rng = np.random.default_rng(0)
    shape = (len(sources), len(n_real), len(seeds))
    return xr.Dataset(
        {
            "features": (("source", "n_real", "seed", "item", "feature"), rng.normal(size=shape + (items, dim))),
            "labels": (("source", "n_real", "seed", "item"), rng.integers(0, 3, shape + (items,))),
            "domain_direction": (("source", "n_real", "seed", "feature"), np.ones(shape + (dim,)) / np.sqrt(dim)),
            "real_features": (("real_item", "feature"), rng.normal(size=(20, dim))),
            "real_labels": (("real_item",), rng.integers(0, 3, 20)),
        },
        coords={"source": list(sources), "n_real": list(n_real), "seed": list(seeds)},
    )


def test_domain_gap_labels_panels_colours_classes_and_takes_a_slice():
    from paper_figures import domain_gap

    feats = _features(sources=("real", "closed_set", "open_set"))
    fig = domain_gap.figure(feats, n_real=20, seed=1)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["(a1) closed-set diffusion", "(a2) open-set diffusion"] and titles[2].startswith("(b)")
    assert "n_real = 20, seed 1" in fig._suptitle.get_text()
    colours = {tuple(c) for coll in fig.axes[2].collections for c in coll.get_facecolors()}
    assert len(colours) >= 3  # coloured by class, not one colour per source
    with pytest.raises(ValueError, match="^--domain-n-real: 30 is not in features.nc"):
        domain_gap.figure(feats, n_real=30)


def test_cli_has_a_version_and_help_for_every_option():
    out = subprocess.run([sys.executable, "-m", "scaling.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("scaling ")
    from scaling.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"scaling {name} {action.option_strings or action.dest}: no help text"


def test_table_command_lists_c2_rstar_and_rho0_per_source(cube, tmp_path):
    path = scaling.save_cube(cube, tmp_path / "results.nc")
    out = subprocess.run(
        [sys.executable, "-m", "scaling.cli", "table", str(path), "--n-boot", "100"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "| dataset | source | c2 | R* | rho0 | rho at largest cell |"
    assert len(lines) == 2 + 2 and "| closed_set |" in lines[2] and "| open_set |" in lines[3]


def test_a_vanishing_lower_bound_is_an_arrow_not_thirty_decades_of_axis(results, monkeypatch):
    """A rate interval whose lower bound is 1e-30 (a fit's 'no lower bound') is drawn to the floor with an
    arrow; the axis keeps readable tick labels (a 1e-30 bound once stretched the digits figure's axis over 30
    decades and its tick labels vanished)."""
    real = exchange_rate.rate_data

    def with_tiny_lower(res, n_synth=None):
        data = real(res, n_synth)
        r, est, lo, hi, ns, verdict = data["closed_set"]
        data["closed_set"] = (r, est, np.full_like(lo, 1e-30), hi, ns, verdict)
        return data

    monkeypatch.setattr(exchange_rate, "rate_data", with_tiny_lower)
    ax = exchange_rate.figure(results).axes[0]
    assert ax.get_ylim()[0] > exchange_rate.FLOOR / 10
    assert [
        c
        for c in ax.collections
        if c.get_offsets().size and np.allclose(c.get_offsets()[:, 1], exchange_rate.FLOOR / 1.25)
    ]
