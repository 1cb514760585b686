"""MNIST-family IDX files as datasets: Fashion-MNIST from Debian's package (the real files, not skipped in CI),
any IDX folder a user points to, and one line naming the file for every way such a folder can be wrong."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from runners import data as rdata
from runners.config import ConfigError, load_config
from scaling.cli import main

FASHION = Path(rdata.FASHION_MNIST_ROOT)


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None, gz: bool = True) -> Path:
    """An IDX file as LeCun's format defines it: magic (0x0803 images / 0x0801 labels), big-endian dims, bytes."""
    kind = magic if magic is not None else (0x0803 if array.ndim == 3 else 0x0801)
    head = kind.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    body = head + np.ascontiguousarray(array, np.uint8).tobytes()
    opener = gzip.open if gz else open
    with opener(path, "wb") as fh:
        fh.write(body)
    return path


def idx_folder(root: Path, n_train: int = 30, n_test: int = 10, gz: bool = True, prefix: str = "") -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz=gz)
        write_idx(root / f"{prefix}{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz=gz)
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))


def _config(dataset: dict, tmp_path: Path) -> dict:
    return {
        "name": "idx",
        "dataset": dataset,
        "sources": ["real"],
        "n_real": [10],
        "n_synth": [0, 5],
        "seeds": [0, 1],
        "storage": str(tmp_path / "runs"),
    }


def test_fashion_mnist_is_read_from_debians_package_with_its_own_split(cache):
    data = rdata.load_dataset({"name": "fashion_mnist"})
    assert data.pixels.shape == (70000, 1, 28, 28) and data.pixels.dtype == np.uint8
    assert int(data.test_mask.sum()) == 10000 and not data.test_mask[:60000].any()
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert np.bincount(data.labels[data.test_mask]).tolist() == [1000] * 10  # the published balanced test set
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as fh:  # the first test image, byte for byte
        first = np.frombuffer(fh.read(16 + 784)[16:], np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(data.pixels[60000, 0], first)
    assert rdata.dataset_facts({"name": "fashion_mnist"}) == (70000, (1, 28, 28))


def test_a_config_on_fashion_mnist_validates_against_its_files(tmp_path):
    cfg = load_config(_config({"name": "fashion_mnist"}, tmp_path))
    assert cfg.dataset == {"name": "fashion_mnist"}


@pytest.mark.parametrize("gz", [True, False])
def test_an_idx_folder_decodes_gzipped_or_not_with_a_prefix(tmp_path, cache, gz):
    root = idx_folder(tmp_path / "emnist", gz=gz, prefix="emnist-x-")
    spec = {"name": "idx", "root": str(root), "prefix": "emnist-x-"}
    data = rdata.load_dataset(spec)
    assert data.pixels.shape == (40, 1, 28, 28) and int(data.test_mask.sum()) == 10
    assert data.classes == [str(c) for c in range(10)]
    load_config(_config(spec, tmp_path))


def _damage(root: Path, how: str) -> str:
    """Break one file of an IDX folder; returns the file name the error must name."""
    if how == "missing":
        (root / "t10k-labels-idx1-ubyte.gz").unlink()
        return "t10k-labels-idx1-ubyte.gz"
    if how == "magic":
        write_idx(root / "train-images-idx3-ubyte.gz", np.zeros((30, 28, 28)), magic=0x0D03)
        return "train-images-idx3-ubyte.gz"
    if how == "count":
        write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(29))
        return "train-labels-idx1-ubyte.gz"
    if how == "swapped":
        shutil.copyfile(root / "t10k-labels-idx1-ubyte.gz", root / "t10k-images-idx3-ubyte.gz")
        return "t10k-images-idx3-ubyte.gz"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing", "magic", "count", "swapped"])
def test_a_broken_idx_folder_is_one_line_naming_the_file_before_any_work(tmp_path, cache, capsys, how):
    root = idx_folder(tmp_path / "idx")
    name = _damage(root, how)
    with pytest.raises(ConfigError, match=rf"^dataset\.root: .*{name}"):
        load_config(_config({"name": "idx", "root": str(root)}, tmp_path))
    path = tmp_path / "c.yaml"
    path.write_text(f"name: idx\ndataset: {{name: idx, root: {root}}}\nsources: [real]\nn_real: [10]\n"
                    f"n_synth: [0, 5]\nseeds: [0, 1]\nstorage: {tmp_path / 'runs'}\n")  # fmt: skip
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0]
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.parametrize("gz", [True, False])
def test_a_truncated_idx_file_is_named_when_decoded_and_leaves_no_cache(tmp_path, cache, gz):
    root = idx_folder(tmp_path / "idx", gz=gz)
    name = f"train-images-idx3-ubyte{'.gz' if gz else ''}"
    raw = (root / name).read_bytes()
    (root / name).write_bytes(raw[: len(raw) // 2])  # a download cut short: the header is intact
    spec = {"name": "idx", "root": str(root)}
    with pytest.raises(ValueError, match=rf"^dataset\.root: .*{name} is truncated"):
        rdata.load_dataset(spec)
    assert not list((tmp_path / "cache" / "datasets").glob("idx-*[!k]"))  # no half-built cache folder


def test_a_missing_fashion_mnist_folder_says_how_to_install_it(tmp_path, monkeypatch):
    from runners import checks

    for module in (checks, rdata):  # a machine without Debian's package
        monkeypatch.setattr(module, "FASHION_MNIST_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="^dataset.root: no such folder: .*apt-get install dataset-fashion-mnist"):
        load_config(_config({"name": "fashion_mnist"}, tmp_path))
    with pytest.raises(ConfigError, match="^dataset.root: no such folder: [^(]*$"):  # a root of one's own: no hint
        load_config(_config({"name": "fashion_mnist", "root": str(tmp_path / "elsewhere")}, tmp_path))
    with pytest.raises(ConfigError, match="^dataset.root: is required for idx"):
        load_config(_config({"name": "idx"}, tmp_path))
