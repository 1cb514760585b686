"""What a sweep will run, before it runs: trials, pools, generator trainings, and what they cost.

The cost table (:mod:`runners.costs`) has one row per stage — generator training, sampling, text-to-image,
retrieval (embedding and search), trials — with jobs, images, device-hours, disk and the basis of each
throughput, and the wall time on ``--gpus N`` (or this machine's CPU slots for a CPU config). A dry run works
before the datasets and models are in place: what is missing is listed, and sizes fall back to the known
sizes of the paper datasets.
"""

from __future__ import annotations

import os
import sys

import torch

from runners.checks import ConfigError, files_checked_later
from runners.config import load_config
from runners.data import dataset_facts
from runners.costs import Stage, cost_table_lines, fmt_bytes, load_table, lookup, shape_key
from runners.pools import pool_key
from runners.sources import generator_trainings
from runners.sources.base import Pricing
from runners.train import build_model


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
    return {
        "trials": len(cells),
        "sources": list(cfg.sources),
        "source_jobs": len(source_jobs(cfg)),
        "generator_jobs": generator_trainings(cfg),
        "grid": f"{len(cfg.sources)} sources x {len(cfg.n_real)} n_real x {len(cfg.n_synth)} n_synth x "
        f"{len(cfg.seeds)} seeds (n_synth=0 shared across sources)",
    }


def stages(cfg, device: str, table: dict | None = None) -> list[Stage]:
    """The cost of each stage of a sweep on ``device`` ('cpu' or 'gpu')."""
    table = table or load_table()
    n_images, shape = dataset_facts(cfg.dataset)
    pixels = shape[0] * shape[1] * shape[2]
    jobs = source_jobs(cfg)
    n_classes = 100 if n_images is None else 10  # only the generator's class embedding depends on it (tiny)
    out = [
        Stage(
            "dataset cache",
            1 if n_images else 0,
            n_images or 0,
            0.0,
            (n_images or 0) * pixels,
            "decoded once per node" if n_images else "size unknown until the files are in place",
        )
    ]
    priced: set = set()  # run-wide generators several sources start from: priced once
    for source in cfg.sources:  # each source prices its own stages (runners.sources: ``price``)
        n_pools = sum(1 for j in jobs if j["source"] == source)
        if n_pools:
            p = Pricing(table, device, shape, n_classes, n_images, n_pools, priced)
            out += cfg.module(source).price(cfg, source, p)
    out.append(_trial_stage(cfg, table, device, shape))
    return out


def _trial_stage(cfg, table, device, shape) -> Stage:
    key = f"classifier/{cfg.recipe}/w{cfg.width}/{shape_key(shape)}"
    rate, basis = lookup(table, device, key)
    cells = cfg.cells()
    images = sum(
        cfg.train_steps(c.get("budget", cfg.budgets[0]), c["n_real"] + c["n_synth"])
        * min(cfg.batch_size, c["n_real"] + c["n_synth"])
        for c in cells
    )
    return Stage("trials", len(cells), images, images / rate / 3600, 0, f"{key}: {rate:.3g} img/s, {basis}")


# A trial this large is a typo (``batch_size: 10**9``), not a plan: it is refused before anything runs
MAX_TRIAL_SECONDS = 7 * 24 * 3600  # one classifier training, at the cost table's rate for the config's device
FLOAT_BYTES_TRAINING = 4  # fp32 parameters, gradients and activations (bf16 on GPU only lowers it)


def classifier_bytes(cfg, shape) -> tuple[int, int]:
    """(parameter bytes, activation bytes of one batch) of one trial's classifier, counted exactly by building it
    on torch's meta device (no memory is allocated): parameters with their gradient and two Adam moments,
    every module's output kept for the backward pass and its gradient."""
    with torch.device("meta"):
        model = build_model(cfg.recipe, shape[0], 10, cfg.width)
    params = sum(p.numel() for p in model.parameters())
    outputs: list[int] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel())) for m in leaves]
    try:
        model(torch.zeros((1, *shape), device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return 4 * params * FLOAT_BYTES_TRAINING, 2 * sum(outputs) * cfg.batch_size * FLOAT_BYTES_TRAINING


def memory_limit(cfg, local: bool) -> tuple[int, str]:
    """What one trial may use: this machine's memory for a local sweep, else (a cluster) 1 TiB."""
    if local:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"
        except (ValueError, OSError):
            pass
    return 1 << 40, "1 TiB"


def check_trial_size(cfg, *, local: bool = True) -> None:
    """Refuse, naming the field, a classifier whose training could not fit in memory or would run for more than
    :data:`MAX_TRIAL_SECONDS` — what the dry run estimates, checked before Ray starts."""
    _, shape = dataset_facts(cfg.dataset)
    params, acts = classifier_bytes(cfg, shape)
    limit, where = memory_limit(cfg, local)
    if params + acts > limit:
        field_name = "classifier.width" if params > acts else "classifier.batch_size"
        raise ConfigError(
            f"{field_name}: one trial's classifier would need about {fmt_bytes(params + acts)} to train "
            f"(width {cfg.width}, batch {cfg.batch_size} of {shape_key(shape)} images), more than {where} "
            f"({fmt_bytes(limit)})"
        )
    rate, _ = lookup(load_table(), _device_of(cfg), f"classifier/{cfg.recipe}/w{cfg.width}/{shape_key(shape)}")
    worst = max(
        cfg.train_steps(c.get("budget", cfg.budgets[0]), c["n_real"] + c["n_synth"])
        * min(cfg.batch_size, c["n_real"] + c["n_synth"])
        for c in cfg.cells()
    )
    if worst / rate > MAX_TRIAL_SECONDS:
        field_name = "classifier.max_steps" if "epochs" in cfg.budgets else "classifier.steps"
        raise ConfigError(
            f"{field_name}: one trial would train about {worst / rate / 86400:,.0f} days on "
            f"{_device_of(cfg)} ({worst:,} images at {rate:.3g} img/s, the cost table's rate); at most "
            f"{MAX_TRIAL_SECONDS / 86400:g} days per trial"
        )


def placement_of(cfg) -> dict:
    """What the dry run prices per job — the same requests the sweep makes of Ray (one home each:
    :attr:`SweepConfig.trial_resources`, :attr:`SweepConfig.source_job_resources`)."""
    return {"trial": cfg.trial_resources, "source_job": cfg.source_job_resources}


def _device_of(cfg) -> str:
    return "gpu" if cfg.trial_resources["GPU"] > 0 else "cpu"


def print_plan(cfg, out=None, *, gpus: float | None = None, missing: list[str] | None = None) -> dict:
    out = out or sys.stdout
    p = plan(cfg)
    device = _device_of(cfg)
    cpu_slots = max(1, int((cfg.resources.num_cpus or os.cpu_count() or 1) // cfg.cpus_per_trial))
    print(f"sweep '{cfg.name}' on {cfg.dataset['name']}: {p['grid']}", file=out)
    if cfg.replace is not None:
        print(
            f"  protocol: replace — budgets {cfg.replace['budgets']}, replaced {cfg.replace['replaced']}: "
            f"{len(cfg.design)} of the grid's (n_real, n_synth) cells run",
            file=out,
        )
    print(
        f"  trials: {p['trials']}   source jobs (pools): {p['source_jobs']}   generator trainings: "
        f"{p['generator_jobs']}",
        file=out,
    )
    if cfg.multi_protocol or cfg.budgets != ["steps"]:
        print(f"  protocol settings: {', '.join(cfg.protocol_labels())}", file=out)
    if device == "gpu":
        devices = float(gpus if gpus is not None else max(torch.cuda.device_count(), 1))
        per_job = placement_of(cfg)["source_job"]["GPU"]  # what the sweep asks Ray for, from the one default
    else:
        devices, per_job = float(cpu_slots), 1.0
    print(
        f"  cost ({'GPU' if device == 'gpu' else 'CPU'}; judge training, evaluation and Ray overhead not counted):",
        file=out,
    )
    for row in cost_table_lines(stages(cfg, device), device, devices, per_job):
        print(row, file=out)
    if device == "gpu" and gpus is None:
        print("  (pass --gpus N for the wall time on N GPUs)", file=out)
    for m in missing or []:
        print(f"  not in place yet: {m}", file=out)
    print(f"  output: {cfg.run_dir / 'results.nc'}", file=out)
    return p


def dry_run(config, settings=(), *, storage: str | None = None, gpus: float | None = None) -> dict:
    """Validate and price a config; missing dataset/model files are listed, not fatal."""
    with files_checked_later() as missing:
        cfg = load_config(config, settings, storage=storage)
    return print_plan(cfg, gpus=gpus, missing=missing)
