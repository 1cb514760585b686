"""Datasets and per-seed splits: the data plane.

A dataset is decoded once into a uint8 array cache on local disk (``pixels.npy`` with labels and the
files' test split beside it), keyed by a fingerprint of its source files and options and written
atomically under a lock, so every trial and source job on a node *maps* the same file read-only: a worker's
memory does not grow with the dataset. Rows become float32 in [0, 1] only when indexed
(``data.images[idx]``), so a trial converts its base subset and its batches, never the whole dataset.

The embedded default is scikit-learn's digits (1797 8x8 images with 17 grey levels, held in memory, no
cache). Local CIFAR-10/100 (the python-pickle layout torchvision downloads), MedMNIST ``.npz`` files and
ImageFolder trees are read from paths the user gives; nothing is downloaded. MNIST-family IDX files
(Fashion-MNIST, MNIST, KMNIST, EMNIST: ``*-images-idx3-ubyte[.gz]`` / ``*-labels-idx1-ubyte[.gz]``) are read
from a folder, by default Debian's ``dataset-fashion-mnist`` package folder for Fashion-MNIST. The cache lives in
``$SCALING_CACHE`` (default ``~/.cache/scaling``), per node.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image
from tqdm.auto import tqdm

from runners import streams
from runners.integrity import IntegrityError, file_checksum, read_record, verify_file

IMAGEFOLDER_SIZE = 64  # an ImageFolder dataset's images are resized to this side unless `image_size` says otherwise

DATASETS = ("digits", "fashion_mnist", "idx", "cifar10", "cifar100", "medmnist", "imagefolder")
# Debian/Ubuntu's `apt-get install dataset-fashion-mnist` puts the four IDX files here (the default `root`)
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
)  # fmt: skip
CACHE_VERSION = 1  # bump when the decoding changes what a cache holds
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class FloatImages:
    """Float32 rows in [0, 1] of a uint8 array, converted only where indexed: ``view[idx]``.

    ``pixels`` may be a read-only memory map; ``levels`` is the value that means 1.0 (255, or 16 for digits,
    so ``p / levels`` reproduces digits' k/16 exactly). ``rows`` restricts the view to a subset (e.g. the test
    set) so that ``view[i:j]`` converts one batch of it.
    """

    def __init__(self, pixels: np.ndarray, levels: int, rows: np.ndarray | None = None):
        self.pixels, self.levels, self.rows = pixels, int(levels), rows

    def __getitem__(self, idx) -> np.ndarray:
        if self.rows is not None:
            idx = self.rows[idx]
        # np.float32 / python int stays float32 and is correctly rounded: the values of the former float cache
        return np.asarray(self.pixels[idx]).astype(np.float32) / self.levels

    def subset(self, rows: np.ndarray) -> FloatImages:
        return FloatImages(self.pixels, self.levels, np.asarray(rows) if self.rows is None else self.rows[rows])

    @property
    def shape(self) -> tuple:
        return (len(self), *self.pixels.shape[1:])

    def __len__(self) -> int:
        return len(self.pixels) if self.rows is None else len(self.rows)

    def __array__(self, dtype=None, copy=None):  # the whole view as floats: only for small data
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype)


@dataclass
class ImageData:
    name: str
    pixels: np.ndarray  # (N, C, H, W) uint8, a read-only memory map of the cache (digits: in memory)
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    test_mask: np.ndarray | None = None  # where the files define a test split
    levels: int = 255  # the pixel value that means 1.0

    @property
    def images(self) -> FloatImages:
        """Float32 images in [0, 1], converted per index: ``data.images[idx]``."""
        return FloatImages(self.pixels, self.levels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape[1:])


def load_dataset(spec: dict, *, progress: bool = False) -> ImageData:
    """The dataset a spec names: digits from scikit-learn, anything else through the uint8 cache."""
    name = spec["name"]
    if name == "digits":
        from sklearn.datasets import load_digits  # ~1 s of import, needed only to build the digits cache

        d = load_digits()
        pixels = d.images.astype(np.uint8)[:, None]  # grey levels 0..16
        return ImageData("digits", pixels, d.target.astype(np.int64), [str(c) for c in d.target_names], levels=16)
    if name not in DATASETS:
        raise ValueError(f"dataset.name: unknown dataset {name!r}; choose from {DATASETS}")
    return open_cache(spec, progress=progress)


# --------------------------------------------------------------------------------------------------
# the cache


# What a dataset is before it is read: (images, (C, H, W)) of the datasets whose size and shape are fixed, and
# the known sizes of paper datasets whose files may not be in place yet (a dry run before the download):
# CIFAR-10/100 as torchvision ships them, BloodMNIST as MedMNIST v2 ships it, ImageNet-100 as the usual
# 100-class subset of ImageNet-1k's train split (~1300 per class)
DATASET_SIZES = {"digits": 1797}
DATASET_SHAPES = {"digits": (1, 8, 8), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}
KNOWN_SIZES = {"fashion_mnist": 70000, "cifar10": 60000, "cifar100": 60000, "bloodmnist": 17092, "imagenet100": 126689}
MEDMNIST_SHAPE = (3, 28, 28)


def dataset_facts(spec: dict) -> tuple[int | None, tuple[int, int, int]]:
    """(number of images or None, (C, H, W)) of a dataset, from its files when present, else known sizes."""
    name = spec["name"]
    if name in DATASET_SIZES:
        return DATASET_SIZES[name], DATASET_SHAPES[name]
    if name == "imagefolder":
        root = Path(spec["root"])
        size = int(spec.get("image_size", IMAGEFOLDER_SIZE))
        n = (
            sum(1 for c in root.iterdir() if c.is_dir() for _ in c.iterdir())
            if root.is_dir()
            else KNOWN_SIZES.get(root.parent.name if root.name == "train" else root.name)
        )
        return n, (3, size, size)
    if name in IDX_DATASETS:
        try:
            (n_train, *shape), (n_test, _, _) = (idx_header(f)[1] for f in idx_files(spec)[::2])
            return n_train + n_test, (1, *shape)
        except ValueError:  # not in place yet (or unreadable: the sweep will say why, naming the file)
            return KNOWN_SIZES.get(name), DATASET_SHAPES.get(name, (1, 28, 28))
    if name == "medmnist":
        path = Path(spec["path"])
        try:
            with np.load(path, mmap_mode="r") as d:
                keys = [k for k in d.files if k.endswith("_images")]
                x = d[keys[0]]
                shape = (1, *x.shape[1:3]) if x.ndim == 3 else (x.shape[3], *x.shape[1:3])
                return sum(len(d[k]) for k in keys), shape
        except (OSError, ValueError, IndexError):  # not in place yet (or unreadable: the sweep will say why)
            return KNOWN_SIZES.get(path.stem), MEDMNIST_SHAPE
    return KNOWN_SIZES.get(name), DATASET_SHAPES[name]


def cache_root() -> Path:
    return Path(os.environ.get("SCALING_CACHE") or Path.home() / ".cache" / "scaling").expanduser() / "datasets"


def source_files(spec: dict) -> list[Path]:
    """The files a dataset is decoded from (missing ones are reported by the decoder, naming the file)."""
    name = spec["name"]
    if name in ("cifar10", "cifar100"):
        base = _cifar_base(Path(spec["root"]), name)
        train, test, meta = _CIFAR_FILES[name]
        return [base / f for f in (*train, *test, meta)]
    if name == "medmnist":
        return [Path(spec["path"])]
    if name in IDX_DATASETS:
        return idx_files(spec)
    root = Path(spec["root"])
    return [f for c in _class_dirs(root) for f in _image_files(root / c)]


def cache_key(spec: dict) -> str:
    """Fingerprint of the source files (path, size, mtime) and the options. Hashing file contents would
    read every byte again at each worker start (ImageNet-100: ~13 GB of JPEGs); a changed, touched or
    replaced file changes its size or mtime, and then the cache is rebuilt, never reused stale."""
    h = hashlib.sha256(json.dumps({**spec, "version": CACHE_VERSION}, sort_keys=True).encode())
    for f in source_files(spec):
        st = f.stat() if f.exists() else None
        h.update(f"{f.resolve()}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:20]


def open_cache(spec: dict, *, progress: bool = False) -> ImageData:
    """Map a dataset's cache read-only, building it first (once per node, under a lock) if needed."""
    folder = built_cache(spec, progress=progress)
    meta = json.loads((folder / "meta.json").read_text())
    test = folder / "test_mask.npy"
    return ImageData(
        meta["name"],
        np.load(folder / "pixels.npy", mmap_mode="r"),
        np.load(folder / "labels.npy"),
        meta["classes"],
        np.load(test) if test.exists() else None,
        meta["levels"],
    )


def built_cache(spec: dict, *, progress: bool = False) -> Path:
    """The cache folder of a dataset on this node, built first (once, under a lock) if missing."""
    folder = cache_root() / f"{spec['name']}-{cache_key(spec)}"
    if not (folder / "meta.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if not (folder / "meta.json").exists():  # another process may have built it while we waited
                _build_cache(spec, folder, progress)
    return folder


def verify_cache(spec: dict) -> None:
    """Build the dataset cache on this node if needed, then check its arrays against the checksums recorded
    when it was built: a ``pixels.npy`` edited in place would change every accuracy silently. Run once per sweep
    by the driver before Ray starts, so a file that cannot be decoded is one error naming it (exit 2), not a
    failure inside a Ray worker after its retries; workers then map the verified files (cifar10: ~0.2 s to
    hash). Digits lives in memory."""
    if spec["name"] == "digits":
        return
    folder = built_cache(spec)
    for name, digest in recorded_checksums(folder).items():
        verify_file(folder / name, digest, "dataset", f"delete {folder} to rebuild it from the dataset files")


def recorded_checksums(folder: Path) -> dict[str, str]:
    """The checksums a cache folder's ``meta.json`` recorded when it was built, one per array. A record that is
    missing, unreadable or covers no array is refused, never skipped: without it an array edited in place would
    pass as the one the cache was built with."""
    meta_path = folder / "meta.json"
    rebuild = f"delete {folder} to rebuild it from the dataset files"
    meta = read_record(meta_path, "dataset", rebuild)
    sums = meta.get("checksums")
    arrays = {p.name for p in folder.glob("*.npy")}
    if not isinstance(sums, dict) or not sums or not arrays <= set(sums):
        unrecorded = sorted(arrays - set(sums)) if isinstance(sums, dict) else []
        what = f"no checksum for {', '.join(unrecorded)}" if unrecorded and sums else "no checksums"
        raise IntegrityError(f"dataset: the record {meta_path} holds {what}; {rebuild}")
    return sums


def _build_cache(spec: dict, folder: Path, progress: bool) -> None:
    """Decode into a temporary folder beside the target, then rename: a crash never leaves half a cache."""
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        decoder = {
            "cifar10": _decode_cifar,
            "cifar100": _decode_cifar,
            "medmnist": _decode_medmnist,
            "imagefolder": _decode_imagefolder,
            "fashion_mnist": _decode_idx,
            "idx": _decode_idx,
        }[spec["name"]]
        meta = decoder(spec, tmp, progress)
        sums = {f.name: file_checksum(f) for f in sorted(tmp.glob("*.npy"))}
        (tmp / "meta.json").write_text(json.dumps({**meta, "spec": spec, "version": CACHE_VERSION, "checksums": sums}))
        if folder.exists():  # a stale partial folder from an older layout: replace it
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _writer(tmp: Path, n: int, shape: tuple) -> np.ndarray:
    return np.lib.format.open_memmap(tmp / "pixels.npy", mode="w+", dtype=np.uint8, shape=(n, *shape))


# The only globals a CIFAR batch needs: numpy arrays, and (pickle protocols 0-2, as the original batches were
# written) ``_codecs.encode``, which turns the stored latin-1 text back into bytes and runs nothing else.
# Anything else in a pickle (os.system, a class with a __reduce__) would run code from the dataset folder, so it
# is refused.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}
_CIFAR_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    "cifar100": (["train"], ["test"], "meta"),
}


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


def _cifar_base(root: Path, name: str) -> Path:
    sub = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    return root / sub if (root / sub).exists() else root


def _decode_cifar(spec: dict, tmp: Path, progress: bool) -> dict:
    name = spec["name"]
    base = _cifar_base(Path(spec["root"]), name)
    train, test, meta_file = _CIFAR_FILES[name]
    key = b"labels" if name == "cifar10" else b"fine_labels"
    batches = [(f, f in test) for f in (*train, *test)]
    meta = _load_batch(base / meta_file)  # checked first: a bad folder fails before any decoding
    names = meta[b"label_names" if name == "cifar10" else b"fine_label_names"]
    # one pass for the sizes would unpickle every batch twice; batches are small (30 MB), so decode them in turn
    # into a growing list of uint8 blocks, then write the memory map block by block
    blocks, labels, is_test = [], [], []
    for f, t in tqdm(batches, desc=f"decoding {name}", disable=not progress):
        d = _load_batch(base / f)
        blocks.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(d[key], dtype=np.int64))
        is_test.append(np.full(len(labels[-1]), t))
    out = _writer(tmp, sum(len(b) for b in blocks), (3, 32, 32))
    start = 0
    for b in blocks:
        out[start : start + len(b)] = b
        start += len(b)
    out.flush()
    np.save(tmp / "labels.npy", np.concatenate(labels))
    np.save(tmp / "test_mask.npy", np.concatenate(is_test))
    return {"name": name, "classes": [n.decode() for n in names], "levels": 255}


def _decode_medmnist(spec: dict, tmp: Path, progress: bool) -> dict:
    path = Path(spec["path"])
    blocks, labels, test = [], [], []
    with np.load(path) as d:
        for split in ("train", "val", "test"):
            if f"{split}_images" not in d:
                continue
            x = d[f"{split}_images"]
            blocks.append(x[:, None] if x.ndim == 3 else np.moveaxis(x, -1, 1))
            labels.append(d[f"{split}_labels"].reshape(-1).astype(np.int64))
            test.append(np.full(len(x), split == "test"))
    out = _writer(tmp, sum(len(b) for b in blocks), blocks[0].shape[1:])
    start = 0
    for b in blocks:
        out[start : start + len(b)] = b
        start += len(b)
    out.flush()
    y = np.concatenate(labels)
    np.save(tmp / "labels.npy", y)
    np.save(tmp / "test_mask.npy", np.concatenate(test))
    return {"name": path.stem, "classes": [str(c) for c in range(int(y.max()) + 1)], "levels": 255}


# --------------------------------------------------------------------------------------------------
# MNIST-family IDX files (Fashion-MNIST, MNIST, KMNIST, EMNIST)

IDX_DATASETS = ("fashion_mnist", "idx")
IDX_MAGIC = {"images": 0x0803, "labels": 0x0801}  # unsigned bytes, 3 dims / 1 dim (LeCun's IDX format)
IDX_SPLITS = {"train": ("train",), "test": ("t10k", "test")}  # MNIST/Fashion/KMNIST say t10k, EMNIST says test


def idx_root(spec: dict) -> Path:
    """The folder of a dataset's IDX files: ``root``, or Debian's Fashion-MNIST folder by default."""
    default = FASHION_MNIST_ROOT if spec["name"] == "fashion_mnist" else None
    return Path(spec.get("root") or default)


def idx_files(spec: dict) -> list[Path]:
    """[train images, train labels, test images, test labels] of an IDX dataset: ``<prefix><split>-<kind>-idx?-ubyte``
    gzipped or not (``.`` or ``-`` before ``idx``, as the downloads spell it); the name of the first candidate when
    none exists, so a message names the file it looked for."""
    root, prefix = idx_root(spec), spec.get("prefix", "")
    out = []
    for split, stems in IDX_SPLITS.items():
        for kind, dims in (("images", 3), ("labels", 1)):
            names = [
                f"{prefix}{stem}-{kind}{sep}idx{dims}-ubyte{gz}"
                for stem in stems
                for gz in (".gz", "")
                for sep in ("-", ".")
            ]
            out.append(next((root / n for n in names if (root / n).is_file()), root / names[0]))
    return out


def _idx_open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def idx_header(path: Path) -> tuple[str, tuple[int, ...]]:
    """(kind, dims) of an IDX file from its header; one error naming the file when it is missing, not IDX, or of
    a layout other than unsigned-byte images (3 dims) or labels (1 dim)."""
    try:
        with _idx_open(path) as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise ValueError("ends before its header")
            magic = int.from_bytes(head, "big")
            kind = next((k for k, m in IDX_MAGIC.items() if m == magic), None)
            if kind is None:
                raise ValueError(
                    f"has magic number 0x{magic:08x}, not an IDX file of unsigned-byte images (0x00000803) or labels (0x00000801)"
                )
            raw = fh.read(4 * (magic & 0xFF))
            if len(raw) < 4 * (magic & 0xFF):
                raise ValueError("ends inside its header")
    except FileNotFoundError:
        raise ValueError(f"dataset.root: {path} is missing (expected the MNIST-family IDX files)") from None
    except (OSError, EOFError, ValueError) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(
            f"dataset.root: {path} {exc}"
            if isinstance(exc, ValueError)
            else f"dataset.root: {path} cannot be read ({exc})"
        ) from None
    return kind, tuple(int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4))


def check_idx_files(spec: dict) -> None:
    """Every IDX file is there with the right magic, and each split's labels count its images: one error naming
    the file, before any decoding (headers only: a few bytes of each file)."""
    files = idx_files(spec)
    for images, labels in (files[:2], files[2:]):
        (ki, di), (kl, dl) = idx_header(images), idx_header(labels)
        if ki != "images":
            raise ValueError(f"dataset.root: {images} holds {ki}, not images")
        if kl != "labels":
            raise ValueError(f"dataset.root: {labels} holds {kl}, not labels")
        if dl[0] != di[0]:
            raise ValueError(f"dataset.root: {labels} holds {dl[0]} labels for the {di[0]} images of {images.name}")


def _read_idx(path: Path) -> np.ndarray:
    """The array of one IDX file; a file that ends early (truncated download) is one error naming it."""
    _, dims = idx_header(path)
    want = int(np.prod(dims))
    try:
        with _idx_open(path) as fh:
            fh.read(4 + 4 * len(dims))
            body = fh.read(want)
            extra = fh.read(1)
    except (OSError, EOFError) as exc:  # a gzip stream cut short raises EOFError
        raise ValueError(f"dataset.root: {path} is truncated or damaged ({exc})") from None
    if len(body) < want:
        raise ValueError(f"dataset.root: {path} is truncated: {len(body)} of the {want} bytes its header announces")
    if extra:
        raise ValueError(f"dataset.root: {path} holds more bytes than its header announces ({dims})")
    return np.frombuffer(body, np.uint8).reshape(dims)


def _decode_idx(spec: dict, tmp: Path, progress: bool) -> dict:
    """Train then test images (the files' own split) into the uint8 map; labels as int64."""
    check_idx_files(spec)
    train_x, train_y, test_x, test_y = (
        _read_idx(f) for f in tqdm(idx_files(spec), desc=f"decoding {spec['name']}", disable=not progress)
    )
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(f"dataset.root: train images are {train_x.shape[1:]}, test images {test_x.shape[1:]}")
    out = _writer(tmp, len(train_x) + len(test_x), (1, *train_x.shape[1:]))
    out[: len(train_x), 0] = train_x
    out[len(train_x) :, 0] = test_x
    out.flush()
    y = np.concatenate([train_y, test_y]).astype(np.int64)
    np.save(tmp / "labels.npy", y)
    np.save(tmp / "test_mask.npy", np.r_[np.zeros(len(train_x), bool), np.ones(len(test_x), bool)])
    n_classes = int(y.max()) + 1
    if spec["name"] == "fashion_mnist" and n_classes == len(FASHION_MNIST_CLASSES):
        classes = list(FASHION_MNIST_CLASSES)
    else:
        classes = [str(c) for c in range(n_classes)]
    return {"name": spec["name"], "classes": classes, "levels": 255}


def _class_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)


def _decode_one(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size)), dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # truncated, not an image, too large
        raise ValueError(f"dataset.root: {path} cannot be decoded as an image ({exc})") from None


def _decode_imagefolder(spec: dict, tmp: Path, progress: bool) -> dict:
    """Decode and resize in parallel threads (PIL releases the GIL while decoding) straight into the map."""
    root, size = Path(spec["root"]), int(spec.get("image_size", IMAGEFOLDER_SIZE))
    classes = _class_dirs(root)
    files = [(f, c) for c, cls in enumerate(classes) for f in _image_files(root / cls)]
    if not files:
        raise ValueError(f"dataset.root: no images ({', '.join(IMAGE_SUFFIXES)}) in class folders under {root}")
    out = _writer(tmp, len(files), (3, size, size))

    def put(i: int) -> None:
        out[i] = _decode_one(files[i][0], size)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(
            tqdm(
                pool.map(put, range(len(files))),
                total=len(files),
                desc=f"decoding {root.name}",
                disable=not progress,
                unit="img",
            )
        )
    out.flush()
    np.save(tmp / "labels.npy", np.asarray([c for _, c in files], np.int64))
    return {"name": root.name, "classes": classes, "levels": 255}


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


def absolute_paths(spec: dict) -> dict:
    """A dataset mapping with its file/folder made absolute: Ray Tune runs trials in their own working folder,
    so a path relative to where `scaling` was started would not be found there."""
    out = dict(spec)
    for key in ("root", "path"):
        if isinstance(out.get(key), str):
            out[key] = str(Path(out[key]).resolve())
    return out


def path_exists(path: str) -> bool:
    """Whether a user's path exists; a NUL byte or a name too long is not a path that exists (no exception)."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def is_file(path: str) -> bool:
    """Whether a user's path is an existing file (a malformed name is not)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False
