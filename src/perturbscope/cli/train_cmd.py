"""``perturbscope train``: train the paper's pair CNN on a binary task and save a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from perturbscope.cli.common import add_data_args, add_progress_arg, load_task
from perturbscope.data import load_pair_task
from perturbscope.models.checkpoint import save_checkpoint
from perturbscope.models.runtime import predict
from perturbscope.train import TrainConfig, train_pair_model


def add_training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and training (paper: width 1, 100 epochs, lr 0.1 halved every 20)")
    g.add_argument("--width", type=float, default=0.25,
                   help="channel multiplier of the paper's network; 1.0 = the paper's (default: %(default)s)")
    g.add_argument("--deep", action="store_true",
                   help="keep Conv-5/6 (the paper's CIFAR-10 network; Fashion-MNIST drops them)")
    g.add_argument("--dropout", type=float, default=0.4,
                   help="dropout after every conv layer, active in training only (paper: 0.4)")
    g.add_argument("--init", choices=("glorot", "torch"), default="glorot",
                   help="weight initialisation: Glorot-uniform as the paper's Keras code, or PyTorch's "
                        "default (default: %(default)s)")
    g.add_argument("--restarts", type=int, default=2,
                   help="retrain from a new seed when training collapses to a constant answer, at most "
                        "this many times (default: %(default)s)")
    g.add_argument("--epochs", type=int, default=10, help="training epochs (default: %(default)s)")
    g.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=128, help="images per SGD step (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation and batching (default: 0)")
    g.add_argument("--noise", choices=("none", "cube", "ball"), default="none",
                   help="additive training noise: uniform in the cube [-s, s]^d or the L2 ball of radius s")
    g.add_argument("--noise-size", type=float, default=0.0, metavar="S",
                   help="noise size s in pixel units (cube half-width, or ball radius)")


def training_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                       noise=None if args.noise == "none" else args.noise, noise_size=args.noise_size)


def fit(args: argparse.Namespace, out: Path, train_limit: int | None | str = "same"):
    """Train on the train split, save to ``out`` with the test accuracy; returns (model, meta).

    ``train_limit`` caps the training images (``"same"``: the ``--limit`` of the audit).
    """
    limit = args.limit if train_limit == "same" else train_limit
    train = load_pair_task(args.data, "train", *args.classes, path=args.data_path, limit=limit,
                           seed=args.data_seed)
    test = load_task(args, "test")
    model, hist = train_pair_model(train.x, train.y, width=args.width, deep=args.deep, dropout=args.dropout,
                                   init=args.init, config=training_config(args),
                                   progress=not args.no_progress, restarts=args.restarts)
    if hist.attempts > 1:
        print(f"training collapsed to a constant answer {hist.attempts - 1} time(s); "
              f"kept the run with seed {hist.seed}")
    acc = {name: 100.0 * float((predict(model, t.x, "sigmoid") == t.y).double().mean())
           for name, t in (("train", train), ("test", test))}
    meta = {"data": args.data, "classes": list(train.classes), "class_names": list(train.class_names),
            "limit": args.limit, "train_images": int(train.y.numel()), "dropout": args.dropout,
            "init": args.init, "width": args.width, "deep": args.deep,
            "training": vars(training_config(args)), "history": vars(hist), "accuracy": acc}
    save_checkpoint(model, out, meta)
    return model, meta


def run(args: argparse.Namespace) -> int:
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
    add_data_args(p)
    add_training_args(p)
    p.add_argument("--out", required=True, metavar="FILE.pt", help="checkpoint to write")
    add_progress_arg(p)
    p.set_defaults(func=run)
