"""``perturbscope report RUN``: one self-contained HTML report of a run of the results store."""

from __future__ import annotations

import argparse
from pathlib import Path

from perturbscope.cli import options as o
from perturbscope.cli.common import set_threads, use_device
from perturbscope.cli.main import UsageError


def run(args: argparse.Namespace) -> int:
    from perturbscope.report.html import build_run_report

    if not str(args.store).strip():
        raise UsageError("--store is empty; give the results store file of the run, e.g. "
                         "perturbscope-results.sqlite")
    store = Path(args.store)
    if store.is_dir():
        raise UsageError(f"--store {store} is a folder; give the results store file (SQLite) of the run")
    if not store.is_file():
        raise UsageError(f"--store {store}: no such results store (run 'perturbscope reproduce' first)")
    set_threads(args.threads)
    device = use_device(args.device)
    out = build_run_report(store, args.run, args.out, panels=not args.no_panels,
                           max_panels=args.max_panels, data_path=args.data_path,
                           paper=None if args.no_paper else "auto", device=device)
    print(f"report: {out} ({out.stat().st_size / 1e6:.2f} MB, self-contained)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="self-contained HTML report of a run (tables, plots, config, versions)",
                       description="Write one HTML file with the run's tables beside the paper's values, "
                                   "violin plots of adversarial and random perturbation norms (Figures 17, "
                                   "18), an image panel per pair (Figures 11, 12; from the stored models), "
                                   "the configuration and the software versions. Plots are embedded.")
    p.add_argument("run", metavar="RUN", help="run id, run name, or an unambiguous prefix")
    o.STORE.add(p, required=True, help="results store (SQLite) of the run")
    o.OUT.add(p, default="report.html", metavar="FILE.html", type=o.out_file_type(".html", ".htm"),
              help="the HTML file (default: %(default)s)")
    p.add_argument("--no-panels", action="store_true", help="skip the image panels (they recompute one "
                                                           "image per pair and need the data set)")
    p.add_argument("--max-panels", type=o.NONNEG_INT, default=None, metavar="N",
                   help="panels for the first N pairs (default: all)")
    o.DATA_PATH.add(p, help="Fashion-MNIST IDX folder, for panels")
    p.add_argument("--no-paper", action="store_true", help="leave out the paper's values")
    o.add_runtime_args(p)  # the image panels run the stored models
    p.set_defaults(func=run)
