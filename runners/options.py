"""The names a config may use and how a source's options resolve — without torch, diffusers or faiss.

The config validator, the dry run and the pool cache keys all need this vocabulary; the modules that
*run* a recipe, a generator or an encoder import the heavy libraries, this one does not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SOURCES = ("real", "closed_set", "open_set", "retrieval")
RECIPES = ("small_cnn", "resnet18")  # classifier builders in runners.train
# the one home of the classifier's and the resources' defaults; every use site reads them through runners.config.SweepConfig's
# properties (recipe, width, batch_size, steps, cpus_per_trial), never with its own literal
CLASSIFIER_DEFAULTS = {"recipe": "small_cnn", "batch_size": 64, "steps": 300}
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
RETRIEVAL_DEFAULTS = {"encoder": "pixels", "dedup_threshold": 0.98, "clip_dir": None, "pool": None}
# a pool at scale: precomputed embeddings (.npy, N x d, by the same encoder as the queries) and a uint8 image
# store (.npy, N x C x H x W) searched with a cached faiss index; filled in only when `embeddings` is given, so
# configs without it keep their pool keys
EMBEDDED_POOL_DEFAULTS = {"embeddings": None, "images": None, "index": "flat", "nprobe": 32, "ef_search": 128}
INDEXES = ("flat", "ivf", "hnsw")
TEXT2IMAGE_DEFAULTS = {"prompt": "a photo of {}", "steps": 25, "guidance": 7.5, "batch": 16}  # batch: as sample_batch


def content_hash(spec: dict) -> str:
    """16 hex digits of SHA-256 over canonical JSON: the cache key of pools, generators and the judge."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_preset(options: dict) -> dict:
    """A preset name plus overrides -> the full hyper-parameter dict (what the cache key hashes)."""
    name = options.get("preset", "tiny")
    if name not in PRESETS:
        raise ValueError(f"preset: unknown generator preset {name!r}; choose from {tuple(PRESETS)}")
    unknown = sorted(set(options) - set(PRESET_KEYS) - {"preset", "precision"})
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown generator option (known: preset, precision, {', '.join(PRESET_KEYS)})")
    if options.get("precision") is not None and options["precision"] not in PRECISIONS:
        raise ValueError(f"precision: choose one of {PRECISIONS}, got {options['precision']!r}")
    hp = {
        **PRESETS[name],
        **{k: v for k, v in options.items() if k != "preset" and not (k == "precision" and v is None)},
    }
    hp["block_out_channels"] = tuple(int(c) for c in hp["block_out_channels"])
    hp["sample_batch"] = _positive_int(hp, "sample_batch")
    return hp


def _positive_int(opts: dict, key: str) -> int:
    value = opts[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}: must be a positive integer, got {value!r}")
    return value


def check_resolution(hp: dict, shape: tuple[int, int, int]) -> None:
    """A UNet with L levels halves the image L-1 times: the sides must divide."""
    factor = 2 ** (len(hp["block_out_channels"]) - 1)
    if shape[1] % factor or shape[2] % factor:
        raise ValueError(
            f"block_out_channels: {len(hp['block_out_channels'])} levels need image sides divisible by "
            f"{factor}, the dataset's images are {shape[1]}x{shape[2]}"
        )


def _text2image(raw: dict) -> dict:
    opts = {**TEXT2IMAGE_DEFAULTS, **raw}
    unknown = sorted(set(opts) - set(TEXT2IMAGE_DEFAULTS) - {"pipeline"})
    if unknown:
        raise ValueError(
            f"{unknown[0]}: unknown text-to-image option (known: pipeline, {', '.join(TEXT2IMAGE_DEFAULTS)})"
        )
    opts["batch"] = _positive_int(opts, "batch")
    opts["pipeline"] = str(Path(opts["pipeline"]).resolve())
    # the folder's model index enters the key: another checkpoint in the same folder is another pool
    index_file = Path(opts["pipeline"]) / "model_index.json"
    # absent only in a dry run of a config whose models are not in place yet (a sweep checks the folder first)
    index = json.loads(index_file.read_text()) if index_file.exists() else "absent"
    return {"text2image": opts, "pipeline_index": content_hash(index)}


def _retrieval(raw: dict) -> dict:
    opts = {**RETRIEVAL_DEFAULTS, **(EMBEDDED_POOL_DEFAULTS if raw.get("embeddings") else {}), **raw}
    known = {**RETRIEVAL_DEFAULTS, **EMBEDDED_POOL_DEFAULTS}
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown retrieval option (known: {', '.join(known)})")
    if opts["encoder"] not in ENCODERS:
        raise ValueError(f"encoder: unknown encoder {opts['encoder']!r}; choose from {ENCODERS}")
    if opts.get("embeddings"):
        if opts["pool"] is not None:
            raise ValueError("embeddings: give either a pool (a dataset) or embeddings + images, not both")
        if not opts.get("images"):
            raise ValueError("images: an embedded pool needs its image store (.npy, N x C x H x W uint8)")
        if opts["index"] not in INDEXES:
            raise ValueError(f"index: unknown index {opts['index']!r}; choose from {INDEXES}")
        opts["embeddings"], opts["images"] = (
            str(Path(opts["embeddings"]).resolve()),
            str(Path(opts["images"]).resolve()),
        )
    return opts


def options_for(source_options: dict, source: str) -> dict:
    """The validated options of one source (defaults filled in); these enter the pool's content hash.

    Raises ValueError whose message starts with the offending option (the config prefixes the source).
    """
    raw = dict((source_options or {}).get(source) or {})
    if source == "closed_set":
        return {"generator": resolve_preset(raw)}
    if source == "open_set":
        return _text2image(raw) if raw.get("pipeline") else {"generator": resolve_preset(raw)}
    if source == "retrieval":
        return _retrieval(raw)
    if raw:  # real: held-out images of the dataset itself, nothing to choose
        raise ValueError(f"{sorted(raw)[0]}: the real source takes no options")
    return {}


def check_pipeline_dir(path) -> None:
    """Fail before the sweep when a text-to-image folder is missing or malformed."""
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"no such folder: {p}")
    index = p / "model_index.json"
    if not index.exists():
        raise ValueError(f"{p} is not a diffusers pipeline folder (no model_index.json)")
    try:
        spec = json.loads(index.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{index} is not valid JSON ({exc})") from None
    for name, value in spec.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        if not (p / name).is_dir():
            raise ValueError(f"{p} lists component '{name}' in model_index.json but has no '{name}/' folder")
