"""Classifier training in the airbench spirit: data resident on the device as one tensor, batches by
index tensors (no per-sample Python work), channels_last + bf16 autocast on GPU, deterministic on CPU.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from runners.data import FloatImages
from runners.options import CLASSIFIER_DEFAULTS, DEFAULT_WIDTH, PRECISIONS, RECIPES


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU())


def small_cnn(in_ch: int, n_classes: int, width: int = 32) -> nn.Module:
    """Three conv blocks with pooling; sized for 8-32 px images."""
    return nn.Sequential(
        conv_bn(in_ch, width),
        conv_bn(width, 2 * width),
        nn.MaxPool2d(2),
        conv_bn(2 * width, 4 * width),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, n_classes),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.skip(x))


def resnet18(in_ch: int, n_classes: int, width: int = 64) -> nn.Module:
    """ResNet-18 (CIFAR stem), randomly initialised: no pretrained weights, no torchvision needed."""
    layers, cin = [nn.Conv2d(in_ch, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()], width
    for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
        layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, n_classes)]
    return nn.Sequential(*layers)


def build_model(recipe: str, in_ch: int, n_classes: int, width: int | None = None) -> nn.Module:
    if recipe == "small_cnn":
        return small_cnn(in_ch, n_classes, width or DEFAULT_WIDTH["small_cnn"])
    if recipe == "resnet18":
        return resnet18(in_ch, n_classes, width or DEFAULT_WIDTH["resnet18"])
    raise ValueError(f"classifier.recipe: unknown recipe {recipe!r}; choose from {RECIPES}")


def batch_indices(
    n: int, bs: int, gen: torch.Generator, synth_from: int | None = None, synth_weight: float | None = None
) -> torch.Tensor:
    """Row indices of one batch: uniform over all ``n`` rows, or — with ``synth_from`` — each item synthetic
    (rows ``synth_from..n-1``) with probability ``synth_weight``, then uniform within its part."""
    device = gen.device
    if synth_from is None:
        return torch.randint(0, n, (bs,), device=device, generator=gen)
    pick_synth = torch.rand(bs, device=device, generator=gen) < synth_weight
    real_idx = torch.randint(0, synth_from, (bs,), device=device, generator=gen)
    syn_idx = torch.randint(synth_from, n, (bs,), device=device, generator=gen)
    return torch.where(pick_synth, syn_idx, real_idx)


def train_classifier(
    x_train,
    y_train,
    x_test,
    y_test,
    n_classes: int,
    *,
    recipe: str = CLASSIFIER_DEFAULTS["recipe"],
    steps: int = CLASSIFIER_DEFAULTS["steps"],
    batch_size: int = CLASSIFIER_DEFAULTS["batch_size"],
    lr: float = CLASSIFIER_DEFAULTS["lr"],
    weight_decay: float = CLASSIFIER_DEFAULTS["weight_decay"],
    label_smoothing: float = CLASSIFIER_DEFAULTS["label_smoothing"],
    width: int | None = None,
    seed: int = 0,
    device: str | None = None,
    flip: bool = False,
    synth_from: int | None = None,
    synth_weight: float | None = None,
    precision: str | None = None,
    return_model: bool = False,
) -> dict:
    """Train from scratch and evaluate; returns accuracy, loss, per-class accuracy, seconds.

    ``precision``: ``fp32`` or ``bf16`` (autocast of the forward pass; weights, optimiser and the evaluation stay
    float32); None is :func:`default_precision` of the device.

    ``synth_weight``: the probability that a batch item is drawn from the synthetic part (the rows from
    ``synth_from`` on) rather than the real part; None pools every row uniformly. A sampling probability,
    not a loss weight: the loss scale and the optimiser's step size stay those of the unweighted recipe,
    so only the mix changes (a loss weight w would also rescale the effective learning rate).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.startswith("cuda")
    autocast = autocast_for(device, precision)
    torch.manual_seed(seed)
    if not gpu:
        torch.use_deterministic_algorithms(True, warn_only=True)
    rows, mean, std = resident_rows(x_train, device)
    ytr = torch.as_tensor(y_train, dtype=torch.int64, device=device)
    model = build_model(recipe, mean.shape[1], n_classes, width).to(device)
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    gen = torch.Generator(device=device).manual_seed(seed)
    n = len(ytr)
    bs = min(batch_size, n)
    t0 = time.perf_counter()
    model.train()
    mixed = synth_weight is not None and synth_from is not None and 0 < synth_from < n
    for step in range(steps):
        idx = batch_indices(n, bs, gen, synth_from if mixed else None, synth_weight)
        xb = (rows(idx) - mean) / std
        if flip:
            mask = torch.rand(bs, device=device, generator=gen) < 0.5
            xb = torch.where(mask[:, None, None, None], xb.flip(3), xb)
        with autocast():
            loss = F.cross_entropy(model(xb).float(), ytr[idx], label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    if gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = evaluate(model, x_test, y_test, n_classes, mean, std, device)
    out["train_seconds"] = seconds
    out["images_per_second"] = steps * bs / max(seconds, 1e-9)
    if return_model:
        out["model"], out["norm"] = model, (mean, std)
    return out


def default_precision(device: str) -> str:
    """bf16 on CUDA (tensor cores, half the activation memory), fp32 on CPU (where bf16 autocast is emulated on
    most CPUs: bench/RESULTS.md has the digits timing)."""
    return "bf16" if str(device).startswith("cuda") else "fp32"


def autocast_for(device: str, precision: str | None):
    """A context factory: ``torch.autocast`` to bfloat16 on ``device`` when the precision is bf16, else a no-op."""
    precision = precision or default_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision: choose one of {PRECISIONS}, got {precision!r}")
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    return lambda: torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


def resident_rows(x, device: str):
    """The training images on the device, and a function from row indices to float32 rows in [0, 1], with
    the per-channel mean and std that normalise them.

    A float array is held as float32 (the subsets a trial trains on). A :class:`runners.data.FloatImages`
    view (e.g. every non-test image, for the judge) is held as uint8 — a quarter of the memory — and its
    rows become floats one batch at a time; its statistics come from exact integer sums (float32 sums of
    50k x 1024 pixels drift; these are the correctly rounded values, and the same as torch's where torch's
    own sums are exact, as for digits).
    """
    if isinstance(x, FloatImages):
        pixels = torch.as_tensor(np.array(x.pixels[x.rows] if x.rows is not None else x.pixels), device=device)
        mean, std = exact_channel_stats(pixels, x.levels)
        return (lambda idx: pixels[idx].float() / x.levels), mean.to(device), std.to(device)
    xtr = torch.as_tensor(x, dtype=torch.float32, device=device)
    return (lambda idx: xtr[idx]), xtr.mean((0, 2, 3), keepdim=True), xtr.std((0, 2, 3), keepdim=True) + 1e-6


def exact_channel_stats(pixels: torch.Tensor, levels: int, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (n-1) std of ``pixels / levels`` from integer sums, in chunks (no float copy)."""
    s = torch.zeros(pixels.shape[1], dtype=torch.int64)
    q = torch.zeros(pixels.shape[1], dtype=torch.int64)
    for i in range(0, len(pixels), chunk):
        block = pixels[i : i + chunk].to("cpu", torch.int64)
        s += block.sum((0, 2, 3))
        q += (block * block).sum((0, 2, 3))
    n = pixels.numel() // pixels.shape[1]
    mean = [si / (n * levels) for si in s.tolist()]  # python floats: exact rationals rounded once to float64
    var = [(qi - si * si / n) / (n - 1) / levels**2 for si, qi in zip(s.tolist(), q.tolist())]
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(var, dtype=torch.float64).sqrt().float().view(1, -1, 1, 1) + 1e-6
    return mean_t, std_t


@torch.no_grad()
def evaluate(model, x_test, y_test, n_classes, mean, std, device, batch: int = 1024) -> dict:
    model.eval()
    yte = torch.as_tensor(y_test, dtype=torch.int64, device=device)
    # one batch of test images becomes float at a time (x_test may be a uint8-backed view of the dataset)
    logits = torch.cat(
        [
            model((torch.as_tensor(x_test[i : i + batch], dtype=torch.float32, device=device) - mean) / std).float()
            for i in range(0, len(yte), batch)
        ]
    )
    loss = F.cross_entropy(logits, yte).item()
    pred = logits.argmax(1)
    correct = (pred == yte).float()
    per_class = torch.zeros(n_classes, device=device).index_add_(0, yte, correct)
    counts = torch.bincount(yte, minlength=n_classes).clamp(min=1).float()
    # which test images were right: lets the analysis resample test images jointly with seeds
    return {
        "accuracy": correct.mean().item(),
        "loss": loss,
        "per_class_accuracy": (per_class / counts).cpu().numpy(),
        "correct": correct.bool().cpu().numpy(),
    }
