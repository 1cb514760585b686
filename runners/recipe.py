"""Recipe check: is the reference curve an artefact of one learning rate and weight decay for every size?

``tune_recipe`` runs a Ray Tune grid over (lr, weight_decay) for every training-set size of the real curve,
training on the size's real images minus a stratified validation split carved from them and scoring on that
split — the test set is never touched. It writes the chosen values per size; a sweep with
``classifier.tuned_recipe: <that file>`` then trains every cell with the values of its training-set size.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from ray import tune
from tqdm import tqdm

from runners import streams
from runners.config import SweepConfig, load_config
from runners.data import base_and_real_pool, dataset_of
from runners.ledger import write_json_atomic
from runners.sweep import build_tuner, ray_session
from runners.train import train_classifier
from runners.trial import use_allotted_cpus

DEFAULT_LRS = (0.001, 0.002, 0.004, 0.008, 0.016)
DEFAULT_WDS = (5e-4, 5e-3, 5e-2)


def real_sizes(cfg: SweepConfig) -> dict[int, tuple[int, int]]:
    """Every training-set size of the real curve, with the first (n_real, n_synth) cell that has it."""
    out: dict[int, tuple[int, int]] = {}
    for r in cfg.n_real:
        for s in cfg.n_synth:
            out.setdefault(r + s, (r, s))
    return dict(sorted(out.items()))


def validation_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions (train, validation): per class ``round(fraction * count)`` for validation, at least one where a
    class has two or more images, never the class's last image. A set too small for that (one image per class)
    still gets ``max(1, round(fraction * n))`` validation images, drawn at random: a score needs images."""
    val = []
    for c in np.unique(labels):
        pos = rng.permutation(np.flatnonzero(labels == c))
        k = min(len(pos) - 1, max(1 if len(pos) >= 2 else 0, int(round(fraction * len(pos)))))
        val.append(pos[:k])
    val = np.concatenate(val) if val else np.zeros(0, np.int64)
    need = max(1, int(round(fraction * len(labels)))) - len(val)
    if need > 0 and len(labels) > 1:
        rest = rng.permutation(np.setdiff1d(np.arange(len(labels)), val))
        val = np.concatenate([val, rest[: min(need, len(rest) - 1)]])
    val = np.sort(val.astype(np.int64))
    return np.setdiff1d(np.arange(len(labels)), val), val


def _trial(config: dict) -> None:
    """One (size, seed, lr, weight decay): validation accuracy of a classifier trained on the rest."""
    cfg, size, seed = config["sweep"], int(config["n_total"]), int(config["seed"])
    use_allotted_cpus(cfg)
    n_real, n_synth = real_sizes(cfg)[size]
    data, _ = dataset_of(cfg)
    base, pool = base_and_real_pool(cfg, n_real, seed, n_synth)
    idx = np.concatenate([base, pool])
    train, val = validation_split(data.labels[idx], config["val_fraction"], streams.rng("validation", seed, size))
    out = train_classifier(
        data.images[idx[train]],
        data.labels[idx[train]],
        data.images[idx[val]],
        data.labels[idx[val]],
        len(data.classes),
        recipe=cfg.recipe,
        steps=cfg.train_steps(cfg.budgets[0], len(train)),
        lr=float(config["lr"]),
        weight_decay=float(config["weight_decay"]),
        seed=streams.torch_seed("classifier", seed, n_real),
        **cfg.classifier.training(),
    )
    tune.report({"val_accuracy": out["accuracy"], "val_loss": out["loss"], "n_val": int(len(val))})


def choose(rows: list[dict]) -> dict[int, dict]:
    """Per size, the (lr, weight decay) with the best mean validation accuracy over seeds (ties: lower loss)."""
    by: dict[tuple, list] = {}
    for r in rows:
        by.setdefault((r["n_total"], r["lr"], r["weight_decay"]), []).append(r)
    best: dict[int, dict] = {}
    for (size, lr, wd), rs in by.items():
        acc = float(np.mean([r["val_accuracy"] for r in rs]))
        loss = float(np.mean([r["val_loss"] for r in rs]))
        cur = best.get(size)
        if cur is None or (acc, -loss) > (cur["val_accuracy"], -cur["val_loss"]):
            best[size] = {
                "lr": lr,
                "weight_decay": wd,
                "val_accuracy": acc,
                "val_loss": loss,
                "n_val": int(np.mean([r["n_val"] for r in rs])),
            }
    return dict(sorted(best.items()))


def tune_recipe(
    config,
    *,
    lrs=DEFAULT_LRS,
    weight_decays=DEFAULT_WDS,
    seeds=None,
    val_fraction: float = 0.2,
    address: str | None = None,
    storage: str | None = None,
    out: Path | None = None,
    quiet: bool = False,
) -> Path:
    """Run the grid, write ``recipe/tuned.json`` in the run folder (or ``out``) and return its path."""
    cfg = load_config(config, storage=storage)
    if not 0 < val_fraction < 0.5:
        raise ValueError(f"--val-fraction: must lie in (0, 0.5), got {val_fraction}")
    for name, values in (("--lr", lrs), ("--weight-decay", weight_decays)):
        if not values or any(not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0) for v in values):
            raise ValueError(f"{name}: give non-negative numbers, got {values!r}")
    if any(v <= 0 for v in lrs):
        raise ValueError(f"--lr: learning rates must be positive, got {lrs!r}")
    seeds = list(cfg.seeds[:2] if seeds is None else seeds)
    unknown = [s for s in seeds if s not in cfg.seeds]
    if unknown:
        raise ValueError(f"--seeds: {unknown} are not seeds of the config {list(cfg.seeds)}")
    sizes = list(real_sizes(cfg))
    n = len(sizes) * len(seeds) * len(lrs) * len(weight_decays)
    space = {
        "sweep": cfg,
        "val_fraction": val_fraction,
        "n_total": tune.grid_search(sizes),
        "seed": tune.grid_search(seeds),
        "lr": tune.grid_search(list(lrs)),
        "weight_decay": tune.grid_search(list(weight_decays)),
    }
    bar = tqdm(total=n, desc="recipe check", unit="trial", disable=quiet, file=sys.stdout)

    class Progress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            bar.update(1)

    with ray_session(cfg, address):
        tuner = build_tuner(
            _trial,
            space,
            resources={"cpu": cfg.cpus_per_trial},
            name="recipe-check",
            storage=cfg.run_dir / "recipe" / "tune",
            max_failures=cfg.max_failures,
            callbacks=[Progress()],
        )
        grid = tuner.fit()
    bar.close()
    rows = [
        {
            **{k: r.config[k] for k in ("n_total", "seed", "lr", "weight_decay")},
            **{k: r.metrics[k] for k in ("val_accuracy", "val_loss", "n_val")},
        }
        for r in grid
        if r.error is None
    ]
    if len(rows) < n:
        raise RuntimeError(f"recipe check: {n - len(rows)} of {n} trials failed; see the Ray errors above")
    default = (float(cfg.classifier.lr), float(cfg.classifier.weight_decay))
    chosen = choose(rows)
    payload = {
        "dataset": cfg.dataset,
        "grid": {"lr": list(lrs), "weight_decay": list(weight_decays)},
        "seeds": seeds,
        "val_fraction": val_fraction,
        "default": {"lr": default[0], "weight_decay": default[1]},
        "sizes": {str(k): v for k, v in chosen.items()},
        "trials": rows,
    }
    path = Path(out) if out else cfg.run_dir / "recipe" / "tuned.json"
    write_json_atomic(path, payload)
    return path
