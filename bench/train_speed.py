"""Training speed: the recipe vs a plain DataLoader loop, a whole digits trial vs a plain torch loop of the same
steps (where a trial's time goes), and bf16 vs fp32 autocast.

The recipe keeps the data resident as one tensor and draws batches with index tensors; the baseline is the
textbook ``TensorDataset`` + ``DataLoader(shuffle=True)`` loop. A trial (``runners.trial.run_cell``, called
directly as a Ray worker calls it) is timed in its parts — dataset cache, base subset, training, evaluation —
against a plain torch loop of the same network, optimiser and steps, in the same process. On a GPU (when present)
it also times an airbench94-style network on CIFAR-shaped tensors through the recipe.

    python bench/train_speed.py [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F


def dataloader_loop(x, y, n_classes, *, steps, batch_size, lr, width, seed, device):
    from torch.utils.data import DataLoader, TensorDataset

    from runners.train import build_model

    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    mean, std = xt.mean((0, 2, 3), keepdim=True), xt.std((0, 2, 3), keepdim=True) + 1e-6
    model = build_model("small_cnn", x.shape[1], n_classes, width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    loader = DataLoader(TensorDataset((xt - mean) / std, yt), batch_size=batch_size, shuffle=True, drop_last=True)
    t0, step = time.perf_counter(), 0
    model.train()
    while step < steps:
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


def airbench_like(width: int = 64) -> torch.nn.Module:
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(cout),
            nn.GELU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.GELU(),
        )

    return nn.Sequential(
        nn.Conv2d(3, 24, 2, bias=False),
        nn.GELU(),
        block(24, width),
        block(width, 4 * width),
        block(4 * width, 4 * width),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, 10),
    )


def plain_loop_seconds(x, y, n_classes, *, steps, batch_size, lr, width, seed):
    """A plain torch loop of the trial's network and optimiser, data resident, no schedule, no evaluation."""
    from runners.train import build_model

    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.int64)
    model = build_model("small_cnn", x.shape[1], n_classes, width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(yt), (min(batch_size, len(yt)),), generator=gen)
        loss = F.cross_entropy(model(xt[idx]), yt[idx], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def precision_rows(x, y, device, repeats, kw) -> None:
    """The recipe in fp32 and in bf16 autocast, same data and steps: speed and accuracy on held-out digits."""
    from runners.data import load_dataset
    from runners.train import train_classifier

    d = load_dataset({"name": "digits"})
    xte, yte = d.images[1000:1400], d.labels[1000:1400]
    out = {}
    for precision in ("fp32", "bf16"):
        runs = [
            train_classifier(x, y, xte, yte, 10, seed=r, device=device, precision=precision, **kw)
            for r in range(repeats)
        ]
        out[precision] = (
            float(np.median([r["images_per_second"] for r in runs])),
            float(np.mean([r["accuracy"] for r in runs])),
        )
    print(f"  precision fp32        : {out['fp32'][0]:9.0f} images/s, held-out accuracy {out['fp32'][1]:.3f}")
    print(f"  precision bf16        : {out['bf16'][0]:9.0f} images/s, held-out accuracy {out['bf16'][1]:.3f}")
    print(
        f"  ratio bf16/fp32       : {out['bf16'][0] / out['fp32'][0]:.2f}x speed, "
        f"{out['bf16'][1] - out['fp32'][1]:+.3f} accuracy"
    )


def trial_rows(repeats: int) -> None:
    """A digits trial of the default config (n_real 100, n_synth 0: no pool to load), called as a Ray worker calls
    it, in its parts, against a plain torch loop of the same steps."""
    from runners import data as D
    from runners.config import load_config
    from runners.trial import run_cell
    from runners.train import train_classifier

    cfg = load_config("configs/digits.yaml")
    cell = {"source": "real", "n_real": 100, "n_synth": 0, "seed": 0}
    clf = cfg.classifier
    steps, width, lr = int(clf.steps), clf.model_width, float(clf.lr)
    t0 = time.perf_counter()
    D._cached.cache_clear()  # a fresh process: time the decode
    data, test_idx = D.dataset_of(cfg)  # decoded from the uint8 cache (built first if absent)
    t_data = time.perf_counter() - t0
    walls, trains, plains = [], [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        out = run_cell(cfg, {**cell, "seed": r})
        walls.append(time.perf_counter() - t0)
        trains.append(out["train_seconds"])
        base, _ = D.base_and_real_pool(cfg, 100, r)
        x, y = np.asarray(data.images[base], dtype=np.float32), data.labels[base]
        plains.append(
            plain_loop_seconds(
                x,
                y,
                len(data.classes),
                steps=steps,
                batch_size=int(clf.batch_size),
                lr=lr,
                width=width,
                seed=r,
            )
        )
    t0 = time.perf_counter()
    base, _ = D.base_and_real_pool(cfg, 100, 0)
    t_split = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = train_classifier(
        data.images[base],
        data.labels[base],
        data.images.subset(test_idx),
        data.labels[test_idx],
        len(data.classes),
        steps=steps,
        width=width,
        lr=lr,
        seed=0,
        device="cpu",
    )
    t_eval = time.perf_counter() - t0 - res["train_seconds"]
    wall, train, plain = (float(np.median(v)) for v in (walls, trains, plains))
    print(
        f"digits trial (configs/digits.yaml: n_real 100, n_synth 0, {steps} steps, width {width}), 1 thread, "
        f"median of {repeats}"
    )
    print(f"  dataset cache (first use in a process): {t_data:6.3f} s")
    print(f"  trial wall time (run_cell)            : {wall:6.3f} s")
    print(f"    of which training steps             : {train:6.3f} s ({train / wall:.0%})")
    print(f"    base subset                         : {t_split:6.3f} s")
    print(f"    evaluation and set-up (rest)        : {wall - train:6.3f} s (evaluation alone {t_eval:.3f} s)")
    print(f"  plain torch loop, same steps          : {plain:6.3f} s")
    print(f"  ratio trial/plain loop                : {wall / plain:.2f}x (training steps alone: {train / plain:.2f}x)")


def generator_rows() -> None:
    """One closed-set pool of the digits default built from scratch (n_real 25, seed 0), in its parts: the
    judge (once per run), generator training, sampling, and the rest (quality measures, I/O)."""
    import tempfile

    from runners.config import load_config
    from runners.quality import prepare_judge
    from runners.sources import prepare_pool

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("configs/digits.yaml", storage=tmp)
        torch.set_num_threads(cfg.threads)
        t0 = time.perf_counter()
        prepare_judge(cfg)
        judge = time.perf_counter() - t0
        t0 = time.perf_counter()
        meta = prepare_pool(cfg, "closed_set", 25, 0)
        wall = time.perf_counter() - t0
    train, sample = float(meta["generator_seconds"]), float(meta["sample_seconds"])
    print("closed-set pool of the digits default (n_real 25, seed 0), 1 thread")
    print(f"  judge (once per run)                  : {judge:6.2f} s")
    print(f"  pool wall time (prepare_pool)         : {wall:6.2f} s")
    print(f"    of which generator training         : {train:6.2f} s ({train / wall:.0%})")
    print(f"    sampling                            : {sample:6.2f} s ({sample / wall:.0%})")
    print(f"    quality measures, I/O (rest)        : {wall - train - sample:6.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    from runners.data import load_dataset
    from runners.train import train_classifier

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(1)  # one trial = one CPU in the sweep
    d = load_dataset({"name": "digits"})
    x, y = d.images[:1000], d.labels[:1000]
    kw = dict(steps=args.steps, batch_size=args.batch_size, lr=0.004, width=16)
    recipe, loop = [], []
    for r in range(args.repeats):
        recipe.append(train_classifier(x, y, x[:10], y[:10], 10, seed=r, device=device, **kw)["images_per_second"])
        loop.append(dataloader_loop(x, y, 10, seed=r, device=device, **kw))
    rec, base = float(np.median(recipe)), float(np.median(loop))
    print(
        f"digits 8x8, small_cnn width 16, batch {args.batch_size}, {args.steps} steps, {device}, 1 thread, "
        f"median of {args.repeats}"
    )
    print(f"  plain DataLoader loop : {base:9.0f} images/s")
    print(f"  scaling recipe        : {rec:9.0f} images/s")
    print(f"  ratio recipe/loop     : {rec / base:.2f}x")
    precision_rows(x, y, device, args.repeats, kw)
    trial_rows(args.repeats)
    generator_rows()
    if device == "cuda":
        xs = torch.rand(50_000, 3, 32, 32).numpy()
        ys = torch.randint(0, 10, (50_000,)).numpy()
        from runners import train as T

        saved = T.build_model
        T.build_model = lambda recipe, in_ch, n, width=None: airbench_like()
        try:
            r = train_classifier(xs, ys, xs[:1000], ys[:1000], 10, steps=200, batch_size=512, lr=0.002, device=device)
        finally:
            T.build_model = saved
        print(f"  airbench94-style net, CIFAR-shaped tensors, bf16: {r['images_per_second']:.0f} images/s")


if __name__ == "__main__":
    main()
