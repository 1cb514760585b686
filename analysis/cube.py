"""The cube: the one contract every room shares.

An ``xarray.Dataset`` over dims ``source, n_real, n_synth, seed`` holding one classifier training per
cell. Saved as NetCDF through h5netcdf, atomically (temp file, then rename). Anyone can open it with
plain ``xarray.open_dataset``; this module adds validation, merging and the empty-cube constructor
the sweep fills in.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from analysis.io import write_atomic

SCHEMA_VERSION = 1
DIMS = ("source", "n_real", "n_synth", "seed")
PROTOCOL_DIM = "protocol"  # optional: a sweep over training protocols (budget policy x synthetic weight)


def cell_dims(cube: xr.Dataset) -> tuple[str, ...]:
    """The dims of a cell variable: DIMS, plus ``protocol`` when the cube sweeps training protocols."""
    return DIMS + ((PROTOCOL_DIM,) if PROTOCOL_DIM in cube.dims else ())


METRICS = ("accuracy", "loss", "train_seconds", "source_seconds")
REQUIRED_VARS = METRICS + ("status",)
REQUIRED_ATTRS = ("dataset", "n_test", "classes", "schema_version", "provenance")

STATUS_PENDING, STATUS_DONE, STATUS_FAILED = 0, 1, 2
REFERENCE = "real"  # the source every other is measured against (more real images)
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
    test_items: bool = False,
    protocols: Sequence[str] | None = None,
) -> xr.Dataset:
    """A cube with every cell pending and every metric NaN.

    ``test_items=True`` adds ``test_correct``: which test images each cell classified correctly, packed
    8 to a byte along ``test_byte`` (``np.packbits``), so intervals can resample the test set too.
    ``protocols`` adds a ``protocol`` dimension (one label per training-protocol setting of the sweep).
    """
    coords = {
        "source": np.array(list(sources), dtype=str),
        "n_real": np.array(sorted(n_real), dtype=np.int64),
        "n_synth": np.array(sorted(n_synth), dtype=np.int64),
        "seed": np.array(sorted(seeds), dtype=np.int64),
    }
    dims = DIMS
    if protocols is not None:
        coords[PROTOCOL_DIM] = np.array(list(protocols), dtype=str)
        dims = DIMS + (PROTOCOL_DIM,)
    shape = tuple(len(coords[d]) for d in dims)
    data_vars = {m: (dims, np.full(shape, np.nan)) for m in METRICS}
    data_vars["status"] = (dims, np.zeros(shape, dtype=np.int8))
    if per_class:
        data_vars["per_class_accuracy"] = (dims + ("class",), np.full(shape + (len(classes),), np.nan))
        coords["class"] = np.array(list(classes), dtype=str)
    if test_items:
        data_vars["test_correct"] = (dims + (TEST_DIM,), np.zeros(shape + (test_bytes(n_test),), dtype=np.uint8))
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


# CF conventions: long_name labels axes (``cube.accuracy.plot()`` is readable), units is a UDUNITS string
# ("1" for a dimensionless ratio); flag_values/flag_meanings decode the status code.
VARIABLE_ATTRS = {
    "accuracy": {"long_name": "test top-1 accuracy", "units": "1"},
    "loss": {"long_name": "test cross-entropy", "units": "1"},
    "train_seconds": {"long_name": "classifier training wall time", "units": "s"},
    "source_seconds": {"long_name": "generation or retrieval time attributed to the cell", "units": "s"},
    "status": {
        "long_name": "cell status",
        "flag_values": np.array([0, 1, 2], np.int8),
        "flag_meanings": "pending done failed",
    },
    "per_class_accuracy": {"long_name": "test accuracy per class", "units": "1"},
    "test_correct": {
        "long_name": "test images classified correctly, 8 per byte",
        "comment": "numpy.packbits, big-endian bit order; attrs n_test images; meaningful where status is done",
    },
    "n_real": {"long_name": "real training images (base subset)", "units": "1"},
    "n_synth": {
        "long_name": "images added from the source",
        "units": "1",
        "comment": "extra real images for source=real",
    },
    "seed": {"long_name": "seed", "comment": "draws the base subset, the added images and the classifier init"},
    "source": {"long_name": "source of the added images"},
}


def fill_planted(cube: xr.Dataset, acc: np.ndarray) -> xr.Dataset:
    """Set every cell of a planted cube (from :func:`empty_cube`) to ``done`` with accuracies ``acc`` (the cube's
    (source, n_real, n_synth, seed) shape); loss is a stand-in with the right direction, times are 1 s and 0 s."""
    cube["accuracy"].values[:] = acc
    cube["loss"].values[:] = -np.log(np.clip(acc, 1e-3, 1))
    cube["train_seconds"].values[:] = 1.0
    cube["source_seconds"].values[:] = 0.0
    cube["status"].values[:] = STATUS_DONE
    return cube


def _describe(cube: xr.Dataset) -> None:
    """Units and meanings travel with the file, so a plain xarray user can read (and plot) it."""
    for name, attrs in VARIABLE_ATTRS.items():
        if name in cube.variables:
            cube[name].attrs.update(attrs)


TEST_DIM = "test_byte"


def test_bytes(n_test: int) -> int:
    return (int(n_test) + 7) // 8


def pack_correct(correct) -> str:
    """A boolean vector over the test images as a hex string (8 images a byte): compact in a JSON ledger."""
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes().hex()


def unpack_correct_hex(text: str) -> np.ndarray:
    """The packed bytes of :func:`pack_correct` (uint8), as the cube stores them."""
    return np.frombuffer(bytes.fromhex(text), dtype=np.uint8)


def correct_items(cube: xr.Dataset) -> xr.DataArray | None:
    """``test_correct`` unpacked to booleans over a ``test_item`` dimension, or None if the cube has none."""
    if "test_correct" not in cube.data_vars:
        return None
    n_test = int(cube.attrs["n_test"])
    bits = np.unpackbits(cube["test_correct"].values, axis=-1, count=n_test).astype(bool)
    dims = tuple(d for d in cube["test_correct"].dims if d != TEST_DIM) + ("test_item",)
    return xr.DataArray(bits, dims=dims, coords={d: cube[d] for d in dims[:-1]})


AUDIT_VARS = ("pool_copy_share", "pool_copy_share_low", "pool_copy_share_high", "pool_nn_distance_ratio")


def pool_audit(cube: xr.Dataset, source: str) -> pd.DataFrame | None:
    """A source's memorisation audit per base size (index ``n_real``), from the pool variables a sweep writes:
    ``copy_share`` (mean over seeds), ``copy_low`` / ``copy_high`` (the lowest and highest bound of the seeds'
    95% bootstrap intervals: the range every pool's interval lies in), ``nn_distance_ratio`` (median over
    seeds), ``reference`` (what the pools were compared against). None when the cube has no audit of it."""
    if not all(v in cube for v in AUDIT_VARS) or source not in cube["source"].values:
        return None
    g = cube[list(AUDIT_VARS)].sel(source=source)
    if not bool(np.isfinite(g["pool_copy_share"]).any()):
        return None
    reference = json.loads(cube["pool_copy_share"].attrs.get("reference", "{}")).get(source, "")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a base size whose pools all lack the audit: NaN
        frame = pd.DataFrame(
            {
                "copy_share": g["pool_copy_share"].mean("seed").values,
                "copy_low": g["pool_copy_share_low"].min("seed").values,
                "copy_high": g["pool_copy_share_high"].max("seed").values,
                "nn_distance_ratio": g["pool_nn_distance_ratio"].median("seed").values,
            },
            index=pd.Index(cube["n_real"].values.astype(int), name="n_real"),
        )
    frame["reference"] = reference
    return frame


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
    extra = set(map(str, cube.dims)) - set(DIMS) - {"class", TEST_DIM, PROTOCOL_DIM}
    if extra:
        raise CubeError(
            f"dims: unexpected dimension(s) {sorted(extra)}; allowed {list(DIMS)}, 'class', "
            f"'{PROTOCOL_DIM}' and '{TEST_DIM}'"
        )
    if PROTOCOL_DIM in cube.dims:
        labels = cube[PROTOCOL_DIM].values.tolist() if PROTOCOL_DIM in cube.coords else None
        if not labels or not all(isinstance(v, str) for v in labels) or len(set(labels)) != len(labels):
            raise CubeError(f"coords: '{PROTOCOL_DIM}' must hold distinct strings, got {labels!r}")
    dims = cell_dims(cube)
    for dim in ("n_real", "n_synth", "seed"):
        values = cube[dim].values
        if not np.issubdtype(values.dtype, np.integer):
            raise CubeError(f"coords: '{dim}' must be integers, got dtype {values.dtype}")
    if not (np.issubdtype(cube["source"].values.dtype, np.str_) or cube["source"].values.dtype == object) or not all(
        isinstance(v, str) for v in cube["source"].values.tolist()
    ):
        raise CubeError(f"coords: 'source' must be strings, got {cube['source'].values.tolist()!r}")
    for dim in DIMS:
        values = cube[dim].values
        if len(np.unique(values)) != len(values):
            raise CubeError(f"coords: duplicate values in '{dim}': {_dupes(values)}")
    if (cube["n_real"].values <= 0).any():
        raise CubeError(f"coords: 'n_real' must be positive, got {cube['n_real'].values.tolist()}")
    if (cube["n_synth"].values < 0).any():
        raise CubeError(f"coords: 'n_synth' must be >= 0, got {cube['n_synth'].values.tolist()}")
    for name in REQUIRED_VARS:
        if name not in cube.data_vars:
            raise CubeError(f"variables: missing data variable '{name}'")
        if tuple(cube[name].dims) != dims:
            raise CubeError(f"variables: '{name}' must have dims {dims}, has {tuple(cube[name].dims)}")
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
    if "test_correct" in cube.data_vars:
        _validate_test_items(cube)
    try:
        json.loads(cube.attrs["provenance"])
    except (TypeError, ValueError) as exc:
        raise CubeError(f"attrs: 'provenance' must be a JSON string ({exc})") from None
    try:
        classes = json.loads(cube.attrs["classes"])
        assert isinstance(classes, list)
    except (TypeError, ValueError, AssertionError):
        raise CubeError("attrs: 'classes' must be a JSON list of class names") from None
    try:
        n_test = int(cube.attrs["n_test"])
    except (TypeError, ValueError, OverflowError):
        raise CubeError(
            f"attrs: 'n_test' must be a whole number of test images, got {cube.attrs['n_test']!r}"
        ) from None
    if n_test <= 0 or n_test != cube.attrs["n_test"]:
        raise CubeError(f"attrs: 'n_test' must be a positive integer, got {cube.attrs['n_test']!r}")
    try:
        schema = int(cube.attrs["schema_version"])
    except (TypeError, ValueError, OverflowError):
        raise CubeError(f"attrs: 'schema_version' must be an integer, got {cube.attrs['schema_version']!r}") from None
    if schema > SCHEMA_VERSION:
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


def _validate_test_items(cube: xr.Dataset) -> None:
    """``test_correct`` must have the packed shape and agree with ``accuracy`` in every done cell."""
    var = cube["test_correct"]
    dims = cell_dims(cube) + (TEST_DIM,)
    if tuple(var.dims) != dims:
        raise CubeError(f"variables: 'test_correct' must have dims {dims}, has {tuple(var.dims)}")
    if var.dtype != np.uint8:
        raise CubeError(f"variables: 'test_correct' must be packed uint8 bits, got dtype {var.dtype}")
    try:
        n_test = int(cube.attrs["n_test"])
    except (TypeError, ValueError):
        raise CubeError(f"attrs: 'n_test' must be an integer, got {cube.attrs['n_test']!r}") from None
    if var.sizes[TEST_DIM] != test_bytes(n_test):
        raise CubeError(
            f"variables: 'test_correct' has {var.sizes[TEST_DIM]} bytes per cell; n_test={n_test} "
            f"needs {test_bytes(n_test)}"
        )
    done = (cube["status"].values == STATUS_DONE) & np.isfinite(cube["accuracy"].values)
    hits = np.unpackbits(var.values, axis=-1, count=n_test).sum(-1) / n_test
    off = done & (np.abs(hits - np.nan_to_num(cube["accuracy"].values)) > 0.5 / n_test)
    if off.any():
        where = {d: cube[d].values[i].item() for d, i in zip(cell_dims(cube), np.argwhere(off)[0])}
        raise CubeError(f"variables: 'test_correct' disagrees with 'accuracy' at cell {where}")


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
    write_netcdf(out, path)
    return path


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """NetCDF-4 bytes built in memory, then written atomically with plain file I/O: a full disk or a file-size
    limit is one ``OSError`` naming the file, not a failure inside HDF5 (which can crash the interpreter on
    exit). Cubes and feature files are small (the digits cube: 26 KB)."""
    data = ds.to_netcdf(engine="h5netcdf")
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


# --------------------------------------------------------------------------------------------------
# merge


def merge_cubes(a: xr.Dataset, b: xr.Dataset, *, atol: float = 1e-9) -> xr.Dataset:
    """Outer join on coordinates; a cell computed (status done) in both must agree.

    Pending or failed cells are filled from whichever cube has the cell done. Attributes come from
    ``a``; the provenance of both is kept.
    """
    validate_cube(a)
    validate_cube(b)
    if (PROTOCOL_DIM in a.dims) != (PROTOCOL_DIM in b.dims):
        raise CubeError(
            f"dims: one cube sweeps training protocols ('{PROTOCOL_DIM}') and the other does not; "
            "select a protocol of the first with protocol_slice() before merging"
        )
    for key in ("dataset", "n_test", "classes"):
        if str(a.attrs[key]) != str(b.attrs[key]):
            raise CubeError(f"attrs: cubes disagree on '{key}': {a.attrs[key]!r} vs {b.attrs[key]!r}")
    _check_same_protocol(a, b)
    if ("test_correct" in a) != ("test_correct" in b):  # test items recorded in one cube only: keep neither
        a, b = a.drop_vars("test_correct", errors="ignore"), b.drop_vars("test_correct", errors="ignore")
    a_al, b_al = xr.align(a, b, join="outer")
    a_status = a_al["status"].fillna(STATUS_PENDING).astype(np.int8)
    b_status = b_al["status"].fillna(STATUS_PENDING).astype(np.int8)
    both = (a_status == STATUS_DONE) & (b_status == STATUS_DONE)
    for name in ("accuracy", "loss", "per_class_accuracy", "test_correct"):
        if name not in a_al or name not in b_al:
            continue
        diff = np.abs(a_al[name].astype(float) - b_al[name].astype(float)).where(both)
        if bool((diff > atol).any()):
            cell = diff.where(diff > atol, drop=True)
            first = {d: cell[d].values[0].item() for d in cell_dims(a_al) if cell.sizes.get(d, 0)}
            raise CubeError(f"merge: cell {first} was computed in both cubes with different '{name}'")
    take_b = (b_status == STATUS_DONE) & (a_status != STATUS_DONE)
    take_b = take_b | ((a_status == STATUS_PENDING) & (b_status == STATUS_FAILED))
    merged = a_al.copy()
    for name in a_al.data_vars:
        if name in b_al:
            # a variable without some cell dimension (pool quality per source, n_real, seed) is taken from b
            # where b has any of that slice's cells: otherwise xr.where would give it the missing dimensions
            take = (
                take_b.any([d for d in take_b.dims if d not in a_al[name].dims])
                if set(take_b.dims) - set(a_al[name].dims)
                else take_b
            )
            merged[name] = xr.where(take, b_al[name], a_al[name]).transpose(*a_al[name].dims)
    merged["status"] = xr.where(take_b, b_status, a_status).astype(np.int8)
    if "test_correct" in merged:  # the outer join turned missing cells' bytes into NaN
        merged["test_correct"] = merged["test_correct"].fillna(0).astype(np.uint8)
    merged.attrs = dict(a.attrs)
    merged.attrs["provenance"] = json.dumps({"merged_from": [provenance_of(a), provenance_of(b)]}, default=str)
    _describe(merged)
    return validate_cube(merged)


# the sweep fields (in a cube's provenance config) that make two runs' numbers comparable besides the protocol
_COMPARABLE_FIELDS = ("dataset", "test_fraction", "classifier", "split_seed")


def _check_same_protocol(a: xr.Dataset, b: xr.Dataset) -> None:
    """Two cubes trained under different protocols (steps, classifier, split) hold different estimands: refuse,
    naming the field. Cubes without a recorded protocol (simulated, older) are compared on what they record."""
    pa, pb = a.attrs.get("protocol"), b.attrs.get("protocol")
    if pa is not None and pb is not None and json.loads(str(pa)) != json.loads(str(pb)):
        first = sorted(
            k
            for k in set(json.loads(str(pa))) | set(json.loads(str(pb)))
            if json.loads(str(pa)).get(k) != json.loads(str(pb)).get(k)
        )
        raise CubeError(
            f"attrs: the cubes were trained under different protocols ({', '.join(first)} differ: "
            f"{pa} vs {pb}); their cells are different estimands"
        )
    ca, cb = _config_of(a), _config_of(b)
    for key in _COMPARABLE_FIELDS:
        if key in ca and key in cb and ca[key] != cb[key]:
            raise CubeError(
                f"attrs: the cubes' sweeps differ in '{key}' ({ca[key]!r} vs {cb[key]!r}); their cells "
                "are different estimands"
            )


def _config_of(cube: xr.Dataset) -> dict:
    """The sweep config recorded in a cube's provenance ({} for a simulated or merged cube)."""
    try:
        config = json.loads(str(cube.attrs.get("provenance", "{}"))).get("config")
    except (ValueError, AttributeError):
        return {}
    return config if isinstance(config, dict) else {}


def protocol_slice(cube: xr.Dataset, protocol: str) -> xr.Dataset:
    """One training-protocol setting of a protocol sweep as a plain cube (no ``protocol`` dimension)."""
    labels = [str(v) for v in cube[PROTOCOL_DIM].values]
    if protocol not in labels:
        raise CubeError(f"protocol: {protocol!r} is not in the cube (have {labels})")
    out = cube.sel({PROTOCOL_DIM: protocol}).drop_vars(PROTOCOL_DIM)
    out.attrs = {**cube.attrs, "protocol_setting": protocol}
    return out


def status_counts(cube: xr.Dataset) -> dict[str, int]:
    codes, counts = np.unique(cube["status"].values, return_counts=True)
    return {STATUS_NAMES[int(c)]: int(n) for c, n in zip(codes, counts)}
