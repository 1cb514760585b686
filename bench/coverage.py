"""Coverage of the exchange rate's 95% interval under planted truths — including truths the fit does not assume.

Each scenario plants a reference curve, a source and noise; for every cube we fit with the package defaults
(law and reference law chosen inside every replicate, pooled variance, jackknife-t) and record whether the
interval of ``exchange_rate(n_real, n_synth)`` covers the planted rate at two query cells, the interval's
width (upper / lower), the verdict, and whether the fit warned that a law misfits (the warning meant for where coverage fails). Rows run in
parallel processes.

    python bench/coverage.py [--cubes 200] [--seeds 3 5 10] [--scenarios constant wang ...] [--jobs 2]
    python bench/coverage.py --item-sd 1.0 --n-test 450 --test-repeats 1 32   # with test images resampled too

``--item-sd`` records which test images every cell got right (shared item difficulty), so the fit resamples the
test set jointly with the seeds (as on a real cube); ``--test-repeats`` compares numbers of random test-image
groupings behind the test-set part of the interval (analysis.options.TEST_REPEATS).
"""

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

SCENARIOS = {
    # name: (simulate_cube kwargs, source spec, description)
    "constant": ({}, {"exchange_rate": 4.0}, "rho = 4 everywhere (the effective law with alpha = 1, beta = 0)"),
    "wang": ({}, {"wang": [2.0, 3.0, 1000.0]}, "Wang et al.'s law, c1 = 2, c2 = 3, k = 1000"),
    "saturating": ({}, {"saturating": [3.0, 1.0]}, "saturating: rho0 = 3, at most R* = 1 real image per base image"),
    "offset_curve": (
        {"E": 0.03, "B": 60.0, "beta": 0.8, "C": 300.0},
        {"exchange_rate": 3.0},
        "reference e(n) = 0.03 + 60 (n + 300)^-0.8 (flattens at small n), rho = 3",
    ),
    "generator_effect": (
        {},
        {"exchange_rate": 4.0, "generator_sd": 0.3},
        "rho = 4 with a generator random effect exp(N(0, 0.3)) per (n_real, seed)",
    ),
    "hetero_seed": (
        {"hetero": 1.0, "seed_sd": 0.08},
        {"exchange_rate": 4.0},
        "rho = 4; seed effects shared by all sources, sd proportional to the error",
    ),
}
QUERIES = [(200, 400), (50, 800)]


def truth_rate(spec, n_real, n_synth):
    from scaling.simulate import planted_neq

    spec = {k: v for k, v in spec.items() if k != "generator_sd"}
    return n_synth / float(planted_neq(spec, np.array([n_real]), np.array([n_synth]))[0])


def run_row(
    scenario: str,
    seeds: int,
    cubes: int,
    n_boot: int,
    variance: str,
    offset: int,
    item_sd: float | None = None,
    n_test: int = 2000,
    test_repeats: int | None = None,
):
    import warnings

    import analysis.options
    import scaling

    warnings.simplefilter("ignore")
    if test_repeats is not None:
        analysis.options.TEST_REPEATS = test_repeats
    kwargs, spec, _ = SCENARIOS[scenario]
    hits = np.zeros(len(QUERIES))
    ratios, warned, verdicts = [], 0, {}
    t0 = time.perf_counter()
    for r in range(cubes):
        cube = scaling.simulate_cube(
            seeds=seeds, sources={"gen": spec}, random_state=offset + r, item_sd=item_sd, **{"n_test": n_test, **kwargs}
        )
        fit = scaling.fit_equivalence(cube, "gen", n_boot=n_boot, random_state=r, variance=variance)
        for i, (nr, ns) in enumerate(QUERIES):
            q = fit.exchange_rate(nr, ns)
            hits[i] += float(q.lower) <= truth_rate(spec, nr, ns) <= float(q.upper)
            if i == 0:
                ratios.append(float(q.upper) / float(q.lower))
                v = str(q["verdict"].values)
                verdicts[v] = verdicts.get(v, 0) + 1
        warned += any("misfits" in w for w in fit.warnings)
    return {
        "scenario": scenario,
        "seeds": seeds,
        "variance": variance,
        "repeats": test_repeats,
        "cover": hits / cubes,
        "ratio": float(np.median(ratios)),
        "warned": warned / cubes,
        "verdicts": verdicts,
        "seconds": time.perf_counter() - t0,
        "cubes": cubes,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cubes", type=int, default=200)
    ap.add_argument(
        "--n-boot",
        type=int,
        default=100,
        help="bootstrap replicates (the default jackknife-t "
        "interval does not use them: they are computed only for a bootstrap method)",
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 10])
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    ap.add_argument("--variance", nargs="+", default=["pooled"], help="pooled and/or cell")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--item-sd", type=float, default=None, help="record test items (shared difficulty sd)")
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument(
        "--test-repeats",
        type=int,
        nargs="+",
        default=[None],
        help="random test-image groupings behind the interval's test-set part (with --item-sd)",
    )
    args = ap.parse_args()
    print(
        f"{args.cubes} cubes per row, default fit (auto laws, jackknife-t, nominal 95%); "
        f"query cells {QUERIES}; width = median upper/lower at {QUERIES[0]}"
    )
    for name in args.scenarios:
        print(f"  {name}: {SCENARIOS[name][2]}")
    rows = [(s, k, v, t) for s in args.scenarios for k in args.seeds for v in args.variance for t in args.test_repeats]
    print(
        f"{'scenario':>17} {'seeds':>5} {'variance':>8} {'repeats':>7} "
        + " ".join(f"{'cover@' + str(q):>17}" for q in QUERIES)
        + f" {'width':>7} {'warned':>7}  verdicts at {QUERIES[0]}",
        flush=True,
    )
    with ProcessPoolExecutor(args.jobs) as pool:
        # rows differing only in --test-repeats share their cubes (a paired comparison)
        offsets = {key: 10_000 + 1000 * i for i, key in enumerate(dict.fromkeys((s, k, v) for s, k, v, _ in rows))}
        futures = [
            pool.submit(run_row, s, k, args.cubes, args.n_boot, v, offsets[(s, k, v)], args.item_sd, args.n_test, t)
            for s, k, v, t in rows
        ]
        for f in futures:
            r = f.result()
            se = np.sqrt(r["cover"] * (1 - r["cover"]) / r["cubes"])
            cells = " ".join(f"{c:8.3f} +- {s:5.3f}" for c, s in zip(r["cover"], se))
            verdicts = ", ".join(f"{k} {v}" for k, v in sorted(r["verdicts"].items()))
            print(
                f"{r['scenario']:>17} {r['seeds']:>5} {r['variance']:>8} {str(r['repeats'] or '-'):>7} {cells} {r['ratio']:7.2f} "
                f"{r['warned']:7.1%}  {verdicts}   ({r['seconds']:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
