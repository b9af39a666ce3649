"""Benchmark (issue 7): adaptive line sampling at p ~ 1e-6, forwards for 20% relative error.

For ``--checkpoint`` (a Fashion-MNIST pair CNN), test image ``--image`` (index among the
first 20 test images the gradient line search flips) and radius ``alpha * eps_adv``,
``--seeds`` independent estimates (one call, one task per seed) are made at each budget in
``--budgets`` with ``estimate_flip_probability(method="lines")`` and scored against the
reference ``--ref`` (an independent subset-simulation value, see docs/rare_event.md; or
``--ref-runs K`` splitting runs at N = 5000 made here). "forwards" counts every forward pass
per estimate (direction refinement, pilot and final lines); gradients (forward + backward:
direction refinement and adaptation) are listed apart.

"line var" is the relative variance per line, ``lines x (p_hat / ref - 1)^2`` averaged over
the runs (lines counted by ``hits``); pooled over all budgets it gives the lines, and so the
forwards, that 20% needs - steadier than one budget's RMSE when a few runs carry the tail.

``--grid-lines K`` also scans ``K`` lines along one run's final direction on a 161-point grid
of the line coordinate and counts lines whose flip set is not a single upper ray (the method's
assumption), and compares the grid's ``P(flip | line)`` with the secant's.

``--linear`` adds the linear model in d = 2352 at exact p = 1e-6.

Run: ``.venv/bin/python benchmarks/bench_lines.py --checkpoint pair78.pt --image 0
--alpha 7.87 --ref 3.68e-6``
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy import special
from scipy.optimize import brentq

from pair_images import attacked_test_image
from perturbscope.models.classifier import Classifier
from perturbscope.models.pair_cnn import LinearBinary
from perturbscope.probes.rare_event import estimate_flip_probability
from perturbscope.probes.rare_event.estimate import _refine_direction
from perturbscope.probes.rare_event.lines import _Lines, line_sampling, start_coordinate
from perturbscope.probes.rare_event.model_eval import margin_direction
from perturbscope.theory.caps import log_cap_fraction


def score(name: str, model, x: torch.Tensor, r: float, ref_p: float, budgets, seeds: int) -> None:
    print(f"\n{name}: r {r:.4f}, reference p {ref_p:.4g}, {seeds} seeds")
    print(f"{'budget':>7} {'forwards':>9} {'grads':>6} {'mean/ref':>9} {'median':>7} "
          f"{'rel.RMSE':>9} {'estimated':>9} {'fw x RMSE^2':>11} {'CI covers':>9} "
          f"{'line var':>9} {'time/est':>9}")
    pooled_num = pooled_den = 0.0
    xs = x.repeat(seeds, 1, 1, 1)
    for b in budgets:
        t0 = time.time()
        res = estimate_flip_probability(model, xs, None, r, method="lines", budget=b, seed=b)
        dt = (time.time() - t0) / seeds
        q = res.p_hat / ref_p
        rmse = float(np.sqrt(np.mean((q - 1) ** 2)))
        fw = float(np.mean(res.forwards))
        cover = float(np.mean((res.ci_low <= ref_p) & (ref_p <= res.ci_high)))
        # relative variance per line: lines x squared relative error, averaged over runs
        line_var = float(np.mean(res.hits * (q - 1) ** 2))
        pooled_num += float(np.sum(res.hits * (q - 1) ** 2))
        pooled_den += seeds
        print(f"{b:>7} {fw:>9.0f} {np.mean(res.gradients):>6.0f} {q.mean():>9.3f} "
              f"{np.median(q):>7.3f} {rmse:>9.3f} {np.mean(res.rel_error):>9.3f} "
              f"{fw * rmse ** 2:>11.0f} {cover:>9.2f} {line_var:>9.1f} {dt:>8.2f}s", flush=True)
    var = pooled_num / pooled_den
    if var * len(budgets) < 0.04 * 100:  # e.g. a linear model: the pilot alone is below 20%
        print(f"pooled relative variance per line {var:.2g}: below 20% at every budget")
        return
    per_line = 3.0
    pilot = 3 * 100 * per_line
    print(f"pooled relative variance per line {var:.1f} (all {pooled_den:.0f} runs): 20% needs "
          f"~{var / 0.04:.0f} lines = ~{var / 0.04 * per_line + pilot:.0f} forwards "
          f"(+ ~300 gradients), counting {per_line} forwards per line and {pilot:.0f} for the "
          "adaptation pilots")


def grid_check(model, x: torch.Tensor, r: float, n_lines: int, budget: int = 3000) -> None:
    f = Classifier(model, "sigmoid", bounds=None)
    with torch.no_grad():
        ref = (model.logit(x) >= 0).long().reshape(-1)
    u0, _, _ = margin_direction(f, x, ref)
    rr = torch.tensor([r], dtype=torch.float64)
    u, t, _, _, _ = _refine_direction(f, x, ref, u0, None, rr, 2, 256)
    gen = torch.Generator().manual_seed(7)
    start = start_coordinate(t.numpy(), rr.numpy(), x[0].numel())
    img = torch.zeros(1, dtype=torch.long)
    out = line_sampling(f, x, ref, u, img, rr, start, budget=budget, level=0.95, generator=gen,
                        batch_size=256)
    task = torch.zeros(n_lines, dtype=torch.long)
    lines = _Lines(f, x, ref, out.direction, img, rr, task, gen, 256)
    grid = torch.linspace(-2.0, 10.0, 161, dtype=torch.float64)
    idx = torch.arange(n_lines)
    m = torch.stack([lines.margin(idx, torch.full((n_lines,), float(s), dtype=torch.float64))
                     for s in grid], 1)
    flip = m <= 0
    changes = (flip[:, 1:] != flip[:, :-1]).sum(1)
    upper_ray = (changes == 0) | ((changes == 1) & flip[:, -1])
    edges = torch.cat([torch.tensor([-math.inf], dtype=torch.float64), (grid[1:] + grid[:-1]) / 2,
                       torch.tensor([math.inf], dtype=torch.float64)])
    w = torch.from_numpy(np.diff(special.ndtr(edges.numpy())))
    p_grid = float((flip.double() * w).sum(1).mean())
    print(f"\ngrid check ({n_lines} lines, s in [-2, 10], step 0.075, along one run's final "
          f"direction; typical crossing s {out.s_typical[0]:.2f}): {int((~upper_ray).sum())} lines "
          f"are not a single upper ray; grid mean P(flip | line) {p_grid:.4g}, that run's "
          f"estimate {math.exp(out.log_p[0]):.4g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--image", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=7.87)
    ap.add_argument("--ref", type=float, help="reference p (docs/rare_event.md)")
    ap.add_argument("--ref-runs", type=int, default=0, help="make the reference here instead")
    ap.add_argument("--budgets", type=int, nargs="+", default=[3000, 5000, 8000])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--grid-lines", type=int, default=0)
    ap.add_argument("--linear", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.linear:
        d, dist = 2352, 0.5
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(d, generator=gen, dtype=torch.float64)
        x0 = 0.25 + 0.5 * torch.rand(d, generator=gen, dtype=torch.float64)
        lin = LinearBinary(w, bias=-(float(x0 @ w) + dist * float(w.norm())))
        tc = brentq(lambda t: log_cap_fraction(t, d) / math.log(10) + 6.0, 1e-9, 1 - 1e-12,
                    xtol=1e-15)
        score("linear model, d = 2352, exact p = 1e-6", lin, x0.float().reshape(1, 3, 28, 28),
              dist / tc, 1e-6, [400, 800, 1600], args.seeds)
    if not args.checkpoint:
        return
    model, x, eps, i = attacked_test_image(args.checkpoint, args.image)
    r = args.alpha * eps
    ref_p = args.ref
    if args.ref_runs:
        t0 = time.time()
        res = estimate_flip_probability(model, x.repeat(args.ref_runs, 1, 1, 1), None, r,
                                        method="splitting", n_per_level=5000, budget=200_000,
                                        seed=12345)
        ref_p = float(np.mean(res.p_hat))
        print(f"reference: {args.ref_runs} splitting runs at N = 5000: {ref_p:.4g} +- "
              f"{np.std(res.p_hat) / math.sqrt(args.ref_runs) / ref_p:.1%} ({time.time() - t0:.0f} s)")
    if ref_p is None:
        raise SystemExit("give --ref P or --ref-runs K")
    score(f"{args.checkpoint}, test image {i} (eps_adv {eps:.4f}, alpha {args.alpha})", model, x, r,
          ref_p, args.budgets, args.seeds)
    if args.grid_lines:
        grid_check(model, x, r, args.grid_lines)


if __name__ == "__main__":
    main()
