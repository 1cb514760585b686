"""Source comparison at a matched budget (Burg et al.'s table as a figure).

For each n_real: accuracy with no added images, and with ``budget`` images from each source (default:
the largest n_synth), as bars with 95% t-intervals over seeds.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from paper_figures.style import new_figure, source_color, source_label


def comparison_data(cube, budget: int | None = None) -> dict:
    budget = int(cube["n_synth"].values.max()) if budget is None else int(budget)
    acc = cube["accuracy"].where(cube["status"] == 1)
    rows = {}
    for r in cube["n_real"].values:
        base = acc.sel(source=cube["source"].values[0], n_real=r, n_synth=0).values
        entries = {"base": base}
        for src in cube["source"].values:
            entries[str(src)] = acc.sel(source=src, n_real=r, n_synth=budget).values
        rows[int(r)] = {k: _mean_ci(v) for k, v in entries.items()}
    return {"budget": budget, "rows": rows}


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if len(v) < 2:
        return (float(v.mean()) if len(v) else np.nan, np.nan)
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def figure(cube, budget: int | None = None):
    data = comparison_data(cube, budget)
    names = ["base"] + [str(s) for s in cube["source"].values]
    fig, axes = new_figure(1, width=max(5.0, 1.6 * len(data["rows"]) * len(names) / 3), height=4.2)
    ax = axes[0]
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        xs = np.arange(len(data["rows"])) + (k - (len(names) - 1) / 2) * width
        means = [data["rows"][r][name][0] for r in data["rows"]]
        errs = [data["rows"][r][name][1] for r in data["rows"]]
        color = "#BBBBBB" if name == "base" else source_color(name)
        label = "base only (n_synth = 0)" if name == "base" else f"+{data['budget']} {source_label(name)}"
        ax.bar(xs, means, width, yerr=errs, color=color, label=label, capsize=2, edgecolor="black", lw=0.4,
               error_kw={"ecolor": "#777777", "elinewidth": 1.2})  # grey: visible on the black bars too
    ax.set_xticks(np.arange(len(data["rows"])), [f"n_real = {r}" for r in data["rows"]])
    lo = np.nanmin([v[0] for row in data["rows"].values() for v in row.values()])
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.set_ylabel("test accuracy (mean, 95% CI over seeds)")
    ax.set_title(f"matched budget: {data['budget']} added images per source")
    fig.legend(fontsize=8, loc="outside lower center", ncol=min(len(names), 3))
    ax.grid(axis="y", alpha=0.3)
    return fig
