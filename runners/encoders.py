"""Image embeddings for retrieval: L2-normalised float32 rows, so inner product is cosine similarity."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from runners.options import ENCODERS
from runners.train import train_classifier


def embed(images, encoder: str, *, fit_on=None, torch_seed: int = 0, clip_dir=None) -> np.ndarray:
    """Embeddings of float images in [0, 1]: centred raw pixels, the features of a classifier trained on
    ``fit_on = (images, labels, n_classes)`` (the base subset), or a local CLIP folder's image embeddings.

    ``images`` is an array, a :class:`runners.data.FloatImages` view, or a list of them (embedded as one
    concatenation, batch by batch: a view of the whole dataset is never converted to float at once)."""
    parts = list(images) if isinstance(images, list) else [images]
    if encoder == "pixels":
        z = np.concatenate([_centred(b) for b in _batches(parts, 1024)]) if _total(parts) else np.zeros((0, 1))
    elif encoder == "classifier":
        z = _classifier_features(parts, fit_on, torch_seed)
    elif encoder == "clip":
        z = _clip_embed(clip_dir, parts)
    else:
        raise ValueError(f"encoder: unknown encoder {encoder!r}; choose from {ENCODERS}")
    z = np.ascontiguousarray(z, dtype=np.float32)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def _total(parts) -> int:
    return sum(len(p) for p in parts)


def _batches(parts, size: int):
    """Float batches of ``size`` rows over the concatenation of ``parts`` (crossing part boundaries, so the
    batches are those of the concatenated array)."""
    pending, have = [], 0
    for part in parts:
        for i in range(0, len(part), size):
            block = np.asarray(part[i : i + size], dtype=np.float32)
            while len(block):
                take = min(size - have, len(block))
                pending.append(block[:take])
                have += take
                block = block[take:]
                if have == size:
                    yield np.concatenate(pending)
                    pending, have = [], 0
    if have:
        yield np.concatenate(pending)


def _centred(batch: np.ndarray) -> np.ndarray:
    z = batch.reshape(len(batch), -1)
    return z - z.mean(1, keepdims=True)  # brightness-invariant: cosine on centred pixels


def _classifier_features(parts, fit_on, torch_seed: int) -> np.ndarray:
    x, y, n_classes = fit_on
    # only the features matter here, so the "test set" is a single base image (no test data is touched)
    out = train_classifier(x, y, x[:1], y[:1], n_classes, steps=300, width=16, seed=torch_seed, return_model=True)
    model, (mean, std) = out["model"].eval(), out["norm"]
    with torch.no_grad():
        return np.concatenate([model[:-1]((torch.as_tensor(b) - mean) / std).numpy() for b in _batches(parts, 1024)])


def _clip_embed(clip_dir, parts) -> np.ndarray:
    # imported here: the CLIP model classes take ~2.5 s to import, and only this encoder needs them
    from transformers import CLIPVisionModelWithProjection
    from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    model = CLIPVisionModelWithProjection.from_pretrained(clip_dir, local_files_only=True, use_safetensors=True).eval()
    size = model.config.image_size
    mean = torch.tensor(OPENAI_CLIP_MEAN)[:, None, None]  # the constants CLIPImageProcessor normalises with
    std = torch.tensor(OPENAI_CLIP_STD)[:, None, None]
    out = []
    with torch.no_grad():
        # resize as tensors in batches: CLIPImageProcessor goes through PIL one image at a time
        for b in _batches(parts, 256):
            x = torch.as_tensor(b, dtype=torch.float32)
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            out.append(model(pixel_values=(x - mean) / std).image_embeds.numpy())
    return np.concatenate(out)
