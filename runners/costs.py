"""What a sweep costs, before it runs: device-hours per stage, jobs, images, disk, and wall time on N devices.

Every number comes from a throughput table. Each entry carries its basis: ``measured on <device>`` (by
``scaling calibrate`` or a benchmark in bench/RESULTS.md) or ``assumed (<where the number comes from>)``. The
package ships :data:`THROUGHPUTS`; ``scaling calibrate`` measures the entries of a config on the machine at
hand and writes them to a user-level copy (``$SCALING_CACHE/throughputs.json``) that takes precedence.

Keys name what was timed, so a measured entry is used only for the same work:
``classifier/<recipe>/w<width>/<C>x<H>x<W>`` (training images/s at the config's batch size),
``generator_train/<levels>/<C>x<H>x<W>`` (steps/s at the preset's batch size), ``generator_sample/...``
(images/s with guidance), ``text2image`` (images/s), ``textual_inversion`` (steps/s), ``encode/<encoder>`` (images/s), ``search/flat``
(queries/s against one million 512-d vectors; scales with the pool). Where the exact key is missing, the
nearest entry of the same kind and device is scaled by work per image (pixels x width^2 for classifiers,
pixels x channels^2 for generators), and the table says so ("scaled from ...").
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

# The shipped table. CPU entries were measured on a 2-core x86_64 machine (bench/RESULTS.md). GPU entries are
# *assumed*, each from a stated estimate, until `scaling calibrate` on a GPU node replaces them with measurements.
THROUGHPUTS = {
    "cpu": {  # one thread per slot, as a sweep with cpus_per_trial 1 runs them
        "classifier/small_cnn/w16/1x8x8": (
            6550.0,
            "measured on 2-core x86_64 CPU, 1 thread (scaling calibrate 2026-11-29)",
        ),
        "generator_train/2/1x8x8": (
            26.0,
            "measured on 2-core x86_64 CPU, 1 thread (scaling calibrate 2026-11-29; batch 32)",
        ),
        "generator_sample/2/1x8x8": (
            104.0,
            "measured on 2-core x86_64 CPU, 1 thread (scaling calibrate 2026-11-29; 20 steps, guidance)",
        ),
        "generator_train/dit4-d64/1x8x8": (
            28.2,
            "measured on 2-core x86_64 CPU, 1 thread, another job running (scaling calibrate 2026-12-03; batch 32)",
        ),
        "generator_sample/dit4-d64/1x8x8": (
            69.7,
            "measured on 2-core x86_64 CPU, 1 thread, another job running (scaling calibrate 2026-12-03; 20 steps, "
            "guidance)",
        ),
        "encode/pixels": (4.5e6, "measured on 2-core x86_64 CPU, 1 thread (scaling calibrate 2026-11-29)"),
        "encode/clip": (25.0, "assumed (ViT-B/32 ~4.4 GFLOP/image at ~100 GFLOP/s on 2 cores)"),
        "encode/classifier": (
            1500.0,
            "assumed (the judge CNN's forward pass, ~3x its training rate: 487 img/s measured at 1x28x28, 1 thread)",
        ),
        "search/flat": (
            173.0,
            "measured on 2-core x86_64 CPU, 1 thread (scaling calibrate 2026-11-29; 100k x 512 "
            "flat index, scaled to 1M)",
        ),
        "text2image": (0.02, "assumed (Stable Diffusion 1.5, 512 px, 25 steps with guidance: ~50 s/image on CPU)"),
        "textual_inversion": (
            0.05,
            "assumed (Stable Diffusion 1.5, 512 px, batch 4: a VAE encode and a UNet forward and backward, ~20 s/step)",
        ),
    },
    "gpu": {
        "classifier/resnet18/w64/3x32x32": (
            15000.0,
            "assumed (ResNet-18, ~0.56 GFLOP/image forward, 3x for a training "
            "step, at ~10% of an A100's 312 TFLOP/s bf16 peak)",
        ),
        "classifier/small_cnn/w64/3x28x28": (
            60000.0,
            "assumed (~0.12 GFLOP/image per step at ~2.5% of an A100's bf16 peak: small nets are launch bound)",
        ),
        "generator_train/4/3x32x32": (
            10.0,
            "assumed (Ho et al. 2020: 21 steps/s at batch 128 for a 35.7M UNet on a TPU v3-8; halved for one GPU)",
        ),
        "generator_train/3/3x28x28": (25.0, "assumed (the 3-level medmnist UNet has ~1/3 of the cifar preset's FLOPs)"),
        "generator_sample/4/3x32x32": (
            75.0,
            "assumed (25 DPM-Solver steps x 2 for guidance = 50 UNet passes/image at ~3x the training step's images/s)",
        ),
        "generator_sample/3/3x28x28": (200.0, "assumed (as the cifar preset, ~1/3 of its FLOPs)"),
        "generator_train/dit28-d1152/3x64x64": (
            1.4,
            "assumed (DiT-XL on 256 tokens: ~119 GFLOP/image forward as DiT-XL/2 at 256 px, 3x for a step, batch "
            "256 at ~40% of an A100's 312 TFLOP/s bf16 peak)",
        ),
        "generator_sample/dit28-d1152/3x64x64": (
            20.0,
            "assumed (25 DPM-Solver steps x 2 for guidance x ~119 GFLOP at ~40% of an A100's bf16 peak)",
        ),
        "encode/clip": (3000.0, "assumed (ViT-B/32 ~4.4 GFLOP/image at ~15% of an A100's bf16 peak)"),
        "encode/pixels": (200000.0, "assumed (memory bound)"),
        "encode/classifier": (50000.0, "assumed (the judge CNN's forward pass in batches of 1024, bf16)"),
        "text2image": (
            2.0,
            "assumed (Stable Diffusion 1.5, 512 px, 25 steps with guidance, fp16 batch 16 on an A100: "
            "~20 UNet it/s at batch 1 is the commonly reported figure)",
        ),
        "textual_inversion": (
            4.0,
            "assumed (Stable Diffusion 1.5, 512 px, batch 4 on an A100: the diffusers example's 3000 steps in ~12 min)",
        ),
    },
}
FLOAT_BYTES = 4


def user_table_path() -> Path:
    return Path(os.environ.get("SCALING_CACHE") or Path.home() / ".cache" / "scaling").expanduser() / "throughputs.json"


def load_table() -> dict:
    """The shipped table with the user's measured entries on top: {device: {key: (value, basis)}}."""
    table = {d: dict(entries) for d, entries in THROUGHPUTS.items()}
    path = user_table_path()
    if path.exists():
        for device, entries in json.loads(path.read_text()).items():
            table.setdefault(device, {}).update({k: tuple(v) for k, v in entries.items()})
    return table


def save_measured(device: str, entries: dict) -> Path:
    """Merge measured entries into the user-level table (atomically)."""
    path = user_table_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.exists() else {}
    current.setdefault(device, {}).update({k: list(v) for k, v in entries.items()})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def shape_key(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def _has_shape(key: str) -> bool:
    return bool(re.fullmatch(r"\d+x\d+x\d+", key.split("/")[-1]))


def _work(key: str) -> float:
    """Relative work per image of a key, for scaling a throughput to a neighbouring key."""
    parts = key.split("/")
    c, h, w = (int(v) for v in parts[-1].split("x"))
    if parts[0] == "classifier":
        return h * w * c**0.5 * int(parts[2][1:]) ** 2  # conv FLOPs ~ pixels x width^2 (input channels: first layer)
    dit = re.fullmatch(r"dit(\d+)-d(\d+)", parts[1])
    if dit:  # a DiT: FLOPs ~ layers x width^2 per patch token; a 2-level UNet of 16-32 channels counts as 16
        return h * w * c**0.5 * 16 * int(dit[1]) * (int(dit[2]) / 64) ** 2 / 4
    return h * w * c**0.5 * 4 ** int(parts[1])  # a UNet level doubles channels: FLOPs ~ 4^levels per pixel


def lookup(table: dict, device: str, key: str) -> tuple[float, str]:
    """(throughput, basis) of ``key`` on ``device``; the nearest entry of the same kind, scaled, if missing."""
    entries = table.get(device, {})
    if key in entries:
        return entries[key]
    kind = key.split("/")[0] + "/" + (key.split("/")[1] + "/" if key.startswith("classifier") else "")
    same = [k for k in entries if k.startswith(kind)] or [k for k in entries if k.split("/")[0] == key.split("/")[0]]
    # a key without an image shape (an encoder, a search) cannot be scaled from another
    same = [k for k in same if _has_shape(k)] if _has_shape(key) else []
    if not same:
        raise KeyError(f"no throughput for {key} on {device}: run `scaling calibrate CONFIG` on such a machine")
    near = min(same, key=lambda k: abs(math.log(_work(k) / _work(key))))
    value, basis = entries[near]
    return value * _work(near) / _work(key), f"scaled from {near} ({basis})"


@dataclass
class Stage:
    name: str
    jobs: int
    images: int  # images trained on (classifier, generator: steps x batch), generated, or embedded
    device_hours: float
    disk_bytes: int
    basis: str
    job_hours: float = 0.0  # the longest single job (a generator training cannot be split across devices)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def _fmt_hours(h: float) -> str:
    return f"{h * 3600:.0f} s" if h < 1 / 60 else f"{h * 60:.1f} min" if h < 1 else f"{h:.1f} h"


def wall_hours(stages: list[Stage], devices: float, per_job: float) -> float:
    """Stages run one after another (generators, sampling/retrieval, then trials); within a stage jobs share
    ``devices`` (``per_job`` devices each). Packed trials are assumed to share one device's throughput (no
    packing gain: the conservative choice until measured)."""
    total = 0.0
    for s in stages:
        if s.jobs == 0:
            continue
        if s.job_hours > 0:  # indivisible jobs (generator trainings): whole rounds of per_job devices each
            slots = max(1, int(devices / per_job)) if per_job > 0 else max(1, int(devices))
            total += math.ceil(s.jobs / slots) * s.job_hours
        else:
            total += s.device_hours / max(devices, 1e-9)
    return total


def cost_table_lines(stages: list[Stage], device: str, devices: float, per_job: float) -> list[str]:
    unit = "GPU-h" if device == "gpu" else "CPU-h"
    w = max([20] + [len(s.name) for s in stages])  # named sources make longer stage names
    rows = [f"  {'stage':<{w}} {'jobs':>6} {'images':>12} {unit:>9} {'disk':>9}  basis"]
    for s in stages:
        rows.append(
            f"  {s.name:<{w}} {s.jobs:>6} {s.images:>12,} {s.device_hours:>9.2f} {fmt_bytes(s.disk_bytes):>9}  {s.basis}"
        )
    total = sum(s.device_hours for s in stages)
    disk = sum(s.disk_bytes for s in stages)
    rows.append(f"  {'total':<{w}} {'':>6} {'':>12} {total:>9.2f} {fmt_bytes(disk):>9}")
    what = f"{devices:g} GPU(s)" if device == "gpu" else f"{devices:g} CPU slot(s)"
    rows.append(f"  wall time on {what}: ~{_fmt_hours(wall_hours(stages, devices, per_job))}")
    return rows
