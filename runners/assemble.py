"""The cube (``results.nc``) and the figure features (``features.nc``) from a run folder's ledger and pools."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from runners.storage import RunFolder
from runners.config import protocol_label
from runners.data import dataset_of
from runners.integrity import IntegrityError
from runners.ledger import cell_key, ledger_path, read_entry
from runners.pools import is_prepared, load_pool, load_quality_arrays, pool_paths
from runners.quality import FEATURES_KEPT, judge_outputs, judge_path
from runners.sources import audited_meta, shared_generator
from analysis.cube import STATUS_DONE, STATUS_FAILED, empty_cube, unpack_correct_hex, write_netcdf

POOL_VARS = {
    "pool_label_accuracy": ("label_accuracy", "judge classifier's agreement with the pool's labels", "1"),
    "pool_frechet_distance": ("frechet_distance", "Frechet distance pool vs real test images, judge features", "1"),
    "pool_label_noise": ("label_noise", "fraction of retrieved images whose query label is wrong", "1"),
    "pool_domain_accuracy": (
        "domain_accuracy",
        "balanced accuracy of a linear real-vs-pool classifier on judge features (0.5: indistinguishable)",
        "1",
    ),
    "pool_copy_share": (
        "copy_share",
        "share of pool images whose nearest reference image is closer than 1/3 of the second nearest (pixel L2)",
        "1",
    ),
    "pool_copy_share_low": ("copy_share_low", "lower bound of the copy share's 95% bootstrap interval", "1"),
    "pool_copy_share_high": ("copy_share_high", "upper bound of the copy share's 95% bootstrap interval", "1"),
    "pool_nn_distance_ratio": (
        "nn_distance_ratio",
        "median nearest-reference distance of pool images over that of held-out real images (1: as novel)",
        "1",
    ),
}
SAMPLES_PER_CLASS = 8  # images per class and source kept for the sample grid (first n_real, first seed)


def _fill_cell(cube, loc: dict, entry: dict) -> bool:
    """One ledger entry into the cube; False when it predates per-item test records."""
    for name in ("accuracy", "loss", "train_seconds", "source_seconds"):
        cube[name].loc[loc] = entry[name]
    cube["per_class_accuracy"].loc[loc] = entry["per_class_accuracy"]
    cube["status"].loc[loc] = STATUS_DONE
    if "test_correct" not in entry:
        return False
    cube["test_correct"].loc[loc] = unpack_correct_hex(entry["test_correct"])
    return True


def _pool_quality(cfg, cube) -> None:
    """Pool quality per (source, n_real, seed): no n_synth dimension, every prefix shares its pool."""
    dims = ("source", "n_real", "seed")
    shape = tuple(cube.sizes[d] for d in dims)
    values = {var: np.full(shape, np.nan) for var in POOL_VARS}
    references = {}  # what each source's memorisation audit compared against
    for i, src in enumerate(cfg.sources):
        for j, r in enumerate(cfg.n_real):
            for k, seed in enumerate(cfg.seeds):
                meta_path = pool_paths(cfg, src, int(r), int(seed))[1]
                if max(cfg.n_synth) > 0 and meta_path.exists():
                    meta = json.loads(meta_path.read_text())  # read once, fills every quality variable
                    if "copy_share" not in meta and "sha256" in meta:  # written before the memorisation audit
                        meta = audited_meta(cfg, src, int(r), int(seed))
                    for var, (field_name, _, _) in POOL_VARS.items():
                        values[var][i, j, k] = meta.get(field_name, np.nan)
                    if "memorisation_reference" in meta:
                        references[str(src)] = meta["memorisation_reference"]
    for var, (_, doc, units) in POOL_VARS.items():
        cube[var] = xr.DataArray(values[var], dims=dims, attrs={"long_name": doc, "units": units})
    cube["pool_copy_share"].attrs["reference"] = json.dumps(references)


def _targets(cfg, cell: dict) -> list[dict]:
    """The cube locations one ledger cell fills: n_synth = 0 serves every source, and with several protocol
    settings a base-only or real-source cell serves every synthetic weight of its budget."""
    sources = cfg.sources if cell["n_synth"] == 0 else [cell["source"]]
    base = dict(n_real=cell["n_real"], n_synth=cell["n_synth"], seed=cell["seed"])
    if "budget" not in cell:
        return [dict(source=s, **base) for s in sources]
    out = []
    for s in sources:
        weights = cfg.synth_weights if (cell["n_synth"] == 0 or s == "real") else [cell["synth_weight"]]
        out += [dict(source=s, protocol=protocol_label(cell["budget"], w), **base) for w in weights]
    return out


def assemble_cube(cfg, failed: set[str], provenance: dict):
    """The cube from the ledger (the source of truth); n_synth=0 results fill every source."""
    data, test_idx = dataset_of(cfg)
    RunFolder(cfg).fetch_tree(cfg.run_dir / "ledger")  # a remote run folder: entries written on other nodes
    cube = empty_cube(
        cfg.sources,
        cfg.n_real,
        cfg.n_synth,
        cfg.seeds,
        dataset=cfg.dataset["name"],
        n_test=len(test_idx),
        classes=data.classes,
        provenance=provenance,
        per_class=True,
        test_items=True,
        protocols=cfg.protocol_labels() if cfg.multi_protocol else None,
    )
    cube.attrs["protocol"] = json.dumps(cfg.protocol())
    # each named source's kind, and those whose pools start from one run-wide generator (its interval is
    # conditional on that one training run): the report's caveats and the figures' styles read them
    cube.attrs["source_kinds"] = json.dumps({s: cfg.kind(s) for s in cfg.sources})
    cube.attrs["shared_generator_sources"] = json.dumps([s for s in cfg.sources if shared_generator(cfg, s)])
    if cfg.design is not None:  # cells outside a replace design stay pending: they are never run
        cube.attrs["design"] = json.dumps([list(c) for c in cfg.design])
    all_items = True
    for cell in cfg.cells():
        path = ledger_path(cfg, cell)
        entry = read_entry(path) if path.exists() else None  # damaged: one error naming the file
        for loc in _targets(cfg, cell):
            if entry is not None:
                all_items &= _fill_cell(cube, loc, entry)
            elif cell_key(cell) in failed:
                cube["status"].loc[loc] = STATUS_FAILED
    if not all_items:  # a ledger written before test items were recorded: the cube cannot carry them
        cube = cube.drop_vars("test_correct")
    _pool_quality(cfg, cube)
    return cube


def _samples(cfg, data, left_out: list[str]) -> np.ndarray:
    """Up to SAMPLES_PER_CLASS pool images per (source, class) at the first n_real and seed (NaN where missing)."""
    per_class = SAMPLES_PER_CLASS
    samples = np.full((len(cfg.sources), len(data.classes), per_class) + data.shape, np.nan, np.float32)
    for i, src in enumerate(cfg.sources):
        if is_prepared(cfg, src, cfg.n_real[0], cfg.seeds[0]):  # a failed source job leaves NaN here
            try:
                xs, ys, _ = load_pool(cfg, src, cfg.n_real[0], cfg.seeds[0], max(cfg.n_synth))
            except IntegrityError as exc:
                left_out.append(str(exc))
                continue
            for c in range(len(data.classes)):
                pick = xs[ys == c][:per_class]
                samples[i, c, : len(pick)] = pick
    return samples


def write_features(cfg) -> Path | None:
    """``features.nc`` beside the cube: judge features of real test images and of every pool's first
    images, with each pool's domain direction; the domain-gap figure reads only this file."""
    if max(cfg.n_synth) == 0 or not RunFolder(cfg).fetch(judge_path(cfg)):
        return None
    data, test_idx = dataset_of(cfg)
    real_idx = test_idx[: FEATURES_KEPT * 2]
    real_feats, _ = judge_outputs(cfg, data.images[real_idx])
    dims = (len(cfg.sources), len(cfg.n_real), len(cfg.seeds))
    feats = np.full(dims + (FEATURES_KEPT, real_feats.shape[1]), np.nan, np.float32)
    labels = np.full(dims + (FEATURES_KEPT,), -1, np.int64)
    direction = np.full(dims + (real_feats.shape[1],), np.nan, np.float32)
    left_out: list[str] = []  # pools that fail their integrity check: named once, never used for a figure
    for i, src in enumerate(cfg.sources):
        for j, r in enumerate(cfg.n_real):
            for k, seed in enumerate(cfg.seeds):
                if pool_paths(cfg, src, r, seed)[0].exists():
                    try:
                        q = load_quality_arrays(cfg, src, r, seed)
                    except IntegrityError as exc:  # figures only: the cube stands; the pool is named, not used
                        left_out.append(str(exc))
                        continue
                    m = len(q["features"])
                    feats[i, j, k, :m], labels[i, j, k, :m] = q["features"], q["labels"]
                    direction[i, j, k] = q["domain_direction"]
    ds = xr.Dataset(
        {
            "features": (("source", "n_real", "seed", "item", "feature"), feats),
            "labels": (("source", "n_real", "seed", "item"), labels),
            "domain_direction": (("source", "n_real", "seed", "feature"), direction),
            "real_features": (("real_item", "feature"), real_feats.astype(np.float32)),
            "real_labels": (("real_item",), data.labels[real_idx]),
            "samples": (("source", "class", "k", "channel", "y", "x"), _samples(cfg, data, left_out)),
        },
        coords={
            "source": list(cfg.sources),
            "n_real": list(cfg.n_real),
            "seed": list(cfg.seeds),
            "class": list(data.classes),
        },
        attrs={
            "description": "penultimate features of the judge classifier (trained on all non-test real images); "
            "real_features are test images; samples: pool images per class at the first n_real and seed",
            "classes": json.dumps(data.classes),
            "sample_n_real": int(cfg.n_real[0]),
            "sample_seed": int(cfg.seeds[0]),
        },
    )
    if left_out:
        print(
            f"warning: features.nc leaves out {len(left_out)} pool(s) that fail their integrity check "
            f"(figures only; the cube is unaffected), e.g. {left_out[0]}",
            file=sys.stderr,
        )
    return write_netcdf(ds, cfg.run_dir / "features.nc")
