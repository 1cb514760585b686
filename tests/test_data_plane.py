"""Paper scale: the uint8 dataset cache, --set overrides, the cost model and dry runs of the paper configs,
and retrieval from precomputed embeddings through cached faiss indexes. No Ray here (fast lane)."""

import io
import os
import pickle
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from runners import costs
from runners import data as rdata
from runners.ann import build_index, cached_index, set_search_effort
from runners.checks import files_checked_later
from runners.config import ConfigError, load_config
from runners.plan import dry_run, stages
from runners.train import exact_channel_stats

ROOT = Path(__file__).resolve().parents[1]


def write_cifar(root: Path, per_batch: int = 6, n_test: int = 5, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(np.arange(n) % 10)}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "datasets"


# ------------------------------------------------------------------------------------------ the cache


def test_cifar_is_decoded_once_into_a_read_only_uint8_memory_map(tmp_path, cache):
    root = write_cifar(tmp_path / "cifar")
    data = rdata.load_dataset({"name": "cifar10", "root": str(root)})
    assert isinstance(data.pixels, np.memmap) and data.pixels.dtype == np.uint8 and not data.pixels.flags.writeable
    assert data.pixels.shape == (35, 3, 32, 32) and data.test_mask.sum() == 5 and data.classes[3] == "c3"
    first = pickle.loads((root / "data_batch_1").read_bytes())
    np.testing.assert_array_equal(data.pixels[:6].reshape(6, -1), first[b"data"])
    # rows become float only where indexed, with the former float cache's values (uint8 / 255 in float32)
    np.testing.assert_array_equal(data.images[[0, 7]], data.pixels[[0, 7]].astype(np.float32) / 255.0)
    folders = [p for p in cache.glob("cifar10-*") if p.is_dir()]
    assert len(folders) == 1
    stamp = (folders[0] / "pixels.npy").stat().st_mtime_ns
    rdata.load_dataset({"name": "cifar10", "root": str(root)})
    assert (folders[0] / "pixels.npy").stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_a_changed_source_file_gets_a_new_cache_never_the_stale_one(tmp_path, cache):
    root = write_cifar(tmp_path / "cifar")
    a = rdata.load_dataset({"name": "cifar10", "root": str(root)})
    write_cifar(root, seed=1)  # same names, new pixels
    os.utime(root / "data_batch_1", ns=(1, 1))  # even with an old mtime the size/mtime pair differs from before
    b = rdata.load_dataset({"name": "cifar10", "root": str(root)})
    assert not np.array_equal(a.pixels, b.pixels)
    assert len([p for p in cache.glob("cifar10-*") if p.is_dir()]) == 2


def test_a_failed_decode_leaves_no_cache_behind(tmp_path, cache):
    root = write_cifar(tmp_path / "cifar")
    (root / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_3 is not a CIFAR batch"):
        rdata.load_dataset({"name": "cifar10", "root": str(root)})
    assert [p for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_imagefolder_is_decoded_in_parallel_in_file_order(tmp_path, cache):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "tree" / c).mkdir(parents=True)
        for i in range(7):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "tree" / c / f"{i}.png")
    data = rdata.load_dataset({"name": "imagefolder", "root": str(tmp_path / "tree"), "image_size": 16})
    assert data.pixels.shape == (14, 3, 16, 16) and data.labels.tolist() == [0] * 7 + [1] * 7
    expect = np.asarray(Image.open(tmp_path / "tree" / "dog" / "3.png").convert("RGB").resize((16, 16)))
    np.testing.assert_array_equal(data.pixels[10], expect.transpose(2, 0, 1))


def test_digits_keep_their_17_grey_levels_exactly():
    d = load_digits()
    data = rdata.load_dataset({"name": "digits"})
    assert data.levels == 16 and data.pixels.dtype == np.uint8
    np.testing.assert_array_equal(data.images[np.arange(len(d.target))], (d.images / 16.0).astype(np.float32)[:, None])
    view = data.images.subset(np.array([5, 9, 11]))
    assert view.shape == (3, 1, 8, 8) and np.array_equal(view[1:], data.images[[9, 11]])


def test_exact_channel_statistics_match_torch_on_digits_and_are_exact_on_cifar_like_data():
    data = rdata.load_dataset({"name": "digits"})
    for n in (25, 400, 1797):
        x = torch.as_tensor(data.images[np.arange(n)])
        mean, std = exact_channel_stats(torch.as_tensor(np.array(data.pixels[:n])), 16)
        assert torch.equal(mean, x.mean((0, 2, 3), keepdim=True)) and torch.equal(
            std, x.std((0, 2, 3), keepdim=True) + 1e-6
        )
    big = torch.as_tensor(np.random.default_rng(0).integers(0, 256, (3000, 3, 32, 32), dtype=np.uint8))
    mean, _ = exact_channel_stats(big, 255)
    exact = big.double().mean((0, 2, 3)) / 255  # float64 is exact enough to judge float32 rounding
    assert torch.allclose(mean.view(-1).double(), exact, rtol=0, atol=1e-7)


# ------------------------------------------------------------------------------------------ --set


def test_set_overrides_nested_fields_with_yaml_values():
    cfg = load_config(
        ROOT / "configs/digits.yaml",
        ["classifier.steps=20", "seeds=[0, 1]", "source_options.retrieval.encoder=classifier"],
    )
    assert cfg.classifier.steps == 20 and cfg.seeds == (0, 1)
    assert cfg.source_options["retrieval"]["encoder"] == "classifier"


@pytest.mark.parametrize(
    "item, field",
    [
        ("classifier.steps", "--set"),
        ("=3", "--set"),
        ("classifier.steps.x=1", "--set classifier.steps.x"),
        ("classifier.steps=-5", "classifier.steps"),
        ("seeds=[0, 1", "--set seeds"),
    ],
)
def test_a_bad_set_is_one_error_naming_it(item, field):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs/digits.yaml", [item])
    assert str(err.value).startswith(field)


# ------------------------------------------------------------------------------------------ cost model


@pytest.mark.parametrize("name", ["cifar10", "bloodmnist", "imagenet100"])
def test_paper_configs_hold_every_source_and_price_before_their_files_exist(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of data/ or models/ is here
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError):
        load_config(ROOT / f"configs/{name}.yaml")  # a real sweep refuses missing files
    out = io.StringIO()
    with redirect_stdout(out):
        dry_run(ROOT / f"configs/{name}.yaml", gpus=8)
    text = out.getvalue()
    cfg_sources = {"cifar10": 9, "bloodmnist": 4, "imagenet100": 9}[name]
    assert f"{cfg_sources} sources" in text and "GPU-h" in text and "wall time on 8 GPU(s)" in text
    assert "trials" in text and "retrieval" in text and "text2image" in text
    assert "not in place yet: dataset" in text and ("assumed (" in text or "measured on" in text)


def test_wall_time_follows_the_number_of_gpus_and_generators_are_indivisible():
    with files_checked_later():
        cfg = load_config(ROOT / "configs/cifar10.yaml")
    st = stages(cfg, "gpu")
    one, eight = costs.wall_hours(st, 1, 1), costs.wall_hours(st, 8, 1)
    gen = next(s for s in st if s.name == "closed_set generator")
    assert gen.jobs == 20 and one == pytest.approx(sum(s.device_hours for s in st))
    # 20 generator jobs on 8 GPUs take 3 rounds of one job, not 20/8 of one
    assert eight >= 3 * gen.job_hours and eight < one / 4


def test_a_measured_entry_overrides_the_shipped_one_and_neighbours_are_scaled(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path))
    key = "classifier/resnet18/w64/3x32x32"
    costs.save_measured("gpu", {key: (1234.0, "measured on test GPU")})
    table = costs.load_table()
    assert costs.lookup(table, "gpu", key) == (1234.0, "measured on test GPU")
    value, basis = costs.lookup(table, "gpu", "classifier/resnet18/w64/3x64x64")
    assert value == pytest.approx(1234.0 / 4) and basis.startswith("scaled from " + key)
    with pytest.raises(KeyError, match="scaling calibrate"):
        costs.lookup(table, "tpu", key)
    # a key without an image shape (an encoder) is never scaled from another encoder's entry
    with pytest.raises(KeyError, match="no throughput for encode/dino on gpu: run `scaling calibrate"):
        costs.lookup(table, "gpu", "encode/dino")


def test_the_digits_dry_run_prices_every_stage_on_this_machine(capsys):
    dry_run(ROOT / "configs/digits.yaml")
    text = capsys.readouterr().out
    for row in ("closed_set generator", "open_set generator", "closed_set sampling", "retrieval", "trials"):
        assert row in text
    assert "CPU-h" in text and "wall time on" in text and "not in place" not in text


# ------------------------------------------------------------------------------------------ retrieval at scale


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, d)).astype(np.float32)
    return centres[rng.integers(0, 64, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_the_exact_neighbours_on_clustered_data(kind):
    both = _clustered(20_200, 32)  # queries from the same clusters as the pool
    z, q = both[:20_000], both[20_000:] / np.linalg.norm(both[20_000:], axis=1, keepdims=True)
    exact = build_index(z, "flat").search(q, 10)[1]
    index = build_index(z, kind)
    set_search_effort(index, nprobe=16, ef_search=128)
    found = index.search(q, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
    assert recall >= 0.9


def test_an_index_is_built_once_per_embeddings_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    np.save(tmp_path / "emb.npy", _clustered(3000, 16))
    a = cached_index(str(tmp_path / "emb.npy"), "ivf", {"nprobe": 8})
    files = list((tmp_path / "cache" / "indexes").glob("*.faiss"))
    stamp = files[0].stat().st_mtime_ns
    b = cached_index(str(tmp_path / "emb.npy"), "ivf", {"nprobe": 8})
    assert len(files) == 1 and files[0].stat().st_mtime_ns == stamp and a.ntotal == b.ntotal == 3000 and b.nprobe == 8


def test_retrieval_from_precomputed_embeddings_and_an_image_store(tmp_path, monkeypatch):
    from runners.encoders import embed
    from runners.sources import retrieval
    from runners.sources.base import Context

    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    data = rdata.load_dataset({"name": "digits"})
    base_cfg = {
        "name": "emb",
        "storage": str(tmp_path),
        "dataset": {"name": "digits"},
        "sources": ["real", "retrieval"],
        "n_real": [20],
        "n_synth": [0, 40],
        "seeds": [0],
    }
    probe = load_config(base_cfg)
    test_idx = rdata.dataset_of(probe)[1]
    # the store: 300 non-test digits at 16 px RGB (another resolution than the dataset), plus one test image
    rows = np.r_[np.setdiff1d(np.arange(1797), test_idx)[:300], test_idx[:1]]
    grey = (data.pixels[rows].astype(np.float32) * 255 / 16).round().astype(np.uint8)
    store = np.repeat(np.repeat(np.repeat(grey, 3, 1), 2, 2), 2, 3)
    np.save(tmp_path / "store.npy", store)
    np.save(tmp_path / "emb.npy", embed(data.images[rows], "pixels"))  # the same encoder as the queries
    opts = {
        "embeddings": str(tmp_path / "emb.npy"),
        "images": str(tmp_path / "store.npy"),
        "index": "flat",
        "dedup_threshold": 0.999,
    }
    cfg = load_config({**base_cfg, "source_options": {"retrieval": opts}})
    pool = retrieval.prepare(Context(cfg, "retrieval", 20, 0, 40))
    images, labels = pool.arrays["images"], pool.arrays["labels"]
    assert images.shape == (40, 1, 8, 8) and images.dtype == np.uint8 and pool.meta["dropped_near_duplicates"] >= 1
    # the test image's copy (last store row) is never picked; labels come from the queries (balanced base)
    assert pool.meta["index"] == "flat" and set(labels.tolist()) <= set(range(10))
    picked = embed([images.astype(np.float32) / 255], "pixels")
    test_z = embed(data.images[test_idx[:1]], "pixels")
    assert (picked @ test_z.T).max() < 0.999
    np.save(tmp_path / "bad.npy", np.ones((301, 5), np.float32))
    bad = load_config({**base_cfg, "source_options": {"retrieval": {**opts, "embeddings": str(tmp_path / "bad.npy")}}})
    with pytest.raises(ValueError, match="source_options.retrieval.embeddings: rows have 5 dimensions"):
        retrieval.prepare(Context(bad, "retrieval", 20, 0, 40))


def test_embedded_pool_options_are_checked_up_front(tmp_path):
    base = {
        "name": "x",
        "storage": str(tmp_path),
        "dataset": {"name": "digits"},
        "sources": ["real", "retrieval"],
        "n_real": [20],
        "n_synth": [0, 40],
        "seeds": [0],
    }
    np.save(tmp_path / "e.npy", np.zeros((3, 2), np.float32))
    for opts, field in [
        (
            {"embeddings": str(tmp_path / "missing.npy"), "images": str(tmp_path / "e.npy")},
            "source_options.retrieval.embeddings",
        ),
        ({"embeddings": str(tmp_path / "e.npy")}, "source_options.retrieval.images"),
        (
            {"embeddings": str(tmp_path / "e.npy"), "images": str(tmp_path / "e.npy"), "index": "lsh"},
            "source_options.retrieval.index",
        ),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config({**base, "source_options": {"retrieval": opts}})
        assert str(err.value).startswith(field)


def test_sampling_builds_no_autograd_graph_and_later_batches_match_one_go():
    """Sampling runs under no_grad (a graph kept across 25 solver steps would hold every activation of a batch
    on the GPU), and batch b sampled on its own equals batch b of a larger call (pools grow by batches)."""
    from runners.generative import build_unet, sample_diffusion
    from runners.options import resolve_preset

    hp = {**resolve_preset({"block_out_channels": [8, 16], "sample_steps": 2}), "sample_batch": 3}
    torch.manual_seed(0)
    model = build_unet(hp, (1, 8, 8), 10)
    grad_seen = []
    model.register_forward_pre_hook(lambda *_: grad_seen.append(torch.is_grad_enabled()))
    labels = np.arange(6) % 10
    both = sample_diffusion(model, labels, 10, hp, seed=5)
    assert grad_seen and not any(grad_seen)
    second = sample_diffusion(model, labels[3:], 10, hp, seed=5, first_batch=1)
    np.testing.assert_array_equal(second, both[3:])
    with pytest.raises(ValueError, match="^sample_batch"):
        sample_diffusion(model, labels[:4], 10, hp, seed=5)
