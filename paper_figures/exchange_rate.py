"""Exchange rate rho = n_synth / n_eq vs n_real, per source: does synthetic data lose value as the
base set grows? Drawn at the largest n_synth of the cube, from the fitted law, with CIs."""

from __future__ import annotations

import numpy as np

from paper_figures.style import new_figure, source_color, source_label, source_marker

CAP = 1e4  # upper bounds beyond this (including inf: "may be worth nothing") are drawn as arrows at the cap
FLOOR = 1e-2  # lower bounds below this (a fit's 1e-14 is "no lower bound") are drawn as arrows at the floor:
# without it one such bound stretches the log axis over 30 decades and its tick labels vanish
VERDICT_TAGS = {"not identified": "n.i.", "no measurable gain": "no gain", "hurts": "hurts"}


def rate_data(results: dict, n_synth: int | None = None) -> dict:
    out = {}
    for name, res in results.items():
        ns = int(res.cells["n_synth"].values.max()) if n_synth is None else int(n_synth)
        q = res.exchange_rate(res.cells["n_real"].values, ns)
        out[name] = (
            q["n_real"].values,
            q["estimate"].values,
            q["lower"].values,
            q["upper"].values,
            ns,
            q["verdict"].values,
        )
    return out


def figure(results: dict, n_synth: int | None = None):
    data = rate_data(results, n_synth)
    fig, axes = new_figure(1, width=5.2, height=3.8)
    ax = axes[0]
    offsets = np.linspace(-0.04, 0.04, len(data)) if len(data) > 1 else [0.0]  # side by side, not on top
    for off, (name, (r, est, lo, hi, ns, verdict)) in zip(offsets, data.items()):
        x = r * 10**off
        top = np.minimum(hi, CAP)
        shown = np.clip(est, FLOOR, CAP)
        bottom = np.maximum(lo, FLOOR)
        ax.errorbar(
            x,
            shown,
            yerr=[np.clip(shown - bottom, 0, None), np.clip(top - shown, 0, None)],
            fmt="none",
            ecolor=source_color(name),
            capsize=3,
            lw=1.4,
        )
        # filled marker: an estimated rate; hollow: a verdict other than 'estimated' (no number to quote)
        est_ok = verdict == "estimated"
        label = f"{source_label(name)} (n_synth = {ns})"
        ax.plot(
            x[est_ok],
            shown[est_ok],
            source_marker(name),
            color=source_color(name),
            ms=6,
            label=label if est_ok.any() else None,
        )
        ax.plot(
            x[~est_ok],
            shown[~est_ok],
            source_marker(name),
            color=source_color(name),
            ms=6,
            mfc="white",
            label=None if est_ok.any() else label,
        )
        for xi, yi, v in zip(x[~est_ok], shown[~est_ok], verdict[~est_ok]):
            ax.annotate(
                VERDICT_TAGS.get(str(v), str(v)),
                (xi, yi),
                textcoords="offset points",
                xytext=(5, -3),
                fontsize=6,
                color=source_color(name),
            )
        capped = ~(hi <= CAP)
        if capped.any():
            ax.scatter(
                x[capped], np.full(capped.sum(), CAP * 1.25), marker=r"$\uparrow$", color=source_color(name), s=120
            )
        floored = ~(lo >= FLOOR)
        if floored.any():
            ax.scatter(
                x[floored],
                np.full(floored.sum(), FLOOR / 1.25),
                marker=r"$\downarrow$",
                color=source_color(name),
                s=120,
            )
    ax.axhline(1, color="grey", ls=":", lw=1)
    ax.text(min(d[0].min() for d in data.values()), 1.08, "1 synthetic = 1 real", color="grey", fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([int(v) for v in next(iter(data.values()))[0]], [str(int(v)) for v in next(iter(data.values()))[0]])
    ax.minorticks_off()
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("real base size n_real")
    ax.set_ylabel("synthetic images per real image (rho)")
    ax.set_title(f"exchange rate, 95% CI (arrows: bounds beyond {FLOOR:g} or {CAP:g})", fontsize=10)
    ax.plot([], [], "o", color="grey", mfc="white", label="hollow: no rate to quote (n.i. = not identified)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig
