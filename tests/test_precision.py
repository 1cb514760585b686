"""Numeric precision of the classifier and the generators: fp32 or bf16 autocast, bf16 by default on CUDA and fp32
on CPU; part of the estimand (fingerprint and protocol attrs), an unset precision keeps older runs' keys."""

import numpy as np
import pytest
import torch

from runners.config import ConfigError, load_config
from runners.data import load_dataset
from runners.options import resolve_preset
from runners.train import autocast_for, build_model, default_precision, train_classifier


def test_default_precision_is_bf16_on_cuda_and_fp32_on_cpu():
    assert default_precision("cuda") == default_precision("cuda:1") == "bf16"
    assert default_precision("cpu") == "fp32"


def test_bf16_autocast_really_runs_the_network_in_bfloat16_on_cpu():
    model = build_model("small_cnn", 1, 10, 8)
    x = torch.rand(4, 1, 8, 8)
    with autocast_for("cpu", "bf16")():
        assert model(x).dtype == torch.bfloat16
    with autocast_for("cpu", "fp32")():
        assert model(x).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        autocast_for("cpu", "fp16")


def test_the_digits_classifier_learns_the_same_in_bf16_and_fp32():
    """The accuracy difference is bounded; bench/RESULTS.md has the timing on this CPU."""
    torch.set_num_threads(1)
    d = load_dataset({"name": "digits"})
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(d.labels))
    tr, te = idx[:400], idx[1000:1400]
    acc = {}
    for precision in ("fp32", "bf16"):
        acc[precision] = [
            train_classifier(
                d.images[tr],
                d.labels[tr],
                d.images[te],
                d.labels[te],
                10,
                steps=150,
                width=16,
                seed=s,
                device="cpu",
                precision=precision,
            )["accuracy"]
            for s in range(3)
        ]
    assert min(acc["fp32"]) > 0.85 and min(acc["bf16"]) > 0.85, acc
    assert abs(np.mean(acc["fp32"]) - np.mean(acc["bf16"])) <= 0.03, acc
    assert acc["fp32"] != acc["bf16"]  # bf16 did change the arithmetic


def test_precision_is_a_checked_config_field_that_enters_the_fingerprint():
    plain = load_config("configs/digits.yaml")
    assert plain.precision == "fp32" and plain.protocol()["precision"] == "fp32"
    fp32 = load_config("configs/digits.yaml", ["classifier.precision=fp32"])
    bf16 = load_config("configs/digits.yaml", ["classifier.precision=bf16"])
    assert fp32.fingerprint() == plain.fingerprint() and fp32.fixed_fingerprint() == plain.fixed_fingerprint()
    assert bf16.fingerprint() != plain.fingerprint() and bf16.fixed_fingerprint() != plain.fixed_fingerprint()
    assert bf16.protocol()["precision"] == "bf16"
    on_gpu = load_config("configs/digits.yaml", ["resources.gpus_per_trial=0.5"])
    assert on_gpu.precision == "bf16"  # unset: the device decides
    with pytest.raises(ConfigError, match="classifier.precision"):
        load_config("configs/digits.yaml", ["classifier.precision=fp16"])


def test_a_generator_precision_is_an_option_only_when_set():
    assert "precision" not in resolve_preset({"preset": "tiny"})  # unset: the generator keys stay as they were
    assert resolve_preset({"preset": "tiny", "precision": "bf16"})["precision"] == "bf16"
    assert "precision" not in resolve_preset({"preset": "tiny", "precision": None})
    with pytest.raises(ValueError, match="precision"):
        resolve_preset({"preset": "tiny", "precision": "fp16"})


def test_a_generator_trains_and_samples_in_bf16_on_cpu():
    from runners.generative import sample_diffusion, train_diffusion

    torch.set_num_threads(1)
    hp = {
        **resolve_preset({"preset": "tiny", "precision": "bf16"}),
        "train_steps": 5,
        "batch_size": 8,
        "sample_steps": 2,
        "sample_batch": 10,
    }
    rng = np.random.default_rng(0)
    images = rng.random((40, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 40)
    model, seconds = train_diffusion(images, labels, 3, hp, seed=0, device="cpu")
    out = sample_diffusion(model, np.zeros(10, int), 3, hp, seed=0, device="cpu")
    assert out.shape == (10, 1, 8, 8) and out.dtype == np.uint8 and seconds > 0


def test_a_generator_on_a_gpu_config_resolves_to_bf16_and_keys_it():
    from runners.sources.closed_set import generator_key

    cpu = load_config("configs/digits.yaml")
    gpu = load_config("configs/digits.yaml", ["resources.gpus_per_trial=0.5"])
    assert "precision" not in cpu.options("closed_set")["generator"]  # CPU: fp32, keys as before the option
    assert gpu.options("closed_set")["generator"]["precision"] == "bf16"
    assert generator_key(cpu, "closed_set", 25, 0) != generator_key(gpu, "closed_set", 25, 0)
    fp32 = load_config(
        "configs/digits.yaml", ["resources.gpus_per_trial=0.5", "source_options.closed_set.precision=fp32"]
    )
    assert fp32.options("closed_set")["generator"]["precision"] == "fp32"
