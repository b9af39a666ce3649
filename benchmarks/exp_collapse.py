"""Issue 17: how often does the paper's training protocol collapse at width 1, and why?

Trains the paper's network (width 1) on the full Fashion-MNIST 7-vs-8 training pair (12,000
images) for a few epochs, for several seeds and variants of the protocol, and records per epoch
the training loss, the training accuracy seen during training, the eval-mode accuracy on 2,000
training images and the logit statistics in train and eval mode. A run is "collapsed" when its
eval-mode accuracy is within 1 point of the majority-class rate (perturbscope.train.is_collapsed).

Resumable: one JSON line per (variant, seed) in --out; finished runs are skipped.

    python benchmarks/exp_collapse.py --variants paper torch-init no-last-dropout lr0.01 \
        --seeds 0 1 2 3 4 5 6 7 --epochs 2 --out benchmarks/results/collapse.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from perturbscope.data import load_pair_task
from perturbscope.models import PairCNN
from perturbscope.train import TrainConfig, train_binary


def build(variant: str) -> tuple[nn.Module, TrainConfig]:
    """The model and training settings of one variant (all else the paper's protocol)."""
    cfg = TrainConfig(epochs=1)
    if variant == "paper":
        return PairCNN(width=1.0), cfg
    if variant == "torch-init":
        return PairCNN(width=1.0, init="torch"), cfg
    if variant == "no-dropout":
        return PairCNN(width=1.0, dropout=0.0), cfg
    if variant == "no-last-dropout":  # dropout after conv 1-3 only, none before the global max pool
        m = PairCNN(width=1.0)
        m.features[-1] = nn.Identity()
        return m, cfg
    if variant.startswith("lr"):
        return PairCNN(width=1.0), TrainConfig(epochs=1, lr=float(variant[2:]))
    raise ValueError(f"unknown variant {variant!r}")


@torch.inference_mode()
def stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    out = {}
    was = model.training
    for mode in ("train", "eval"):
        model.train(mode == "train")
        z = torch.cat([model.logit(x[i:i + 500]) for i in range(0, x.shape[0], 500)])
        acc = float(((z >= 0).long() == y).double().mean())
        out[mode] = {"acc": 100 * acc, "z_mean0": float(z[y == 0].mean()), "z_mean1": float(z[y == 1].mean()),
                     "z_sd": float(z.std()), "saturated": float((z.abs() > 17).double().mean())}
    model.train(was)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["paper"])
    ap.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/collapse.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["variant"], r["seed"], r["epochs"]))
    task = load_pair_task("fashion-mnist", "train", 7, 8)
    gen = torch.Generator().manual_seed(123)
    probe = torch.randperm(task.x.shape[0], generator=gen)[:2000]
    xp, yp = task.x[probe], task.y[probe]
    for variant in args.variants:
        for seed in args.seeds:
            if (variant, seed, args.epochs) in done:
                continue
            torch.manual_seed(seed)  # as perturbscope.train.train_pair_model seeds the initialisation
            model, cfg = build(variant)
            cfg = replace(cfg, seed=seed, epochs=args.epochs)
            per_epoch = []
            t0 = time.time()

            def log(epoch, hist, m, per_epoch=per_epoch, variant=variant, seed=seed):
                per_epoch.append({"epoch": epoch, "loss": hist.loss[-1], "train_acc_seen": hist.accuracy[-1],
                                  **stats(m, xp, yp)})
                print(variant, seed, per_epoch[-1], flush=True)

            train_binary(model, task.x, task.y, cfg, progress=False, on_epoch=log)
            final = per_epoch[-1]["eval"]["acc"]
            rec = {"variant": variant, "seed": seed, "epochs": args.epochs, "collapsed": final <= 51.0,
                   "eval_acc": final, "seconds": time.time() - t0, "per_epoch": per_epoch}
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
