"""Held-out extrapolation of real learning curves: every reference law alone, and the ways of combining them.

Curves the package did not make: the Learning Curve Database (LCDB, Mohr et al. 2022; ``pip install lcdb`` —
its CSV is read directly, the package itself is not imported) and, with ``--cube``, the real reference curves
of a cube (one per seed, and the mean over seeds, at each total size n_real + n_synth). Each curve loses its ``--holdout`` largest anchors;
every method is fitted on the rest (its own internal held-out splits use only those) and predicts them. The
figure is the log-RMSE, ``sqrt(mean (log predicted error - log observed error)^2)`` over all held-out points.

Methods: ``power``, ``m3``, ``m4`` alone; ``bnsl`` alone (a broken power law with one break, Caballero et al.
2023, ``e(n) = E + B n^-c0 (1 + (n / d)^(1 / f))^(-c1 f)``: six parameters fitted here per curve by scipy's
``least_squares`` on the log error from 6 starts — not one of the package's laws, measured to decide whether it
should be); ``stacking with bnsl`` (the default's stacking and shrinkage over the three laws and bnsl); ``exp(-SS/2), one split`` (weights from the largest ~20% of sizes
held out once); ``CV selection`` (the law with the smallest summed error over rolling-origin splits); ``equal
weights``; ``stacking alone`` (convex weights fitted on those splits); ``stacking shrunk 20%`` (toward equal
weights); the default (``curve_law="auto"``: the shrunk stacking weights, taken away from the power law only as far
as the held-out evidence against it exceeds its noise, :func:`analysis.laws.evidence_against_simplest`). Under each table: the default (and the stack with bnsl) minus the
best of the package's single laws, with a 90% interval from resampling whole curves — how far the sample pins the
difference down.

    python bench/curve_extrapolation.py [--curves 300] [--holdout 3] [--cube runs/digits/results.nc] [--seed-group 5]

A cube with more sizes and seeds of the reference alone: ``scaling sweep bench/digits_curves.yaml`` (9 sizes, 25 to
600 real digits images, 20 seeds; 2 minutes on 2 cores), then ``--cube runs/digits_curves/results.nc``.
"""

import argparse
import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from analysis.laws import (
    CURVE_LAWS,
    MixedCurve,
    crossval_curve_predictions,
    fit_curve,
    fit_curve_auto,
    heldout_curve_scores,
    predictive_weights,
    rolling_origin_splits,
    shrunk_stacking_weights,
    stacking_weights,
)


DEFAULT = "default: stacking shrunk 20%, left only as far as the evidence against power allows"


def lcdb_curves(n_curves: int, seed: int, min_anchors: int = 9):
    """(name, sizes, mean errors, variances of the means, e0) for ``n_curves`` random LCDB curves."""
    spec = importlib.util.find_spec("lcdb")
    if spec is None:
        raise SystemExit("lcdb: not installed (pip install lcdb); or pass --no-lcdb")
    root = Path(spec.submodule_search_locations[0])
    df = pd.read_csv(
        root / "database-accuracy.csv", usecols=["openmlid", "learner", "size_train", "size_test", "score_test"]
    )
    meta = pd.read_csv(root / "datasets.csv", usecols=["openmlid", "NumberOfClasses"]).set_index("openmlid")
    g = df.groupby(["openmlid", "learner", "size_train"])["score_test"].agg(["mean", "var", "count"]).reset_index()
    size_test = df.groupby("openmlid")["size_test"].max()
    keys = [k for k, c in g.groupby(["openmlid", "learner"]) if len(c) >= min_anchors]
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.permutation(len(keys)):
        oid, learner = keys[i]
        c = g[(g.openmlid == oid) & (g.learner == learner)].sort_values("size_train")
        err = 1.0 - c["mean"].to_numpy()
        if not np.all(np.isfinite(err)) or err.min() <= 0:
            continue  # a perfect score has no log error
        k = int(meta.loc[oid, "NumberOfClasses"]) if oid in meta.index else 2
        floor = np.clip(err * (1 - err), 1e-4, None) / float(size_test.loc[oid])
        var = np.maximum(c["var"].fillna(0).to_numpy(), floor) / c["count"].to_numpy()
        out.append((f"lcdb {oid}/{learner}", c["size_train"].to_numpy(float), err, var, 1 - 1 / max(k, 2)))
        if len(out) == n_curves:
            break
    return out


def cube_curves(path: str, reference: str = "real", group: int = 1):
    """The reference source's curves of a cube: one per seed (its error at each total size n_real + n_synth,
    averaged over the cells of that size) and the mean over seeds; with ``group`` k > 1, one per disjoint group of
    k seeds (the mean over those seeds, as a fit of a k-seed cube sees the curve) instead of one per seed."""
    import scaling
    from analysis.cube import classes_of

    cube = scaling.open_cube(path)
    acc = cube["accuracy"].sel(source=reference).where(cube["status"].sel(source=reference) == 1)
    total = (acc["n_real"] + acc["n_synth"]).broadcast_like(acc)
    df = pd.DataFrame(
        {"n": total.values.ravel(), "seed": acc["seed"].broadcast_like(acc).values.ravel(), "acc": acc.values.ravel()}
    ).dropna()
    n_test, e0 = int(cube.attrs["n_test"]), 1 - 1 / max(len(classes_of(cube)), 2)
    name = cube.attrs.get("dataset", "cube")
    out = []
    seeds = np.sort(df["seed"].unique())
    parts = [
        (f"seeds {chunk[0]}-{chunk[-1]}" if group > 1 else f"seed {chunk[0]}", df[df["seed"].isin(chunk)])
        for chunk in (seeds[i : i + group] for i in range(0, len(seeds) - group + 1, group))
    ]
    for label, part in parts + [("mean over seeds", df)]:
        c = part.groupby("n")["acc"].agg(["mean", "var", "count"]).reset_index()
        err = 1.0 - c["mean"].to_numpy()
        floor = np.clip(err * (1 - err), 1e-4, None) / n_test
        var = np.maximum(c["var"].fillna(0).to_numpy(), floor) / c["count"].to_numpy()
        out.append((f"{name} {reference} {label}", c["n"].to_numpy(float), err, var, e0))
    return out


class Bnsl:
    """A broken power law with one break (Caballero et al. 2023), fitted to one curve."""

    def __init__(self, n, err, w):
        n, err = np.asarray(n, float), np.asarray(err, float)[0]
        sd = 1.0 / np.sqrt(np.asarray(w, float)[0]) / err  # sd of the log error
        best = None
        for log_d in np.log(np.quantile(n, [0.25, 0.5, 0.75])):
            for c0 in (0.1, 0.5):
                p0 = [0.0, np.log(err[0] * n[0] ** c0), c0, 0.3, log_d, 0.0]
                lo = [0.0, -50, 0.0, -2.0, np.log(n.min()) - 3, -3.0]
                hi = [0.999 * err.min(), 50, 3.0, 3.0, np.log(n.max()) + 3, 3.0]
                fit = least_squares(lambda p: (np.log(np.clip(self._law(p, n), 1e-9, None)) - np.log(err)) / sd, p0,
                                    bounds=(lo, hi))  # fmt: skip
                if best is None or fit.cost < best.cost:
                    best = fit
        self.p = best.x

    @staticmethod
    def _law(p, n):
        E, log_b, c0, c1, log_d, log_f = p
        f = np.exp(log_f)
        return E + np.exp(log_b) * n**-c0 * (1 + (n / np.exp(log_d)) ** (1 / f)) ** (-c1 * f)

    def predict(self, n):
        return self._law(self.p, np.asarray(n, float))[None]


def bnsl_crossval(n, err, w, held_out):
    """The broken power law's predictions on the default's rolling-origin splits (``held_out`` masks, stacked)."""
    return np.concatenate([Bnsl(n[~t], err[:, ~t], w[:, ~t]).predict(n[t]) for t in held_out], axis=1)


def methods(n, err, w, e0, bnsl: bool = True):
    """Every method's fitted curve (an object with ``predict``) on one training curve."""
    fits = {law: fit_curve(law, n, err, w, e0=e0) for law in CURVE_LAWS}
    out = dict(fits)
    scores = heldout_curve_scores(CURVE_LAWS, n, err, w, e0=e0)
    out["exp(-SS/2), one split"] = (
        fits["power"] if scores is None else MixedCurve(fits, predictive_weights(scores), scores)
    )
    cv = crossval_curve_predictions(CURVE_LAWS, n, err, w, e0=e0)
    if cv is None:
        out["CV selection"] = fits["power"]
    else:
        preds, obs, wts = cv
        ss = [np.nansum(wts * (obs - preds[k]) ** 2) for k in CURVE_LAWS]
        out["CV selection"] = fits[CURVE_LAWS[int(np.argmin(ss))]]
    if cv is None:
        out["equal weights"] = out["stacking alone"] = out["stacking shrunk 20%"] = fits["power"]
    else:
        out["equal weights"] = MixedCurve(fits, np.full((1, len(CURVE_LAWS)), 1 / len(CURVE_LAWS)), None)
        out["stacking alone"] = MixedCurve(fits, stacking_weights(*cv), None)
        out["stacking shrunk 20%"] = MixedCurve(fits, shrunk_stacking_weights(*cv), None)
    out[DEFAULT] = fit_curve_auto(n, err, w, e0=e0)
    if not bnsl:
        return out
    out["bnsl"] = Bnsl(n, err, w)
    if cv is None:
        out["stacking with bnsl"] = out["stacking shrunk 20%"]
    else:
        preds, obs, wts = cv
        held_out = rolling_origin_splits(n)
        members = {**fits, "bnsl": out["bnsl"]}
        weights = shrunk_stacking_weights({**preds, "bnsl": bnsl_crossval(n, err, w, held_out)}, obs, wts)
        out["stacking with bnsl"] = _Mix(members, weights[0])
    return out


class _Mix:
    """A weighted sum of fitted curves' predictions (weights fixed per curve)."""

    def __init__(self, members, weights):
        self.members, self.weights = members, weights

    def predict(self, n):
        return sum(wt * np.asarray(m.predict(n))[:1] for m, wt in zip(self.members.values(), self.weights))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--curves", type=int, default=300)
    ap.add_argument("--holdout", type=int, default=3)
    ap.add_argument("--seed", type=int, nargs="+", default=[0], help="LCDB samples (one table each)")
    ap.add_argument("--cube", action="append", default=[], help="a cube whose reference curve to add (repeatable)")
    ap.add_argument("--no-lcdb", action="store_true")
    ap.add_argument("--no-bnsl", action="store_true", help="skip the broken power law (most of the wall time)")
    ap.add_argument("--seed-group", type=int, default=1, help="a cube's curves: means over disjoint groups of k seeds")
    args = ap.parse_args()
    t0 = time.perf_counter()
    groups = {}
    if not args.no_lcdb:
        for seed in args.seed:
            groups[f"LCDB sample {seed}"] = lcdb_curves(args.curves, seed)
    for path in args.cube:
        groups[path] = cube_curves(path, group=args.seed_group)
    print(
        f"machine: {os.cpu_count()} cpus; the {args.holdout} largest anchors of each curve held out; "
        f"log-RMSE of the predicted error"
    )
    for label, curves in groups.items():
        sq = {}
        for name, n, err, var, e0 in curves:
            if len(n) < args.holdout + 5:
                continue
            tr = np.arange(len(n)) < len(n) - args.holdout
            w = (1.0 / var)[None]
            with np.errstate(all="ignore"):
                for method, fit in methods(n[tr], err[None, tr], w[:, tr], e0, bnsl=not args.no_bnsl).items():
                    pred = np.asarray(fit.predict(n[~tr]))[0]
                    d = np.log(np.clip(pred, 1e-6, None)) - np.log(err[~tr])
                    sq.setdefault(method, []).append(d)
        print(f"\n{label}: {len(next(iter(sq.values())))} curves")
        print("| method | log-RMSE |\n|---|---|")
        for method, ds in sq.items():
            print(f"| {method} | {np.sqrt(np.mean(np.concatenate(ds) ** 2)):.3f} |")
        for method in (DEFAULT, "stacking with bnsl")[: 1 if args.no_bnsl else 2]:
            best, lo, hi = gap_to_best_law(sq, method)
            print(f"{method} minus the best single law ({best}): 90% interval over curves [{lo:+.3f}, {hi:+.3f}]")
    print(f"\nwall {time.perf_counter() - t0:.0f} s")


def gap_to_best_law(sq: dict, method: str, draws: int = 2000, seed: int = 0):
    """The log-RMSE of ``method`` minus that of the best single law of the package (power, m3, m4), with a 90%
    percentile interval from resampling whole curves: how far the sample's curves pin the difference down."""
    rmse = {k: np.sqrt(np.mean(np.concatenate(v) ** 2)) for k, v in sq.items()}
    best = min(CURVE_LAWS, key=rmse.get)
    per_curve = {k: np.array([np.sum(d**2) for d in sq[k]]) for k in (method, best)}
    counts = np.array([len(d) for d in sq[best]])
    idx = np.random.default_rng(seed).integers(0, len(counts), (draws, len(counts)))
    diff = [np.sqrt(per_curve[method][i].sum() / counts[i].sum()) - np.sqrt(per_curve[best][i].sum() / counts[i].sum())
            for i in idx]  # fmt: skip
    return best, *np.percentile(diff, [5, 95])


if __name__ == "__main__":
    main()
