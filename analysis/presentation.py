"""How one source's fit is shown: its summary (text, Markdown, LaTeX, HTML through :class:`Summary`) and its plot.

Presentation only: every number comes from the result's queries and tables; nothing here is computed twice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.equivalence import gain_base_text
from analysis.formatting import Summary, answer_frame, answer_line, fmt_number, inert_figure, memorisation_text
from analysis.options import BOOTSTRAP_METHODS


def choice_text(asked: str, table: pd.DataFrame) -> str:
    """A law choice in words: the law asked for, or the mixture's weights (point and mean over replicates)."""
    if asked != "auto":
        return asked
    point = ", ".join(f"{k} {v:.2f}" for k, v in table["weight"].items())
    mean = ", ".join(f"{k} {v:.2f}" for k, v in table["mean_weight"].items())
    return f"auto, weighted by held-out error: {point} (mean over replicates: {mean})"


def shown(table: pd.DataFrame, column: str, asked: str) -> dict:
    """One column of a selection table as {law: value} for text: every law of a mixture, the law asked for
    otherwise; NaN entries left out."""
    col = table[column] if asked == "auto" else table.loc[[asked], column]
    return {k: float(v) for k, v in col.items() if np.isfinite(v)}


CLAIMS = {"estimated": "helps", "not identified": "helps", "no measurable gain": "no claim", "hurts": "hurts"}


def verdict_difference_lines(res, rows: list[dict]) -> list[str]:
    """Where a cell's own verdict makes another claim than its base size's answer (helps / no claim / hurts), one
    line per base saying both and why they differ; nothing where they agree."""
    out = []
    c = res.cells
    for row in rows:
        r, base = row["n_real"], row["verdict"]
        differ = []
        for s in c["n_synth"].values:
            cell = c.sel(n_real=r, n_synth=s)
            v = cell["verdict"].item()
            if v and CLAIMS[v] != CLAIMS[base]:
                why = (
                    f"n_eq [{fmt_number(cell['n_eq_lower'])}, {fmt_number(cell['n_eq_upper'])}] lies below 0"
                    if v == "hurts" and float(cell["n_eq_upper"]) < 0
                    else f"gain [{float(cell['gain_lower']):+.3f}, {float(cell['gain_upper']):+.3f}]"
                )
                differ.append(f"n_synth={s} reads {v} ({why})")
        if differ:
            n_cells = row.get("gain_cells") or int(np.isfinite(c["accuracy"].sel(n_real=r).values).sum())
            out.append(
                f"  n_real={r}: the answer reads {base} (the gain test pools the base's {n_cells} cells); "
                + "; ".join(differ)
                + f". A cell's verdict is one test of {n_cells} at this base, each at the stated level, so a lone "
                "cell's claim is weaker evidence than the pooled test, which is the answer."
            )
    if out:
        out.insert(0, "Where a cell's verdict differs from its base size's answer:")
    return out


def summary_of(res) -> Summary:
    """One source's fit as text and tables (what ``EquivalenceResult.summary()`` returns)."""
    lines = []
    pct = f"{res.ci:.0%}"
    lines.append(
        f"Equivalence fit: source '{res.source}' vs reference '{res.reference}'"
        + (f" ({res.dataset}, n_test={res.n_test})" if res.dataset else "")
    )
    resampled = "seeds and test images" if res.test_resampled else "seeds"
    boot = (
        f"{res.n_boot} bootstrap replicates" + ("" if res._boot.computed else " on first use")
        if res.ci_method in BOOTSTRAP_METHODS or res._boot.computed
        else "no bootstrap"
    )
    lines.append(
        f"leave-one-out fits over {res.n_seeds} seeds ({boot}; resampling {resampled}); {pct} "
        f"{res.ci_method} intervals; weights from the {res.variance} variance model"
    )
    lines.append(f"reference law: {choice_text(res.curve_law, res.curve_selection)}")
    lines.append(f"equivalence law: {choice_text(res.law, res.law_selection)}")
    lines.append("")
    lines.append(
        "Answer (exchange rate at the largest n_synth; verdict from the gain test of each base size: "
        f"weighted mean accuracy gain of its n_synth cells over the base, {gain_base_text()}; the base cell "
        "alone at the smallest):"
    )
    rows = res.answer_rows()
    for row in rows:
        lines.append(f"  n_real={row['n_real']:<5} {answer_line(row)}")
    if any("copy_share" in row for row in rows):
        lines.append(
            "Memorisation audit of the pools (copies: nearest reference image closer than 1/3 of the second nearest, "
            "pixel L2; [lowest, highest] bound of the seeds' 95% bootstrap intervals; distance: median nearest-image "
            "distance over that of held-out real images, 1 = as novel as new real data):"
        )
        for row in rows:
            if "copy_share" in row:
                lines.append(f"  n_real={row['n_real']:<5} {memorisation_text(row)}")
    lines.append("")
    lines.append(
        "Per cell (n_eq: real images the added synthetic images are worth; rho = n_synth / n_eq; "
        "gain: accuracy over the same seeds' base):"
    )
    head = (
        f"{'n_real':>7} {'n_synth':>8} {'acc':>6} {'gain':>7} {'n_eq':>8} {pct + ' CI':>21} {'rho':>7} "
        f"{pct + ' CI':>19} {'n_eq(mf)':>9}  verdict"
    )
    lines.append(head)
    c = res.cells
    for r in c["n_real"].values:
        for s in c["n_synth"].values:
            cell = c.sel(n_real=r, n_synth=s)
            if not np.isfinite(float(cell["accuracy"])):
                lines.append(f"{r:>7} {s:>8}   (no data)")
                continue
            flags = [k for k in ("unreachable", "extrapolated") if bool(cell[k])]
            lines.append(
                f"{r:>7} {s:>8} {float(cell['accuracy']):6.3f} {float(cell['gain']):+7.3f} {fmt_number(cell['n_eq']):>8} "
                f"[{fmt_number(cell['n_eq_lower']):>8}, {fmt_number(cell['n_eq_upper']):>8}] {fmt_number(cell['exchange_rate']):>7} "
                f"[{fmt_number(cell['exchange_rate_lower']):>7}, {fmt_number(cell['exchange_rate_upper']):>7}] "
                f"{fmt_number(cell['n_eq_model_free']):>9}  {cell['verdict'].item()} {' '.join(flags)}".rstrip()
            )
    lines += verdict_difference_lines(res, rows)
    lines.append("")
    lines.append("Parameters (each law fitted in every replicate; flags: on bound / not identified / degenerate):")
    lines.append(f"{'':<18} {'estimate':>10} {'lower':>10} {'upper':>10} {'se (WLS)':>9}  {'flag':<15} note")
    for name, row in res._param_table.iterrows():
        lines.append(
            f"{name:<18} {fmt_number(row.estimate, 4):>10} {fmt_number(row.lower, 4):>10} {fmt_number(row.upper, 4):>10} "
            f"{fmt_number(row.se_wls, 3):>9}  {row.flag:<15} {row.note}"
        )
    if held := shown(res.law_selection, "heldout_error", "auto"):
        ho = ", ".join(f"{k} {v:.2f}" for k, v in held.items())
        lines.append(
            f"Held-out error of the equivalence laws (largest n_synth left out; RMSE in standard errors): {ho}"
        )
    if held := shown(res.curve_selection, "heldout_error", "auto"):
        ho = ", ".join(f"{k} {v:.2f}" for k, v in held.items())
        lines.append(f"Held-out extrapolation error of the reference laws (largest sizes left out): {ho}")
    conv = ", ".join(f"{k} {v:.1%}" for k, v in res.law_selection["converged_share"].items())
    lines.append(f"Levenberg-Marquardt converged (leave-one-seed-out fits): {conv}")
    if res.lack_of_fit:
        lf = res.lack_of_fit
        lines.append(
            f"Lack of fit of the {lf['law']} law: chi2 = {lf['chi2']:.1f} on {lf['df']} df (p = {lf['p']:.2g})"
        )
    ex = {"source": res.excluded, "reference": res.excluded_reference}
    n_ex = sum(sum(v.values()) for v in ex.values())
    detail = "; ".join(f"{k}: " + ", ".join(f"{n} {why}" for why, n in v.items()) for k, v in ex.items() if v)
    lines.append(f"Excluded cells: {n_ex}" + (f" ({detail})" if detail else ""))
    lines.append("Warnings: " + ("none" if not res.warnings else ""))
    lines += [f"  - {w}" for w in res.warnings]
    notes = [
        f"{res.n_seeds} seeds; {res.ci:.0%} {res.ci_method} intervals; reference law "
        f"{choice_text(res.curve_law, res.curve_selection)}; equivalence law "
        f"{choice_text(res.law, res.law_selection)}."
    ]
    notes += [f"Warning: {w}" for w in res.warnings]
    tables = [
        ("Answer (exchange rate rho at the largest n_synth)", answer_frame(rows)),
        ("Parameters", res._param_table[["estimate", "lower", "upper", "flag", "note"]]),
    ]
    return Summary(
        "\n".join(lines),
        title=f"Equivalence fit: source '{res.source}' vs reference '{res.reference}'",
        tables=tables,
        notes=notes,
    )


def plot_result(res, ax=None):
    """Real equivalent vs n_synth per n_real, with intervals and the fitted law; returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    c = res.cells
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, c.sizes["n_real"]))
    for color, r in zip(colors, c["n_real"].values):
        cell = c.sel(n_real=r)
        ns = cell["n_synth"].values
        ax.errorbar(
            ns,
            cell["n_eq"],
            yerr=[cell["n_eq"] - cell["n_eq_lower"], cell["n_eq_upper"] - cell["n_eq"]],
            fmt="o",
            color=color,
            capsize=3,
            label=f"n_real={r}",
        )
        grid = np.geomspace(ns.min(), ns.max(), 50)
        law = res._real_equivalent(r, grid, None, None)
        ax.plot(grid, law["estimate"], color=color)
        ax.fill_between(grid, law["lower"], law["upper"], color=color, alpha=0.15)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"synthetic images added ({inert_figure(res.source)})")
    ax.set_ylabel("real-image equivalent n_eq")
    ax.set_title(f"{inert_figure(res.source)}: {res.law_chosen} law, {res.ci:.0%} {res.ci_method} CI")
    ax.legend(fontsize=8)
    return ax
