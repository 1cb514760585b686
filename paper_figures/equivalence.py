"""Real-image equivalent n_eq vs n_synth, one panel per n_real, every synthetic source.

Points: per-cell n_eq (model-based inversion of the real curve) with intervals. Lines: the three fitted
equivalence laws, thin (effective solid, Wang et al. dashed, saturating dash-dot), and thick with its CI band
the fit the answer uses: the laws weighted by held-out error (or the one law asked for).

The y-range comes from the points, not the bands: an unbounded interval (a source that may be worth nothing,
or everything) is drawn as an arrow off the panel instead of stretching it until the other sources vanish.
An n_eq at or below ``FLOOR`` (zero or negative: the images did not help) is a hollow marker on the floor line.
"""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D

from paper_figures.style import LAW_STYLE, new_figure, source_color, source_label, source_marker

FLOOR = 0.1  # n_eq below a tenth of an image: "worth ~nothing", drawn hollow on this line


def figure(results: dict):
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN/inf estimates are drawn clipped
        return _figure(results)


def _panel_limits(results: dict, r) -> tuple[float, float]:
    """Y-range from the per-cell estimates and their finite bounds within a factor 30 of them."""
    vals = []
    for res in results.values():
        cell = res.cells.sel(n_real=r)
        est = cell["n_eq"].values[cell["n_synth"].values > 0]
        est = est[np.isfinite(est) & (est > FLOOR)]
        vals += list(est)
        for b in ("n_eq_lower", "n_eq_upper"):
            v = cell[b].values
            v = v[np.isfinite(v) & (v > FLOOR)]
            if est.size:
                vals += list(np.clip(v, est.min() / 30, est.max() * 30))
        vals += list(cell["n_synth"].values[cell["n_synth"].values > 0])  # the diagonal is always in view
    vals = np.asarray(vals, float)
    return FLOOR / 1.5, float(vals.max() * 1.5) if vals.size else 10.0


def _draw_source(ax, res, name: str, r, top: float):
    color = source_color(name)
    cell = res.cells.sel(n_real=r)
    ns = cell["n_synth"].values
    ok = ns > 0
    est, lo, hi = (cell[v].values[ok] for v in ("n_eq", "n_eq_lower", "n_eq_upper"))
    shown = np.clip(est, FLOOR, top)
    lo_s, hi_s = np.clip(lo, FLOOR, top), np.clip(np.nan_to_num(hi, nan=top, posinf=top), FLOOR, top)
    ax.errorbar(
        ns[ok],
        shown,
        yerr=[np.clip(shown - lo_s, 0, None), np.clip(hi_s - shown, 0, None)],
        fmt="none",
        ecolor=color,
        capsize=2,
        lw=1,
    )
    floored = ~(est > FLOOR)
    ax.plot(ns[ok][~floored], shown[~floored], source_marker(name), color=color, ms=4, label=source_label(name))
    ax.plot(ns[ok][floored], shown[floored], source_marker(name), color=color, ms=5, mfc="white")
    off = ~(hi <= top)  # unbounded or beyond the panel: an arrow, not a stretched axis
    if off.any():
        ax.plot(ns[ok][off], np.full(off.sum(), top / 1.15), marker=r"$\uparrow$", ls="none", color=color, ms=9)
    grid = np.geomspace(ns[ok].min(), ns[ok].max(), 40)
    for law, ls in LAW_STYLE.items():  # each law thin, for comparison
        q = res._real_equivalent(int(r), grid, law, None)
        ax.plot(grid, np.clip(q["estimate"].values, FLOOR, top), ls, color=color, lw=0.8, alpha=0.6)
    q = res._real_equivalent(int(r), grid, None, None)  # what the answer uses: the weighted laws (or the one asked)
    ax.plot(grid, np.clip(q["estimate"].values, FLOOR, top), "-", color=color, lw=2.2)
    ax.fill_between(
        grid,
        np.clip(q["lower"].values, FLOOR, top),
        np.clip(np.nan_to_num(q["upper"].values, nan=top), FLOOR, top),
        color=color,
        alpha=0.12,
        lw=0,
    )
    return ns[ok], grid


def _figure(results: dict):
    any_res = next(iter(results.values()))
    n_real = any_res.cells["n_real"].values
    fig, axes = new_figure(len(n_real), sharey=False)
    for ax, r in zip(axes, n_real):
        bottom, top = _panel_limits(results, r)
        for name, res in results.items():
            ns, grid = _draw_source(ax, res, name, r, top)
        ax.plot(grid, grid, ":", color="grey", lw=1, label="worth one real each")
        ax.axhline(FLOOR, color="grey", lw=0.6, ls=(0, (1, 3)))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(bottom, top)
        ax.set_xticks(ns, [str(int(v)) for v in ns])
        ax.minorticks_off()
        ax.set_title(f"n_real = {int(r)}")
        ax.set_xlabel("synthetic images added (n_synth)")
        ax.set_ylabel("real-image equivalent n_eq")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [Line2D([], [], color="black", lw=2.2)] + [
        Line2D([], [], color="black", ls=ls, lw=0.8) for ls in LAW_STYLE.values()
    ]
    labels += ["fit used (laws weighted by held-out error), CI band"] + [f"{law} law" for law in LAW_STYLE]
    handles += [
        Line2D([], [], marker="o", color="grey", mfc="white", ls="none"),
        Line2D([], [], marker=r"$\uparrow$", color="grey", ls="none", ms=9),
    ]
    labels += [f"n_eq <= {FLOOR:g} (no gain), on the floor line", "upper bound off the panel (unbounded)"]
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncol=min(len(labels), 4))
    fig.suptitle(
        f"real-image equivalent of synthetic images ({any_res.ci:.0%} {any_res.ci_method} CI over "
        f"{any_res.n_seeds} seeds)"
    )
    return fig
