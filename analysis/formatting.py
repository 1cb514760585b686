"""How results read: numbers, intervals, the answer line, and the text and HTML renderings of a summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.bootstrap import replicates_for_digits, stable_digits


def gain_text(row: dict, *, cells: str = "cells") -> str:
    """The gain test behind a headline row, as text ("" when the row has none)."""
    gain = row.get("gain")
    if gain is None or not np.isfinite(gain[0]):
        return ""
    return (
        f"; weighted mean accuracy gain over {row.get('gain_cells', '?')} {cells} {gain[0]:+.3f} "
        f"[{gain[1]:+.3f}, {gain[2]:+.3f}]"
    )


def answer_line(row: dict) -> str:
    """One line of the answer: the verdict, the rate as the verdict allows it, and the gain test behind it."""
    rate = (
        "no rate"
        if row["verdict"] == "hurts"
        else f"rho = {fmt_number(row['estimate'])} {format_interval(row['lower'], row['upper'])}"
    )
    return f"{row['verdict']}: {rate}{mcse_text(row)}{gain_text(row)} — {row['note']}"


REPLAY_SHARE = 0.5  # a pool whose copies are at least this share is said to replay its reference set
# a pool without replays whose nearest-image distance exceeds held-out real images' by this factor lies off the data
OFF_DATA_RATIO = 1.2


def memorisation_text(row: dict) -> str:
    """The memorisation audit beside a base size's rate ("" without one): the copy share with the range of its
    pools' intervals, the nearest-neighbour distance relative to held-out real images, and — where most of the
    pool is copies — what that means: a generator replaying its training set, or a pool of near-duplicates of the
    base subset."""
    if "copy_share" not in row:
        return ""
    reference = row.get("memorisation_reference", "") or "the reference set"
    text = (
        f"pool: {row['copy_share']:.0%} copies of its {reference} [{row['copy_low']:.0%}, {row['copy_high']:.0%}], "
        f"nearest-image distance {fmt_number(row['nn_distance_ratio'], 2)}x held-out real images'"
    )
    if row["copy_share"] >= REPLAY_SHARE:
        text += (
            f" — the generator replays its {reference}"
            if reference.startswith("training set")
            else f" — the pool is mostly near-duplicates of the {reference}"
        )
    elif row["nn_distance_ratio"] > OFF_DATA_RATIO and reference.startswith("training set"):
        text += (
            " — no replays: its images lie farther from the training set than new real images do (off the data, "
            "not copies of it)"
        )
    return text


def mcse_text(row: dict, digits: int = 3) -> str:
    """The Monte-Carlo error of a bootstrap interval's finite bounds (``lower_mcse``, ``upper_mcse`` of an
    answer row or a methods-table row), and — where more replicates would change the bounds' first ``digits``
    significant digits — how many digits are stable and how many replicates ``digits`` would need; empty for an
    interval that draws nothing (the jackknife) or has no finite bound."""
    parts, stable, need = [], [], []
    for side in ("lower", "upper"):
        value, se = row.get(side, np.nan), row.get(f"{side}_mcse", np.nan)
        if not np.isfinite(value) or np.isnan(se):  # an infinite bound, or no error to state
            continue
        parts.append(f"{side} ±{se:.2g}")
        stable.append(int(stable_digits(value, se)))
        need.append(float(replicates_for_digits(value, se, row["n_boot"], digits)))
    if not parts:
        return ""
    text = f" (Monte-Carlo error over {row['n_boot']:,} replicates: {', '.join(parts)}"
    if min(stable) < digits:
        more = max(need)
        text += f"; more replicates would change the printed digits: stable to {min(stable)} significant digit" + (
            "s" if min(stable) != 1 else ""
        )
        text += f", {digits} need about {int(more):,} replicates" if np.isfinite(more) else ""
    return text + ")"


def int_if_whole(x: np.ndarray) -> np.ndarray:
    """Query coordinates as integers when they are whole numbers (n_real 50, not 50.0)."""
    return x.astype(np.int64) if np.all(np.isfinite(x)) and np.all(x == np.round(x)) else x


class Summary(str):
    """A fit's summary, as statsmodels' ``summary()``: a str that prints as the full text (so notebooks show it
    without a print), with the same answer and parameter tables rendered as Markdown (``as_markdown()``), LaTeX
    (``as_latex()``) and HTML (``as_html()``, what Jupyter shows)."""

    def __new__(cls, text: str, *, title: str = "", tables: list | None = None, notes: list | None = None):
        obj = super().__new__(cls, text)
        obj._title, obj._tables, obj._notes = title, list(tables or []), list(notes or [])
        return obj

    @classmethod
    def join(cls, parts: list["Summary"]) -> "Summary":
        """Several fits' summaries as one (text, tables and notes in order)."""
        out = cls("\n\n".join(str(p) for p in parts))
        out._parts = parts
        return out

    def _pieces(self) -> list["Summary"]:
        return getattr(self, "_parts", None) or [self]

    def __repr__(self) -> str:
        return str(self)

    def as_text(self) -> str:
        return str(self)

    def as_markdown(self) -> str:
        out = []
        for part in self._pieces():
            out += [f"#### {inert_md(part._title)}", ""] if part._title else []
            for caption, frame in part._tables:
                out += [f"**{inert_md(caption)}**", "", md_table(*frame_rows(frame)), ""]
            out += [f"{inert_md(n)}  " for n in part._notes] + ([""] if part._notes else [])
        return "\n".join(out).rstrip() + "\n"

    def as_latex(self) -> str:
        out = []
        for part in self._pieces():
            out += [f"% {inert_latex(part._title)}"] if part._title else []
            for caption, frame in part._tables:
                out += [f"% {inert_latex(caption)}", latex_table(*frame_rows(frame))]
        return "\n".join(out)

    def as_html(self) -> str:
        return "\n<hr/>\n".join(
            html_tables(p._title, p._tables, p._notes) if p._tables else f"<pre>{_escape(str(p))}</pre>"
            for p in self._pieces()
        )

    def _repr_html_(self) -> str:
        return self.as_html()


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=False)


# Text from a cube (source names, attributes) is data, never markup: every renderer passes it through one of these.
# Each keeps the text on one line (a newline would end a table row, a bullet or a LaTeX comment and start markup).


def one_line(text) -> str:
    return " ".join(str(text).split())


def inert_md(text) -> str:
    """Text as inert Markdown: no HTML (``& < >`` as entities), no link or image (``](`` and ``][`` broken by a
    backslash), no table cell break (``\\|``), no code fence (backticks as ``'``)."""
    text = one_line(text)
    for raw, safe in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("`", "'")):
        text = text.replace(raw, safe)
    return text.replace("](", "]\\(").replace("][", "]\\[")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "^": r"\textasciicircum{}",
    "_": r"\_",
    "%": r"\%",
    "~": r"\textasciitilde{}",
}


def inert_latex(text) -> str:
    """Text as inert LaTeX: every special character escaped (no command, group, math, alignment or comment)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in one_line(text))


def inert_figure(text) -> str:
    """Text for a matplotlib label or title: one line, ``$`` escaped (no mathtext parsing of a cube's names)."""
    return one_line(text).replace("$", r"\$")


def answer_frame(rows: list[dict]) -> pd.DataFrame:
    """The answer rows (:meth:`EquivalenceResult.answer_rows`) as a table: one row per (source, n_real)."""
    out = pd.DataFrame(
        [
            {
                "source": r["source"],
                "n_real": r["n_real"],
                "n_synth": r["n_synth"],
                "verdict": r["verdict"],
                "rho": r["estimate"],
                "lower": r["lower"],
                "upper": r["upper"],
                "gain": np.nan if r["gain"] is None else r["gain"][0],
                "gain_lower": np.nan if r["gain"] is None else r["gain"][1],
                "gain_upper": np.nan if r["gain"] is None else r["gain"][2],
                "gain_cells": r["gain_cells"],
                "seeds_needed": np.nan if r["seeds_needed"] is None else r["seeds_needed"],
                "extrapolated": r["extrapolated"],
                "copy_share": r.get("copy_share", np.nan),
                "nn_distance_ratio": r.get("nn_distance_ratio", np.nan),
                "note": r["note"],
            }
            for r in rows
        ]
    )
    return out.set_index(["source", "n_real"])


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; every cell is inert text (:func:`inert_md`), whatever a cube put in it."""
    lines = ["| " + " | ".join(map(inert_md, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(inert_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def latex_table(header: list[str], rows: list[list]) -> str:
    def esc(x) -> str:  # inert text; a trailing * (a flagged value) as a superscript marker
        return inert_latex(x).replace("*", r"$^*$")

    lines = (
        [r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule", " & ".join(map(esc, header)) + r" \\", r"\midrule"]
        + [" & ".join(map(esc, row)) + r" \\" for row in rows]
        + [r"\bottomrule", r"\end{tabular}"]
    )
    return "\n".join(lines)


def format_table(df, fmt: str = "markdown") -> str:
    """A small DataFrame as Markdown or booktabs LaTeX (no optional pandas dependencies)."""
    rows = df.astype(str).values.tolist()
    return latex_table(list(df.columns), rows) if fmt == "latex" else md_table(list(df.columns), rows)


def frame_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """A DataFrame's index and columns as printable cells (numbers through :func:`fmt_number`)."""
    flat = frame.reset_index()
    cells = [
        [fmt_number(v) if isinstance(v, (float, np.floating)) else str(v) for v in row]
        for row in flat.itertuples(index=False)
    ]
    return [str(c) for c in flat.columns], cells


def html_tables(title: str, tables: list[tuple[str, pd.DataFrame]], notes: list[str]) -> str:
    """A title, captioned HTML tables (pandas' rendering) and notes: what a result shows in Jupyter."""
    parts = [f"<h4>{_escape(title)}</h4>"]
    for caption, frame in tables:
        parts.append(f"<p><b>{_escape(caption)}</b></p>")
        parts.append(frame.to_html(float_format=lambda x: fmt_number(x), na_rep="–", border=0))
    parts += [f"<p>{_escape(n)}</p>" for n in notes]
    return "\n".join(parts)


# Interval bounds of a rate (or a ratio of rates) beyond these carry no information a reader can use — a lower
# bound of 3e-16 or an upper one of 3e+92 says "the interval admits nothing / everything" — and print as 0 / inf.
RATE_BOUND_SHOWN = (1e-3, 1e6)


def format_interval(lower, upper, digits: int = 3, inf: str = "inf", fmt=None) -> str:
    """``[lower, upper]`` of a rate, with bounds outside :data:`RATE_BOUND_SHOWN` as 0 and ``inf``; other
    bounds by ``fmt(x, digits)`` (default: this module's number style)."""
    fmt = fmt or fmt_number

    def bound(x) -> str:
        x = float(x)
        if np.isfinite(x) and 0 <= x < RATE_BOUND_SHOWN[0]:
            return "0"
        if np.isinf(x) and x > 0 or np.isfinite(x) and x > RATE_BOUND_SHOWN[1]:
            return inf
        return fmt(x, digits)

    return f"[{bound(lower)}, {bound(upper)}]"


def fmt_count(x, digits: int = 3) -> str:
    """A number of images (a real equivalent): as :func:`fmt_number`, but below a hundredth of an image it reads 0
    (a fit's 1e-19 is no image, and printing it so suggests a precision it does not have)."""
    x = float(x)
    return "0" if np.isfinite(x) and abs(x) < 0.01 else fmt_number(x, digits)


def fmt_number(x, digits: int = 3) -> str:
    x = float(x)
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 10**-(digits)):
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}g}" if abs(x) >= 100 else f"{x:.{digits}f}" if abs(x) < 10 else f"{x:.{digits - 1}f}"
