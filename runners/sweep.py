"""The Ray Tune grid sweep: config -> plan -> trials -> cube.

Resume is exact: every finished trial writes its result to a ledger file (atomically) before it
reports, and a rerun of the same command only schedules cells without a ledger entry. This is
stricter than ``Tuner.restore``, which replays the experiment state saved at its last snapshot and
can rerun trials that finished after it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import socket
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from runners.config import ConfigError, SweepConfig, load_config
from scaling.cube import (STATUS_DONE, STATUS_FAILED, empty_cube, pack_correct, save_cube,
                          unpack_correct_hex, write_atomic)


def cell_key(cell: dict) -> str:
    return f"{cell['source']}-r{cell['n_real']}-s{cell['n_synth']}-seed{cell['seed']}"


def worker_config(cfg: SweepConfig) -> dict:
    """What trials and source jobs need, as plain JSON-able data (it travels to Ray workers)."""
    return {"dataset": cfg.dataset, "test_fraction": cfg.test_fraction, "classifier": cfg.classifier,
            "resources": cfg.resources, "n_synth": cfg.n_synth, "seeds": cfg.seeds,
            "source_options": cfg.source_options, "run_dir": str(cfg.run_dir.resolve()),
            "cell_fingerprint": cell_fingerprint(cfg)}


def package_version() -> str:
    """From the installed metadata: workers need not import ``scaling`` (and statsmodels with it)."""
    try:
        return importlib.metadata.version("synth-scaling")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cell_fingerprint(cfg: SweepConfig) -> str:
    """What determines one cell's numbers beyond its coordinates: the sweep's fingerprint, the package
    version, and the torch thread count (``cpus_per_trial`` changes accuracies in the 3rd decimal)."""
    key = {"sweep": cfg.fingerprint(), "package": package_version(), "threads": _threads(cfg.resources)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _threads(resources: dict) -> int:
    return max(1, int(resources.get("cpus_per_trial", 1)))


def _injected(key: str) -> bool:
    """Test hook: SCALING_FAIL_CELLS="key1,key2" makes those trials (cell keys) or source jobs
    ("pool:<source>-r<n_real>-seed<seed>") raise, a stand-in for OOM or a bad node."""
    return key in os.environ.get("SCALING_FAIL_CELLS", "").split(",")


def _inject_failure(cfg: dict, cell: dict) -> None:
    """Raise for an injected trial failure; every attempt is logged so a test can count the retries."""
    if _injected(cell_key(cell)):
        with open(Path(cfg["run_dir"]) / "failures.log", "a") as fh:
            fh.write(cell_key(cell) + "\n")
        raise RuntimeError(f"injected failure in {cell_key(cell)}")


def _use_allotted_cpus(cfg: dict) -> None:
    """Torch threads = the CPUs Ray gave this trial or task, so packed workers do not oversubscribe."""
    import torch

    torch.set_num_threads(_threads(cfg["resources"]))


def run_cell(cfg: dict, cell: dict) -> dict:
    """Train one classifier for one cell; pure function of (config, cell)."""
    from runners.sources import attributed_seconds, base_and_real_pool, dataset_of, load_pool
    from runners.train import train_classifier

    _inject_failure(cfg, cell)
    _use_allotted_cpus(cfg)
    data, test_idx = dataset_of(cfg)
    base, _ = base_and_real_pool(cfg, cell["n_real"], cell["seed"], 0)
    x, y, source_seconds = data.images[base], data.labels[base], 0.0
    if cell["n_synth"] > 0:
        xs, ys, meta = load_pool(cfg, cell["source"], cell["n_real"], cell["seed"], cell["n_synth"])
        x, y = np.concatenate([x, xs]), np.concatenate([y, ys])
        source_seconds = attributed_seconds(meta, cell["n_synth"])
    clf = dict(cfg["classifier"])
    clf.pop("recipe", None)
    # the classifier init depends on (seed, n_real) only: every source at a base size shares it
    result = train_classifier(x, y, data.images[test_idx], data.labels[test_idx], len(data.classes),
                              recipe=cfg["classifier"].get("recipe", "small_cnn"),
                              seed=int(cell["seed"]) * 100_003 + int(cell["n_real"]), **clf)
    if not np.isfinite(result["loss"]):  # diverged (e.g. lr too high): chance accuracy must not count as done
        raise FloatingPointError(f"{cell_key(cell)}: training diverged (test loss {result['loss']}); "
                                 "check classifier.lr")
    return {"accuracy": result["accuracy"], "loss": result["loss"], "train_seconds": result["train_seconds"],
            "source_seconds": source_seconds, "per_class_accuracy": result["per_class_accuracy"].tolist(),
            "test_correct": pack_correct(result["correct"]),
            "node": _node_id()}


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        return platform.node()


def _write_json_atomic(path: Path, payload: dict) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(payload, default=str)))


def trainable(config: dict) -> None:
    """The Ray Tune function trainable: one cell, reported once."""
    from ray import tune

    cfg, cell = config["sweep"], config["cell"]
    run_dir = Path(cfg["run_dir"])
    ledger = run_dir / "ledger" / f"{cell_key(cell)}.json"
    if ledger.exists():  # finished in an earlier attempt (e.g. a retry after a lost node)
        entry = json.loads(ledger.read_text())
        if entry.get("cell_fingerprint", cfg["cell_fingerprint"]) == cfg["cell_fingerprint"]:
            tune.report(entry)
            return
    metrics = run_cell(cfg, cell)
    metrics["cell_fingerprint"] = cfg["cell_fingerprint"]
    _write_json_atomic(ledger, {**metrics, **cell})
    with open(run_dir / "executions.log", "a") as fh:  # one line per finished execution (tests count them)
        fh.write(cell_key(cell) + "\n")
    tune.report({**metrics, **cell})


# --------------------------------------------------------------------------------------------------


def source_jobs(cfg: SweepConfig) -> list[dict]:
    """One job per distinct pool (content hash), in an order that puts the slow generators first."""
    from runners.sources import pool_key

    wcfg, jobs, seen = worker_config(cfg), [], set()
    if max(cfg.n_synth) == 0:
        return jobs
    for source in sorted(cfg.sources, key=lambda s: s == "real"):
        for r in cfg.n_real:
            for seed in cfg.seeds:
                key = pool_key(wcfg, source, r, seed)
                if key not in seen:
                    seen.add(key)
                    jobs.append({"source": source, "n_real": r, "seed": seed, "key": key})
    return jobs


def generator_trainings(cfg: SweepConfig) -> int:
    from runners.sources import options_for

    n = len(cfg.n_real) * len(cfg.seeds) if "closed_set" in cfg.sources else 0
    if "open_set" in cfg.sources and "generator" in options_for(worker_config(cfg), "open_set"):
        n += 1
    return n if max(cfg.n_synth) > 0 else 0


def plan(cfg: SweepConfig) -> dict:
    cells = cfg.cells()
    return {"trials": len(cells), "sources": cfg.sources, "source_jobs": len(source_jobs(cfg)),
            "generator_jobs": generator_trainings(cfg),
            "grid": f"{len(cfg.sources)} sources x {len(cfg.n_real)} n_real x {len(cfg.n_synth)} n_synth x "
                    f"{len(cfg.seeds)} seeds (n_synth=0 shared across sources)"}


def print_plan(cfg: SweepConfig, out=None) -> dict:
    out = out or sys.stdout
    p = plan(cfg)
    steps = int(cfg.classifier.get("steps", 300))
    slots = max(1, int((cfg.resources.get("num_cpus") or os.cpu_count() or 1) // cfg.resources.get("cpus_per_trial", 1)))
    print(f"sweep '{cfg.name}' on {cfg.dataset['name']}: {p['grid']}", file=out)
    print(f"  trials: {p['trials']}   source jobs (pools): {p['source_jobs']}   generator trainings: "
          f"{p['generator_jobs']}   parallel slots: {slots}", file=out)
    if cfg.dataset["name"] == "digits":
        # measured on a 2-core CPU (bench/RESULTS.md): a trial costs ~0.017 s per classifier step of slot time
        # (training plus data and Ray overhead), a tiny generator ~0.05 s per step
        from runners.sources import options_for

        gen_steps = 0
        for src in ("closed_set", "open_set"):
            if src in cfg.sources:
                g = options_for(worker_config(cfg), src).get("generator")
                gen_steps = max(gen_steps, g["train_steps"] if g else 0)
        total = 0.017 * steps * p["trials"] + 0.05 * gen_steps * p["generator_jobs"]
        print(f"  estimate: ~{total / slots / 60:.1f} min on this machine (~{0.017 * steps:.1f} s per trial, "
              f"~{0.05 * gen_steps:.0f} s per generator)", file=out)
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


POOL_VARS = {"pool_label_accuracy": ("label_accuracy", "judge classifier's agreement with the pool's labels (0-1)"),
             "pool_frechet_distance": ("frechet_distance", "Frechet distance pool vs real test images, judge features"),
             "pool_label_noise": ("label_noise", "fraction of retrieved images whose query label is wrong"),
             "pool_domain_accuracy": ("domain_accuracy", "balanced accuracy of a linear real-vs-pool classifier "
                                                         "on judge features (0.5: indistinguishable)")}


def assemble_cube(cfg: SweepConfig, failed: set[str], provenance: dict):
    """The cube from the ledger (the source of truth); n_synth=0 results fill every source."""
    import xarray as xr

    from runners.sources import dataset_of, pool_paths

    data, test_idx = dataset_of(worker_config(cfg))
    cube = empty_cube(cfg.sources, cfg.n_real, cfg.n_synth, cfg.seeds, dataset=cfg.dataset["name"],
                      n_test=len(test_idx), classes=data.classes, provenance=provenance, per_class=True,
                      test_items=True)
    ledger = cfg.run_dir / "ledger"
    all_items = True
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
                if "test_correct" in r:
                    cube["test_correct"].loc[loc] = unpack_correct_hex(r["test_correct"])
                else:  # a ledger written before test items were recorded: the cube cannot carry them
                    all_items = False
                cube["status"].loc[loc] = STATUS_DONE
            elif key in failed:
                cube["status"].loc[loc] = STATUS_FAILED
    if not all_items:
        cube = cube.drop_vars("test_correct")
    # pool quality per (source, n_real, seed): no n_synth dimension, every prefix shares its pool
    dims = ("source", "n_real", "seed")
    shape = tuple(cube.sizes[d] for d in dims)
    wcfg = worker_config(cfg)
    values = {var: np.full(shape, np.nan) for var in POOL_VARS}
    for i, src in enumerate(cfg.sources):
        for j, r in enumerate(cube["n_real"].values):
            for k, seed in enumerate(cube["seed"].values):
                meta_path = pool_paths(wcfg, src, int(r), int(seed))[1]
                if max(cfg.n_synth) > 0 and meta_path.exists():
                    meta = json.loads(meta_path.read_text())  # read once, fills every quality variable
                    for var, (field_name, _) in POOL_VARS.items():
                        values[var][i, j, k] = meta.get(field_name, np.nan)
    for var, (_, doc) in POOL_VARS.items():
        cube[var] = xr.DataArray(values[var], dims=dims, attrs={"description": doc})
    return cube


SAMPLES_PER_CLASS = 8  # images per class and source kept for the sample grid (first n_real, first seed)


def write_features(cfg: SweepConfig) -> Path | None:
    """``features.nc`` beside the cube: judge features of real test images and of every pool's first
    images, with each pool's domain direction; the domain-gap figure reads only this file."""
    import xarray as xr

    from runners.sources import FEATURES_KEPT, dataset_of, judge_outputs, judge_path, load_pool, pool_paths

    wcfg = worker_config(cfg)
    if max(cfg.n_synth) == 0 or not judge_path(wcfg).exists():
        return None
    data, test_idx = dataset_of(wcfg)
    real_idx = test_idx[:FEATURES_KEPT * 2]
    real_feats, _ = judge_outputs(wcfg, data.images[real_idx])
    dims = (len(cfg.sources), len(cfg.n_real), len(cfg.seeds))
    feats = np.full(dims + (FEATURES_KEPT, real_feats.shape[1]), np.nan, np.float32)
    labels = np.full(dims + (FEATURES_KEPT,), -1, np.int64)
    direction = np.full(dims + (real_feats.shape[1],), np.nan, np.float32)
    per_class = SAMPLES_PER_CLASS
    samples = np.full((len(cfg.sources), len(data.classes), per_class) + data.shape, np.nan, np.float32)
    for i, src in enumerate(cfg.sources):
        if pool_paths(wcfg, src, cfg.n_real[0], cfg.seeds[0])[0].exists():  # a failed source job leaves NaN here
            xs, ys, _ = load_pool(wcfg, src, cfg.n_real[0], cfg.seeds[0], max(cfg.n_synth))
            for c in range(len(data.classes)):
                pick = xs[ys == c][:per_class]
                samples[i, c, :len(pick)] = pick
        for j, r in enumerate(cfg.n_real):
            for k, seed in enumerate(cfg.seeds):
                npz = pool_paths(wcfg, src, r, seed)[0]
                if npz.exists():
                    with np.load(npz) as f:
                        m = len(f["features"])
                        feats[i, j, k, :m], labels[i, j, k, :m] = f["features"], f["labels"][:m]
                        direction[i, j, k] = f["domain_direction"]
    ds = xr.Dataset(
        {"features": (("source", "n_real", "seed", "item", "feature"), feats),
         "labels": (("source", "n_real", "seed", "item"), labels),
         "domain_direction": (("source", "n_real", "seed", "feature"), direction),
         "real_features": (("real_item", "feature"), real_feats.astype(np.float32)),
         "real_labels": (("real_item",), data.labels[real_idx]),
         "samples": (("source", "class", "k", "channel", "y", "x"), samples)},
        coords={"source": list(cfg.sources), "n_real": list(cfg.n_real), "seed": list(cfg.seeds),
                "class": list(data.classes)},
        attrs={"description": "penultimate features of the judge classifier (trained on all non-test real images); "
                              "real_features are test images; samples: pool images per class at the first n_real and seed",
               "classes": json.dumps(data.classes), "sample_n_real": int(cfg.n_real[0]),
               "sample_seed": int(cfg.seeds[0])})
    return write_atomic(cfg.run_dir / "features.nc", lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))


class SweepInterrupted(RuntimeError):
    """The sweep stopped before every cell finished (Ctrl-C, a killed driver's trials); rerun to resume."""


class RunFolderBusy(RuntimeError):
    """Another sweep holds the run folder's lock."""


def _check_run_dir(cfg: SweepConfig) -> None:
    """Refuse to mix two different sweeps in one run directory (called with the run folder's lock held)."""
    stamp = cfg.run_dir / "sweep.json"
    if stamp.exists():
        try:
            old = json.loads(stamp.read_text())
        except ValueError:
            raise ConfigError(f"storage: {stamp} is damaged (not JSON); it records which sweep owns the folder — "
                              "restore it or choose another name") from None
        if old.get("fingerprint") != cfg.fingerprint():
            raise ConfigError(f"storage: {cfg.run_dir} holds a different sweep (fingerprint {old.get('fingerprint')}); "
                              "choose another storage/name, or delete that folder")
    else:
        _write_json_atomic(stamp, {"fingerprint": cfg.fingerprint(), "config": cfg.__dict__})


def _check_ledger(cfg: SweepConfig) -> set[str]:
    """Keys of the finished cells; a damaged entry, or one computed under another cell fingerprint (package
    version, thread count), is refused before anything runs — never reused, never silently overwritten."""
    done, current = set(), cell_fingerprint(cfg)
    for path in sorted((cfg.run_dir / "ledger").glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except ValueError:
            raise ConfigError(f"ledger: {path} is damaged (not JSON); delete it to recompute that cell") from None
        theirs = entry.get("cell_fingerprint")
        if theirs is not None and theirs != current:
            raise ConfigError(f"resources.cpus_per_trial: {path.name} was computed under cell fingerprint {theirs} "
                              f"(package version or torch threads differ from now: {package_version()}, "
                              f"{_threads(cfg.resources)} thread(s)); resume with the same package and cpus_per_trial, "
                              "or use another name")
        done.add(path.stem)
    return done


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold ``run_dir/.lock`` for a whole sweep: two sweeps into one folder would mix their cells.

    Created with O_EXCL (atomic on POSIX and NFSv3+); a lock left by a process that is gone (same host,
    dead PID) is taken over with a message; one held elsewhere is refused, naming its holder.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".lock"
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):
                holder = {}
            if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
                print(f"taking over a stale lock of {run_dir} (pid {holder.get('pid')} is gone)", file=sys.stderr)
                lock.unlink(missing_ok=True)
                continue
            raise RunFolderBusy(f"storage: {run_dir} is in use by another sweep (pid {holder.get('pid')} on "
                                f"{holder.get('host')} since {holder.get('since')}); wait for it, or delete "
                                f"{lock} if that process is gone") from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_resources(cfg: SweepConfig, cpus: float, gpus: float, where: str) -> None:
    """A trial or source job that asks for more than the cluster has would wait forever: refuse it."""
    res = cfg.resources
    need = {"resources.cpus_per_trial": ("CPU", float(res.get("cpus_per_trial", 1)), cpus),
            "resources.gpus_per_trial": ("GPU", float(res.get("gpus_per_trial") or 0), gpus),
            "resources.gpus_per_source_job": ("GPU", float(res.get("gpus_per_source_job") or 0), gpus)}
    for field_name, (kind, asked, have) in need.items():
        if asked > have:
            raise ConfigError(f"{field_name}: {asked:g} {kind}(s) asked, but {where} has {have:g}")


def _local_resources(cfg: SweepConfig) -> tuple[float, float]:
    import torch

    return float(cfg.resources.get("num_cpus") or os.cpu_count()), float(torch.cuda.device_count())


def run_sweep(config, *, address: str | None = None, storage: str | None = None, dry_run: bool = False,
              quiet: bool = False) -> Path | dict:
    """Run (or resume) a sweep; returns the path of ``results.nc`` (or the plan when ``dry_run``).

    Raises :class:`SweepInterrupted` (after writing the cube) when cells are left unfinished.
    """
    cfg = load_config(config, storage=storage)
    if dry_run:
        return print_plan(cfg)
    if not address:  # known before anything is written; a cluster is asked once Ray is up
        check_resources(cfg, *_local_resources(cfg), "this machine")
    started = time.time()
    with run_lock(cfg.run_dir):
        _check_run_dir(cfg)
        (cfg.run_dir / "ledger").mkdir(exist_ok=True)
        done = _check_ledger(cfg)
        cells = cfg.cells()
        pending = [c for c in cells if cell_key(c) not in done]
        if not quiet:
            print(f"sweep '{cfg.name}': {len(cells)} trials, {len(cells) - len(pending)} already done, "
                  f"{len(pending)} to run -> {cfg.run_dir / 'results.nc'}", flush=True)
        failed: set[str] = set()
        if pending:
            with _ray_session(cfg, address):
                if address:
                    import ray

                    have = ray.cluster_resources()
                    check_resources(cfg, have.get("CPU", 0), have.get("GPU", 0), f"the Ray cluster at {address}")
                _prepare_sources(cfg, quiet=quiet)
                failed = _tune(cfg, pending, quiet=quiet, started=started)
        cube = assemble_cube(cfg, failed, _provenance(cfg, started))
        path = save_cube(cube, cfg.run_dir / "results.nc", overwrite=True)
        write_features(cfg)
    unfinished = [c for c in pending if cell_key(c) not in failed
                  and not (cfg.run_dir / "ledger" / f"{cell_key(c)}.json").exists()]
    if not quiet:
        from scaling.cube import status_counts

        print(f"cube written: {path} ({status_counts(cube)}) in {time.time() - started:.0f} s", flush=True)
    if unfinished:
        raise SweepInterrupted(f"interrupted: {len(unfinished)} of {len(cells)} trials did not finish (the cube "
                               f"marks them pending); rerun the same command to resume")
    return path


@contextlib.contextmanager
def _ray_session(cfg: SweepConfig, address: str | None):
    """Connect to ``address`` or start a local Ray with explicit CPUs and no dashboard; stop only what we started."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TB writers per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")
    import ray

    started_here = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
                  "logging_level": "ERROR"}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=cfg.resources.get("num_cpus") or os.cpu_count(), **kwargs)
        started_here = True
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


def _source_task(wcfg: dict, job: dict, *deps) -> dict:
    """Ray task body: one pool (its generator trained first when needed). ``deps`` only order the tasks."""
    from runners.sources import prepare_pool

    _use_allotted_cpus(wcfg)
    if _injected(f"pool:{job['source']}-r{job['n_real']}-seed{job['seed']}"):
        raise RuntimeError("injected failure in a source job")
    t0 = time.perf_counter()
    meta = prepare_pool(wcfg, job["source"], job["n_real"], job["seed"])
    return {**job, "seconds": time.perf_counter() - t0, "meta": meta}


def _judge_task(wcfg: dict) -> dict:
    from runners.sources import prepare_judge

    return prepare_judge(wcfg)


def _open_generator_task(wcfg: dict) -> dict:
    from runners.sources import prepare_open_generator

    _use_allotted_cpus(wcfg)
    return prepare_open_generator(wcfg)


class SourceJobError(RuntimeError):
    """A generator / retrieval job that failed for good; the message names the pool."""


def _prepare_sources(cfg: SweepConfig, *, quiet: bool) -> None:
    """Generator training, sampling and retrieval as Ray tasks before the trials (GPU when asked for)."""
    import ray
    from tqdm import tqdm

    from runners.sources import options_for, pool_paths

    wcfg = worker_config(cfg)
    jobs = [j for j in source_jobs(cfg) if not all(p.exists() for p in pool_paths(wcfg, j["source"], j["n_real"], j["seed"]))]
    if not jobs:
        return
    opts = {"num_cpus": float(cfg.resources.get("cpus_per_trial", 1)),
            "num_gpus": float(cfg.resources.get("gpus_per_source_job", cfg.resources.get("gpus_per_trial", 0))),
            "max_retries": cfg.max_failures}
    judge = ray.remote(_judge_task).options(**opts).remote(wcfg)
    open_gen = None
    if any(j["source"] == "open_set" for j in jobs) and "generator" in options_for(wcfg, "open_set"):
        open_gen = ray.remote(_open_generator_task).options(**opts).remote(wcfg)  # the longest job: start it first
    task = ray.remote(_source_task).options(**opts)
    refs = {task.remote(wcfg, j, judge, open_gen) if j["source"] == "open_set" and open_gen is not None
            else task.remote(wcfg, j, judge): j for j in jobs}
    pending = list(refs)
    with tqdm(total=len(pending), desc="sources", unit="pool", disable=quiet, file=sys.stdout) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                r = ray.get(done[0])
            except ray.exceptions.RayError as exc:  # after its retries: no trial could use this pool, so stop here
                j = refs[done[0]]
                raise SourceJobError(f"sources: the {j['source']} pool for n_real={j['n_real']} seed={j['seed']} "
                                     f"failed after {cfg.max_failures} retries: {getattr(exc, 'cause', exc)!r}") from exc
            m = r["meta"]
            extra = f" noise={m['label_noise']:.2f}" if "label_noise" in m else ""
            bar.update(1)
            bar.set_postfix_str(f"{r['source']} r{r['n_real']} seed{r['seed']} {r['seconds']:.0f}s "
                                f"label_acc={m['label_accuracy']:.2f} FD={m['frechet_distance']:.1f}{extra}")


def build_tuner(fn, param_space: dict, *, resources: dict, name: str, storage: Path, max_failures: int,
                callbacks: list):
    """The sweep's Tuner: packed resources, reused actors, no per-trial loggers or console tables,
    retries on failure. A trial then costs its training, not its scheduling (bench/ray_overhead.py)."""
    from ray import tune

    return tune.Tuner(
        tune.with_resources(fn, resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            name=name, storage_path=str(Path(storage).resolve()), verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks, log_to_file=False,
        ),
    )


def _tune(cfg: SweepConfig, pending: list[dict], *, quiet, started) -> set[str]:
    from ray import tune
    from tqdm import tqdm

    sweep_cfg = worker_config(cfg)
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
    tuner = build_tuner(trainable, {"sweep": sweep_cfg, "cell": tune.grid_search(pending)}, resources=resources,
                        name=f"tune-{int(started)}", storage=cfg.run_dir / "tune", max_failures=cfg.max_failures,
                        callbacks=[Progress()])
    try:
        tuner.fit()
    finally:
        bar.close()
    return failed
