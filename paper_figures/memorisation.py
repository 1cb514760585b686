"""Exchange rate against the memorisation audit: is a source's rate explained by pools that replay their
reference set? One point per (dataset, source, base size) at the largest n_synth, the rate with its interval
against (a) the share of pool images that are copies (mean over seeds, with the range of the seeds' bootstrap
intervals) and (b) the nearest-image distance ratio. Several datasets share the panels (marker fill per dataset)."""

from __future__ import annotations

import numpy as np

from paper_figures.exchange_rate import CAP, FLOOR, VERDICT_TAGS
from paper_figures.style import new_figure, source_color, source_label, source_marker

DATASET_FILLS = ("full", "none", "left", "bottom")  # marker fill per dataset


def points(results: dict, dataset: str = "") -> list[dict]:
    """The figure's points of one cube's fits: every base size of every source whose cube carries the audit."""
    out = []
    for res in results.values():
        for row in res.answer_rows():
            if "copy_share" in row:
                out.append({**row, "dataset": dataset or res.dataset})
    return out


def figure(results_by_dataset: dict):
    """``{dataset: results}`` (one cube's fits per dataset, as ``scaling.fit_equivalence`` returns them). Panel (a):
    rate against copy share; (b): against the nearest-image distance ratio (1 = as novel as new real images)."""
    data = {ds: points(res, ds) for ds, res in results_by_dataset.items()}
    if not any(data.values()):
        raise ValueError("no source of these cubes carries a memorisation audit (pool_copy_share)")
    fig, axes = new_figure(2, width=4.6, height=3.9)
    for ax, x_of, panel in (
        (axes[0], _copy_x, "(a) copy share of the pool (nearest < 1/3 of the second nearest)"),
        (axes[1], _distance_x, "(b) nearest-image distance / held-out real images'"),
    ):
        seen = set()
        for fill, (ds, pts) in zip(DATASET_FILLS, data.items()):
            for p in pts:
                _point(ax, p, ds, fill, x_of(p), seen)
        ax.set_yscale("log")
        ax.axhline(1, color="grey", ls=":", lw=1)
        ax.set_xlabel(panel, fontsize=7)
        ax.set_ylabel("synthetic images per real image (rho)")
    axes[0].set_xlim(-0.03, 1.03)
    axes[1].axvline(1, color="grey", ls=":", lw=1)
    axes[0].legend(fontsize=6, loc="best")
    fig.suptitle(f"Exchange rate vs memorisation (no-gain upper bounds at {CAP:g}, hurts at {FLOOR:g})", fontsize=8)
    return fig


def _copy_x(p: dict) -> tuple[float, float, float]:
    return p["copy_share"], p["copy_low"], p["copy_high"]


def _distance_x(p: dict) -> tuple[float, float, float]:
    return p["nn_distance_ratio"], p["nn_distance_ratio"], p["nn_distance_ratio"]


def _point(ax, p: dict, ds: str, fill: str, x: tuple[float, float, float], seen: set) -> None:
    """One (source, base size): the rate with its interval at x, labelled with its base size and verdict."""
    src, (x, x_low, x_high) = p["source"], x
    hurts = p["verdict"] == "hurts"
    shown = FLOOR if hurts else float(np.clip(p["estimate"], FLOOR, CAP))
    low = FLOOR if hurts else max(p["lower"], FLOOR)
    high = FLOOR if hurts else min(p["upper"], CAP)
    colour = source_color(src)
    ax.errorbar(x, shown, xerr=[[max(x - x_low, 0)], [max(x_high - x, 0)]],
                yerr=[[max(shown - low, 0)], [max(high - shown, 0)]], fmt="none", ecolor=colour, alpha=0.6, lw=1,
                capsize=2)  # fmt: skip
    label = f"{source_label(src)}, {ds}"
    ax.plot(x, shown, source_marker(src), color=colour, fillstyle=fill, mfc="white" if fill == "none" else colour,
            ms=6, label=None if label in seen else label)  # fmt: skip
    seen.add(label)
    tag = "" if p["verdict"] == "estimated" else VERDICT_TAGS.get(p["verdict"], p["verdict"]) + " "
    ax.annotate(f"{tag}r{p['n_real']}", (x, shown), textcoords="offset points", xytext=(4, 3), fontsize=5.5,
                color=colour)  # fmt: skip
