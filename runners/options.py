"""The vocabulary several rooms share — recipes, the classifier's defaults, generator presets, encoders, index
kinds — without torch, diffusers or faiss.

The config validator, the dry run and the pool cache keys all need it; the modules that *run* a recipe, a
generator or an encoder import the heavy libraries, this one does not. A source's own options (their defaults,
resolution and checks) live in its module under :mod:`runners.sources`.
"""

from __future__ import annotations

import hashlib
import json

RECIPES = ("small_cnn", "resnet18")  # classifier builders in runners.train
# the one home of the classifier's and the resources' defaults; every use site reads them through runners.config.SweepConfig's
# properties (recipe, width, batch_size, steps, cpus_per_trial), never with its own literal
CLASSIFIER_DEFAULTS = {
    "recipe": "small_cnn",
    "batch_size": 64,
    "steps": 300,
    "lr": 3e-3,
    "weight_decay": 5e-4,
    "label_smoothing": 0.1,
}
DEFAULT_WIDTH = {"small_cnn": 32, "resnet18": 64}
CPUS_PER_TRIAL = 1

ENCODERS = ("pixels", "classifier", "clip")  # retrieval embeddings in runners.encoders

# Generator presets sized per dataset. `tiny` keeps the digits demo on a 2-core CPU (about 20 ms a step);
# `cifar` and `medmnist` are GPU presets at the scale of Wang et al.'s class-conditional models.
PRESETS = {
    "tiny": dict(
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention=False,
        train_steps=600,
        batch_size=32,
        lr=3e-3,
        ema_decay=0.995,
        sample_steps=20,
        guidance=2.0,
        p_uncond=0.1,
        sample_batch=50,
    ),
    "medmnist": dict(
        block_out_channels=(64, 128, 128),
        layers_per_block=2,
        attention=True,
        train_steps=40_000,
        batch_size=128,
        lr=2e-4,
        ema_decay=0.9995,
        sample_steps=25,
        guidance=2.0,
        p_uncond=0.1,
        sample_batch=250,
    ),
    "cifar": dict(
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        attention=True,
        train_steps=100_000,
        batch_size=128,
        lr=2e-4,
        ema_decay=0.9999,
        sample_steps=25,
        guidance=2.0,
        p_uncond=0.1,
        sample_batch=250,
    ),
}
# sample_batch: images per sampling batch. Each batch draws its own noise stream and pools hold whole batches, so
# a pool that grows (a larger n_synth) keeps its batches and samples only new ones, and any pool is a prefix of
# a larger one. Fixed per preset, not per pool size: a batch's images depend on its composition (the model runs
# on the whole batch), so the batch boundaries must not move when a pool grows.
PRESET_KEYS = tuple(PRESETS["tiny"])
# numeric precision of a classifier or generator: fp32, or bf16 autocast; unset means bf16 on CUDA and fp32 on CPU.
# A generator option only when set, so configs without it keep their generator and pool keys.
PRECISIONS = ("fp32", "bf16")
# Small-data options of a generator, each entering the generator and pool keys only when set (configs without them
# keep their keys): `augment` — the probability that a training image is transformed by a non-identity symmetry of
# the square (flips, rotations by 90 degrees) that the denoiser is *told* (a class-embedding row per (transform,
# class)), so it learns the transformed images without generating them: sampling asks for the identity (EDM's
# non-leaking augmentation, Karras et al. 2022); `steps_per_image` — train for this many steps per training image
# (at least MIN_GENERATOR_STEPS, at most `train_steps`), since memorisation sets in after a time that grows with
# the training set (Bonnaire et al. 2025, Favero et al. 2025).
SMALL_DATA_KEYS = ("augment", "steps_per_image")
# The denoiser's architecture: the UNet of the presets, or a DiT (diffusers' DiTTransformer2DModel: the image cut into
# patch_size x patch_size patches, a transformer of num_layers blocks with adaLN-Zero class and time conditioning,
# Peebles & Xie 2023), trained from scratch in pixel space. Enters the keys only when set to dit (a UNet config keeps
# its generator and pool keys); the DiT keys are accepted only with it.
ARCHITECTURES = ("unet", "dit")
DIT_DEFAULTS = {"patch_size": 2, "num_layers": 4, "num_attention_heads": 4, "attention_head_dim": 16}
MIN_GENERATOR_STEPS = 100
AUGMENTATIONS = 8  # the symmetries of the square: identity, 3 rotations, 4 reflections


def denoising_steps(steps: int, strength: float) -> int:
    """Steps an image-to-image run takes of ``steps``: the last ``int(steps * strength)`` (as diffusers' img2img
    pipelines count them); 0 returns the start images unchanged."""
    return min(int(steps * strength), steps)


def denoiser_tag(hp: dict) -> str:
    """The denoiser's size as the cost table keys name it: UNet levels (``2``), or ``dit<layers>-d<width>``."""
    if hp.get("architecture") == "dit":
        return f"dit{hp['num_layers']}-d{hp['num_attention_heads'] * hp['attention_head_dim']}"
    return str(len(hp["block_out_channels"]))


def generator_steps(hp: dict, n_train: int) -> int:
    """Training steps of a generator on ``n_train`` images: ``train_steps``, or ``steps_per_image`` x n within
    [MIN_GENERATOR_STEPS, train_steps]."""
    if hp.get("steps_per_image") is None:
        return int(hp["train_steps"])
    return int(min(hp["train_steps"], max(MIN_GENERATOR_STEPS, round(hp["steps_per_image"] * n_train))))


INDEXES = ("flat", "ivf", "hnsw")  # faiss indexes of an embedded retrieval pool (runners.ann)


def content_hash(spec: dict) -> str:
    """16 hex digits of SHA-256 over canonical JSON: the cache key of pools, generators and the judge."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_preset(options: dict) -> dict:
    """A preset name plus overrides -> the full hyper-parameter dict (what the cache key hashes)."""
    name = options.get("preset", "tiny")
    if name not in PRESETS:
        raise ValueError(f"preset: unknown generator preset {name!r}; choose from {tuple(PRESETS)}")
    architecture = options.get("architecture") or "unet"
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture: choose one of {ARCHITECTURES}, got {architecture!r}")
    dit_keys = tuple(DIT_DEFAULTS) if architecture == "dit" else ()
    unknown = sorted(
        set(options) - set(PRESET_KEYS) - {"preset", "precision", "architecture", *SMALL_DATA_KEYS, *dit_keys}
    )
    if unknown:
        known = ", ".join(("preset", "precision", "architecture", *SMALL_DATA_KEYS, *PRESET_KEYS, *dit_keys))
        extra = " (patch_size, num_layers, ... need architecture: dit)" if unknown[0] in DIT_DEFAULTS else ""
        raise ValueError(f"{unknown[0]}: unknown generator option{extra} (known: {known})")
    if architecture == "dit" and options.get("augment"):
        raise ValueError("augment: the DiT denoiser has one class-embedding row per class; augment needs the UNet")
    augment = options.get("augment")
    if augment is not None and (
        isinstance(augment, bool) or not isinstance(augment, (int, float)) or not 0 <= augment < 1
    ):
        raise ValueError(f"augment: must be a probability in [0, 1), got {augment!r}")
    per_image = options.get("steps_per_image")
    if per_image is not None and (
        isinstance(per_image, bool) or not isinstance(per_image, (int, float)) or not 0 < per_image < 1e6
    ):
        raise ValueError(f"steps_per_image: must be a positive number, got {per_image!r}")
    if options.get("precision") is not None and options["precision"] not in PRECISIONS:
        raise ValueError(f"precision: choose one of {PRECISIONS}, got {options['precision']!r}")
    hp = {
        **PRESETS[name],
        **(DIT_DEFAULTS if architecture == "dit" else {}),
        **{
            k: v
            for k, v in options.items()
            if k not in ("preset", "architecture") and not (k in ("precision", *SMALL_DATA_KEYS) and v is None)
        },
    }
    if architecture == "dit":
        hp["architecture"] = "dit"
        for key in DIT_DEFAULTS:
            hp[key] = positive_int(hp, key)
    hp["block_out_channels"] = tuple(int(c) for c in hp["block_out_channels"])
    hp["sample_batch"] = positive_int(hp, "sample_batch")
    return hp


def positive_int(opts: dict, key: str) -> int:
    """``opts[key]`` when it is a positive integer (not a bool); else a ValueError naming the key."""
    value = opts[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}: must be a positive integer, got {value!r}")
    return value


def check_resolution(hp: dict, shape: tuple[int, int, int]) -> None:
    """A UNet with L levels halves the image L-1 times: the sides must divide; augmentation by the symmetries of
    the square needs square images."""
    if hp.get("augment") and shape[1] != shape[2]:
        raise ValueError(f"augment: the symmetries of the square need square images, got {shape[1]}x{shape[2]}")
    if hp.get("architecture") == "dit":
        patch = hp["patch_size"]
        if shape[1] != shape[2] or shape[1] % patch:
            raise ValueError(
                f"patch_size: the DiT needs square images whose side {patch} divides, the dataset's images are "
                f"{shape[1]}x{shape[2]}"
            )
        return
    factor = 2 ** (len(hp["block_out_channels"]) - 1)
    if shape[1] % factor or shape[2] % factor:
        raise ValueError(
            f"block_out_channels: {len(hp['block_out_channels'])} levels need image sides divisible by "
            f"{factor}, the dataset's images are {shape[1]}x{shape[2]}"
        )
