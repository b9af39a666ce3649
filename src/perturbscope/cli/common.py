"""Argument groups and helpers shared by several subcommands."""

from __future__ import annotations

import argparse

import torch

DATA_SOURCES = ("fashion-mnist-subset", "fashion-mnist", "digits")


def add_data_args(p: argparse.ArgumentParser, classes_required: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", choices=DATA_SOURCES, default="fashion-mnist-subset",
                   help="data source: the Fashion-MNIST subset shipped in the repo (no network), the "
                        "full Fashion-MNIST (IDX files; see --data-path), or scikit-learn's 8x8 digits "
                        "(default: %(default)s)")
    g.add_argument("--data-path", default=None, metavar="DIR",
                   help="folder holding the Fashion-MNIST IDX files (default: $PERTURBSCOPE_FASHION_MNIST, "
                        "then the Debian package's install path)")
    g.add_argument("--classes", nargs=2, type=int, metavar=("I", "J"), required=classes_required,
                   help="binary task 'class I vs class J': label 0 for I, 1 for J")
    g.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use at most N images per split (seeded, class-balanced choice; default: all)")
    g.add_argument("--data-seed", type=int, default=0, metavar="S",
                   help="seed of the --limit selection (default: %(default)s)")


def load_task(args: argparse.Namespace, split: str, classes: tuple[int, int] | None = None):
    """The :class:`~perturbscope.data.tasks.PairTask` that the data arguments name."""
    from perturbscope.data import load_pair_task

    i, j = classes if classes is not None else args.classes
    return load_pair_task(args.data, split, i, j, path=args.data_path, limit=args.limit,
                          seed=args.data_seed)


def add_progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)
