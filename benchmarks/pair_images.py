"""Shared by the issue-7 experiment scripts: a pair checkpoint and one test image it can attack.

Scripts in ``benchmarks/`` run as ``python benchmarks/NAME.py``, so this module is importable
as ``pair_images`` from them.
"""

from __future__ import annotations

import torch
from torch import nn

from perturbscope.attacks.line_search import LineSearch
from perturbscope.data import load_pair_task
from perturbscope.models.checkpoint import load_checkpoint


def attacked_test_image(checkpoint: str, image: int, candidates: int = 20
                        ) -> tuple[nn.Module, torch.Tensor, float, int]:
    """Load ``checkpoint`` (eval mode) and pick a Fashion-MNIST-subset 7-vs-8 test image.

    ``image`` indexes the images, among the first ``candidates`` test images, on which the
    paper's gradient line search (bisection to 1e-3) finds a flip. Returns ``(model, x, eps_adv,
    test_index)``: ``x`` of shape ``(1, 3, 28, 28)``, ``eps_adv`` its L2 attack norm (pixel units).
    """
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    te = load_pair_task("fashion-mnist-subset", "test", 7, 8)
    ls = LineSearch(refine_tol=1e-3)(model, te.x[:candidates], te.y[:candidates], output="sigmoid")
    # a misclassified image counts as a success with a zero perturbation: not attacked
    hits = [k for k in range(candidates) if bool(ls.success[k]) and float(ls.eps_l2[k]) > 0]
    if not 0 <= image < len(hits):
        raise ValueError(f"image must be in [0, {len(hits)}): the line search flips {len(hits)} "
                         f"of the first {candidates} test images")
    i = hits[image]
    return model, te.x[i:i + 1], float(ls.eps_l2[i]), i
