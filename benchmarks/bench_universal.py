"""Benchmark: perturbscope's DeepFool and universal perturbation against ART, foolbox and
torchattacks, on the same Fashion-MNIST pair network and the same images, in one run.

DeepFool (L2, overshoot 0.02, 50 iterations, inputs kept in [0, 1] by every method; ours with
its defaults, with the paper's full first step (first_step_backoff=1) and with step_scale=0.5): wall and
CPU milliseconds per image, success rate (label of clip(x + r) differs from the clean prediction,
checked here with the same code for every library), median L2 norm of clip(x + r) - x over each
method's own successes, and, pairwise with perturbscope's default, over the images both
succeeded on (``median_l2_both`` for the method, ``ours_median_l2_both`` for perturbscope).

Universal perturbation (DeepFool inner attack, delta = 0.2, same xi and pass limit): wall and
CPU seconds, fooling rate on held-out images (unclipped x + v and clipped to [0, 1]), ||v||.

The binary model is presented to every library as (N, 2) logits via Classifier. Without
--checkpoint the width-0.25 PairCNN is trained first (seeded, 6 epochs on 2000 images).

Run:  .venv/bin/python benchmarks/bench_universal.py [--checkpoint FILE.pt] [--json OUT.json]
      peers: .venv/bin/pip install foolbox adversarial-robustness-toolbox
             .venv/bin/pip install --no-deps torchattacks   (its torchvision pin breaks torch)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import numpy as np
import torch

from perturbscope.attacks.deepfool import DeepFool
from perturbscope.attacks.universal import fooling_mask, universal_perturbation
from perturbscope.data import load_pair_task
from perturbscope.models.checkpoint import load_checkpoint
from perturbscope.models.classifier import Classifier


def _labels(adapter, x):
    with torch.no_grad():
        return adapter(x).argmax(1)


def _df_stats(name, adapter, x, clean, delta, seconds, cpu=None):
    with torch.no_grad():
        adv = adapter((x + delta).clamp(0, 1)).argmax(1)
    real = (x + delta).clamp(0, 1) - x
    success = adv != clean
    l2 = real.reshape(len(x), -1).norm(dim=1)
    return {"method": name, "seconds": seconds, "ms_per_image": 1000 * seconds / len(x),
            "cpu_ms_per_image": None if cpu is None else 1000 * cpu / len(x),
            "success": float(success.double().mean()),
            "median_l2_own": float(l2[success].median()) if success.any() else float("nan"),
            "_l2": l2, "_success": success}


def run_deepfool(model, adapter, x, args):
    clean = _labels(adapter, x)
    rows = []

    t0, c0 = time.perf_counter(), time.process_time()
    res = DeepFool(norm="l2", overshoot=0.02, max_iter=50, batch_size=args.batch,
                   clip=True)(model, x, output="sigmoid")
    rows.append(_df_stats("perturbscope deepfool", adapter, x, clean, res.perturbation,
                          time.perf_counter() - t0, time.process_time() - c0))
    t0, c0 = time.perf_counter(), time.process_time()
    res = DeepFool(norm="l2", overshoot=0.02, max_iter=50, batch_size=args.batch, clip=True,
                   first_step_backoff=1.0)(model, x, output="sigmoid")
    rows.append(_df_stats("perturbscope deepfool, first_step_backoff=1 (paper)", adapter, x, clean,
                          res.perturbation, time.perf_counter() - t0, time.process_time() - c0))
    t0, c0 = time.perf_counter(), time.process_time()
    res = DeepFool(norm="l2", overshoot=0.02, max_iter=100, batch_size=args.batch, clip=True,
                   step_scale=0.5)(model, x, output="sigmoid")
    rows.append(_df_stats("perturbscope deepfool, step_scale=0.5, 100 it", adapter, x, clean,
                          res.perturbation, time.perf_counter() - t0, time.process_time() - c0))

    if not args.skip_peers:
        import foolbox as fb

        fmodel = fb.PyTorchModel(adapter, bounds=(0, 1))
        atk = fb.attacks.L2DeepFoolAttack(steps=50, candidates=2, overshoot=0.02)
        t0, c0 = time.perf_counter(), time.process_time()
        adv = torch.cat([atk(fmodel, x[i:i + args.batch], clean[i:i + args.batch],
                             epsilons=None)[1] for i in range(0, len(x), args.batch)])
        rows.append(_df_stats("foolbox L2DeepFoolAttack", adapter, x, clean, adv - x,
                              time.perf_counter() - t0, time.process_time() - c0))

        import torchattacks

        ta = torchattacks.DeepFool(adapter, steps=50, overshoot=0.02)
        t0, c0 = time.perf_counter(), time.process_time()
        adv = torch.cat([ta(x[i:i + args.batch], clean[i:i + args.batch])
                         for i in range(0, len(x), args.batch)])
        rows.append(_df_stats("torchattacks DeepFool", adapter, x, clean, adv - x,
                              time.perf_counter() - t0, time.process_time() - c0))

        from art.attacks.evasion import DeepFool as ArtDeepFool
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=adapter, loss=torch.nn.CrossEntropyLoss(),
                                input_shape=tuple(x.shape[1:]), nb_classes=2, clip_values=(0.0, 1.0))
        art_df = ArtDeepFool(clf, max_iter=50, epsilon=0.02, nb_grads=2, batch_size=args.batch,
                          verbose=False)
        t0, c0 = time.perf_counter(), time.process_time()
        adv = torch.from_numpy(art_df.generate(x.numpy()))
        rows.append(_df_stats("ART DeepFool", adapter, x, clean, adv - x, time.perf_counter() - t0,
                              time.process_time() - c0))

    ours = rows[0]
    for r in rows:  # pairwise with perturbscope's default: the images both succeeded on
        both = r["_success"] & ours["_success"]
        r["n_both"] = int(both.sum())
        r["median_l2_both"] = float(r["_l2"][both].median()) if both.any() else float("nan")
        r["ours_median_l2_both"] = float(ours["_l2"][both].median()) if both.any() else float("nan")
    for r in rows:
        del r["_l2"], r["_success"]
    return rows


def run_universal(model, adapter, x_build, x_eval, args):
    p = math.inf if args.norm == "inf" else 2.0
    rows = []

    def stats(name, v, seconds, cpu, passes):
        v = v.to(x_eval.dtype)
        flat = v.reshape(-1)
        return {"method": name, "seconds": seconds, "cpu_seconds": cpu, "passes": passes,
                "fooling_heldout": float(fooling_mask(adapter, x_eval, v).double().mean()),
                "fooling_heldout_clipped": float(fooling_mask(adapter, x_eval, v,
                                                              clip=True).double().mean()),
                "l2": float(flat.norm()), "linf": float(flat.abs().max())}

    for mode, clip in (("batched", False), ("batched", True), ("sequential", True)):
        t0, c0 = time.perf_counter(), time.process_time()
        res = universal_perturbation(model, x_build, xi=args.xi, p=p, output="sigmoid", delta=0.2,
                                     max_passes=args.passes, mode=mode, chunk=args.chunk,
                                     seed=args.seed, clip=clip)
        rows.append(stats(f"perturbscope universal ({mode}"
                          + (f", chunk {args.chunk}" if mode == "batched" else "")
                          + (", x+v clipped to [0,1])" if clip else ", unclipped)"),
                          res.perturbation, time.perf_counter() - t0, time.process_time() - c0,
                          res.passes))

    if not args.skip_peers:
        from art.attacks.evasion import UniversalPerturbation
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=adapter, loss=torch.nn.CrossEntropyLoss(),
                                input_shape=tuple(x_build.shape[1:]), nb_classes=2,
                                clip_values=(0.0, 1.0))
        uap = UniversalPerturbation(clf, attacker="deepfool",
                                    attacker_params={"max_iter": 10, "epsilon": 0.02,
                                                     "nb_grads": 2, "verbose": False},
                                    delta=0.2, max_iter=args.passes, eps=args.xi,
                                    norm=np.inf if p == math.inf else 2, batch_size=args.batch,
                                    verbose=False)
        np.random.seed(args.seed)  # noqa: NPY002  (ART shuffles with the global NumPy RNG)
        t0, c0 = time.perf_counter(), time.process_time()
        uap.generate(x_build.numpy())
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows.append(stats("ART UniversalPerturbation", torch.from_numpy(uap.noise[0]), seconds, cpu,
                          getattr(uap, "nb_iter", None) or args.passes))
    return rows


def _train(args, classes):
    """The width-0.25 PairCNN trained with the paper's protocol (fewer epochs), seeded."""
    from perturbscope.models.checkpoint import save_checkpoint
    from perturbscope.train import TrainConfig, train_pair_model

    task = load_pair_task(args.data, "train", *classes, limit=args.train_limit, seed=args.seed + 1)
    t0 = time.perf_counter()
    model, _ = train_pair_model(task.x, task.y, width=0.25,
                                config=TrainConfig(epochs=args.train_epochs, seed=args.seed),
                                progress=False)
    print(f"trained PairCNN(width=0.25) on {task.describe()} in {time.perf_counter() - t0:.0f} s")
    if args.save_checkpoint:
        save_checkpoint(model, args.save_checkpoint, {"classes": list(classes), "data": args.data})
    return model.eval()


def _table(rows, cols):
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None,
                    help="pair-model checkpoint (PairCNN); default: train the width-0.25 PairCNN on "
                         "--train-limit images of --classes (seeded, ~30 s) and cache it here "
                         "with --save-checkpoint")
    ap.add_argument("--train-limit", type=int, default=2000, help="training images if training")
    ap.add_argument("--train-epochs", type=int, default=6, help="epochs if training")
    ap.add_argument("--save-checkpoint", default=None, help="where to save the trained model")
    ap.add_argument("--data", default="fashion-mnist", help="data source of load_pair_task")
    ap.add_argument("--classes", nargs=2, type=int, default=None, help="default: from checkpoint")
    ap.add_argument("--df-images", type=int, default=100, help="test images attacked by DeepFool")
    ap.add_argument("--uap-build", type=int, default=200, help="train images to build v on")
    ap.add_argument("--uap-eval", type=int, default=500, help="held-out test images")
    ap.add_argument("--xi", type=float, default=0.25, help="ball radius (pixel units)")
    ap.add_argument("--norm", choices=("2", "inf"), default="inf")
    ap.add_argument("--passes", type=int, default=3, help="pass limit for every UAP")
    ap.add_argument("--chunk", type=int, default=32, help="chunk of the batched UAP mode")
    ap.add_argument("--batch", type=int, default=100, help="attack batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-uap", action="store_true")
    ap.add_argument("--json", default=None, help="write all numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint)
        classes = args.classes or meta.get("classes")
    else:
        classes = args.classes or [7, 8]
        model = _train(args, classes)
    adapter = Classifier(model, "sigmoid").eval()
    test = load_pair_task(args.data, "test", *classes, limit=max(args.uap_eval, args.df_images),
                          seed=args.seed)
    train = load_pair_task(args.data, "train", *classes, limit=args.uap_build, seed=args.seed)
    with torch.no_grad():
        acc = float((_labels(adapter, test.x) == test.y).double().mean())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{platform.processor() or platform.machine()}; {test.describe()}; test accuracy "
          f"{100 * acc:.1f}%")
    out = {"meta": {"checkpoint": args.checkpoint, "accuracy": acc, "task": test.describe(),
                    "threads": torch.get_num_threads(), "args": vars(args)}}
    x_df = test.x[: args.df_images]
    out["deepfool"] = run_deepfool(model, adapter, x_df, args)
    print("\nDeepFool (L2):\n" + _table(out["deepfool"], [
        "method", "ms_per_image", "cpu_ms_per_image", "success", "median_l2_own", "n_both",
        "median_l2_both", "ours_median_l2_both"]))
    if not args.skip_uap:
        out["universal"] = run_universal(model, adapter, train.x, test.x[: args.uap_eval], args)
        print(f"\nUniversal (p={args.norm}, xi={args.xi}, <= {args.passes} passes, "
              f"{len(train)} build / {min(args.uap_eval, len(test))} held-out images):\n"
              + _table(out["universal"], ["method", "seconds", "cpu_seconds", "passes", "fooling_heldout",
                                          "fooling_heldout_clipped", "l2", "linf"]))
    if args.json:  # atomically: a temporary file in the same folder, then os.replace
        tmp = f"{args.json}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump(out, fh, indent=2)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
