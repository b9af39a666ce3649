"""``perturbscope train``: train the paper's pair CNN on a binary task and save a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from perturbscope.cli import options as o
from perturbscope.cli.common import load_task, set_threads, use_device
from perturbscope.train_config import TrainConfig


def add_training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and training (paper: width 1, 100 epochs, lr 0.1 halved every 20)")
    o.WIDTH.add(g)
    o.DEEP.add(g)
    o.DROPOUT.add(g)
    o.INIT.add(g)
    o.RESTARTS.add(g)
    o.EPOCHS.add(g)
    o.LR.add(g)
    o.BATCH_SIZE.add(g)
    o.SEED.add(g, default=o.TRAIN.seed, help="seed of initialisation and batching (default: %(default)s)")
    o.NOISE.add(g)
    o.NOISE_SIZE.add(g)


def training_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                       noise=None if args.noise == "none" else args.noise, noise_size=args.noise_size)


def fit(args: argparse.Namespace, out: Path, train_limit: int | None | str = "same"):
    """Train on the train split, save to ``out`` with the test accuracy; returns (model, meta).

    ``train_limit`` caps the training images (``"same"``: the ``--limit`` of the audit).
    """
    from perturbscope.data import load_pair_task
    from perturbscope.models.checkpoint import save_checkpoint
    from perturbscope.models.classifier import as_classifier
    from perturbscope.train import train_pair_model

    device = use_device(args.device)
    limit = args.limit if train_limit == "same" else train_limit
    train = load_pair_task(args.data, "train", *args.classes, path=args.data_path, limit=limit,
                           seed=args.data_seed)
    test = load_task(args, "test")
    model, hist = train_pair_model(train.x, train.y, width=args.width, deep=args.deep, dropout=args.dropout,
                                   init=args.init, config=training_config(args),
                                   progress=not args.no_progress, restarts=args.restarts, device=device)
    if hist.attempts > 1:
        print(f"training collapsed to a constant answer {hist.attempts - 1} time(s); "
              f"kept the run with seed {hist.seed}")
    acc = {name: 100.0 * float((as_classifier(model, "sigmoid").predict(t.x).cpu() == t.y).double().mean())
           for name, t in (("train", train), ("test", test))}
    meta = {"data": args.data, "input_shape": list(train.x.shape[1:]), "classes": list(train.classes),
            "class_names": list(train.class_names),
            "limit": args.limit, "train_images": int(train.y.numel()), "dropout": args.dropout,
            "init": args.init, "width": args.width, "deep": args.deep,
            "training": vars(training_config(args)), "history": vars(hist), "accuracy": acc}
    save_checkpoint(model, out, meta)
    return model, meta


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    out = Path(args.out)
    _, meta = fit(args, out)
    names = meta["class_names"]
    print(f"trained {names[0]} (0) vs {names[1]} (1): accuracy train {meta['accuracy']['train']:.2f}%, "
          f"test {meta['accuracy']['test']:.2f}%; final MSE {meta['history']['loss'][-1]:.4f}")
    print(f"checkpoint: {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train the paper's binary CNN on 'class I vs class J'",
                       description="Train the paper's truncated-VGG binary CNN (sigmoid output, MSE loss, "
                                   "SGD + Nesterov 0.9) on a pair task and save a weights-only checkpoint.")
    o.add_data_args(p)
    add_training_args(p)
    o.add_runtime_args(p)
    o.OUT.add(p, required=True, metavar="FILE.pt", type=o.out_file_type(), help="checkpoint to write")
    o.add_progress_arg(p)
    p.set_defaults(func=run)
