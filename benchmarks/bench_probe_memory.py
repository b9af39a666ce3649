"""Issue 15: peak memory of the paper's random probe at ImageNet size, on the CPU.

The paper's probe draws 2000 vectors uniform in the unit L2 ball of R^150528 (3x224x224) and
evaluates every image at ``x + alpha * eps * zeta_k``. Each measurement runs in a fresh
subprocess and reports that process's peak resident memory (``ru_maxrss``), so one case cannot
inflate another.

    python benchmarks/bench_probe_memory.py                  # probe with a ResNet-50-shaped model
    python benchmarks/bench_probe_memory.py --case draws-all # all 2000 draws at once (the old way)

Cases: ``probe`` (the chunked probe, 2000 draws, a ResNet-50-shaped network with random
weights, forward batch 16), ``draws-all`` (only ``uniform_ball(2000, 150528)`` in one call: the
memory the previous implementation needed before its first forward), ``model`` (the network and
one forward batch alone: the floor under any probe).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CASES = ("model", "probe", "draws-all")


def child(case: str, draws: int, batch: int, images: int, threads: int) -> dict:
    import resource

    import torch

    from perturbscope.sampling import uniform_ball

    torch.set_num_threads(threads)
    shape = (3, 224, 224)
    out: dict = {"case": case, "draws": draws, "batch": batch, "images": images}
    t0 = time.perf_counter()
    if case == "draws-all":
        z = uniform_ball(draws, shape, seed=0)
        out["draws_mib"] = z.numel() * z.element_size() / 2**20
    else:
        sys.path.insert(0, "benchmarks")
        from bench_gpu import resnet50_shaped
        from perturbscope.models import Classifier

        torch.manual_seed(0)
        net = resnet50_shaped().eval()
        clf = Classifier(net, "logits")
        x = torch.rand((images, *shape)) * 0.5 + 0.25
        if case == "model":
            with torch.inference_mode():
                net(x[:1].expand(batch, *shape).contiguous())
        else:
            from perturbscope.probes.random_probe import random_probe

            res = random_probe(clf, x, torch.full((images,), 0.5, dtype=torch.float64), alphas=(10.0,),
                               draws=draws, seed=0, batch_size=batch)
            out["forwards"] = res.forwards
            out["flips"] = res.counts.tolist()
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=CASES, action="append", default=None)
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    cases = args.case or list(CASES[:2])
    if args.child:
        print(json.dumps(child(cases[0], args.draws, args.batch, args.images, args.threads)))
        return
    for case in cases:
        cmd = [sys.executable, __file__, "--child", "--case", case, "--draws", str(args.draws),
               "--batch", str(args.batch), "--images", str(args.images), "--threads", str(args.threads)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        r = json.loads(done.stdout.splitlines()[-1])
        extra = f", {r['forwards']} forwards, flips {r['flips']}" if "forwards" in r else ""
        print(f"{case}: peak RSS {r['peak_rss_mib']:.0f} MiB, {r['seconds']:.1f} s{extra}", flush=True)


if __name__ == "__main__":
    main()
