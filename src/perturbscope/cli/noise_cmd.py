"""``perturbscope noise-training``: train with additive cube/ball noise and audit (paper Section 7.1.4)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from perturbscope.audit import AuditConfig
from perturbscope.cli.common import DATA_SOURCES, add_progress_arg, set_threads
from perturbscope.cli.main import UsageError
from perturbscope.experiments.noise import NoiseTrainingConfig, parse_pairs, run_noise_training
from perturbscope.train import TrainConfig


def _config(args: argparse.Namespace) -> NoiseTrainingConfig:
    try:
        pairs = parse_pairs(args.pairs)
    except ValueError as exc:
        raise UsageError(f"--pairs: {exc}") from None
    for name in ("train_limit", "audit_limit"):
        v = getattr(args, name)
        if v is not None and v < 2:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 2, got {v}")
    if args.draws < 1 or args.epochs < 1:
        raise UsageError("--draws and --epochs must be >= 1")
    cfg = NoiseTrainingConfig(
        source=args.data, pairs=pairs, rhos=tuple(args.rhos), kinds=tuple(args.kinds),
        include_clean=not args.no_clean, train_limit=args.train_limit, audit_limit=args.audit_limit,
        data_path=args.data_path, data_seed=args.data_seed, arch=args.arch, width=args.width,
        hidden=tuple(args.hidden), restarts=args.restarts,
        training=TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed),
        audit=AuditConfig(alphas=tuple(args.alphas), draws=args.draws, seed=args.probe_seed,
                          s_max=args.s_max, steps=args.steps, batch_size=args.forward_batch))
    cfg.validate()
    return cfg


def run(args: argparse.Namespace) -> int:
    from perturbscope.report.html import noise_report
    from perturbscope.report.plots import plot_noise_curves

    cfg = _config(args)
    set_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    n_levels = len(cfg.rhos) * len(cfg.kinds) + int(cfg.include_clean)
    print(f"noise training: {len(cfg.pairs)} pair(s) x {n_levels} noise level(s) = "
          f"{len(cfg.pairs) * n_levels} models ({cfg.arch}, {cfg.training.epochs} epochs); "
          f"audit of {cfg.audit_limit or 'all'} images per split, {cfg.audit.draws} draws")
    t0 = time.perf_counter()

    def done(pair, level, rec):
        acc = 100.0 * rec.groupby("split")["correct"].mean()
        print(f"  {pair} {level.describe()}: accuracy " +
              ", ".join(f"{s} {v:.2f}%" for s, v in acc.items()), flush=True)

    if args.store:
        from perturbscope.experiments.store import ResultsStore

        with ResultsStore(args.store) as store:
            res = run_noise_training(cfg, progress=not args.no_progress, device=args.device, on_unit=done,
                                     store=store, run_name=args.name)
        print(f"store: {args.store}, run {res.meta['run_id']} ({len(res.meta['resumed_units'])} "
              f"unit(s) read back from an earlier, interrupted invocation)")
    else:
        res = run_noise_training(cfg, progress=not args.no_progress, device=args.device, on_unit=done)
    res.meta["seconds"] = time.perf_counter() - t0
    paths = res.save(out)
    figures = {}
    for kind, fig in (("cube", 15), ("ball", 16)):
        if kind in cfg.kinds:
            p = plot_noise_curves(res.summary, kind, out / f"noise_{kind}.png")
            figures[f"Noise uniform in the {kind} against its size (paper Figure {fig})"] = p
    tables = res.tables()
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        text = "\n\n".join(f"== noise {name} ==\n{t.to_string()}" for name, t in tables.items())
    (out / "tables.txt").write_text(text + "\n")
    print(text)
    report = noise_report(res, figures).write(out / "report.html")
    print(f"\nrecords: {paths['records']}\nsummary: {paths['summary']}\nplots:   "
          + ", ".join(str(p) for p in figures.values()) + f"\nreport:  {report}\n"
          f"time: {res.meta['seconds']:.1f} s")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "noise-training", help="train with additive cube/ball noise, then audit (paper Section 7.1.4)",
        description="For each pair and noise level, train the paper's network with fresh additive noise "
                    "on every training image, uniform in the cube [-rho, rho]^d or in the L2 ball of "
                    "radius R = rho*sqrt(d/3) (same mean L2 norm), then measure accuracy, adversarial "
                    "susceptibility, attack norms and random susceptibility (Tables 13-18, Figures "
                    "15-16). Defaults are scaled down for a CPU; the paper's protocol is --width 1 "
                    "--epochs 100 --draws 2000 with all images. Norms in pixel units of [0, 1].")
    g = p.add_argument_group("data")
    g.add_argument("--data", choices=DATA_SOURCES, default="fashion-mnist-subset",
                   help="data source (default: %(default)s; the paper used CIFAR-10, not available here)")
    g.add_argument("--data-path", default=None, metavar="DIR", help="Fashion-MNIST IDX folder")
    g.add_argument("--pairs", nargs="+", default=["7-8"], metavar="I-J",
                   help="class pairs, e.g. 0-1 7-8, or 'all' for the nine i-(i+1) (default: 7-8)")
    g.add_argument("--train-limit", type=int, default=None, metavar="N",
                   help="training images per pair (class balanced; default: all)")
    g.add_argument("--audit-limit", type=int, default=200, metavar="N",
                   help="images audited per split (default: %(default)s; paper: all)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the image selection (default: 0)")
    g = p.add_argument_group("noise")
    g.add_argument("--rhos", nargs="+", type=float, default=[0.05, 0.1, 0.2], metavar="RHO",
                   help="cube half-widths, increasing; the ball of level k has R = rho_k sqrt(d/3) "
                        "(default: 0.05 0.1 0.2; the paper's values are lost)")
    g.add_argument("--kinds", nargs="+", choices=("cube", "ball"), default=["cube", "ball"],
                   help="noise shapes (default: cube ball)")
    g.add_argument("--no-clean", action="store_true", help="skip the noise-free baseline model")
    g = p.add_argument_group("model and training (paper: width 1, 100 epochs)")
    g.add_argument("--arch", choices=("cnn", "mlp"), default="cnn",
                   help="the paper's CNN, or a small MLP for quick checks (default: cnn)")
    g.add_argument("--width", type=float, default=0.25, help="CNN channel multiplier (default: 0.25)")
    g.add_argument("--hidden", nargs="+", type=int, default=[64], help="MLP hidden sizes (default: 64)")
    g.add_argument("--epochs", type=int, default=20, help="training epochs (default: %(default)s)")
    g.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default: 0.1)")
    g.add_argument("--batch-size", type=int, default=128, help="SGD batch size (default: 128)")
    g.add_argument("--seed", type=int, default=0, help="seed of init, batching and noise (default: 0)")
    g.add_argument("--restarts", type=int, default=2,
                   help="retrain a CNN that collapsed to one constant answer from a new seed, at most "
                        "this many times (default: %(default)s)")
    g = p.add_argument_group("audit (paper: 2000 draws, alphas 1 2 5 10, 256 steps)")
    g.add_argument("--alphas", nargs="+", type=float, default=[1.0, 2.0, 5.0, 10.0])
    g.add_argument("--draws", type=int, default=500, help="random vectors per image (default: 500)")
    g.add_argument("--steps", type=int, default=256, help="line-search scales (default: 256)")
    g.add_argument("--s-max", type=float, default=10.0, help="largest line-search L2 scale (default: 10)")
    g.add_argument("--probe-seed", type=int, default=0, help="seed of the random vectors (default: 0)")
    g.add_argument("--forward-batch", type=int, default=256, help="inputs per forward pass (default: 256)")
    p.add_argument("--store", default=None, metavar="FILE",
                   help="results store (SQLite): each unit is saved as it finishes and a rerun of the same "
                        "command resumes; 'perturbscope report RUN --store FILE' reports it")
    p.add_argument("--name", default="noise-training", help="run name in the store (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for records.csv, summary.csv, tables.txt, plots and report.html")
    add_progress_arg(p)
    p.set_defaults(func=run)
