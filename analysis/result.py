"""The result object returned by ``scaling.fit_equivalence``: one source's exchange rate with intervals and a
verdict, its law parameters, cells and queries."""

from __future__ import annotations

import json
from functools import cached_property

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from analysis.bootstrap import (
    bca_interval,
    endpoint_mcse,
    expanded_level,
    jackknife_t_interval,
    percentile_interval,
)
from analysis.equivalence import (
    EQUIVALENCE_LAWS,
    LazyReplicates,
    Replicates,
    wang_public,
)
from analysis.formatting import Summary, answer_frame, int_if_whole
from analysis.params import PARAM_COLUMNS
from analysis.presentation import plot_result, shown, summary_of
from analysis.options import (
    BOOTSTRAP_METHODS,
    CI_METHODS,
    check_ci_method,
    LACK_OF_FIT_P,
    NEGLIGIBLE_NEQ,
    TEST_GROUPS,
    FitWarning,
    unidentifying,
    FitOptions,
    quiet,
    warn_if_extrapolated,
)
from analysis.variance import VarianceModel
from analysis.verdict import (
    METHODS_DISAGREE_FACTOR,
    bound_disagreement,
    cell_verdicts,
    describe,
    rate_under_verdict,
    seeds_needed,
    surviving_verdict,
    verdicts,
)


def _rate(n_synth, n_eq):
    """n_synth / n_eq, inf where n_eq is negligible (or negative: the images hurt), NaN where n_eq is."""
    where = xr.where if isinstance(n_eq, xr.DataArray) else np.where
    with np.errstate(divide="ignore", invalid="ignore"):
        worth = n_synth / n_eq
    return where(np.isnan(n_eq), np.nan, where(n_eq >= NEGLIGIBLE_NEQ, worth, np.inf))


# parameter domains: (low, high) bounds an interval may not cross, and whether the interval is built in logs
_POS = (0.0, np.inf)
_REAL = (-np.inf, np.inf)
CURVE_PARAM_DOMAINS = {
    "power": {"E": (0.0, 1.0), "B": _POS, "beta": (0.0, np.inf)},
    "m3": {"E": (0.0, 1.0), "B": _POS, "beta": (0.0, np.inf), "C": _POS},
    "m4": {"E": (0.0, 1.0), "alpha": _POS, "log_b": _REAL, "c": _POS},
}


def _law_public(law: str, p: dict, k: float) -> dict[str, tuple[np.ndarray, tuple, str]]:
    """The reported parameters of an equivalence law: values (R,), domain, and a note."""
    with np.errstate(over="ignore"):  # k of a worthless source can be exp(huge): inf is the honest value
        if law == "effective":
            return {
                "k": (np.exp(p["log_k"]), _POS, "n_eq = k n_synth^alpha n_real^beta"),
                "alpha": (p["alpha"], _REAL, ""),
                "beta": (p["beta"], _REAL, ""),
            }
        if law == "wang":
            w = wang_public(p, k)
            return {"c1": (w["c1"], _POS, f"for k = {k:g}"), "c2": (w["c2"], (1.0, np.inf), "")}
        return {
            "R*": (np.exp(p["log_rstar"]), _POS, "most real images the source can be worth, per base image"),
            "rho0": (np.exp(p["log_rho0"]), _POS, "exchange rate of the first synthetic images"),
        }


class EquivalenceResult:
    """How many synthetic images from ``source`` one real image is worth, with intervals and a verdict.

    Attributes: ``params`` (law parameters with lower/upper and flags), ``cells`` (per-cell real
    equivalents, accuracy gains and verdicts), ``warnings``, ``excluded``, ``law`` / ``law_chosen``
    (the equivalence law asked for and the one the data chose), ``curve_law`` / ``curve_chosen``.
    Queries return an ``xarray.Dataset`` with ``estimate``, ``lower``, ``upper`` and ``extrapolated``
    (``exchange_rate`` adds ``verdict``).
    """

    def __init__(
        self,
        *,
        source,
        src,
        ref,
        opts: FitOptions,
        point: Replicates,
        boot: LazyReplicates,
        jack: Replicates,
        test_jack: Replicates | None,
        test_null: Replicates | None,
        n_seeds,
        n_test,
        dataset,
        fit_beta,
        warnings,
        excluded,
        excluded_reference,
        variance_model: VarianceModel,
        sm_fit,
    ):
        self.source, self.reference = source, opts.reference
        self.law, self.curve_law = opts.law, opts.curve_law
        self.ci, self.ci_method, self.n_boot, self.k = opts.ci, opts.ci_method, int(opts.n_boot), float(opts.k)
        self.variance = opts.variance
        self.n_seeds, self.n_test, self.dataset, self.fit_beta = n_seeds, n_test, dataset, fit_beta
        self.test_resampled = test_jack is not None
        self._src, self._ref, self._pt, self._boot, self._jack = src, ref, point, boot, jack
        self._tjack, self._tnull = test_jack, test_null
        self._gain_cache: dict[str, tuple] = {}
        self._methods_cache: dict[tuple, pd.DataFrame] = {}
        self.excluded, self.excluded_reference = excluded, excluded_reference
        self.variance_model = variance_model
        self._sm = sm_fit
        # the memorisation audit of this source's pools per base size (analysis.cube.pool_audit), set by the fit
        # when the cube carries one: the answer states it beside the rate
        self.memorisation: pd.DataFrame | None = None
        self._law_selection()
        self.warnings = list(warnings) + self._cell_warnings() + self._fit_warnings()
        # a flat or non-monotone reference, or no cell inside its range, identifies no rate at all
        self.identified = not unidentifying(self.warnings)
        # the parameter table and the per-cell table are computed on first use (statsmodels' cached_value
        # spirit): a notebook asking for one exchange rate or the answer never pays for the other

    @cached_property
    def _param_table(self) -> pd.DataFrame:
        return self._params_table()

    @cached_property
    def params(self) -> pd.Series:
        """The estimates, one fixed index per law family (:mod:`analysis.params`)."""
        return self._param_table["estimate"].astype(float).rename("estimate")

    @cached_property
    def cells(self) -> xr.Dataset:
        """Per cell: real equivalents (model-based and model-free), exchange rates, accuracy gains, verdicts."""
        return self._cells_dataset()

    @property
    def _reps(self) -> Replicates:
        """The cluster-bootstrap replicates (row 0: the point estimate), computed on first use."""
        return self._boot.get()

    # ---------------------------------------------------------------- law choice
    def _law_selection(self) -> None:
        """Which laws the data favour, as two tables (``curve_selection``, ``law_selection``; index: the law):
        ``weight`` at the point estimate, ``mean_weight`` over the leave-one-seed-out fits, ``heldout_error``
        (square root of the held-out sum of squares, in standard errors; NaN where not computed), and for the
        equivalence laws whether the Levenberg-Marquardt fit converged at the point estimate and in which share
        of the leave-one-seed-out fits."""
        reps, name = self._pt, self.source
        curve = reps.curve
        if curve.law == "auto":
            self.curve_chosen = curve.chosen
            weights = curve.point_weights()
            mean = dict(zip(curve.names, self._jack.curve.weights.mean(0)))
            held = {} if curve.scores is None else {k: float(np.sqrt(v[0])) for k, v in curve.scores.items()}
            laws = list(curve.names)
        else:
            self.curve_chosen, laws, weights, mean, held = (
                curve.law,
                [curve.law],
                {curve.law: 1.0},
                {curve.law: 1.0},
                {},
            )
        self.curve_selection = pd.DataFrame(
            {
                "weight": [float(weights.get(k, 0.0)) for k in laws],
                "mean_weight": [float(mean.get(k, 0.0)) for k in laws],
                "heldout_error": [held.get(k, np.nan) for k in laws],
            },
            index=pd.Index(laws, name="law"),
        )
        laws = list(EQUIVALENCE_LAWS)
        if self.law == "auto":
            weights = dict(zip(laws, reps.law_mix[name][0]))
            self.law_chosen = max(weights, key=weights.get)
            mean = dict(zip(laws, self._jack.law_mix[name].mean(0)))
            held = {k: float(np.sqrt(v[0])) for k, v in reps.law_scores[name].items()}
        else:
            self.law_chosen, weights, mean, held = self.law, {self.law: 1.0}, {self.law: 1.0}, {}
        self.law_selection = pd.DataFrame(
            {
                "weight": [float(weights.get(k, 0.0)) for k in laws],
                "mean_weight": [float(mean.get(k, 0.0)) for k in laws],
                "heldout_error": [held.get(k, np.nan) for k in laws],
                # the bootstrap's convergence, once computed, is in _reps
                "converged_point": [bool(reps.laws[name][k]["converged"][0]) for k in laws],
                "converged_share": [float(np.mean(self._jack.laws[name][k]["converged"])) for k in laws],
            },
            index=pd.Index(laws, name="law"),
        )

    # ---------------------------------------------------------------- intervals
    def _interval(
        self,
        boot_all: np.ndarray,
        jack_all: np.ndarray | None,
        tjack_all=None,
        *,
        method: str | None = None,
        ci: float | None = None,
        domain: tuple = _REAL,
        log: bool = True,
    ):
        """Point and interval; ``boot_all`` holds the point in row 0 (and the bootstrap replicates after it
        when ``method`` needs them); ``tjack_all`` is None or the (test-group jackknife, its shuffled null) pair;
        ``log=False`` keeps a signed quantity on its own scale."""
        method, ci = method or self.ci_method, ci or self.ci
        point, boot = boot_all[0], boot_all[1:]
        lo, hi = self._bounds(point, boot, jack_all, tjack_all, method, ci, domain, log)
        return point, lo, hi

    def _bounds(self, point, boot, jack_all, tjack_all, method: str, ci: float, domain: tuple, log: bool):
        """The interval's bounds by ``method`` from the point, the bootstrap replicates ``boot`` and the
        jackknife ones (the rule :meth:`_interval` applies, and :meth:`_mcse_of` applies to batches of ``boot``)."""
        if method == "bca" and jack_all is not None:
            lo, hi = bca_interval(point, boot, jack_all, ci)
        elif method == "jackknife" and jack_all is not None:
            extra, null = (None, None) if tjack_all is None else tjack_all
            lo, hi = jackknife_t_interval(
                point, jack_all, ci, extra=extra, extra_null=null, extra_groups=TEST_GROUPS, log=log
            )
            # where a leave-one-seed-out fit failed (a parameter ran off to infinity, a cell beyond the reference
            # asymptote) the data do not bound the quantity: the interval is its whole domain. (A bootstrap
            # fallback would make the default fit pay for 2000 refits whenever one deleted seed misbehaves.)
            failed = np.isnan(lo) | np.isnan(hi)
            lo, hi = np.where(failed, domain[0], lo), np.where(failed, domain[1], hi)
        elif method == "expanded":
            lo, hi = percentile_interval(boot, expanded_level(ci, self.n_seeds))
        else:
            lo, hi = percentile_interval(boot, ci)
        with np.errstate(invalid="ignore"):  # bounds respect the parameter's domain (E >= 0, c2 > 1, ...)
            return np.clip(lo, *domain), np.clip(hi, *domain)

    def _mcse_of(self, fn, *, method: str | None = None, ci: float | None = None, domain: tuple = _REAL):
        """Monte-Carlo standard errors of the bootstrap interval's endpoints of ``fn(replicates)`` by ``method``
        (:func:`analysis.bootstrap.endpoint_mcse`); NaN for the jackknife interval, which draws nothing."""
        method, ci = method or self.ci_method, ci or self.ci
        if method not in BOOTSTRAP_METHODS:
            nan = np.full(np.shape(np.asarray(fn(self._pt), float)[0]), np.nan)
            return nan, nan
        reps, jack = np.asarray(fn(self._reps), float), np.asarray(fn(self._jack), float)
        point = reps[0]
        return endpoint_mcse(lambda b: self._bounds(point, b, jack, None, method, ci, domain, True), reps[1:])

    def _three(self, fn, method: str | None = None):
        """``fn(replicates)`` for the point estimate (with the bootstrap replicates after it when ``method``
        needs them), the seed-jackknife replicates, and the (test-jackknife, shuffled null) pair."""
        first = self._reps if (method or self.ci_method) in BOOTSTRAP_METHODS else self._pt
        return fn(first), fn(self._jack), None if self._tjack is None else (fn(self._tjack), fn(self._tnull))

    def _interval_of(
        self, fn, *, method: str | None = None, ci: float | None = None, domain: tuple = _REAL, log: bool = True
    ):
        """Point and interval of the quantity ``fn(replicates)`` (leading axis: replicate) by ``method``."""
        first, jack, tjack = self._three(fn, method)
        as_float = lambda x: np.asarray(x, float)  # noqa: E731
        tj = None if tjack is None else (as_float(tjack[0]), as_float(tjack[1]))
        return self._interval(as_float(first), as_float(jack), tj, method=method, ci=ci, domain=domain, log=log)

    # ---------------------------------------------------------------- queries
    def fitted_errors(self, n_real, n_synth) -> tuple[np.ndarray, np.ndarray]:
        """The fit's error surfaces on the grid ``n_real`` x ``n_synth`` (the data as observed, replicate 0):
        the reference curve at ``n_real + n_synth`` real images, and the source at ``n_real + n_eq``, with
        ``n_eq`` from the chosen law. What ``scaling plan`` simulates from (a smooth truth, not cell means)."""
        r, s = np.meshgrid(np.asarray(n_real, float), np.asarray(n_synth, float), indexing="ij")
        curve = self._pt.curve
        ref = curve.predict((r + s).ravel())[0].reshape(r.shape)
        positive = s > 0
        neq = np.zeros_like(r)
        if positive.any():
            neq[positive] = self._pt.neq_law(self.source, self._check_law(None), r[positive], s[positive])[0]
        src = curve.predict((r + np.where(np.isfinite(neq), np.maximum(neq, 0), 0)).ravel())[0].reshape(r.shape)
        return ref, src

    def real_equivalent(self, n_real, n_synth, law: str | None = None, ci_method: str | None = None) -> xr.Dataset:
        """Real images that ``n_synth`` images from the source are worth at base size ``n_real``."""
        out = self._real_equivalent(n_real, n_synth, law, ci_method)
        warn_if_extrapolated(out)
        return out

    def _real_equivalent(self, n_real, n_synth, law, ci_method) -> xr.Dataset:
        law = self._check_law(law)
        return self._query(
            lambda reps, r, s: reps.neq_law(self.source, law, r, s), law, n_real, n_synth, "n_synth", ci_method
        )

    def exchange_rate(self, n_real, n_synth, law: str | None = None, ci_method: str | None = None) -> xr.Dataset:
        """Synthetic images per real image, ``rho = n_synth / n_eq``, with a ``verdict`` per query.

        At a measured base size the verdict is the gain test of that base (:meth:`gain`: every n_synth cell,
        seed-paired); elsewhere the real equivalent's interval decides. The printed interval obeys the verdict
        (:func:`analysis.verdict.rate_under_verdict`): *no measurable gain* has an upper bound of inf (the
        images may be worth nothing) and *hurts* has no rate at all (NaN), so the two can never contradict
        each other. An upper bound of inf also means the interval admits a real equivalent below
        ``NEGLIGIBLE_NEQ`` images.
        """
        out = self._exchange_rate(n_real, n_synth, law, ci_method)
        warn_if_extrapolated(out)
        return out

    def _exchange_rate(self, n_real, n_synth, law, ci_method) -> xr.Dataset:
        eq = self._real_equivalent(n_real, n_synth, law, ci_method)
        ns = eq["n_synth"]
        with np.errstate(divide="ignore", invalid="ignore"):
            est = _rate(ns, eq["estimate"])
            lower = ns / eq["upper"]
            upper = _rate(ns, eq["lower"])
        dims = eq["estimate"].dims
        est, lower, upper = (x.transpose(*dims).values for x in (est, lower, upper))
        g_lo, g_hi = self._gain_bounds(eq, ci_method)
        verdict = self._verdicts(g_lo, g_hi, lower, upper)
        est, lower, upper = rate_under_verdict(verdict, est, lower, upper)
        data = {
            "estimate": (dims, est),
            "lower": (dims, lower),
            "upper": (dims, upper),
            "extrapolated": eq["extrapolated"],
            "verdict": (dims, verdict),
        }
        if "lower_mcse" in eq:
            # rho's bounds are n_synth over n_eq's: an endpoint's relative Monte-Carlo error carries over
            with np.errstate(divide="ignore", invalid="ignore"):
                rel_up = (eq["upper_mcse"] / np.abs(eq["upper"])).transpose(*dims).values
                rel_lo = (eq["lower_mcse"] / np.abs(eq["lower"])).transpose(*dims).values
            data["lower_mcse"] = (dims, np.where(np.isfinite(lower), lower * rel_up, np.nan))
            data["upper_mcse"] = (dims, np.where(np.isfinite(upper), upper * rel_lo, np.nan))
        out = xr.Dataset(data, coords=eq.coords)
        out.attrs = {**eq.attrs, "quantity": "exchange rate (synthetic images per real image)"}
        return out

    def synthetic_needed(
        self, n_real, n_real_added, law: str | None = None, ci_method: str | None = None
    ) -> xr.Dataset:
        """Synthetic images needed at base ``n_real`` to match adding ``n_real_added`` real images."""
        law = self._check_law(law)
        out = self._query(
            lambda reps, r, a: reps.synth_needed_law(self.source, law, r, a),
            law,
            n_real,
            n_real_added,
            "n_real_added",
            ci_method,
        )
        warn_if_extrapolated(out)
        return out

    @quiet
    def rate_ratio(
        self,
        other: "EquivalenceResult",
        n_real: float,
        n_synth: float,
        *,
        law: str | None = None,
        ci_method: str | None = None,
    ) -> tuple[float, float, float]:
        """``rho_self / rho_other`` at one (n_real, n_synth), from the paired replicates of a joint fit.

        Equal n_synth makes the ratio ``n_eq_other / n_eq_self``; its interval is built on the log scale
        (a ratio is positive) by the same method as every other interval. NaN when either real equivalent
        is not positive in some replicate (a rate that is not identified has no ratio).
        """

        def log_ratio(a, b):
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where((a > 0) & (b > 0), np.log(b) - np.log(a), np.nan)

        est, lo, hi = self._paired(other, n_real, n_synth, log_ratio, law, ci_method)
        return tuple(float(np.exp(v)) for v in (est, lo, hi))

    def neq_difference(
        self,
        other: "EquivalenceResult",
        n_real: float,
        n_synth: float,
        *,
        law: str | None = None,
        ci_method: str | None = None,
    ) -> tuple[float, float, float]:
        """``n_eq_self - n_eq_other``: how many more real images ``n_synth`` images of this source are worth than as
        many of ``other``'s, at base ``n_real``, from the paired replicates of a joint fit (the seed resamples both
        sources share). Defined where a ratio of rates is not — a source worth nothing has a real equivalent of 0
        — so methods can be ranked whatever their verdicts."""
        return self._paired(other, n_real, n_synth, lambda a, b: a - b, law, ci_method, domain=_REAL, log=False)

    def _paired(self, other, n_real, n_synth, combine, law, ci_method, **interval) -> tuple[float, float, float]:
        """Point and interval of ``combine(n_eq_self, n_eq_other)`` at one (n_real, n_synth) over the replicates
        both sources share (one joint fit); NaN when it is not finite on the data themselves."""
        if other._pt is not self._pt:
            raise ValueError(
                "other: compare sources fitted together (one fit_equivalence call), whose replicates are paired"
            )
        law_a, law_b = self._check_law(law), other._check_law(law)
        r, s = np.array([float(n_real)]), np.array([float(n_synth)])

        def quantity(reps):
            return combine(reps.neq_law(self.source, law_a, r, s), reps.neq_law(other.source, law_b, r, s))

        if not np.isfinite(quantity(self._pt)[0]).all():
            return float("nan"), float("nan"), float("nan")
        est, lo, hi = self._interval_of(quantity, method=ci_method, **interval)
        return tuple(float(np.ravel(v)[0]) for v in (est, lo, hi))

    def _check_law(self, law: str | None) -> str:
        law = law or self.law
        if law not in EQUIVALENCE_LAWS + ("auto",):
            raise ValueError(f"law: choose one of {EQUIVALENCE_LAWS + ('auto',)}, got {law!r}")
        if law == "auto" and self.source not in self._pt.law_mix:
            raise ValueError("law: 'auto' needs a fit made with law='auto' (the choice is made inside every replicate)")
        return law

    def _verdicts(self, gain_lo, gain_hi, rate_lo, rate_hi) -> np.ndarray:
        return self._downgraded(verdicts(gain_lo, gain_hi, rate_lo, rate_hi))

    def _downgraded(self, v: np.ndarray) -> np.ndarray:
        """A fit that cannot identify a rate states none: *estimated* reads *not identified*."""
        if not getattr(self, "identified", True):
            v = np.where(v == "estimated", "not identified", v)
        return v

    def _gain_bounds(self, eq: xr.Dataset, ci_method: str | None = None):
        """The gain test's interval where the query's n_real is a measured base size (:meth:`gain`), else the
        real equivalent's (a negligible one counts as no gain)."""
        rr, _ = xr.broadcast(eq["n_real"], eq["n_synth"])
        lo, hi = eq["lower"].values.astype(float).copy(), eq["upper"].values.astype(float).copy()
        lo = np.where(lo < NEGLIGIBLE_NEQ, -np.inf, lo)
        g = self.gain(ci_method)
        for idx in np.ndindex(lo.shape):
            r = float(np.asarray(rr.values)[idx])
            if r in g.index and np.isfinite(g.loc[r, "lower"]):
                lo[idx], hi[idx] = g.loc[r, "lower"], g.loc[r, "upper"]
        return lo, hi

    # ---------------------------------------------------------------- the gain test
    def _base_gain(self, reps: Replicates) -> np.ndarray:
        """Per replicate and base size, the weighted mean accuracy gain over that base's n_synth cells: (R, B)."""
        g = reps.gain[self.source]
        bases = np.unique(self._src.n_real)
        # cells weighted by log(1 + n_synth / n_real): the effect of added images, helpful or harmful, grows
        # with how many are added relative to the base, while each cell's noise does not
        w = np.log1p(self._src.n_synth / self._src.n_real)
        out = []
        for b in bases:
            sel = self._src.n_real == b
            wb = np.where(np.isfinite(g[:, sel]), w[sel], 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append(np.nansum(wb * np.nan_to_num(g[:, sel]), axis=1) / wb.sum(1))
        return np.stack(out, axis=1)

    def gain(self, ci_method: str | None = None) -> pd.DataFrame:
        """Does the source help at each base size? The gain test behind every verdict.

        The statistic is the accuracy gain of a base's n_synth cells over their base, averaged with weights
        ``log(1 + n_synth / n_real)`` (the effect of added images grows with how many are added relative to the
        base; each cell's noise does not). The base is a share (:data:`analysis.equivalence.BASE_CELL_SHARE`,
        0.35) of the same seed's base (n_synth = 0) classifier — seed-paired — and the rest the fitted reference
        curve at the base size: the one place an accuracy law enters the test, at a
        measured size, where it interpolates (at the smallest base size the base is its cell alone). Its default
        interval is the leave-one-seed-out jackknife t interval of that base's statistic — the paired t test of
        the base's own seeds, S - 1 degrees of freedom — plus the test-image part, like every other default
        interval. The variances of the base sizes are not pooled: pooling them through the variance model's shape
        across base sizes, a shape estimated from the same few seeds, made claims of help or harm at the smallest
        and second base size about 1.5 times the stated level. The bootstrap methods use their replicates per
        base. Weighting, the blended base and the single-cell alternative were chosen by
        measured size and power (bench/verdicts.py). Columns: ``estimate``, ``lower``, ``upper``, ``cells`` (n_synth cells used); index
        ``n_real``.
        """
        key = ci_method or self.ci_method
        check_ci_method(key)
        if key not in self._gain_cache:
            est, lo, hi = self._interval_of(self._base_gain, method=key, log=False)
            bases = np.unique(self._src.n_real)
            ok = np.isfinite(self._pt.gain[self.source][0])
            cells = [int(ok[self._src.n_real == b].sum()) for b in bases]
            self._gain_cache[key] = pd.DataFrame(
                {"estimate": np.ravel(est), "lower": np.ravel(lo), "upper": np.ravel(hi), "cells": cells},
                index=pd.Index(bases, name="n_real"),
            )
        return self._gain_cache[key].copy()

    @quiet
    def _query(self, fn, law, n_real, second, second_name, ci_method=None) -> xr.Dataset:
        r_in, s_in = np.asarray(n_real, float), np.asarray(second, float)
        if not (np.isfinite(r_in).all() and np.isfinite(s_in).all()) or (r_in <= 0).any() or (s_in <= 0).any():
            raise ValueError(f"n_real/{second_name}: queries must be finite and positive, got {n_real!r}, {second!r}")
        if ci_method is not None:
            check_ci_method(ci_method)
        r, s = np.atleast_1d(r_in), np.atleast_1d(s_in)
        rr, ss = np.meshgrid(r, s, indexing="ij")
        grid = lambda reps: fn(reps, rr.ravel(), ss.ravel()).reshape(-1, len(r), len(s))  # noqa: E731
        est, lo, hi = self._interval_of(grid, method=ci_method)
        if second_name == "n_synth":
            srange = (self._src.n_synth.min(), self._src.n_synth.max())
        else:
            neq = self.cells["n_eq"].values
            neq = neq[np.isfinite(neq) & (neq > 0)]
            srange = (neq.min(), neq.max()) if neq.size else (np.inf, -np.inf)
        rrange = (self._src.n_real.min(), self._src.n_real.max())
        extrap = (rr < rrange[0]) | (rr > rrange[1]) | (ss < srange[0] * (1 - 1e-9)) | (ss > srange[1] * (1 + 1e-9))
        dims = ("n_real", second_name)
        coords = {"n_real": int_if_whole(r), second_name: int_if_whole(s)}
        data = {"estimate": (dims, est), "lower": (dims, lo), "upper": (dims, hi), "extrapolated": (dims, extrap)}
        if (ci_method or self.ci_method) in BOOTSTRAP_METHODS:
            lo_se, hi_se = self._mcse_of(grid, method=ci_method)
            data.update(lower_mcse=(dims, lo_se), upper_mcse=(dims, hi_se))
        ds = xr.Dataset(data, coords=coords)
        sel = {d: 0 for d, v in ((dims[0], r_in), (dims[1], s_in)) if np.ndim(v) == 0}
        ds = ds.isel(sel) if sel else ds
        ds.attrs = {
            "source": self.source,
            "law": law
            if law != "auto"
            else "auto ("
            + ", ".join(f"{k} {v:.2f}" for k, v in shown(self.law_selection, "weight", "auto").items())
            + ")",
            "ci": self.ci,
            "ci_method": ci_method or self.ci_method,
        }
        return ds

    def answer(self, n_synth: float | None = None) -> pd.DataFrame:
        """The answer per base size at ``n_synth`` (default: the largest measured), one row per (source,
        n_real): rate ``rho`` with its interval, verdict, the gain test (weighted mean accuracy gain and its
        interval over the base's cells), seeds needed where not identified, and what the verdict asks of the
        reader."""
        return answer_frame(self.answer_rows(n_synth))

    def answer_rows(self, n_synth: float | None = None) -> list[dict]:
        """The rows of :meth:`answer` as dicts (``estimate``, ``lower``, ``upper``, ``verdict``, ``gain`` as
        (estimate, lower, upper), ``note``, ...), as the report and the command line print them."""
        ns = float(self._src.n_synth.max()) if n_synth is None else float(n_synth)
        q = self._exchange_rate(np.unique(self._src.n_real), ns, None, None)
        g = self.gain()
        rows = []
        for i, r in enumerate(q["n_real"].values):
            est, lo, hi = (float(q[v].values[i]) for v in ("estimate", "lower", "upper"))
            v = str(q["verdict"].values[i])
            seeds = seeds_needed(hi / lo, self.n_seeds, self.ci) if v == "not identified" and lo > 0 else None
            gain = (
                tuple(float(x) for x in g.loc[float(r), ["estimate", "lower", "upper"]])
                if float(r) in g.index
                else None
            )
            note = describe(v, seeds=seeds)
            if v == "not identified" and not self.identified:
                why = unidentifying(self.warnings)[0]
                note, seeds = f"this cube cannot identify a rate: {why}", None
            rows.append(
                {
                    "source": self.source,
                    "n_real": int(r),
                    "n_synth": int(ns),
                    "estimate": est,
                    "lower": lo,
                    "upper": hi,
                    "verdict": v,
                    "seeds_needed": seeds,
                    "note": note,
                    "extrapolated": bool(q["extrapolated"].values[i]),
                    "gain": gain,
                    "gain_cells": int(g.loc[float(r), "cells"]) if gain else 0,
                    **self._memorisation_of(int(r)),
                    **(
                        {
                            "lower_mcse": float(q["lower_mcse"].values[i]),
                            "upper_mcse": float(q["upper_mcse"].values[i]),
                            "n_boot": self.n_boot,
                        }
                        if "lower_mcse" in q
                        else {}
                    ),
                }
            )
        return rows

    def interval_methods(self, n_real, n_synth) -> pd.DataFrame:
        """The exchange rate's interval and verdict under every ``ci_method``, to show how much the method
        matters (the bootstrap methods compute the cluster-bootstrap replicates on first use). Kept per query:
        the report asks for it twice per row (the answer's agreement line and the methods table)."""
        key = (float(n_real), float(n_synth))
        if key not in self._methods_cache:
            self._methods_cache[key] = self._interval_methods(n_real, n_synth)
        return self._methods_cache[key].copy()

    def _interval_methods(self, n_real, n_synth) -> pd.DataFrame:
        rows = []
        for method in CI_METHODS:
            q = self._exchange_rate(n_real, n_synth, None, method)
            rows.append(
                {
                    "ci_method": method,
                    "estimate": float(q["estimate"]),
                    "lower": float(q["lower"]),
                    "upper": float(q["upper"]),
                    "verdict": str(q["verdict"].values),
                    "lower_mcse": float(q["lower_mcse"]) if "lower_mcse" in q else np.nan,
                    "upper_mcse": float(q["upper_mcse"]) if "upper_mcse" in q else np.nan,
                }
            )
        return pd.DataFrame(rows).set_index("ci_method")

    def method_agreement(self, n_real, n_synth) -> dict:
        """Do the interval methods agree at one query? ``factor``: the largest ratio between two methods'
        lower bounds or two methods' upper bounds (inf when one is bounded and another is not);
        ``reliable``: factor <= :data:`~analysis.verdict.METHODS_DISAGREE_FACTOR`; ``survives``: the strongest
        verdict every method supports (:func:`~analysis.verdict.surviving_verdict`); ``table``: the methods."""
        t = self.interval_methods(n_real, n_synth)
        factor = bound_disagreement(t["lower"].values, t["upper"].values)
        return {
            "factor": factor,
            "reliable": bool(factor <= METHODS_DISAGREE_FACTOR),
            "survives": surviving_verdict(t["verdict"].values),
            "table": t,
        }

    def param_table(self, ci: float | None = None, ci_method: str | None = None) -> pd.DataFrame:
        """Every parameter: estimate, interval (level ``ci`` by ``ci_method``, each by default the fit's), the
        statsmodels WLS standard error where one exists, flag and note. The index is fixed per law family
        (:mod:`analysis.params`)."""
        if ci is None and ci_method is None:
            return self._param_table.copy()
        return self.conf_int(ci, ci_method).join(self._param_table[["estimate", "se_wls", "flag", "note"]])[
            list(PARAM_COLUMNS)
        ]

    @property
    def bse(self) -> pd.Series:
        """Standard errors of the statsmodels WLS fit of the effective law (NaN where a parameter has none: the
        intervals come from the resampling, :meth:`conf_int`)."""
        return self._param_table["se_wls"].rename("bse")

    @property
    def flags(self) -> pd.Series:
        """Per parameter: on bound / not identified / degenerate / fixed, or empty."""
        return self._param_table["flag"].rename("flag")

    def conf_int(self, ci: float | None = None, ci_method: str | None = None) -> pd.DataFrame:
        """Parameter intervals at level ``ci`` by ``ci_method`` (each by default the fit's: the same names and
        defaults as :func:`scaling.fit_equivalence`), recomputed from the stored replicates."""
        ci = self.ci if ci is None else ci
        if not 0 < ci < 1:
            raise ValueError(f"ci: must lie strictly between 0 and 1 (e.g. 0.95), got {ci!r}")
        if ci_method is not None:
            check_ci_method(ci_method, "ci_method")
        return self._params_table(method=ci_method, ci=ci)[["lower", "upper"]]

    # ---------------------------------------------------------------- tables
    def _curve_values(self, reps: Replicates | None, law: str, name: str):
        """One reference law's parameter over replicates; None when that law was not fitted."""
        if reps is None:
            return None
        curve = reps.curve
        if curve.law == "auto":
            return curve.fits[law].params[name] if law in curve.fits else None
        return curve.params[name] if curve.law == law else None

    @quiet
    def _params_table(self, method: str | None = None, ci: float | None = None) -> pd.DataFrame:
        rows = []
        for law, domains in CURVE_PARAM_DOMAINS.items():  # every law's rows: the index never depends on the fit
            for name, domain in domains.items():
                label = f"reference.{law}.{name}"
                if self._curve_values(self._pt, law, name) is None:
                    rows.append((label, np.nan, np.nan, np.nan, np.nan, "", f"not fitted (curve_law={self.curve_law})"))
                    continue
                note = f"{law} law of '{self.reference}'" + (" (chosen)" if law == self.curve_chosen else "")
                rows.append(
                    self._param_row(
                        label,
                        lambda reps, law=law, name=name: self._curve_values(reps, law, name),
                        domain,
                        np.nan,
                        note,
                        method,
                        ci,
                    )
                )
        sm_fit = self._sm or {"params": {}, "bse": {}}
        for law in EQUIVALENCE_LAWS:
            for name, (values, domain, note) in _law_public(law, self._pt.laws[self.source][law], self.k).items():
                se = np.nan
                if law == "effective":
                    key = "log_k" if name == "k" else name
                    se = sm_fit["bse"].get(key, np.nan) * (values[0] if name == "k" else 1.0)
                    if name == "beta" and not self.fit_beta:
                        note = "fixed at 0 (one n_real)"
                fn = lambda reps, law=law, name=name: _law_public(law, reps.laws[self.source][law], self.k)[name][0]  # noqa: E731
                rows.append(self._param_row(f"{law}.{name}", fn, domain, se, note, method, ci))
        rows.append(("wang.k", self.k, self.k, self.k, np.nan, "fixed", "fixed scale: only ln(c1)/k is identifiable"))
        df = pd.DataFrame(rows, columns=["param", "estimate", "lower", "upper", "se_wls", "flag", "note"])
        df = df.set_index("param")
        for col in ("estimate", "lower", "upper", "se_wls"):
            df[col] = df[col].astype(float)
        return df

    def _param_row(self, name, fn, domain, se, note, method, ci):
        est, lo, hi = (float(x) for x in self._interval_of(fn, method=method, ci=ci, domain=domain))
        spread = np.asarray(fn(self._jack), float)  # the leave-one-seed-out values: does the parameter move at all?
        return (name, est, lo, hi, float(se), _param_flag(est, lo, hi, domain, spread), note)

    def _cells_dataset(self) -> xr.Dataset:
        src, reps = self._src, self._pt
        idx = pd.MultiIndex.from_arrays([src.n_real.astype(int), src.n_synth.astype(int)], names=["n_real", "n_synth"])
        data = {}
        for key, attr in (("n_eq", "n_eq"), ("n_eq_model_free", "n_eq_mf")):
            est, lo, hi = self._interval_of(lambda r, attr=attr: getattr(r, attr)[src.name])
            data[key], data[key + "_lower"], data[key + "_upper"] = est, lo, hi
        ns = src.n_synth
        with np.errstate(divide="ignore", invalid="ignore"):
            # the rate's lower bound is n_synth over the real equivalent's upper bound whenever that is positive,
            # however small (a cell worth at most 0.001 real images has a rate of at least 1000 n_synth, not inf:
            # an interval printed as [inf, inf] would claim a precision no cell has)
            upper = data["n_eq_upper"]
            lower_rate = np.where(np.isnan(upper), np.nan, np.where(upper > 0, ns / upper, np.inf))
            rate = _rate(ns, data["n_eq"]), lower_rate, _rate(ns, data["n_eq_lower"])
        data["accuracy"] = 1 - reps.cell_err[src.name][0]
        data["n_seeds"] = reps.n_seeds_cell[src.name][0]
        # each cell's own gain over its base (BASE_CELL_SHARE the seed-paired base cell, the rest the reference
        # curve), on the same replicates as its real equivalent
        data["gain"], data["gain_lower"], data["gain_upper"] = self._interval_of(lambda r: r.gain[src.name], log=False)
        # no paired gain (no n_synth = 0 base, or one seed): judge the gain by the real equivalent instead
        neq_lo = np.where(data["n_eq_lower"] < NEGLIGIBLE_NEQ, -np.inf, data["n_eq_lower"])
        known = np.isfinite(data["gain_lower"])
        verdict = self._downgraded(
            cell_verdicts(
                np.where(known, data["gain_lower"], neq_lo),
                np.where(known, data["gain_upper"], data["n_eq_upper"]),
                data["n_eq_upper"],
                rate[1],
                rate[2],
            )
        )
        data["exchange_rate"], data["exchange_rate_lower"], data["exchange_rate_upper"] = rate_under_verdict(
            verdict, *rate
        )
        data["verdict"] = verdict
        n_total = data["n_eq"] + src.n_real
        ref_total = self._ref.n_real + self._ref.n_synth
        data["unreachable"] = ~np.isfinite(data["n_eq"]) & np.isfinite(data["accuracy"])
        data["extrapolated"] = np.isfinite(n_total) & ((n_total > ref_total.max()) | (n_total < ref_total.min()))
        data["hurts"] = verdict == "hurts"
        # share of the leave-one-seed-out fits in which the cell lies beyond the reference asymptote
        data["unreachable_fraction"] = np.mean(~np.isfinite(self._jack.n_eq[src.name]), axis=0)
        for law in EQUIVALENCE_LAWS:
            data[f"n_eq_{law}_law"] = reps.neq_law(src.name, law, src.n_real, src.n_synth)[0]
        ds = xr.Dataset(
            {k: ("cell", np.asarray(v)) for k, v in data.items()},
            coords=xr.Coordinates.from_pandas_multiindex(idx, "cell"),
        ).unstack("cell")
        for key in ("unreachable", "extrapolated", "hurts"):
            ds[key] = ds[key].fillna(False).astype(bool)
        # unstacking through pandas gives a pandas string dtype that NetCDF writers reject: plain numpy str
        verdict = np.asarray(ds["verdict"].values, dtype=object)
        ds["verdict"] = (ds["verdict"].dims, np.where(pd.isna(verdict), "", verdict).astype(str))
        return ds

    def _cell_warnings(self) -> list[FitWarning]:
        out = []
        reps, src = self._pt, self._src
        neq = reps.n_eq[src.name][0]
        acc_ok = np.isfinite(reps.cell_err[src.name][0])
        unreachable = (~np.isfinite(neq)) & acc_ok
        if acc_ok.any() and unreachable.all():
            out.append(
                FitWarning(
                    "the synthetic curve never reaches the reference range: every cell is beyond the reference "
                    "curve's asymptote, so no real equivalent is identifiable",
                    "beyond_asymptote",
                    unidentifies=True,
                )
            )
        elif unreachable.any():
            out.append(
                FitWarning(
                    f"{int(unreachable.sum())} cell(s) beyond the reference asymptote (n_eq = inf)", "cells_unreachable"
                )
            )
        n_law_cells = int((reps.law_weights[src.name][0] > 0).sum())  # cells with data, on the accuracy scale
        if len(np.unique(src.n_synth)) < 2 or n_law_cells < 3:
            out.append(
                FitWarning(
                    f"equivalence laws rest on {n_law_cells} usable cell(s) and "
                    f"{len(np.unique(src.n_synth))} n_synth value(s): their parameters are not identifiable",
                    "too_few_cells",
                    unidentifies=True,
                )
            )
        return out

    def _fit_warnings(self) -> list[FitWarning]:
        """Convergence and lack of fit of the equivalence law in use."""
        out = []
        law = self.law_chosen  # the law with the largest weight
        if not self.law_selection.loc[law, "converged_point"]:
            out.append(
                FitWarning(
                    f"the {law} law's accuracy-scale fit did not converge at the point estimate", "not_converged"
                )
            )
        bad = 1 - self.law_selection.loc[law, "converged_share"]
        if bad > 0.05:
            out.append(
                FitWarning(
                    f"the {law} law's fit did not converge in {bad:.0%} of the leave-one-seed-out fits",
                    "jackknife_not_converged",
                )
            )
        reps, src = self._pt, self._src
        w, e = reps.law_weights[src.name][0], reps.cell_err[src.name][0]
        neq = reps.neq_law(src.name, self.law, src.n_real, src.n_synth)[:1]
        with np.errstate(invalid="ignore", over="ignore"):
            pred = reps.curve.take(0).predict(np.maximum(src.n_real[None, :] + neq, 1e-9))[0]
        ok = (w > 0) & np.isfinite(e) & np.isfinite(pred)
        df = int(ok.sum()) - (3 if law == "effective" and self.fit_beta else 2)
        if df >= 2:
            chi2 = float(np.sum(w[ok] * (e[ok] - pred[ok]) ** 2))
            p = float(stats.chi2.sf(chi2, df))
            self.lack_of_fit = {"law": self.law if self.law != "auto" else "weighted", "chi2": chi2, "df": df, "p": p}
            if p < LACK_OF_FIT_P:
                out.append(
                    FitWarning(
                        f"the {self.law if self.law != 'auto' else 'weighted'} law misfits this source's cells "
                        f"(chi2 = {chi2:.0f} on {df} df, p = {p:.1g}): law-based exchange rates may be biased and "
                        "their intervals may undercover; compare the per-cell estimates",
                        "law_lack_of_fit",
                    )
                )
        else:
            self.lack_of_fit = None
        return out

    # ---------------------------------------------------------------- presentation (analysis.presentation)
    def _memorisation_of(self, n_real: int) -> dict:
        """The audit fields of one base size for an answer row (empty without an audit)."""
        m = self.memorisation
        if m is None or n_real not in m.index or not np.isfinite(m.loc[n_real, "copy_share"]):
            return {}
        row = m.loc[n_real]
        return {
            "copy_share": float(row["copy_share"]),
            "copy_low": float(row["copy_low"]),
            "copy_high": float(row["copy_high"]),
            "nn_distance_ratio": float(row["nn_distance_ratio"]),
            "memorisation_reference": str(row["reference"]),
        }

    def summary(self) -> Summary:
        """The answer, cells, laws, parameters and warnings as text; ``.as_markdown()``, ``.as_latex()``,
        ``.as_html()``."""
        return summary_of(self)

    def _repr_html_(self) -> str:
        return self.summary().as_html()

    def to_dataset(self) -> xr.Dataset:
        ds = self.cells.copy()
        p = self._param_table
        ds = ds.assign_coords(param=p.index.values)
        for col in ("estimate", "lower", "upper", "se_wls"):
            ds[f"param_{col}"] = ("param", p[col].values.astype(float))
        ds["param_flag"] = ("param", np.asarray(p["flag"].values, dtype=object).astype(str))
        ds.attrs = {
            "source": self.source,
            "reference": self.reference,
            "law": self.law,
            "law_chosen": self.law_chosen,
            "curve_law": self.curve_law,
            "curve_chosen": self.curve_chosen,
            "ci": self.ci,
            "ci_method": self.ci_method,
            "n_boot": self.n_boot,
            "n_seeds": self.n_seeds,
            "k": self.k,
            "test_resampled": int(self.test_resampled),
            "warnings": json.dumps(self.warnings),
            "excluded": json.dumps(self.excluded),
        }
        return ds

    def plot(self, ax=None):
        """Real equivalent vs n_synth per n_real, with intervals and the fitted law; returns the Axes."""
        return plot_result(self, ax)

    def __repr__(self) -> str:
        return (
            f"<EquivalenceResult source={self.source!r} law={self.law!r}->{self.law_chosen!r} seeds={self.n_seeds} "
            f"n_boot={self.n_boot}>"
        )


def _param_flag(est, lo, hi, domain, boot) -> str:
    """Name what makes a parameter unusable: a bound of its domain, an exploding interval, no variation."""
    if not np.isfinite(est):
        return "not identified"
    if est <= domain[0] + 1e-12 * max(1.0, abs(domain[0])) or est >= domain[1] - 1e-12 * max(1.0, abs(domain[1])):
        return "on bound"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "not identified"
    positive = domain[0] >= 0
    if positive and (lo <= 0 or hi / lo > 1e3):
        return "not identified"
    if not positive and hi - lo > 10:
        return "not identified"
    spread = np.nanstd(np.where(np.isfinite(boot), boot, np.nan)) if boot.size else 0.0
    if hi == lo and not spread > 0:
        return "degenerate"
    return ""
