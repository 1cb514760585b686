"""fit_equivalence speed on a 4 sources x 5 n_real x 6 n_synth x 5 seeds cube: the default fit (point estimate and
leave-one-seed-out fits, jackknife intervals and verdicts) and the 2000 cluster-bootstrap replicates a bootstrap
interval computes on first use, each side by side with a naive loop that calls scipy.optimize.curve_fit per
replicate.

The package's fit does far more per replicate than the naive loop: three reference laws and three equivalence
laws, each also refitted without its held-out points to weigh them, plus the leave-one-seed-out fits.

The naive loop does the same work per replicate (resample seeds, fit the reference power law, invert it
for every synthetic cell, fit the effective law n_eq = k n_synth^a n_real^b per source with curve_fit).
It is run for a subset of replicates and scaled to 2000 (the per-replicate cost is flat).

    python bench/fit_speed.py [--naive-reps 200]
"""

import argparse
import os
import time
import warnings

import numpy as np
from scipy.optimize import curve_fit

import scaling


def naive(cube, n_reps, rng):
    acc = cube["accuracy"]
    seeds = acc.sizes["seed"]
    ref = acc.sel(source="real").stack(cell=("n_real", "n_synth")).transpose("seed", "cell")
    n_tot = (ref["n_real"] + ref["n_synth"]).values.astype(float)
    others = [s for s in cube["source"].values if s != "real"]
    for _ in range(n_reps):
        pick = rng.integers(0, seeds, seeds)
        e = 1 - ref.values[pick].mean(0)
        (E, B, b), _ = curve_fit(
            lambda n, E, B, b: E + B * n**-b,
            n_tot,
            e,
            p0=(0.05, 1.0, 0.5),
            bounds=([0, 0, 0.02], [1, np.inf, 3]),
            maxfev=5000,
        )
        for s in others:
            st = (
                acc.sel(source=s)
                .sel(n_synth=acc["n_synth"] > 0)
                .stack(cell=("n_real", "n_synth"))
                .transpose("seed", "cell")
            )
            es = 1 - st.values[pick].mean(0)
            with np.errstate(invalid="ignore"):
                neq = ((es - E) / B) ** (-1 / b) - st["n_real"].values
            ok = np.isfinite(neq) & (neq > 0)
            X = (st["n_synth"].values[ok].astype(float), st["n_real"].values[ok].astype(float))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                curve_fit(lambda x, k, a, c: k * x[0] ** a * x[1] ** c, X, neq[ok], p0=(0.3, 1.0, 0.0), maxfev=5000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--naive-reps", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()
    sources = {
        "closed_set": {"exchange_rate": 4.0},
        "open_set": {"wang": [2.0, 3.0, 1000.0]},
        "retrieval": {"exchange_rate": 2.0},
    }
    cube = scaling.simulate_cube(
        n_real=(50, 100, 200, 400, 800), n_synth=(0, 50, 100, 200, 400, 800), seeds=5, sources=sources, random_state=0
    )
    scaling.fit_equivalence(cube, None, n_boot=50)  # warm imports
    seeds = cube.sizes["seed"]
    t0 = time.perf_counter()
    fits = scaling.fit_equivalence(cube, None, n_boot=args.n_boot)
    fits.answer()  # the default answer: jackknife intervals, verdicts
    default = time.perf_counter() - t0
    t0 = time.perf_counter()
    for res in fits.values():  # first use of a bootstrap interval computes the replicates (shared by the sources)
        res.exchange_rate(200, 400, ci_method="percentile")
    boot = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive(cube, args.naive_reps, np.random.default_rng(0))
    per_rep = (time.perf_counter() - t0) / args.naive_reps
    print(f"machine: {os.cpu_count()} cpus; cube 4 sources x 5 n_real x 6 n_synth x 5 seeds; {args.n_boot} replicates")
    print(f"{'what':<62} {'seconds':>8} {'naive loop':>10} {'speed-up':>8}")
    rows = [
        ("default fit, 3 sources (point + leave-one-seed-out fits)", default, per_rep * (seeds + 1), 1.0),
        (f"+ bootstrap on first use ({args.n_boot} replicates)", boot, per_rep * args.n_boot, 5.0),
        ("default + bootstrap", default + boot, per_rep * (seeds + 1 + args.n_boot), 5.0),
    ]
    for what, ours, naive_s, target in rows:
        print(f"{what:<62} {ours:8.2f} {naive_s:10.2f} {naive_s / ours:7.1f}x   (target <= {target:g} s)")
    print(
        "naive loop: resample seeds, scipy curve_fit of the power law, invert, curve_fit of the effective law per "
        f"source ({per_rep * 1000:.0f} ms a replicate, timed on {args.naive_reps})"
    )
    print("rho(200, 400):", {k: round(float(v.exchange_rate(200, 400).estimate), 3) for k, v in fits.items()})


if __name__ == "__main__":
    main()
