"""What a sweep will run, before it runs: trials, pools, generator trainings, and a time estimate."""

from __future__ import annotations

import os
import sys

from runners.pools import pool_key
from runners.sources import generator_trainings

# measured on a 2-core CPU (bench/RESULTS.md): a digits trial costs ~0.017 s of slot time per classifier
# step (training plus data and Ray overhead), a tiny generator ~0.05 s per step
DIGITS_SECONDS_PER_STEP = {"trial": 0.017, "generator": 0.05}


def source_jobs(cfg) -> list[dict]:
    """One job per distinct pool (content hash), in an order that puts the slow generators first."""
    jobs, seen = [], set()
    if max(cfg.n_synth) == 0:
        return jobs
    for source in sorted(cfg.sources, key=lambda s: s == "real"):
        for r in cfg.pool_bases():
            for seed in cfg.seeds:
                key = pool_key(cfg, source, r, seed)
                if key not in seen:
                    seen.add(key)
                    jobs.append({"source": source, "n_real": r, "seed": seed, "key": key})
    return jobs


def plan(cfg) -> dict:
    cells = cfg.cells()
    return {"trials": len(cells), "sources": list(cfg.sources), "source_jobs": len(source_jobs(cfg)),
            "generator_jobs": generator_trainings(cfg),
            "grid": f"{len(cfg.sources)} sources x {len(cfg.n_real)} n_real x {len(cfg.n_synth)} n_synth x "
                    f"{len(cfg.seeds)} seeds (n_synth=0 shared across sources)"}


def _generator_steps(cfg) -> int:
    return max([cfg.options(s)["generator"]["train_steps"] for s in ("closed_set", "open_set")
                if s in cfg.sources and "generator" in cfg.options(s)] or [0])


def print_plan(cfg, out=None) -> dict:
    out = out or sys.stdout
    p = plan(cfg)
    slots = max(1, int((cfg.resources.get("num_cpus") or os.cpu_count() or 1) // cfg.resources.get("cpus_per_trial", 1)))
    print(f"sweep '{cfg.name}' on {cfg.dataset['name']}: {p['grid']}", file=out)
    if cfg.replace is not None:
        print(f"  protocol: replace — budgets {cfg.replace['budgets']}, replaced {cfg.replace['replaced']}: "
              f"{len(cfg.design)} of the grid's (n_real, n_synth) cells run", file=out)
    print(f"  trials: {p['trials']}   source jobs (pools): {p['source_jobs']}   generator trainings: "
          f"{p['generator_jobs']}   parallel slots: {slots}", file=out)
    if cfg.multi_protocol or cfg.budgets != ["steps"]:
        print(f"  protocol settings: {', '.join(cfg.protocol_labels())}", file=out)
    if cfg.dataset["name"] == "digits":
        trial_steps = sum(cfg.train_steps(c.get("budget", cfg.budgets[0]), c["n_real"] + c["n_synth"])
                          for c in cfg.cells())
        per_gen = DIGITS_SECONDS_PER_STEP["generator"] * _generator_steps(cfg)
        total = DIGITS_SECONDS_PER_STEP["trial"] * trial_steps + per_gen * p["generator_jobs"]
        print(f"  estimate: ~{total / slots / 60:.1f} min on this machine (~{total / max(p['trials'], 1):.1f} s per "
              f"trial on average, ~{per_gen:.0f} s per generator)", file=out)
    else:
        print("  estimate: depends on the accelerator; budget GPU time per trial x trials / slots", file=out)
    print(f"  output: {cfg.run_dir / 'results.nc'}", file=out)
    return p
