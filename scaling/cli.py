"""The ``scaling`` command line: sweep, fit, figures, report, simulate."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


from analysis.equivalence import EQUIVALENCE_LAWS
from analysis.laws import CURVE_LAWS
from analysis.cube import REFERENCE
from analysis.options import CI_METHODS, N_BOOT


def _checked(convert, ok, need: str):
    """An argparse ``type``: ``convert`` the text, then require ``ok`` of it; argparse's one line names the option
    ("argument --width: must be ..."), before any work starts."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}")
        return value

    parse.__name__ = need  # what argparse would print for a value it cannot convert
    return parse


POSITIVE_INT = _checked(int, lambda v: v >= 1, "a whole number >= 1")
NONNEGATIVE_INT = _checked(int, lambda v: v >= 0, "a whole number >= 0")
SEED_COUNT = _checked(int, lambda v: v >= 2, "a number of seeds >= 2 (an interval over seeds needs two)")
POSITIVE = _checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
NONNEGATIVE = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
WIDTH = _checked(float, lambda v: math.isfinite(v) and v > 1, "a bound ratio upper/lower above 1 (e.g. 2)")
LEVEL = _checked(float, lambda v: 0 < v < 1, "an interval level between 0 and 1 (e.g. 0.95)")
FRACTION = _checked(float, lambda v: 0 < v < 1, "a fraction between 0 and 1")


def _sweep(args) -> int:
    from runners import signals

    signals.install()  # first: a SIGTERM or SIGHUP while torch and Ray import stops as in every later phase
    from runners.sweep import RunFolderBusy, SourceJobError, SweepInterrupted, run_sweep

    if args.adaptive or args.target:
        if not (args.adaptive and args.target):
            raise ValueError(
                "--adaptive: needs --target SOURCE:N_REAL:N_SYNTH (and --width), and --target needs --adaptive"
            )
        from scaling.adaptive import main_adaptive

        args.target = _parse_target(args.target)
        return main_adaptive(args)

    try:
        path = run_sweep(
            args.config,
            address=args.address,
            storage=args.storage,
            dry_run=args.dry_run,
            quiet=args.quiet,
            settings=args.set,
            gpus=args.gpus,
        )
    except SourceJobError as exc:  # a generator/retrieval job failed for good: one line, non-zero exit
        print(f"scaling sweep: error: {exc}", file=sys.stderr)
        return 3
    except RunFolderBusy as exc:
        print(f"scaling sweep: error: {exc}", file=sys.stderr)
        return 2
    except SweepInterrupted as exc:  # the cube is written as far as it got
        print(f"scaling sweep: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt as exc:  # stopped before any trial could run
        print(
            f"scaling sweep: {exc or 'interrupted'}; finished trials are kept in the ledger: rerun the same command "
            "to resume",
            file=sys.stderr,
        )
        return 130
    if args.dry_run:
        return 0
    import scaling

    counts = scaling.status_counts(scaling.open_cube(path))
    if counts.get("done", 0) == 0:
        print(f"scaling sweep: error: every cell failed ({counts}); see the trial errors above", file=sys.stderr)
        return 4
    if counts.get("failed"):
        print(
            f"scaling sweep: warning: {counts['failed']} cell(s) failed after retries; the fit excludes them",
            file=sys.stderr,
        )
    if not args.quiet:
        _print_answer(path)
    return 0


def _print_answer(path) -> None:
    """A sweep's last lines: the answer per source and base size at the largest n_synth (the default fit takes
    a fraction of a second), then the command that writes the full report."""
    from pathlib import Path

    import scaling
    from analysis.formatting import answer_line

    try:
        results = scaling.fit_equivalence(scaling.open_cube(path))
    except ValueError as exc:  # a cube the fit cannot answer yet (too few sizes or seeds, a protocol sweep)
        print(f"answer: not available from this cube: {exc}")
    else:
        print("answer (synthetic images per real image at the largest n_synth):")
        width = max(12, *(len(s) for s in results))
        for row in results.answer_rows():
            print(f"  {row['source']:<{width}} n_real={row['n_real']:<5} {answer_line(row)}")
        if len(results) >= 3:
            _print_ranking(results, width)
    print(f"next: scaling report {path} --out {Path(path).parent / 'report'}")


def _print_ranking(results, width: int) -> None:
    """Methods ranked per base size by the real images their largest n_synth is worth, with the paired difference
    to the best and the ranks the pairwise paired comparisons allow."""
    from analysis.formatting import fmt_count, format_interval

    t = results.ranking()
    print(f"methods ranked by the real images {int(t['n_synth'].iloc[0])} of their images are worth (best first; "
          "rank: what the paired comparisons allow):")  # fmt: skip
    for n_real, rows in t.groupby("n_real", sort=True):
        print(f"  n_real={n_real}")
        for r in rows.itertuples():
            rank = f"{r.rank_low}" if r.rank_low == r.rank_high else f"{r.rank_low}-{r.rank_high}"
            behind = (
                ""
                if r.source == r.best
                else f"  behind the best {fmt_count(r.behind_best)} {format_interval(r.behind_lower, r.behind_upper)}"
            )
            print(
                f"    {rank:<5} {r.source:<{width}} n_eq {fmt_count(r.n_eq)} "
                f"{format_interval(r.n_eq_lower, r.n_eq_upper)}{behind}"
            )


def _calibrate(args) -> int:
    from runners.calibrate import calibrate
    from runners.checks import files_checked_later
    from runners.config import load_config

    with files_checked_later():  # timing needs the shapes, not the files
        cfg = load_config(args.config, args.set)
    print(f"calibrating '{cfg.name}' on this machine:")
    calibrate(cfg)
    return 0


def _fit_kwargs(args) -> dict:
    """The fit options shared by fit, figures and report."""
    return {"law": args.law, "curve_law": args.curve_law, "ci_method": args.ci_method, "reference": args.reference}


def _fit(args) -> int:
    import scaling

    cube = scaling.open_cube(args.cube)
    results = scaling.fit_equivalence(
        cube,
        args.source,
        n_boot=args.n_boot,
        ci=args.ci,
        protocol=args.protocol,
        **_fit_kwargs(args),
    )
    for res in results.values():
        print(res.summary())
        print()
    return 0


def _planted_rates(values: list[str] | None) -> dict[str, float]:
    """``--rho 4`` (closed_set) or ``--rho closed_set=4 --rho open_set=2``: one planted rate per source."""
    rates = {}
    for v in values:
        name, _, rate = v.rpartition("=")
        name = name or "closed_set"
        try:
            rates[name] = float(rate)
        except ValueError:
            raise ValueError(f"--rho: {v!r} is not RATE or SOURCE=RATE (e.g. --rho open_set=2.5)") from None
        if not rates[name] > 0:
            raise ValueError(f"--rho: the rate of {name} must be positive, got {rate}")
        if name == "real":
            raise ValueError("--rho: 'real' is the reference; name a synthetic source")
    return rates


def _simulate(args) -> int:
    import scaling

    from scaling.simulate import DEFAULT_SOURCES

    sources = {k: {"exchange_rate": v} for k, v in _planted_rates(args.rho).items()} if args.rho else DEFAULT_SOURCES
    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"--out: {args.out} exists; pass --overwrite to replace it")
    cube = scaling.simulate_cube(seeds=args.seeds, sources=sources, random_state=args.random_state)
    path = scaling.save_cube(cube, args.out, overwrite=args.overwrite)
    planted = "; ".join(f"{name} {', '.join(f'{k} {v}' for k, v in spec.items())}" for name, spec in sources.items())
    print(f"simulated cube written: {path} (planted: {planted})")
    return 0


def _view_kwargs(args) -> dict:
    """Which sources and which domain-gap slice figures and report show."""
    dom = {k: v for k, v in (("n_real", args.domain_n_real), ("seed", args.domain_seed)) if v is not None}
    return {"sources": args.source or None, "domain_slice": dom or None, "protocol": args.protocol}


def _figures(args) -> int:
    from scaling.report import render_figures

    paths = render_figures(args.cube, args.out, n_boot=args.n_boot, **_view_kwargs(args), **_fit_kwargs(args))
    for name, p in paths.items():
        print(f"{name}: {p['png']}  {p['pdf']}")
    return 0


def _report(args) -> int:
    from scaling.report import write_report

    path = write_report(args.cube, args.out, n_boot=args.n_boot, **_view_kwargs(args), **_fit_kwargs(args))
    print(f"report written: {path}")
    return 0


def _tune_recipe(args) -> int:
    from runners.recipe import DEFAULT_LRS, DEFAULT_WDS, tune_recipe

    path = tune_recipe(
        args.config,
        lrs=args.lr or DEFAULT_LRS,
        weight_decays=args.weight_decay or DEFAULT_WDS,
        seeds=args.seeds,
        val_fraction=args.val_fraction,
        address=args.address,
        storage=args.storage,
        quiet=args.quiet,
    )
    import json

    table = json.loads(path.read_text())
    print(
        f"{'size':>6} {'lr':>8} {'weight_decay':>12} {'val acc':>8}  (default lr {table['default']['lr']}, "
        f"weight_decay {table['default']['weight_decay']})"
    )
    for size, v in table["sizes"].items():
        print(f"{size:>6} {v['lr']:>8g} {v['weight_decay']:>12g} {v['val_accuracy']:>8.3f}")
    print(f"recipe written: {path}  (use it with classifier.tuned_recipe: {path})")
    return 0


def _table(args) -> int:
    from analysis.formatting import format_table
    from scaling.report import law_table

    print(format_table(law_table(args.cubes, n_boot=args.n_boot, **_fit_kwargs(args)), args.format))
    if args.memorisation_figure:
        from scaling.report import memorisation_figure

        paths = memorisation_figure(args.cubes, args.memorisation_figure, n_boot=args.n_boot, **_fit_kwargs(args))
        print(f"rate vs copy share: {paths['png']}")
    return 0


def _plan(args) -> int:
    from scaling.planning import pilot_truth, plan_seeds, prior_truth, smallest_meeting
    from runners.checks import files_checked_later
    from runners.config import check_target, load_config
    from runners.plan import _device_of, stages
    from tqdm import tqdm

    import scaling

    source, n_real, n_synth = _parse_target(args.target)
    with files_checked_later():
        cfg = load_config(args.config, args.set)
    check_target(cfg, (source, n_real, n_synth))
    if args.pilot:
        pilot = scaling.open_cube(args.pilot)
        if str(pilot.attrs["dataset"]) != cfg.dataset["name"]:
            raise ValueError(
                f"--pilot: {args.pilot} is a cube of dataset {pilot.attrs['dataset']!r}, the config's is "
                f"{cfg.dataset['name']!r}; a pilot must come from the same dataset"
            )
        check_cube_target(pilot, (source, n_real, n_synth), "--pilot")
        truth = pilot_truth(pilot, source)
    else:
        truth = prior_truth(cfg.n_real, cfg.n_synth, source, _parse_prior(args.prior), n_test=args.n_test)
    print(
        f"plan for {source} at n_real={n_real}, n_synth={n_synth}, target bound ratio <= {args.width:g} "
        f"(upper/lower of the 95% interval); {args.sims} simulated sweeps per seed count"
    )
    print(f"  {truth.describe()}")
    with tqdm(total=args.sims * len(args.seeds), desc="simulated fits", unit="fit", leave=False) as bar:
        table = plan_seeds(truth, source, n_real, n_synth, args.seeds, sims=args.sims, progress=bar.update)
    device = _device_of(cfg)
    unit = "GPU-h" if device == "gpu" else "CPU-h"
    print(
        f"  {'seeds':>5} {'trials':>7} {unit:>8} {'median':>7} {'10%-90%':>15} {'estimated':>9} "
        f"{'not id.':>7} {'no gain':>7}"
    )
    for s, row in table.iterrows():
        with files_checked_later():
            c = load_config(args.config, [*args.set, f"seeds={list(range(s))}"])
        hours = sum(st.device_hours for st in stages(c, device))
        mark = " <= width" if row["median_ratio"] <= args.width else ""
        print(
            f"  {s:>5} {len(c.cells()):>7} {hours:>8.2f} {row['median_ratio']:>7.2f} "
            f"{row['ratio_p10']:>7.2f}-{row['ratio_p90']:<7.2f} {row['p_estimated']:>9.0%} "
            f"{row['p_not_identified']:>7.0%} {row['p_no_measurable_gain']:>7.0%}{mark}"
        )
    best = smallest_meeting(table, args.width)
    print(
        f"  -> {best} seeds reach the width in the median sweep"
        if best
        else "  -> no candidate reaches the width: more seeds, or larger n_synth / more n_real values"
    )
    return 0


def _next(args) -> int:
    """``scaling next``: :func:`scaling.planning.next_batch` printed, and written to next.json beside the cube."""
    import json

    import scaling
    from analysis.io import write_atomic
    from scaling.planning import next_batch

    target = _parse_target(args.target)
    cube = scaling.open_cube(args.cube)
    check_cube_target(cube, target, "--target")
    plan = next_batch(cube, target, args.width, add=args.add, sims=args.sims)
    now = plan["now"]
    print(
        f"now: {int(cube.sizes['seed'])} seeds, rho {now['estimate']:.3g} [{now['lower']:.3g}, {now['upper']:.3g}], "
        f"bound ratio {now['ratio']:.3g} ({now['verdict']}); target width {args.width:g}"
    )
    if plan["pick"] is None:
        print("  -> done: the interval is already narrow enough")
        return 0
    print(
        f"  {'+seeds':>6} {'trials':>7} {'compute s':>10} {'median ratio':>12} {'estimated':>9} {'log-width shrink/h':>18}"
    )
    for r in plan["candidates"]:
        print(
            f"  {r['add_seeds']:>6} {r['trials']:>7} {r['compute_s']:>10.0f} {r['median_ratio']:>12.3f} "
            f"{r['p_estimated']:>9.0%} {r['shrink_per_hour']:>18.3g}{'  reaches the width' if r['reaches'] else ''}"
        )
    print(
        f"  -> next batch: +{plan['pick']['add_seeds']} seeds of {plan['reference']} and {target[0]} ({plan['why']}); "
        "extend the run with `--set seeds=[...]` (finished cells are kept)"
    )
    out = Path(args.cube).with_name("next.json")
    write_atomic(out, lambda p: p.write_text(json.dumps(plan, default=float)))
    return 0


def check_cube_target(cube, target: tuple[str, int, int], option: str) -> None:
    """The target must be a synthetic cell the cube holds (a rate off the grid would be an extrapolation)."""
    source, n_real, n_synth = target
    sources = [str(v) for v in cube["source"].values]
    if source == "real" or source not in sources:
        raise ValueError(f"{option}: {source!r} is not a synthetic source of the cube ({sources})")
    if n_real not in cube["n_real"].values.tolist() or n_synth not in cube["n_synth"].values.tolist() or n_synth == 0:
        raise ValueError(
            f"{option}: ({n_real}, {n_synth}) is not a cell of the cube (n_real "
            f"{cube['n_real'].values.tolist()}, n_synth {cube['n_synth'].values.tolist()}, n_synth > 0)"
        )


def _parse_target(text: str) -> tuple[str, int, int]:
    parts = text.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"--target: expected SOURCE:N_REAL:N_SYNTH (e.g. open_set:25:400), got {text!r}")
    return parts[0], int(parts[1]), int(parts[2])


def _parse_prior(text: str) -> dict:
    out = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--prior: {item!r} is not KEY=NUMBER") from None
        if not sep:
            raise ValueError(f"--prior: {item!r} is not KEY=NUMBER")
    return out


def _add_target_options(p) -> None:
    """--target and --width, as plan and next read them."""
    p.add_argument("--target", required=True, metavar="SOURCE:N_REAL:N_SYNTH", help="the rate to pin down")
    p.add_argument(
        "--width",
        type=WIDTH,
        default=2.0,
        help="target bound ratio upper/lower of the 95%% interval (default 2: within about x/1.4)",
    )


def _add_fit_options(p) -> None:
    p.add_argument(
        "--law",
        default="auto",
        choices=list(EQUIVALENCE_LAWS) + ["auto"],
        help="equivalence law (default auto: the laws weighted inside every replicate by held-out error; "
        "docs/statistics.md)",
    )
    p.add_argument(
        "--curve-law",
        default="auto",
        choices=list(CURVE_LAWS) + ["auto"],
        help="reference accuracy law (default auto: power, m3 and m4 mixed inside every replicate by held-out "
        "extrapolation; docs/statistics.md)",
    )
    p.add_argument(
        "--ci-method",
        default="jackknife",
        choices=list(CI_METHODS),
        help="interval method (default jackknife: leave-one-seed-out t, coverage in bench/RESULTS.md)",
    )
    p.add_argument(
        "--n-boot", type=POSITIVE_INT, default=N_BOOT, help=f"bootstrap replicates over seeds (default {N_BOOT})"
    )
    p.add_argument(
        "--reference", default=REFERENCE, help=f"the source every other is measured against (default: {REFERENCE})"
    )


def _add_view_options(p) -> None:
    p.add_argument(
        "--source",
        action="append",
        metavar="SOURCE",
        help="show only this source (repeatable; the real reference is always kept)",
    )
    p.add_argument(
        "--domain-n-real",
        type=POSITIVE_INT,
        metavar="N",
        help="base size the domain-gap figure shows (default: the smallest)",
    )
    p.add_argument(
        "--domain-seed",
        type=NONNEGATIVE_INT,
        metavar="SEED",
        help="seed the domain-gap figure shows (default: the first)",
    )
    p.add_argument(
        "--protocol",
        metavar="LABEL",
        help="for a protocol sweep: the setting the figures and the answer "
        "show (default: the first; the report also compares every setting)",
    )


# every exit status of the command line; each is tested (tests/test_faults.py)
EXIT_CODES = {
    0: "success",
    2: "bad input: a config field, cube, argument or file, or a run folder owned or locked by another sweep "
    "(one line naming it; nothing written)",
    3: "a source job (generator training, sampling, retrieval) failed after its retries",
    4: "every cell of the sweep failed",
    5: "storage or disk failure: the store stayed unreachable through its retries or refused for good (no bucket, "
    "refused credentials), or a write was refused, also inside a source job (one line naming the path)",
    70: "internal error: a bug in the package (the traceback is printed; please report it)",
    130: "interrupted (Ctrl-C, SIGTERM or SIGHUP, in any phase): finished trials are kept, rerun the same command "
    "to resume",
}


def _exit_code_epilog() -> str:
    return "exit status:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scaling",
        description="How many synthetic images is one real image worth? "
        "Run sweeps, fit exchange rates with honest intervals, draw the paper figures.",
        epilog=_exit_code_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "sweep",
        help="run or resume a Ray Tune sweep from a YAML config",
        description="Run (or resume: finished cells are never recomputed) the grid of a config.",
    )
    s.add_argument("config", help="YAML sweep config (see configs/digits.yaml)")
    s.add_argument("--address", help="an existing Ray cluster (e.g. auto or 10.0.0.1:6379); default: a local one")
    s.add_argument("--storage", help="where run folders go (shared path on clusters); overrides the config")
    s.add_argument("--dry-run", action="store_true", help="print the plan and a cost estimate, run nothing")
    s.add_argument("--quiet", action="store_true", help="no progress bars or plan lines")
    s.add_argument("--gpus", type=NONNEGATIVE, metavar="N", help="with --dry-run: price the wall time on N GPUs")
    s.add_argument(
        "--adaptive",
        action="store_true",
        help="rounds of extend-refit-decide for one target rate: only the reference and the target source "
        "run, seeds are added until the interval is narrow enough (adaptive.json records each round)",
    )
    s.add_argument("--target", metavar="SOURCE:N_REAL:N_SYNTH", help="with --adaptive: the rate to pin down")
    s.add_argument("--width", type=WIDTH, default=2.0, help="with --adaptive: stop at this bound ratio upper/lower")
    s.add_argument("--start-seeds", type=SEED_COUNT, default=3, help="with --adaptive: seeds of the first round")
    s.add_argument("--step", type=POSITIVE_INT, default=1, help="with --adaptive: seeds added per round")
    s.add_argument("--max-seeds", type=SEED_COUNT, default=20, help="with --adaptive: stop at this many seeds")
    s.add_argument(
        "--confirm",
        type=POSITIVE_INT,
        default=2,
        help="with --adaptive: rounds in a row at the width before stopping (1 stops on the first; it costs coverage)",
    )
    s.add_argument(
        "--budget",
        type=POSITIVE,
        metavar="HOURS",
        help="with --adaptive: stop once this much compute (train + source seconds) is spent",
    )
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (dotted key, YAML value; repeatable), e.g. --set classifier.steps=20 "
        "--set seeds=[0,1]; the run folder's fingerprint includes the result",
    )
    s.set_defaults(func=_sweep)
    f = sub.add_parser(
        "fit",
        help="fit the exchange rate of a cube and print the summary",
        description="Fit every synthetic source (or --source) against the real reference.",
    )
    f.add_argument("cube", help="results.nc written by a sweep (or by simulate)")
    f.add_argument("--source", default=None, help="synthetic source (default: every non-reference source)")
    f.add_argument("--ci", type=LEVEL, default=0.95, help="interval level (default 0.95)")
    f.add_argument("--protocol", metavar="LABEL", help="for a protocol sweep: the setting to fit")
    _add_fit_options(f)
    f.set_defaults(func=_fit)
    g = sub.add_parser("figures", help="render every paper figure of a cube (PNG and PDF)")
    g.add_argument("cube", help="results.nc (features.nc beside it adds domain_gap and samples)")
    g.add_argument("--out", required=True, help="output folder")
    _add_fit_options(g)
    _add_view_options(g)
    g.set_defaults(func=_figures)
    r = sub.add_parser("report", help="one Markdown page: answer, figures, summaries, pool quality, cost")
    r.add_argument("cube", help="results.nc (features.nc beside it adds domain_gap and samples)")
    r.add_argument("--out", required=True, help="output folder (report.md and figures/)")
    _add_fit_options(r)
    _add_view_options(r)
    r.set_defaults(func=_report)
    c = sub.add_parser(
        "calibrate",
        help="measure the cost model's throughputs for a config on this machine",
        description="Time classifier training, generator training and sampling, the retrieval "
        "encoder and a faiss search at the config's image shape (about a minute), and write "
        "them to the user-level table that dry runs read ($SCALING_CACHE/throughputs.json).",
    )
    c.add_argument("config", help="YAML sweep config whose work is timed")
    c.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field, as for sweep"
    )
    c.set_defaults(func=_calibrate)
    u = sub.add_parser(
        "tune-recipe",
        help="tune lr and weight decay per training-set size on a validation split",
        description="Recipe check: a Ray Tune grid over (lr, weight decay) for every size of the real "
        "curve, scored on a validation split carved from each training set (never the "
        "test set). Writes recipe/tuned.json for classifier.tuned_recipe.",
    )
    u.add_argument("config", help="YAML sweep config whose real curve is tuned")
    u.add_argument("--lr", type=POSITIVE, nargs="+", help="learning rates to try (default 0.001 ... 0.016)")
    u.add_argument("--weight-decay", type=NONNEGATIVE, nargs="+", help="weight decays to try (default 5e-4 5e-3 5e-2)")
    u.add_argument(
        "--seeds", type=NONNEGATIVE_INT, nargs="+", help="seeds averaged per setting (default: the first two)"
    )
    u.add_argument(
        "--val-fraction", type=FRACTION, default=0.2, help="share of each training set held out (default 0.2)"
    )
    u.add_argument("--address", help="an existing Ray cluster; default: a local one")
    u.add_argument("--storage", help="where run folders go; overrides the config")
    u.add_argument("--quiet", action="store_true", help="no progress bar")
    u.set_defaults(func=_tune_recipe)
    pl = sub.add_parser(
        "plan",
        help="seeds needed for a target interval width, by simulating the sweep",
        description="Simulate the config's sweep at candidate seed counts from a pilot cube (the laws "
        "fitted to it and its noise) or from stated priors, fit every simulated cube, and print the "
        "width of the exchange rate's interval at the target cell, verdict shares and cost.",
    )
    pl.add_argument("config", help="YAML sweep config (grid and cost)")
    pl.add_argument("--pilot", help="results.nc of a pilot sweep on the same grid (recommended)")
    _add_target_options(pl)
    pl.add_argument("--seeds", type=SEED_COUNT, nargs="+", default=[3, 5, 8, 12], help="candidate seed counts")
    pl.add_argument("--sims", type=POSITIVE_INT, default=20, help="simulated sweeps per seed count (default 20)")
    pl.add_argument(
        "--prior",
        default="rate=4,seed_sd=0.1",
        help="without --pilot: KEY=NUMBER,... for rate, seed_sd, cell_sd, E, B, beta (the real error "
        "curve E + B n^-beta)",
    )
    pl.add_argument("--n-test", type=POSITIVE_INT, default=1000, help="without --pilot: test images")
    pl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    pl.set_defaults(func=_plan)
    nx = sub.add_parser(
        "next",
        help="rank the next batch of seeds for one target rate, by shrinkage per compute",
        description="From a cube (as pilot), predict the target interval's width after k more seeds "
        "of the reference and the target source, with their compute, and pick the batch; "
        "writes next.json beside the cube.",
    )
    nx.add_argument("cube", help="results.nc of the run so far")
    _add_target_options(nx)
    nx.add_argument(
        "--add", type=POSITIVE_INT, nargs="+", default=[1, 2, 4, 8], help="candidate numbers of seeds to add"
    )
    nx.add_argument("--sims", type=POSITIVE_INT, default=20, help="simulated sweeps per candidate")
    nx.set_defaults(func=_next)
    t = sub.add_parser(
        "table",
        help="c2, R* and rho0 per source and dataset across several cubes",
        description="One row per (dataset, source): Wang et al.'s c2, the saturating law's R* and "
        "rho0 with intervals, and the rate at the largest measured cell.",
    )
    t.add_argument("cubes", nargs="+", help="results.nc files (one per dataset or sweep)")
    t.add_argument("--format", choices=["markdown", "latex"], default="markdown", help="output format")
    t.add_argument(
        "--memorisation-figure",
        metavar="DIR",
        help="also draw every cube's rates against their pools' copy share in one panel (DIR/memorisation.png, .pdf)",
    )
    _add_fit_options(t)
    t.set_defaults(func=_table)
    m = sub.add_parser("simulate", help="write a cube with planted exchange rates, for trying things")
    m.add_argument("--out", required=True, help="the NetCDF file to write")
    m.add_argument("--seeds", type=SEED_COUNT, default=5, help="seeds per cell (default 5)")
    m.add_argument(
        "--rho",
        action="append",
        metavar="[SOURCE=]RATE",
        help="planted exchange rate; repeat for several sources (default: the truth simulate_cube() plants, "
        "closed_set exchange rate 4 and open_set on Wang et al.'s law c1 2, c2 3, k 1000)",
    )
    m.add_argument("--random-state", type=NONNEGATIVE_INT, default=0, help="seed of the simulation (default 0)")
    m.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    m.set_defaults(func=_simulate)
    return p


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("synth-scaling")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cli_reference(width: int = 100) -> str:
    """The command-line reference as Markdown, generated from the parser itself (docs/cli.md):
    ``python -c "from scaling.cli import cli_reference; print(cli_reference(), end='')" > docs/cli.md``."""
    import os

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # argparse wraps help to the terminal width: a fixed one for the file
    try:
        parser = build_parser()
        subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parts = [
            "# Command-line reference",
            "",
            "Generated from the parser (`scaling.cli.cli_reference`); `scaling COMMAND --help` prints the same.",
            "",
            "```text",
            parser.format_help().rstrip(),
            "```",
        ]
        for name, sub in subs.choices.items():
            parts += ["", f"## scaling {name}", "", "```text", sub.format_help().rstrip(), "```"]
        return "\n".join(parts) + "\n"
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def main(argv=None) -> int:
    """Run one command; every failure ends in one line and a status of :data:`EXIT_CODES`."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or an argument argparse refused (2, its one line printed)
        return int(exc.code or 0)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        print(f"scaling {args.command}: error: {exc}", file=sys.stderr)  # config/cube/argument errors
        return 2
    except KeyboardInterrupt:
        print(f"scaling {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a read-only folder, a store unreachable through its retries
        print(f"scaling {args.command}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 5
    except Exception:  # noqa: BLE001 - a bug: its traceback, then a status that says so
        import traceback

        traceback.print_exc()
        print(
            f"scaling {args.command}: internal error (a bug; please report it with the traceback above)",
            file=sys.stderr,
        )
        return 70


def _os_error_line(exc: OSError) -> str:
    """One line naming what failed and where: ``[Errno 28] No space left on device: 'runs/x/results.nc'``."""
    from runners.storage import redact

    if exc.strerror and exc.filename:
        return redact(f"{exc.strerror}: {exc.filename}")
    return redact(str(exc).splitlines()[0] if str(exc) else repr(exc))


if __name__ == "__main__":
    sys.exit(main())
