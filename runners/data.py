"""Datasets and per-seed splits.

Images are held as float32 tensors (N, C, H, W) in [0, 1] with int64 labels. The embedded default is
scikit-learn's digits (1797 8x8 images, ships with scikit-learn, no network). Local CIFAR-10/100
(the python-pickle layout torchvision downloads), MedMNIST ``.npz`` files and ImageFolder trees are
read from paths the user gives; nothing is downloaded.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from runners import streams

DATASETS = ("digits", "cifar10", "cifar100", "medmnist", "imagefolder")


@dataclass
class ImageData:
    name: str
    images: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    test_mask: np.ndarray | None = None  # where the files define a test split

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def load_dataset(spec: dict) -> ImageData:
    name = spec["name"]
    if name == "digits":
        d = load_digits()
        images = (d.images / 16.0).astype(np.float32)[:, None]
        return ImageData("digits", images, d.target.astype(np.int64), [str(c) for c in d.target_names])
    if name in ("cifar10", "cifar100"):
        return _load_cifar(Path(spec["root"]), name)
    if name == "medmnist":
        return _load_medmnist(Path(spec["path"]))
    if name == "imagefolder":
        return _load_imagefolder(Path(spec["root"]), int(spec.get("image_size", 64)))
    raise ValueError(f"dataset.name: unknown dataset {name!r}; choose from {DATASETS}")


# The only globals a CIFAR batch needs: numpy arrays. Anything else in a pickle (os.system, a class with a
# __reduce__) would run code from the dataset folder, so it is refused.
_PICKLE_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                   ("numpy._core.multiarray", "scalar")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only arrays, lists, dicts, bytes)")
        return super().find_class(module, name)


def _load_batch(path: Path) -> dict:
    """A CIFAR python batch through a restricted unpickler; one error naming the file otherwise."""
    try:
        with open(path, "rb") as fh:
            return _ArraysOnly(fh, encoding="bytes").load()
    except FileNotFoundError:
        raise ValueError(f"dataset.root: {path} is missing (expected the CIFAR python-pickle layout)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"dataset.root: {path} is not a CIFAR batch ({exc})") from None


def _load_cifar(root: Path, name: str) -> ImageData:
    sub = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    base = root / sub if (root / sub).exists() else root
    files = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if name == "cifar10" else (["train"], ["test"])
    key = b"labels" if name == "cifar10" else b"fine_labels"
    parts, labels, is_test = [], [], []
    for test, group in ((False, files[0]), (True, files[1])):
        for f in group:
            d = _load_batch(base / f)
            parts.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(d[key]))
            is_test.append(np.full(len(labels[-1]), test))
    meta_file = base / ("batches.meta" if name == "cifar10" else "meta")
    meta = _load_batch(meta_file)
    names = meta[b"label_names" if name == "cifar10" else b"fine_label_names"]
    return ImageData(name, np.concatenate(parts).astype(np.float32) / 255.0, np.concatenate(labels).astype(np.int64),
                     [n.decode() for n in names], np.concatenate(is_test))


def _load_medmnist(path: Path) -> ImageData:
    d = np.load(path)
    imgs, labs, test = [], [], []
    for split in ("train", "val", "test"):
        if f"{split}_images" not in d:
            continue
        x = d[f"{split}_images"]
        x = x[:, None] if x.ndim == 3 else np.moveaxis(x, -1, 1)
        imgs.append(x)
        labs.append(d[f"{split}_labels"].reshape(-1))
        test.append(np.full(len(x), split == "test"))
    labels = np.concatenate(labs).astype(np.int64)
    return ImageData(path.stem, np.concatenate(imgs).astype(np.float32) / 255.0, labels,
                     [str(c) for c in range(int(labels.max()) + 1)], np.concatenate(test))


def _load_imagefolder(root: Path, size: int) -> ImageData:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    imgs, labels = [], []
    for c, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
                im = Image.open(f).convert("RGB").resize((size, size))
                imgs.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
                labels.append(c)
    return ImageData(root.name, np.stack(imgs).astype(np.float32) / 255.0, np.asarray(labels, np.int64), classes)


# --------------------------------------------------------------------------------------------------
# splits


def test_indices(data: ImageData, test_fraction: float) -> np.ndarray:
    """The fixed test set: the files' own split if any, else a stratified draw independent of seeds."""
    if data.test_mask is not None:
        return np.flatnonzero(data.test_mask)
    rng = streams.shared_rng("test_split")
    out = []
    for c in np.unique(data.labels):
        idx = np.flatnonzero(data.labels == c)
        out.append(rng.permutation(idx)[: int(round(len(idx) * test_fraction))])
    return np.sort(np.concatenate(out))


def balanced_take(labels: np.ndarray, candidates: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices from ``candidates``, as class-balanced as the counts allow (round-robin over classes)."""
    per_class = [rng.permutation(candidates[labels[candidates] == c]) for c in np.unique(labels[candidates])]
    order = []
    depth = 0
    while len(order) < n and any(depth < len(p) for p in per_class):
        for p in rng.permutation(len(per_class)):
            if depth < len(per_class[p]):
                order.append(per_class[p][depth])
        depth += 1
    if len(order) < n:
        raise ValueError(f"n: asked for {n} images, only {len(order)} available")
    return np.asarray(order[:n])


def split_for_seed(data: ImageData, test_idx: np.ndarray, seed: int, n_real: int, pool_size: int):
    """Base subset (class-balanced, n_real) and a disjoint held-out real pool (pool_size), per (seed, n_real).

    The pool order is fixed by (seed, n_real) alone, so ``n_synth`` prefixes are nested.
    """
    rng = streams.rng("split", seed, n_real)
    rest = np.setdiff1d(np.arange(len(data.labels)), test_idx)
    base = balanced_take(data.labels, rest, n_real, rng)
    remaining = np.setdiff1d(rest, base)
    pool = balanced_take(data.labels, remaining, pool_size, rng) if pool_size else np.zeros(0, np.int64)
    return base, pool


# --------------------------------------------------------------------------------------------------
# one decoded dataset per worker process


@lru_cache(maxsize=4)
def _cached(dataset_json: str, test_fraction: float) -> tuple[ImageData, np.ndarray]:
    data = load_dataset(json.loads(dataset_json))
    return data, test_indices(data, test_fraction)


def dataset_of(cfg) -> tuple[ImageData, np.ndarray]:
    """(dataset, test indices) of a sweep config, decoded once per process (trials reuse their actor)."""
    return _cached(json.dumps(cfg.dataset, sort_keys=True), float(cfg.test_fraction))


def non_test(data: ImageData, test_idx: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.arange(len(data.labels)), test_idx)


def base_and_real_pool(cfg, n_real: int, seed: int, pool_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the base subset and of the held-out real pool of one (n_real, seed)."""
    data, test_idx = dataset_of(cfg)
    return split_for_seed(data, test_idx, seed, n_real, pool_size)
