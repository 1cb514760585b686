"""How results read: numbers, intervals, the answer line, and the text and HTML renderings of a summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

def gain_text(row: dict, *, cells: str = "cells") -> str:
    """The gain test behind a headline row, as text ("" when the row has none)."""
    gain = row.get("gain")
    if gain is None or not np.isfinite(gain[0]):
        return ""
    return (f"; weighted mean accuracy gain over {row.get('gain_cells', '?')} {cells} {gain[0]:+.3f} "
            f"[{gain[1]:+.3f}, {gain[2]:+.3f}]")


def answer_line(row: dict) -> str:
    """One line of the answer: the verdict, the rate as the verdict allows it, and the gain test behind it."""
    rate = "no rate" if row["verdict"] == "hurts" else \
        f"rho = {fmt_number(row['estimate'])} {format_interval(row['lower'], row['upper'])}"
    return f"{row['verdict']}: {rate}{gain_text(row)} — {row['note']}"


def int_if_whole(x: np.ndarray) -> np.ndarray:
    """Query coordinates as integers when they are whole numbers (n_real 50, not 50.0)."""
    return x.astype(np.int64) if np.all(np.isfinite(x)) and np.all(x == np.round(x)) else x


class Summary(str):
    """A str that prints as the table (so notebooks show it without a print); in Jupyter it renders as HTML
    tables when the fit provided them (``html``)."""

    def __new__(cls, text: str, html: str | None = None):
        obj = super().__new__(cls, text)
        obj._html = html
        return obj

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return self._html if self._html is not None else f"<pre>{_escape(str(self))}</pre>"


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=False)


def answer_frame(rows: list[dict]) -> pd.DataFrame:
    """The answer rows of :meth:`EquivalenceResult.headline` as a table: one row per (source, n_real)."""
    out = pd.DataFrame([{
        "source": r["source"], "n_real": r["n_real"], "n_synth": r["n_synth"], "verdict": r["verdict"],
        "rho": r["estimate"], "lower": r["lower"], "upper": r["upper"],
        "gain": np.nan if r["gain"] is None else r["gain"][0],
        "gain_lower": np.nan if r["gain"] is None else r["gain"][1],
        "gain_upper": np.nan if r["gain"] is None else r["gain"][2], "note": r["note"]} for r in rows])
    return out.set_index(["source", "n_real"])


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


def fmt_number(x, digits: int = 3) -> str:
    x = float(x)
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** -(digits)):
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}g}" if abs(x) >= 100 else f"{x:.{digits}f}" if abs(x) < 10 else f"{x:.{digits - 1}f}"
