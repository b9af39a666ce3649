"""Time ``perturbscope reproduce fashion-mnist``: the scaled-down default, measured, and the paper's
full protocol, extrapolated from a measured fraction of its work.

Full protocol per pair (paper Section 7.2.2): 100 epochs over all ~12,000 training images of the
pair with the width-1 network, then the audit of 12,000 train + 2,000 test images: one
line search (gradient + up to 256 scales) per correct image and 4 x 2000 random probes per
adversarially susceptible image. We time (a) SGD steps of batch 128 at width 1, (b) the line
search and (c) the random probe on a few images at width 1, and scale each by its count.
The probe's share uses the paper's adversarial susceptibility of each pair (Table 20), since an
untrained network's susceptibility says nothing about a trained one's.

Usage::

    .venv/bin/python benchmarks/bench_reproduce.py --out benchmarks/results/reproduce.json
    .venv/bin/python benchmarks/bench_reproduce.py --skip-default     # extrapolation only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from perturbscope.attacks.line_search import LineSearch
from perturbscope.data import load_pair_task
from perturbscope.experiments.reproduce import ReproduceConfig, run_reproduction
from perturbscope.experiments.store import ResultsStore
from perturbscope.experiments.tables import paper_tables
from perturbscope.models.pair_cnn import PairCNN
from perturbscope.probes.random_probe import random_probe
from perturbscope.train import TrainConfig, train_binary


def bench_default(pairs: int, device: str) -> dict:
    cfg = ReproduceConfig.scaled_down(pairs=tuple((i, i + 1) for i in range(pairs)), device=device)
    with tempfile.TemporaryDirectory() as tmp, ResultsStore(Path(tmp) / "bench.sqlite") as store:
        t0, c0 = time.perf_counter(), time.process_time()
        out = run_reproduction(cfg, store, progress=False, threads=torch.get_num_threads())
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        units = store.units(out.run_id)
        train_s = {k: store.get_artifact(out.run_id, k)[1]["seconds"]
                   for k in store.artifact_keys(out.run_id)}
        summ = store.summaries(out.run_id)
    return {"config": cfg.to_dict(), "pairs": pairs, "seconds_total": total, "cpu_seconds": cpu,
            "load_average": os.getloadavg(),
            "seconds_training": sum(train_s.values()), "seconds_audit": float(units["seconds"].sum()),
            "per_pair_training_s": train_s,
            "accuracy_test": dict(zip(summ[summ.split == "test"].pair, summ[summ.split == "test"].accuracy,
                                      strict=True)),
            "extrapolated_9_pairs_s": total * 9 / pairs, "extrapolated_9_pairs_cpu_s": cpu * 9 / pairs}


def bench_full_fraction(device: str, sgd_steps: int, attack_images: int, probe_images: int) -> dict:
    task = load_pair_task("fashion-mnist", "train", 7, 8)
    test = load_pair_task("fashion-mnist", "test", 7, 8)
    n_train, n_test = len(task), len(test)
    torch.manual_seed(0)
    model = PairCNN(width=1.0).to(device)
    x = task.x[: 128 * sgd_steps]
    y = task.y[: 128 * sgd_steps]
    train_binary(model, x[:128], y[:128], TrainConfig(epochs=1), progress=False, device=device)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    train_binary(model, x, y, TrainConfig(epochs=1), progress=False, device=device)
    per_step, cpu_step = (time.perf_counter() - t0) / sgd_steps, (time.process_time() - c0) / sgd_steps
    steps_per_pair = 100 * -(-n_train // 128)
    model.eval()
    xa, ya = task.x[:attack_images], task.y[:attack_images]
    t0, c0 = time.perf_counter(), time.process_time()
    res = LineSearch()(model, xa, ya, output="sigmoid")
    per_attack, cpu_attack = ((time.perf_counter() - t0) / attack_images,
                              (time.process_time() - c0) / attack_images)
    xp = task.x[:probe_images]
    t0, c0 = time.perf_counter(), time.process_time()
    random_probe(model, xp, torch.full((probe_images,), 1.0), draws=2000, output="sigmoid")
    per_probe = (time.perf_counter() - t0) / probe_images
    cpu_probe = (time.process_time() - c0) / probe_images
    ref = paper_tables()["fashion-mnist"]["table20"]["adversarial_susceptibility"]
    total = cpu_total = 0.0
    for v in ref.values():
        n_adv = n_train * v["train"] / 100 + n_test * v["test"] / 100
        total += steps_per_pair * per_step + (n_train + n_test) * per_attack + n_adv * per_probe
        cpu_total += steps_per_pair * cpu_step + (n_train + n_test) * cpu_attack + n_adv * cpu_probe
    return {"device": device, "n_train_pair_7_8": n_train, "n_test_pair_7_8": n_test,
            "sgd_step_s": per_step, "sgd_steps_per_pair": steps_per_pair,
            "line_search_per_image_s": per_attack,
            "attack_success_untrained": float(res.success.float().mean()),
            "probe_per_image_s": per_probe, "training_per_pair_s": steps_per_pair * per_step,
            "extrapolated_total_s": total, "extrapolated_total_h": total / 3600,
            "cpu_s": {"sgd_step": cpu_step, "line_search_per_image": cpu_attack,
                      "probe_per_image": cpu_probe},
            "extrapolated_total_cpu_h": cpu_total / 3600,
            "load_average": os.getloadavg(),
            "note": "per-pair image counts taken as pair 7-8's (all pairs have 12000/2000)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=9, help="pairs of the scaled-down default to run (1..9)")
    ap.add_argument("--skip-default", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sgd-steps", type=int, default=5)
    ap.add_argument("--attack-images", type=int, default=16)
    ap.add_argument("--probe-images", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    doc = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
    doc["full_protocol"] = bench_full_fraction(args.device, args.sgd_steps, args.attack_images,
                                               args.probe_images)
    print(json.dumps(doc["full_protocol"], indent=1))
    if not args.skip_default:
        doc["scaled_down_default"] = bench_default(args.pairs, args.device)
        print(json.dumps({k: v for k, v in doc["scaled_down_default"].items() if k != "config"}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
