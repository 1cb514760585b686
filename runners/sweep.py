"""The Ray Tune grid sweep: config -> plan -> pools (Ray tasks) -> trials (Ray Tune) -> cube.

The run folder holds the ledger (exact resume, :mod:`runners.ledger`), the pools and generators
(:mod:`runners.pools`), ``results.nc`` and ``features.nc`` (:mod:`runners.assemble`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import ray
import torch
from ray import tune
from tqdm import tqdm

from runners import signals
from runners import storage as run_store  # `storage` is run_sweep's argument
from runners.storage import PermanentStorageError, RunFolder, RunFolderBusy, StorageError, check_writable
from runners.assemble import assemble_cube, write_features
from runners.config import ConfigError, SweepConfig, load_config
from runners.data import cache_root, verify_cache
from runners.ledger import cell_key, check_ledger, check_run_dir, ledger_path, package_version, write_stamp
from runners.plan import dry_run as plan_dry_run
from runners.plan import check_trial_size, source_jobs
from runners.pools import is_prepared, pool_paths
from runners.sources import open_set, prepare_pool, shared_generator
from runners.quality import check_judges, prepare_judge
from runners.trial import hold_if_asked, injected, placement, trainable, use_allotted_cpus
from analysis.cube import STATUS_DONE, cell_dims, open_cube, save_cube, status_counts
from analysis.io import clean_temp_files

__all__ = ["RunFolderBusy", "SourceJobError", "SweepInterrupted", "build_tuner", "run_sweep"]


def _provenance(cfg: SweepConfig, started: float) -> dict:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except Exception:  # no git, or not a checkout: provenance says so with an empty string
        rev = ""
    return {
        "package": package_version(),
        "git": rev,
        "config": json.loads(json.dumps(cfg.as_written(), default=str)),
        "fingerprint": cfg.fingerprint(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "diffusers": importlib.metadata.version("diffusers"),  # without importing it (~3 s)
        "hardware": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "start": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "end": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


class SweepInterrupted(RuntimeError):
    """The sweep stopped before every cell finished (Ctrl-C, a killed driver's trials); rerun to resume."""


def check_resources(cfg: SweepConfig, cpus: float, gpus: float, where: str) -> None:
    """A trial or source job that asks for more than the cluster has would wait forever: refuse it."""
    need = {
        "resources.cpus_per_trial": ("CPU", cfg.trial_resources["CPU"], cpus),
        "resources.gpus_per_trial": ("GPU", cfg.trial_resources["GPU"], gpus),
        "resources.gpus_per_source_job": ("GPU", cfg.source_job_resources["GPU"], gpus),
    }
    for field_name, (kind, asked, have) in need.items():
        if asked > have:
            raise ConfigError(f"{field_name}: {asked:g} {kind}(s) asked, but {where} has {have:g}")


def _local_resources(cfg: SweepConfig) -> tuple[float, float]:
    """CPUs and GPUs a local sweep can use: those of the Ray session already started in this process (e.g. with
    logical GPUs declared), else this machine's."""
    if ray.is_initialized():
        have = ray.cluster_resources()
        return float(have.get("CPU", 0)), float(have.get("GPU", 0))
    return float(cfg.resources.num_cpus or os.cpu_count()), float(torch.cuda.device_count())


def run_sweep(
    config,
    *,
    address: str | None = None,
    storage: str | None = None,
    dry_run: bool = False,
    quiet: bool = False,
    settings=(),
    gpus: float | None = None,
) -> Path | dict:
    """Run (or resume) a sweep; returns the path of ``results.nc`` (or the plan when ``dry_run``).

    Raises :class:`SweepInterrupted` (after writing the cube) when cells are left unfinished.
    """
    if dry_run:
        return plan_dry_run(config, settings, storage=storage, gpus=gpus)
    with signals.stopping_cleanly():  # before any work: every phase stops the same way
        return _run(config, address=address, storage=storage, quiet=quiet, settings=settings)


def _run(config, *, address, storage, quiet, settings) -> Path:
    cfg = load_config(config, settings, storage=storage)
    check_trial_size(cfg, local=not address)  # a classifier that cannot fit or finish: refused with its field
    if not address:  # known before anything is written; a cluster is asked once Ray is up
        check_resources(cfg, *_local_resources(cfg), "this machine")
    started = time.time()
    run = RunFolder(cfg)
    with run.lock():
        clean_temp_files(cfg.run_dir)  # what killed writers left; no writer of this folder runs now
        stamp = check_run_dir(cfg)
        verify_cache(cfg.dataset)  # the arrays every trial maps are the ones the cache was built with
        check_judges(cfg)  # a damaged judge is named here, not inside a source job
        check_writable(cache_root().parent, "SCALING_CACHE")  # source jobs write pools, judges and caches there
        hold_if_asked("driver:checks")
        run.reconcile()  # a remote run folder: what the store lost is uploaded again from this node's mirror
        (cfg.run_dir / "ledger").mkdir(exist_ok=True)
        done = check_ledger(cfg)
        write_stamp(cfg, stamp)  # only now: a refused run leaves the folder's record as it was
        cells = cfg.cells()
        pending = [c for c in cells if cell_key(c) not in done]
        if not quiet:
            print(
                f"sweep '{cfg.name}': {len(cells)} trials, {len(cells) - len(pending)} already done, "
                f"{len(pending)} to run -> {cfg.run_dir / 'results.nc'}",
                flush=True,
            )
        failed: set[str] = set()
        stopped_by = None
        if pending:
            try:
                with ray_session(cfg, address):
                    if address:
                        have = ray.cluster_resources()
                        check_resources(cfg, have.get("CPU", 0), have.get("GPU", 0), f"the Ray cluster at {address}")
                    _prepare_sources(cfg, quiet=quiet)
                    failed = _tune(cfg, pending, quiet=quiet, started=started)
            except KeyboardInterrupt as exc:  # a stop signal outside Tune's loop (checks, sources): save, then 130
                stopped_by = str(exc) or "interrupted"
        cube = assemble_cube(cfg, failed, _provenance(cfg, started))
        _keep_a_larger_cube(cfg.run_dir / "results.nc", cube)
        path = run.upload(save_cube(cube, cfg.run_dir / "results.nc", overwrite=True))
        features = write_features(cfg)
        if features is not None:
            run.upload(features)
    unfinished = [c for c in pending if cell_key(c) not in failed and not ledger_path(cfg, c).exists()]
    if not quiet:
        where = (
            f" (uploaded to {urlsplit(cfg.storage)._replace(query='').geturl().rstrip('/')}/{cfg.name}/results.nc)"
            if run_store.remote(cfg)
            else ""
        )
        print(f"cube written: {path}{where} ({status_counts(cube)}) in {time.time() - started:.0f} s", flush=True)
    if unfinished or stopped_by:
        raise SweepInterrupted(
            f"{stopped_by or 'interrupted'}: {len(unfinished)} of {len(cells)} trials did not finish (the cube "
            f"marks them pending); rerun the same command to resume"
        )
    return path


def _keep_a_larger_cube(path: Path, cube) -> None:
    """A run that shrank (``--set seeds=[0]`` on a finished run) writes a cube of its smaller grid; the cube it
    replaces holds finished cells the new one lacks, so it is kept beside it (``results.<time>.nc``), with a
    line saying so, instead of being overwritten silently. The ledger keeps every cell either way."""
    if not path.exists():
        return
    try:
        old = open_cube(path)
    except ValueError:  # damaged (a killed writer of an old version): nothing worth keeping
        return
    done = old["status"] == STATUS_DONE
    dims = cell_dims(old)
    same_dims = all(d in cube.dims for d in dims)  # a protocol sweep replaced by a plain one keeps nothing
    kept = int(done.sel({d: [v for v in old[d].values if v in cube[d].values] for d in dims}).sum()) if same_dims else 0
    lost = int(done.sum()) - kept
    if lost > 0:
        backup = path.with_name(f"results.{time.strftime('%Y%m%d-%H%M%S')}.nc")
        os.replace(path, backup)
        print(
            f"the grid is smaller than the cube it replaces: {lost} finished cell(s) of {path.name} lie outside "
            f"it; that cube is kept as {backup.name} (the ledger keeps every cell)",
            file=sys.stderr,
        )


@contextlib.contextmanager
def ray_session(cfg: SweepConfig, address: str | None):
    """Connect to ``address`` or start a local Ray with explicit CPUs and no dashboard; stop only what we started."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TB writers per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")
    started_here = False
    if not ray.is_initialized():
        kwargs = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": True,
            "logging_level": "ERROR",
        }
        if address:  # credentials a storage URI carried reach the cluster's workers through Ray, not a file
            env = run_store.worker_env()
            ray.init(address=address, **kwargs, **({"runtime_env": {"env_vars": env}} if env else {}))
        else:
            ray.init(num_cpus=cfg.resources.num_cpus or os.cpu_count(), **kwargs)
        started_here = True
    try:
        signals.install()  # after ray.init, which installs a SIGTERM handler that ends the driver without saving
        yield
    finally:
        if started_here:
            ray.shutdown()


def _source_task(cfg: SweepConfig, job: dict, *deps) -> dict:
    """Ray task body: one pool (its generator trained first when needed). ``deps`` only order the tasks."""
    use_allotted_cpus(cfg)
    key = f"pool:{job['source']}-r{job['n_real']}-seed{job['seed']}"
    hold_if_asked(key)
    if injected(key):
        raise RuntimeError("injected failure in a source job")
    t0 = time.perf_counter()
    meta = prepare_pool(
        cfg, job["source"], job["n_real"], job["seed"], record={**placement(), "started_at": time.time()}
    )
    return {**job, "seconds": time.perf_counter() - t0, "meta": meta}


def _shared_generator_task(cfg: SweepConfig, hp: dict) -> dict:
    use_allotted_cpus(cfg)
    return open_set.prepare_generator(cfg, hp)


class SourceJobError(RuntimeError):
    """A generator / retrieval job that failed for good; the message names the pool."""


def _prepare_sources(cfg: SweepConfig, *, quiet: bool) -> None:
    """Generator training, sampling and retrieval as Ray tasks before the trials (GPU when asked for)."""
    jobs = [j for j in source_jobs(cfg) if not is_prepared(cfg, j["source"], j["n_real"], j["seed"])]
    if not jobs:
        return
    opts = {
        "num_cpus": cfg.source_job_resources["CPU"],
        "num_gpus": cfg.source_job_resources["GPU"],
        "max_retries": cfg.max_failures,
    }
    judge = ray.remote(prepare_judge).options(**opts).remote(cfg)
    # a run-wide generator (the offline open-set model) is trained once, first — the longest job — and the pools
    # of every source that starts from it (open_set, img2img, personalised) wait for it
    starts_from = [shared_generator(cfg, j["source"]) for j in jobs]
    shared = {}
    for found in filter(None, starts_from):  # submitted before any pool
        if found[0] not in shared:
            shared[found[0]] = ray.remote(_shared_generator_task).options(**opts).remote(cfg, found[1])
    task = ray.remote(_source_task).options(**opts)
    refs = {
        task.remote(cfg, j, judge, *([shared[found[0]]] if found else [])): j for j, found in zip(jobs, starts_from)
    }
    pending = list(refs)
    with tqdm(total=len(pending), desc="sources", unit="pool", disable=quiet, file=sys.stdout) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                r = ray.get(done[0])
            except ray.exceptions.RayError as exc:  # after its retries: no trial could use this pool, so stop here
                j = refs[done[0]]
                cause = getattr(exc, "cause", None)
                if isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError):
                    raise _write_refused(cfg, j, cause) from exc  # a full disk, a read-only cache: exit 5
                raise SourceJobError(
                    f"sources: the {j['source']} pool for n_real={j['n_real']} seed={j['seed']} "
                    f"failed after {cfg.max_failures} retries: {getattr(exc, 'cause', exc)!r}"
                ) from exc
            m = r["meta"]
            extra = f" noise={m['label_noise']:.2f}" if "label_noise" in m else ""
            bar.update(1)
            bar.set_postfix_str(
                f"{r['source']} r{r['n_real']} seed{r['seed']} {r['seconds']:.0f}s "
                f"label_acc={m['label_accuracy']:.2f} FD={m['frechet_distance']:.1f}{extra}"
            )


def _write_refused(cfg: SweepConfig, job: dict, cause: OSError) -> StorageError:
    """A source job's refused write as one line naming the path: the file the error names, else the pool the
    job was writing (a full disk raises ``OSError(28)`` without a path)."""
    where = cause.filename or pool_paths(cfg, job["source"], job["n_real"], job["seed"])[0]
    what = cause.strerror or (str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
    return StorageError(
        cause.errno,
        f"sources: the {job['source']} pool for n_real={job['n_real']} seed={job['seed']} could not be written "
        f"({what})",
        str(where),
    )


def build_tuner(
    fn,
    param_space: dict,
    *,
    resources: dict,
    name: str,
    storage: Path,
    max_failures: int,
    callbacks: list,
    stop=None,
):
    """The sweep's Tuner: packed resources, reused actors, no per-trial loggers or console tables,
    retries on failure. A trial then costs its training, not its scheduling (bench/ray_overhead.py)."""
    return tune.Tuner(
        tune.with_resources(fn, resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(Path(storage).resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks,
            log_to_file=False,
            stop=stop,
        ),
    )


def _tune(cfg: SweepConfig, pending: list[dict], *, quiet, started) -> set[str]:
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
                self.save()

        def save(self):
            """A periodic save is a convenience (the ledger is the record): its failure (a full disk, a
            damaged entry) is one warning, never the end of the sweep; the final save reports it for good."""
            try:
                save_cube(assemble_cube(cfg, failed, self.provenance), cfg.run_dir / "results.nc", overwrite=True)
            except Exception as exc:  # noqa: BLE001 - whatever it was, Tune's loop must go on
                bar.write(
                    f"warning: the periodic cube save failed ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                    "trials go on, the cube is written at the end"
                )

        def on_trial_error(self, iteration, trials, trial, **info):
            self._note_permanent(trial)
            failed.add(cell_key(trial.config["cell"]))
            bar.write(f"trial failed after retries: {cell_key(trial.config['cell'])}")

        def on_trial_recover(self, iteration, trials, trial, **info):
            self._note_permanent(trial)

        def _note_permanent(self, trial):
            """A store that refuses for good (no bucket, refused credentials) ends the sweep at its first
            failure: no retry of this trial or of any other can succeed."""
            err = trial.get_pickled_error()
            cause = getattr(err, "cause", err)
            if isinstance(cause, PermanentStorageError) and stop.fatal is None:
                stop.fatal = cause

    class StopOnPermanentError(tune.Stopper):
        fatal = None

        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return self.fatal is not None

    stop = StopOnPermanentError()

    resources = {"cpu": cfg.trial_resources["CPU"], "gpu": cfg.trial_resources["GPU"]}
    space = {"sweep": cfg, "cell": tune.grid_search(pending)}
    tuner = build_tuner(
        trainable,
        space,
        resources=resources,
        name=f"tune-{int(started)}",
        storage=cfg.run_dir / "tune",
        max_failures=cfg.max_failures,
        callbacks=[Progress()],
        stop=stop,
    )
    try:
        tuner.fit()
    finally:
        bar.close()
    if stop.fatal is not None:
        raise stop.fatal
    return failed
