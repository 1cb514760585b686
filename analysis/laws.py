"""Accuracy laws on the error scale, fitted in batch across bootstrap replicates.

Every fit here takes the sizes ``n`` (P,), errors ``err`` (R, P) and weights ``w`` (R, P) for R
replicates at once (row 0 is usually the point estimate) and returns arrays of shape (R,). A weight
of 0 marks a missing point. No fit takes starting values: the one nonlinear parameter is scanned on
a grid, the linear ones are solved in closed form (with bounds), and the grid is refined locally.

Laws:
- ``power``: saturating power law ``e(n) = E + B * n**-beta`` with ``E in [0, 1]``, ``B >= 0``.
- ``m3``: the power law with an offset, ``e(n) = E + B * (n + C)**-beta`` with ``C >= 0``: a curve that
  flattens at small ``n`` (the first images teach little), which the plain power law bends to fit and
  then extrapolates badly (Alabdulmohsin et al. 2022's M3).
- ``m4``: Alabdulmohsin et al. (2022) M4, ``(e - E) / (e0 - e)**alpha = b * n**-c``, which bends
  towards the chance-level error ``e0`` for small ``n``.
- ``auto``: every replicate picks, among these, the law with the smallest held-out extrapolation error
  (:func:`fit_curve_auto`), so intervals carry the law choice's uncertainty.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

BETA_RANGE = (0.02, 3.0)
_COARSE, _FINE, _LEVELS = 150, 21, 3
_EPS = 1e-300


@dataclass
class CurveFit:
    """Batched fit of one law: ``params[name]`` has shape (R,); flags are boolean (R,)."""

    law: str
    params: dict[str, np.ndarray]
    sse: np.ndarray
    on_bound: np.ndarray
    bound_names: list[str]
    n_ref: float

    def row(self, r: int = 0) -> dict[str, float]:
        return {k: float(v[r]) for k, v in self.params.items()}

    def take(self, r) -> "CurveFit":
        """Replicate ``r`` alone as a batch of one, or the replicates of an index array ``r``."""
        idx = _index(r)
        return CurveFit(
            self.law,
            {k: v[idx] for k, v in self.params.items()},
            self.sse[idx],
            self.on_bound[idx],
            self.bound_names,
            self.n_ref,
        )

    def predict(self, n: np.ndarray) -> np.ndarray:
        """Error at sizes ``n`` (Q,) shared, or (R, Q) per replicate: (R, Q)."""
        return LAWS[self.law].predict(self.params, np.asarray(n, dtype=float))

    def slope(self, n: np.ndarray) -> np.ndarray:
        """d error / d n at sizes (Q,) or (R, Q)."""
        return LAWS[self.law].slope(self.params, n)

    def invert(self, err: np.ndarray) -> np.ndarray:
        """Size reaching error ``err`` (R, C) for every replicate; inf where it is never reached."""
        return LAWS[self.law].invert(self.params, np.asarray(err, dtype=float))

    def predict_and_slope(self, n) -> tuple:
        return predict_and_slope(self.law, self.params, np.asarray(n, dtype=float))


def _index(r):
    """A replicate index as something that keeps the batch axis: an int ``r`` -> slice r:r+1."""
    return slice(int(r), int(r) + 1) if np.ndim(r) == 0 else np.asarray(r)


# --------------------------------------------------------------------------------------------------
# saturating power law


def _rows(n) -> np.ndarray:
    """Sizes as (1, Q) shared by all replicates, or (R, Q) per replicate."""
    n = np.asarray(n, dtype=float)
    return n[None, :] if n.ndim == 1 else n


def power_predict(params: dict, n: np.ndarray) -> np.ndarray:
    E, B, beta = (params[k][:, None] for k in ("E", "B", "beta"))
    return E + B * _rows(n) ** (-beta)


def power_slope(params: dict, n: np.ndarray) -> np.ndarray:
    """d e / d n."""
    B, beta = params["B"][:, None], params["beta"][:, None]
    n = _rows(n)
    return -beta * B * n ** (-beta - 1)


def power_invert(params: dict, err: np.ndarray) -> np.ndarray:
    E, B, beta = (params[k][:, None] for k in ("E", "B", "beta"))
    gap = err - E
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n = np.where(gap > 0, (gap / B) ** (-1.0 / beta), np.inf)
    return np.where(np.isnan(err), np.nan, n)


def _weighted_sums_factory(y: np.ndarray, w: np.ndarray):
    """Sums for a 2-parameter weighted LS of y on [1, X]; X is (G, P) or (R, G, P)."""
    wy = w * y
    Sw = w.sum(1, keepdims=True)
    Sy = wy.sum(1, keepdims=True)
    Syy = (wy * y).sum(1, keepdims=True)

    def sums(X):
        if X.ndim == 2:
            Sx, Sxx, Sxy = w @ X.T, w @ (X * X).T, wy @ X.T
        else:
            Sx = np.einsum("rp,rgp->rg", w, X)
            Sxx = np.einsum("rp,rgp->rg", w, X * X)
            Sxy = np.einsum("rp,rgp->rg", wy, X)
        return Sw, Sy, Syy, Sx, Sxx, Sxy

    return sums


def scan_refine(profile, lo: float, hi: float, coarse: int = _COARSE, fine: int = _FINE, levels: int = _LEVELS):
    """Global 1-D minimisation per replicate: a coarse grid, then ``levels`` local refinements.

    ``profile(theta)`` takes theta of shape (G,) or (R, G) and returns ``(sse (R, G), extras)``
    where extras is a tuple of (R, G) arrays (the profiled-out linear parameters). Returns theta,
    sse and extras at the optimum, each (R,). The precision after refinement is
    ``(hi - lo) / coarse * (2 / (fine - 1)) ** levels``; no starting value is involved.
    """
    grid = np.linspace(lo, hi, coarse)
    sse, extras = profile(grid)
    idx = np.argmin(np.where(np.isfinite(sse), sse, np.inf), axis=1)
    theta = grid[idx]
    step = grid[1] - grid[0]
    for _ in range(levels):
        local = np.clip(theta[:, None] + np.linspace(-step, step, fine)[None, :], lo, hi)
        sse, extras = profile(local)
        idx = np.argmin(np.where(np.isfinite(sse), sse, np.inf), axis=1)
        theta = local[np.arange(len(idx)), idx]
        step = step * 2 / (fine - 1)
    rows = np.arange(len(idx))
    return theta, sse[rows, idx], tuple(e[rows, idx] for e in extras)


def _bounded_affine(Sw, Sy, Syy, Sx, Sxx, Sxy, lo=0.0, hi=1.0):
    """Minimise sum w (y - E - B x)^2 over E in [lo, hi], B >= 0, in closed form.

    A convex QP on a box: the unconstrained optimum if feasible, else the best point on the
    active faces (E at a bound with B free, or B = 0 with E free).
    """

    def sse(E, B):
        return Syy - 2 * E * Sy - 2 * B * Sxy + E * E * Sw + 2 * E * B * Sx + B * B * Sxx

    det = Sw * Sxx - Sx * Sx
    safe = np.where(np.abs(det) > 1e-14 * np.maximum(Sw * Sxx, _EPS), det, np.nan)
    B_u = (Sw * Sxy - Sx * Sy) / safe
    E_u = (Sy - B_u * Sx) / Sw
    feasible = (E_u >= lo) & (E_u <= hi) & (B_u >= 0)
    cands = [(np.where(feasible, E_u, np.nan), np.where(feasible, B_u, np.nan))]
    for E_fixed in (lo, hi):
        B_f = np.maximum((Sxy - E_fixed * Sx) / np.maximum(Sxx, _EPS), 0.0)
        cands.append((np.full_like(B_f, E_fixed), B_f))
    E_b = np.clip(Sy / np.maximum(Sw, _EPS), lo, hi) * np.ones_like(Sx)
    cands.append((E_b, np.zeros_like(Sx)))
    sses = np.stack([np.where(np.isnan(E), np.inf, sse(E, B)) for E, B in cands])
    best = np.argmin(sses, axis=0)
    E = np.choose(best, [np.nan_to_num(c[0]) for c in cands])
    B = np.choose(best, [np.nan_to_num(c[1]) for c in cands])
    return E, B, np.min(sses, axis=0)


def fit_power(
    n: np.ndarray, err: np.ndarray, w: np.ndarray, beta_range=BETA_RANGE, coarse: int = _COARSE, levels: int = _LEVELS
) -> CurveFit:
    """Variable projection: scan beta, solve (E, B) with bounds in closed form, refine the grid."""
    n = np.asarray(n, dtype=float)
    err, w = _clean(err, w)
    n_ref = float(np.exp(np.mean(np.log(n))))  # rescale sizes so n**-beta stays well conditioned
    u = n / n_ref
    lo, hi = beta_range
    terms = _weighted_sums_factory(err, w)

    log_u = np.log(u)

    def profile(beta):  # beta (G,) or (R, G) -> sse (R, G) and the (E, B) that reach it
        X = np.exp(-beta[..., None] * log_u)  # u ** -beta with the logarithm taken once
        E, B, sse = _bounded_affine(*terms(X))
        return sse, (E, B)

    beta, sse, (E, B_scaled) = scan_refine(profile, lo, hi, coarse=coarse, levels=levels)
    B_abs = B_scaled * n_ref**beta
    on_bound = (E <= 1e-12) | (B_scaled <= 1e-12) | (beta <= lo + 1e-9) | (beta >= hi - 1e-9)
    names = [
        label
        for label, hit in (
            ("E=0", E[0] <= 1e-12),
            ("B=0", B_scaled[0] <= 1e-12),
            ("beta at grid edge", beta[0] <= lo + 1e-9 or beta[0] >= hi - 1e-9),
        )
        if hit
    ]
    return CurveFit("power", {"E": E, "B": B_abs, "beta": beta}, sse, on_bound, names, n_ref)


# --------------------------------------------------------------------------------------------------
# M3: the power law with an offset in n


def m3_predict(params: dict, n: np.ndarray) -> np.ndarray:
    E, B, beta, C = (params[k][:, None] for k in ("E", "B", "beta", "C"))
    return E + B * (_rows(n) + C) ** (-beta)


def m3_slope(params: dict, n: np.ndarray) -> np.ndarray:
    B, beta, C = params["B"][:, None], params["beta"][:, None], params["C"][:, None]
    return -beta * B * (_rows(n) + C) ** (-beta - 1)


def m3_invert(params: dict, err: np.ndarray) -> np.ndarray:
    return power_invert(params, err) - params["C"][:, None]


def fit_m3(n: np.ndarray, err: np.ndarray, w: np.ndarray, n_offsets: int = 12) -> CurveFit:
    """Profile the offset C over a log grid (plus C = 0, the power law); each C is a power-law fit.

    C is shared by all replicates at each grid value, so every inner fit is one batched variable
    projection; each replicate keeps its best C. The grid spans 2% to 4x the largest size, far beyond
    where C still changes the curve measurably within the data.
    """
    n = np.asarray(n, dtype=float)
    offsets = np.concatenate([[0.0], np.geomspace(0.02 * n.min(), 4 * n.max(), n_offsets - 1)])
    best = None
    for C in offsets:
        # two refinements (beta to ~1e-3) suffice inside M3: its offset grid is far coarser than that
        f = fit_power(n + C, err, w, coarse=40, levels=2)
        p = {**f.params, "C": np.full(len(f.sse), C)}
        if best is None:
            best = (p, f.sse, f.on_bound)
            continue
        better = f.sse < best[1] * (1 - 1e-12)
        best = (
            {k: np.where(better, p[k], best[0][k]) for k in p},
            np.where(better, f.sse, best[1]),
            np.where(better, f.on_bound, best[2]),
        )
    params, sse, on_bound = best
    C0 = params["C"][0]
    names = [label for label, hit in (("E=0", params["E"][0] <= 1e-12), ("C at grid edge", C0 >= offsets[-1])) if hit]
    return CurveFit(
        "m3", params, sse, on_bound | (params["C"] >= offsets[-1]), names, float(np.exp(np.mean(np.log(n))))
    )


# --------------------------------------------------------------------------------------------------
# M4 (Alabdulmohsin et al. 2022)


def m4_invert(params: dict, err: np.ndarray) -> np.ndarray:
    E, alpha, logb, c, e0 = (params[k][:, None] for k in ("E", "alpha", "log_b", "c", "e0"))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        logn = (logb - np.log(err - E) + alpha * np.log(e0 - err)) / c
        n = np.where(err > E, np.exp(logn), np.inf)
    return np.where(np.isnan(err), np.nan, n)


def m4_predict(params: dict, n: np.ndarray) -> np.ndarray:
    """Solve the implicit M4 equation for e, per replicate and size.

    In z = log(e - E) the equation h(z) = z - alpha log(e0 - E - e^z) - log b + c log n = 0 is increasing
    and convex, so Newton's method inside a shrinking bracket converges in a few steps; bisection is the
    fallback whenever a Newton step would leave the bracket. Each iteration works only on the elements not
    yet converged (most converge in 3-5 steps, a few need 15): the per-replicate law weighting calls this
    inside every Levenberg-Marquardt iteration, so it is the fit's hot spot.
    """
    E, alpha, logb, c, e0 = (params[k][:, None] for k in ("E", "alpha", "log_b", "c", "e0"))
    logn = np.log(_rows(n))
    shape = np.broadcast_shapes(E.shape, logn.shape)
    flat = [np.broadcast_to(a, shape).ravel() for a in (E, alpha, logb, c, e0, logn)]
    E_, alpha_, logb_, c_, e0_, logn_ = flat
    D = np.maximum(e0_ - E_, 1e-12)
    rhs = logb_ - c_ * logn_
    lo = np.full(D.shape, -60.0)
    hi = np.log(D) - 1e-12
    z = np.clip(rhs, lo, hi - 1e-6)  # the alpha = 0 solution
    active = np.arange(z.size)
    for _ in range(40):
        za, Da, aa = z[active], D[active], alpha_[active]
        ez = np.exp(za)
        gap = np.maximum(Da - ez, 1e-300)
        h = za - aa * np.log(gap) - rhs[active]
        up = h > 0
        hi_a = np.where(up, za, hi[active])
        lo_a = np.where(up, lo[active], za)
        step = h / (1 + aa * ez / gap)
        z_new = za - step
        inside = (z_new >= lo_a) & (z_new <= hi_a)  # inclusive: an exact root (h = 0) must stay put
        z_new = np.where(inside, z_new, 0.5 * (lo_a + hi_a))
        hi[active], lo[active], z[active] = hi_a, lo_a, z_new
        moving = np.abs(z_new - za) >= 1e-9  # relative precision 1e-9 in e - E: far below any noise
        active = active[moving]
        if active.size == 0:
            break
    return (E_ + np.exp(z)).reshape(shape)


def m4_slope(params: dict, n: np.ndarray, e: np.ndarray | None = None) -> np.ndarray:
    """d e / d n from the implicit M4 equation (``e``: the prediction at ``n``, if already computed)."""
    e = m4_predict(params, n) if e is None else e
    E, alpha, c, e0 = (params[k][:, None] for k in ("E", "alpha", "c", "e0"))
    return -c / (1.0 / np.maximum(e - E, 1e-12) + alpha / np.maximum(e0 - e, 1e-12)) / _rows(n)


def predict_and_slope(law: str, params: dict, n) -> tuple:
    """Both at once: for M4 the slope needs the prediction, which is the costly part (an implicit solve)."""
    if law == "m4":
        e = m4_predict(params, n)
        return e, m4_slope(params, n, e)
    return LAWS[law].predict(params, n), LAWS[law].slope(params, n)


def fit_m4(n: np.ndarray, err: np.ndarray, w: np.ndarray, e0: float) -> CurveFit:
    """Scan E as a fraction of the smallest error; (alpha, log b, c) is then a linear LS in logs."""
    n = np.asarray(n, dtype=float)
    err, w = _clean(err, w)
    R, P = err.shape
    big = np.where(w > 0, err, np.inf)
    emin = np.min(big, axis=1)
    frac = np.linspace(0.0, 0.98, 25)
    best = None
    for f in frac:
        E = (f * emin)[:, None]
        ok = (w > 0) & (err > E) & (err < e0)
        ww = np.where(ok, w, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(ok, np.log(np.where(ok, err - E, 1.0)), 0.0)
            x1 = np.where(ok, np.log(np.where(ok, e0 - err, 1.0)), 0.0)
        cols = [x1, np.ones_like(err), -np.broadcast_to(np.log(n), err.shape)]  # coef: alpha, log b, c
        X = np.stack(cols, axis=-1)  # (R, P, 3)
        XtWX = np.einsum("rp,rpi,rpj->rij", ww, X, X) + 1e-10 * np.eye(3)
        XtWz = np.einsum("rp,rpi->ri", ww * z, X)
        coef = solve_batched(XtWX, XtWz)
        # alpha < 0 would make the law non-monotone: refit with alpha = 0 where that happens
        X2 = X[..., 1:]
        coef2 = solve_batched(
            np.einsum("rp,rpi,rpj->rij", ww, X2, X2) + 1e-10 * np.eye(2), np.einsum("rp,rpi->ri", ww * z, X2)
        )
        coef = np.where((coef[:, :1] < 0), np.concatenate([np.zeros((R, 1)), coef2], 1), coef)
        # compare E candidates on the error scale, not the log scale each E induces
        params = {
            "E": E[:, 0],
            "alpha": coef[:, 0],
            "log_b": coef[:, 1],
            "c": np.maximum(coef[:, 2], 1e-6),
            "e0": np.full(R, e0),
        }
        pred = m4_predict(params, n)
        sse = np.sum(w * (err - pred) ** 2, axis=1)
        sse = np.where(np.isfinite(sse), sse, np.inf)
        if best is None:
            best = (params, sse)
        else:
            better = sse < best[1]
            best = ({k: np.where(better, params[k], best[0][k]) for k in params}, np.where(better, sse, best[1]))
    params, sse = best
    on_bound = (params["E"] <= 1e-12) | (params["alpha"] <= 1e-12)
    return CurveFit("m4", params, sse, on_bound, [], float(np.exp(np.mean(np.log(n)))))


# --------------------------------------------------------------------------------------------------


def solve_batched(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve a batch of small linear systems A x = b (A: (..., K, K), b: (..., K)).

    Falls back to the pseudo-inverse when a replicate's system is singular (e.g. a resample that
    holds one n_real only), so one degenerate replicate cannot stop the other 1999.
    """
    try:
        return np.linalg.solve(A, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return (np.linalg.pinv(A) @ b[..., None])[..., 0]


def _clean(err: np.ndarray, w: np.ndarray):
    err = np.atleast_2d(np.asarray(err, dtype=float))
    w = np.atleast_2d(np.asarray(w, dtype=float))
    w = np.where(np.isfinite(err) & np.isfinite(w), w, 0.0)
    return np.where(w > 0, err, 0.0), w


@dataclass(frozen=True)
class _Law:
    predict: object
    invert: object
    slope: object
    n_params: int


LAWS = {
    "power": _Law(power_predict, power_invert, power_slope, 3),
    "m3": _Law(m3_predict, m3_invert, m3_slope, 4),
    "m4": _Law(m4_predict, m4_invert, m4_slope, 4),
}
CURVE_LAWS = tuple(LAWS)


def fit_curve(law: str, n, err, w, *, e0: float | None = None) -> CurveFit:
    if law == "power":
        return fit_power(n, err, w)
    if law == "m3":
        return fit_m3(n, err, w)
    if law == "m4":
        if e0 is None:
            raise ValueError("law: 'm4' needs the chance-level error e0")
        return fit_m4(n, err, w, e0)
    raise ValueError(f"curve_law: unknown accuracy law {law!r}; choose from {CURVE_LAWS + ('auto',)}")


def holdout_sizes(n: np.ndarray, fraction: float = 0.2, min_train: int = 4) -> np.ndarray | None:
    """The largest ~``fraction`` of the distinct sizes (at least one), held out to score extrapolation;
    None when fewer than ``min_train`` sizes would be left to fit on."""
    sizes = np.unique(n)
    k = max(1, int(round(fraction * len(sizes))))
    if len(sizes) - k < min_train:
        return None
    return n >= sizes[-k]


def heldout_curve_scores(laws, n, err, w, *, e0=None) -> dict[str, np.ndarray] | None:
    """Per replicate, each law's weighted sum of squared errors on the held-out largest sizes when
    fitted without them (in squared standard errors: the weights are inverse variances).

    Judging a law by how well it extrapolates, not by how well it fits, guards against a flexible law
    that bends to the noise (M3 and M4 nest or approach the power law and always fit at least as well).
    """
    n = np.asarray(n, dtype=float)
    test = holdout_sizes(n)
    if test is None:
        return None
    err, w = _clean(err, w)
    wt = w[:, test]
    out = {}
    for law in laws:
        fit = fit_curve(law, n[~test], err[:, ~test], w[:, ~test], e0=e0)
        sq = wt * (err[:, test] - fit.predict(n[test])) ** 2
        out[law] = np.where(wt > 0, sq, 0.0).sum(1)
    return out


def predictive_weights(scores: dict[str, np.ndarray]) -> np.ndarray:
    """Weights (R, L) proportional to exp(-SS / 2) of each law's held-out sum of squares.

    A soft choice rather than the argmin: the hard choice jumps when a resample tips the balance between
    two laws, and leave-one-seed-out intervals of a jumping statistic explode (a jackknife needs a smooth
    statistic; Efron 2014 smooths estimation after model selection the same way). A law whose held-out
    error is clearly worse still gets ~0 weight, so a clear winner is used alone.
    """
    ss = np.stack([np.where(np.isfinite(v), v, np.inf) for v in scores.values()], axis=1)
    best = np.min(ss, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        logw = np.where(np.isfinite(ss), -(ss - np.where(np.isfinite(best), best, 0.0)) / 2, -np.inf)
    wts = np.exp(logw)
    # weights under 1e-3 of the best are dropped: they move no estimate visibly, and a law with no weight in a
    # replicate is then not evaluated there at all (M4's implicit prediction is the costly one)
    wts = np.where(wts < 1e-3, 0.0, wts)
    total = wts.sum(1, keepdims=True)
    uniform = np.full_like(wts, 1.0 / wts.shape[1])
    return np.where(total > 0, wts / np.where(total > 0, total, 1.0), uniform)


class MixedCurve:
    """The reference curve under ``curve_law="auto"``: every candidate law fitted to every replicate,
    averaged with per-replicate predictive weights (:func:`predictive_weights`).

    Predictions and slopes are weighted sums of the laws'; the inverse (size reaching a given error) is
    solved by Newton's method in log n from the weighted geometric mean of the laws' own inverses.
    """

    law = "auto"

    def __init__(self, fits: dict[str, CurveFit], weights: np.ndarray, scores: dict[str, np.ndarray] | None):
        self.fits, self.names = fits, list(fits)
        self.weights, self.scores = weights, scores
        self.n_ref = next(iter(fits.values())).n_ref

    @property
    def chosen(self) -> str:
        """The law with the largest weight at the point estimate (row 0)."""
        return self.names[int(np.argmax(self.weights[0]))]

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self.fits[self.chosen].params

    @property
    def bound_names(self) -> list[str]:
        return self.fits[self.chosen].bound_names

    def share(self) -> dict[str, float]:
        """Mean weight of each law over the resampled replicates (row 0 excluded)."""
        rest = self.weights[1:] if len(self.weights) > 1 else self.weights
        return {name: float(v) for name, v in zip(self.names, rest.mean(0))}

    def point_weights(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.names, self.weights[0])}

    def take(self, r) -> "MixedCurve":
        idx = _index(r)
        return MixedCurve(
            {k: f.take(r) for k, f in self.fits.items()},
            self.weights[idx],
            None if self.scores is None else {k: v[idx] for k, v in self.scores.items()},
        )

    def _mix(self, x, slope: bool) -> tuple:
        """Weighted sums of the laws' predictions (and slopes); each law only on the rows that weigh it."""
        x = np.asarray(x, dtype=float)
        pred = np.zeros((len(self.weights), x.shape[-1]))
        grad = np.zeros_like(pred) if slope else None
        for i, (name, fit) in enumerate(self.fits.items()):
            wi = self.weights[:, i]
            rows = np.flatnonzero(wi > 0)
            if rows.size == 0:
                continue
            every = rows.size == len(wi)
            params = fit.params if every else {k: v[rows] for k, v in fit.params.items()}
            xi = x if (every or x.ndim == 1) else x[rows]
            if slope:
                p, g = predict_and_slope(name, params, xi)
                grad[rows] += wi[rows, None] * np.where(np.isfinite(g), g, 0.0)
            else:
                p = LAWS[name].predict(params, xi)
            pred[rows] += wi[rows, None] * np.where(np.isfinite(p), p, 0.0)
        return pred, grad

    def predict(self, n):
        return self._mix(n, slope=False)[0]

    def slope(self, n):
        return self._mix(n, slope=True)[1]

    def predict_and_slope(self, n):
        return self._mix(n, slope=True)

    def invert(self, err, iters: int = 30) -> np.ndarray:
        err = np.asarray(err, dtype=float)
        err = np.broadcast_to(err, (len(self.weights), err.shape[-1])) if err.ndim == 1 else err
        # where the error is at or below the averaged asymptote, no size reaches it
        floor = sum(self.weights[:, i : i + 1] * f.params["E"][:, None] for i, f in enumerate(self.fits.values()))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            logs = [np.log(np.clip(f.invert(err), 1e-6, 1e12)) for f in self.fits.values()]
            u = sum(self.weights[:, i : i + 1] * np.where(np.isfinite(lg), lg, 0.0) for i, lg in enumerate(logs))
        lo, hi = np.full(err.shape, np.log(1e-6)), np.full(err.shape, np.log(1e12))
        u = np.clip(np.where(np.isfinite(u), u, 0.0), lo, hi)
        for _ in range(iters):
            n = np.exp(u)
            with np.errstate(invalid="ignore", over="ignore"):
                pred, grad = self._mix(n, slope=True)
                f = pred - err  # decreasing in u
                d = grad * n
            hi = np.where(f < 0, u, hi)
            lo = np.where(f < 0, lo, u)
            with np.errstate(invalid="ignore", divide="ignore"):
                u_new = u - f / d
            ok = np.isfinite(u_new) & (u_new >= lo) & (u_new <= hi)
            step = np.where(ok, u_new, 0.5 * (lo + hi)) - u
            u = u + step
            if np.all(np.abs(step) < 1e-10):
                break
        n = np.exp(u)
        n = np.where(err <= floor, np.inf, n)
        return np.where(np.isnan(err), np.nan, n)


def crossval_curve_predictions(laws, n, err, w, *, e0=None, max_splits: int = 2):
    """Rolling-origin held-out predictions of every law: split h holds out the largest h distinct sizes
    (h = 1 .. up to ``max_splits``, about 20% of the sizes, keeping at least 4 to fit on; a third split changed
    the LCDB figure of bench/curve_extrapolation.py by 1e-4 and cost a third more), fits each law on the
    rest and predicts the held-out points. Returns (predictions {law: (R, M)}, observed (R, M), weights (R, M))
    over the M held-out points of all splits stacked, or None when no split leaves enough sizes to fit."""
    n = np.asarray(n, dtype=float)
    err, w = _clean(err, w)
    tests = rolling_origin_splits(n, max_splits)
    if not tests:
        return None
    jobs = [(law, test) for test in tests for law in laws]
    fits = map_fits(lambda job: fit_curve(job[0], n[~job[1]], err[:, ~job[1]], w[:, ~job[1]], e0=e0), jobs, len(err))
    preds = {
        law: np.concatenate([f.predict(n[t]) for (lw, t), f in zip(jobs, fits) if lw == law], axis=1) for law in laws
    }
    return preds, np.concatenate([err[:, t] for t in tests], 1), np.concatenate([w[:, t] for t in tests], 1)


def rolling_origin_splits(n, max_splits: int = 2) -> list[np.ndarray]:
    """Held-out masks over the points ``n``: split h holds out the largest h distinct sizes, h = 1 .. up to
    ``max_splits`` (about 20% of the sizes, keeping at least 4 to fit on); empty when too few sizes."""
    sizes = np.unique(n)
    h_max = min(max_splits, max(1, int(round(0.2 * len(sizes)))), len(sizes) - 4)
    return [n >= sizes[-h] for h in range(1, h_max + 1)]


def map_fits(fn, jobs: list, n_rows: int) -> list:
    """``[fn(job) for job in jobs]``, on threads when the batch is large: the fits are numpy array work that
    releases the GIL, so the bootstrap's independent law fits share the cores (2000 replicates on 2 cores:
    4.2-4.3 s instead of 4.8-5.1 s); a handful of rows (the default fit) is faster in one thread."""
    workers = min(len(jobs), os.cpu_count() or 1)
    if n_rows < 200 or workers < 2:
        return [fn(job) for job in jobs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, jobs))


def stacking_weights(preds: dict[str, np.ndarray], obs: np.ndarray, w: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """Per replicate, the convex combination of the laws' held-out predictions with the smallest weighted
    squared error (stacking, Breiman 1996): weights (R, L) on the simplex.

    Solved exactly by trying every subset of laws (2^L - 1: seven for three laws) with the sum-to-one constraint
    in closed form and keeping the best feasible one, all replicates at once. The laws' predictions are nearly
    collinear, so a small ridge (relative to the diagonal) keeps each subset's system well posed.
    """
    names = list(preds)
    P = np.stack([np.where(np.isfinite(preds[k]), preds[k], np.nan) for k in names], axis=-1)  # (R, M, L)
    ok = np.isfinite(P).all(-1) & (w > 0) & np.isfinite(obs)
    sw = np.sqrt(np.where(ok, w, 0.0))
    X = np.where(ok[..., None], P, 0.0) * sw[..., None]
    y = np.where(ok, obs, 0.0) * sw
    R, _, L = X.shape
    best_w, best_ss = np.zeros((R, L)), np.full(R, np.inf)
    for mask in range(1, 2**L):
        idx = [i for i in range(L) if mask >> i & 1]
        Xs = X[..., idx]
        A = np.einsum("rmi,rmj->rij", Xs, Xs)
        A = A + ridge * (np.trace(A, axis1=1, axis2=2)[:, None, None] / len(idx) + 1e-300) * np.eye(len(idx))
        b = np.einsum("rmi,rm->ri", Xs, y)
        Ainv_b, Ainv_1 = solve_batched(A, b), solve_batched(A, np.ones((R, len(idx))))
        lam = (Ainv_b.sum(1) - 1.0) / Ainv_1.sum(1)
        ws = Ainv_b - lam[:, None] * Ainv_1
        if len(idx) == 1:
            ws = np.ones((R, 1))
        feasible = np.all(ws >= -1e-12, axis=1) & np.isfinite(ws).all(1)
        ss = np.sum((np.einsum("rmi,ri->rm", Xs, np.clip(ws, 0.0, None)) - y) ** 2, axis=1)
        better = feasible & (ss < np.where(np.isfinite(best_ss), best_ss * (1 - 1e-15), np.inf))
        full = np.zeros((R, L))
        full[:, idx] = np.clip(ws, 0.0, None)
        best_w = np.where(better[:, None], full, best_w)
        best_ss = np.where(better, ss, best_ss)
    total = best_w.sum(1, keepdims=True)
    none = ~np.isfinite(best_ss) | (total[:, 0] <= 0)
    uniform = np.full((R, L), 1.0 / L)
    return np.where(none[:, None], uniform, best_w / np.where(total > 0, total, 1.0))


# Stacking weights fitted on a handful of held-out points are noisy, and equal weights are hard to beat (the
# "forecast combination puzzle"), so the weights are shrunk toward equal ones. Measured (bench/RESULTS.md): on three
# samples of 300 held-out LCDB curves a shrinkage of 0.1-0.5 was never worse than the best single law, where
# stacking alone was on one sample; on the planted offset curve (M3 true) 0.5 undercovered at 10 seeds (0.85-0.88)
# while 0.2 covered 0.94-0.99. 0.2 also had the lowest pooled LCDB error of 0, 0.1, 0.2, 0.3, 0.5.
STACKING_SHRINK = 0.2
# The flexible laws must earn their weight: the mixture leaves the simplest law only as far as the held-out
# evidence against it exceeds its noise — its held-out weighted sum of squares minus the best law's, in standard
# errors of a chi-square with one degree per held-out point (sqrt(2 M)), over EVIDENCE_SE (all the way at 2 SE).
# Measured (bench/RESULTS.md): on noisy digits curves fitted on 6 sizes (5-seed means), where one held-out size
# cannot tell a law that extrapolates from one that bends to test noise, the shrunk stacking was 0.145 worse in
# log-RMSE than the power law and this rule 0.004 better; on the 900 LCDB curves it added 0.001-0.003 to the shrunk
# stacking's error (still below every single law); on the six curves of the digits default it made the mixture
# 0.001 better than its best member instead of 0.008 worse.
EVIDENCE_SE = 2.0


def shrunk_stacking_weights(preds: dict[str, np.ndarray], obs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """:func:`stacking_weights` shrunk by :data:`STACKING_SHRINK` toward equal weights: (R, L)."""
    return (1 - STACKING_SHRINK) * stacking_weights(preds, obs, w) + STACKING_SHRINK / len(preds)


def evidence_against_simplest(scores: dict[str, np.ndarray], wts: np.ndarray, laws) -> np.ndarray:
    """Per replicate, the share of the stacked weights the mixture takes (the rest stays on ``laws[0]``, the
    simplest law): the first law's held-out sum of squares minus the best law's, in chi-square standard errors,
    over :data:`EVIDENCE_SE`, within [0, 1]."""
    ss = np.stack([scores[law] for law in laws], axis=1)
    held_out = np.maximum((wts > 0).sum(axis=1), 1)
    z = (ss[:, 0] - ss.min(axis=1)) / np.sqrt(2.0 * held_out)
    return np.clip(z / EVIDENCE_SE, 0.0, 1.0)


HELD_OUT_SPLITS = 2  # rolling-origin splits of the reference mixture (crossval_curve_predictions' max_splits)


def reference_mixture_text() -> str:
    """The default reference mixture in words, from the constants that run it (report, summary, docs)."""
    splits = " and ".join(str(h) for h in range(1, HELD_OUT_SPLITS + 1))
    return (
        f"{', '.join(CURVE_LAWS)} fitted in every replicate and averaged there with stacking weights fitted on "
        f"rolling-origin extrapolations (the largest {splits} sizes held out), shrunk {STACKING_SHRINK:.0%} toward "
        f"equal weights, and taken away from the {CURVE_LAWS[0]} law only as far as the held-out evidence against "
        f"it exceeds its noise (its held-out weighted sum of squares minus the best law's, in chi-square standard "
        f"errors, over {EVIDENCE_SE:g})"
    )


def fit_curve_auto(n, err, w, *, e0: float, laws=CURVE_LAWS) -> MixedCurve:
    """Every candidate law on every replicate, combined per replicate by stacking on rolling-origin held-out
    extrapolations (:func:`crossval_curve_predictions`, :func:`stacking_weights`), shrunk by
    :data:`STACKING_SHRINK` toward equal weights, and taken only as far from the simplest law (``laws[0]``) as
    the held-out evidence against it allows (:func:`evidence_against_simplest`). ``scores``: each law's held-out
    weighted sum of squares over those splits (reported as its held-out error)."""
    fits = dict(zip(laws, map_fits(lambda law: fit_curve(law, n, err, w, e0=e0), list(laws), np.shape(err)[0])))
    cv = crossval_curve_predictions(laws, n, err, w, e0=e0, max_splits=HELD_OUT_SPLITS)
    R = len(next(iter(fits.values())).sse)
    simplest = np.zeros((R, len(laws)))
    simplest[:, 0] = 1.0
    if cv is None:  # too few sizes to hold any out: the simplest law
        return MixedCurve(fits, simplest, None)
    preds, obs, wts = cv
    # the held-out points every law predicts (those the stacking weighs too)
    wts = np.where(np.all([np.isfinite(p) for p in preds.values()], axis=0) & np.isfinite(obs), wts, 0.0)
    scores = {law: np.sum(np.where(wts > 0, wts * (obs - p) ** 2, 0.0), axis=1) for law, p in preds.items()}
    stacked = shrunk_stacking_weights(preds, obs, wts)
    share = evidence_against_simplest(scores, wts, laws)[:, None]
    return MixedCurve(fits, share * stacked + (1 - share) * simplest, scores)
