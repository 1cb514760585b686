"""``scaling sweep CONFIG --adaptive --target SOURCE:N_REAL:N_SYNTH --width W``: rounds of extend, refit, decide.

Only the cells the target needs run: the reference (``real``) and the target source — cells of other sources
cannot narrow the target's interval. The first round runs ``start`` seeds; each later round *extends* the same
run folder by ``step`` seeds (finished cells are kept, runners.ledger), refits, and stops when the interval's
bound ratio upper/lower at the target is at most the width in ``confirm`` consecutive rounds, when ``max_seeds`` is reached, or when the compute
spent passes ``budget_hours``. Every round and the reason for the next step go to ``adaptive.json`` in the run
folder. Stopping on a narrow interval looks at the data: bench/adaptive_stopping.py measures what that does to
coverage.
"""

from __future__ import annotations

import math
import warnings

from runners.storage import RunFolder
from runners.config import REFERENCE, ConfigError, check_target, load_config
from runners.sweep import run_sweep
from analysis.cube import STATUS_DONE, open_cube


def run_adaptive(
    config,
    target: tuple[str, int, int],
    width: float,
    *,
    start: int = 3,
    step: int = 1,
    max_seeds: int = 20,
    confirm: int = 2,
    budget_hours: float | None = None,
    settings=(),
    storage: str | None = None,
    quiet: bool = False,
    out=print,
) -> dict:
    from scaling.planning import interval_at  # the public face's planning; runners may use it, never the reverse

    check_adaptive_options(
        width, start=start, step=step, max_seeds=max_seeds, confirm=confirm, budget_hours=budget_hours
    )
    base = load_config(config, settings, storage=storage)
    check_target(base, target)
    source, n_real, n_synth = target
    seeds = list(base.seeds[:start]) if len(base.seeds) >= start else list(range(start))
    rounds: list[dict] = []
    streak = 0  # consecutive rounds at the width: one narrow-by-luck interval must survive more seeds
    while True:
        sets = [*settings, f"sources=[{REFERENCE}, {source}]", f"seeds={seeds}"]
        path = run_sweep(config, settings=sets, storage=storage, quiet=quiet)
        cube = open_cube(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = interval_at(cube, source, n_real, n_synth)
        spent = float((cube["train_seconds"].fillna(0).sum() + cube["source_seconds"].fillna(0).sum()) / 3600)
        row = {
            "round": len(rounds) + 1,
            "seeds": len(seeds),
            "trials": int((cube["status"] == STATUS_DONE).sum()),
            "hours": round(spent, 4),
            **{k: q[k] for k in ("estimate", "lower", "upper", "ratio", "verdict")},
        }
        streak = streak + 1 if q["ratio"] <= width else 0
        if streak >= confirm:
            row["decision"] = f"stop: bound ratio {q['ratio']:.3g} <= width {width:g} ({streak} round(s) in a row)"
        elif len(seeds) >= max_seeds:
            row["decision"] = f"stop: {max_seeds} seeds reached (--max-seeds) with ratio {q['ratio']:.3g}"
        elif budget_hours is not None and spent >= budget_hours:
            row["decision"] = f"stop: {spent:.3g} h spent >= budget {budget_hours:g} h"
        elif streak:
            row["decision"] = (
                f"+{step} seed(s): ratio {q['ratio']:.3g} <= width {width:g}, but {confirm} rounds in a "
                "row are asked (stopping on the first narrow interval cost coverage: bench/RESULTS.md)"
            )
        else:
            row["decision"] = (
                f"+{step} seed(s): ratio {q['ratio']:.3g} > width {width:g}; more seeds of the reference "
                f"and {source} narrow it (other sources' cells would not)"
            )
        rounds.append(row)
        out(
            f"round {row['round']}: {row['seeds']} seeds, rho {row['estimate']:.3g} [{row['lower']:.3g}, "
            f"{row['upper']:.3g}] ratio {row['ratio']:.3g} ({row['verdict']}) -> {row['decision']}"
        )
        cfg = load_config(config, sets, storage=storage)
        record = {"target": {"source": source, "n_real": n_real, "n_synth": n_synth}, "width": width, "rounds": rounds}
        RunFolder(cfg).write_json(cfg.run_dir / "adaptive.json", record)
        if row["decision"].startswith("stop"):
            return {**record, "cube": str(path)}
        seeds = seeds + [max(seeds) + 1 + i for i in range(step)]


def check_adaptive_options(
    width: float, *, start: int, step: int, max_seeds: int, confirm: int, budget_hours: float | None
) -> None:
    """The stopping rule's arguments, refused before anything runs (a step of 0 would never end)."""
    checks = [
        ("--width", math.isfinite(width) and width > 1, f"a bound ratio upper/lower above 1, got {width}"),
        ("--start-seeds", start >= 2, f"at least 2 seeds (an interval over seeds needs two), got {start}"),
        ("--step", step >= 1, f"at least 1 seed per round, got {step}"),
        ("--confirm", confirm >= 1, f"at least 1 round at the width, got {confirm}"),
        ("--max-seeds", max_seeds >= start, f"at least --start-seeds ({start}), got {max_seeds}"),
        (
            "--budget",
            budget_hours is None or (math.isfinite(budget_hours) and budget_hours > 0),
            f"a positive number of hours, got {budget_hours}",
        ),
    ]
    for name, ok, need in checks:
        if not ok:
            raise ConfigError(f"{name}: must be {need}")


def main_adaptive(args) -> int:
    """``scaling sweep --adaptive``; a refusal (ConfigError) reaches the CLI's one-line error and exit 2."""
    source, n_real, n_synth = args.target
    run_adaptive(
        args.config,
        (source, n_real, n_synth),
        args.width,
        start=args.start_seeds,
        step=args.step,
        max_seeds=args.max_seeds,
        confirm=args.confirm,
        budget_hours=args.budget,
        settings=args.set,
        storage=args.storage,
        quiet=args.quiet,
    )
    return 0


__all__ = ["check_adaptive_options", "check_target", "run_adaptive"]
