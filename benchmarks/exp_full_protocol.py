"""Issue 17: the paper's full training protocol on Fashion-MNIST 7 vs 8, resumable.

The paper's network at width 1 (Glorot init, dropout 0.4 after every conv), MSE on the sigmoid,
SGD + Nesterov 0.9, batch 128, lr 0.1 halved every 20 epochs, 100 epochs, all 12,000 training
images of the pair. The training state is rewritten after every epoch (``--state``), so the run
can be killed and started again with the same command; checkpoints are written at the epochs
of ``--snapshots`` (to measure the effect of training length). Audit the checkpoints with
``perturbscope audit`` or benchmarks/exp_fidelity.py.

    python benchmarks/exp_full_protocol.py --out benchmarks/results/full78 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from perturbscope.data import load_pair_task
from perturbscope.models import PairCNN
from perturbscope.models.checkpoint import save_checkpoint
from perturbscope.train import TrainConfig, train_binary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/full78")
    ap.add_argument("--classes", nargs=2, type=int, default=[7, 8])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--snapshots", nargs="+", type=int, default=[1, 8, 20, 50, 100])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.4)
    ap.add_argument("--attempts", type=int, default=5,
                    help="a run that has collapsed to a constant answer after epoch 1 or 2 is abandoned and "
                         "the next seed (seed + 7919 k) tried, at most this many in all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = load_pair_task("fashion-mnist", "train", *args.classes)
    test = load_pair_task("fashion-mnist", "test", *args.classes)
    for attempt in range(args.attempts):
        seed = args.seed + 7919 * attempt
        mark = out / f"collapsed_seed{seed}.json"
        if mark.exists():
            continue
        if _train(args, out, task, test, seed):
            return
        mark.write_text(json.dumps({"seed": seed, "collapsed": True}))
    raise SystemExit(f"all {args.attempts} attempts collapsed")


class _Collapsed(Exception):
    pass


def _train(args, out: Path, task, test, seed: int) -> bool:
    from perturbscope.train import is_collapsed

    torch.manual_seed(seed)  # as perturbscope.train.train_pair_model
    model = PairCNN(width=1.0, dropout=args.dropout)
    cfg = TrainConfig(epochs=args.epochs, seed=seed)
    log = out / "history.jsonl"
    t0 = time.time()

    def on_epoch(epoch: int, hist, m) -> None:
        from perturbscope.models import as_classifier
        clf = as_classifier(m, "sigmoid")
        acc = {name: 100.0 * float((clf.predict(t.x) == t.y).double().mean()) for name, t in
               (("train", task), ("test", test))}
        rec = {"seed": seed, "epoch": epoch, "loss": hist.loss[-1], "train_acc_seen": hist.accuracy[-1],
               "lr": hist.lr[-1], "acc_eval": acc, "seconds": time.time() - t0}
        with log.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(rec, flush=True)
        if epoch <= 2:
            was = m.training
            collapsed = is_collapsed(m.eval(), task.x, task.y)
            m.train(was)
            if collapsed:
                raise _Collapsed
        if epoch in args.snapshots:
            meta = {"data": "fashion-mnist", "classes": list(args.classes), "width": 1.0,
                    "dropout": args.dropout, "init": "glorot", "training": vars(cfg), "epochs_done": epoch,
                    "accuracy": acc, "seed": seed,
                    "history": {"loss": list(hist.loss), "accuracy": list(hist.accuracy)}}
            save_checkpoint(m, out / f"epoch{epoch:03d}.pt", meta)

    try:
        train_binary(model, task.x, task.y, cfg, progress=False, resume=out / f"train_state_seed{seed}.pt",
                     on_epoch=on_epoch)
    except _Collapsed:
        return False
    return True


if __name__ == "__main__":
    main()
