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
    return scaling.simulate_cube(n_real=(50, 200, 800), n_synth=(0, 100, 400, 1600), seeds=3,
                                 sources={"closed_set": {"exchange_rate": 4.0}, "open_set": {"exchange_rate": 2.0}},
                                 random_state=3)


@pytest.fixture(scope="module")
def results(cube):
    return scaling.fit_equivalence(cube, ["closed_set", "open_set"], n_boot=200, random_state=0)


def test_every_figure_is_written_as_png_and_pdf(cube, results, tmp_path):
    paths = render_all(cube, results, tmp_path)
    assert set(paths) == {"accuracy_vs_nsynth", "accuracy_heatmap", "source_comparison", "equivalence",
                          "exchange_rate"}
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
    np.testing.assert_allclose(heatmap.heat_data(cube).sel(source="open_set").values,
                               cube["accuracy"].sel(source="open_set").mean("seed").values)
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
    for needle in ("## Answer", "**closed_set**", "## Figures", "![equivalence](figures/equivalence.png)",
                   "## Summary: open_set", "## Price of the answer"):
        assert needle in text, needle
    assert (tmp_path / "report" / "figures" / "exchange_rate.pdf").exists()


def test_cost_table_divides_seconds_by_real_equivalents(cube, results):
    c = cube.copy(deep=True)
    c["train_seconds"][:] = 2.0
    c["source_seconds"][:] = 1.0
    rows = {(r["source"], r["n_real"]): r for r in cost_table(c, results)}
    assert rows[("real", 50)]["seconds_per_real_equivalent"] == pytest.approx(3.0 / 1600)
    neq = float(results["closed_set"].real_equivalent(50, 1600)["estimate"])
    assert rows[("closed_set", 50)]["seconds_per_real_equivalent"] == pytest.approx(3.0 / neq)


def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path):
    out = subprocess.run([sys.executable, "-m", "scaling.cli", "report", str(tmp_path / "missing.nc"), "--out",
                          str(tmp_path / "r")], capture_output=True, text=True)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1 and "error" in out.stderr
    help_text = subprocess.run([sys.executable, "-m", "scaling.cli", "figures", "--help"], capture_output=True,
                               text=True).stdout
    assert "--out" in help_text


def test_equivalence_figure_draws_the_fitted_laws_and_cell_estimates(results):
    from paper_figures import equivalence

    fig = equivalence.figure(results)
    ax = fig.axes[0]  # n_real = 50
    res = results["closed_set"]
    ns = res.cells["n_synth"].values  # synthetic cells only (n_synth > 0)
    grid = np.geomspace(ns.min(), ns.max(), 40)
    law = np.clip(res.real_equivalent(50, grid, law="effective")["estimate"].values, equivalence.FLOOR, None)
    drawn = [ln.get_ydata() for ln in ax.lines if len(ln.get_xdata()) == 40]
    assert any(np.allclose(y, law) for y in drawn), "the effective law of closed_set is not on the panel"
    wang = np.clip(res.real_equivalent(50, grid, law="wang")["estimate"].values, equivalence.FLOOR, None)
    assert any(np.allclose(y, wang) for y in drawn)
    points = [c for c in ax.containers if c.get_label() == "closed-set diffusion"][0].lines[0]
    np.testing.assert_allclose(points.get_ydata(), np.clip(res.cells["n_eq"].sel(n_real=50).values,
                                                           equivalence.FLOOR, None))
