"""Images/s of the training recipe vs a plain DataLoader loop, same model, data and steps.

The recipe keeps the data resident as one tensor and draws batches with index tensors; the baseline
is the textbook ``TensorDataset`` + ``DataLoader(shuffle=True)`` loop. On a GPU (when present) it also
times an airbench94-style network on CIFAR-shaped tensors through the recipe.

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
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(cout),
                             nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU())

    return nn.Sequential(nn.Conv2d(3, 24, 2, bias=False), nn.GELU(), block(24, width), block(width, 4 * width),
                         block(4 * width, 4 * width), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4 * width, 10))


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
    print(f"digits 8x8, small_cnn width 16, batch {args.batch_size}, {args.steps} steps, {device}, 1 thread, "
          f"median of {args.repeats}")
    print(f"  plain DataLoader loop : {base:9.0f} images/s")
    print(f"  scaling recipe        : {rec:9.0f} images/s")
    print(f"  ratio recipe/loop     : {rec / base:.2f}x")
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
