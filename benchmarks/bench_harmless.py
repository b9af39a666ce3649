"""Time and memory to get the harmless space (basis, certificate or projector) of first layers.

Each case runs in a fresh Python process (one BLAS and torch thread) so that its peak resident memory
(``ru_maxrss``) is its own. Usage::

    .venv/bin/python benchmarks/bench_harmless.py             # all cases
    .venv/bin/python benchmarks/bench_harmless.py --case resnet_layer2_conv1

Cases:
  paircnn_conv1        the paper's PairCNN first conv 3->64 K3 P1 on 3x28x28 (Gram/Cholesky certificate)
  paircnn_conv1_dense  the same layer by dense QR + SVD (float64, 944 MB matrix)
  patch_vit_s16        ViT-S/16 patch embedding 3->384 K16 S16 on 3x224x224 (one 384x768 SVD)
  conv_dense_4096      conv 16->16 K3 S2 P1 on 16x16x16 (n = 4096) by dense SVD: basis (4096, 3072)
  resnet_layer2_conv1  ResNet-18 layer2.block0.conv1 64->128 K3 S2 P1 on 64x32x32, matrix-free CG:
                       setup (Lanczos run) and projection of a batch of 8
  mlp_224              MLP first layer Linear(150528 -> 256) on 3x224x224: economy SVD, row-space form
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CASES = (
    "paircnn_conv1",
    "paircnn_conv1_dense",
    "patch_vit_s16",
    "conv_dense_4096",
    "resnet_layer2_conv1",
    "mlp_224",
)


def run_case(name: str) -> dict:
    import resource

    import torch
    from threadpoolctl import threadpool_limits
    from torch import nn

    from perturbscope.harmless import harmless_space, layer_map

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict = {"case": name}
    with threadpool_limits(1):
        t0 = time.perf_counter()
        if name in ("paircnn_conv1", "paircnn_conv1_dense"):
            method = "auto" if name == "paircnn_conv1" else "dense"
            sp = harmless_space(
                nn.Conv2d(3, 64, 3, padding=1), (3, 28, 28), method=method, max_dense_bytes=4 << 30
            )
        elif name == "patch_vit_s16":
            sp = harmless_space(nn.Conv2d(3, 384, 16, 16), (3, 224, 224))
        elif name == "conv_dense_4096":
            sp = harmless_space(nn.Conv2d(16, 16, 3, 2, 1), (16, 16, 16), method="dense")
            out["basis_shape"] = list(sp.basis().shape)
        elif name == "resnet_layer2_conv1":
            conv = nn.Conv2d(64, 128, 3, 2, 1)
            sp = harmless_space(conv, (64, 32, 32), method="auto")
            out["setup_s"] = time.perf_counter() - t0
            d = torch.randn(8, 64, 32, 32, dtype=torch.float64)
            t1 = time.perf_counter()
            p = sp.project(d)
            out["project_batch8_s"] = time.perf_counter() - t1
            lm = layer_map(conv, (64, 32, 32))
            out["harmless_defect_rel"] = float((lm.apply(p).norm(dim=1) / lm.apply(d).norm(dim=1)).max())
            out["cg_last"] = sp.notes.get("last_cg")
        elif name == "mlp_224":
            sp = harmless_space(nn.Linear(3 * 224 * 224, 256), (3, 224, 224), max_dense_bytes=2 << 30)
        else:
            raise ValueError(f"unknown case {name!r}; known: {CASES}")
        out["total_s"] = time.perf_counter() - t0
    s = sp.summary()
    out.update(
        {
            k: s[k]
            for k in (
                "layer",
                "n",
                "m",
                "rank",
                "harmless_dim",
                "exact",
                "injective",
                "method",
                "sigma_max",
                "sigma_min",
            )
        }
    )
    for k in ("cg_iterations", "cg_relative_residual", "rank_estimate", "gram_margin"):
        if k in s:
            out[k] = s[k]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["rss_before_mb"] = rss0 / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=CASES, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_case(args.case), default=str))
        return
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for case in [args.case] if args.case else CASES:
        res = subprocess.run(
            [sys.executable, __file__, "--case", case, "--child"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if res.returncode:
            print(json.dumps({"case": case, "error": res.stderr.strip().splitlines()[-1:]}))
        else:
            print(res.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
