"""Accuracy heatmap over (n_real, n_synth), one panel per source, mean over seeds, values printed."""

from __future__ import annotations

import numpy as np

from analysis.cube import STATUS_DONE
from paper_figures.style import new_figure, source_label


def heat_data(cube):
    return cube["accuracy"].where(cube["status"] == STATUS_DONE).mean("seed")  # (source, n_real, n_synth)


def figure(cube):
    acc = heat_data(cube)
    vmin, vmax = float(np.nanmin(acc.values)), float(np.nanmax(acc.values))
    fig, axes = new_figure(cube.sizes["source"], width=3.6, height=3.2)
    for ax, src in zip(axes, cube["source"].values):
        a = acc.sel(source=src).values
        im = ax.imshow(a, origin="lower", cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                if np.isfinite(a[i, j]):
                    light = (a[i, j] - vmin) / max(vmax - vmin, 1e-9) < 0.6
                    ax.text(
                        j,
                        i,
                        f"{a[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if light else "black",
                    )
        ax.set_xticks(range(cube.sizes["n_synth"]), [str(int(v)) for v in cube["n_synth"].values])
        ax.set_yticks(range(cube.sizes["n_real"]), [str(int(v)) for v in cube["n_real"].values])
        ax.set_xlabel("n_synth")
        ax.set_title(source_label(str(src)), fontsize=10)
    axes[0].set_ylabel("n_real")
    fig.colorbar(im, ax=axes, shrink=0.85, label="test accuracy (mean over seeds)")
    return fig
