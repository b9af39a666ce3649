"""``perturbscope report RUN``: one self-contained HTML report of a run of the results store."""

from __future__ import annotations

import argparse
from pathlib import Path

from perturbscope.cli.main import UsageError


def run(args: argparse.Namespace) -> int:
    from perturbscope.report.html import build_run_report

    store = Path(args.store)
    if not store.is_file():
        raise UsageError(f"--store {store}: no such results store (run 'perturbscope reproduce' first)")
    if args.max_panels is not None and args.max_panels < 0:
        raise UsageError(f"--max-panels must be >= 0, got {args.max_panels}")
    out = build_run_report(store, args.run, args.out, panels=not args.no_panels,
                           max_panels=args.max_panels, data_path=args.data_path,
                           paper=None if args.no_paper else "auto")
    print(f"report: {out} ({out.stat().st_size / 1e6:.2f} MB, self-contained)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="self-contained HTML report of a run (tables, plots, config, versions)",
                       description="Write one HTML file with the run's tables beside the paper's values, "
                                   "violin plots of adversarial and random perturbation norms (Figures 17, "
                                   "18), an image panel per pair (Figures 11, 12; from the stored models), "
                                   "the configuration and the software versions. Plots are embedded.")
    p.add_argument("run", metavar="RUN", help="run id, run name, or an unambiguous prefix")
    p.add_argument("--store", required=True, metavar="FILE", help="results store (SQLite) of the run")
    p.add_argument("--out", default="report.html", metavar="FILE.html", help="(default: %(default)s)")
    p.add_argument("--no-panels", action="store_true", help="skip the image panels (they recompute one "
                                                           "image per pair and need the data set)")
    p.add_argument("--max-panels", type=int, default=None, metavar="N", help="panels for the first N pairs")
    p.add_argument("--data-path", default=None, metavar="DIR", help="Fashion-MNIST IDX folder, for panels")
    p.add_argument("--no-paper", action="store_true", help="leave out the paper's values")
    p.set_defaults(func=run)
