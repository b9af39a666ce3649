"""Benchmark of the audit's hot paths on the paper's Fashion-MNIST network (width 1, no Conv-5/6).

Measures, in one run on the same model and inputs:

* the raw forward throughput of the model at batch 256 (images/s), default and channels_last;
* the random probe's throughput (perturbed inputs evaluated per second, including building
  them) in the same two layouts, and its ratio to the raw throughput (target >= 0.9);
* the paper's line-search attack: seconds per attacked image (256-step grid, early exit).

Run:  .venv/bin/python benchmarks/bench_audit.py [--train-epochs 2] [--images 64]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from perturbscope.attacks.line_search import LineSearch
from perturbscope.data import load_pair_task
from perturbscope.models import PairCNN
from perturbscope.probes.random_probe import random_probe
from perturbscope.train import TrainConfig, train_binary


def raw_throughput(model, x, memory_format, repeats):
    xb = x.contiguous(memory_format=memory_format)
    with torch.inference_mode():
        model(xb)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(xb)
        dt = time.perf_counter() - t0
    return repeats * x.shape[0] / dt


def probe_throughput(model, x, eps, draws, memory_format):
    t0 = time.perf_counter()
    res = random_probe(model, x, eps, alphas=(1.0, 2.0, 5.0, 10.0), draws=draws, seed=0,
                       batch_size=256, memory_format=memory_format)
    dt = time.perf_counter() - t0
    return res.forwards / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-epochs", type=int, default=2, help="epochs of training before the attack")
    ap.add_argument("--images", type=int, default=64, help="images attacked")
    ap.add_argument("--draws", type=int, default=256, help="random draws per image and alpha")
    ap.add_argument("--probe-images", type=int, default=4, help="images probed")
    ap.add_argument("--repeats", type=int, default=8, help="raw-forward repeats of a 256 batch")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}")
    train = load_pair_task("fashion-mnist-subset", "train", 7, 8)
    test = load_pair_task("fashion-mnist-subset", "test", 7, 8)
    torch.manual_seed(0)
    model = PairCNN(width=1.0)
    t0 = time.perf_counter()
    train_binary(model, train.x, train.y, TrainConfig(epochs=args.train_epochs, seed=0), progress=False)
    print(f"trained width-1 PairCNN on {len(train.y)} images x {args.train_epochs} epochs "
          f"in {time.perf_counter() - t0:.1f} s")
    model.eval()
    x256 = test.x[:256].repeat(2, 1, 1, 1)[:256]

    results = {}
    for name, fmt in (("default", torch.contiguous_format), ("channels_last", torch.channels_last)):
        m = model.to(memory_format=fmt)
        raw = raw_throughput(m, x256, fmt, args.repeats)
        xs = test.x[:args.probe_images]
        eps = torch.full((xs.shape[0],), 1.0)
        probe = probe_throughput(m, xs, eps, args.draws, fmt)
        raw2 = raw_throughput(m, x256, fmt, args.repeats)  # again, to bracket load changes
        results[name] = (raw, raw2, probe)
        print(f"[{name:>13}] raw forward {raw:7.0f} / {raw2:7.0f} img/s (before/after), "
              f"probe {probe:7.0f} img/s, ratio {probe / ((raw + raw2) / 2):.3f}")
    model = model.to(memory_format=torch.contiguous_format)

    xs, ys = test.x[:args.images], test.y[:args.images]
    t0 = time.perf_counter()
    res = LineSearch(s_max=10.0, steps=256)(model, xs, ys, output="sigmoid")
    dt = time.perf_counter() - t0
    print(f"line search (256 steps, s_max 10): {1000 * dt / len(ys):.1f} ms/image, "
          f"{res.forwards / len(ys):.0f} forwards/image, success {int(res.success.sum())}/{len(ys)}, "
          f"median eps_l2 {float(res.eps_l2[res.success].median()):.3f}")
    t0 = time.perf_counter()
    full = LineSearch(s_max=10.0, steps=256, chunk=256)(model, xs, ys, output="sigmoid")
    dt_full = time.perf_counter() - t0
    assert torch.equal(full.success, res.success)
    print(f"line search, all 256 scales per image (no early exit): {1000 * dt_full / len(ys):.1f} ms/image")


if __name__ == "__main__":
    main()
