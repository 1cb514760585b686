"""The exchange rate against the synthetic sampling weight, per source: how much the answer depends on the
training protocol. One panel per source; x: the probability that a batch item is synthetic — uniform pooling
("pool", squares) sits at its effective share n_synth / (n_real + n_synth), which is where it truly samples;
one line per (budget policy, n_real), with 95% intervals; hollow markers carry a verdict other than 'estimated'.
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
    fig, axes = new_figure(len(sources), width=4.0, height=3.4, sharey=False)
    n_reals = sorted(set(table["n_real"]))
    n_reals = sorted({n_reals[0], n_reals[len(n_reals) // 2], n_reals[-1]})  # at most 3 base sizes stay readable
    table = table[table["n_real"].isin(n_reals)]
    colors = dict(zip(n_reals, colormaps["viridis"](np.linspace(0, 0.85, len(n_reals)))))
    for ax, src in zip(axes, sources):
        t = table[table["source"] == src]
        for (budget, r), g in t.groupby(["budget", "n_real"]):
            pooled = np.array([v is None or not np.isfinite(v) for v in g["synth_weight"]])
            # uniform pooling draws a synthetic item with probability n_synth / (n_real + n_synth)
            w = np.where(
                pooled,
                g["n_synth"].values / (g["n_real"].values + g["n_synth"].values),
                np.array([0.0 if p else v for p, v in zip(pooled, g["synth_weight"])], float),
            )
            order = np.argsort(w)
            pooled = pooled[order]
            w, est, lo, hi = w[order], g["rho"].values[order], g["lower"].values[order], g["upper"].values[order]
            ok = g["verdict"].values[order] == "estimated"
            top = np.where(np.isfinite(hi), hi, est * 10)
            ax.errorbar(
                w,
                est,
                yerr=[np.clip(est - lo, 0, None), np.clip(top - est, 0, None)],
                fmt="none",
                ecolor=colors[r],
                capsize=2,
                lw=1,
            )
            ax.plot(w, est, BUDGET_STYLE.get(budget, ":"), color=colors[r], lw=1.2, label=f"{budget}, n_real = {r}")
            for mask, marker in ((~pooled, "o"), (pooled, "s")):
                ax.plot(w[ok & mask], est[ok & mask], marker, color=colors[r], ms=4)
                ax.plot(w[~ok & mask], est[~ok & mask], marker, color=colors[r], mfc="white", ms=5)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xticks(weights + [1.0], [f"{v:g}" for v in weights] + ["1"])
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("P(item is synthetic); squares: pooled")
        ax.set_ylabel("synthetic images per real image (rho)")
        ax.set_title(source_label(src), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    n_synth = int(table["n_synth"].iloc[0])
    fig.suptitle(
        f"exchange rate vs synthetic weight, n_synth = {n_synth}\n(hollow: verdict not 'estimated')", fontsize=10
    )
    return fig
