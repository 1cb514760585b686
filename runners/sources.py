"""Sources: for each (source, n_real, seed), a pool of ``max(n_synth)`` labelled images; trials take prefixes.

| source      | pool                                                                                   |
|-------------|----------------------------------------------------------------------------------------|
| real        | held-out real images, disjoint from the base subset and the test set                    |
| closed_set  | samples of a class-conditional diffusion model trained only on the base subset          |
| open_set    | samples of a diffusion model trained once on all non-test images, or of a local         |
|             | text-to-image pipeline prompted with class names                                        |
| retrieval   | nearest neighbours (faiss, inner product on L2-normalised embeddings) of the base images |
|             | in the external pool, labelled by their query; near-duplicates of test images dropped   |

Every pool is cached by a content hash of what determines it (dataset, split, source options, n_real
when it matters, seed, size) under ``run_dir/pools``; generator weights under ``run_dir/generators`` as
safetensors. Preparing an existing pool is a file read. Each pool records its cost and its quality: the
accuracy of a *judge* classifier (trained on every non-test real image) on the pool's labels, the Fréchet
distance between pool and real test images in the judge's feature space, a linear real-vs-pool domain
classifier's balanced accuracy, and for retrieval the label-noise rate (the pool's true labels are known on
labelled datasets). Test images only ever serve as this yardstick; no model is selected on them.
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from scaling.cube import write_atomic

POOL_VERSION = 3  # bump when the recipe changes what a cached pool contains
ENCODERS = ("pixels", "classifier", "clip")
RETRIEVAL_DEFAULTS = {"encoder": "pixels", "dedup_threshold": 0.98, "clip_dir": None, "pool": None}
TEXT2IMAGE_DEFAULTS = {"prompt": "a photo of {}", "steps": 25, "guidance": 7.5}
JUDGE = {"recipe": "small_cnn", "width": 16, "steps": 300, "batch_size": 64, "lr": 0.004}
FEATURES_KEPT = 256  # judge features stored per pool for the domain-gap figure


def _hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _dataset_spec(cfg: dict) -> dict:
    return {"dataset": cfg["dataset"], "test_fraction": cfg["test_fraction"], "version": POOL_VERSION}


def options_for(cfg: dict, source: str) -> dict:
    """The validated options of one source (defaults filled in); these enter the content hash."""
    from runners.generative import resolve_preset

    raw = dict((cfg.get("source_options") or {}).get(source) or {})
    if source == "closed_set":
        return {"generator": resolve_preset(raw)}
    if source == "open_set":
        if raw.get("pipeline"):
            opts = {**TEXT2IMAGE_DEFAULTS, **raw}
            unknown = sorted(set(opts) - set(TEXT2IMAGE_DEFAULTS) - {"pipeline"})
            if unknown:
                raise ValueError(f"{unknown[0]}: unknown text-to-image option (known: pipeline, "
                                 f"{', '.join(TEXT2IMAGE_DEFAULTS)})")
            opts["pipeline"] = str(Path(opts["pipeline"]).resolve())
            return {"text2image": opts, "pipeline_index": _hash(json.loads(
                (Path(opts["pipeline"]) / "model_index.json").read_text()))}
        return {"generator": resolve_preset(raw)}
    if source == "retrieval":
        opts = {**RETRIEVAL_DEFAULTS, **raw}
        unknown = sorted(set(opts) - set(RETRIEVAL_DEFAULTS))
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown retrieval option (known: {', '.join(RETRIEVAL_DEFAULTS)})")
        if opts["encoder"] not in ENCODERS:
            raise ValueError(f"encoder: unknown encoder {opts['encoder']!r}; choose from {ENCODERS}")
        return opts
    return {}


def pool_spec(cfg: dict, source: str, n_real: int, seed: int) -> dict:
    """Everything that determines a pool's content. open_set pools do not depend on n_real."""
    spec = {**_dataset_spec(cfg), "source": source, "seed": int(seed), "size": int(max(cfg["n_synth"])),
            "options": options_for(cfg, source)}
    if source != "open_set":
        spec["n_real"] = int(n_real)
    return spec


def pool_key(cfg: dict, source: str, n_real: int, seed: int) -> str:
    return _hash(pool_spec(cfg, source, n_real, seed))


def pool_paths(cfg: dict, source: str, n_real: int, seed: int) -> tuple[Path, Path]:
    key = pool_key(cfg, source, n_real, seed)
    folder = Path(cfg["run_dir"]) / "pools"
    return folder / f"{source}-{key}.npz", folder / f"{source}-{key}.json"


def open_generator_key(cfg: dict) -> str:
    return _hash({**_dataset_spec(cfg), "role": "open_set", "options": options_for(cfg, "open_set")})


# --------------------------------------------------------------------------------------------------
# data, splits and the judge (cached per worker process)


@lru_cache(maxsize=4)
def _data(dataset_json: str, test_fraction: float):
    from runners.data import load_dataset, test_indices

    data = load_dataset(json.loads(dataset_json))
    return data, test_indices(data, test_fraction)


def dataset_of(cfg: dict):
    return _data(json.dumps(cfg["dataset"], sort_keys=True), float(cfg["test_fraction"]))


def non_test(data, test_idx) -> np.ndarray:
    return np.setdiff1d(np.arange(len(data.labels)), test_idx)


def judge_path(cfg: dict) -> Path:
    return Path(cfg["run_dir"]) / "judge" / f"judge-{_hash({**_dataset_spec(cfg), 'judge': JUDGE})}.safetensors"


def prepare_judge(cfg: dict) -> dict:
    """Train (once) the classifier on every non-test real image; it labels and embeds pools."""
    from safetensors.torch import save_file

    path = judge_path(cfg)
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        return json.loads(meta_path.read_text())
    from runners.train import train_classifier

    data, test_idx = dataset_of(cfg)
    train = non_test(data, test_idx)
    out = train_classifier(data.images[train], data.labels[train], data.images[test_idx], data.labels[test_idx],
                           len(data.classes), return_model=True, seed=12345,
                           **{k: v for k, v in JUDGE.items()})
    mean, std = out["norm"]
    state = {k: v.contiguous() for k, v in out["model"].state_dict().items()}
    state.update(norm_mean=mean.contiguous(), norm_std=std.contiguous())
    write_atomic(path, lambda p: save_file(state, str(p)))
    meta = {"test_accuracy": out["accuracy"], "train_seconds": out["train_seconds"], **JUDGE}
    write_atomic(meta_path, lambda p: p.write_text(json.dumps(meta)))
    return meta


@lru_cache(maxsize=2)
def _judge(path: str, in_ch: int, n_classes: int):
    from safetensors.torch import load_file

    from runners.train import build_model

    state = load_file(path)
    mean, std = state.pop("norm_mean"), state.pop("norm_std")
    model = build_model(JUDGE["recipe"], in_ch, n_classes, JUDGE["width"])
    model.load_state_dict(state)
    return model.eval(), mean, std


def judge_outputs(cfg: dict, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features, predicted labels) of the judge for float images in [0, 1]."""
    import torch

    data, _ = dataset_of(cfg)
    model, mean, std = _judge(str(judge_path(cfg)), data.images.shape[1], len(data.classes))
    feats, preds = [], []
    with torch.no_grad():
        for i in range(0, len(images), 1024):
            x = (torch.as_tensor(images[i:i + 1024], dtype=torch.float32) - mean) / std
            f = model[:-1](x)
            feats.append(f.numpy())
            preds.append(model[-1](f).argmax(1).numpy())
    if not feats:
        return np.zeros((0, 1), np.float32), np.zeros(0, np.int64)
    return np.concatenate(feats), np.concatenate(preds)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2): FID's formula in the judge's feature space."""
    from scipy import linalg

    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(sa @ sb)
    root = root.real if np.iscomplexobj(root) else root
    return float(mu @ mu + np.trace(sa + sb - 2 * root))


def domain_classifier(real: np.ndarray, pool: np.ndarray, seed: int) -> tuple[float, np.ndarray]:
    """Can a linear classifier tell the pool from real images in the judge's feature space?

    Returns the 3-fold cross-validated balanced accuracy (0.5: indistinguishable) and the unit weight
    vector of the fit on everything (the axis along which the domains separate; the domain-gap figure
    projects on it).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(real), len(pool))
    x = np.concatenate([real[rng.permutation(len(real))[:n]], pool[rng.permutation(len(pool))[:n]]])
    y = np.r_[np.zeros(n), np.ones(n)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    acc = float(cross_val_score(clf, x, y, cv=3, scoring="balanced_accuracy").mean()) if n >= 6 else float("nan")
    clf.fit(x, y)
    scaler, lr = clf[0], clf[1]
    w = lr.coef_[0] / scaler.scale_  # the direction in raw feature space
    return acc, (w / max(np.linalg.norm(w), 1e-12)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# the four sources


def base_and_real_pool(cfg: dict, n_real: int, seed: int, pool_size: int):
    from runners.data import split_for_seed

    data, test_idx = dataset_of(cfg)
    return split_for_seed(data, test_idx, seed, n_real, pool_size)


def _balanced_labels(n: int, n_classes: int, seed: int) -> np.ndarray:
    """Class-balanced labels whose every prefix is balanced too (round-robin over a shuffled class order)."""
    order = np.random.default_rng([seed, 7]).permutation(n_classes)
    return order[np.arange(n) % n_classes]


def _generator_folder(cfg: dict, key: str) -> Path:
    return Path(cfg["run_dir"]) / "generators" / key


def train_or_load_generator(cfg: dict, images, labels, hp: dict, key: str, seed: int, progress: bool, desc: str):
    from runners.generative import load_generator, save_generator, train_diffusion

    folder = _generator_folder(cfg, key)
    if (folder / "meta.json").exists():
        return load_generator(folder)
    data, _ = dataset_of(cfg)
    model, seconds = train_diffusion(images, labels, len(data.classes), hp, seed=seed, progress=progress, desc=desc)
    meta = {"train_seconds": seconds, "n_train": int(len(labels)), "hp": hp}
    save_generator(model, folder, meta)
    return model, meta


def prepare_open_generator(cfg: dict, progress: bool = False) -> dict:
    """open_set's offline default: one diffusion model on every non-test image, trained once per run."""
    data, test_idx = dataset_of(cfg)
    train = non_test(data, test_idx)
    hp = options_for(cfg, "open_set")["generator"]
    _, meta = train_or_load_generator(cfg, data.images[train], data.labels[train], hp, open_generator_key(cfg),
                                      seed=0, progress=progress, desc="open_set generator")
    return meta


def _closed_set_pool(cfg, n_real, seed, size, progress):
    from runners.generative import sample_diffusion

    data, _ = dataset_of(cfg)
    base, _ = base_and_real_pool(cfg, n_real, seed, 0)
    hp = options_for(cfg, "closed_set")["generator"]
    key = _hash({**_dataset_spec(cfg), "role": "closed_set", "n_real": int(n_real), "seed": int(seed), "hp": hp})
    model, meta = train_or_load_generator(cfg, data.images[base], data.labels[base], hp, key, seed=seed,
                                          progress=progress, desc=f"closed_set r{n_real} seed{seed}")
    labels = _balanced_labels(size, len(data.classes), seed)
    t0 = time.perf_counter()
    images = sample_diffusion(model, labels, len(data.classes), hp, seed=seed + 1, progress=progress)
    return {"images": images, "labels": labels}, {"generator_seconds": meta["train_seconds"], "generator_shared_by": 1,
                                                  "sample_seconds": time.perf_counter() - t0, "generator": key}


def _open_set_pool(cfg, seed, size, progress):
    data, _ = dataset_of(cfg)
    opts = options_for(cfg, "open_set")
    labels = _balanced_labels(size, len(data.classes), seed)
    if "text2image" in opts:
        from runners.generative import sample_text2image

        t0 = time.perf_counter()
        t = opts["text2image"]
        images = sample_text2image(t["pipeline"], data.classes, labels, data.shape, prompt=t["prompt"], seed=seed,
                                   steps=int(t["steps"]), guidance=float(t["guidance"]), progress=progress)
        return {"images": images, "labels": labels}, {"generator_seconds": 0.0, "generator_shared_by": 1,
                                                      "sample_seconds": time.perf_counter() - t0, "generator": t["pipeline"]}
    from runners.generative import load_generator, sample_diffusion

    key = open_generator_key(cfg)
    folder = _generator_folder(cfg, key)
    if not (folder / "meta.json").exists():
        prepare_open_generator(cfg, progress)
    model, meta = load_generator(folder)
    t0 = time.perf_counter()
    images = sample_diffusion(model, labels, len(data.classes), opts["generator"], seed=seed + 1, progress=progress)
    # one generator serves every seed's pool: its training cost is shared among them
    return {"images": images, "labels": labels}, {"generator_seconds": meta["train_seconds"],
                                                  "generator_shared_by": len(cfg["seeds"]),
                                                  "sample_seconds": time.perf_counter() - t0, "generator": key}


def embed(cfg: dict, images: np.ndarray, encoder: str, *, base=None, seed: int = 0, clip_dir=None) -> np.ndarray:
    """L2-normalised float32 embeddings: raw pixels, a base-trained classifier's features, or a local CLIP."""
    import torch

    if encoder == "pixels":
        z = images.reshape(len(images), -1).astype(np.float32)
        z = z - z.mean(1, keepdims=True)  # brightness-invariant: cosine on centred pixels
    elif encoder == "classifier":
        from runners.train import train_classifier

        data, test_idx = dataset_of(cfg)
        # only the features matter here, so the "test set" is a single base image (no test data is touched)
        out = train_classifier(data.images[base], data.labels[base], data.images[base[:1]], data.labels[base[:1]],
                               len(data.classes), steps=300, width=16, seed=seed, return_model=True)
        model, (mean, std) = out["model"].eval(), out["norm"]
        with torch.no_grad():
            z = np.concatenate([model[:-1]((torch.as_tensor(images[i:i + 1024]) - mean) / std).numpy()
                                for i in range(0, len(images), 1024)])
    elif encoder == "clip":
        z = _clip_embed(clip_dir, images)
    else:
        raise ValueError(f"encoder: unknown encoder {encoder!r}; choose from {ENCODERS}")
    z = np.ascontiguousarray(z, dtype=np.float32)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def _clip_embed(clip_dir, images: np.ndarray) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    from transformers import CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection.from_pretrained(clip_dir, local_files_only=True,
                                                          use_safetensors=True).eval()
    size = model.config.image_size
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 256):
            x = torch.as_tensor(images[i:i + 256], dtype=torch.float32)
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            out.append(model(pixel_values=(x - mean) / std).image_embeds.numpy())
    return np.concatenate(out)


def retrieve(query: np.ndarray, pool: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``pool`` and of their queries, taking rank-1 neighbours of every query, then rank 2, ...

    Inner product on L2-normalised embeddings (cosine) with faiss. An image found by several queries is
    kept once, for its first (best-ranked) query, so every prefix spreads over the queries in order.
    """
    import faiss

    index = faiss.IndexFlatIP(pool.shape[1])
    index.add(pool)
    k = min(len(pool), int(np.ceil(size / len(query))) * 2 + 4)
    while True:
        _, nn = index.search(query, k)
        taken = np.zeros(len(pool), bool)
        picks, owners = [], []
        for rank in range(k):  # rank-major: prefix n takes the best neighbours of all queries first
            for q in range(len(query)):
                j = nn[q, rank]
                if j >= 0 and not taken[j]:
                    taken[j] = True
                    picks.append(j)
                    owners.append(q)
                    if len(picks) == size:
                        return np.asarray(picks), np.asarray(owners)
        if k >= len(pool):
            raise ValueError(f"n_synth: retrieval found only {len(picks)} distinct images for a pool of {size}")
        k = min(len(pool), 2 * k)


@lru_cache(maxsize=2)
def _external_pool(spec_json: str, shape: tuple, class_names: tuple):
    """A user's external image collection, resized to the dataset's (C, H, W); its labels are mapped to the
    dataset's classes by name where they match (for the label-noise rate) and -1 elsewhere."""
    import torch
    import torch.nn.functional as F

    from runners.data import load_dataset

    ext = load_dataset(json.loads(spec_json))
    x = torch.as_tensor(ext.images)
    if x.shape[1] != shape[0]:
        x = (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True) if shape[0] == 1 \
            else x.expand(-1, 3, -1, -1)
    if tuple(x.shape[2:]) != tuple(shape[1:]):
        x = F.interpolate(x, size=shape[1:], mode="bilinear", antialias=True, align_corners=False)
    index = {name: i for i, name in enumerate(class_names)}
    truth = np.array([index.get(ext.classes[c], -1) for c in ext.labels], dtype=np.int64)
    return x.clamp(0, 1).numpy().astype(np.float32), truth


def _retrieval_candidates(cfg, opts, base):
    """(images, true labels or -1, dataset indices or None) of the pool retrieval searches."""
    data, test_idx = dataset_of(cfg)
    if opts["pool"] is None:  # the dataset's own non-test, non-base images: unlabelled to the method
        idx = np.setdiff1d(non_test(data, test_idx), base)
        return data.images[idx], data.labels[idx], idx
    images, truth = _external_pool(json.dumps(opts["pool"], sort_keys=True), data.shape, tuple(data.classes))
    return images, truth, None


def _retrieval_pool(cfg, n_real, seed, size):
    data, test_idx = dataset_of(cfg)
    opts = options_for(cfg, "retrieval")
    t0 = time.perf_counter()
    base, _ = base_and_real_pool(cfg, n_real, seed, 0)
    ext_images, ext_truth, ext_idx = _retrieval_candidates(cfg, opts, base)
    z = embed(cfg, np.concatenate([data.images[base], ext_images, data.images[test_idx]]), opts["encoder"],
              base=base, seed=seed, clip_dir=opts["clip_dir"])
    zb, ze, zt = z[:len(base)], z[len(base):len(base) + len(ext_images)], z[len(base) + len(ext_images):]
    import faiss

    test_index = faiss.IndexFlatIP(zt.shape[1])
    test_index.add(zt)
    nearest_test, _ = test_index.search(ze, 1)
    # near-duplicates of test images would leak the test set; a threshold of 1 turns the check off
    clean = nearest_test[:, 0] < opts["dedup_threshold"] if opts["dedup_threshold"] < 1 else np.ones(len(ze), bool)
    if clean.sum() < size:
        raise ValueError(f"n_synth: only {int(clean.sum())} external images remain after dropping near-duplicates "
                         f"of test images; max(n_synth) is {size}")
    found, owners = retrieve(zb, np.ascontiguousarray(ze[clean]), size)
    picks = np.flatnonzero(clean)[found]  # back to positions in the candidate pool
    labels = data.labels[base][owners]  # labelled by the query: this is where retrieval's label noise comes from
    truth = ext_truth[picks]
    known = truth >= 0
    wrong = np.where(known, labels != truth, False)
    arrays = {"labels": labels, "label_wrong": wrong}
    if ext_idx is not None:
        arrays["indices"] = ext_idx[picks]  # dataset images by index: no re-quantisation
    else:
        arrays["images"] = (ext_images[picks] * 255).round().astype(np.uint8)
    return (arrays, {"generator_seconds": 0.0, "generator_shared_by": 1, "sample_seconds": time.perf_counter() - t0,
                     "label_noise": float(wrong[known].mean()) if known.any() else float("nan"),
                     "label_known_fraction": float(known.mean()), "dropped_near_duplicates": int((~clean).sum()),
                     "encoder": opts["encoder"]})


def _real_pool(cfg, n_real, seed, size):
    _, pool = base_and_real_pool(cfg, n_real, seed, size)
    data, _ = dataset_of(cfg)
    return {"indices": pool, "labels": data.labels[pool]}, {"generator_seconds": 0.0, "generator_shared_by": 1,
                                                            "sample_seconds": 0.0}


def prepare_pool(cfg: dict, source: str, n_real: int, seed: int, *, progress: bool = False) -> dict:
    """Build (or find) the pool of one (source, n_real, seed); returns its meta record."""
    npz, meta_path = pool_paths(cfg, source, n_real, seed)
    if npz.exists() and meta_path.exists():
        return json.loads(meta_path.read_text())
    size = int(max(cfg["n_synth"]))
    if source == "real":
        arrays, meta = _real_pool(cfg, n_real, seed, size)
    elif source == "closed_set":
        arrays, meta = _closed_set_pool(cfg, n_real, seed, size, progress)
    elif source == "open_set":
        arrays, meta = _open_set_pool(cfg, seed, size, progress)
    elif source == "retrieval":
        arrays, meta = _retrieval_pool(cfg, n_real, seed, size)
    else:
        raise ValueError(f"sources: unknown source {source!r}")
    images = pool_images(cfg, arrays)
    prepare_judge(cfg)
    feats, preds = judge_outputs(cfg, images)
    data, test_idx = dataset_of(cfg)
    # the real side of FD and of the domain classifier is the test images: disjoint from every pool (real and
    # retrieval pools are drawn from the non-test images, which would otherwise sit on both sides)
    real_feats, _ = judge_outputs(cfg, data.images[test_idx])
    domain_acc, direction = domain_classifier(real_feats, feats, seed)
    meta.update(source=source, n_real=int(n_real), seed=int(seed), size=size, key=pool_key(cfg, source, n_real, seed),
                label_accuracy=float((preds == arrays["labels"]).mean()),
                frechet_distance=frechet_distance(feats, real_feats), domain_accuracy=domain_acc)
    arrays["features"] = feats[:FEATURES_KEPT].astype(np.float32)
    arrays["domain_direction"] = direction
    write_atomic(npz, lambda p: np.savez(p, **arrays))
    write_atomic(meta_path, lambda p: p.write_text(json.dumps(meta)))
    return meta


def pool_images(cfg: dict, arrays) -> np.ndarray:
    """Float images in [0, 1]: stored uint8 samples, or dataset images by index (no re-quantisation)."""
    if "indices" in arrays:
        data, _ = dataset_of(cfg)
        return data.images[np.asarray(arrays["indices"])]
    return np.asarray(arrays["images"], dtype=np.float32) / 255.0


def load_pool(cfg: dict, source: str, n_real: int, seed: int, n: int):
    """The first ``n`` images and labels of a prepared pool (nested prefixes), and its meta record."""
    npz, meta_path = pool_paths(cfg, source, n_real, seed)
    if not (npz.exists() and meta_path.exists()):
        if source != "real":
            raise FileNotFoundError(f"pool for {source} n_real={n_real} seed={seed} is not prepared ({npz}); "
                                    "sources are prepared before the trials")
        prepare_pool(cfg, source, n_real, seed)
    with np.load(npz) as f:
        arrays = {k: f[k][:n] for k in f.files if k not in ("features", "domain_direction")}
    return pool_images(cfg, arrays), arrays["labels"], json.loads(meta_path.read_text())


def attributed_seconds(meta: dict, n_synth: int) -> float:
    """A cell's share of its pool's cost: the generator (split among the pools it serves) plus the
    sampling/retrieval time of the ``n_synth`` images it uses."""
    return meta["generator_seconds"] / meta["generator_shared_by"] + meta["sample_seconds"] * n_synth / meta["size"]
