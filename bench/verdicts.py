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
n_synth = 2 x base). For every truth x seeds x test size the first table gives the share of each verdict under the
package's rule (the gain test of ``result.gain()``: the weighted mean gain of the base's n_synth cells against a
base that is 35% the seed-paired base cell and 65% the reference curve, each base's own leave-one-seed-out
jackknife t interval; the rate printed under the verdict), under the single-cell rule (a paired t test at the
queried cell beside the law's rate interval) and, with ``--base-cell-only``, under the package rule against the
base cell alone; and the share of contradictions: *no measurable gain* or *hurts* beside a finite rate interval,
or *estimated* beside an interval wider than the verdict allows. The second table gives, at every base size, the
share of cubes whose gain test claims help (lower bound above 0) and harm (upper bound below 0): for a worthless
source each is a false claim, at most 2.5% for a two-sided 95% test. ``--planted simulate_cube`` draws the
cubes with ``scaling.simulate_cube`` instead (seed effects shared by source and reference; ``--generator-sd``:
a per-generator effect on n_eq). Rows run in parallel processes.

    python bench/verdicts.py [--cubes 300] [--seeds 3 5 10] [--n-test 450 1500] [--jobs 2] [--offset 0]
        [--planted bench|simulate_cube] [--generator-sd 0] [--base-cell-only]
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


def draw(planted: str, truth: str, seeds: int, n_test: int, rng, offset: float, generator_sd: float):
    """One cube of ``truth``: drawn here (``bench``: seed effects independent per source) or by
    ``scaling.simulate_cube`` (seed effects shared by source and reference, optional per-generator effects)."""
    if planted == "bench":
        return draw_cube(truth, seeds, n_test, rng, offset=offset)
    import scaling

    rate = {"worthless": 1e9, "strong": 4.0, "weak": 20.0}[truth]
    spec = {"exchange_rate": rate, **({"generator_sd": generator_sd} if generator_sd else {})}
    return scaling.simulate_cube(
        n_real=N_REAL,
        n_synth=N_SYNTH,
        seeds=seeds,
        sources={"gen": spec},
        n_test=n_test,
        C=offset,
        random_state=int(rng.integers(2**31)),
    )


def run_row(
    truth: str,
    seeds: int,
    n_test: int,
    cubes: int,
    offset: float,
    start: int,
    planted: str = "bench",
    generator_sd: float = 0.0,
    with_base_cell: bool = False,
):
    import warnings

    import scaling

    warnings.simplefilter("ignore")
    rng = np.random.default_rng([start, seeds, n_test, TRUTHS.index(truth)])
    ours = dict.fromkeys(VERDICTS, 0)
    cell = dict.fromkeys(VERDICTS, 0)
    base = dict.fromkeys(VERDICTS, 0)
    bad_ours = bad_cell = bad_base = 0
    per_base = np.zeros((len(N_REAL), 2))  # claims of help / of harm by the gain test at every base size
    t0 = time.perf_counter()
    for _ in range(cubes):
        cube = draw(planted, truth, seeds, n_test, rng, offset, generator_sd)
        fit = scaling.fit_equivalence(cube, "gen")
        q = fit.exchange_rate(*QUERY)
        v = str(q["verdict"].values)
        ours[v] += 1
        bad_ours += contradicts(v, float(q.lower), float(q.upper))
        g = fit["gen"].gain()
        per_base += np.c_[g["lower"].values > 0, g["upper"].values < 0]
        v1, lo1, hi1 = single_cell_verdict(cube, fit)
        cell[v1] += 1
        bad_cell += contradicts(v1, lo1, hi1)
        if with_base_cell:
            q = base_cell_only(cube)
            v2 = str(q["verdict"].values)
            base[v2] += 1
            bad_base += contradicts(v2, float(q.lower), float(q.upper))
    counts = [(ours, bad_ours), (cell, bad_cell)] + ([(base, bad_base)] if with_base_cell else [])
    return truth, seeds, n_test, cubes, counts, per_base / cubes, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cubes", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 10])
    ap.add_argument("--n-test", type=int, nargs="+", default=[450, 1500])
    ap.add_argument("--truths", nargs="+", default=list(TRUTHS), choices=TRUTHS)
    ap.add_argument("--offset", type=float, default=0.0, help="C in e(n) = 0.03 + 2 (n + C)^-0.5")
    ap.add_argument("--start", type=int, default=0, help="random stream of the cubes")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--planted",
        choices=("bench", "simulate_cube"),
        default="bench",
        help="who draws the cubes: this script (seed effects independent per source) or scaling.simulate_cube "
        "(seed effects shared by source and reference; no harmful truth)",
    )
    ap.add_argument("--generator-sd", type=float, default=0.0, help="simulate_cube: per-generator effect on n_eq")
    ap.add_argument("--base-cell-only", action="store_true", help="also the rule against the base cell alone")
    args = ap.parse_args()
    truths = [t for t in args.truths if not (args.planted == "simulate_cube" and t == "harmful")]
    rows = [(t, s, n) for t in truths for s in args.seeds for n in args.n_test]
    t0 = time.perf_counter()
    fixed = (args.cubes, args.offset, args.start, args.planted, args.generator_sd, args.base_cell_only)
    with ProcessPoolExecutor(args.jobs) as pool:
        out = list(pool.map(run_row, *zip(*rows), *([x] * len(rows) for x in fixed)))
    print(
        f"machine: {os.cpu_count()} cpus; {args.cubes} cubes per row; planted by {args.planted}"
        + (f" (generator_sd {args.generator_sd:g})" if args.generator_sd else "")
        + f"; query exchange_rate{QUERY}; offset C = {args.offset:g}; wall {time.perf_counter() - t0:.0f} s"
    )
    short = {"estimated": "est", "not identified": "n.id", "no measurable gain": "no gain", "hurts": "hurts"}
    head = " | ".join(f"{short[v]}" for v in VERDICTS)
    rules = ("package", "single cell") + (("base cell only",) if args.base_cell_only else ())
    print("| truth | seeds | n_test | " + " | ".join(f"{r}: {head} | contr." for r in rules) + " |")
    print("|---|---|---|" + "---|" * (len(rules) * (len(VERDICTS) + 1)))
    for truth, seeds, n_test, cubes, counts, _, _ in out:
        cols = [" | ".join(f"{c[v] / cubes:.3f}" for v in VERDICTS) + f" | {bad}/{cubes}" for c, bad in counts]
        print(f"| {truth} | {seeds} | {n_test} | " + " | ".join(cols) + " |")
    print()
    print("Gain test at every base size (package): share of cubes claiming help (lower bound > 0) / harm (upper < 0)")
    print("| truth | seeds | n_test | " + " | ".join(f"n_real {r}" for r in N_REAL) + " | most per side |")
    print("|---|---|---|" + "---|" * (len(N_REAL) + 1))
    for truth, seeds, n_test, cubes, _, per_base, _ in out:
        cols = [f"{h:.3f} / {d:.3f}" for h, d in per_base]
        worst = per_base.max(axis=0)
        se = np.sqrt(0.025 * 0.975 / cubes)
        print(
            f"| {truth} | {seeds} | {n_test} | "
            + " | ".join(cols)
            + f" | {worst[0]:.3f} / {worst[1]:.3f} (2.5% +- {se:.3f}) |"
        )


if __name__ == "__main__":
    main()
