"""Choose the small-data closed-set generator recipe by measurement: training steps x non-leaking augmentation ->
the memorisation audit's copy share and nearest-image distance ratio, and (``--rate``) the exchange rate, per
dataset and base size.

Each variant is the dataset config's closed-set generator with ``train_steps`` (or ``steps_per_image``) and
``augment`` overridden. ``--rate`` runs a real Ray Tune sweep per variant (sources real + closed_set, the
dataset config's classifier) and reads the copy share from the cube's pool audit and rho from
``scaling.fit_equivalence`` at the largest n_synth. Without ``--rate`` only the generators are trained, sampled
and audited (no classifiers: for datasets whose sweeps do not fit the budget), with the same seeds, base subsets
and audit as a sweep.

    python bench/generator_recipe.py --config configs/digits.yaml --n-real 25 50 100 --seeds 0 1 2 \\
        --steps 150 600 2400 --augment 0 0.15 --n-synth 0 100 400 --rate
    python bench/generator_recipe.py --config configs/fashion_mnist.yaml --n-real 100 300 --seeds 0 \\
        --steps 300 1200 --augment 0 0.15 --pool 500
"""

import argparse
import copy
import time
import zlib
from pathlib import Path

import numpy as np
import yaml


def variants(args) -> list[dict]:
    out = []
    for steps in args.steps or [None]:
        for per_image in args.steps_per_image or [None]:
            for augment in args.augment:
                v = {"augment": augment or None}
                if steps is not None:
                    v["train_steps"] = steps
                if per_image is not None:
                    v["steps_per_image"] = per_image
                out.append(v)
    return out


def label(v: dict) -> str:
    steps = f"{v['steps_per_image']:g}/image" if "steps_per_image" in v else str(v.get("train_steps", "preset"))
    return f"steps {steps}, augment {v['augment'] or 0:g}"


def variant_config(raw: dict, v: dict, args, storage: Path) -> dict:
    """The dataset config with sources real + closed_set, the bench's grid, and the variant's generator options."""
    cfg = copy.deepcopy(raw)
    opts = {**(cfg.get("source_options", {}).get("closed_set") or {}), **{k: x for k, x in v.items() if x is not None}}
    cfg.update(
        name=f"recipe-{zlib.crc32(label(v).encode()):08x}",
        sources=["real", "closed_set"],
        n_real=args.n_real,
        n_synth=args.n_synth if args.rate else [0, args.pool],
        seeds=args.seeds,
        source_options={"closed_set": opts},
        storage=str(storage),
    )
    return cfg


def rate_rows(raw: dict, v: dict, args, storage: Path) -> list[dict]:
    """One sweep (real + closed_set) with the variant's generator; rho and the audit per base size."""
    import scaling

    t0 = time.perf_counter()
    cube = scaling.open_cube(scaling.run_sweep(variant_config(raw, v, args, storage), quiet=True))
    wall = time.perf_counter() - t0
    res = scaling.fit_equivalence(cube, source="closed_set", n_boot=200)
    rows = []
    for r in res.answer_rows():
        g = cube["source_seconds"].sel(source="closed_set", n_real=r["n_real"]).max("n_synth").mean("seed")
        rows.append({**r, "wall": wall, "generator_seconds": float(g)})
    return rows


def audit_rows(raw: dict, v: dict, args, storage: Path) -> list[dict]:
    """The generators alone, through the sweep's own pool building and audit (no Ray, no classifiers)."""
    from runners.config import load_config
    from runners.sources import REGISTRY, Context, audit_pool

    cfg = load_config(variant_config(raw, v, args, storage))
    rows = []
    for n_real in args.n_real:
        for seed in args.seeds:
            pool = REGISTRY["closed_set"].prepare(Context(cfg, "closed_set", n_real, seed, args.pool))
            record = audit_pool(cfg, "closed_set", n_real, seed, pool)
            rows.append({"n_real": n_real, "seed": seed, "generator_seconds": pool.meta["generator_seconds"], **record})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--n-real", type=int, nargs="+", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, nargs="*", default=[])
    ap.add_argument("--steps-per-image", type=float, nargs="*", default=[])
    ap.add_argument("--augment", type=float, nargs="+", default=[0.0, 0.15])
    ap.add_argument("--n-synth", type=int, nargs="+", default=[0, 100, 400])
    ap.add_argument("--pool", type=int, default=400, help="images sampled per generator without --rate")
    ap.add_argument("--rate", action="store_true", help="run a sweep per variant and fit rho")
    ap.add_argument("--storage", default="/tmp/scaling-recipe")
    args = ap.parse_args()
    raw = yaml.safe_load(Path(args.config).read_text())
    t_all = time.perf_counter()
    print(f"{raw['dataset']['name']}: closed-set recipe, n_real {args.n_real}, seeds {args.seeds}")
    if args.rate:
        print("| variant | n_real | copies | [low, high] | NN dist. | rho [95% CI] | verdict | generator s | sweep s |")
        print("|---|---|---|---|---|---|---|---|---|")
    else:
        print("| variant | n_real | copies (mean over seeds) | [low, high] | NN dist. | generator s |")
        print("|---|---|---|---|---|---|")
    for v in variants(args):
        if args.rate:
            for r in rate_rows(raw, v, args, Path(args.storage)):
                rate = (
                    "no rate"
                    if r["verdict"] == "hurts"
                    else f"{r['estimate']:.3g} [{r['lower']:.3g}, {r['upper']:.3g}]"
                )
                print(
                    f"| {label(v)} | {r['n_real']} | {r.get('copy_share', np.nan):.0%} | "
                    f"[{r.get('copy_low', np.nan):.0%}, {r.get('copy_high', np.nan):.0%}] | "
                    f"{r.get('nn_distance_ratio', np.nan):.2f} | {rate} | {r['verdict']} | "
                    f"{r['generator_seconds']:.0f} | {r['wall']:.0f} |",
                    flush=True,
                )
        else:
            rows = audit_rows(raw, v, args, Path(args.storage))
            for n_real in args.n_real:
                mine = [r for r in rows if r["n_real"] == n_real]
                print(
                    f"| {label(v)} | {n_real} | {np.mean([r['copy_share'] for r in mine]):.0%} | "
                    f"[{min(r['copy_share_low'] for r in mine):.0%}, {max(r['copy_share_high'] for r in mine):.0%}] | "
                    f"{np.median([r['nn_distance_ratio'] for r in mine]):.2f} | "
                    f"{np.mean([r['generator_seconds'] for r in mine]):.0f} |",
                    flush=True,
                )
    print(f"wall {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
