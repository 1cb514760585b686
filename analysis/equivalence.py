"""Equivalence estimators: how many real images is a cell of synthetic images worth?

For a synthetic cell (n_real, n_synth) with mean error e, the *real equivalent* n_eq solves
``e_ref(n_real + n_eq) = e`` on the reference (real) curve:
- model-based: invert the fitted accuracy law (power or M4);
- model-free: invert a monotone (isotonic) interpolation of the measured reference means.
The exchange rate is ``rho = n_synth / n_eq`` synthetic images per real image.

Two equivalence laws summarise all cells of a source:
- ``effective``: ``n_eq = k * n_synth**alpha * n_real**beta`` (Hernandez et al. 2021), WLS in logs;
- ``wang``: Wang et al. (2025), ``n_synth/n_base = c1**(n_base/k) * (c2**(n_eq/n_base) - 1)``. Only
  ``ln(c1)/k`` is identified, so ``k`` is a fixed scale and ``c1`` is reported for that ``k``.

Everything is computed for all bootstrap replicates at once; row 0 is the point estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.bootstrap import cell_moments
from analysis.laws import CurveFit, fit_curve, heldout_extrapolation_error, scan_refine, solve_batched

EQUIVALENCE_LAWS = ("effective", "wang")


# --------------------------------------------------------------------------------------------------
# the two equivalence laws: n_eq(n_real, n_synth) and its inverse n_synth(n_real, n_eq)


def law_neq(law: str, p: dict, n_real: np.ndarray, n_synth: np.ndarray) -> np.ndarray:
    """Real equivalent per replicate: p[...] are (R,), n_real/n_synth (Q,) -> (R, Q)."""
    n_real, n_synth = np.asarray(n_real, float)[None, :], np.asarray(n_synth, float)[None, :]
    if law == "effective":
        return np.exp(p["log_k"][:, None] + p["alpha"][:, None] * np.log(n_synth) + p["beta"][:, None] * np.log(n_real))
    if law == "wang":
        a, g = p["a"][:, None], p["g"][:, None]
        with np.errstate(divide="ignore"):
            return g * n_real * _softplus(np.log(n_synth / n_real) - a * n_real)
    raise ValueError(f"law: unknown equivalence law {law!r}; choose from {EQUIVALENCE_LAWS}")


def law_synth_needed(law: str, p: dict, n_real: np.ndarray, n_eq: np.ndarray) -> np.ndarray:
    """Synthetic images needed to match ``n_eq`` added real images: (R, Q)."""
    n_real, n_eq = np.asarray(n_real, float)[None, :], np.asarray(n_eq, float)[None, :]
    if law == "effective":
        return np.exp((np.log(n_eq) - p["log_k"][:, None] - p["beta"][:, None] * np.log(n_real)) / p["alpha"][:, None])
    if law == "wang":
        a, g = p["a"][:, None], p["g"][:, None]
        with np.errstate(over="ignore"):
            return n_real * np.exp(a * n_real) * np.expm1(n_eq / (g * n_real))
    raise ValueError(f"law: unknown equivalence law {law!r}; choose from {EQUIVALENCE_LAWS}")


def _softplus(t: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, t)


def _log_softplus(t: np.ndarray) -> np.ndarray:
    # log(log(1 + e^t)) without underflow for very negative t (where it tends to t)
    with np.errstate(divide="ignore"):
        return np.where(t < -30, t, np.log(_softplus(np.maximum(t, -30))))


def fit_effective_logspace(n_real, n_synth, y, w, *, fit_beta: bool = True) -> dict:
    """Batched WLS of ``log n_eq`` on [1, log n_synth, log n_real]; y, w are (R, C).

    Only a starting point for :func:`fit_law`: log n_eq of a noisy cell is biased and cells with
    n_eq <= 0 cannot enter, so the final fit is made on the accuracy scale.
    """
    cols = [np.ones_like(n_real, dtype=float), np.log(n_synth)]
    if fit_beta:
        cols.append(np.log(n_real))
    X = np.stack(cols, axis=1)  # (C, K)
    XtWX = np.einsum("rc,ci,cj->rij", w, X, X)
    XtWy = np.einsum("rc,ci->ri", w * y, X)
    ridge = 1e-13 * (np.trace(XtWX, axis1=1, axis2=2)[:, None, None] + 1e-12) * np.eye(X.shape[1])
    coef = solve_batched(XtWX + ridge, XtWy)
    bad = ~np.isfinite(coef).all(1) | ((w > 0).sum(1) < X.shape[1])
    coef[bad] = [0.0, 1.0, 0.0][: X.shape[1]]  # n_eq = n_synth: one real image per synthetic one
    beta = coef[:, 2] if fit_beta else np.zeros(len(w))
    return {"log_k": coef[:, 0], "alpha": coef[:, 1], "beta": beta}


def fit_wang_logspace(n_real, n_synth, y, w) -> dict:
    """Scan a = ln(c1)/k, solve log g (g = 1/ln c2) in closed form: a 1-D variable projection in logs.

    Like :func:`fit_effective_logspace`, a starting point for the accuracy-scale fit.
    """
    scale = float(np.median(n_real))
    logx = np.log(n_synth / n_real)
    logn = np.log(n_real)
    Sw = np.maximum(w.sum(1, keepdims=True), 1e-300)

    def profile(u):  # u = a * scale; (G,) or (R, G)
        a = u / scale
        f = logn + _log_softplus(logx - a[..., None] * n_real)  # (G, C) or (R, G, C)
        r = y[:, None, :] - (f if f.ndim == 3 else f[None])
        logg = np.einsum("rc,rgc->rg", w, r) / Sw
        sse = np.einsum("rc,rgc->rg", w, (r - logg[..., None]) ** 2)
        return sse, (logg,)

    u, _, (logg,) = scan_refine(profile, -4.0, 12.0, coarse=49, fine=11, levels=2)  # a start, not the answer
    return {"a": u / scale, "g": np.exp(logg)}


def _pack(law: str, p: dict, fit_beta: bool, scale: float) -> np.ndarray:
    if law == "effective":
        return np.stack([p["log_k"], p["alpha"]] + ([p["beta"]] if fit_beta else []), axis=1)
    return np.stack([p["a"] * scale, np.log(p["g"])], axis=1)


def _unpack(law: str, theta: np.ndarray, fit_beta: bool, scale: float) -> dict:
    if law == "effective":
        beta = theta[:, 2] if fit_beta else np.zeros(len(theta))
        return {"log_k": theta[:, 0], "alpha": theta[:, 1], "beta": beta}
    return {"a": theta[:, 0] / scale, "g": np.exp(theta[:, 1])}


def _neq_and_grad(law, theta, n_real, n_synth, fit_beta, scale):
    """n_eq (R, C) and d n_eq / d theta (R, C, K)."""
    if law == "effective":
        feats = [np.ones_like(n_synth), np.log(n_synth)] + ([np.log(n_real)] if fit_beta else [])
        X = np.stack(feats, axis=1)  # (C, K)
        with np.errstate(over="ignore"):
            neq = np.exp(np.clip(theta @ X.T, -700, 700))
        return neq, neq[..., None] * X[None]
    a, g = theta[:, :1] / scale, np.exp(np.clip(theta[:, 1:2], -700, 700))
    t = np.log(n_synth / n_real)[None, :] - a * n_real[None, :]
    neq = g * n_real * _softplus(t)
    sig = 0.5 * (1 + np.tanh(t / 2))  # d softplus / dt, overflow-free
    d_u = g * n_real * sig * (-n_real) / scale
    return neq, np.stack([d_u, neq], axis=-1)


def fit_law(law: str, curve: CurveFit, n_real, n_synth, err, w, init: dict, *, fit_beta: bool,
            iters: int = 40) -> dict:
    """Weighted least squares on the accuracy scale, batched Levenberg-Marquardt.

    The model for a cell's mean error is ``e_ref(n_real + n_eq_law(n_real, n_synth))`` with the
    replicate's own reference curve. Working where the noise lives keeps cells whose n_eq is
    infinite or negative (they carry information too) and avoids the bias of weighting log n_eq by
    its own noisy value.
    """
    scale = float(np.median(n_real))
    sw = np.sqrt(np.where(np.isfinite(err), w, 0.0))
    e = np.where(sw > 0, err, 0.0)

    def resid(theta):
        neq, grad = _neq_and_grad(law, theta, n_real, n_synth, fit_beta, scale)
        ntot = np.maximum(n_real[None, :] + neq, 1e-9)
        r = sw * (e - curve.predict(ntot))
        J = -(sw * curve.slope(ntot))[..., None] * grad
        bad = ~np.isfinite(r)
        return np.where(bad, 0.0, r), np.where(bad[..., None] | ~np.isfinite(J), 0.0, J), bad.any(1)

    theta = _pack(law, init, fit_beta, scale)
    theta = np.where(np.isfinite(theta), theta, 0.0)
    r, J, bad = resid(theta)
    sse = np.where(bad, np.inf, (r * r).sum(1))
    lam = np.full(len(theta), 1e-2)
    sse_prev = sse.copy()
    K = theta.shape[1]
    for _ in range(iters):
        JtJ = np.einsum("rck,rcl->rkl", J, J)
        g = np.einsum("rck,rc->rk", J, r)
        damp = lam[:, None, None] * (JtJ * np.eye(K) + 1e-9 * np.eye(K))
        A = JtJ + damp
        ok = np.isfinite(A).all((1, 2)) & np.isfinite(g).all(1)
        A = np.where(ok[:, None, None], A, np.eye(K))  # a replicate with no information takes no step
        step = np.where(ok[:, None], solve_batched(A, -np.where(ok[:, None], g, 0.0)), 0.0)
        cand = theta + np.where(np.isfinite(step), step, 0.0)
        r2, J2, bad2 = resid(cand)
        sse2 = np.where(bad2, np.inf, (r2 * r2).sum(1))
        better = sse2 < sse
        theta = np.where(better[:, None], cand, theta)
        r = np.where(better[:, None], r2, r)
        J = np.where(better[:, None, None], J2, J)
        sse = np.where(better, sse2, sse)
        lam = np.where(better, lam / 3, np.minimum(lam * 4, 1e8))
        if not np.any(better & (sse2 < sse_prev * (1 - 1e-10))):
            break  # no replicate moved: converged (or stuck on a flat direction)
        sse_prev = sse.copy()
    out = _unpack(law, theta, fit_beta, scale)
    out["sse"] = sse
    return out


def fit_equivalence_laws(curve: CurveFit, n_real, n_synth, err, w_acc, n_eq, w_log, *, fit_beta: bool) -> dict:
    """Both laws for one source: log-space starting points, then the accuracy-scale fit."""
    y = np.log(np.where(w_log > 0, n_eq, 1.0))
    inits = {"effective": fit_effective_logspace(n_real, n_synth, y, w_log, fit_beta=fit_beta),
             "wang": fit_wang_logspace(n_real, n_synth, y, w_log)}
    return {law: fit_law(law, curve, n_real, n_synth, err, w_acc, inits[law], fit_beta=fit_beta)
            for law in EQUIVALENCE_LAWS}


def wang_public(p: dict, k: float) -> dict:
    """Wang et al.'s (c1, c2) for a given scale k."""
    with np.errstate(over="ignore"):
        return {"c1": np.exp(p["a"] * k), "c2": np.exp(1.0 / p["g"])}


# --------------------------------------------------------------------------------------------------
# model-free inversion


def isotonic_decreasing(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted antitonic regression of every row of y (R, P) at once (points sorted by size).

    Uses the min-max formula ``yhat_i = min_{k<=i} max_{j>=i} mean(y[k..j])`` with all interval means
    from cumulative sums: O(R P^2), no Python loop over replicates. Points with w = 0 are skipped by
    the means (a point with no weight inherits its neighbours' level).
    """
    cw = np.concatenate([np.zeros((len(y), 1)), np.cumsum(w, 1)], 1)
    cwy = np.concatenate([np.zeros((len(y), 1)), np.cumsum(w * y, 1)], 1)
    P = y.shape[1]
    k, j = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
    upper = j >= k
    sw = cw[:, j + 1] - cw[:, k]
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = (cwy[:, j + 1] - cwy[:, k]) / sw
    avg = np.where(upper[None] & (sw > 0), avg, np.nan)
    # M[k, i] = max over j >= i of avg[k, j]  (reverse cumulative max along j)
    rev = np.fmax.accumulate(avg[:, :, ::-1], axis=2)[:, :, ::-1]
    valid_ki = k <= j  # here j plays the role of i
    M = np.where(valid_ki[None], rev, np.nan)
    return np.fmin.reduce(np.where(np.isnan(M), np.inf, M), axis=1)


def monotone_inverse(n_ref: np.ndarray, err_ref: np.ndarray, w_ref: np.ndarray, err_cells: np.ndarray) -> np.ndarray:
    """Invert an isotonic (non-increasing) fit of error vs size, linear in log n; per replicate.

    Cells at one total size are pooled first. Returns NaN where a cell's error lies outside the
    measured reference range (no extrapolation).
    """
    sizes, inv = np.unique(n_ref, return_inverse=True)
    G = np.zeros((len(n_ref), len(sizes)))
    G[np.arange(len(n_ref)), inv] = 1.0
    wsum = w_ref @ G
    with np.errstate(invalid="ignore", divide="ignore"):
        ybar = np.where(wsum > 0, ((w_ref * np.where(w_ref > 0, err_ref, 0.0)) @ G) / wsum, 0.0)
    iso = isotonic_decreasing(ybar, wsum)  # (R, P), non-increasing in size
    logn = np.log(sizes)
    e = err_cells[..., None]  # (R, C, 1)
    above = (iso[:, None, :] > e).sum(-1)  # points whose error exceeds the cell's: the crossing index
    P = len(sizes)
    k = np.clip(above, 1, P - 1)
    rows = np.arange(len(iso))[:, None]
    y0, y1 = iso[rows, k - 1], iso[rows, k]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(y0 > y1, (y0 - err_cells) / (y0 - y1), 0.0)
    out = np.exp(logn[k - 1] + np.clip(t, 0, 1) * (logn[k] - logn[k - 1]))
    inside = (err_cells <= iso[:, :1]) & (err_cells >= iso[:, -1:])
    return np.where(inside & np.isfinite(err_cells), out, np.nan)


# --------------------------------------------------------------------------------------------------
# the pipeline: counts over seeds -> every derived quantity


@dataclass
class SourceArrays:
    """One source's cells as arrays: acc (S, C) with NaN for excluded, and the cell coordinates."""

    name: str
    acc: np.ndarray
    n_real: np.ndarray
    n_synth: np.ndarray


@dataclass
class Replicates:
    """Everything one set of seed counts produces; leading axis = replicate."""

    curve: CurveFit
    ref_err: np.ndarray
    ref_w: np.ndarray
    cell_err: dict[str, np.ndarray] = field(default_factory=dict)
    n_eq: dict[str, np.ndarray] = field(default_factory=dict)
    n_eq_mf: dict[str, np.ndarray] = field(default_factory=dict)
    laws: dict[str, dict[str, dict]] = field(default_factory=dict)
    law_weights: dict[str, np.ndarray] = field(default_factory=dict)
    n_seeds_cell: dict[str, np.ndarray] = field(default_factory=dict)


def log_neq_weights(n_eq, n_total, err, var_err, curve: CurveFit):
    """Delta-method inverse variance of log n_eq, from the variance of the cell's mean error."""
    if curve.law == "power":
        E, beta = curve.params["E"][:, None], curve.params["beta"][:, None]
        dlogn_total = 1.0 / (beta * np.maximum(err - E, 1e-12))
    else:
        p = {k: v[:, None] for k, v in curve.params.items()}
        dlogn_total = (1.0 / np.maximum(err - p["E"], 1e-12) + p["alpha"] / np.maximum(p["e0"] - err, 1e-12)) / p["c"]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        var_log = (dlogn_total * n_total / n_eq) ** 2 * var_err
        ok = np.isfinite(var_log) & (var_log > 0) & np.isfinite(n_eq) & (n_eq > 0)
        return np.where(ok, 1.0 / np.where(ok, var_log, 1.0), 0.0), np.where(ok, np.log(np.where(ok, n_eq, 1.0)), 0.0)


def run_pipeline(counts, ref: SourceArrays, sources: list[SourceArrays], *, n_test, curve_law, e0,
                 fit_beta: bool) -> Replicates:
    """Every derived quantity for each row of seed ``counts``.

    Weights (inverse variances of cell means) come from the full sample and stay fixed across
    replicates: they are a nuisance, and re-estimating them from resamples with duplicated seeds
    would shrink variances and make the replicates disagree with the point estimate.
    """
    ones = np.ones((1, counts.shape[1]))
    mean, _, _ = cell_moments(ref.acc, counts, n_test)
    _, var_ref, _ = cell_moments(ref.acc, ones, n_test)
    ref_err = 1.0 - mean
    ref_w = np.where(np.isfinite(mean), 1.0 / var_ref, 0.0)
    n_total_ref = (ref.n_real + ref.n_synth).astype(float)
    curve = fit_curve(curve_law, n_total_ref, ref_err, ref_w, e0=e0)
    out = Replicates(curve=curve, ref_err=ref_err, ref_w=ref_w)
    for src in sources:
        m, _, den = cell_moments(src.acc, counts, n_test)
        _, v0, _ = cell_moments(src.acc, ones, n_test)
        err = 1.0 - m
        n_total = curve.invert(err)
        n_eq = n_total - src.n_real[None, :]
        w_acc = np.where(np.isfinite(m), 1.0 / v0, 0.0)
        w_log, _ = log_neq_weights(n_eq, n_total, err, np.broadcast_to(v0, err.shape), curve)
        out.cell_err[src.name] = err
        out.n_eq[src.name] = n_eq
        out.n_seeds_cell[src.name] = den
        out.n_eq_mf[src.name] = monotone_inverse(n_total_ref, ref_err, ref_w, err) - src.n_real[None, :]
        out.law_weights[src.name] = w_acc
        out.laws[src.name] = fit_equivalence_laws(curve, src.n_real, src.n_synth, err, w_acc, n_eq, w_log,
                                                  fit_beta=fit_beta)
    return out


def heldout_law_error(src: SourceArrays, curve: CurveFit, err: np.ndarray, w: np.ndarray, n_eq: np.ndarray,
                      w_log: np.ndarray, *, fit_beta: bool) -> dict[str, float]:
    """Held-out RMSE of the cell error, leaving one n_real out (or, with fewer than 3 n_real, the
    largest n_synth). Inputs are the point-estimate row (1, C)."""
    groups = np.unique(src.n_real)
    folds = [src.n_real == g for g in groups] if len(groups) >= 3 else [src.n_synth == src.n_synth.max()]
    sq: dict[str, list] = {law: [] for law in EQUIVALENCE_LAWS}
    for test in folds:
        wt, wlt = np.where(test, 0.0, w), np.where(test, 0.0, w_log)
        ok = (w[0] > 0) & test
        if (wt > 0).sum() < 3 or not ok.any():
            continue
        fb = fit_beta and len(np.unique(src.n_real[wt[0] > 0])) >= 2
        laws = fit_equivalence_laws(curve, src.n_real, src.n_synth, err, wt, n_eq, wlt, fit_beta=fb)
        for law, p in laws.items():
            neq = law_neq(law, p, src.n_real, src.n_synth)
            pred = curve.predict(src.n_real[None, :] + neq)[0]
            sq[law].append(((err[0] - pred)[ok]) ** 2)
    return {law: float(np.sqrt(np.mean(np.concatenate(v)))) if v else float("nan") for law, v in sq.items()}


def select_curve_law(n, err, w, e0) -> tuple[str, dict[str, float]]:
    scores = {law: heldout_extrapolation_error(law, n, err, w, e0=e0) for law in ("power", "m4")}
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    return (min(finite, key=finite.get) if finite else "power"), scores
