"""Fit orchestration and the result object returned by ``scaling.fit_equivalence``."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
import xarray as xr

from analysis.bootstrap import (
    bca_interval,
    cell_moments,
    expanded_level,
    jackknife_t_interval,
    jackknife_counts,
    percentile_interval,
    seed_counts,
)
from analysis.equivalence import (
    EQUIVALENCE_LAWS,
    Replicates,
    SourceArrays,
    heldout_law_error,
    law_neq,
    log_neq_weights,
    law_synth_needed,
    run_pipeline,
    select_curve_law,
    wang_public,
)


# A real-image equivalent below a hundredth of an image is "worth nothing": dividing by it would print
# exchange rates like 1e155 that carry no information beyond "unbounded".
NEGLIGIBLE_NEQ = 0.01


def _rate(n_synth, n_eq):
    """n_synth / n_eq, inf where n_eq is negligible (or negative: the images hurt), NaN where n_eq is."""
    where = xr.where if isinstance(n_eq, xr.DataArray) else np.where
    with np.errstate(divide="ignore", invalid="ignore"):
        worth = n_synth / n_eq
    return where(np.isnan(n_eq), np.nan, where(n_eq >= NEGLIGIBLE_NEQ, worth, np.inf))


CI_METHODS = ("expanded", "percentile", "bca", "jackknife")


class IdentifiabilityError(ValueError):
    """The cube cannot identify what was asked (too few sizes or seeds, a flat curve...)."""


@dataclass
class FitOptions:
    reference: str = "real"
    n_boot: int = 2000
    ci: float = 0.95
    ci_method: str = "jackknife"
    law: str = "effective"
    curve_law: str = "power"
    k: float = 1000.0
    robust: bool = False
    random_state: int | None = 0

    def check(self) -> None:
        if not (0 < self.ci < 1):
            raise ValueError(f"ci: must lie strictly between 0 and 1, got {self.ci!r}")
        if int(self.n_boot) < 50:
            raise ValueError(f"n_boot: at least 50 replicates are needed for a {self.ci:.0%} interval, got {self.n_boot}")
        if self.ci_method not in CI_METHODS:
            raise ValueError(f"ci_method: choose one of {CI_METHODS}, got {self.ci_method!r}")
        if self.law not in EQUIVALENCE_LAWS + ("auto",):
            raise ValueError(f"law: choose one of {EQUIVALENCE_LAWS + ('auto',)}, got {self.law!r}")
        if self.curve_law not in ("power", "m4", "auto"):
            raise ValueError(f"curve_law: choose 'power', 'm4' or 'auto', got {self.curve_law!r}")
        if not self.k > 0:
            raise ValueError(f"k: the Wang-law scale must be positive, got {self.k!r}")


def _cells(da: xr.DataArray, synth_only: bool) -> SourceArrays:
    """Flatten a (n_real, n_synth, seed) DataArray into (S, C) with cell coordinates."""
    st = da.stack(cell=("n_real", "n_synth")).transpose("seed", "cell")
    n_real = st["n_real"].values.astype(float)
    n_synth = st["n_synth"].values.astype(float)
    keep = n_synth > 0 if synth_only else np.ones_like(n_synth, bool)
    return SourceArrays(str(da["source"].item()) if "source" in da.coords else "", st.values[:, keep].astype(float),
                        n_real[keep], n_synth[keep])


def fit_arrays(acc: xr.DataArray, sources: list[str], opts: FitOptions, *, n_test: int, n_classes: int,
               excluded: dict[str, dict[str, int]], dataset: str = "") -> dict[str, "EquivalenceResult"]:
    """Fit every source in ``sources`` against ``opts.reference`` sharing one set of seed resamples.

    ``acc`` has dims (source, n_real, n_synth, seed) with NaN wherever a cell is excluded.
    """
    opts.check()
    rng = np.random.default_rng(opts.random_state)
    n_seeds = acc.sizes["seed"]
    ref = _cells(acc.sel(source=opts.reference), synth_only=False)
    srcs = [_cells(acc.sel(source=s), synth_only=True) for s in sources]
    warnings_common: list[str] = []
    n_total_ref = ref.n_real + ref.n_synth
    sizes_seen = np.unique(n_total_ref[np.isfinite(ref.acc).any(0)])
    if len(sizes_seen) < 3:
        raise IdentifiabilityError(
            f"reference: the '{opts.reference}' curve has {len(sizes_seen)} distinct sizes with data; "
            "a 3-parameter accuracy law needs at least 3"
        )
    e0 = 1.0 - 1.0 / max(n_classes, 2)
    point_counts = np.ones((1, n_seeds))
    m0, v0, _ = cell_moments(ref.acc, point_counts, n_test)
    heldout_curves = {}
    curve_law = opts.curve_law
    if curve_law == "auto":
        curve_law, heldout_curves = select_curve_law(n_total_ref, 1 - m0, np.where(np.isfinite(m0), 1 / v0, 0), e0)
    warnings_common += _reference_warnings(n_total_ref, 1 - m0[0], v0[0])
    fit_beta = len(np.unique(np.concatenate([s.n_real for s in srcs]))) >= 2 if srcs else True
    if not fit_beta:
        warnings_common.append("only one n_real: the effective law's beta (n_real exponent) is fixed at 0")

    def pipeline(counts):
        return run_pipeline(counts, ref, srcs, n_test=n_test, curve_law=curve_law, e0=e0, fit_beta=fit_beta)

    reps = pipeline(seed_counts(n_seeds, int(opts.n_boot), rng))
    jack = pipeline(jackknife_counts(n_seeds)) if opts.ci_method in ("bca", "jackknife") else None
    if reps.curve.bound_names:
        warnings_common.append(f"reference curve sits on a bound ({', '.join(reps.curve.bound_names)})")
    results = {}
    for src in srcs:
        n_eq0 = reps.n_eq[src.name][:1]
        w_log0, y0 = log_neq_weights(n_eq0, n_eq0 + src.n_real[None, :], reps.cell_err[src.name][:1],
                                     cell_moments(src.acc, point_counts, n_test)[1], reps.curve.take(0))
        heldout = heldout_law_error(src, reps.curve.take(0), reps.cell_err[src.name][:1],
                                    reps.law_weights[src.name][:1], n_eq0, w_log0, fit_beta=fit_beta)
        law = opts.law
        if law == "auto":
            finite = {k: v for k, v in heldout.items() if np.isfinite(v)}
            law = min(finite, key=finite.get) if finite else "effective"
        results[src.name] = EquivalenceResult(
            source=src.name, src=src, ref=ref, opts=opts, law=law, curve_law=curve_law, reps=reps, jack=jack,
            n_seeds=n_seeds, n_test=n_test, dataset=dataset, fit_beta=fit_beta,
            warnings=list(warnings_common), excluded=excluded.get(src.name, {}),
            excluded_reference=excluded.get(opts.reference, {}), heldout_laws=heldout,
            heldout_curves=heldout_curves, sm_fit=_statsmodels_fit(src, y0[0], w_log0[0], fit_beta, opts.robust),
        )
    return results


def _reference_warnings(n_total, err, var) -> list[str]:
    """Flat or non-monotone reference curves make n_eq ill-defined; say so."""
    out = []
    sizes = np.unique(n_total)
    means, ses = [], []
    for s in sizes:
        sel = (n_total == s) & np.isfinite(err)
        if not sel.any():
            continue
        wv = 1 / var[sel]
        means.append(np.sum(wv * err[sel]) / wv.sum())
        ses.append(np.sqrt(1 / wv.sum()))
    means, ses = np.array(means), np.array(ses)
    if len(means) >= 2 and means[0] - means[-1] < 2 * np.hypot(ses[0], ses[-1]):
        out.append("reference curve is flat (error at the largest size is not 2 SE below the smallest): "
                   "real equivalents are not identifiable")
    rises = np.where(np.diff(means) > 2 * np.hypot(ses[1:], ses[:-1]))[0]
    if len(rises):
        out.append(f"reference curve is non-monotone: error rises between sizes "
                   f"{', '.join(f'{sizes[i]:.0f}->{sizes[i + 1]:.0f}' for i in rises)}")
    return out


def _statsmodels_fit(src: SourceArrays, y: np.ndarray, w: np.ndarray, fit_beta: bool, robust: bool):
    """The effective law's point fit with statsmodels, for its standard errors (WLS or Huber RLM)."""
    ok = w > 0
    if ok.sum() < (3 if fit_beta else 2) + 1:
        return None
    cols = [np.ones(ok.sum()), np.log(src.n_synth[ok])] + ([np.log(src.n_real[ok])] if fit_beta else [])
    X = np.column_stack(cols)
    names = ["log_k", "alpha"] + (["beta"] if fit_beta else [])
    if robust:
        # RLM takes no weights: scale rows by sqrt(w) so the Huber norm acts on standardised residuals
        sw = np.sqrt(w[ok])
        res = sm.RLM(y[ok] * sw, X * sw[:, None], M=sm.robust.norms.HuberT()).fit()
    else:
        res = sm.WLS(y[ok], X, weights=w[ok]).fit()
    return {"params": dict(zip(names, res.params)), "bse": dict(zip(names, res.bse)), "model": type(res.model).__name__}


# --------------------------------------------------------------------------------------------------


class EquivalenceResult:
    """How many synthetic images from ``source`` one real image is worth, with intervals.

    Attributes: ``params`` (law parameters with lower/upper), ``cells`` (per-cell real equivalents),
    ``warnings``, ``excluded``. Methods answer queries with an ``xarray.Dataset`` holding
    ``estimate``, ``lower``, ``upper`` and ``extrapolated``.
    """

    def __init__(self, *, source, src, ref, opts: FitOptions, law, curve_law, reps: Replicates, jack, n_seeds,
                 n_test, dataset, fit_beta, warnings, excluded, excluded_reference, heldout_laws, heldout_curves,
                 sm_fit):
        self.source, self.reference, self.law, self.curve_law = source, opts.reference, law, curve_law
        self.ci, self.ci_method, self.n_boot, self.k = opts.ci, opts.ci_method, int(opts.n_boot), float(opts.k)
        self.n_seeds, self.n_test, self.dataset, self.fit_beta = n_seeds, n_test, dataset, fit_beta
        self._src, self._ref, self._reps, self._jack = src, ref, reps, jack
        self.excluded, self.excluded_reference = excluded, excluded_reference
        self.heldout_law_error, self.heldout_curve_error = heldout_laws, heldout_curves
        self._sm = sm_fit
        self.warnings = list(warnings) + self._cell_warnings()
        self.params = self._params_table()
        self.cells = self._cells_dataset()

    # ---------------------------------------------------------------- intervals
    def _interval(self, boot_all: np.ndarray, jack_all: np.ndarray | None):
        point, boot = boot_all[0], boot_all[1:]
        if self.ci_method == "bca" and jack_all is not None:
            lo, hi = bca_interval(point, boot, jack_all, self.ci)
        elif self.ci_method == "jackknife" and jack_all is not None:
            lo, hi = jackknife_t_interval(point, jack_all, self.ci)
            if np.isnan(lo).any() or np.isnan(hi).any():  # a leave-one-seed-out fit failed: expanded percentile there
                e_lo, e_hi = percentile_interval(boot, expanded_level(self.ci, self.n_seeds))
                lo, hi = np.where(np.isnan(lo), e_lo, lo), np.where(np.isnan(hi), e_hi, hi)
        elif self.ci_method == "expanded":
            lo, hi = percentile_interval(boot, expanded_level(self.ci, self.n_seeds))
        else:
            lo, hi = percentile_interval(boot, self.ci)
        return point, lo, hi

    def _law_params(self, law: str, reps: Replicates | None):
        return None if reps is None else reps.laws[self.source][law]

    # ---------------------------------------------------------------- queries
    def real_equivalent(self, n_real, n_synth, law: str | None = None) -> xr.Dataset:
        """Real images that ``n_synth`` images from the source are worth at base size ``n_real``."""
        law = law or self.law
        return self._query(lambda p, r, s: law_neq(law, p, r, s), law, n_real, n_synth, "n_synth")

    def exchange_rate(self, n_real, n_synth, law: str | None = None) -> xr.Dataset:
        """Synthetic images per real image, ``rho = n_synth / n_eq``. An upper bound of inf means the
        interval admits a real equivalent of (almost) zero — below ``NEGLIGIBLE_NEQ`` images — so the
        synthetic images may be worth nothing."""
        eq = self.real_equivalent(n_real, n_synth, law)
        ns = eq["n_synth"]
        with np.errstate(divide="ignore", invalid="ignore"):
            est = _rate(ns, eq["estimate"])
            lower = ns / eq["upper"]
            upper = _rate(ns, eq["lower"])
        dims = eq["estimate"].dims
        out = xr.Dataset({"estimate": est.transpose(*dims), "lower": lower.transpose(*dims),
                          "upper": upper.transpose(*dims), "extrapolated": eq["extrapolated"]})
        out.attrs = {**eq.attrs, "quantity": "exchange rate (synthetic images per real image)"}
        return out

    def synthetic_needed(self, n_real, n_real_added, law: str | None = None) -> xr.Dataset:
        """Synthetic images needed at base ``n_real`` to match adding ``n_real_added`` real images."""
        law = law or self.law
        return self._query(lambda p, r, a: law_synth_needed(law, p, r, a), law, n_real, n_real_added, "n_real_added")

    def _query(self, fn, law, n_real, second, second_name) -> xr.Dataset:
        r_in, s_in = np.asarray(n_real, float), np.asarray(second, float)
        if (r_in <= 0).any() or (s_in <= 0).any():
            raise ValueError(f"n_real/{second_name}: queries must be positive")
        r, s = np.atleast_1d(r_in), np.atleast_1d(s_in)
        rr, ss = np.meshgrid(r, s, indexing="ij")
        boot = fn(self._law_params(law, self._reps), rr.ravel(), ss.ravel()).reshape(-1, len(r), len(s))
        jack_p = self._law_params(law, self._jack)
        jack = None if jack_p is None else fn(jack_p, rr.ravel(), ss.ravel()).reshape(-1, len(r), len(s))
        est, lo, hi = self._interval(boot, jack)
        if second_name == "n_synth":
            srange = (self._src.n_synth.min(), self._src.n_synth.max())
        else:
            neq = self.cells["n_eq"].values
            neq = neq[np.isfinite(neq) & (neq > 0)]
            srange = (neq.min(), neq.max()) if neq.size else (np.inf, -np.inf)
        rrange = (self._src.n_real.min(), self._src.n_real.max())
        extrap = (rr < rrange[0]) | (rr > rrange[1]) | (ss < srange[0] * (1 - 1e-9)) | (ss > srange[1] * (1 + 1e-9))
        dims = ("n_real", second_name)
        coords = {"n_real": r, second_name: s}
        ds = xr.Dataset({"estimate": (dims, est), "lower": (dims, lo), "upper": (dims, hi),
                         "extrapolated": (dims, extrap)}, coords=coords)
        sel = {d: 0 for d, v in ((dims[0], r_in), (dims[1], s_in)) if np.ndim(v) == 0}
        ds = ds.isel(sel) if sel else ds
        ds.attrs = {"source": self.source, "law": law, "ci": self.ci, "ci_method": self.ci_method}
        return ds

    # ---------------------------------------------------------------- tables
    def _params_table(self) -> pd.DataFrame:
        rows = []
        reps, jack = self._reps, self._jack
        curve = reps.curve
        names = {"power": ("E", "B", "beta"), "m4": ("E", "alpha", "log_b", "c")}[self.curve_law]
        for name in names:
            est, lo, hi = self._interval(curve.params[name], None if jack is None else jack.curve.params[name])
            rows.append((f"reference.{name}", est, lo, hi, np.nan, f"{self.curve_law} law of '{self.reference}'"))
        p = self._law_params("effective", reps)
        pj = self._law_params("effective", jack)
        sm_fit = self._sm or {"params": {}, "bse": {}}
        with np.errstate(over="ignore"):  # k of a worthless source can be exp(huge): inf is the honest value
            k_rows = (np.exp(p["log_k"]), sm_fit["bse"].get("log_k", np.nan) * np.exp(p["log_k"][0]),
                      None if pj is None else np.exp(pj["log_k"]))
        for name, values, se in (
            ("k", k_rows[0], k_rows[1]),
            ("alpha", p["alpha"], sm_fit["bse"].get("alpha", np.nan)),
            ("beta", p["beta"], sm_fit["bse"].get("beta", np.nan)),
        ):
            jv = None if pj is None else (k_rows[2] if name == "k" else pj[name])
            est, lo, hi = self._interval(values, jv)
            note = "n_eq = k n_synth^alpha n_real^beta"
            if name == "beta" and not self.fit_beta:
                note = "fixed at 0 (one n_real)"
            rows.append((f"effective.{name}", est, lo, hi, se, note))
        wp, wj = wang_public(self._law_params("wang", reps), self.k), None
        if jack is not None:
            wj = wang_public(self._law_params("wang", jack), self.k)
        for name in ("c1", "c2"):
            est, lo, hi = self._interval(wp[name], None if wj is None else wj[name])
            rows.append((f"wang.{name}", est, lo, hi, np.nan, f"for k = {self.k:g}"))
        rows.append(("wang.k", self.k, self.k, self.k, np.nan, "fixed scale: only ln(c1)/k is identifiable"))
        df = pd.DataFrame(rows, columns=["param", "estimate", "lower", "upper", "se_wls", "note"]).set_index("param")
        return df

    def _cells_dataset(self) -> xr.Dataset:
        src, reps = self._src, self._reps
        idx = pd.MultiIndex.from_arrays([src.n_real.astype(int), src.n_synth.astype(int)], names=["n_real", "n_synth"])
        jack = self._jack
        data = {}
        for key, boot, jk in (("n_eq", reps.n_eq[src.name], None if jack is None else jack.n_eq[src.name]),
                              ("n_eq_model_free", reps.n_eq_mf[src.name], None if jack is None else jack.n_eq_mf[src.name])):
            est, lo, hi = self._interval(boot, jk)
            data[key], data[key + "_lower"], data[key + "_upper"] = est, lo, hi
        ns = src.n_synth
        with np.errstate(divide="ignore", invalid="ignore"):
            data["exchange_rate"] = _rate(ns, data["n_eq"])
            data["exchange_rate_lower"] = _rate(ns, data["n_eq_upper"])
            data["exchange_rate_upper"] = _rate(ns, data["n_eq_lower"])
        data["accuracy"] = 1 - reps.cell_err[src.name][0]
        data["n_seeds"] = reps.n_seeds_cell[src.name][0]
        n_total = data["n_eq"] + src.n_real
        ref_total = self._ref.n_real + self._ref.n_synth
        data["unreachable"] = ~np.isfinite(data["n_eq"]) & np.isfinite(data["accuracy"])
        data["extrapolated"] = np.isfinite(n_total) & ((n_total > ref_total.max()) | (n_total < ref_total.min()))
        data["hurts"] = data["n_eq"] <= 0
        boot_neq = reps.n_eq[src.name][1:]
        data["boot_unreachable_fraction"] = np.mean(~np.isfinite(boot_neq), axis=0)
        for law in EQUIVALENCE_LAWS:
            data[f"n_eq_{law}_law"] = law_neq(law, self._law_params(law, reps), src.n_real, src.n_synth)[0]
        ds = xr.Dataset({k: ("cell", np.asarray(v)) for k, v in data.items()},
                        coords=xr.Coordinates.from_pandas_multiindex(idx, "cell")).unstack("cell")
        for key in ("unreachable", "extrapolated", "hurts"):
            ds[key] = ds[key].fillna(False).astype(bool)
        return ds

    def _cell_warnings(self) -> list[str]:
        out = []
        reps, src = self._reps, self._src
        neq = reps.n_eq[src.name][0]
        acc_ok = np.isfinite(reps.cell_err[src.name][0])
        unreachable = (~np.isfinite(neq)) & acc_ok
        if acc_ok.any() and unreachable.all():
            out.append("the synthetic curve never reaches the reference range: every cell is beyond the reference "
                       "curve's asymptote, so no real equivalent is identifiable")
        elif unreachable.any():
            out.append(f"{int(unreachable.sum())} cell(s) beyond the reference asymptote (n_eq = inf)")
        n_law_cells = int((reps.law_weights[src.name][0] > 0).sum())  # cells with data, on the accuracy scale
        if len(np.unique(src.n_synth)) < 2 or n_law_cells < 3:
            out.append(f"equivalence laws rest on {n_law_cells} usable cell(s) and "
                       f"{len(np.unique(src.n_synth))} n_synth value(s): their parameters are not identifiable")
        return out

    # ---------------------------------------------------------------- presentation
    def summary(self) -> "Summary":
        lines = []
        pct = f"{self.ci:.0%}"
        lines.append(f"Equivalence fit: source '{self.source}' vs reference '{self.reference}'"
                     + (f" ({self.dataset}, n_test={self.n_test})" if self.dataset else ""))
        lines.append(f"{self.n_boot} cluster-bootstrap replicates over {self.n_seeds} seeds; {pct} {self.ci_method} "
                     f"intervals; reference law: {self.curve_law}; equivalence law: {self.law}")
        lines.append("")
        lines.append("Per cell (n_eq: real images the added synthetic images are worth; rho = n_synth / n_eq):")
        head = f"{'n_real':>7} {'n_synth':>8} {'acc':>6} {'n_eq':>8} {pct + ' CI':>21} {'rho':>7} {pct + ' CI':>19} {'n_eq(mf)':>9}  flags"
        lines.append(head)
        c = self.cells
        for r in c["n_real"].values:
            for s in c["n_synth"].values:
                cell = c.sel(n_real=r, n_synth=s)
                if not np.isfinite(float(cell["accuracy"])):
                    lines.append(f"{r:>7} {s:>8}   (no data)")
                    continue
                flags = [k for k in ("unreachable", "extrapolated", "hurts") if bool(cell[k])]
                lines.append(
                    f"{r:>7} {s:>8} {float(cell['accuracy']):6.3f} {_fmt(cell['n_eq']):>8} "
                    f"[{_fmt(cell['n_eq_lower']):>8}, {_fmt(cell['n_eq_upper']):>8}] {_fmt(cell['exchange_rate']):>7} "
                    f"[{_fmt(cell['exchange_rate_lower']):>7}, {_fmt(cell['exchange_rate_upper']):>7}] "
                    f"{_fmt(cell['n_eq_model_free']):>9}  {' '.join(flags)}")
        lines.append("")
        lines.append("Parameters:")
        lines.append(f"{'':<18} {'estimate':>10} {'lower':>10} {'upper':>10} {'se (WLS)':>9}  note"
                     "   [se: statsmodels on log n_eq, for comparison]")
        for name, row in self.params.iterrows():
            lines.append(f"{name:<18} {_fmt(row.estimate, 4):>10} {_fmt(row.lower, 4):>10} {_fmt(row.upper, 4):>10} "
                         f"{_fmt(row.se_wls, 3):>9}  {row.note}")
        if self.heldout_law_error:
            ho = ", ".join(f"{k} {v:.3f}" for k, v in self.heldout_law_error.items())
            lines.append(f"Held-out RMSE of cell error: {ho} (lower is better; '{self.law}' used for queries)")
        if self.heldout_curve_error:
            ho = ", ".join(f"{k} {v:.4f}" for k, v in self.heldout_curve_error.items())
            lines.append(f"Held-out extrapolation error of the reference law: {ho}")
        ex = {"source": self.excluded, "reference": self.excluded_reference}
        n_ex = sum(sum(v.values()) for v in ex.values())
        detail = "; ".join(f"{k}: " + ", ".join(f"{n} {why}" for why, n in v.items()) for k, v in ex.items() if v)
        lines.append(f"Excluded cells: {n_ex}" + (f" ({detail})" if detail else ""))
        lines.append("Warnings: " + ("none" if not self.warnings else ""))
        lines += [f"  - {w}" for w in self.warnings]
        return Summary("\n".join(lines))

    def to_dataset(self) -> xr.Dataset:
        ds = self.cells.copy()
        p = self.params
        ds = ds.assign_coords(param=p.index.values)
        for col in ("estimate", "lower", "upper", "se_wls"):
            ds[f"param_{col}"] = ("param", p[col].values.astype(float))
        ds.attrs = {"source": self.source, "reference": self.reference, "law": self.law, "curve_law": self.curve_law,
                    "ci": self.ci, "ci_method": self.ci_method, "n_boot": self.n_boot, "n_seeds": self.n_seeds,
                    "k": self.k, "warnings": json.dumps(self.warnings), "excluded": json.dumps(self.excluded)}
        return ds

    def plot(self, ax=None):
        """Real equivalent vs n_synth per n_real, with intervals and the fitted law; returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        c = self.cells
        colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, c.sizes["n_real"]))
        for color, r in zip(colors, c["n_real"].values):
            cell = c.sel(n_real=r)
            ns = cell["n_synth"].values
            ax.errorbar(ns, cell["n_eq"], yerr=[cell["n_eq"] - cell["n_eq_lower"], cell["n_eq_upper"] - cell["n_eq"]],
                        fmt="o", color=color, capsize=3, label=f"n_real={r}")
            grid = np.geomspace(ns.min(), ns.max(), 50)
            law = self.real_equivalent(r, grid)
            ax.plot(grid, law["estimate"], color=color)
            ax.fill_between(grid, law["lower"], law["upper"], color=color, alpha=0.15)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"synthetic images added ({self.source})")
        ax.set_ylabel("real-image equivalent n_eq")
        ax.set_title(f"{self.source}: {self.law} law, {self.ci:.0%} CI")
        ax.legend(fontsize=8)
        return ax

    def __repr__(self) -> str:
        return f"<EquivalenceResult source={self.source!r} law={self.law!r} seeds={self.n_seeds} n_boot={self.n_boot}>"


class Summary(str):
    """A str that prints as the table (so notebooks show it without a print)."""

    def __repr__(self) -> str:
        return str(self)


def _fmt(x, digits: int = 3) -> str:
    x = float(x)
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** -(digits)):
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}g}" if abs(x) >= 100 else f"{x:.{digits}f}" if abs(x) < 10 else f"{x:.{digits - 1}f}"
