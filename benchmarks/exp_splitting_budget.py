"""Experiment (issue 7): forwards subset simulation needs for 20% error on the pair CNN.

The reference is the mean of ``2 x --seeds`` runs at N = ``--ref-n`` (5000: ~2.8e4 forwards each); then
``--seeds`` runs of each (p0, N) variant are scored against it: relative RMSE, the method's
own error estimate, and how often its 95% interval covers the reference.
Results: docs/rare_event.md, "Careful measurement". ~15 min per image on one core at 40 seeds.

Run: ``.venv/bin/python benchmarks/exp_splitting_budget.py --checkpoint pair78.pt --image 0
--alpha 7.87``
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy.optimize import brentq

from pair_images import attacked_test_image
from perturbscope.probes.rare_event import estimate_flip_probability

VARIANTS = ((0.1, 1000), (0.1, 1500), (0.2, 1000), (0.1, 2000))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--image", type=int, default=0, help="index among line-search successes")
    ap.add_argument("--alpha", type=float, default=7.87, help="r = alpha * eps_adv")
    ap.add_argument("--target-p", type=float, default=None,
                    help="instead of --alpha: choose r by bisection so that p ~ this value")
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--ref-n", type=int, default=5000, help="N of the reference runs")
    ap.add_argument("--variants", nargs="+", default=[f"{p0}:{n}" for p0, n in VARIANTS],
                    help="p0:N pairs to score (default: %(default)s)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, x, eps, i = attacked_test_image(args.checkpoint, args.image)
    r = args.alpha * eps
    t0 = time.time()
    if args.target_p is not None:
        def gap(log_r: float) -> float:
            res = estimate_flip_probability(model, x, None, math.exp(log_r),
                                            method="splitting", n_per_level=300, budget=8000,
                                            seed=99)
            return float(res.log10_p_hat[0]) - math.log10(args.target_p)

        r = math.exp(brentq(gap, math.log(0.2 * eps), math.log(30 * eps), xtol=0.05))
        print(f"image {i}: eps_adv {eps:.4f}, r {r:.4f} (alpha {r / eps:.2f}) for p ~ "
              f"{args.target_p:g} ({time.time() - t0:.0f} s)", flush=True)
    xs = x.repeat(args.seeds, 1, 1, 1)
    ref_runs = []
    for rep in range(2):
        res = estimate_flip_probability(model, xs, None, r, method="splitting",
                                        n_per_level=args.ref_n, budget=40 * args.ref_n,
                                        seed=10_000 + rep)
        ref_runs.append(res.p_hat)
    ref = np.concatenate(ref_runs)
    p_ref = float(ref.mean())
    print(f"image {i} r {r:.4f}: reference p {p_ref:.4e} +- {ref.std() / math.sqrt(ref.size):.2e}"
          f" ({ref.size} runs at N = {args.ref_n}, rel. sd per run {ref.std() / p_ref:.3f}, "
          f"{np.mean(res.forwards + res.gradients):.0f} forwards each; {time.time() - t0:.0f} s)",
          flush=True)
    for p0, n in (tuple(float(v) for v in item.split(":")) for item in args.variants):
        n = int(n)
        res = estimate_flip_probability(model, xs, None, r, method="splitting", n_per_level=n,
                                        p0=p0, budget=40 * n, seed=n + int(p0 * 1000))
        fw = float(np.mean(res.forwards + res.gradients))
        rm2 = float(np.mean((res.p_hat / p_ref - 1) ** 2))
        cover = float(np.mean((res.ci_low <= p_ref) & (p_ref <= res.ci_high)))
        print(f"  p0 {p0} N {n}: forwards {fw:.0f}, mean / ref {res.p_hat.mean() / p_ref:.3f}, "
              f"rel. RMSE {math.sqrt(rm2):.3f}, estimated {np.mean(res.rel_error):.3f}, "
              f"forwards x RMSE^2 {fw * rm2:.0f}, 95% CI covers the reference {cover:.2f}",
              flush=True)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
