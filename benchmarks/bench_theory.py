"""Benchmark of the two Monte Carlo engines of ``perturbscope.theory`` over a dimension sweep.

For d = 2, 4, ..., 2^20 it times one Monte Carlo estimate of the two-balls flip probability
(Theorem 6: each experiment draws a point and a noise vector, eps = 0.1, r = 1) with
``--samples`` experiments per dimension:

* ``coord`` engine (first coordinates from their exact laws): always run in full;
* ``full`` engine (whole d-dimensional vectors): run in full while the previous dimension took
  less than ``--full-budget`` seconds; above that it is timed on ``--probe-samples``
  experiments and the time for ``--samples`` is extrapolated linearly (marked ``~``), and
  beyond ``--full-max-dim`` it is not run at all.

It also times the exact value (log-space integral) per dimension, and checks that both
estimates cover it. Prints a markdown table (seconds per ``--samples`` experiments).

Run:  .venv/bin/python benchmarks/bench_theory.py [--samples 100000] [--full-budget 20]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from perturbscope.theory import two_balls
from perturbscope.theory.montecarlo import monte_carlo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--max-exp", type=int, default=20, help="largest dimension is 2^max-exp")
    ap.add_argument("--full-budget", type=float, default=20.0,
                    help="seconds above which the full engine switches to extrapolation")
    ap.add_argument("--probe-samples", type=int, default=1000)
    ap.add_argument("--full-max-dim", type=int, default=2**16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# bench_theory: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.samples} samples per point, two-balls flip eps=0.1 r=1\n")
    print("| d | exact P | exact s | coord s | coord covers | full s | full covers |")
    print("|---:|---:|---:|---:|:---:|---:|:---:|")
    last_full = 0.0
    for k in range(1, args.max_exp + 1):
        d = 2**k
        t0 = time.perf_counter()
        log_p = two_balls.log_flip_exact(d, 0.1, 1.0)
        t_exact = time.perf_counter() - t0
        p = two_balls.flip_exact(d, 0.1, 1.0)
        c = monte_carlo("two-balls", "flip", n=d, samples=args.samples, engine="coord", seed=k,
                        eps=0.1, r=1.0)
        full_s, full_cov = "-", "-"
        if d <= args.full_max_dim:
            if last_full < args.full_budget:
                f = monte_carlo("two-balls", "flip", n=d, samples=args.samples, engine="full", seed=k,
                                eps=0.1, r=1.0)
                last_full = f.seconds
                full_s, full_cov = f"{f.seconds:.2f}", "yes" if f.contains(p) else "NO"
            else:
                f = monte_carlo("two-balls", "flip", n=d, samples=args.probe_samples, engine="full",
                                seed=k, eps=0.1, r=1.0)
                last_full = f.seconds * args.samples / args.probe_samples
                full_s = f"~{last_full:.0f}"
        shown = f"{p:.3e}" if p > 0 else f"1e{log_p / 2.302585092994046:.1f}"
        print(f"| {d} | {shown} | {t_exact:.3f} | {c.seconds:.3f} | {'yes' if c.contains(p) else 'NO'} | "
              f"{full_s} | {full_cov} |", flush=True)


if __name__ == "__main__":
    main()
