"""Experiment (issue 7): adaptive line sampling on the Fashion-MNIST pair CNN at p ~ 1e-6.

The first attempt, kept so it can be rerun: with regula falsi (8 forwards per line), 30 pilot
lines and untempered weights it did not beat subset simulation. The package's
``method="lines"`` (``perturbscope.probes.rare_event.lines``; benchmark
``benchmarks/bench_lines.py``) fixes that: secant crossings (~3 forwards per line), tempered
weights, angular coordinates.

Method. ``zeta = r g[:d] / ||g||`` with ``g ~ N(0, I_{d+2})`` is uniform in ``B_d(r)``. Fix a
unit direction ``u`` and write ``g = s u + h`` with ``s ~ N(0, 1)`` independent of ``h``
(Gaussian in ``u``'s complement). Along each line (``h`` fixed) the flip set is assumed to
be ``{s >= s*(h)}``, found by regula falsi (Illinois) on the margin, so
``P(flip | h) = Phi(-s*(h))`` exactly and ``p_hat = mean_h Phi(-s*(h))`` is unbiased under
that assumption. ``u`` starts at the estimator's refined boundary normal and is then moved
``--rounds`` times to the ``Phi(-s*)``-weighted mean of the margin normals at the crossing
points of ``--pilot`` lines (adaptive line sampling); only the last stage's lines enter the
estimate.

Measured (PairCNN width 0.25, 7 vs 8, image 0, alpha 7.87, 20 seeds, 1 thread): see
docs/rare_event.md, "Adaptive line sampling".

Run: ``.venv/bin/python benchmarks/exp_line_sampling.py --checkpoint pair78.pt``
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy import special

from pair_images import attacked_test_image
from perturbscope.models.classifier import Classifier
from perturbscope.probes.rare_event.estimate import _refine_direction
from perturbscope.probes.rare_event.model_eval import margin_direction, margin_flip


def crossings(f, x, ref, u, r, n_lines, gen, iters=6, s_max=40.0):
    """``log Phi(-s*)`` ``(n,)``, forwards per line and the crossing points ``zeta`` ``(n, d)``."""
    d, shape = u.numel(), x.shape[1:]
    h = torch.randn(n_lines, d + 2, generator=gen, dtype=torch.float64)
    h[:, :d] -= (h[:, :d] @ u)[:, None] * u
    hn2 = (h * h).sum(1)

    def point(s):
        return r * (h[:, :d] + s[:, None] * u) / torch.sqrt(s * s + hn2)[:, None]

    def marg(s):
        with torch.no_grad():
            return margin_flip(f, x + point(s).to(x.dtype).reshape(-1, *shape), ref.expand(n_lines))[0]

    lo = torch.zeros(n_lines, dtype=torch.float64)
    hi = torch.full((n_lines,), s_max, dtype=torch.float64)
    m_lo, m_hi = marg(lo), marg(hi)
    no_flip = m_hi > 0
    side = torch.zeros(n_lines, dtype=torch.float64)
    for _ in range(iters):
        s = hi - m_hi * (hi - lo) / (m_hi - m_lo)
        s = torch.where(torch.isfinite(s), s, (lo + hi) / 2)
        s = torch.minimum(torch.maximum(s, lo + 0.01 * (hi - lo)), hi - 0.01 * (hi - lo))
        m = marg(s)
        pos = m > 0
        lo, hi = torch.where(pos, s, lo), torch.where(pos, hi, s)
        m_lo, m_hi = (torch.where(pos, m, torch.where(side == -1, m_lo / 2, m_lo)),
                      torch.where(pos, torch.where(side == 1, m_hi / 2, m_hi), m))
        side = torch.where(pos, 1.0, -1.0)
    log_p = torch.from_numpy(special.log_ndtr(-hi.numpy()))
    log_p[no_flip] = -math.inf
    return log_p, iters + 2, point(hi)


def adaptive_estimate(f, x, ref, u, r, pilot, final, rounds, seed):
    gen = torch.Generator().manual_seed(seed)
    forwards = gradients = 0
    for _ in range(rounds):
        log_p, per_line, zeta = crossings(f, x, ref, u, r, pilot, gen)
        forwards += per_line * pilot
        normals, _, _ = margin_direction(f, x + zeta.to(x.dtype).reshape(-1, *x.shape[1:]),
                                         ref.expand(pilot))
        gradients += pilot
        v = (torch.softmax(log_p, 0)[:, None] * normals.double()).sum(0)
        u = v / v.norm()
    log_p, per_line, _ = crossings(f, x, ref, u, r, final, gen)
    p = torch.exp(log_p)
    return float(p.mean()), float(p.std() / p.mean()) / math.sqrt(final), \
        forwards + per_line * final, gradients


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--image", type=int, default=0, help="index among line-search successes")
    ap.add_argument("--alpha", type=float, default=7.87)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--pilot", type=int, default=30)
    ap.add_argument("--final", type=int, default=400)
    ap.add_argument("--rounds", type=int, nargs="+", default=[0, 3])
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, x, eps, i = attacked_test_image(args.checkpoint, args.image)
    r = args.alpha * eps
    f = Classifier(model, "sigmoid", bounds=None)
    with torch.no_grad():
        ref = (model.logit(x) >= 0).long().reshape(-1)
    u0, _, _ = margin_direction(f, x, ref)
    u0, t, _, fw0, gr0 = _refine_direction(f, x, ref, u0, None,
                                           torch.tensor([r], dtype=torch.float64), 2, 256)
    print(f"image {i}: eps_adv {eps:.4f}, r {r:.4f}, boundary along the refined normal at "
          f"{float(t):.4f} (direction search: {fw0} forwards, {gr0} gradients)")
    for rounds in args.rounds:
        t0 = time.time()
        runs = [adaptive_estimate(f, x, ref, u0[0].double(), r, args.pilot, args.final,
                                  rounds, 100 + s) for s in range(args.seeds)]
        p = np.array([q[0] for q in runs])
        print(f"rounds {rounds}, pilot {args.pilot}, final {args.final}: {runs[0][2]} forwards "
              f"+ {runs[0][3]} gradients per estimate; mean p {p.mean():.3e}, rel. sd over "
              f"{args.seeds} seeds {p.std() / p.mean():.3f}, estimated rel. error "
              f"{np.mean([q[1] for q in runs]):.3f} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
