"""Exchange rate against the memorisation audit: is a source's rate explained by pools that replay their
reference set? One point per (dataset, source, base size) at the largest n_synth: x the share of pool images
that are copies (mean over seeds, with the range of the seeds' bootstrap intervals), y the rate with its interval.
Several datasets share one panel (marker fill per dataset)."""

from __future__ import annotations

import numpy as np

from paper_figures.exchange_rate import CAP, FLOOR, VERDICT_TAGS
from paper_figures.style import new_figure, source_color, source_label, source_marker

DATASET_FILLS = ("full", "none", "left", "bottom")  # marker fill per dataset


def points(results: dict, dataset: str = "") -> list[dict]:
    """The figure's points of one cube's fits: every base size of every source whose cube carries the audit."""
    out = []
    for name, res in results.items():
        for row in res.answer_rows():
            if "copy_share" in row:
                out.append({**row, "dataset": dataset or res.dataset})
    return out


def figure(results_by_dataset: dict):
    """``{dataset: results}`` (one cube's fits per dataset, as ``scaling.fit_equivalence`` returns them)."""
    data = {ds: points(res, ds) for ds, res in results_by_dataset.items()}
    if not any(data.values()):
        raise ValueError("no source of these cubes carries a memorisation audit (pool_copy_share)")
    fig, axes = new_figure(1, width=5.6, height=3.9)
    ax = axes[0]
    seen = set()
    for fill, (ds, pts) in zip(DATASET_FILLS, data.items()):
        for p in pts:
            src = p["source"]
            shown = float(np.clip(p["estimate"], FLOOR, CAP)) if p["verdict"] != "hurts" else FLOOR
            low = max(p["lower"], FLOOR) if p["verdict"] != "hurts" else FLOOR
            high = min(p["upper"], CAP) if p["verdict"] != "hurts" else FLOOR
            colour = source_color(src)
            ax.errorbar(
                p["copy_share"],
                shown,
                xerr=[[max(p["copy_share"] - p["copy_low"], 0)], [max(p["copy_high"] - p["copy_share"], 0)]],
                yerr=[[max(shown - low, 0)], [max(high - shown, 0)]],
                fmt="none",
                ecolor=colour,
                alpha=0.6,
                lw=1,
                capsize=2,
            )
            label = f"{source_label(src)}, {ds}"
            ax.plot(
                p["copy_share"],
                shown,
                source_marker(src),
                color=colour,
                fillstyle=fill,
                mfc="white" if fill == "none" else colour,
                ms=6,
                label=None if label in seen else label,
            )
            seen.add(label)
            tag = "" if p["verdict"] == "estimated" else VERDICT_TAGS.get(p["verdict"], p["verdict"]) + " "
            ax.annotate(f"{tag}r{p['n_real']}", (p["copy_share"], shown), textcoords="offset points",
                        xytext=(4, 3), fontsize=5.5, color=colour)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlim(-0.03, 1.03)
    ax.axhline(1, color="grey", ls=":", lw=1)
    ax.set_xlabel("copy share of the pool (nearest reference image < 1/3 of the second nearest)")
    ax.set_ylabel("synthetic images per real image (rho)")
    ax.set_title(
        "Exchange rate vs memorisation (upper bounds past %g and 'no gain' drawn at the cap)" % CAP, fontsize=7
    )
    ax.legend(fontsize=6, loc="best")
    return fig
