"""Image embeddings for retrieval: L2-normalised float32 rows, so inner product is cosine similarity."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPVisionModelWithProjection
from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from runners.options import ENCODERS
from runners.train import train_classifier


def embed(images: np.ndarray, encoder: str, *, fit_on=None, torch_seed: int = 0, clip_dir=None) -> np.ndarray:
    """Embeddings of float images in [0, 1]: centred raw pixels, the features of a classifier trained on
    ``fit_on = (images, labels, n_classes)`` (the base subset), or a local CLIP folder's image embeddings."""
    if encoder == "pixels":
        z = images.reshape(len(images), -1).astype(np.float32)
        z = z - z.mean(1, keepdims=True)  # brightness-invariant: cosine on centred pixels
    elif encoder == "classifier":
        z = _classifier_features(images, fit_on, torch_seed)
    elif encoder == "clip":
        z = _clip_embed(clip_dir, images)
    else:
        raise ValueError(f"encoder: unknown encoder {encoder!r}; choose from {ENCODERS}")
    z = np.ascontiguousarray(z, dtype=np.float32)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def _classifier_features(images: np.ndarray, fit_on, torch_seed: int) -> np.ndarray:
    x, y, n_classes = fit_on
    # only the features matter here, so the "test set" is a single base image (no test data is touched)
    out = train_classifier(x, y, x[:1], y[:1], n_classes, steps=300, width=16, seed=torch_seed, return_model=True)
    model, (mean, std) = out["model"].eval(), out["norm"]
    with torch.no_grad():
        return np.concatenate([model[:-1]((torch.as_tensor(images[i:i + 1024]) - mean) / std).numpy()
                               for i in range(0, len(images), 1024)])


def _clip_embed(clip_dir, images: np.ndarray) -> np.ndarray:
    model = CLIPVisionModelWithProjection.from_pretrained(clip_dir, local_files_only=True,
                                                          use_safetensors=True).eval()
    size = model.config.image_size
    mean = torch.tensor(OPENAI_CLIP_MEAN)[:, None, None]  # the constants CLIPImageProcessor normalises with
    std = torch.tensor(OPENAI_CLIP_STD)[:, None, None]
    out = []
    with torch.no_grad():
        # resize as tensors in batches: CLIPImageProcessor goes through PIL one image at a time
        for i in range(0, len(images), 256):
            x = torch.as_tensor(images[i:i + 256], dtype=torch.float32)
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            out.append(model(pixel_values=(x - mean) / std).image_embeds.numpy())
    return np.concatenate(out)
