"""Error rates of the verdict on planted truths the fit does not assume, beside the single-cell rule.

Cubes are drawn here, not by ``scaling.simulate_cube``: a saturating power-law reference curve
``e(n) = 0.03 + 2 (n + C)^-0.5``, binomial test noise, and multiplicative seed effects on the error drawn
**independently** for the reference (base and real cells) and for the source, per (seed, n_real) and shared by
that source's n_synth cells, plus a smaller effect per cell (so pairing by seed removes little). Truths:

- ``worthless``: the added images are worth nothing (n_eq = 0);
- ``strong``: 4 synthetic images per real image;
- ``weak``: 20 synthetic images per real image;
- ``harmful``: the added images cost real images, up to 30% of the base (n_eq = -0.3 n_real n_synth / (n_synth + n_real)).

Each cube is fitted with the package defaults and judged at ``exchange_rate(100, 200)`` (the second base size,
n_synth = 2 x base). For every truth x seeds x test size the table gives the share of each verdict under the
package's rule (gain test pooled over the base's n_synth cells against a base that is 35% the seed-paired base
cell and 65% the reference curve, rate printed under the verdict), under the same rule with the base cell alone,
and under the single-cell rule (a paired t test at the queried cell beside the law's rate interval), and the share of
contradictions: *no measurable gain* or *hurts* beside a finite rate interval, or *estimated* beside an interval
wider than the verdict allows. Rows run in parallel processes.

    python bench/verdicts.py [--cubes 100] [--seeds 3 5 10] [--n-test 450 1500] [--jobs 2] [--offset 0]
"""

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

N_REAL = (50, 100, 200, 400)
N_SYNTH = (0, 50, 100, 200, 400, 800)
QUERY = (100, 200)
TRUTHS = ("worthless", "strong", "weak", "harmful")
VERDICTS = ("estimated", "not identified", "no measurable gain", "hurts")


def planted_neq(truth: str, n_real, n_synth):
    if truth == "worthless":
        return np.zeros_like(n_synth, dtype=float)
    if truth == "strong":
        return n_synth / 4.0
    if truth == "weak":
        return n_synth / 20.0
    if truth == "harmful":
        return -0.3 * n_real * n_synth / (n_synth + n_real)
    raise ValueError(f"truth: unknown {truth!r}")


def draw_cube(
    truth: str, seeds: int, n_test: int, rng, *, seed_sd: float = 0.04, cell_sd: float = 0.02, offset: float = 0.0
):
    """One planted cube (sources real and gen) with independent seed effects per source."""
    from analysis.cube import empty_cube, fill_planted

    cube = empty_cube(
        ["real", "gen"],
        list(N_REAL),
        list(N_SYNTH),
        list(range(seeds)),
        dataset="planted",
        n_test=n_test,
        classes=[str(c) for c in range(10)],
    )
    R, S = np.meshgrid(np.array(N_REAL, float), np.array(N_SYNTH, float), indexing="ij")

    def error(n):
        return 0.03 + 2.0 * (n + offset) ** -0.5

    acc = np.empty(cube["accuracy"].shape)  # (source, n_real, n_synth, seed)
    for s in range(seeds):
        ref_effect = rng.normal(0, seed_sd, size=(len(N_REAL), 1))  # the base subset's luck, reference side
        gen_effect = rng.normal(0, seed_sd, size=(len(N_REAL), 1))  # the source's own luck, independent of it
        for i, (neq, effect) in enumerate(((S, ref_effect), (planted_neq(truth, R, S), gen_effect))):
            e = error(np.maximum(R + neq, 1.0)) * np.exp(effect + rng.normal(0, cell_sd, size=R.shape))
            acc[i, :, :, s] = rng.binomial(n_test, 1 - np.clip(e, 1e-6, 1 - 1e-6)) / n_test
        acc[1, :, 0, s] = acc[0, :, 0, s]  # n_synth = 0 is one training run shared by both sources
    fill_planted(cube, acc)
    return cube


def single_cell_verdict(cube, fit, ci: float = 0.95) -> tuple[str, float, float]:
    """The single-cell rule: a paired t test over seeds at the queried cell, beside the law's rate interval."""
    from scipy import stats

    from analysis.verdict import verdicts

    r, s = QUERY
    acc = cube["accuracy"]
    d = (acc.sel(source="gen", n_real=r, n_synth=s) - acc.sel(source="real", n_real=r, n_synth=0)).values
    half = stats.t.ppf(1 - (1 - ci) / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    eq = fit.real_equivalent(r, s)
    up, low = float(eq.upper), float(eq.lower)
    lo = s / up if up > 0 else np.inf
    hi = s / low if low >= 0.01 else np.inf
    return str(verdicts(d.mean() - half, d.mean() + half, lo, hi)), lo, hi


def base_cell_only(cube):
    """The package rule with the gain measured against the seed-paired base cell alone (no reference curve)."""
    import scaling
    from analysis import equivalence

    share = equivalence.BASE_CELL_SHARE
    equivalence.BASE_CELL_SHARE = 1.0
    try:
        return scaling.fit_equivalence(cube, "gen").exchange_rate(*QUERY)
    finally:
        equivalence.BASE_CELL_SHARE = share


def contradicts(verdict: str, lower: float, upper: float) -> bool:
    from analysis.verdict import ESTIMATED_MAX_RATIO

    finite = np.isfinite(lower) and np.isfinite(upper) and lower > 0
    if verdict in ("no measurable gain", "hurts"):
        return bool(finite)
    if verdict == "estimated":
        return not (finite and upper / lower <= ESTIMATED_MAX_RATIO)
    return False


def run_row(truth: str, seeds: int, n_test: int, cubes: int, offset: float, start: int):
    import warnings

    import scaling

    warnings.simplefilter("ignore")
    rng = np.random.default_rng([start, seeds, n_test, TRUTHS.index(truth)])
    ours = dict.fromkeys(VERDICTS, 0)
    cell = dict.fromkeys(VERDICTS, 0)
    base = dict.fromkeys(VERDICTS, 0)
    bad_ours = bad_cell = bad_base = 0
    t0 = time.perf_counter()
    for _ in range(cubes):
        cube = draw_cube(truth, seeds, n_test, rng, offset=offset)
        fit = scaling.fit_equivalence(cube, "gen")
        q = fit.exchange_rate(*QUERY)
        v = str(q["verdict"].values)
        ours[v] += 1
        bad_ours += contradicts(v, float(q.lower), float(q.upper))
        v1, lo1, hi1 = single_cell_verdict(cube, fit)
        cell[v1] += 1
        bad_cell += contradicts(v1, lo1, hi1)
        q = base_cell_only(cube)
        v2 = str(q["verdict"].values)
        base[v2] += 1
        bad_base += contradicts(v2, float(q.lower), float(q.upper))
    return truth, seeds, n_test, cubes, (ours, bad_ours), (base, bad_base), (cell, bad_cell), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cubes", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 10])
    ap.add_argument("--n-test", type=int, nargs="+", default=[450, 1500])
    ap.add_argument("--truths", nargs="+", default=list(TRUTHS), choices=TRUTHS)
    ap.add_argument("--offset", type=float, default=0.0, help="C in e(n) = 0.03 + 2 (n + C)^-0.5")
    ap.add_argument("--start", type=int, default=0, help="random stream of the cubes")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    rows = [(t, s, n) for t in args.truths for s in args.seeds for n in args.n_test]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        out = list(pool.map(run_row, *zip(*rows), *([x] * len(rows) for x in (args.cubes, args.offset, args.start))))
    print(
        f"machine: {os.cpu_count()} cpus; {args.cubes} cubes per row; query exchange_rate{QUERY}; "
        f"offset C = {args.offset:g}; wall {time.perf_counter() - t0:.0f} s"
    )
    short = {"estimated": "est", "not identified": "n.id", "no measurable gain": "no gain", "hurts": "hurts"}
    head = " | ".join(f"{short[v]}" for v in VERDICTS)
    rules = ("package", "base cell only", "single cell")
    print("| truth | seeds | n_test | " + " | ".join(f"{r}: {head} | contr." for r in rules) + " |")
    print("|---|---|---|" + "---|" * (len(rules) * (len(VERDICTS) + 1)))
    for truth, seeds, n_test, cubes, *counts, _ in out:
        cols = [" | ".join(f"{c[v] / cubes:.2f}" for v in VERDICTS) + f" | {bad}/{cubes}" for c, bad in counts]
        print(f"| {truth} | {seeds} | {n_test} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
