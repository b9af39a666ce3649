"""``perturbscope reproduce fashion-mnist``: the paper's Tables 20 and 21, resumable, side by side."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from perturbscope.audit import AuditConfig
from perturbscope.cli.common import add_progress_arg
from perturbscope.cli.main import UsageError
from perturbscope.experiments.executors import EXECUTORS, make_executor
from perturbscope.experiments.reproduce import DATASETS, ReproduceConfig, parse_pairs, run_reproduction
from perturbscope.experiments.store import ResultsStore
from perturbscope.experiments.tables import (
    format_table20,
    format_table21,
    protocol_note,
    table20_long,
    table21_long,
)
from perturbscope.fileio import atomic_write_text

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
    try:
        cfg = build_config(args)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {cfg.device}: no CUDA device is available to torch here")
    if args.threads:
        torch.set_num_threads(args.threads)
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
        summ = store.summaries(out.run_id)
        pairs = [f"{i}-{j}" for i, j in cfg.pairs]
        t20 = table20_long(summ, alphas=cfg.audit.alphas, pairs=pairs)
        t21 = table21_long(summ, pairs=pairs)
        text = "\n\n".join([note, format_table20(t20), format_table21(t21)])
        print("\n" + text.split("\n\n", 1)[1])
        if args.out:
            o = Path(args.out)
            atomic_write_text(o / "tables.txt", text + "\n")
            atomic_write_text(o / "table20.csv", t20.to_csv(index=False))
            atomic_write_text(o / "table21.csv", t21.to_csv(index=False))
            atomic_write_text(o / "summaries.csv", summ.to_csv(index=False))
            print(f"\ntables: {o / 'tables.txt'}, {o / 'table20.csv'}, {o / 'table21.csv'}")
        if args.export:
            fmt = "parquet" if str(args.export).endswith(".parquet") else "csv"
            print(f"records: {store.export(out.run_id, args.export, fmt=fmt)}")
    if out.units_failed:
        print(f"{len(out.units_failed)} units failed (kept as 'failed' in the store); run the same command "
              "again to retry them")
        return 1
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="the paper's Fashion-MNIST tables (20, 21): train + audit 9 pairs, resumable",
        description="Train the paper's network on each pair 'class i vs i+1' and audit it on train and test "
                    "images; print Tables 20 and 21 with the paper's values and the differences. Results "
                    "go to a SQLite store as each unit (pair x split) finishes: rerunning the same command "
                    "after an interruption continues where it stopped; a changed setting starts a new run. "
                    "Default: a SCALED-DOWN protocol for a CPU (2000 training images, 100 audited images per "
                    "split, 8 epochs, batch 64, width 0.25, 200 draws); --full is the paper's.")
    p.add_argument("experiment", choices=("fashion-mnist",), help="experiment to reproduce")
    g = p.add_argument_group("scale (defaults: scaled-down preset, or the paper's with --full)")
    g.add_argument("--full", action="store_true",
                   help="the paper's protocol: all images, width 1, 100 epochs, 2000 draws (days on a CPU)")
    g.add_argument("--pairs", nargs="+", default=None, metavar="I-J",
                   help="pairs to run, 'I-J' or 'I' for I vs I+1 (default: 0-1 ... 8-9)")
    g.add_argument("--train-images", type=_count_or_all, default=False, metavar="N|all",
                   help="training images per pair (scaled default 2000; paper: all)")
    g.add_argument("--images", type=_count_or_all, default=False, metavar="N|all",
                   help="images audited per split (scaled default 100; paper: all)")
    g.add_argument("--epochs", type=int, default=None, help="training epochs (scaled default 8; paper 100)")
    g.add_argument("--width", type=float, default=None,
                   help="channel multiplier of the network (scaled default 0.25; paper 1.0)")
    g.add_argument("--draws", type=int, default=None,
                   help="random draws per image and alpha (scaled default 200; paper 2000)")
    g.add_argument("--steps", type=int, default=None, help="line-search scales (paper: 256)")
    g.add_argument("--s-max", type=float, default=None, help="largest line-search L2 scale (default 10)")
    g.add_argument("--alphas", nargs="+", type=float, default=None, help="random sizes / eps_adv (1 2 5 10)")
    g.add_argument("--batch-size", type=int, default=None, help="SGD batch (scaled default 64; paper: 128)")
    g.add_argument("--lr", type=float, default=None, help="initial learning rate (paper: 0.1)")
    g.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    g.add_argument("--restarts", type=int, default=None,
                   help="retrain a pair from a new seed if training collapses to one class, at most N "
                        "times (scaled default 2; paper 0)")
    g.add_argument("--init", choices=("glorot", "torch"), default=None,
                   help="initial weights (default glorot, the paper's Keras default)")
    g.add_argument("--probe-seed", type=int, default=None, help="seed of the random draws (default 0)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the image subsets (default 0)")
    g.add_argument("--forward-batch", type=int, default=None, help="inputs per forward pass (default 256)")
    d = p.add_argument_group("data and execution")
    d.add_argument("--data", choices=DATASETS, default="fashion-mnist",
                   help="full Fashion-MNIST (IDX files) or the subset shipped with perturbscope "
                        "(default: %(default)s)")
    d.add_argument("--data-path", default=None, metavar="DIR",
                   help="folder of the Fashion-MNIST IDX files (default: auto-detected)")
    d.add_argument("--store", default=DEFAULT_STORE, metavar="PATH",
                   help="SQLite results store (default: %(default)s)")
    d.add_argument("--name", default=None, help="name of a new run (default: the experiment)")
    d.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="run jobs here (local) or on a Ray cluster (needs perturbscope[ray])")
    d.add_argument("--ray-address", default=None,
                   help="Ray cluster to join, e.g. auto or ray://head:10001 (default: start a local one)")
    d.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray instance")
    d.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    d.add_argument("--threads", type=int, default=None, help="torch threads per job (default: torch's)")
    d.add_argument("--out", default=None, metavar="DIR", help="also write the tables (txt, csv) here")
    d.add_argument("--export", default=None, metavar="FILE",
                   help="also export the run's records (.csv or .parquet)")
    add_progress_arg(p)
    p.set_defaults(func=run)
