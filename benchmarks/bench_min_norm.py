"""Benchmark: perturbscope's min-norm attack against foolbox's L2FMNAttack / L2DeepFoolAttack and
adv-lib's FMN / DDN, on the same Fashion-MNIST pair network and the same images, in one run;
plus the certified lower bound and the width of [lower, upper].

Every method gets the correctly classified test images of the task, iterates clipped to [0, 1]
(foolbox and adv-lib always clip; ours with ``clip=True``; ours unclipped is reported too), and
its perturbations are re-checked here with the same code (label of ``clip(x + delta)`` differs
from the true label). Reported per method: ms per image, success rate, median L2 over its own
successes and over the images on which all methods succeeded.

Medians are ``np.median`` (mean of the two middle values for an even count).

Lower bound: ``certified_radius(method="linear")`` (float32, rtol 0.05) on the first
``--certify-images`` images, with upper = the best of line search, DeepFool and min-norm (ours);
the global-Lipschitz radius on all images. Width = (upper - lower) / upper.

adv-lib: its package ``__init__`` imports torchvision and visdom (not installed: installing them
would pull a torchvision wheel pinned to another torch); the two attack files are loaded directly
(``pip install --no-deps adv-lib``, visdom stubbed), see ``_adv_lib``.

Run:  .venv/bin/python benchmarks/bench_min_norm.py [--checkpoint FILE.pt] [--n-images 100]
      (without --checkpoint a width-0.25 PairCNN is trained on fashion-mnist-subset 7 vs 8,
      15 epochs, seed 0, and saved to --train-out)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from perturbscope.attacks.best import BestOf
from perturbscope.attacks.deepfool import DeepFool
from perturbscope.attacks.line_search import LineSearch
from perturbscope.attacks.min_norm import MinNorm
from perturbscope.certify import certified_radius
from perturbscope.data import load_pair_task
from perturbscope.models.checkpoint import load_checkpoint, save_checkpoint
from perturbscope.models.classifier import Classifier


def _adv_lib():
    """adv-lib's fmn and ddn functions, loaded without the package's heavy ``__init__``."""
    import adv_lib

    sys.modules.setdefault("visdom", types.ModuleType("visdom"))
    out = {}
    for name, fn in (("fast_minimum_norm", "fmn"), ("decoupled_direction_norm", "ddn")):
        spec = importlib.util.spec_from_file_location(f"_advlib_{name}",
                                                      f"{adv_lib.__path__[0]}/attacks/{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out[fn] = getattr(mod, fn)
    return out


def _model(args):
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint)
        return model, args.checkpoint
    from perturbscope.train import TrainConfig, train_pair_model

    tr = load_pair_task("fashion-mnist-subset", "train", 7, 8)
    model, _ = train_pair_model(tr.x, tr.y, width=0.25, config=TrainConfig(epochs=15, seed=0),
                                progress=False)
    path = save_checkpoint(model, args.train_out, {"classes": [7, 8], "data": "fashion-mnist-subset"})
    return model.eval(), str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--train-out", default="/tmp/bench_min_norm_pair_w0.25.pt")
    p.add_argument("--n-images", type=int, default=100)
    p.add_argument("--certify-images", type=int, default=10)
    p.add_argument("--steps", type=int, default=30, help="our min-norm iterations")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, ckpt = _model(args)
    te = load_pair_task("fashion-mnist-subset", "test", 7, 8)
    x, y = te.x[:args.n_images], te.y[:args.n_images]
    ok = Classifier(model, "sigmoid").predict(x).cpu() == y
    x, y = x[ok], y[ok]
    n = len(x)
    adapter = Classifier(model, "sigmoid").eval()  # (N, 2) logits

    def check(delta, clip=True):
        with torch.no_grad():
            xa = (x + delta).clamp(0, 1) if clip else x + delta
            return adapter(xa).argmax(1) != y, (xa - x).reshape(n, -1).norm(dim=1)

    runs = {}

    def timed(name, fn, clip=True):
        t0 = time.perf_counter()
        delta = fn()
        sec = time.perf_counter() - t0
        succ, l2 = check(delta.detach(), clip)
        runs[name] = {"ms_per_image": 1000 * sec / n, "success": float(succ.double().mean()),
                      "median_l2_own": float(np.median(l2[succ].numpy())) if succ.any() else float("nan"),
                      "_l2": l2, "_s": succ}
        print(f"{name:<28} {runs[name]['ms_per_image']:8.1f} ms/img  success {runs[name]['success']:.3f}  "
              f"median L2 {runs[name]['median_l2_own']:.4f}", flush=True)

    timed("perturbscope min-norm (clip)",
          lambda: MinNorm(steps=args.steps, clip=True)(model, x, y).perturbation)
    timed("perturbscope min-norm", lambda: MinNorm(steps=args.steps)(model, x, y).perturbation,
          clip=False)  # unclipped: checked without clipping
    try:
        import foolbox as fb

        fm = fb.PyTorchModel(adapter, bounds=(0, 1))
        for name, att in (("foolbox L2FMN (100 steps)", fb.attacks.L2FMNAttack()),
                          ("foolbox L2DeepFool", fb.attacks.L2DeepFoolAttack(steps=50, candidates=2,
                                                                             overshoot=0.02))):
            timed(name, lambda att=att: att(fm, x, y, epsilons=None)[1] - x)
    except ImportError:
        print("foolbox not installed: skipped")
    try:
        al = _adv_lib()
        timed("adv-lib FMN (100 steps)", lambda: al["fmn"](adapter, x, y, norm=2, steps=100) - x)
        timed("adv-lib DDN (100 steps)", lambda: al["ddn"](adapter, x, y, steps=100) - x)
    except ImportError as exc:
        print(f"adv-lib unavailable ({exc}): skipped")
    all_ok = torch.stack([r["_s"] for r in runs.values()]).all(0)
    for r in runs.values():
        r["median_l2_common"] = float(np.median(r["_l2"][all_ok].numpy())) if all_ok.any() else float("nan")

    # bounds: upper = best of our three attacks (unclipped), lower = certified radius
    t0 = time.perf_counter()
    best = BestOf(attacks=(LineSearch(), DeepFool(), MinNorm(steps=args.steps)))(model, x, y)
    t_best = time.perf_counter() - t0
    upper = best.eps_l2
    winner = best.extras["winner"]
    lip = certified_radius(model, x, y, method="lipschitz").radius
    k = max(1, min(args.certify_images, n))
    t0 = time.perf_counter()
    lin = certified_radius(model, x[:k], y[:k], method="linear", upper=upper[:k], rtol=0.05,
                           dtype=torch.float32, max_evals=8).radius
    t_cert = time.perf_counter() - t0
    width_lip = ((upper - lip) / upper).numpy()
    width_lin = ((upper[:k] - lin) / upper[:k]).numpy()
    wins = {w: int((winner == w).sum()) for w in set(winner)}
    bounds = {"images": n, "best_seconds_per_image": t_best / n, "wins": wins,
              "median_upper": float(np.nanmedian(upper.numpy())),
              "median_lower_lipschitz": float(np.median(lip.numpy())),
              "median_rel_width_lipschitz": float(np.nanmedian(width_lip)),
              "certify_images": k, "certify_seconds_per_image": t_cert / max(k, 1),
              "median_lower_linear": float(np.median(lin.numpy())),
              "median_upper_on_certified": float(np.nanmedian(upper[:k].numpy())),
              "median_rel_width_linear": float(np.nanmedian(width_lin))}
    print(f"\nimages: {n} correct of {args.n_images}; all methods succeeded on {int(all_ok.sum())}")
    print(f"{'method':<28} {'ms/img':>8} {'success':>8} {'med L2 own':>11} {'med L2 common':>14}")
    for name, r in runs.items():
        print(f"{name:<28} {r['ms_per_image']:8.1f} {r['success']:8.3f} {r['median_l2_own']:11.4f} "
              f"{r['median_l2_common']:14.4f}")
    print(f"\nbest of line-search/DeepFool/min-norm: wins {wins}, median upper {bounds['median_upper']:.4f}")
    print(f"lower (Lipschitz, all {n}): median {bounds['median_lower_lipschitz']:.5f}, median width/upper "
          f"{bounds['median_rel_width_lipschitz']:.4f}")
    print(f"lower (linear relaxation, first {k}): median {bounds['median_lower_linear']:.5f} vs median upper "
          f"{bounds['median_upper_on_certified']:.4f}, median width/upper "
          f"{bounds['median_rel_width_linear']:.4f}, {bounds['certify_seconds_per_image']:.1f} s/image")
    doc = {"checkpoint": ckpt, "threads": args.threads, "platform": platform.platform(),
           "torch": torch.__version__, "steps": args.steps,
           "attacks": {k2: {k3: v for k3, v in r.items() if not k3.startswith("_")}
                       for k2, r in runs.items()},
           "bounds": bounds}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
