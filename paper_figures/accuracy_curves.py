"""Accuracy vs n_synth (log x), one panel per n_real, every source against the real reference.

Lines are means over seeds; bands span mean +- one standard deviation across seeds (the seed spread).
"""

from __future__ import annotations

import numpy as np

from analysis.formatting import inert_figure
from analysis.cube import STATUS_DONE
from paper_figures.style import new_figure, source_color, source_label, source_marker, symlog_position, zero_tick


def curve_data(cube) -> dict:
    """{(source, n_real): (n_synth, mean, sd, n_seeds)}: the numbers the figure draws."""
    acc = cube["accuracy"].where(cube["status"] == STATUS_DONE)
    out = {}
    for src in cube["source"].values:
        for r in cube["n_real"].values:
            a = acc.sel(source=src, n_real=r)
            out[(str(src), int(r))] = (
                cube["n_synth"].values,
                a.mean("seed").values,
                a.std("seed", ddof=1).values,
                a.count("seed").values,
            )
    return out


def figure(cube):
    data = curve_data(cube)
    n_synth = cube["n_synth"].values
    zero_at = max(n_synth[n_synth > 0].min() / 2, 0.5) if (n_synth > 0).any() else 1.0
    fig, axes = new_figure(cube.sizes["n_real"])
    for ax, r in zip(axes, cube["n_real"].values):
        for src in cube["source"].values:
            x, mean, sd, _ = data[(str(src), int(r))]
            pos = symlog_position(x, zero_at)
            color = source_color(str(src))
            ax.plot(
                pos,
                mean,
                marker=source_marker(str(src)),
                color=color,
                label=source_label(str(src)),
                ms=4,
                lw=2.2 if src == "real" else 1.5,
            )
            ax.fill_between(pos, mean - np.nan_to_num(sd), mean + np.nan_to_num(sd), color=color, alpha=0.15, lw=0)
        zero_tick(ax, n_synth, zero_at)
        ax.set_title(f"n_real = {int(r)}")
        ax.set_xlabel("images added (n_synth)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"{inert_figure(cube.attrs.get('dataset', ''))}: accuracy as images are added (mean ± sd over {cube.sizes['seed']} seeds)"
    )
    return fig
