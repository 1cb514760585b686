"""GPU acceptance: one command on a GPU node, one table, a non-zero exit on any failure (bench/gpu_acceptance.sh).

Rows: ``scaling calibrate`` on the cifar10 shapes; classifier images/s through the recipe against a plain torch loop
of the same network (target ratio >= 0.9); four packed trials against one (throughput ratio); generator training
steps/s and sampling images/s in fp32 and bf16; and ``configs/cifar10.yaml`` shrunk with ``--set`` (tiny local
assets, as tests/test_paper_rehearsal.py places them) end to end with every source, trials packed 4 to a GPU and
source jobs on a whole one. Without CUDA every row that can runs on the CPU at smaller sizes (calibrate is skipped:
it writes the machine's throughput table).

    python bench/gpu_acceptance.py [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.* for the tiny paper assets


def _sizes(gpu: bool, quick: bool) -> dict:
    if gpu and not quick:
        return {
            "recipe": "resnet18",
            "width": 64,
            "batch": 256,
            "steps": 60,
            "shape": (3, 32, 32),
            "preset": "cifar",
            "gen_steps": 20,
            "gen_batch": 64,
            "sample_n": 64,
        }
    return {
        "recipe": "small_cnn",
        "width": 16,
        "batch": 64,
        "steps": 40,
        "shape": (3, 32, 32),
        "preset": "tiny",
        "gen_steps": 5,
        "gen_batch": 8,
        "sample_n": 8,
    }


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def row_calibrate(sz) -> tuple[str, bool]:
    if _device() != "cuda":
        return "skipped: no CUDA (it would write this CPU's throughput table)", True
    from runners.calibrate import calibrate
    from runners.checks import files_checked_later
    from runners.config import load_config

    with files_checked_later():
        cfg = load_config(str(ROOT / "configs/cifar10.yaml"))
    t0 = time.perf_counter()
    entries = calibrate(cfg, out=lambda *a: None)
    return f"{len(entries)} entries measured in {time.perf_counter() - t0:.0f} s", bool(entries)


def _plain_rate(sz, precision: str) -> float:
    """Images/s of a plain torch loop: the same network, AdamW, batch, autocast; data resident."""
    from runners.train import autocast_for, build_model

    device = _device()
    x = torch.rand((4 * sz["batch"], *sz["shape"]), device=device)
    y = torch.randint(0, 10, (4 * sz["batch"],), device=device)
    model = build_model(sz["recipe"], sz["shape"][0], 10, sz["width"]).to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    autocast = autocast_for(device, precision)
    for step in range(sz["steps"] + 5):
        if step == 5:  # warm-up excluded
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        idx = torch.randint(0, len(y), (sz["batch"],), device=device)
        with autocast():
            loss = F.cross_entropy(model(x[idx]).float(), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return sz["steps"] * sz["batch"] / (time.perf_counter() - t0)


def _recipe_rate(sz, precision: str | None = None) -> float:
    from runners.train import train_classifier

    rng = np.random.default_rng(0)
    x = rng.random((4 * sz["batch"], *sz["shape"]), dtype=np.float32)
    y = rng.integers(0, 10, 4 * sz["batch"])
    train_classifier(
        x,
        y,
        x[:8],
        y[:8],
        10,
        recipe=sz["recipe"],
        width=sz["width"],
        steps=10,
        batch_size=sz["batch"],
        precision=precision,
    )  # warm-up (the one-cycle schedule needs 10 steps)
    return train_classifier(
        x,
        y,
        x[:8],
        y[:8],
        10,
        recipe=sz["recipe"],
        width=sz["width"],
        steps=sz["steps"],
        batch_size=sz["batch"],
        precision=precision,
    )["images_per_second"]


def row_classifier(sz) -> tuple[str, bool]:
    from runners.train import default_precision

    precision = default_precision(_device())
    recipe, plain = _recipe_rate(sz, precision), _plain_rate(sz, precision)
    ratio = recipe / plain
    return (
        f"{sz['recipe']} w{sz['width']} {precision}: recipe {recipe:,.0f} img/s, plain loop {plain:,.0f} img/s, "
        f"ratio {ratio:.2f} (>= 0.9)"
    ), ratio >= 0.9


def _packed_worker(sz) -> float:
    torch.set_num_threads(1)
    return _recipe_rate(sz)


def row_packing(sz) -> tuple[str, bool]:
    """Throughput of 4 trainings in 4 processes at once against 1 alone (on a GPU: 4 trials packed on it)."""
    from concurrent.futures import ProcessPoolExecutor

    rates = {}
    for n in (1, 4):
        with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as pool:
            rates[n] = sum(f.result(timeout=300) for f in [pool.submit(_packed_worker, sz) for _ in range(n)])
    ratio = rates[4] / rates[1]
    return f"4 packed trials {rates[4]:,.0f} img/s vs 1 alone {rates[1]:,.0f}: {ratio:.2f}x", ratio >= 1.0


def row_generator(sz) -> tuple[str, bool]:
    from runners.generative import sample_diffusion, train_diffusion
    from runners.options import resolve_preset

    rng = np.random.default_rng(0)
    x = rng.random((4 * sz["gen_batch"], *sz["shape"]), dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    parts, ok = [], True
    for precision in ("fp32", "bf16"):
        hp = {
            **resolve_preset({"preset": sz["preset"], "precision": precision}),
            "batch_size": sz["gen_batch"],
            "sample_steps": 10,
            "sample_batch": sz["sample_n"],
        }
        model, seconds = train_diffusion(x, y, 10, {**hp, "train_steps": sz["gen_steps"]}, seed=0)
        t0 = time.perf_counter()
        images = sample_diffusion(model, np.arange(sz["sample_n"]) % 10, 10, hp, seed=0)
        sample = sz["sample_n"] / (time.perf_counter() - t0)
        ok &= images.shape[0] == sz["sample_n"]
        parts.append(f"{precision}: train {sz['gen_steps'] / seconds:.2f} steps/s, sample {sample:.1f} img/s")
    return f"{sz['preset']} preset, batch {sz['gen_batch']}: " + "; ".join(parts), ok


def row_end_to_end(sz) -> tuple[str, bool]:
    import scaling
    from tests.test_paper_rehearsal import REHEARSAL, place_paper_files

    gpu = _device() == "cuda"
    resources = (
        "resources={cpus_per_trial: 1, gpus_per_trial: 0.25, gpus_per_source_job: 1}"
        if gpu
        else "resources={cpus_per_trial: 1, gpus_per_trial: 0, num_cpus: 2}"
    )
    sets = [s for s in REHEARSAL if not s.startswith("resources=")] + [resources]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        place_paper_files(tmp)
        env = {**os.environ, "SCALING_CACHE": str(tmp / "cache")}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "scaling.cli",
                "sweep",
                str(ROOT / "configs/cifar10.yaml"),
                "--quiet",
                "--storage",
                str(tmp / "runs"),
                *[a for s in sets for a in ("--set", s)],
            ],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            return f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}", False
        cube = scaling.open_cube(tmp / "runs" / "cifar10" / "results.nc")
        done = int((cube["status"] == 1).sum())
        return (
            f"{done}/{cube['status'].size} cells done, sources {list(map(str, cube['source'].values))}, {seconds:.0f} s"
        ), done == cube["status"].size


ROWS = {
    "calibrate (cifar10 shapes)": row_calibrate,
    "classifier vs plain loop": row_classifier,
    "packing": row_packing,
    "generator fp32 vs bf16": row_generator,
    "cifar10 end to end": row_end_to_end,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes on a GPU too")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = ap.parse_args()
    gpu = torch.cuda.is_available()
    sz = _sizes(gpu, args.quick)
    device = torch.cuda.get_device_name(0) if gpu else f"CPU ({os.cpu_count()} cores), no CUDA"
    print(f"GPU acceptance on {device}, torch {torch.__version__}")
    print("| check | result | pass |\n|---|---|---|")
    failed = 0
    for name in args.rows:
        t0 = time.perf_counter()
        try:
            text, ok = ROWS[name](sz)
        except Exception as exc:  # a row that breaks is a failed row, and the others still run
            text, ok = f"error: {type(exc).__name__}: {exc}", False
        failed += not ok
        print(f"| {name} | {text} ({time.perf_counter() - t0:.0f} s) | {'yes' if ok else 'NO'} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
