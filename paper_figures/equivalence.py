"""Real-image equivalent n_eq vs n_synth, one panel per n_real, every synthetic source.

Points: per-cell n_eq (model-based inversion of the real curve) with intervals. Lines: the three fitted
equivalence laws, thin (effective solid, Wang et al. dashed, saturating dash-dot), and thick with its CI band
the fit the answer uses: the laws weighted by held-out error (or the one law asked for).
"""

from __future__ import annotations

import numpy as np

from paper_figures.style import LAW_STYLE, new_figure, source_color, source_label, source_marker

FLOOR = 0.1  # n_eq (and lower bounds) below a tenth of an image are drawn at the floor: "worth ~nothing"


def figure(results: dict):
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN/inf estimates are drawn clipped
        return _figure(results)


def _figure(results: dict):
    any_res = next(iter(results.values()))
    n_real = any_res.cells["n_real"].values
    fig, axes = new_figure(len(n_real), sharey=True)
    for ax, r in zip(axes, n_real):
        for name, res in results.items():
            color = source_color(name)
            cell = res.cells.sel(n_real=r)
            ns = cell["n_synth"].values
            ok = ns > 0
            est = cell["n_eq"].values[ok]
            lo = np.clip(cell["n_eq_lower"].values[ok], FLOOR, None)
            hi = np.clip(cell["n_eq_upper"].values[ok], None, 1e6)
            shown = np.clip(est, FLOOR, None)
            ax.errorbar(ns[ok], shown, yerr=[np.clip(shown - lo, 0, None), np.clip(hi - shown, 0, None)],
                        fmt=source_marker(name), color=color, ms=4, capsize=2, lw=1, label=source_label(name))
            grid = np.geomspace(ns[ok].min(), ns[ok].max(), 40)
            for law, ls in LAW_STYLE.items():  # each law thin, for comparison
                q = res.real_equivalent(int(r), grid, law=law)
                ax.plot(grid, np.clip(q["estimate"].values, FLOOR, None), ls, color=color, lw=0.8, alpha=0.6)
            q = res.real_equivalent(int(r), grid)  # what the answer uses: the weighted laws (or the one asked for)
            ax.plot(grid, np.clip(q["estimate"].values, FLOOR, None), "-", color=color, lw=2.2)
            ax.fill_between(grid, np.clip(q["lower"].values, FLOOR, None), np.clip(q["upper"].values, FLOOR, 1e6),
                            color=color, alpha=0.12, lw=0)
        ax.plot(grid, grid, ":", color="grey", lw=1, label="worth one real each")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ns[ok], [str(int(v)) for v in ns[ok]])
        ax.minorticks_off()
        ax.set_title(f"n_real = {int(r)}")
        ax.set_xlabel("synthetic images added (n_synth)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("real-image equivalent n_eq")
    from matplotlib.lines import Line2D

    handles, labels = axes[0].get_legend_handles_labels()
    handles += [Line2D([], [], color="black", lw=2.2)] + [Line2D([], [], color="black", ls=ls, lw=0.8)
                                                          for ls in LAW_STYLE.values()]
    labels += ["fit used (laws weighted by held-out error), CI band"] + [f"{law} law" for law in LAW_STYLE]
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncol=len(labels))  # clear of the data
    fig.suptitle(f"real-image equivalent of synthetic images ({any_res.ci:.0%} {any_res.ci_method} CI over "
                 f"{any_res.n_seeds} seeds)")
    return fig
