"""Issue 15: the random probe's throughput against the raw forward ceiling, interleaved.

Each repetition times the raw forward (channels_last, fp32, the same batch) for ``--seconds``,
then the probe on real susceptible test images of a trained Fashion-MNIST pair at their eps_adv
(alpha 10), then the raw forward again; the ratio is the probe's rate over the mean of the two
raw rates around it, so that a change of load cancels out. Prints every repetition and the
median.

    python benchmarks/bench_probe_ratio.py --checkpoint benchmarks/results/full78/epoch050.pt --batch 64
    python benchmarks/bench_probe_ratio.py --checkpoint benchmarks/results/full78/epoch050.pt --batch 256
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bench_gpu import probe_rate, raw_rate, trained_inputs
from perturbscope.models import Classifier
from perturbscope.models.checkpoint import load_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--draws", type=int, default=600)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net, meta = load_checkpoint(args.checkpoint)
    m = net.to(memory_format=torch.channels_last)
    clf = Classifier(m, "sigmoid", bounds=(0.0, 1.0))
    inputs = trained_inputs(clf, tuple(meta["classes"]), args.images)
    shape, cpu = tuple(inputs[0].shape[1:]), torch.device("cpu")
    probe_rate(clf, shape, args.images, 16, args.batch, "fp32", True, inputs)  # warm-up
    ratios = []
    for rep in range(args.repeats):
        before = raw_rate(m, shape, args.batch, cpu, "fp32", True, args.seconds)
        probe, _, _ = probe_rate(clf, shape, args.images, args.draws, args.batch, "fp32", True, inputs)
        after = raw_rate(m, shape, args.batch, cpu, "fp32", True, args.seconds)
        ratios.append(probe / ((before + after) / 2))
        print(f"repetition {rep}: raw {before:.0f} and {after:.0f} img/s, probe {probe:.0f} img/s, "
              f"ratio {ratios[-1]:.3f}", flush=True)
    print(f"median ratio {statistics.median(ratios):.3f} (batch {args.batch}, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
