"""The config's field checks: one error naming the field, before anything runs.

Every validator of a config field — the config's own (:mod:`runners.config`) and each source's ``check`` — raises
through these, so a message always starts with the field it names, and a dry run can collect missing files
instead of failing on the first (:func:`files_checked_later`).
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from runners.data import DATASETS, FASHION_MNIST_ROOT, check_idx_files, idx_files, path_exists


class ConfigError(ValueError):
    """A config that cannot run; the message starts with the offending field."""


DATASET_KEYS = {
    "digits": ("name",),
    "fashion_mnist": ("name", "root"),
    "idx": ("name", "root", "prefix"),
    "cifar10": ("name", "root"),
    "cifar100": ("name", "root"),
    "medmnist": ("name", "path"),
    "imagefolder": ("name", "root", "image_size"),
}


def known_keys(value, fieldname: str, known) -> dict:
    """The mapping with only known keys; a key set to null means 'the default' and is dropped."""
    require(value is None or isinstance(value, dict), fieldname, f"must be a mapping, got {value!r}")
    value = {k: v for k, v in (value or {}).items() if v is not None}
    unknown = sorted(map(str, set(value) - set(known)))
    require(
        not unknown,
        f"{fieldname}.{key_text(unknown[0])}" if unknown else fieldname,
        f"unknown key (known: {', '.join(known)})",
    )
    return value


def key_text(key: str) -> str:
    """A key as a message shows it: as written when it is a plain name, else quoted (a key holding a newline or a
    carriage return would otherwise break the one-line message, or overwrite it on a terminal)."""
    return key if re.fullmatch(r"[\w.-]+", key) else repr(key)


def number(value, fieldname: str, *, integer: bool = False, low=None, high=None, low_open: bool = False):
    """A finite number (never a bool, never a string), optionally an integer, within bounds."""
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    require(ok and not isinstance(value, bool), fieldname, f"must be {kind}, got {value!r}")
    require(math.isfinite(value), fieldname, f"must be finite, got {value!r}")
    if low is not None:
        require(
            value > low if low_open else value >= low,
            fieldname,
            f"must be {'>' if low_open else '>='} {low}, got {value!r}",
        )
    if high is not None:
        require(value <= high, fieldname, f"must be <= {high}, got {value!r}")
    return value


# None: a missing local file is a ConfigError. A list (inside files_checked_later()): the message is collected
# instead, so a dry run can price a paper config before its datasets and models are in place.
_MISSING_FILES: ContextVar[list | None] = ContextVar("missing_files", default=None)


@contextmanager
def files_checked_later():
    """Collect missing-file problems instead of raising them; yields the list of messages."""
    found: list[str] = []
    token = _MISSING_FILES.set(found)
    try:
        yield found
    finally:
        _MISSING_FILES.reset(token)


def require_file(cond: bool, fieldname: str, message: str) -> bool:
    """Like _require for a local file or folder; returns whether it is there (False only when collecting)."""
    collecting = _MISSING_FILES.get()
    if not cond and collecting is not None:
        collecting.append(f"{fieldname}: {message}")
        return False
    require(cond, fieldname, message)
    return True


def require(cond: bool, fieldname: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{fieldname}: {message}")


def check_dataset_spec(ds, fieldname: str) -> None:
    """A dataset mapping: known name, known keys, and the local file or folder it needs exists."""
    require(isinstance(ds, dict) and "name" in ds, fieldname, "must be a mapping with a 'name'")
    require(
        isinstance(ds["name"], str) and ds["name"] in DATASETS,
        f"{fieldname}.name",
        f"unknown dataset {ds['name']!r}; choose from {DATASETS}",
    )
    known_keys(ds, fieldname, DATASET_KEYS[ds["name"]])
    if "image_size" in ds:
        number(ds["image_size"], f"{fieldname}.image_size", integer=True, low=4, high=1024)
    if ds["name"] in ("fashion_mnist", "idx"):
        _check_idx(ds, fieldname)
        return
    path_key = {"cifar10": "root", "cifar100": "root", "imagefolder": "root", "medmnist": "path"}.get(ds["name"])
    if path_key:
        require(path_key in ds, f"{fieldname}.{path_key}", f"is required for {ds['name']}")
        require(isinstance(ds[path_key], str), f"{fieldname}.{path_key}", f"must be a path, got {ds[path_key]!r}")
        if require_file(
            path_exists(ds[path_key]), f"{fieldname}.{path_key}", f"no such file or folder: {ds[path_key]}"
        ):
            _check_layout(ds, Path(ds[path_key]), f"{fieldname}.{path_key}")


def _check_idx(ds: dict, fieldname: str) -> None:
    """An IDX dataset's folder (Fashion-MNIST's default: Debian's package folder) holds the four files with the
    right headers and matching counts."""
    require(ds["name"] == "fashion_mnist" or "root" in ds, f"{fieldname}.root", "is required for idx")
    for key in ("root", "prefix"):
        if key in ds:
            require(isinstance(ds[key], str), f"{fieldname}.{key}", f"must be a text, got {ds[key]!r}")
    root = ds.get("root", FASHION_MNIST_ROOT)
    hint = " (Debian/Ubuntu: apt-get install dataset-fashion-mnist)" if "root" not in ds else ""
    if not require_file(path_exists(root), f"{fieldname}.root", f"no such folder: {root}{hint}"):
        return
    missing = [f for f in idx_files(ds) if not f.is_file()]
    if require_file(not missing, f"{fieldname}.root", f"{missing[0] if missing else ''} is missing (expected the "
                    f"MNIST-family IDX files){hint}"):  # fmt: skip
        try:
            check_idx_files(ds)
        except ValueError as exc:  # the data layer names dataset.root; this check names the field it was given
            require(False, f"{fieldname}.root", str(exc).removeprefix("dataset.root: "))


def _check_layout(ds: dict, path: Path, fieldname: str) -> None:
    """The files a loader will open exist, so a wrong folder fails here, not after Ray and the pools started."""
    if ds["name"] in ("cifar10", "cifar100"):
        sub = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[ds["name"]]
        base = path / sub if (path / sub).exists() else path
        need = ["data_batch_1", "test_batch", "batches.meta"] if ds["name"] == "cifar10" else ["train", "test", "meta"]
        missing = [f for f in need if not (base / f).is_file()]
        require_file(not missing, fieldname, f"{base} lacks {', '.join(missing)} (the CIFAR python-pickle layout)")
    elif ds["name"] == "imagefolder":
        require_file(
            path.is_dir() and any(p.is_dir() for p in path.iterdir()),
            fieldname,
            f"{path} has no class folders (ImageFolder layout: root/<class>/<image>)",
        )
    elif ds["name"] == "medmnist":
        require_file(path.is_file() and path.suffix == ".npz", fieldname, f"{path} is not a MedMNIST .npz file")
