"""Peak memory per Ray worker: the same small sweep on a 5,000-image and a 60,000-image CIFAR-format dataset.

Both datasets are written in the CIFAR-10 python-pickle layout (random pixels: memory does not depend on the
content): 60k = 5 x 10,000 training images + 10,000 test images, as CIFAR-10 ships; 5k = 5 x 800 + 1,000. The
sweep (sources real, n_real 200, n_synth 0 and 200, 2 seeds, 30 classifier steps, 2 concurrent trials) runs as
`scaling sweep` in a subprocess with a fresh dataset cache. Meanwhile every Ray worker's resident memory
(VmRSS from /proc, every 50 ms) is recorded under the task it is running (Ray names the process after it), so
a worker reused for another task is not charged twice. Goal: 60k <= 1.3 x 5k per trial worker.

    python bench/memory.py
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml


def write_cifar(root: Path, per_batch: int, n_test: int) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(np.arange(n) % 10)}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return root


def role(cmdline: str) -> str | None:
    """What a Ray worker is doing, from the title Ray gives its process."""
    if not cmdline.startswith("ray::"):
        return None
    title = cmdline.split()[0]
    if "ImplicitFunc" in title or "trainable" in title:
        return "trial"
    if "IDLE" in title or "Tune" in title or title in ("ray::", "ray::_StatusReporter"):
        return None
    return "source"  # the pool and judge tasks


def sample(peaks: dict, stop: threading.Event) -> None:
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                r = role(cmd)
                if r is None:
                    continue
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024
            peaks[r] = max(peaks.get(r, 0.0), rss)
        time.sleep(0.05)


def run(size_name: str, per_batch: int, n_test: int, work: Path) -> dict:
    data = write_cifar(work / size_name / "cifar", per_batch, n_test)
    cfg = {
        "name": f"mem-{size_name}",
        "dataset": {"name": "cifar10", "root": str(data)},
        "sources": ["real"],
        "n_real": [200],
        "n_synth": [0, 200],
        "seeds": [0, 1],
        "classifier": {"recipe": "small_cnn", "width": 16, "steps": 30, "batch_size": 64, "lr": 0.004},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "num_cpus": 2},
        "storage": str(work / "runs"),
    }
    path = work / f"{size_name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "SCALING_CACHE": str(work / size_name / "cache")}
    peaks: dict = {}
    stop = threading.Event()
    thread = threading.Thread(target=sample, args=(peaks, stop), daemon=True)
    thread.start()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "scaling.cli", "sweep", str(path), "--quiet"], env=env, capture_output=True, text=True
    )
    stop.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed:\n{proc.stderr[-3000:]}")
    return {"images": 5 * per_batch + n_test, "seconds": time.perf_counter() - t0, **peaks}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        small = run("5k", 800, 1000, Path(tmp))
        big = run("60k", 10_000, 10_000, Path(tmp))
    print(f"{'dataset':>8} {'trial worker MB':>16} {'source worker MB':>17} {'sweep s':>8}")
    for r in (small, big):
        print(
            f"{r['images']:>8} {r.get('trial', float('nan')):>16.0f} {r.get('source', float('nan')):>17.0f} "
            f"{r['seconds']:>8.1f}"
        )
    ratios = {k: big[k] / small[k] for k in ("trial", "source") if k in big and k in small}
    print("ratio 60k / 5k: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()) + "   (goal: trial <= 1.3)")
    print(json.dumps({"small": small, "big": big, "ratios": ratios}))


if __name__ == "__main__":
    main()
