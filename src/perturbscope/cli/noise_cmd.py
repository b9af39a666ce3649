"""``perturbscope noise-training``: train with additive cube/ball noise and audit (paper Section 7.1.4)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from perturbscope.audit.config import AuditConfig
from perturbscope.cli import options as o
from perturbscope.cli.common import set_threads, use_device
from perturbscope.cli.main import UsageError
from perturbscope.experiments.noise_config import ARCHS, NOISE_KINDS, NoiseTrainingConfig, parse_pairs
from perturbscope.train_config import TrainConfig

N = NoiseTrainingConfig()


def _config(args: argparse.Namespace) -> NoiseTrainingConfig:
    try:
        pairs = parse_pairs(args.pairs)
    except ValueError as exc:
        raise UsageError(f"--pairs: {exc}") from None
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
    from perturbscope.experiments.noise import run_noise_training
    from perturbscope.report.noise import write_noise_outputs

    cfg = _config(args)
    set_threads(args.threads)
    device = use_device(args.device)
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
            res = run_noise_training(cfg, progress=not args.no_progress, device=device, on_unit=done,
                                     store=store, run_name=args.name)
        print(f"store: {args.store}, run {res.meta['run_id']} ({len(res.meta['resumed_units'])} "
              f"unit(s) read back from an earlier, interrupted invocation)")
    else:
        res = run_noise_training(cfg, progress=not args.no_progress, device=device, on_unit=done)
    res.meta["seconds"] = time.perf_counter() - t0
    paths = write_noise_outputs(res, out)
    print(paths["tables_text"])
    print(f"\nrecords: {paths['records']}\nsummary: {paths['summary']}\nplots:   "
          + ", ".join(str(p) for p in paths["figures"].values()) + f"\nreport:  {paths['report']}\n"
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
    limit = o.int_type(minimum=2)
    g = p.add_argument_group("data")
    o.DATA.add(g, default=N.source,
               help="data source (default: %(default)s; the paper used CIFAR-10, not available here)")
    o.DATA_PATH.add(g)
    g.add_argument("--pairs", nargs="+", default=[f"{i}-{j}" for i, j in N.pairs], metavar="I-J",
                   help="class pairs, e.g. 0-1 7-8, or 'all' for the nine i-(i+1) (default: %(default)s)")
    g.add_argument("--train-limit", type=limit, default=N.train_limit, metavar="N",
                   help="training images per pair (class balanced; default: all)")
    g.add_argument("--audit-limit", type=limit, default=N.audit_limit, metavar="N",
                   help="images audited per split (default: %(default)s; paper: all)")
    o.DATA_SEED.add(g, default=N.data_seed, help="seed of the image selection (default: %(default)s)")
    g = p.add_argument_group("noise")
    g.add_argument("--rhos", nargs="+", type=o.POSITIVE, default=list(N.rhos), metavar="RHO",
                   help="cube half-widths in pixel units, increasing; the ball of level k has R = rho_k "
                        "sqrt(d/3) (default: %(default)s; the paper's values are lost)")
    g.add_argument("--kinds", nargs="+", choices=NOISE_KINDS, default=list(N.kinds),
                   help="noise shapes (default: %(default)s)")
    g.add_argument("--no-clean", action="store_true", help="skip the noise-free baseline model")
    g = p.add_argument_group("model and training (paper: width 1, 100 epochs)")
    g.add_argument("--arch", choices=ARCHS, default=N.arch,
                   help="the paper's CNN, or a small MLP for quick checks (default: %(default)s)")
    o.WIDTH.add(g, default=N.width, help="CNN channel multiplier (default: %(default)s)")
    o.HIDDEN.add(g, default=list(N.hidden))
    o.EPOCHS.add(g, default=N.training.epochs)
    o.LR.add(g, default=N.training.lr)
    o.BATCH_SIZE.add(g, default=N.training.batch_size)
    o.SEED.add(g, default=N.training.seed, help="seed of init, batching and noise (default: %(default)s)")
    o.RESTARTS.add(g, default=N.restarts,
                   help="retrain a CNN that collapsed to one constant answer from a new seed, at most "
                        "this many times (default: %(default)s)")
    g = p.add_argument_group("audit (paper: 2000 draws, alphas 1 2 5 10, 256 steps)")
    o.ALPHAS.add(g, default=N.audit.alphas)
    o.DRAWS.add(g, default=N.audit.draws)
    o.STEPS.add(g, default=N.audit.steps)
    o.S_MAX.add(g, default=N.audit.s_max)
    o.PROBE_SEED.add(g, default=N.audit.seed)
    o.FORWARD_BATCH.add(g, default=N.audit.batch_size)
    o.STORE.add(p, help="results store (SQLite): each unit is saved as it finishes and a rerun of the same "
                        "command resumes; 'perturbscope report RUN --store FILE' reports it")
    o.RUN_NAME.add(p, default="noise-training", help="run name in the store (default: %(default)s)")
    o.add_runtime_args(p)
    o.OUT.add(p, required=True, help="folder for records.csv, summary.csv, tables.txt, plots and report.html")
    o.add_progress_arg(p)
    p.set_defaults(func=run)
