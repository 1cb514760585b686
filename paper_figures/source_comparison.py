"""Source comparison at matched budgets (Burg et al.'s table as a figure): a dot plot with intervals.

One panel per n_real; along x every budget of added images (0 = the base set alone); per source a dot at
the mean accuracy over seeds with its 95% t-interval, clipped to [0, 1] (accuracy cannot exceed 1). Dots,
not bars: the axis need not start at 0, so it is not cut.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from analysis.cube import STATUS_DONE
from paper_figures.style import new_figure, source_color, source_label, source_marker


def comparison_data(cube, budget: int | None = None) -> dict:
    """Mean and 95% half-width per (n_real, source) at ``budget`` (default: the largest n_synth); ``base`` is
    n_synth = 0."""
    budget = int(cube["n_synth"].values.max()) if budget is None else int(budget)
    acc = cube["accuracy"].where(cube["status"] == STATUS_DONE)
    rows = {}
    for r in cube["n_real"].values:
        entries = {"base": acc.sel(source=cube["source"].values[0], n_real=r, n_synth=0).values}
        for src in cube["source"].values:
            entries[str(src)] = acc.sel(source=src, n_real=r, n_synth=budget).values
        rows[int(r)] = {k: _mean_ci(v) for k, v in entries.items()}
    return {"budget": budget, "rows": rows}


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if len(v) < 2:
        return (float(v.mean()) if len(v) else np.nan, np.nan)
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def figure(cube, budgets=None):
    budgets = [int(b) for b in (cube["n_synth"].values if budgets is None else budgets)]
    sources = [str(s) for s in cube["source"].values]
    n_real = [int(r) for r in cube["n_real"].values]
    # each budget's column widens with the sources it holds (6-10 methods stay apart)
    width = max(3.6, (0.5 + 0.06 * len(sources)) * len(budgets) + 1.5)
    fig, axes = new_figure(len(n_real), width=width, height=3.4, sharey=False)
    spread = 0.25 if len(sources) <= 4 else 0.38
    offsets = np.linspace(-spread, spread, len(sources)) if len(sources) > 1 else [0.0]
    per_budget = [comparison_data(cube, b)["rows"] for b in budgets]  # once, not per panel and source
    for ax, r in zip(axes, n_real):
        for off, src in zip(offsets, sources):
            stats_ = [rows[r] for rows in per_budget]
            mean = np.array([s["base" if b == 0 else src][0] for s, b in zip(stats_, budgets)])
            half = np.array([s["base" if b == 0 else src][1] for s, b in zip(stats_, budgets)])
            lo, hi = np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1)
            x = np.arange(len(budgets)) + off
            ax.errorbar(
                x,
                mean,
                yerr=[np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)],
                fmt=source_marker(src),
                color=source_color(src),
                ms=5,
                capsize=2,
                lw=1,
                label=source_label(src),
            )
        ax.set_xticks(np.arange(len(budgets)), [str(b) for b in budgets])
        ax.set_xlabel("images added (0: base set alone)")
        ax.set_ylabel("test accuracy (mean, 95% CI over seeds)")
        ax.set_title(f"n_real = {r}")
        ax.set_ylim(top=min(1.0, ax.get_ylim()[1]))
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncol=min(len(labels), 4))
    fig.suptitle("every source at matched budgets of added images")
    return fig
