"""Issue 17: one training run step by step, to see how the paper's protocol collapses.

Prints, for the first steps of epoch 1 of the paper's network (width 1) on the full Fashion-MNIST
7-vs-8 pair with the paper's optimiser (MSE on the sigmoid, SGD lr 0.1, Nesterov 0.9, batch 128),
the batch loss, the train-mode logits (mean and sd), the globally max-pooled features, the output
bias and its gradient, and the share of dead pooled features. The batching follows
perturbscope.train.train_binary (the same seeded permutation); thread count changes the rounding
and therefore which seeds collapse (seed 1 collapses with 2 threads).

    python benchmarks/exp_collapse_trace.py --seed 1 --steps 60 --threads 2
"""

from __future__ import annotations

import argparse

import torch

from perturbscope.data import load_pair_task
from perturbscope.models import PairCNN
from perturbscope.sampling import make_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t = load_pair_task("fashion-mnist", "train", 7, 8)
    torch.manual_seed(args.seed)
    m = PairCNN(width=1.0)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    perm = torch.randperm(len(t.y), generator=make_generator(args.seed))
    m.train()
    for step in range(args.steps):
        idx = perm[step * 128:(step + 1) * 128]
        xb, yb = t.x[idx], t.y[idx].float()
        pooled = m.features(xb).amax(dim=(2, 3))
        z = m.head(pooled)[:, 0]
        loss = ((torch.sigmoid(z) - yb) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        gb = m.head[2].bias.grad.item()
        opt.step()
        dead = (pooled == 0).float().mean().item()
        print(f"{step:3d} loss {loss.item():.3f} z {z.mean().item():+7.2f} sd {z.std().item():5.2f} "
              f"pooled mean {pooled.mean().item():.2f} max {pooled.max().item():5.1f} "
              f"bias {m.head[2].bias.item():+.3f} grad {gb:+.2e} dead {dead:.2f}", flush=True)


if __name__ == "__main__":
    main()
