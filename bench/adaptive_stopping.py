"""Honest stopping: compute and coverage of the adaptive loop against the smallest full grid reaching the width.

Planted truths (``simulate_cube``, known exchange rate at the target cell): a constant rate and a saturating
law. For each truth:

1. the *full grid*: every source of a digits-like sweep (real + 3 synthetic sources) at a fixed seed count S;
   the smallest S whose median bound ratio reaches the width (30 simulated sweeps per S) is the baseline;
2. the *adaptive loop* (``scaling.planning.sequential_stop``): only the cells the target needs (the reference
   and the target source), 3 seeds, then one more seed per round until the width is reached (at most 20):
   ``--runs`` independent loops.

Reported: compute (trials) of the adaptive loop relative to the baseline, whether it reached the width, and the
coverage of its final 95% interval (stopping when an interval happens to be narrow can bias it), next to the
coverage of the fixed-S interval.

    python bench/adaptive_stopping.py [--runs 200] [--width 1.25] [--workers 2] [--confirm 2]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from scaling.planning import cells_per_seed, interval_at, sequential_stop
from scaling.simulate import planted_neq, simulate_cube

GRID = {"n_real": (50, 100, 200, 400), "n_synth": (0, 100, 200, 400, 800)}
TARGET = (100, 400)
TRUTHS = {
    "constant rate 4": {"closed_set": {"exchange_rate": 4.0}},
    "saturating rho0 3, R* 2": {"closed_set": {"saturating": [3.0, 2.0]}},
}
NOISE = {"seed_sd": 0.08, "n_test": 2000}
FULL_SOURCES = 4  # real + closed_set + open_set + retrieval, as the digits default


def true_rate(spec: dict) -> float:
    r, s = TARGET
    return float(s / planted_neq(spec, np.array([r]), np.array([s]))[0])


def _fixed(args) -> tuple[float, bool]:
    sources, s, i, width = args
    cube = simulate_cube(seeds=s, sources=sources, random_state=10_000 + i, **NOISE, **GRID)
    out = interval_at(cube, "closed_set", *TARGET, random_state=i)
    return out["ratio"], out["lower"] <= true_rate(sources["closed_set"]) <= out["upper"]


def _adaptive(args) -> dict:
    sources, i, width, max_seeds, confirm = args
    cube = simulate_cube(seeds=max_seeds, sources=sources, random_state=50_000 + i, **NOISE, **GRID)
    out = sequential_stop(cube, "closed_set", *TARGET, width, start=3, step=1, confirm=confirm, random_state=i)
    out["covered"] = out["lower"] <= true_rate(sources["closed_set"]) <= out["upper"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--width", type=float, default=1.25)
    ap.add_argument("--sims", type=int, default=30, help="simulated full grids per seed count")
    ap.add_argument("--max-seeds", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--confirm", type=int, default=2, help="consecutive rounds at the width before stopping")
    ap.add_argument("--skip-full", action="store_true", help="take the full-grid baseline from --full-seeds instead")
    ap.add_argument("--full-seeds", type=int, default=8)
    args = ap.parse_args()
    per_seed_full = cells_per_seed(len(GRID["n_real"]), len(GRID["n_synth"]), FULL_SOURCES)
    per_seed_adaptive = cells_per_seed(len(GRID["n_real"]), len(GRID["n_synth"]), 2)
    print(
        f"target {TARGET}, width (bound ratio) <= {args.width}, stop after {args.confirm} round(s) at the width; "
        f"trials per seed: full grid {per_seed_full}, "
        f"adaptive (reference + target source) {per_seed_adaptive}"
    )
    with ProcessPoolExecutor(args.workers) as pool:
        for name, sources in TRUTHS.items():
            t0 = time.perf_counter()
            base = (args.full_seeds, float("nan"), float("nan")) if args.skip_full else None
            for s in [] if args.skip_full else range(4, args.max_seeds + 1, 2):
                res = list(pool.map(_fixed, [(sources, s, i, args.width) for i in range(args.sims)]))
                med = float(np.median([r for r, _ in res]))
                if med <= args.width:
                    base = (s, med, float(np.mean([c for _, c in res])))
                    break
            runs = list(
                pool.map(_adaptive, [(sources, i, args.width, args.max_seeds, args.confirm) for i in range(args.runs)])
            )
            used = np.array([r["seeds"] for r in runs])
            reached = np.mean([r["reached"] for r in runs])
            cover = np.mean([r["covered"] for r in runs])
            print(f"\n{name} (true rate {true_rate(sources['closed_set']):.3g}), {time.perf_counter() - t0:.0f} s")
            if base is None:
                print(f"  no full grid up to {args.max_seeds} seeds reaches the width")
                continue
            s_full, med, cov_full = base
            ratio = used.mean() * per_seed_adaptive / (s_full * per_seed_full)
            print(
                f"  full grid: {s_full} seeds ({s_full * per_seed_full} trials), median ratio {med:.3f}, "
                f"coverage {cov_full:.2f} ({args.sims} sweeps)"
            )
            print(
                f"  adaptive: seeds used mean {used.mean():.1f} (median {np.median(used):.0f}, max {used.max()}), "
                f"{used.mean() * per_seed_adaptive:.0f} trials on average = {ratio:.2f} of the full grid; "
                f"reached the width in {reached:.0%}; final-interval coverage {cover:.3f} ({args.runs} runs)"
            )


if __name__ == "__main__":
    main()
