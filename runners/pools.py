"""Where pools and generator weights live, what names them, and what a trial reads back.

A pool is at least ``max(n_synth)`` labelled images for one (source, n_real, seed); trials take prefixes, so
the ``n_synth`` values of a sweep are nested subsets. Every source builds its pools prefix-stable (a pool of
400 is the first 400 images of the pool of 800), so the size is not part of a pool's name: a run whose largest
n_synth grows extends its pools in place and keeps every finished cell. Every artefact is named by a content
hash of what determines it (dataset, split, source options, n_real when it matters, seed): preparing an
existing pool is a file read, and a changed option can never reuse a stale one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runners.storage import RunFolder
from runners.data import dataset_of
from runners.integrity import file_checksum, verify_file
from runners.options import content_hash

POOL_VERSION = 4  # bump when the recipe changes what a cached pool contains
SHARES_ACROSS_N_REAL = ("open_set",)  # pools that do not depend on the base subset
# arrays a pool file holds besides images/labels; trials skip them
QUALITY_ARRAYS = ("features", "domain_direction")


@dataclass
class Pool:
    """What a source builds: ``arrays`` (``labels`` plus ``images`` uint8 or dataset ``indices``, optional
    ``label_wrong``) and ``meta`` (its cost: generator/sample seconds, how many pools share the generator)."""

    arrays: dict
    meta: dict = field(default_factory=dict)


def dataset_spec(cfg) -> dict:
    return {"dataset": cfg.dataset, "test_fraction": cfg.test_fraction, "version": POOL_VERSION}


def pool_spec(cfg, source: str, n_real: int, seed: int) -> dict:
    """Everything that determines a pool's content."""
    kind = cfg.kind(source)  # not the name: two names of one kind and the same options share their pool
    spec = {**dataset_spec(cfg), "source": kind, "seed": int(seed), "options": cfg.options(source)}
    if kind not in SHARES_ACROSS_N_REAL:
        spec["n_real"] = int(n_real)
    return spec


def pool_key(cfg, source: str, n_real: int, seed: int) -> str:
    return content_hash(pool_spec(cfg, source, n_real, seed))


def pool_paths(cfg, source: str, n_real: int, seed: int) -> tuple[Path, Path]:
    key, kind = pool_key(cfg, source, n_real, seed), cfg.kind(source)
    folder = cfg.run_dir / "pools"
    return folder / f"{kind}-{key}.npz", folder / f"{kind}-{key}.json"


def prepared_size(cfg, source: str, n_real: int, seed: int) -> int:
    """Images in the finished pool of (source, n_real, seed); 0 when there is none."""
    npz, meta_path = pool_paths(cfg, source, n_real, seed)
    run = RunFolder(cfg)
    if not (run.fetch(meta_path) and run.fetch(npz)):  # the meta marks a finished pool
        return 0
    meta = json.loads(meta_path.read_text())
    # a pool of a version that recorded no checksum cannot be verified: rebuilt (pools are seeded, so exactly)
    return int(meta["size"]) if "sha256" in meta else 0


def is_prepared(cfg, source: str, n_real: int, seed: int) -> bool:
    """A finished pool holds the sweep's largest n_synth (a smaller one is extended, not used)."""
    return prepared_size(cfg, source, n_real, seed) >= max(cfg.n_synth)


def read_pool(cfg, source: str, n_real: int, seed: int) -> Pool:
    """A finished pool's arrays (without the figure arrays, which are recomputed) and meta record."""
    npz, meta_path = pool_paths(cfg, source, n_real, seed)
    meta = _verified(npz, json.loads(meta_path.read_text()))
    with np.load(npz) as f:
        arrays = {k: f[k] for k in f.files if k not in QUALITY_ARRAYS}
    return Pool(arrays, {k: v for k, v in meta.items() if k != "sha256"})


def generator_folder(cfg, key: str) -> Path:
    """A generator's folder, with its files fetched first when the run folder is remote and they exist there."""
    folder = cfg.run_dir / "generators" / key
    RunFolder(cfg).fetch_tree(folder)
    return folder


def save_pool(cfg, source: str, n_real: int, seed: int, pool: Pool) -> None:
    """Arrays first, meta second, each atomically: a pool counts as prepared only when both exist."""
    npz, meta_path = pool_paths(cfg, source, n_real, seed)
    run = RunFolder(cfg)
    run.write(npz, lambda p: np.savez(p, **pool.arrays))  # arrays first, meta second, here and in the store
    run.write_json(meta_path, {**pool.meta, "sha256": file_checksum(npz)})


def write_meta(cfg, source: str, n_real: int, seed: int, meta: dict) -> dict:
    """Replace a finished pool's meta record (its arrays and their checksum untouched: the caller keeps ``sha256``);
    returns it."""
    RunFolder(cfg).write_json(pool_paths(cfg, source, n_real, seed)[1], meta)
    return meta


def _verified(npz: Path, meta: dict) -> dict:
    """A pool's meta record, its arrays checked against the checksum it recorded: a pool file replaced or edited
    in place would change what every later classifier trains on."""
    verify_file(npz, meta.get("sha256"), "pool", f"delete it and {npz.with_suffix('.json').name} to rebuild that pool")
    return meta


def read_meta(cfg, source: str, n_real: int, seed: int) -> dict:
    path = pool_paths(cfg, source, n_real, seed)[1]
    RunFolder(cfg).fetch(path)
    return json.loads(path.read_text())


def pool_images(cfg, arrays) -> np.ndarray:
    """Float images in [0, 1]: stored uint8 samples, or dataset images by index (no re-quantisation)."""
    if "indices" in arrays:
        data, _ = dataset_of(cfg)
        return data.images[np.asarray(arrays["indices"])]
    return np.asarray(arrays["images"], dtype=np.float32) / 255.0


def load_pool(cfg, source: str, n_real: int, seed: int, n: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The first ``n`` images and labels of a prepared pool (nested prefixes), and its meta record."""
    npz, meta_path = pool_paths(cfg, source, n_real, seed)
    run = RunFolder(cfg)
    if not (run.fetch(npz) and run.fetch(meta_path)):
        raise FileNotFoundError(
            f"pool for {source} n_real={n_real} seed={seed} is not prepared ({npz}); "
            "sources are prepared before the trials"
        )
    meta = _verified(npz, json.loads(meta_path.read_text()))
    with np.load(npz) as f:
        arrays = {k: f[k][:n] for k in f.files if k not in QUALITY_ARRAYS}
    return pool_images(cfg, arrays), arrays["labels"], meta


def load_quality_arrays(cfg, source: str, n_real: int, seed: int) -> dict:
    """The judge features (with the labels of those images) and domain direction a pool file keeps for the
    domain-gap figure."""
    npz, meta_path = pool_paths(cfg, source, n_real, seed)
    RunFolder(cfg).fetch(npz)
    RunFolder(cfg).fetch(meta_path)
    _verified(npz, json.loads(meta_path.read_text()))
    with np.load(npz) as f:
        out = {k: f[k] for k in QUALITY_ARRAYS if k in f.files}
        out["labels"] = f["labels"][: len(out["features"])]
    return out


def attributed_seconds(meta: dict, n_synth: int) -> float:
    """A cell's share of its pool's cost: the generator (split among the pools it serves) plus the
    sampling/retrieval time of the ``n_synth`` images it uses."""
    return meta["generator_seconds"] / meta["generator_shared_by"] + meta["sample_seconds"] * n_synth / meta["size"]
