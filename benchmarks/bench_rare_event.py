"""Benchmark: forward passes the rare-event estimator needs for 20% relative error at p ~ 1e-6.

Plain sampling needs ``(1 - p) / (p * 0.2^2) ~ 2.5e7`` forwards for 20% relative error at
p = 1e-6 (~1e8 for 10%). Here:

1. linear model, d = 2352 (3x28x28): exact p = F_d(dist / r) = 1e-6; the relative RMSE over
   ``--seeds`` independent runs is measured against the exact value for several budgets;
2. the Fashion-MNIST pair CNN (PairCNN width 0.25, class 7 vs 8, trained here in ~1-2 min if
   no ``--checkpoint``): for each of ``--images`` test images, r is chosen (bisection on the
   radius) so that subset simulation gives p ~ 1e-6; the reference is the mean of all
   ``--seeds`` x 3 subset-simulation runs (weighted by draws per level); the relative RMSE of
   the runs at each ``n_per_level`` (and of importance sampling) is measured against it;
   then the tuning sweep of issue 7 below 1e4 forwards (p0 = 0.2 / N = 1000, p0 = 0.1 /
   N = 1500, pCN acceptance targets 0.25 / 0.4 / 0.6) and the genealogy of the final flips
   (distinct first-level draws they descend from).

"forwards" counts every forward pass (sampling, crossing searches) plus every gradient
(forward + backward) of the direction search, per estimate.

Run: ``.venv/bin/python benchmarks/bench_rare_event.py [--checkpoint FILE.pt]``
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy.optimize import brentq

from perturbscope.models.pair_cnn import LinearBinary
from perturbscope.probes.rare_event import estimate_flip_probability
from perturbscope.theory.caps import log_cap_fraction

BUDGETS = (50, 100, 200, 400, 800, 1600)
SPLIT_N = (1000, 2000, 3000)
# (p0, n_per_level) variants at < 1e4 forwards (the tuning sweep of issue 7)
SPLIT_P0 = ((0.2, 1000), (0.1, 1500))
ACCEPT = (0.25, 0.4, 0.6)  # pCN acceptance targets, subset_simulation called directly
IS_BUDGETS = (400, 1600)


def _report(name: str, budgets, rmse, fw) -> None:
    print(f"\n{name}", flush=True)
    print(f"{'budget':>8} {'forwards/estimate':>18} {'rel. RMSE':>10}")
    for b, e, f in zip(budgets, rmse, fw, strict=True):
        print(f"{b:>8} {f:>18.0f} {e:>10.3f}")
    ok = [f for e, f in zip(rmse, fw, strict=True) if e <= 0.2]
    print(f"-> forwards for <= 20% relative error: {min(ok):.0f}" if ok else "-> not reached")


def bench_linear(seeds: int) -> None:
    d, dist = 2352, 0.5
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    x0 = 0.25 + 0.5 * torch.rand(d, generator=gen, dtype=torch.float64)
    model = LinearBinary(w, bias=-(float(x0 @ w) + dist * float(w.norm())))
    t = brentq(lambda t: log_cap_fraction(t, d) / math.log(10) + 6.0, 1e-9, 1 - 1e-12, xtol=1e-15)
    r = dist / t
    x = x0.float().reshape(1, 3, 28, 28).repeat(seeds, 1, 1, 1)
    rmse, fw = [], []
    for b in BUDGETS:
        res = estimate_flip_probability(model, x, None, r, method="is", budget=b, seed=b)
        rmse.append(float(np.sqrt(np.mean((res.p_hat / 1e-6 - 1) ** 2))))
        fw.append(float(np.mean(res.forwards + res.gradients)))
    _report(f"linear model, d = {d}, exact p = 1e-6 (r = {r:.4f}), importance sampling, {seeds} "
            "seeds", BUDGETS, rmse, fw)
    n = 1000
    res = estimate_flip_probability(model, x[:6], None, r, method="splitting", n_per_level=n,
                                    budget=40 * n, seed=1)
    print(f"  (splitting, n_per_level {n}, 6 seeds: rel. RMSE "
          f"{np.sqrt(np.mean((res.p_hat / 1e-6 - 1) ** 2)):.2f} at "
          f"{np.mean(res.forwards + res.gradients):.0f} forwards)")


def _cnn(checkpoint: str | None):
    from perturbscope.data import load_pair_task
    from perturbscope.models.checkpoint import load_checkpoint
    from perturbscope.train import TrainConfig, train_pair_model

    if checkpoint:
        model, _ = load_checkpoint(checkpoint)
    else:
        tr = load_pair_task("fashion-mnist-subset", "train", 7, 8)
        t0 = time.time()
        model, hist = train_pair_model(tr.x, tr.y, width=0.25,
                                       config=TrainConfig(epochs=15, lr=0.05), progress=False)
        print(f"trained PairCNN width 0.25 in {time.time() - t0:.0f} s, "
              f"train accuracy {hist.accuracy[-1]:.3f}")
    return model.eval()


def _diagnose(model, x: torch.Tensor, r: float, p_ref: float, seeds: int, n: int = 1500) -> None:
    """Acceptance-target sweep and genealogy of subset simulation (p0 = 0.1, N = ``n``)."""
    from perturbscope.models.classifier import Classifier
    from perturbscope.probes.rare_event.splitting import subset_simulation

    f = Classifier(model, "sigmoid", bounds=None)
    with torch.no_grad():
        ref = (model.logit(x) >= 0).long().reshape(-1)
        img = torch.zeros(seeds, dtype=torch.long)
        rad = torch.full((seeds,), r, dtype=torch.float64)
        for acc in ACCEPT:
            out = subset_simulation(f, x, ref, img, rad, n_per_level=n, p0=0.1, budget=40 * n,
                                    generator=torch.Generator().manual_seed(int(acc * 100)),
                                    accept_target=acc)
            p = np.exp(out.log_p)
            print(f"  splitting p0 = 0.1, N = {n}, pCN acceptance target {acc}: "
                  f"{np.mean(out.forwards):.0f} forwards (sampling only), rel. RMSE "
                  f"{np.sqrt(np.mean((p / p_ref - 1) ** 2)):.3f}, estimated {np.mean(out.rel_error):.2f}; "
                  f"final flips descend from {np.median(out.lineages):.0f} (median; "
                  f"{out.lineages.min()}-{out.lineages.max()}) of the {n} first-level draws, "
                  f"{np.median(out.hits):.0f} flips", flush=True)


def bench_cnn(checkpoint: str | None, images: int, seeds: int) -> None:
    from perturbscope.attacks.line_search import LineSearch
    from perturbscope.data import load_pair_task

    model = _cnn(checkpoint)
    te = load_pair_task("fashion-mnist-subset", "test", 7, 8)
    ls = LineSearch(refine_tol=1e-3)(model, te.x[:20], te.y[:20], output="sigmoid")
    # a misclassified image counts as a success with a zero perturbation: not attacked
    idx = [i for i in range(20) if bool(ls.success[i]) and float(ls.eps_l2[i]) > 0][:images]
    for i in idx:
        x = te.x[i:i + 1]
        eps = float(ls.eps_l2[i])
        t0 = time.time()

        def log10p(log_r: float, x: torch.Tensor = x) -> float:
            res = estimate_flip_probability(model, x, None, math.exp(log_r), method="splitting",
                                            n_per_level=300, budget=8000, seed=99)
            return float(res.log10_p_hat[0]) + 6.0

        lo, hi = math.log(eps * 1.5), math.log(eps * 30)
        if log10p(hi) < 0 or log10p(lo) > 0:
            print(f"image {i}: p = 1e-6 not bracketed by 1.5 .. 30 eps_adv; skipped")
            continue
        r = math.exp(brentq(log10p, lo, hi, xtol=0.05))
        print(f"image {i}: r = {r:.4f} found in {time.time() - t0:.0f} s", flush=True)
        xs = x.repeat(seeds, 1, 1, 1)
        runs = {}
        for n in SPLIT_N:
            runs[n] = estimate_flip_probability(model, xs, None, r, method="splitting",
                                                n_per_level=n, budget=40 * n, seed=n)
        w = np.concatenate([np.full(seeds, n, dtype=float) for n in SPLIT_N])
        p_ref = float(np.average(np.concatenate([runs[n].p_hat for n in SPLIT_N]), weights=w))
        print(f"\nimage {i}: eps_adv = {eps:.4f}, r = {r:.4f} (alpha = {r / eps:.2f}); reference "
              f"p = {p_ref:.3e} (mean of all splitting runs, weights n_per_level); first-order "
              f"p = {runs[SPLIT_N[0]].first_order_p[0]:.3e}")
        rmse = [float(np.sqrt(np.mean((runs[n].p_hat / p_ref - 1) ** 2))) for n in SPLIT_N]
        est = [float(np.mean(runs[n].rel_error)) for n in SPLIT_N]
        fw = [float(np.mean(runs[n].forwards + runs[n].gradients)) for n in SPLIT_N]
        _report(f"PairCNN image {i}, splitting (p0 = 0.1), {seeds} seeds; rel. error estimated "
                f"by the method: {', '.join(f'{e:.2f}' for e in est)}", SPLIT_N, rmse, fw)
        for p0, n in SPLIT_P0:
            res = estimate_flip_probability(model, xs, None, r, method="splitting", p0=p0,
                                            n_per_level=n, budget=40 * n, seed=7 * n)
            print(f"  splitting p0 = {p0}, N = {n}: {np.mean(res.forwards + res.gradients):.0f} "
                  f"forwards, rel. RMSE {np.sqrt(np.mean((res.p_hat / p_ref - 1) ** 2)):.3f} "
                  f"(mean / ref {np.mean(res.p_hat) / p_ref:.2f}, estimated {np.mean(res.rel_error):.2f})",
                  flush=True)
        _diagnose(model, x, r, p_ref, seeds)
        rmse, fw, mean = [], [], []
        for b in IS_BUDGETS:
            res = estimate_flip_probability(model, xs, None, r, method="is", budget=b, seed=b)
            rmse.append(float(np.sqrt(np.mean((res.p_hat / p_ref - 1) ** 2))))
            fw.append(float(np.mean(res.forwards + res.gradients)))
            mean.append(float(np.mean(res.p_hat)))
        _report(f"PairCNN image {i}, importance sampling, {seeds} seeds; mean p_hat "
                f"{', '.join(f'{m:.2e}' for m in mean)} ({time.time() - t0:.0f} s)",
                IS_BUDGETS, rmse, fw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="PairCNN checkpoint (default: train one)")
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--linear-seeds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-cnn", action="store_true")
    ap.add_argument("--skip-linear", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    if not args.skip_linear:
        bench_linear(args.linear_seeds)
    if not args.skip_cnn:
        bench_cnn(args.checkpoint, args.images, args.seeds)
    print(f"\ntotal {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
