"""The exchange rate against the synthetic sampling weight, per source: how much the answer depends on the
training protocol. One panel per source; x: the probability that a batch item is synthetic ("pool": uniform
over all images, drawn at the left); one line per (budget policy, n_real), with 95% intervals; hollow markers
carry a verdict other than 'estimated'.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import FuncFormatter, LogLocator

from paper_figures.style import new_figure, source_label

BUDGET_STYLE = {"steps": "-", "epochs": "--"}


def figure(table):
    """``table``: :func:`scaling.fit.protocol_table` output."""
    sources = list(dict.fromkeys(table["source"]))
    weights = sorted({w for w in table["synth_weight"] if w is not None and np.isfinite(w)})
    pool_x = 0.0 if not weights else min(weights) / 2  # uniform pooling drawn left of the smallest weight
    fig, axes = new_figure(len(sources), width=4.0, height=3.4, sharey=False)
    n_reals = sorted(set(table["n_real"]))
    n_reals = sorted({n_reals[0], n_reals[len(n_reals) // 2], n_reals[-1]})  # at most 3 base sizes stay readable
    table = table[table["n_real"].isin(n_reals)]
    colors = dict(zip(n_reals, colormaps["viridis"](np.linspace(0, 0.85, len(n_reals)))))
    for ax, src in zip(axes, sources):
        t = table[table["source"] == src]
        for (budget, r), g in t.groupby(["budget", "n_real"]):
            w = np.array([pool_x if (v is None or not np.isfinite(v)) else v for v in g["synth_weight"]], float)
            order = np.argsort(w)
            w, est, lo, hi = w[order], g["rho"].values[order], g["lower"].values[order], g["upper"].values[order]
            ok = (g["verdict"].values[order] == "estimated")
            top = np.where(np.isfinite(hi), hi, est * 10)
            ax.errorbar(w, est, yerr=[np.clip(est - lo, 0, None), np.clip(top - est, 0, None)], fmt="none",
                        ecolor=colors[r], capsize=2, lw=1)
            ax.plot(w, est, BUDGET_STYLE.get(budget, ":"), color=colors[r], lw=1.2,
                    label=f"{budget}, n_real = {r}")
            ax.plot(w[ok], est[ok], "o", color=colors[r], ms=4)
            ax.plot(w[~ok], est[~ok], "o", color=colors[r], mfc="white", ms=5)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xticks([pool_x] + weights, ["pool"] + [f"{v:g}" for v in weights])
        ax.set_xlabel("P(batch item is synthetic)")
        ax.set_ylabel("synthetic images per real image (rho)")
        ax.set_title(source_label(src), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    n_synth = int(table["n_synth"].iloc[0])
    fig.suptitle(f"exchange rate vs synthetic weight, n_synth = {n_synth}\n(hollow: verdict not 'estimated')",
                 fontsize=10)
    return fig
