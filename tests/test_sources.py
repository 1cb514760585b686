"""Sources: shapes, classes, determinism, cache reuse, retrieval labels; all offline with tiny models."""

import json
import os
import warnings

import numpy as np
import pytest

from runners import data as rdata
from runners import pools, sources
from runners.config import ConfigError, load_config
from runners.encoders import embed
from runners.generative import sample_text2image
from runners.options import resolve_preset
from runners.sources.open_set import check_pipeline_dir
from tests.tiny_models import tiny_clip_vision, tiny_text2image_pipeline

pytestmark = pytest.mark.slow  # Ray sweeps and generator training: the fast lane is -m "not slow"

TINY_GEN = {"block_out_channels": [8, 16], "train_steps": 12, "batch_size": 8, "sample_steps": 4}


def _cfg(run_dir, n_synth=(0, 10, 30), **extra):
    """A validated SweepConfig whose run folder is ``run_dir`` (the one config type sources take)."""
    return load_config(
        {
            "name": run_dir.name,
            "storage": str(run_dir.parent),
            "dataset": {"name": "digits"},
            "sources": ["real", "closed_set", "open_set", "retrieval"],
            "n_real": [20, 40],
            "test_fraction": 0.25,
            "n_synth": list(n_synth),
            "seeds": [0, 1],
            "resources": {"cpus_per_trial": 1},
            "source_options": {"closed_set": TINY_GEN, "open_set": TINY_GEN, **extra},
        }
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sources")


def test_closed_set_pool_is_balanced_uint8_and_deterministic(run_dir, tmp_path):
    cfg = _cfg(run_dir)
    meta = sources.prepare_pool(cfg, "closed_set", 20, 0)
    with np.load(pools.pool_paths(cfg, "closed_set", 20, 0)[0]) as f:
        images, labels = f["images"], f["labels"]
    assert images.shape == (50, 1, 8, 8) and images.dtype == np.uint8  # max(n_synth) = 30 in whole batches of 50
    assert np.bincount(labels[:10], minlength=10).tolist() == [1] * 10  # every prefix is class-balanced
    assert meta["generator_seconds"] > 0 and 0 <= meta["label_accuracy"] <= 1 and meta["frechet_distance"] >= 0
    folder = run_dir / "generators" / meta["generator"]
    assert (folder / "diffusion_pytorch_model.safetensors").exists()
    # a second run folder recomputes from scratch and must give the same bytes (deterministic on CPU)
    again = _cfg(tmp_path)
    sources.prepare_pool(again, "closed_set", 20, 0)
    with np.load(pools.pool_paths(again, "closed_set", 20, 0)[0]) as f:
        np.testing.assert_array_equal(f["images"], images)


def test_a_prepared_pool_is_reused_not_recomputed(run_dir):
    cfg = _cfg(run_dir)
    first = sources.prepare_pool(cfg, "closed_set", 20, 0)
    npz = pools.pool_paths(cfg, "closed_set", 20, 0)[0]
    stamp = os.stat(npz).st_mtime_ns
    assert sources.prepare_pool(cfg, "closed_set", 20, 0) == first
    assert os.stat(npz).st_mtime_ns == stamp
    # another seed is another pool; a changed preset is another pool
    assert pools.pool_key(cfg, "closed_set", 20, 1) != pools.pool_key(cfg, "closed_set", 20, 0)
    other = _cfg(run_dir, closed_set={**TINY_GEN, "guidance": 3.0})
    assert pools.pool_key(other, "closed_set", 20, 0) != pools.pool_key(cfg, "closed_set", 20, 0)


def test_open_set_generator_is_trained_once_and_shared_across_base_sizes(run_dir):
    cfg = _cfg(run_dir)
    assert pools.pool_key(cfg, "open_set", 20, 0) == pools.pool_key(cfg, "open_set", 40, 0)
    a = sources.prepare_pool(cfg, "open_set", 20, 0)
    b = sources.prepare_pool(cfg, "open_set", 20, 1)
    assert a["generator"] == b["generator"] and a["generator_shared_by"] == 2
    assert len(list((run_dir / "generators").glob(f"{a['generator']}*"))) == 1
    x, y, _ = pools.load_pool(cfg, "open_set", 20, 0, 10)
    assert x.shape == (10, 1, 8, 8) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert sorted(y.tolist()) == list(range(10))


def test_retrieval_labels_by_query_and_records_label_noise(run_dir):
    cfg = _cfg(run_dir)
    meta = sources.prepare_pool(cfg, "retrieval", 20, 0)
    data, test_idx = rdata.dataset_of(cfg)
    base, _ = rdata.base_and_real_pool(cfg, 20, 0, 0)
    with np.load(pools.pool_paths(cfg, "retrieval", 20, 0)[0]) as f:
        idx, labels, wrong = f["indices"], f["labels"], f["label_wrong"]
    assert len(np.unique(idx)) == 30
    assert not set(idx) & set(base) and not set(idx) & set(test_idx)
    assert set(labels) <= set(data.labels[base])
    np.testing.assert_array_equal(wrong, labels != data.labels[idx])
    assert meta["label_noise"] == pytest.approx(wrong.mean())
    # the first len(base) picks are each query's nearest neighbour: check against brute force
    z = embed(data.images, "pixels")
    external = np.setdiff1d(rdata.non_test(data, test_idx), base)
    brute = external[np.argmax(z[base] @ z[external].T, axis=1)]
    assert np.mean(idx[:5] == brute[:5]) == 1.0


def test_retrieval_drops_near_duplicates_of_test_images(run_dir):
    cfg = _cfg(run_dir, retrieval={"dedup_threshold": 0.9})
    meta = sources.prepare_pool(cfg, "retrieval", 20, 0)
    data, test_idx = rdata.dataset_of(cfg)
    with np.load(pools.pool_paths(cfg, "retrieval", 20, 0)[0]) as f:
        idx = f["indices"]
    z = embed(data.images, "pixels")
    assert (z[idx] @ z[test_idx].T).max() < 0.9
    assert meta["dropped_near_duplicates"] > 0


def test_retrieval_with_a_local_clip_encoder(run_dir, tmp_path):
    clip = tiny_clip_vision(tmp_path / "clip")
    # an untrained CLIP maps every digit to nearly the same direction: switch the test-duplicate check off
    cfg = _cfg(run_dir, retrieval={"encoder": "clip", "clip_dir": str(clip), "dedup_threshold": 1.0})
    meta = sources.prepare_pool(cfg, "retrieval", 20, 1)
    assert meta["encoder"] == "clip" and 0 <= meta["label_noise"] <= 1


def test_text_to_image_pipeline_from_a_local_folder(tmp_path):
    folder = tiny_text2image_pipeline(tmp_path / "t2i")
    check_pipeline_dir(folder)
    labels = np.array([0, 1, 2, 3])
    a = sample_text2image(folder, [str(i) for i in range(10)], labels, (1, 8, 8), seed=0, steps=2, batch=2)
    b = sample_text2image(folder, [str(i) for i in range(10)], labels, (1, 8, 8), seed=0, steps=2, batch=2)
    assert a.shape == (4, 1, 8, 8) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    # batch 1 of a stream, sampled on its own, is the second half of the two batches sampled at once
    later = sample_text2image(
        folder, [str(i) for i in range(10)], labels[2:], (1, 8, 8), seed=0, steps=2, batch=2, first_batch=1
    )
    np.testing.assert_array_equal(later, a[2:])
    cfg = _cfg(tmp_path / "run", open_set={"pipeline": str(folder), "steps": 2, "prompt": "a digit {}"})
    meta = sources.prepare_pool(cfg, "open_set", 20, 0)
    assert meta["generator"] == str(folder.resolve()) and meta["size"] == 32  # 30 in whole batches of 16


@pytest.mark.parametrize("source", ["closed_set", "open_set", "real", "retrieval"])
def test_a_pool_grows_with_the_largest_n_synth_keeping_its_prefix(source, tmp_path, monkeypatch):
    """A run whose largest n_synth grows from 30 to 55 extends its pools: the old images stay the prefix, a
    generator samples only the new batches, and the result is byte-identical to a pool made at 55 at once."""
    gen = {**TINY_GEN, "sample_batch": 10}
    opts = {"closed_set": gen, "open_set": gen}
    small = _cfg(tmp_path / "grown", **opts)
    grown = _cfg(tmp_path / "grown", n_synth=(0, 10, 30, 55), **opts)
    fresh = _cfg(tmp_path / "fresh", n_synth=(0, 10, 30, 55), **opts)
    sources.prepare_pool(small, source, 20, 0)
    before = pools.read_pool(small, source, 20, 0).arrays
    sampled = []
    module = sources.REGISTRY[source]
    if hasattr(module, "sample_diffusion"):  # count the batches the extension samples (the real sampler runs)
        real_sampler = module.sample_diffusion
        monkeypatch.setattr(
            module,
            "sample_diffusion",
            lambda model, labels, *a, **k: sampled.append(len(labels)) or real_sampler(model, labels, *a, **k),
        )
    meta = sources.prepare_pool(grown, source, 20, 0)
    after = pools.read_pool(grown, source, 20, 0).arrays
    n = len(before["labels"])
    assert n >= 30 and len(after["labels"]) >= 55 and meta["size"] == len(after["labels"])
    for name in before:
        np.testing.assert_array_equal(after[name][:n], before[name])  # finished cells' inputs unchanged
    if hasattr(module, "sample_diffusion"):
        assert sampled == [30]  # batches 3, 4, 5 of 10 images: 30 -> 60 rows
    sources.prepare_pool(fresh, source, 20, 0)
    at_once = pools.read_pool(fresh, source, 20, 0).arrays
    assert sorted(at_once) == sorted(after)
    for name in after:
        np.testing.assert_array_equal(after[name], at_once[name])


def _sweep(**extra):
    return {
        "name": "s",
        "dataset": {"name": "digits"},
        "sources": ["real", "closed_set", "open_set", "retrieval"],
        "n_real": [10],
        "n_synth": [0, 10],
        "seeds": [0],
        **extra,
    }


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"source_options": {"closed_set": {"preset": "huge"}}}, "source_options.closed_set.preset"),
        ({"source_options": {"closed_set": {"learning_rate": 1}}}, "source_options.closed_set.learning_rate"),
        ({"source_options": {"closed_set": {"train_steps": 0}}}, "source_options.closed_set.train_steps"),
        ({"source_options": {"closed_set": {"sample_batch": 0}}}, "source_options.closed_set.sample_batch"),
        (
            {"source_options": {"open_set": {"block_out_channels": [8, 8, 8, 8, 8]}}},
            "source_options.open_set.block_out_channels",
        ),
        ({"source_options": {"retrieval": {"encoder": "sift"}}}, "source_options.retrieval.encoder"),
        ({"source_options": {"retrieval": {"encoder": "clip"}}}, "source_options.retrieval.clip_dir"),
        ({"source_options": {"retrieval": {"dedup_threshold": 1.5}}}, "source_options.retrieval.dedup_threshold"),
        ({"source_options": {"retrieval": {"clip_dir": "/no/such/clip"}}}, "source_options.retrieval.clip_dir"),
        ({"source_options": {"open_set": {"pipeline": "/no/such/dir"}}}, "source_options.open_set.pipeline"),
        ({"source_options": {"mixup": {}}}, "source_options.mixup"),
        ({"sources": ["retrieval"], "n_synth": [0, 1340]}, "n_synth"),
    ],
)
def test_bad_source_options_are_refused_naming_the_field(extra, field):
    with pytest.raises(ConfigError) as err:
        load_config(_sweep(**extra))
    assert str(err.value).startswith(field + ":"), str(err.value)


def test_malformed_pipeline_folders_are_refused_before_the_sweep(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no model_index.json"):
        load_config(_sweep(source_options={"open_set": {"pipeline": str(empty)}}))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]})
    )
    with pytest.raises(ConfigError, match="has no 'unet/' folder"):
        load_config(_sweep(source_options={"open_set": {"pipeline": str(broken)}}))
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(_sweep(source_options={"open_set": {"pipeline": str(broken)}}))


def test_presets_resolve_with_overrides():
    hp = resolve_preset({"preset": "cifar", "train_steps": 5})
    assert hp["train_steps"] == 5 and hp["block_out_channels"] == (128, 256, 256, 256)


def test_retrieval_from_an_external_image_folder(run_dir, tmp_path):
    """An ImageFolder of RGB 16x16 PNGs (class folders named like the dataset's classes) as the external pool:
    resized and greyscaled to digits' 1x8x8, stored as uint8, label noise measured through the folder names."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for i in range(300, 600):  # none of these is needed elsewhere; the folder is a stand-in for a web crawl
        folder = tmp_path / "crawl" / str(d.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        grey = (d.images[i] / 16 * 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, -1)).resize((16, 16), Image.NEAREST).save(folder / f"{i}.png")
    pool = {"name": "imagefolder", "root": str(tmp_path / "crawl"), "image_size": 16}
    cfg = _cfg(run_dir, retrieval={"pool": pool})
    meta = sources.prepare_pool(cfg, "retrieval", 20, 0)
    with np.load(pools.pool_paths(cfg, "retrieval", 20, 0)[0]) as f:
        images, labels = f["images"], f["labels"]
    assert images.shape == (30, 1, 8, 8) and images.dtype == np.uint8
    assert meta["label_known_fraction"] == 1.0 and 0 <= meta["label_noise"] < 0.5
    x, y, _ = pools.load_pool(cfg, "retrieval", 20, 0, 30)
    assert x.shape == (30, 1, 8, 8) and np.array_equal(y, labels)
    with pytest.raises(ConfigError, match="^source_options.retrieval.pool.root: no such file"):
        load_config(_sweep(source_options={"retrieval": {"pool": {"name": "imagefolder", "root": "/no/crawl"}}}))


def test_frechet_distance_is_finite_for_a_collapsed_pool_and_zero_for_the_same_features():
    from runners.quality import frechet_distance

    rng = np.random.default_rng(0)
    real = rng.standard_normal((300, 16))
    collapsed = np.tile(rng.standard_normal((1, 16)), (300, 1))  # a generator that draws one image: covariance 0
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = frechet_distance(real, collapsed)
    assert np.isfinite(d) and d > 1.0
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
