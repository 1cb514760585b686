"""The Ray Tune grid sweep: config -> plan -> trials -> cube.

Resume is exact: every finished trial writes its result to a ledger file (atomically) before it
reports, and a rerun of the same command only schedules cells without a ledger entry. This is
stricter than ``Tuner.restore``, which replays the experiment state saved at its last snapshot and
can rerun trials that finished after it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from runners.config import SweepConfig, load_config
from scaling.cube import STATUS_DONE, STATUS_FAILED, CubeError, empty_cube, open_cube, save_cube

_DATA_CACHE: dict = {}


def cell_key(cell: dict) -> str:
    return f"{cell['source']}-r{cell['n_real']}-s{cell['n_synth']}-seed{cell['seed']}"


def _dataset(cfg: dict):
    """Per worker process: load the dataset and fixed test split once (actors are reused)."""
    from runners.data import load_dataset, test_indices

    key = json.dumps([cfg["dataset"], cfg["test_fraction"]], sort_keys=True)
    if key not in _DATA_CACHE:
        data = load_dataset(cfg["dataset"])
        _DATA_CACHE[key] = (data, test_indices(data, cfg["test_fraction"]))
    return _DATA_CACHE[key]


def run_cell(cfg: dict, cell: dict) -> dict:
    """Train one classifier for one cell; pure function of (config, cell)."""
    import torch

    from runners.data import split_for_seed
    from runners.train import train_classifier

    torch.set_num_threads(max(1, int(cfg["resources"].get("cpus_per_trial", 1))))
    data, test_idx = _dataset(cfg)
    pool_size = max(cfg["n_synth"]) if cell["source"] == "real" else 0
    base, pool = split_for_seed(data, test_idx, cell["seed"], cell["n_real"], pool_size)
    t0 = time.perf_counter()
    if cell["source"] == "real":
        train_idx = np.concatenate([base, pool[: cell["n_synth"]]])
        x, y = data.images[train_idx], data.labels[train_idx]
    else:  # generative and retrieval sources plug in here (their pools are prepared before the trials)
        raise ValueError(f"source {cell['source']!r} is not available in this version")
    source_seconds = time.perf_counter() - t0
    clf = dict(cfg["classifier"])
    clf.pop("recipe", None)
    # the classifier init depends on (seed, n_real) only: every source at a base size shares it
    result = train_classifier(x, y, data.images[test_idx], data.labels[test_idx], len(data.classes),
                              recipe=cfg["classifier"].get("recipe", "small_cnn"),
                              seed=int(cell["seed"]) * 100_003 + int(cell["n_real"]), **clf)
    return {"accuracy": result["accuracy"], "loss": result["loss"], "train_seconds": result["train_seconds"],
            "source_seconds": source_seconds, "per_class_accuracy": result["per_class_accuracy"].tolist(),
            "node": _node_id()}


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        return platform.node()


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def trainable(config: dict) -> None:
    """The Ray Tune function trainable: one cell, reported once."""
    from ray import tune

    cfg, cell = config["sweep"], config["cell"]
    run_dir = Path(cfg["run_dir"])
    ledger = run_dir / "ledger" / f"{cell_key(cell)}.json"
    if ledger.exists():  # finished in an earlier attempt (e.g. a retry after a lost node)
        tune.report(json.loads(ledger.read_text()))
        return
    metrics = run_cell(cfg, cell)
    _write_json_atomic(ledger, {**metrics, **cell})
    with open(run_dir / "executions.log", "a") as fh:  # one line per finished execution (tests count them)
        fh.write(cell_key(cell) + "\n")
    tune.report({**metrics, **cell})


# --------------------------------------------------------------------------------------------------


def plan(cfg: SweepConfig) -> dict:
    cells = cfg.cells()
    return {"trials": len(cells), "sources": cfg.sources, "generator_jobs": 0,
            "grid": f"{len(cfg.sources)} sources x {len(cfg.n_real)} n_real x {len(cfg.n_synth)} n_synth x "
                    f"{len(cfg.seeds)} seeds (n_synth=0 shared across sources)"}


def print_plan(cfg: SweepConfig, out=None) -> dict:
    out = out or sys.stdout
    p = plan(cfg)
    steps = int(cfg.classifier.get("steps", 300))
    per_trial = 0.01 * steps if cfg.dataset["name"] == "digits" else None
    slots = max(1, int((cfg.resources.get("num_cpus") or os.cpu_count() or 1) // cfg.resources.get("cpus_per_trial", 1)))
    print(f"sweep '{cfg.name}' on {cfg.dataset['name']}: {p['grid']}", file=out)
    print(f"  trials: {p['trials']}   generator jobs: {p['generator_jobs']}   parallel slots: {slots}", file=out)
    if per_trial:
        print(f"  estimate: ~{per_trial * p['trials'] / slots / 60:.1f} min on this machine "
              f"(~{per_trial:.1f} s per trial)", file=out)
    else:
        print("  estimate: depends on the accelerator; budget GPU time per trial x trials / slots", file=out)
    print(f"  output: {cfg.run_dir / 'results.nc'}", file=out)
    return p


def _provenance(cfg: SweepConfig, started: float) -> dict:
    import ray
    import torch

    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except Exception:
        rev = ""
    import scaling

    try:
        import diffusers

        dver = diffusers.__version__
    except Exception:
        dver = None
    return {"package": scaling.__version__, "git": rev, "config": json.loads(json.dumps(cfg.__dict__, default=str)),
            "fingerprint": cfg.fingerprint(), "torch": torch.__version__, "ray": ray.__version__, "diffusers": dver,
            "hardware": {"machine": platform.machine(), "cpus": os.cpu_count(),
                         "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
            "start": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "end": time.strftime("%Y-%m-%dT%H:%M:%S")}


def assemble_cube(cfg: SweepConfig, failed: set[str], provenance: dict):
    """The cube from the ledger (the source of truth); n_synth=0 results fill every source."""
    data, test_idx = _dataset({"dataset": cfg.dataset, "test_fraction": cfg.test_fraction})
    cube = empty_cube(cfg.sources, cfg.n_real, cfg.n_synth, cfg.seeds, dataset=cfg.dataset["name"],
                      n_test=len(test_idx), classes=data.classes, provenance=provenance, per_class=True)
    ledger = cfg.run_dir / "ledger"
    for cell in cfg.cells():
        key = cell_key(cell)
        targets = cfg.sources if cell["n_synth"] == 0 else [cell["source"]]
        path = ledger / f"{key}.json"
        r = json.loads(path.read_text()) if path.exists() else None
        for src in targets:
            loc = dict(source=src, n_real=cell["n_real"], n_synth=cell["n_synth"], seed=cell["seed"])
            if r is not None:
                for name in ("accuracy", "loss", "train_seconds", "source_seconds"):
                    cube[name].loc[loc] = r[name]
                cube["per_class_accuracy"].loc[loc] = r["per_class_accuracy"]
                cube["status"].loc[loc] = STATUS_DONE
            elif key in failed:
                cube["status"].loc[loc] = STATUS_FAILED
    return cube


def _check_run_dir(cfg: SweepConfig) -> None:
    """Refuse to mix two different sweeps in one run directory."""
    stamp = cfg.run_dir / "sweep.json"
    if stamp.exists():
        old = json.loads(stamp.read_text())
        if old.get("fingerprint") != cfg.fingerprint():
            raise CubeError(f"storage: {cfg.run_dir} holds a different sweep (fingerprint {old.get('fingerprint')}); "
                            "choose another storage/name, or delete that folder")
    else:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(stamp, {"fingerprint": cfg.fingerprint(), "config": cfg.__dict__})


def run_sweep(config, *, address: str | None = None, storage: str | None = None, dry_run: bool = False,
              quiet: bool = False) -> Path | dict:
    """Run (or resume) a sweep; returns the path of ``results.nc`` (or the plan when ``dry_run``)."""
    cfg = load_config(config, storage=storage)
    if dry_run:
        return print_plan(cfg)
    started = time.time()
    _check_run_dir(cfg)
    (cfg.run_dir / "ledger").mkdir(exist_ok=True)
    cells = cfg.cells()
    pending = [c for c in cells if not (cfg.run_dir / "ledger" / f"{cell_key(c)}.json").exists()]
    if not quiet:
        print(f"sweep '{cfg.name}': {len(cells)} trials, {len(cells) - len(pending)} already done, "
              f"{len(pending)} to run -> {cfg.run_dir / 'results.nc'}", flush=True)
    failed: set[str] = set()
    if pending:
        failed = _tune(cfg, pending, address=address, quiet=quiet, started=started)
    cube = assemble_cube(cfg, failed, _provenance(cfg, started))
    path = save_cube(cube, cfg.run_dir / "results.nc", overwrite=True)
    if not quiet:
        from scaling.cube import status_counts

        print(f"cube written: {path} ({status_counts(cube)})", flush=True)
    return path


def _tune(cfg: SweepConfig, pending: list[dict], *, address, quiet, started) -> set[str]:
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TB writers per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")
    import ray
    from ray import tune
    from tqdm import tqdm

    started_here = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
                  "logging_level": "ERROR"}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=cfg.resources.get("num_cpus") or os.cpu_count(), **kwargs)
        started_here = True
    sweep_cfg = {"dataset": cfg.dataset, "test_fraction": cfg.test_fraction, "classifier": cfg.classifier,
                 "resources": cfg.resources, "n_synth": cfg.n_synth, "run_dir": str(cfg.run_dir.resolve())}
    bar = tqdm(total=len(pending), desc=f"sweep {cfg.name}", unit="trial", disable=quiet, file=sys.stdout)
    failed: set[str] = set()

    class Progress(tune.Callback):
        def __init__(self):
            self.last_save = 0.0
            self.provenance = _provenance(cfg, started)  # once: it runs git and imports; saves recur every 5 s

        def on_trial_result(self, iteration, trials, trial, result, **info):
            bar.update(1)
            bar.set_postfix_str(f"{cell_key(result)} acc={result['accuracy']:.3f}")
            if time.time() - self.last_save > 5:  # rewrite the cube as trials finish, at most every 5 s
                self.last_save = time.time()
                save_cube(assemble_cube(cfg, failed, self.provenance), cfg.run_dir / "results.nc", overwrite=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            failed.add(cell_key(trial.config["cell"]))
            bar.write(f"trial failed after retries: {cell_key(trial.config['cell'])}")

    resources = {"cpu": float(cfg.resources.get("cpus_per_trial", 1)), "gpu": float(cfg.resources.get("gpus_per_trial", 0))}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={"sweep": sweep_cfg, "cell": tune.grid_search(pending)},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"tune-{int(started)}", storage_path=str((cfg.run_dir / "tune").resolve()), verbose=0,
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[Progress()], log_to_file=False,
        ),
    )
    try:
        tuner.fit()
    finally:
        bar.close()
        if started_here:
            ray.shutdown()
    return failed
