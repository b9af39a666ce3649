"""Issue 15: the coarse line search against the exact early-exit grid, on trained networks.

Runs both searches (256 scales in (0, s_max], the paper's protocol) on the same images and
reports the forwards per image of each, the ratio, and the share of images whose smallest
flipping grid point (eps_adv) is identical, plus the images the coarse search re-scanned.

    python benchmarks/bench_line_search.py --checkpoint benchmarks/results/full78/epoch008.pt \
        --data fashion-mnist --classes 7 8 --images 500
    python benchmarks/bench_line_search.py --multiclass-demo --images 300   # CIFAR-sized 10-class CNN
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from perturbscope.attacks import LineSearch
from perturbscope.models import as_classifier


def compare(clf, x, y, s_max: float, steps: int, batch: int) -> dict:
    out = {}
    for search in ("grid", "coarse"):
        t0 = time.perf_counter()
        res = LineSearch(s_max=s_max, steps=steps, search=search, batch_size=batch)(clf, x, y)
        out[search] = (res, time.perf_counter() - t0)
    g, c = out["grid"][0], out["coarse"][0]
    same = (torch.nan_to_num(g.eps_l2, -1.0) == torch.nan_to_num(c.eps_l2, -1.0))
    n = x.shape[0]
    return {"images": n, "flipped_grid": int(g.success.sum()), "flipped_coarse": int(c.success.sum()),
            "forwards_grid": g.forwards / n, "forwards_coarse": c.forwards / n,
            "ratio": g.forwards / max(c.forwards, 1), "identical": float(same.double().mean()),
            "differ": int((~same).sum()), "rescanned": int(c.extras["rescanned"].sum()),
            "seconds_grid": out["grid"][1], "seconds_coarse": out["coarse"][1],
            "coarse_smaller": int(((c.eps_l2 < g.eps_l2) & ~same).sum()),
            "coarse_larger_or_missed": int((~same).sum() - ((c.eps_l2 < g.eps_l2) & ~same).sum())}


def multiclass_demo(images: int, seed: int = 0):
    """A CIFAR-sized (3x32x32) 10-class network (the paper's CIFAR architecture at width 0.5, 10
    logits) trained 4 epochs with Adam on 12,000 Fashion-MNIST images padded to 32x32."""
    from perturbscope.data import load_fashion_mnist
    from perturbscope.models.pair_cnn import PairCNN

    imgs, labels = load_fashion_mnist("train")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(labels), generator=g)[:12000]
    x = torch.from_numpy(imgs[idx.numpy()]).float().div(255).unsqueeze(1)
    x = nn.functional.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1)
    y = torch.from_numpy(labels[idx.numpy()]).long()
    torch.manual_seed(seed)
    body = PairCNN(width=0.5, deep=True)
    body.head[-1] = nn.Linear(body.head[-1].in_features, 10)
    net = nn.Sequential(body.features, _GlobalMax(), body.head)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(4):
        perm = torch.randperm(len(y), generator=g)
        for s in range(0, len(y), 128):
            b = perm[s:s + 128]
            loss = nn.functional.cross_entropy(net(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    te_imgs, te_labels = load_fashion_mnist("test")
    xt = torch.from_numpy(te_imgs[:images]).float().div(255).unsqueeze(1)
    xt = nn.functional.pad(xt, (2, 2, 2, 2)).repeat(1, 3, 1, 1)
    yt = torch.from_numpy(te_labels[:images]).long()
    clf = as_classifier(net, "logits")
    acc = float((clf.predict(xt) == yt).double().mean())
    return clf, xt, yt, acc


class _GlobalMax(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.amax(h, dim=(2, 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--classes", nargs=2, type=int, default=[7, 8])
    ap.add_argument("--split", default="test")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--s-max", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--multiclass-demo", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.multiclass_demo:
        clf, x, y, acc = multiclass_demo(args.images)
        print(f"10-class CNN on 3x32x32 (Fashion-MNIST padded), test accuracy {100 * acc:.1f}%")
    else:
        from perturbscope.data import load_pair_task
        from perturbscope.models.checkpoint import load_checkpoint

        model, _ = load_checkpoint(args.checkpoint)
        clf = as_classifier(model)
        t = load_pair_task(args.data, args.split, *args.classes, limit=args.images, seed=0)
        x, y = t.x, t.y
    ok = clf.predict(x) == y
    x, y = x[ok], y[ok]
    r = compare(clf, x, y, args.s_max, args.steps, args.batch)
    print(f"{r['images']} correctly classified images; flipped: grid {r['flipped_grid']}, "
          f"coarse {r['flipped_coarse']}")
    print(f"forwards/image: grid {r['forwards_grid']:.1f}, coarse {r['forwards_coarse']:.1f} "
          f"(ratio {r['ratio']:.2f}); seconds: grid {r['seconds_grid']:.1f}, "
          f"coarse {r['seconds_coarse']:.1f}")
    print(f"identical eps_adv: {100 * r['identical']:.2f}% ({r['differ']} differ: coarse smaller "
          f"{r['coarse_smaller']}, larger or missed {r['coarse_larger_or_missed']}); "
          f"re-scanned {r['rescanned']}")


if __name__ == "__main__":
    main()
