"""``perturbscope reproduce fashion-mnist``: the paper's Tables 20 and 21, resumable, side by side."""

from __future__ import annotations

import argparse
from dataclasses import replace

from perturbscope.audit.config import AuditConfig
from perturbscope.cli import options as o
from perturbscope.cli.common import set_threads, use_device
from perturbscope.cli.main import UsageError
from perturbscope.experiments.executors import EXECUTORS
from perturbscope.experiments.reproduce_config import DATASETS, ReproduceConfig, parse_pairs

DEFAULT_STORE = "perturbscope-results.sqlite"


def _count_or_all(text: str) -> int | None:
    if text.lower() == "all":
        return None
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', got {text!r}") from None
    if v < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 images or 'all', got {v}")
    return v


def build_config(args: argparse.Namespace) -> ReproduceConfig:
    """The run's :class:`ReproduceConfig`: the preset (``--full`` or scaled-down) with the flags given."""
    base = ReproduceConfig.paper() if args.full else ReproduceConfig.scaled_down()
    tr = base.train
    tr = replace(tr, **{k: v for k, v in (("epochs", args.epochs), ("lr", args.lr),
                                           ("batch_size", args.batch_size), ("seed", args.seed))
                        if v is not None})
    au = base.audit
    changes = {k: v for k, v in (("draws", args.draws), ("steps", args.steps), ("s_max", args.s_max),
                                 ("seed", args.probe_seed), ("batch_size", args.forward_batch))
               if v is not None}
    if args.alphas is not None:
        changes["alphas"] = tuple(float(a) for a in args.alphas)
    au = AuditConfig(**{**au.__dict__, **changes})
    cfg = replace(base, source=args.data, train=tr, audit=au, device=args.device,
                  data_seed=args.data_seed)
    if args.pairs is not None:
        cfg = replace(cfg, pairs=parse_pairs(args.pairs))
    if args.train_images is not False:
        cfg = replace(cfg, train_images=args.train_images)
    if args.images is not False:
        cfg = replace(cfg, audit_images=args.images)
    if args.width is not None:
        cfg = replace(cfg, width=args.width)
    if args.restarts is not None:
        cfg = replace(cfg, restarts=args.restarts)
    if args.init is not None:
        cfg = replace(cfg, init=args.init)
    return cfg.validated()


def run(args: argparse.Namespace) -> int:
    from perturbscope.experiments.executors import make_executor
    from perturbscope.experiments.reproduce import (
        reproduction_tables,
        run_reproduction,
        write_reproduction_tables,
    )
    from perturbscope.experiments.store import ResultsStore
    from perturbscope.experiments.tables import protocol_note

    try:
        cfg = build_config(args)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    use_device(cfg.device)  # the jobs move the model and inputs there
    set_threads(args.threads)
    kwargs = {}
    if args.executor == "ray":
        kwargs = {"address": args.ray_address, "num_cpus": args.ray_cpus,
                  "gpus_per_job": 1.0 if cfg.device.startswith("cuda") else 0.0}
    try:
        executor = make_executor(args.executor, **kwargs)
    except (ImportError, ConnectionError, RuntimeError) as exc:  # no Ray, or no cluster at --ray-address
        raise UsageError(f"cannot start the {args.executor} executor: {exc}") from exc
    note = protocol_note(cfg.to_dict())
    print(f"perturbscope reproduce {args.experiment}: {len(cfg.pairs)} pairs x {len(cfg.splits)} splits, "
          f"executor {args.executor}, store {args.store}\n{note}")
    with ResultsStore(args.store) as store:
        try:
            out = run_reproduction(cfg, store, executor=executor, name=args.name or args.experiment,
                                   data_path=args.data_path, threads=args.threads,
                                   progress=not args.no_progress)
        finally:
            executor.close()
        name = store.run_name(out.run_id)
        print(f"run {name} ({out.run_id}): {'new' if out.created else 'resumed'}; "
              f"{len(out.units_run)} units run, {out.units_skipped} already done, "
              f"{len(out.models_trained)} models trained, {out.seconds:.1f} s")
        for k in out.units_failed:
            err = store.units(out.run_id).set_index("unit_key").loc[k, "meta"].get("error")
            print(f"FAILED {k}: {err}")
        tables = reproduction_tables(store, out.run_id, cfg)
        print("\n" + tables["text"].split("\n\n", 1)[1])
        if args.out:
            files = write_reproduction_tables(args.out, tables)
            print(f"\ntables: {files['tables']}, {files['table20']}, {files['table21']}")
        if args.export:
            print(f"records: {store.export(out.run_id, args.export)}")
    if out.units_failed:
        print(f"{len(out.units_failed)} units failed (kept as 'failed' in the store); run the same command "
              "again to retry them")
        return 1
    return 0


def _scaled(get) -> str:
    """``scaled default X; paper Y`` of one setting, read from the two presets."""
    def fmt(v):
        return "all" if v is None else o.format_default(v)
    return f"scaled default {fmt(get(o.SCALED))}; paper {fmt(get(o.PAPER))}"


def register(sub) -> None:
    sc, pa = o.SCALED, o.PAPER
    p = sub.add_parser(
        "reproduce", help="the paper's Fashion-MNIST tables (20, 21): train + audit 9 pairs, resumable",
        description="Train the paper's network on each pair 'class i vs i+1' and audit it on train and test "
                    "images; print Tables 20 and 21 with the paper's values and the differences. Results "
                    "go to a SQLite store as each unit (pair x split) finishes: rerunning the same command "
                    "after an interruption continues where it stopped; a changed setting starts a new run. "
                    f"Default: a SCALED-DOWN protocol for a CPU ({sc.train_images} training images, "
                    f"{sc.audit_images} audited images per split, {sc.train.epochs} epochs, batch "
                    f"{sc.train.batch_size}, width {sc.width:g}, {sc.audit.draws} draws); --full is the "
                    "paper's.")
    p.add_argument("experiment", choices=("fashion-mnist",), help="experiment to reproduce")
    g = p.add_argument_group("scale (defaults: scaled-down preset, or the paper's with --full)")
    g.add_argument("--full", action="store_true",
                   help=f"the paper's protocol: all images, width {pa.width:g}, {pa.train.epochs} epochs, "
                        f"{pa.audit.draws} draws (days on a CPU)")
    g.add_argument("--pairs", nargs="+", default=None, metavar="I-J",
                   help="pairs to run, 'I-J' or 'I' for I vs I+1 (default: 0-1 ... 8-9)")
    g.add_argument("--train-images", type=_count_or_all, default=False, metavar="N|all",
                   help=f"training images per pair ({_scaled(lambda c: c.train_images)})")
    g.add_argument("--images", type=_count_or_all, default=False, metavar="N|all",
                   help=f"images audited per split ({_scaled(lambda c: c.audit_images)})")
    # the preset's value when not given (default None)
    o.EPOCHS.add(g, default=None, help=f"training epochs ({_scaled(lambda c: c.train.epochs)})")
    o.WIDTH.add(g, default=None,
                help=f"channel multiplier of the network ({_scaled(lambda c: c.width)})")
    o.DRAWS.add(g, default=None,
                help=f"random draws per image and alpha ({_scaled(lambda c: c.audit.draws)})")
    o.STEPS.add(g, default=None, help=f"line-search scales ({_scaled(lambda c: c.audit.steps)})")
    o.S_MAX.add(g, default=None, help=f"largest line-search L2 scale, pixel units "
                                      f"({_scaled(lambda c: c.audit.s_max)})")
    o.ALPHAS.add(g, default=None, help=f"random sizes / eps_adv ({_scaled(lambda c: c.audit.alphas)})")
    o.BATCH_SIZE.add(g, default=None, help=f"SGD batch ({_scaled(lambda c: c.train.batch_size)})")
    o.LR.add(g, default=None, help=f"initial learning rate ({_scaled(lambda c: c.train.lr)})")
    o.SEED.add(g, default=None, help=f"training seed ({_scaled(lambda c: c.train.seed)})")
    o.RESTARTS.add(g, default=None,
                   help="retrain a pair from a new seed if training collapses to one class, at most N "
                        f"times ({_scaled(lambda c: c.restarts)})")
    o.INIT.add(g, default=None,
               help=f"initial weights ({_scaled(lambda c: c.init)}, the paper's Keras default)")
    o.PROBE_SEED.add(g, default=None, help=f"seed of the random draws ({_scaled(lambda c: c.audit.seed)})")
    o.DATA_SEED.add(g, default=sc.data_seed, help="seed of the image subsets (default: %(default)s)")
    o.FORWARD_BATCH.add(g, default=None,
                        help=f"inputs per forward pass ({_scaled(lambda c: c.audit.batch_size)})")
    d = p.add_argument_group("data and execution")
    o.DATA.add(d, choices=DATASETS, default=sc.source,
               help="full Fashion-MNIST (IDX files) or the subset shipped with perturbscope "
                    "(default: %(default)s)")
    o.DATA_PATH.add(d, help="folder of the Fashion-MNIST IDX files (default: auto-detected)")
    o.STORE.add(d, default=DEFAULT_STORE, metavar="PATH", help="SQLite results store (default: %(default)s)")
    o.RUN_NAME.add(d, help="name of a new run (default: the experiment)")
    d.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="run jobs here (local) or on a Ray cluster (needs perturbscope[ray])")
    d.add_argument("--ray-address", default=None,
                   help="Ray cluster to join, e.g. auto or ray://head:10001 (default: start a local one)")
    d.add_argument("--ray-cpus", type=o.COUNT, default=None, help="CPUs of a local Ray instance")
    o.DEVICE.add(d, default=sc.device)
    o.THREADS.add(d, help="torch threads per job (default: %(default)s)")
    o.OUT.add(d, help="also write the tables (txt, csv) here")
    d.add_argument("--export", default=None, metavar="FILE",
                   help="also export the run's records (.csv or .parquet)")
    o.add_progress_arg(p)
    p.set_defaults(func=run)
