"""The ``scaling`` command line: sweep, fit, figures, report, simulate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.equivalence import EQUIVALENCE_LAWS
from analysis.laws import CURVE_LAWS
from analysis.result import CI_METHODS


def _sweep(args) -> int:
    from runners.sweep import RunFolderBusy, SourceJobError, SweepInterrupted, run_sweep

    try:
        path = run_sweep(args.config, address=args.address, storage=args.storage, dry_run=args.dry_run,
                         quiet=args.quiet)
    except SourceJobError as exc:  # a generator/retrieval job failed for good: one line, non-zero exit
        print(f"scaling sweep: error: {exc}", file=sys.stderr)
        return 3
    except RunFolderBusy as exc:
        print(f"scaling sweep: error: {exc}", file=sys.stderr)
        return 2
    except (SweepInterrupted, KeyboardInterrupt) as exc:
        msg = str(exc) or "interrupted; finished trials are kept in the ledger: rerun the same command to resume"
        print(f"scaling sweep: {msg}", file=sys.stderr)
        return 130
    if args.dry_run:
        return 0
    import scaling

    counts = scaling.status_counts(scaling.open_cube(path))
    if counts.get("done", 0) == 0:
        print(f"scaling sweep: error: every cell failed ({counts}); see the trial errors above", file=sys.stderr)
        return 4
    if counts.get("failed"):
        print(f"scaling sweep: warning: {counts['failed']} cell(s) failed after retries; the fit excludes them",
              file=sys.stderr)
    return 0


def _fit_kwargs(args) -> dict:
    """The fit options shared by fit, figures and report."""
    return {"law": args.law, "curve_law": args.curve_law, "ci_method": args.ci_method}


def _fit(args) -> int:
    import scaling

    cube = scaling.open_cube(args.cube)
    results = scaling.fit_equivalence(cube, args.source, reference=args.reference, n_boot=args.n_boot, ci=args.ci,
                                      **_fit_kwargs(args))
    results = {args.source: results} if isinstance(args.source, str) else results
    for res in results.values():
        print(res.summary())
        print()
    return 0


def _simulate(args) -> int:
    import scaling

    cube = scaling.simulate_cube(seeds=args.seeds, sources={"closed_set": {"exchange_rate": args.rho}},
                                 random_state=args.random_state)
    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"--out: {args.out} exists; pass --overwrite to replace it")
    path = scaling.save_cube(cube, args.out, overwrite=args.overwrite)
    print(f"simulated cube written: {path} (planted exchange rate {args.rho})")
    return 0


def _figures(args) -> int:
    from scaling.report import render_figures

    paths = render_figures(args.cube, args.out, n_boot=args.n_boot, **_fit_kwargs(args))
    for name, p in paths.items():
        print(f"{name}: {p['png']}  {p['pdf']}")
    return 0


def _report(args) -> int:
    from scaling.report import write_report

    print(f"report written: {write_report(args.cube, args.out, n_boot=args.n_boot, **_fit_kwargs(args))}")
    return 0


def _add_fit_options(p) -> None:
    p.add_argument("--law", default="auto", choices=list(EQUIVALENCE_LAWS) + ["auto"],
                   help="equivalence law (default auto: chosen inside every replicate by held-out error)")
    p.add_argument("--curve-law", default="auto", choices=list(CURVE_LAWS) + ["auto"],
                   help="reference accuracy law (default auto: chosen per replicate by held-out extrapolation)")
    p.add_argument("--ci-method", default="jackknife", choices=list(CI_METHODS),
                   help="interval method (default jackknife: leave-one-seed-out t, coverage in bench/RESULTS.md)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scaling", description="How many synthetic images is one real image worth?")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="run or resume a Ray Tune sweep from a YAML config")
    s.add_argument("config")
    s.add_argument("--address", help="an existing Ray cluster (e.g. auto or 10.0.0.1:6379); default: a local one")
    s.add_argument("--storage", help="where run folders go (shared path on clusters); overrides the config")
    s.add_argument("--dry-run", action="store_true", help="print the plan and a cost estimate, run nothing")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_sweep)
    f = sub.add_parser("fit", help="fit the exchange rate of a cube and print the summary")
    f.add_argument("cube")
    f.add_argument("--source", default=None, help="synthetic source (default: every non-reference source)")
    f.add_argument("--reference", default="real")
    f.add_argument("--n-boot", type=int, default=2000)
    f.add_argument("--ci", type=float, default=0.95)
    _add_fit_options(f)
    f.set_defaults(func=_fit)
    g = sub.add_parser("figures", help="render every paper figure of a cube (PNG and PDF)")
    g.add_argument("cube")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--n-boot", type=int, default=1000)
    _add_fit_options(g)
    g.set_defaults(func=_figures)
    r = sub.add_parser("report", help="one Markdown page: answer, figures, summaries, pool quality, cost")
    r.add_argument("cube")
    r.add_argument("--out", required=True, help="output folder (report.md and figures/)")
    r.add_argument("--n-boot", type=int, default=1000)
    _add_fit_options(r)
    r.set_defaults(func=_report)
    m = sub.add_parser("simulate", help="write a cube with a planted exchange rate, for trying things")
    m.add_argument("--out", required=True)
    m.add_argument("--seeds", type=int, default=5)
    m.add_argument("--rho", type=float, default=4.0)
    m.add_argument("--random-state", type=int, default=0)
    m.add_argument("--overwrite", action="store_true")
    m.set_defaults(func=_simulate)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:  # config/cube/argument errors: one line
        print(f"scaling {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
