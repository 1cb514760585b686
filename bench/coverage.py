"""Coverage of the exchange rate's 95% interval over many simulated cubes.

For each cube a constant exchange rate rho = 4 is planted; we record whether the interval of
``exchange_rate(n_real, n_synth)`` covers 4 at a central and an edge cell, for several seed counts.

    python bench/coverage.py [--cubes 200] [--n-boot 1000] [--seeds 5 10]
"""

import argparse
import time

import numpy as np

import scaling


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cubes", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--ci-methods", nargs="+", default=["expanded", "jackknife"],
                    help="interval methods to compare (each is a separate fit of the same cubes)")
    args = ap.parse_args()
    queries = [(200, 400), (50, 100), (800, 800)]
    print(f"{args.cubes} cubes per row, {args.n_boot} replicates, planted rho = 4, nominal 95%")
    print(f"{'method':>10} {'seeds':>5} " + " ".join(f"{'cover@' + str(q):>16}" for q in queries)
          + f" {'median width':>13} {'sec':>6}")
    for method, seeds in [(m, s) for s in args.seeds for m in args.ci_methods]:
        t0 = time.perf_counter()
        hits = np.zeros(len(queries))
        widths = []
        for r in range(args.cubes):
            cube = scaling.simulate_cube(seeds=seeds, sources={"closed_set": {"exchange_rate": 4.0}},
                                         random_state=10_000 + r)
            fit = scaling.fit_equivalence(cube, "closed_set", n_boot=args.n_boot, random_state=r, ci_method=method)
            for i, (nr, ns) in enumerate(queries):
                rho = fit.exchange_rate(nr, ns)
                hits[i] += float(rho.lower) <= 4.0 <= float(rho.upper)
                if i == 0:
                    widths.append(float(rho.upper - rho.lower))
        cov = hits / args.cubes
        se = np.sqrt(cov * (1 - cov) / args.cubes)
        cells = " ".join(f"{c:7.3f} +- {s:5.3f}" for c, s in zip(cov, se))
        print(f"{method:>10} {seeds:>5} {cells} {np.median(widths):13.3f} {time.perf_counter() - t0:6.0f}", flush=True)


if __name__ == "__main__":
    main()
