"""The small-data generator options: non-leaking augmentation (the denoiser is told the symmetry; sampling asks
for none) and training steps that follow the training-set size. Configs without them keep their generators."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from runners.config import ConfigError, load_config
from runners.generative import dihedral, sample_diffusion, train_or_load
from runners.options import MIN_GENERATOR_STEPS, generator_steps, resolve_preset


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.images / 16).astype(np.float32)[:60, None], d.target[:60].astype(np.int64)


def test_the_eight_symmetries_of_the_square_are_distinct_and_the_identity_is_first():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(8, 1, 1, 1)
    out = dihedral(x, torch.arange(8))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[0].flip(-1).flip(-2))  # 180 degrees
    assert torch.equal(out[4], x[0].flip(-1))


def test_steps_follow_the_training_set_within_their_bounds():
    hp = resolve_preset({"steps_per_image": 8, "train_steps": 2000})
    assert [generator_steps(hp, n) for n in (5, 25, 100, 1000)] == [MIN_GENERATOR_STEPS, 200, 800, 2000]
    assert generator_steps(resolve_preset({}), 25) == 600  # unset: train_steps, whatever the set


def test_an_augmented_generator_is_told_the_symmetry_and_samples_with_the_identity(tmp_path, digits):
    x, y = digits
    hp = resolve_preset({"block_out_channels": [8, 16], "train_steps": 15, "batch_size": 8, "sample_steps": 3,
                         "augment": 0.5, "steps_per_image": 0.2})  # fmt: skip
    model, meta = train_or_load(tmp_path / "g", x, y, 10, hp, seed=0)
    assert model.config.num_class_embeds == 8 * 11  # a row per (symmetry, class or null)
    assert meta["train_steps"] == 15  # 0.2 x 60 = 12 is below the floor of 100; the cap is train_steps
    images = sample_diffusion(model, np.arange(50) % 10, 10, hp, seed=0)
    assert images.shape == (50, 1, 8, 8) and images.dtype == np.uint8
    # sampling reads the identity rows only: the others can change without changing a sample
    with torch.no_grad():
        model.class_embedding.weight[11:] += 1.0
    np.testing.assert_array_equal(sample_diffusion(model, np.arange(50) % 10, 10, hp, seed=0), images)


def test_a_plain_generator_is_the_one_it_always_was(tmp_path, digits):
    x, y = digits
    base = {"block_out_channels": [8, 16], "train_steps": 10, "batch_size": 8}
    a, _ = train_or_load(tmp_path / "a", x, y, 10, resolve_preset(base), seed=0)
    b, _ = train_or_load(tmp_path / "b", x, y, 10, resolve_preset({**base, "augment": None}), seed=0)
    assert a.config.num_class_embeds == 11
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert "augment" not in resolve_preset({**base, "augment": None})  # unset keys stay out of the keys


@pytest.mark.parametrize(
    "options, message",
    [
        ({"augment": 1.0}, "augment: must be a probability in [0, 1), got 1.0"),
        ({"augment": "yes"}, "augment: must be a probability"),
        ({"steps_per_image": 0}, "steps_per_image: must be a positive number, got 0"),
    ],
)
def test_bad_small_data_options_name_the_field(options, message, tmp_path):
    cfg = {"name": "x", "dataset": {"name": "digits"}, "sources": ["real", "closed_set"], "n_real": [10],
           "n_synth": [0, 5], "seeds": [0, 1], "storage": str(tmp_path), "source_options": {"closed_set": options}}  # fmt: skip
    with pytest.raises(
        ConfigError, match=rf"^source_options\.closed_set\.{message.replace('[', '.').replace(')', '.')}"
    ):
        load_config(cfg)
