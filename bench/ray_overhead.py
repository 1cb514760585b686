"""Per-trial scheduling overhead of the sweep's Tuner vs Ray Tune's default setup, on trivial trials.

Both run N trials that report one number and return, on a local Ray with 2 CPUs, each in a fresh
subprocess (the sweep sets Tune environment switches that must not leak into the baseline). The
overhead per trial is the wall time of ``Tuner.fit()`` divided by N. Goal: <= 0.1 s per trial.

    python bench/ray_overhead.py [--trials 200] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time


def trivial(config):
    from ray import tune

    tune.report({"accuracy": 0.5 + 0.0 * config["i"]})


def run(mode: str, trials: int, cpus: int) -> float:
    import os

    if mode == "sweep":  # exactly what runners.sweep does before building its Tuner
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    storage = tempfile.mkdtemp()
    space = {"i": tune.grid_search(list(range(trials)))}
    if mode == "sweep":
        from pathlib import Path

        from runners.sweep import build_tuner

        tuner = build_tuner(
            trivial,
            space,
            resources={"cpu": 1, "gpu": 0},
            name="bench",
            storage=Path(storage),
            max_failures=2,
            callbacks=[],
        )
    else:  # Ray Tune's defaults: new actor per trial, CSV/JSON/TensorBoard loggers, console reporter
        tuner = tune.Tuner(trivial, param_space=space, run_config=tune.RunConfig(storage_path=storage, name="bench"))
    t0 = time.perf_counter()
    tuner.fit()
    wall = time.perf_counter() - t0
    ray.shutdown()
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--mode", choices=["sweep", "default"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps({"wall": run(args.mode, args.trials, args.cpus)}))
        return
    walls = {}
    for mode in ("default", "sweep"):
        out = subprocess.run(
            [sys.executable, __file__, "--mode", mode, "--trials", str(args.trials), "--cpus", str(args.cpus)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        walls[mode] = json.loads(out.strip().splitlines()[-1])["wall"]
    n = args.trials
    print(f"{n} trivial trials on {args.cpus} CPUs")
    print(f"  Ray Tune default setup : {walls['default']:7.1f} s  = {walls['default'] / n:.3f} s/trial")
    print(f"  scaling sweep's Tuner  : {walls['sweep']:7.1f} s  = {walls['sweep'] / n:.3f} s/trial")
    print(f"  ratio default/sweep    : {walls['default'] / walls['sweep']:.1f}x   (goal: sweep <= 0.1 s/trial)")


if __name__ == "__main__":
    main()
