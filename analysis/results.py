"""Every source's equivalence fit as one object whose ``source`` is a dimension (statsmodels-style).

``fit_equivalence`` returns an :class:`EquivalenceResults`: a read-only mapping ``source -> EquivalenceResult``
whose queries (``exchange_rate``, ``real_equivalent``, ``synthetic_needed``) return one ``xarray.Dataset``
with a ``source`` dimension, plus ``compare()`` across sources and Burg-style tables (``to_markdown``,
``to_latex``). With one source, the single fit's attributes (``params``, ``cells``, ``conf_int`` ...) are
reachable directly.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from itertools import combinations

import numpy as np
import pandas as pd
import xarray as xr

from analysis.formatting import (
    Summary,
    answer_frame,
    fmt_count,
    fmt_number,
    format_interval,
    html_tables,
    inert_latex,
    md_table,
)
from analysis.options import ExtrapolationWarning, warn_if_extrapolated
from analysis.result import EquivalenceResult


class EquivalenceResults(Mapping):
    """Fits of several sources against one reference, sharing the same seed resamples."""

    def __init__(self, results: dict[str, EquivalenceResult], *, scalar: bool = False):
        """``scalar``: fitted for one source named by a string — queries then keep ``source`` as a scalar
        coordinate, as ``xarray``'s ``.sel(source=name)`` would, instead of a length-1 dimension."""
        if not results:
            raise ValueError("source: no fitted source")
        if scalar and len(results) != 1:
            raise ValueError("scalar: only a single-source result drops the source dimension")
        self._results = dict(results)
        self._scalar = scalar

    # ---------------------------------------------------------------- mapping
    def __getitem__(self, source: str) -> EquivalenceResult:
        try:
            return self._results[source]
        except KeyError:
            raise KeyError(f"source: {source!r} was not fitted (have {list(self._results)})") from None

    def __iter__(self):
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self._results)

    def __getattr__(self, name: str):
        # one source: its fit's attributes directly (res.params, res.cells, res.conf_int(), ...)
        if name.startswith("_"):
            raise AttributeError(name)
        results = self.__dict__.get("_results", {})
        if len(results) == 1:
            return getattr(next(iter(results.values())), name)
        raise AttributeError(
            f"{name!r}: this result holds {len(results)} sources; index one first, "
            f"e.g. results[{next(iter(results), 'source')!r}].{name}"
        )

    # ---------------------------------------------------------------- queries with a source dimension
    def _stack(self, method: str, *args, **kwargs) -> xr.Dataset:
        parts = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtrapolationWarning)  # once for the stack, below
            for res in self._results.values():
                parts.append(getattr(res, method)(*args, **kwargs))
        attrs = {k: v for k, v in parts[0].attrs.items() if k not in ("source", "law")}
        out = _stack_sources([p.drop_attrs() for p in parts], self._results)
        out = out.isel(source=0) if self._scalar else out
        out.attrs = {
            **attrs,
            "law": "; ".join(f"{name}: {p.attrs.get('law')}" for name, p in zip(self._results, parts)),
        }
        warn_if_extrapolated(out)
        return out

    def exchange_rate(self, n_real, n_synth, law: str | None = None, ci_method: str | None = None) -> xr.Dataset:
        """Synthetic images per real image for every source; see ``EquivalenceResult.exchange_rate``."""
        return self._stack("exchange_rate", n_real, n_synth, law=law, ci_method=ci_method)

    def real_equivalent(self, n_real, n_synth, law: str | None = None, ci_method: str | None = None) -> xr.Dataset:
        return self._stack("real_equivalent", n_real, n_synth, law=law, ci_method=ci_method)

    def synthetic_needed(
        self, n_real, n_real_added, law: str | None = None, ci_method: str | None = None
    ) -> xr.Dataset:
        return self._stack("synthetic_needed", n_real, n_real_added, law=law, ci_method=ci_method)

    def answer(self, n_synth: float | None = None) -> pd.DataFrame:
        """Every source's answer (:meth:`EquivalenceResult.answer`), one row per (source, n_real)."""
        return answer_frame(self.answer_rows(n_synth))

    def answer_rows(self, n_synth: float | None = None) -> list[dict]:
        return [row for res in self._results.values() for row in res.answer_rows(n_synth)]

    def compare(
        self, n_real, n_synth, *, against: str | None = None, law: str | None = None, ci_method: str | None = None
    ) -> pd.DataFrame:
        """Ratios of exchange rates, ``rho_a / rho_b`` at the same (n_real, n_synth), with intervals: every pair, or
        with ``against`` (a source's name, or ``"best"``: the source whose images are worth the most real ones
        there, :meth:`ranking`) each other source against that one — one row per source, legible for many.

        The sources were fitted on the same seed (and test-item) resamples, so the ratio's replicates are
        paired and its interval is tighter than two separate intervals suggest. A ratio above 1: source
        ``a`` needs more images than ``b`` to match one real image (``b`` is the better source there).
        """
        rows = []
        for a, b in self._pairs(n_real, n_synth, against, law, ci_method):
            ra, rb = self._results[a], self._results[b]
            est, lo, hi = ra.rate_ratio(rb, n_real, n_synth, law=law, ci_method=ci_method)
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "n_real": n_real,
                    "n_synth": n_synth,
                    "ratio": est,
                    "lower": lo,
                    "upper": hi,
                    "differ": bool(np.isfinite(lo) and np.isfinite(hi) and (lo > 1 or hi < 1)),
                }
            )
        return pd.DataFrame(rows, columns=["a", "b", "n_real", "n_synth", "ratio", "lower", "upper", "differ"])

    def _pairs(self, n_real, n_synth, against, law, ci_method) -> list[tuple[str, str]]:
        if against is None:
            return list(combinations(self._results, 2))
        if against == "best":
            against = self.ranking(n_synth, n_real=n_real, law=law, ci_method=ci_method).iloc[0]["source"]
        if against not in self._results:
            raise ValueError(f"against: {against!r} is not a fitted source (have {list(self._results)}, or 'best')")
        return [(a, against) for a in self._results if a != against]

    def ranking(
        self, n_synth: float | None = None, *, n_real=None, law: str | None = None, ci_method: str | None = None
    ) -> pd.DataFrame:
        """The sources ranked by what ``n_synth`` of their images are worth in real images at each base size
        (default: every measured base, the largest measured n_synth), best first — Burg et al.'s table of methods
        as a ranking with paired intervals.

        Per row: the real equivalent ``n_eq`` [CI], the exchange rate's verdict, the paired difference to the best
        source ``n_eq_best - n_eq`` [CI] (every source was fitted on the same seed resamples), and the range of
        ranks the pairwise comparisons allow: a source is placed below every source whose paired difference to it
        has an interval above 0, and above every one whose interval lies below 0 (``rank_low``-``rank_high``;
        equal where every comparison is decided). ``tied_with_best``: the difference's interval contains 0.
        Pairwise intervals are at the fit's level each, not simultaneous: among many sources a few spurious
        separations are expected.
        """
        first = next(iter(self._results.values()))
        ns = float(first._src.n_synth.max()) if n_synth is None else float(n_synth)
        bases = np.unique(first._src.n_real) if n_real is None else np.atleast_1d(np.asarray(n_real, float))
        frames = []
        for r in bases:
            frames.append(self._ranking_at(float(r), ns, law, ci_method))
        return pd.concat(frames, ignore_index=True)

    def _ranking_at(self, n_real: float, n_synth: float, law, ci_method) -> pd.DataFrame:
        names = list(self._results)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtrapolationWarning)
            eq = {n: self._results[n].real_equivalent(n_real, n_synth, law=law, ci_method=ci_method) for n in names}
            rate = {n: self._results[n].exchange_rate(n_real, n_synth, law=law, ci_method=ci_method) for n in names}
        point = {n: float(np.ravel(eq[n]["estimate"].values)[0]) for n in names}
        order = sorted(names, key=lambda n: -point[n] if np.isfinite(point[n]) else np.inf)
        best = order[0]
        above = dict.fromkeys(names, 0)  # sources decided better than this one
        below = dict.fromkeys(names, 0)  # sources decided worse
        for a, b in combinations(names, 2):
            _, lo, hi = self._results[a].neq_difference(self._results[b], n_real, n_synth, law=law, ci_method=ci_method)
            if lo > 0:
                above[b], below[a] = above[b] + 1, below[a] + 1
            elif hi < 0:
                above[a], below[b] = above[a] + 1, below[b] + 1
        rows = []
        for n in order:
            d = (0.0, 0.0, 0.0) if n == best else self._results[best].neq_difference(
                self._results[n], n_real, n_synth, law=law, ci_method=ci_method
            )  # fmt: skip
            rows.append(
                {
                    "n_real": int(n_real),
                    "n_synth": int(n_synth),
                    "source": n,
                    "best": best,
                    "n_eq": point[n],
                    "n_eq_lower": float(np.ravel(eq[n]["lower"].values)[0]),
                    "n_eq_upper": float(np.ravel(eq[n]["upper"].values)[0]),
                    "rho": float(np.ravel(rate[n]["estimate"].values)[0]),
                    "verdict": str(np.ravel(rate[n]["verdict"].values)[0]),
                    "behind_best": d[0],
                    "behind_lower": d[1],
                    "behind_upper": d[2],
                    "tied_with_best": bool(n == best or not (d[1] > 0)),
                    "rank_low": 1 + above[n],
                    "rank_high": len(names) - below[n],
                }
            )
        return pd.DataFrame(rows)

    def ranking_markdown(self, n_synth: float | None = None, digits: int = 3) -> str:
        """:meth:`ranking` as one Markdown table: per base size, the sources best first."""
        t = self.ranking(n_synth)
        rows = [
            [
                r.n_real,
                f"{r.rank_low}" if r.rank_low == r.rank_high else f"{r.rank_low}-{r.rank_high}",
                r.source,
                f"{fmt_count(r.n_eq, digits)} {format_interval(r.n_eq_lower, r.n_eq_upper, digits)}",
                "best" if r.source == r.best
                else f"{fmt_count(r.behind_best, digits)} {format_interval(r.behind_lower, r.behind_upper, digits)}"
                + ("" if r.tied_with_best else " *"),
                r.verdict,
            ]
            for r in t.itertuples()
        ]  # fmt: skip
        note = (
            "n_eq: real images the n_synth images are worth; behind the best: the best source's n_eq minus this "
            "one's, paired over the seed resamples (*: its interval excludes 0); rank: the ranks the pairwise paired "
            "comparisons allow"
        )
        return (
            md_table(["n_real", "rank", "source", "n_eq [CI]", "behind the best [CI]", "verdict"], rows) + "\n\n" + note
        )

    # ---------------------------------------------------------------- tables
    def table(self, n_synth: float | None = None) -> pd.DataFrame:
        """Burg-style table: per source and base size, the exchange rate with its interval and verdict at a
        matched budget of ``n_synth`` added images (default: the largest measured)."""
        return self.answer(n_synth)[["n_synth", "rho", "lower", "upper", "verdict"]]

    def to_markdown(self, n_synth: float | None = None, digits: int = 3) -> str:
        """The table as Markdown; a rate whose verdict is not 'estimated' is shown in parentheses."""
        t = self.table(n_synth)
        rows = []
        for (source, n_real), row in t.iterrows():
            rho = fmt_number(row.rho, digits)
            rows.append(
                [
                    source,
                    n_real,
                    rho if row.verdict == "estimated" else f"({rho})",
                    format_interval(row.lower, row.upper, digits),
                    row.verdict,
                ]
            )
        return md_table(["source", "n_real", "rho", "CI", "verdict"], rows)

    def to_latex(self, n_synth: float | None = None, digits: int = 3) -> str:
        """A booktabs table (rows: sources; columns: base sizes) of rho [CI] at a matched budget; values whose
        verdict is not 'estimated' in parentheses."""
        t = self.table(n_synth)
        cols = sorted(set(t.index.get_level_values("n_real")))
        budget = int(t["n_synth"].iloc[0])
        lines = [
            r"\begin{tabular}{l" + "c" * len(cols) + "}",
            r"\toprule",
            r"source & " + " & ".join(f"$n_\\mathrm{{real}}={c}$" for c in cols) + r" \\",
            r"\midrule",
        ]
        for source in dict.fromkeys(t.index.get_level_values("source")):
            cells = []
            for c in cols:
                row = t.loc[(source, c)]
                txt = f"{fmt_number(row.rho, digits)} {format_interval(row.lower, row.upper, digits)}"
                cells.append(txt if row.verdict == "estimated" else f"({txt})")
            lines.append(inert_latex(source) + " & " + " & ".join(cells) + r" \\")
        lines += [
            r"\bottomrule",
            r"\end{tabular}",
            f"% exchange rate rho (synthetic images per real image) at n_synth = {budget}; parentheses: "
            "verdict not 'estimated'",
        ]
        return "\n".join(lines)

    def summary(self) -> Summary:
        return Summary.join([res.summary() for res in self._results.values()])

    def _repr_html_(self) -> str:
        """In Jupyter: the answer of every source as one table (verdict, rate, interval, gain test)."""
        rows = self.answer_rows()
        return html_tables(
            f"Exchange rates of {', '.join(self._results)} (synthetic images per real image)",
            [("Answer at the largest n_synth", answer_frame(rows))],
            ["Index one source (results[name]) for its cells, parameters and plot."],
        )

    def __dir__(self):
        # one source: its fit's attributes are reachable directly, so tab completion offers them too
        names = set(super().__dir__())
        if len(self._results) == 1:
            names |= {n for n in dir(next(iter(self._results.values()))) if not n.startswith("_")}
        return sorted(names)

    def to_dataset(self) -> xr.Dataset:
        """Every source's cells and parameters, stacked on ``source`` (NetCDF-safe)."""
        parts = [res.to_dataset() for res in self._results.values()]
        attrs = {
            k: v
            for k, v in parts[0].attrs.items()
            if k not in ("source", "warnings", "excluded", "law_chosen", "curve_chosen")
        }
        out = _stack_sources([p.drop_attrs() for p in parts], self._results, join="outer")
        out.attrs = attrs
        return out

    def __repr__(self) -> str:
        return f"<EquivalenceResults sources={list(self._results)}>"


def _stack_sources(parts: list, names, **kwargs) -> xr.Dataset:
    # fixed-width numpy strings for the coordinate: NetCDF-safe, unlike pandas' string dtypes
    out = xr.concat(parts, dim="source", **kwargs)
    return out.assign_coords(source=np.array(list(names), dtype=str))
