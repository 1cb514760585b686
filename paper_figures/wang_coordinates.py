"""The equivalence in Wang et al.'s own coordinates: synthetic images per base image (n_syn / n_base, x)
against the real images they are worth per base image (n_real_added / n_base, y), one curve per base
size, with the fitted law (the one the answer uses) through the per-cell estimates. Under Wang et al.'s
law the curves of all base sizes collapse onto one; a spread between them is what their law leaves out.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from paper_figures.style import new_figure, source_label

FLOOR = 1e-3  # per-base equivalents below this (no gain) sit on the floor, hollow


def figure(results: dict):
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return _figure(results)


def _figure(results: dict):
    fig, axes = new_figure(len(results), width=4.2, height=3.6, sharey=False)
    for ax, (name, res) in zip(axes, results.items()):
        cells = res.cells
        n_real = cells["n_real"].values
        colors = colormaps["viridis"](np.linspace(0, 0.9, len(n_real)))
        for color, r in zip(colors, n_real):
            cell = cells.sel(n_real=r)
            ns = cell["n_synth"].values
            ok = ns > 0
            x = ns[ok] / r
            y = cell["n_eq"].values[ok] / r
            lo = np.clip(cell["n_eq_lower"].values[ok] / r, FLOOR, None)
            hi = np.nan_to_num(cell["n_eq_upper"].values[ok] / r, nan=np.nanmax(y) * 10, posinf=np.nanmax(y) * 10)
            shown = np.clip(y, FLOOR, None)
            ax.errorbar(
                x,
                shown,
                yerr=[np.clip(shown - lo, 0, None), np.clip(hi - shown, 0, None)],
                fmt="none",
                ecolor=color,
                capsize=2,
                lw=1,
            )
            floored = ~(y > FLOOR)
            ax.plot(x[~floored], shown[~floored], "o", color=color, ms=4, label=f"n_base = {int(r)}")
            ax.plot(x[floored], shown[floored], "o", color=color, mfc="white", ms=5)
            grid = np.geomspace(ns[ok].min(), ns[ok].max(), 40)
            q = res._real_equivalent(int(r), grid, None, None)
            ax.plot(grid / r, np.clip(q["estimate"].values / r, FLOOR, None), "-", color=color, lw=1.5)
        ax.plot(ax.get_xlim(), ax.get_xlim(), ":", color="grey", lw=1)  # one synthetic = one real
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n_syn / n_base")
        ax.set_ylabel("n_real_added / n_base (equivalent)")
        ax.set_title(source_label(name), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Wang et al.'s coordinates: curves collapse if their law holds (line: the fit used)")
    return fig
