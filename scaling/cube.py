"""The cube: the one contract every room shares.

An ``xarray.Dataset`` over dims ``source, n_real, n_synth, seed`` holding one classifier training per
cell. Saved as NetCDF through h5netcdf, atomically (temp file, then rename). Anyone can open it with
plain ``xarray.open_dataset``; this module adds validation, merging and the empty-cube constructor
the sweep fills in.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import xarray as xr

SCHEMA_VERSION = 1
DIMS = ("source", "n_real", "n_synth", "seed")
METRICS = ("accuracy", "loss", "train_seconds", "source_seconds")
REQUIRED_VARS = METRICS + ("status",)
REQUIRED_ATTRS = ("dataset", "n_test", "classes", "schema_version", "provenance")
KNOWN_SOURCES = ("real", "closed_set", "open_set", "retrieval")

STATUS_PENDING, STATUS_DONE, STATUS_FAILED = 0, 1, 2
STATUS_NAMES = {STATUS_PENDING: "pending", STATUS_DONE: "done", STATUS_FAILED: "failed"}


class CubeError(ValueError):
    """A cube that breaks the contract. The message names the offending field."""


def empty_cube(
    sources: Sequence[str],
    n_real: Sequence[int],
    n_synth: Sequence[int],
    seeds: Sequence[int],
    *,
    dataset: str,
    n_test: int,
    classes: Sequence[str],
    provenance: dict | None = None,
    per_class: bool = False,
) -> xr.Dataset:
    """A cube with every cell pending and every metric NaN."""
    coords = {
        "source": np.array(list(sources), dtype=str),
        "n_real": np.array(sorted(n_real), dtype=np.int64),
        "n_synth": np.array(sorted(n_synth), dtype=np.int64),
        "seed": np.array(sorted(seeds), dtype=np.int64),
    }
    shape = tuple(len(coords[d]) for d in DIMS)
    data_vars = {m: (DIMS, np.full(shape, np.nan)) for m in METRICS}
    data_vars["status"] = (DIMS, np.zeros(shape, dtype=np.int8))
    if per_class:
        data_vars["per_class_accuracy"] = (DIMS + ("class",), np.full(shape + (len(classes),), np.nan))
        coords["class"] = np.array(list(classes), dtype=str)
    cube = xr.Dataset(data_vars, coords=coords)
    cube.attrs.update(
        dataset=str(dataset),
        n_test=int(n_test),
        classes=json.dumps([str(c) for c in classes]),
        schema_version=SCHEMA_VERSION,
        provenance=json.dumps(provenance or {}, default=str),
    )
    _describe(cube)
    return cube


def _describe(cube: xr.Dataset) -> None:
    """Units and meanings travel with the file, so a plain xarray user can read it."""
    docs = {
        "accuracy": "test top-1 accuracy (0-1)",
        "loss": "test cross-entropy",
        "train_seconds": "classifier training wall time [s]",
        "source_seconds": "generation/retrieval cost attributed to the cell [s]",
        "status": "0 pending, 1 done, 2 failed",
        "per_class_accuracy": "test accuracy per class (0-1)",
    }
    for name, text in docs.items():
        if name in cube:
            cube[name].attrs["description"] = text
    cube["n_synth"].attrs["description"] = "images added from the source (extra real images for source=real)"
    cube["seed"].attrs["description"] = "draws the base subset, the added images and the classifier init"


def classes_of(cube: xr.Dataset) -> list[str]:
    return list(json.loads(cube.attrs["classes"]))


def provenance_of(cube: xr.Dataset) -> dict:
    return json.loads(cube.attrs.get("provenance", "{}"))


# --------------------------------------------------------------------------------------------------
# validation


def validate_cube(cube: xr.Dataset, *, require_source: str | None = None) -> xr.Dataset:
    """Check the contract; return the cube unchanged or raise :class:`CubeError` naming the problem."""
    if not isinstance(cube, xr.Dataset):
        raise CubeError(f"cube: expected an xarray.Dataset, got {type(cube).__name__}")
    for dim in DIMS:
        if dim not in cube.dims:
            raise CubeError(f"dims: missing dimension '{dim}' (have {sorted(map(str, cube.dims))})")
        if dim not in cube.coords:
            raise CubeError(f"coords: dimension '{dim}' has no coordinate values")
    extra = set(map(str, cube.dims)) - set(DIMS) - {"class"}
    if extra:
        raise CubeError(f"dims: unexpected dimension(s) {sorted(extra)}; allowed {list(DIMS)} and 'class'")
    for dim in DIMS:
        values = cube[dim].values
        if len(np.unique(values)) != len(values):
            raise CubeError(f"coords: duplicate values in '{dim}': {_dupes(values)}")
    for dim in ("n_real", "n_synth", "seed"):
        values = cube[dim].values
        if not np.issubdtype(values.dtype, np.integer):
            raise CubeError(f"coords: '{dim}' must be integers, got dtype {values.dtype}")
    if (cube["n_real"].values <= 0).any():
        raise CubeError(f"coords: 'n_real' must be positive, got {cube['n_real'].values.tolist()}")
    if (cube["n_synth"].values < 0).any():
        raise CubeError(f"coords: 'n_synth' must be >= 0, got {cube['n_synth'].values.tolist()}")
    if not (np.issubdtype(cube["source"].values.dtype, np.str_) or cube["source"].values.dtype == object):
        raise CubeError(f"coords: 'source' must be strings, got dtype {cube['source'].values.dtype}")
    for name in REQUIRED_VARS:
        if name not in cube.data_vars:
            raise CubeError(f"variables: missing data variable '{name}'")
        if tuple(cube[name].dims) != DIMS:
            raise CubeError(f"variables: '{name}' must have dims {DIMS}, has {tuple(cube[name].dims)}")
    for name in METRICS:
        if not np.issubdtype(cube[name].dtype, np.floating):
            raise CubeError(f"variables: '{name}' must be floating point (NaN marks missing), got {cube[name].dtype}")
    if not np.issubdtype(cube["status"].dtype, np.integer):
        raise CubeError(f"variables: 'status' must be an integer (int8) code, got {cube['status'].dtype}")
    status = cube["status"].values
    bad = ~np.isin(status, list(STATUS_NAMES))
    if bad.any():
        raise CubeError(f"variables: 'status' holds codes other than 0/1/2: {np.unique(status[bad]).tolist()}")
    acc = cube["accuracy"].values
    finite = np.isfinite(acc)
    if ((acc[finite] < 0) | (acc[finite] > 1)).any():
        worst = acc[finite][(acc[finite] < 0) | (acc[finite] > 1)][0]
        raise CubeError(f"variables: 'accuracy' must lie in [0, 1], found {worst!r}")
    if np.isinf(acc).any():
        raise CubeError("variables: 'accuracy' holds infinite values; missing cells must be NaN")
    if "per_class_accuracy" in cube.data_vars and "class" not in cube.dims:
        raise CubeError("variables: 'per_class_accuracy' needs a 'class' dimension")
    for key in REQUIRED_ATTRS:
        if key not in cube.attrs:
            raise CubeError(f"attrs: missing attribute '{key}'")
    try:
        json.loads(cube.attrs["provenance"])
    except (TypeError, ValueError) as exc:
        raise CubeError(f"attrs: 'provenance' must be a JSON string ({exc})") from None
    try:
        classes = json.loads(cube.attrs["classes"])
        assert isinstance(classes, list)
    except (TypeError, ValueError, AssertionError):
        raise CubeError("attrs: 'classes' must be a JSON list of class names") from None
    if int(cube.attrs["n_test"]) <= 0:
        raise CubeError(f"attrs: 'n_test' must be positive, got {cube.attrs['n_test']!r}")
    if int(cube.attrs["schema_version"]) > SCHEMA_VERSION:
        raise CubeError(
            f"attrs: 'schema_version' {cube.attrs['schema_version']} is newer than this package "
            f"understands ({SCHEMA_VERSION}); upgrade the package"
        )
    if require_source is not None and require_source not in cube["source"].values:
        raise CubeError(
            f"source: the cube has no '{require_source}' source (have {cube['source'].values.tolist()}); "
            "the reference curve needs it"
        )
    return cube


def _dupes(values: Iterable) -> list:
    seen, dupes = set(), []
    for v in values:
        (dupes.append(v) if v in seen else seen.add(v))
    return [v.item() if hasattr(v, "item") else v for v in dupes]


# --------------------------------------------------------------------------------------------------
# I/O


def open_cube(path: str | os.PathLike) -> xr.Dataset:
    """Open and validate a cube file; the data are loaded into memory and the file is closed."""
    path = Path(path)
    if not path.exists():
        raise CubeError(f"path: no such cube file: {path}")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            cube = ds.load()
    except Exception as exc:  # h5py/netCDF raise many types for a file that is not HDF5 at all
        raise CubeError(f"path: {path} is not a readable NetCDF cube ({type(exc).__name__}: {exc})") from None
    cube["source"] = cube["source"].astype(str)
    return validate_cube(cube)


def save_cube(cube: xr.Dataset, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Validate, then write atomically: a temp file in the same folder, renamed over the target.

    A reader never sees a half-written cube, and an existing file is only replaced when
    ``overwrite=True``.
    """
    validate_cube(cube)
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"path: {path} exists; pass overwrite=True to replace it")
    out = cube.copy()
    out["source"] = out["source"].astype(str)
    if "class" in out.coords:
        out["class"] = out["class"].astype(str)
    write_atomic(path, lambda tmp: out.to_netcdf(tmp, engine="h5netcdf"))
    return path


def write_atomic(path: str | os.PathLike, write) -> Path:
    """``write(tmp)`` to a temp file beside ``path``, then rename it over ``path``.

    Readers never see a half-written file, and concurrent writers of the same content cannot corrupt it.
    The temp name keeps the suffix (``np.savez`` would otherwise append ``.npz``); it is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# --------------------------------------------------------------------------------------------------
# merge


def merge_cubes(a: xr.Dataset, b: xr.Dataset, *, atol: float = 1e-9) -> xr.Dataset:
    """Outer join on coordinates; a cell computed (status done) in both must agree.

    Pending or failed cells are filled from whichever cube has the cell done. Attributes come from
    ``a``; the provenance of both is kept.
    """
    validate_cube(a)
    validate_cube(b)
    for key in ("dataset", "n_test", "classes"):
        if str(a.attrs[key]) != str(b.attrs[key]):
            raise CubeError(f"attrs: cubes disagree on '{key}': {a.attrs[key]!r} vs {b.attrs[key]!r}")
    a_al, b_al = xr.align(a, b, join="outer")
    a_status = a_al["status"].fillna(STATUS_PENDING).astype(np.int8)
    b_status = b_al["status"].fillna(STATUS_PENDING).astype(np.int8)
    both = (a_status == STATUS_DONE) & (b_status == STATUS_DONE)
    for name in ("accuracy", "loss"):
        diff = np.abs(a_al[name] - b_al[name]).where(both)
        if bool((diff > atol).any()):
            cell = diff.where(diff > atol, drop=True)
            first = {d: cell[d].values[0].item() for d in DIMS if cell.sizes.get(d, 0)}
            raise CubeError(f"merge: cell {first} was computed in both cubes with different '{name}'")
    take_b = (b_status == STATUS_DONE) & (a_status != STATUS_DONE)
    take_b = take_b | ((a_status == STATUS_PENDING) & (b_status == STATUS_FAILED))
    merged = a_al.copy()
    for name in a_al.data_vars:
        if name in b_al:
            merged[name] = xr.where(take_b, b_al[name], a_al[name])
    merged["status"] = xr.where(take_b, b_status, a_status).astype(np.int8)
    merged.attrs = dict(a.attrs)
    merged.attrs["provenance"] = json.dumps(
        {"merged_from": [provenance_of(a), provenance_of(b)]}, default=str
    )
    _describe(merged)
    return validate_cube(merged)


def status_counts(cube: xr.Dataset) -> dict[str, int]:
    codes, counts = np.unique(cube["status"].values, return_counts=True)
    return {STATUS_NAMES[int(c)]: int(n) for c, n in zip(codes, counts)}
