"""One trial: train a classifier on a cell's base subset plus its pool prefix. Runs in a Ray worker,
so this module imports only what a trial runs (torch, numpy, the pool reader; no statsmodels, no Ray
Tune internals beyond ``report``)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import ray
import torch
from ray import tune

from runners import streams
from runners.storage import RunFolder
from runners.data import base_and_real_pool, dataset_of
from runners.ledger import (
    cell_fingerprint,
    cell_key,
    entry_checksum,
    fingerprint_parts,
    ledger_entry,
    ledger_path,
    read_entry,
)
from runners.pools import attributed_seconds, load_pool
from runners.train import train_classifier
from analysis.cube import pack_correct


def injected(key: str) -> bool:
    """Test hook: SCALING_FAIL_CELLS="key1,key2" makes those trials (cell keys) or source jobs
    ("pool:<source>-r<n_real>-seed<seed>") raise, a stand-in for OOM or a bad node. With SCALING_FAIL_ERRNO=N
    the failure is ``OSError(N)`` without a path, as a full disk (28) or a read-only mount (30) raise it."""
    if key not in os.environ.get("SCALING_FAIL_CELLS", "").split(","):
        return False
    errno = os.environ.get("SCALING_FAIL_ERRNO")
    if errno:
        raise OSError(int(errno), os.strerror(int(errno)))
    return True


def append_line(path: Path, line: str) -> None:
    """Append one line to a run folder's log, never through a symlink (one planted there would let a run
    folder write into any file its user can write)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "a") as fh:
        fh.write(line + "\n")


def _inject_failure(cfg, cell: dict) -> None:
    """Raise for an injected trial failure; every attempt is logged so a test can count the retries."""
    if injected(cell_key(cell)):
        append_line(cfg.run_dir / "failures.log", cell_key(cell))
        raise RuntimeError(f"injected failure in {cell_key(cell)}")


def hold_if_asked(key: str) -> None:
    """Test hook: SCALING_HOLD_CELL="<key>:<path>" makes the first attempt of the step named ``key`` — a trial
    (its cell key), a source job (``pool:<source>-r<n_real>-seed<seed>``) or the driver's checks before Ray
    starts (``driver:checks``) — touch ``<path>.held`` and wait until ``<path>`` exists, so a test can kill the
    driver or a node, or send a signal, at a moment it controls (the sweep cannot end meanwhile) instead of
    guessing a sleep. A retry does not hold again."""
    want, _, path = os.environ.get("SCALING_HOLD_CELL", "").rpartition(":")  # keys hold ':', the path must not
    if want != key or Path(path).with_suffix(".held").exists():
        return
    Path(path).with_suffix(".held").touch()
    while not Path(path).exists():
        time.sleep(0.05)


def use_allotted_cpus(cfg) -> None:
    """Torch threads = the CPUs Ray gave this trial or task, so packed workers do not oversubscribe."""
    torch.set_num_threads(cfg.threads)


def run_cell(cfg, cell: dict) -> dict:
    """Train one classifier for one cell; pure function of (config, cell)."""
    _inject_failure(cfg, cell)
    use_allotted_cpus(cfg)
    data, test_idx = dataset_of(cfg)
    base, _ = base_and_real_pool(cfg, cell["n_real"], cell["seed"])
    x, y, source_seconds = data.images[base], data.labels[base], 0.0
    if cell["n_synth"] > 0:
        xs, ys, meta = load_pool(cfg, cell["source"], cell["n_real"], cell["seed"], cell["n_synth"])
        x, y = np.concatenate([x, xs]), np.concatenate([y, ys])
        source_seconds = attributed_seconds(meta, cell["n_synth"])
    clf = cfg.classifier.training()
    clf["steps"] = cfg.train_steps(cell.get("budget", cfg.budgets[0]), len(y))
    clf.update(cfg.recipe_for(len(y)))  # the tuned lr / weight decay of this training-set size, if any
    weight = cell.get("synth_weight", cfg.synth_weights[0])
    if weight is not None and cell["n_synth"] > 0 and cell["source"] != "real":  # real images are interchangeable
        clf.update(synth_from=len(base), synth_weight=float(weight))
    # the classifier's stream depends on (seed, n_real) only: every source at a base size shares its init
    result = train_classifier(
        x,
        y,
        data.images.subset(test_idx),
        data.labels[test_idx],
        len(data.classes),
        recipe=cfg.recipe,
        precision=cfg.precision,
        seed=streams.torch_seed("classifier", cell["seed"], cell["n_real"]),
        **clf,
    )
    if not np.isfinite(result["loss"]):  # diverged (e.g. lr too high): chance accuracy must not count as done
        raise FloatingPointError(
            f"{cell_key(cell)}: training diverged (test loss {result['loss']}); check classifier.lr"
        )
    return {
        "accuracy": result["accuracy"],
        "loss": result["loss"],
        "train_seconds": result["train_seconds"],
        "lr": clf.get("lr"),
        "weight_decay": clf.get("weight_decay"),
        "steps": clf["steps"],
        "source_seconds": source_seconds,
        "per_class_accuracy": result["per_class_accuracy"].tolist(),
        "test_correct": pack_correct(result["correct"]),
    }


def placement() -> dict:
    """Where this trial or source job runs: the GPUs Ray assigned it and the ``CUDA_VISIBLE_DEVICES`` it saw
    (Ray sets it from those), and the node. Recorded with every result, so a run shows how it was packed."""
    try:
        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        assigned = {k: float(v) for k, v in ray.get_runtime_context().get_assigned_resources().items()}
    except Exception:  # outside Ray
        gpu_ids, assigned = [], {}
    return {
        "gpu_ids": gpu_ids,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "assigned": assigned,
        "node": _node_id(),
    }


def _node_id() -> str:
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # outside Ray (a direct call in a test or notebook)
        return platform.node()


def trainable(config: dict) -> None:
    """The Ray Tune function trainable: one cell, reported once. It counts as done once its ledger entry is in
    the run folder's store: a retry that finds the entry (a lost node, a failed upload) uploads it again."""
    cfg, cell = config["sweep"], config["cell"]
    parts = fingerprint_parts(cfg, cell)
    fingerprint = cell_fingerprint(cfg, cell)
    ledger = ledger_path(cfg, cell)
    run = RunFolder(cfg)
    if run.fetch(ledger):  # finished in an earlier attempt (e.g. a retry after a lost node)
        entry = read_entry(ledger)
        if entry.get("cell_fingerprint") == fingerprint and entry.get("checksum") == entry_checksum(entry):
            run.upload(ledger)
            tune.report(entry)
            return
    hold_if_asked(cell_key(cell))
    started_at = time.time()
    metrics = run_cell(cfg, cell)
    metrics.update(placement(), started_at=started_at, ended_at=time.time(), cell_fingerprint=fingerprint)
    entry = ledger_entry(metrics, cell, parts)
    run.write_json(ledger, entry)  # a remote run folder: the entry counts once it is in the store
    append_line(cfg.run_dir / "executions.log", cell_key(cell))  # one line per finished execution (tests count them)
    tune.report(entry)
