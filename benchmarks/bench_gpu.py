"""One-command device benchmark: the probe against the raw forward ceiling, at two input sizes.

For the paper's Fashion-MNIST network (width 1, 3x28x28) and a ResNet-50-shaped network at
3x224x224 (random weights; torchvision is not needed), on the chosen device, it prints:

* the raw forward throughput (img/s) in fp32 and bf16 autocast, default layout and channels_last;
* the random probe's throughput (perturbed img/s, draws generated on the device in chunks) and
  its ratio to the raw ceiling (channels_last, measured just before and just after the probe, so
  that a change of load cancels out), in fp32 and in bf16 (decisions re-checked in fp32);
* the peak device memory of each stage (CUDA) or the peak resident memory of the process (CPU);
* projections, from the measured rates, of the paper's full nine-pair Fashion-MNIST
  reproduction and of its 20,480-image ImageNet audit (counts of forwards explained below).

    python benchmarks/bench_gpu.py --device cuda            # < 5 minutes on one GPU
    python benchmarks/bench_gpu.py --device cpu --quick     # the same measurements, scaled down

Projections (forwards counted as single-input forward passes):
  Fashion-MNIST, per pair: training 100 epochs x 12,000 images x 3 (forward + backward ~ 3
  forwards); audit of 14,000 images: line search ~16 forwards/image (coarse search: 15-17 on trained
  pairs, benchmarks/RESULTS-scale.md; 164-211 for the early-exit grid) + the probe, adversarially
  susceptible share x 4 alphas x 2000 draws (susceptible share 0.55, the paper's Table 20 median). Nine pairs.
  ImageNet: 20,480 images x (line search ~16 + 0.94 x 2000 probe draws at alpha = 10 (Table 25)).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time

import torch
from torch import nn

from perturbscope.models import Classifier, PairCNN
from perturbscope.probes.random_probe import random_probe


# ------------------------------------------------------------------ a ResNet-50-shaped network
class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def resnet50_shaped(num_classes: int = 1000) -> nn.Module:
    """ResNet-50's layer shapes (3-4-6-3 bottlenecks, 25.6 M parameters), random weights."""
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            layers.append(Bottleneck(cin, width, stride if b == 0 else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


# ------------------------------------------------------------------ measurements
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float:
    """Peak memory in MiB: CUDA allocator peak, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def raw_rate(model: nn.Module, shape: tuple[int, ...], batch: int, device: torch.device, dtype: str,
             channels_last: bool, seconds: float) -> float:
    x = torch.rand((batch, *shape), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if dtype == "bf16"
           else torch.autocast(device_type=device.type, enabled=False))
    with torch.inference_mode(), ctx:
        model(x)
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            n += batch
        _sync(device)
    return n / (time.perf_counter() - t0)


def probe_rate(clf: Classifier, shape: tuple[int, ...], images: int, draws: int, batch: int,
               precision: str, channels_last: bool, inputs: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[float, float, int]:
    """Probe throughput (perturbed img/s), peak memory (MiB) and re-checked draws. ``inputs``:
    ``(x, eps)`` to probe (real images and their line-search eps); default random inputs, eps 0.5."""
    device = clf.device
    if inputs is None:
        x = torch.rand((images, *shape), device=device) * 0.5 + 0.25
        eps = torch.full((images,), 0.5, dtype=torch.float64)
    else:
        x, eps = inputs[0].to(device), inputs[1]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    _sync(device)
    t0 = time.perf_counter()
    res = random_probe(clf, x, eps, alphas=(10.0,), draws=draws, seed=0, batch_size=batch,
                       precision=precision, memory_format=fmt)
    _sync(device)
    return res.forwards / (time.perf_counter() - t0), _peak(device), res.rechecked


def trained_inputs(clf: Classifier, classes: tuple[int, int], images: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` adversarially susceptible Fashion-MNIST test images of the pair and their eps_adv
    (coarse line search, s_max 10), so that the reduced-precision re-checks are those of a real audit."""
    from perturbscope.attacks import LineSearch
    from perturbscope.data import load_pair_task

    t = load_pair_task("fashion-mnist", "test", *classes, limit=max(8 * images, 64), seed=0)
    x, y = t.x.to(clf.device), t.y.to(clf.device)
    ok = clf.predict(x) == y
    res = LineSearch(s_max=10.0, search="coarse")(clf, x[ok], y[ok])
    hit = res.success.cpu()
    if int(hit.sum()) < images:
        raise SystemExit(f"only {int(hit.sum())} susceptible images among {int(ok.sum())}; lower --images")
    return x[ok][hit][:images], res.eps_l2[hit][:images].double().cpu()


def bench_network(name: str, module: nn.Module, shape: tuple[int, ...], output: str, args, device,
                  trained: tuple[int, int] | None = None) -> dict:
    module = module.to(device).eval()
    out: dict = {"network": name, "input": "x".join(map(str, shape)),
                 "params": sum(p.numel() for p in module.parameters())}
    for cl in (False, True):
        m = module.to(memory_format=torch.channels_last) if cl else module
        for dt in ("fp32", "bf16"):
            key = f"raw_{dt}{'_cl' if cl else ''}"
            out[key] = raw_rate(m, shape, args.batch, device, dt, cl, args.seconds)
    cl = True
    m = module.to(memory_format=torch.channels_last)
    clf = Classifier(m, output, bounds=(0.0, 1.0))
    inputs = trained_inputs(clf, trained, args.images) if trained is not None else None
    out["probe_inputs"] = "trained: susceptible test images, eps_adv" if trained else "random, eps 0.5"
    for prec in ("fp32", "bf16"):
        # at least as many perturbed inputs as the raw measurement made, so that the probe is timed
        # over as long a stretch (a short probe measures its set-up), after a small warm-up call
        draws = max(args.draws, math.ceil(out[f"raw_{prec}_cl"] * args.seconds / args.images))
        probe_rate(clf, shape, args.images, min(8, draws), args.batch, prec, cl, inputs)
        _peak_reset(device)
        rates, ratios, before = [], [], out[f"raw_{prec}_cl"]
        for _ in range(args.repeats):
            rate, peak, rechecked = probe_rate(clf, shape, args.images, draws, args.batch, prec, cl, inputs)
            # the ceiling measured again right after the probe: each ratio is to the mean of the two
            # measurements around it, so that a change of load during the run cancels out
            after = raw_rate(m, shape, args.batch, device, prec, cl, args.seconds)
            rates.append(rate)
            ratios.append(rate / ((before + after) / 2))
            before = after
        out[f"probe_{prec}_draws"] = draws
        out[f"raw_{prec}_cl_after_probe"] = after
        out[f"probe_{prec}"], out[f"probe_{prec}_ratio"] = statistics.median(rates), statistics.median(ratios)
        out[f"probe_{prec}_ratios"] = ratios
        out[f"probe_{prec}_peak_mib"], out[f"probe_{prec}_rechecked"] = peak, rechecked
    return out


def projections(fm: dict, inet: dict) -> dict:
    best_fm = max(fm["probe_fp32"], fm["probe_bf16"])
    best_in = max(inet["probe_fp32"], inet["probe_bf16"])
    train_fwd = 100 * 12_000 * 3
    audit_fwd = 14_000 * (16 + 0.55 * 4 * 2000)
    fm_seconds = 9 * (train_fwd / fm["raw_fp32_cl"] + audit_fwd / best_fm)
    in_fwd = 20_480 * (16 + 0.94 * 2000)
    return {"fashion_mnist_9_pairs_hours": fm_seconds / 3600,
            "fashion_mnist_forwards": 9 * (train_fwd + audit_fwd),
            "imagenet_20480_hours": in_fwd / best_in / 3600, "imagenet_forwards": in_fwd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None,
                    help="forward batch (default: 512 on CUDA, 256 on CPU: the audit's automatic batch "
                         "there; the ResNet-50-shaped network uses 8 on the CPU)")
    ap.add_argument("--draws", type=int, default=None, help="probe draws (default 2000 on CUDA, 128 on CPU)")
    ap.add_argument("--images", type=int, default=2, help="images probed per network")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per raw-forward measurement")
    ap.add_argument("--quick", action="store_true", help="small sizes (a CPU smoke run)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="probe measurements per network and precision, each between two raw ones (median)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    ap.add_argument("--checkpoint", default=None,
                    help="a trained Fashion-MNIST pair checkpoint: its weights and real test images of its "
                         "pair (eps from the line search) for the first network, instead of random ones; the "
                         "bf16 re-check rate is then that of a real audit")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.batch = args.batch or (512 if cuda else (16 if args.quick else 256))
    args.draws = args.draws or (2000 if cuda else (32 if args.quick else 128))
    args.seconds = args.seconds or (5.0 if cuda else 3.0)
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"device {name}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"draws {args.draws}")
    torch.manual_seed(0)
    trained = None
    if args.checkpoint:
        from perturbscope.models.checkpoint import load_checkpoint

        fm_net, meta = load_checkpoint(args.checkpoint)
        trained = tuple(meta["classes"])
        fm_name = (f"paper Fashion-MNIST CNN, trained ({args.checkpoint}, classes {trained[0]} vs "
                   f"{trained[1]})")
    else:
        fm_net, fm_name = PairCNN(width=1.0), "paper Fashion-MNIST CNN (width 1, random weights)"
    fm = bench_network(fm_name, fm_net, (3, 28, 28), "sigmoid", args, device, trained)
    rn_batch = args.batch if cuda else (4 if args.quick else 8)
    rn_args = argparse.Namespace(**{**vars(args), "batch": rn_batch})
    inet = bench_network("ResNet-50-shaped", resnet50_shaped(), (3, 224, 224), "logits", rn_args, device)
    proj = projections(fm, inet)
    for r in (fm, inet):
        print(f"\n{r['network']} ({r['input']}, {r['params'] / 1e6:.2f} M parameters)")
        print(f"  raw forward img/s: fp32 {r['raw_fp32']:.0f}, bf16 {r['raw_bf16']:.0f}; channels_last "
              f"fp32 {r['raw_fp32_cl']:.0f}, bf16 {r['raw_bf16_cl']:.0f}")
        for p in ("fp32", "bf16"):
            before, after = r[f"raw_{p}_cl"], r[f"raw_{p}_cl_after_probe"]
            spread = ", ".join(f"{v:.3f}" for v in r[f"probe_{p}_ratios"])
            print(f"  probe {p}: {r[f'probe_{p}']:.0f} img/s = {r[f'probe_{p}_ratio']:.3f} of raw (median of "
                  f"{spread}; channels_last {p} raw before and after: {before:.0f}, {after:.0f}); peak "
                  f"{r[f'probe_{p}_peak_mib']:.0f} MiB; {r[f'probe_{p}_draws']} draws x {args.images} "
                  f"images, "
                  f"{r[f'probe_{p}_rechecked']} re-checked in fp32 "
                  f"(inputs: {r['probe_inputs']})")
    print(f"\nprojected: paper's nine-pair Fashion-MNIST reproduction "
          f"{proj['fashion_mnist_9_pairs_hours']:.2f} h ({proj['fashion_mnist_forwards']:.3g} forwards); "
          f"20,480-image ImageNet audit {proj['imagenet_20480_hours']:.2f} h "
          f"({proj['imagenet_forwards']:.3g} forwards)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "fashion_mnist": fm, "resnet50": inet, "projections": proj}, f,
                      indent=2, default=lambda v: v if math.isfinite(v) else None)


if __name__ == "__main__":
    main()
