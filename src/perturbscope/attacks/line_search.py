"""The paper's L2 attack (Section 7.1.2): a line search along the normalised loss gradient.

For each input ``x`` with label ``l``::

    v = grad_x L(N(x), l) / ||grad_x L(N(x), l)||_2          (L = MSE of the output vs the label)
    s* = min { s_k = s_max * k / steps : f(x + s_k v) != l,  k = 1..steps }

``s*`` is an upper bound on the L2 distance from ``x`` to the decision surface. An optional
bisection then shrinks ``s*`` inside ``(s_{k-1}, s_k]`` until the bracket is below
``refine_tol`` (the returned perturbation still flips the prediction).

Two searches give the paper's answer, the smallest flipping grid point:

``search="grid"`` (exact)
    scales are tried in increasing chunks of ``chunk`` and an image leaves the search at its
    first flip; images that flip early cost fewer than ``steps`` forwards, images that never
    flip cost ``steps``.
``search="coarse"``
    every ``stride``-th grid point first, one per round (an image leaves at its first flip),
    then inside the first flipping coarse interval up to three secant guesses on the grid from
    the margins at the bracket's ends, each checked with its neighbour, and a bisection for what
    is left (2-4 forwards where the margin is close to linear there). It returns the exact
    grid's answer unless the prediction flips and flips back between two coarse points, or
    flips back inside the bracket being narrowed. The model's margin is recorded at the clean
    input and at every coarse point; an island needs the margin to fall below zero and come back
    within one coarse interval, so every interval before the first coarse flip whose end margins
    are small compared with how much the margin bends between coarse points (see
    ``island_factor``) is searched again (``extras["rescanned"]``): the margins at every
    ``stride // 4``-th grid point inside it, then the exact grid inside the sub-interval that
    ends in a flip and inside every earlier sub-interval that fails the same test at the finer
    spacing. An island in an interval with large margins at both ends, or an earlier crossing
    inside the bracket, is not seen; how often the two searches disagree on trained networks,
    and the forwards each costs, is measured in benchmarks/RESULTS-scale.md (100% identical
    eps on 1,043 images of three trained networks).

A saturated sigmoid makes the MSE gradient exactly zero in floating point (for ``|z| > ~17`` in
float32, ``sigmoid(z)`` rounds to 0 or 1). With ``saturated="fail"`` (the paper's literal
protocol) such an input is "not susceptible"; with ``saturated="logit"`` the direction is taken
from the gradient of the logit margin instead, which is the same direction wherever the MSE
gradient is not zero (``grad L = 2 (p - l) sigmoid'(z) grad z``) and does not underflow. Which
inputs needed it is reported in ``result.extras["gradient_fallback"]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch

from perturbscope.attacks.base import Attack, RunOutput, register_attack
from perturbscope.models.classifier import Classifier, input_gradient
from perturbscope.validation import check_float, check_int

__all__ = ["LineSearch", "loss_gradient_direction", "SATURATED_POLICIES"]

SATURATED_POLICIES = ("fail", "logit")
SEARCHES = ("grid", "coarse")


def _mse_loss(clf: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over the batch of the paper's MSE loss between the model's probabilities and the label,
    and the ``(B,)`` signed margins of the same forward pass (detached)."""
    prob, s = clf.probabilities_and_scores(x)
    margin = clf.margin_of_scores(s.detach(), y).double()
    if prob.ndim == 2:
        target = torch.nn.functional.one_hot(y, prob.shape[1]).to(prob.dtype)
        return ((prob - target) ** 2).sum(), margin
    return ((prob - y.to(prob.dtype)) ** 2).sum(), margin


def _unit_rows(g: torch.Tensor, sign: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    flat = sign * g.reshape(g.shape[0], -1).double()
    n = flat.norm(dim=1)
    good = (n > 0) & torch.isfinite(n)
    unit = flat / torch.where(good, n, torch.ones_like(n)).unsqueeze(1)
    unit[~good] = 0
    return unit, good


def loss_gradient_direction(clf: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
                            saturated: str = "fail", margins: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit L2 directions ``(N, *shape)`` of the paper's loss gradient.

    Returns ``(directions, ok, fallback)``: ``ok`` ``(N,)`` marks nonzero directions, ``fallback``
    the rows whose MSE gradient was exactly zero and whose direction came from the logit margin
    (only with ``saturated="logit"``). Rows with no usable direction are zero. ``margins``, if
    given (``(N,)`` float64), receives the clean inputs' signed margins from the same forward
    passes. The classifier must already be in the mode the caller wants (normally eval).
    """
    found_margins = []
    with torch.inference_mode(False), torch.enable_grad():
        # allocated here, not in a caller's inference mode, so that they can be written below
        dirs = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        ok = torch.empty(x.shape[0], dtype=torch.bool, device=x.device)
        fallback = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for start in range(0, x.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            xb = x[sl].clone().requires_grad_(True)
            loss, m = _mse_loss(clf, xb, y[sl])
            g = input_gradient(loss, xb)
            if margins is not None:
                found_margins.append(m)
            unit, good = _unit_rows(g)
            if saturated == "logit" and not good.all():
                bad = (~good).nonzero()[:, 0]
                xz = x[sl][bad].clone().requires_grad_(True)
                gz = input_gradient(clf.margin(xz, y[sl][bad]).sum(), xz)
                unit_z, good_z = _unit_rows(gz, sign=-1.0)  # the margin decreases towards a flip
                unit[bad], good[bad] = unit_z, good_z
                fb = torch.zeros_like(good)
                fb[bad] = good_z
                fallback[sl] = fb
            dirs[sl] = unit.to(x.dtype).reshape(g.shape)
            ok[sl] = good
    if margins is not None and found_margins:
        margins.copy_(torch.cat(found_margins))
    return dirs, ok, fallback


@register_attack
@dataclass(frozen=True)
class LineSearch(Attack):
    """The paper's gradient line search (L2, unclipped by default).

    Attributes:
        s_max: largest L2 scale tried, in pixel units (default 10; the paper's value is lost).
        steps: number of equally spaced scales ``s_max * k / steps``, ``k = 1..steps`` (paper: 256).
        refine_tol: if set, bisect the flipping bracket to this L2 width (pixel units).
        chunk: scales tried per round before inputs that flipped leave the search (``search="grid"``;
            the coarse search tries one coarse point per round).
        saturated: ``"fail"`` (paper: a zero MSE gradient means not susceptible) or ``"logit"``
            (take the direction from the logit margin; see the module docstring).
        search: ``"grid"`` (exact early-exit scan) or ``"coarse"`` (coarse grid, island checks,
            secant and bisection on the grid; see the module docstring).
        stride: grid points per coarse step for ``search="coarse"``.
        island_factor: ``search="coarse"`` scans the grid points of a coarse interval before the
            first coarse flip when ``min(m_left, m_right) < island_factor * max |D2| / 8``: the
            margins at its ends against the largest second difference ``D2`` of the image's
            coarse margins (``h^2 max|m''| / 8`` bounds how far a smooth margin dips below the
            straight line between two coarse points).

    ``result.extras``: ``gradient_fallback`` and ``zero_gradient`` (``(N,)`` bool), and for
    ``search="coarse"`` ``rescanned`` (``(N,)`` bool: searched again on the exact grid).
    """

    name = "line-search"
    s_max: float = 10.0
    steps: int = 256
    refine_tol: float | None = None
    chunk: int = 32
    saturated: str = "fail"
    search: str = "grid"
    stride: int = 16
    island_factor: float = 4.0
    #: secant guesses (each checked with its neighbour) before the bisection, ``search="coarse"``
    SECANT_ROUNDS: ClassVar[int] = 3

    def validate(self) -> None:
        check_float("s_max", self.s_max, low=0.0, low_open=True)
        check_int("steps", self.steps, minimum=1)
        check_int("chunk", self.chunk, minimum=1)
        if self.refine_tol is not None:
            check_float("refine_tol", self.refine_tol, low=0.0, low_open=True)
        check_int("stride", self.stride, minimum=1)
        check_float("island_factor", self.island_factor, low=0.0)
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {self.search!r}")
        if self.saturated not in SATURATED_POLICIES:
            raise ValueError(f"saturated must be one of {SATURATED_POLICIES}, got {self.saturated!r}")

    def _batches(self, clf: Classifier, xs: torch.Tensor, ys: torch.Tensor
                 ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """``(rows, x batch, y batch)`` per forward batch; the inputs clipped to the bounds with ``clip``."""
        b = self.batch_size
        for start in range(0, xs.shape[0], b):
            xb = xs[start:start + b]
            if self.clip and clf.bounds is not None:
                xb = xb.clamp(*clf.bounds)
            yield slice(start, start + b), xb, ys[start:start + b]

    def _flips(self, clf: Classifier, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        out = torch.empty(xs.shape[0], dtype=torch.bool, device=xs.device)
        for rows, xb, yb in self._batches(clf, xs, ys):
            out[rows] = clf.labels_of(clf.raw(xb)) != yb
        return out

    def _margins(self, clf: Classifier, xs: torch.Tensor, ys: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Margins (float64) and flips of ``xs`` against ``ys``, in batches."""
        m = torch.empty(xs.shape[0], dtype=torch.float64, device=xs.device)
        f = torch.empty(xs.shape[0], dtype=torch.bool, device=xs.device)
        for rows, xb, yb in self._batches(clf, xs, ys):
            mb, lab = clf.margin_and_labels(xb, yb)
            m[rows] = mb.double()
            f[rows] = lab != yb
        return m, f

    def _points(self, x: torch.Tensor, direction: torch.Tensor, rows: torch.Tensor, ks: torch.Tensor,
                step: float) -> torch.Tensor:
        """``x[rows] + s_k v[rows]`` for every row and every ``k`` in ``ks`` (row-major), the scale
        computed exactly as the returned perturbation is."""
        nd = x.ndim
        scales = (ks.to(x.dtype) * step).view(1, -1, *([1] * (nd - 1)))
        xs = x[rows].unsqueeze(1) + scales * direction[rows].unsqueeze(1)
        return xs.reshape(-1, *x.shape[1:])

    def _grid_scan(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor,
                   rows: torch.Tensor, k_max: torch.Tensor, step: float, advance=None
                   ) -> tuple[torch.Tensor, int]:
        """Exact early-exit scan of grid points ``1..k_max[i]`` for ``rows``; 0 where none flips."""
        k_found = torch.zeros(rows.numel(), dtype=torch.long, device=x.device)
        active = torch.arange(rows.numel(), device=x.device)
        forwards = 0
        top = int(k_max.max()) if k_max.numel() else 0
        advance = advance or (lambda k: None)
        for k0 in range(1, top + 1, self.chunk):
            left = active[k_max[active] >= k0]
            advance(active.numel() - left.numel())
            active = left
            if active.numel() == 0:
                break
            ks = torch.arange(k0, min(k0 + self.chunk, top + 1), device=x.device)
            xs = self._points(x, direction, rows[active], ks, step)
            ys = y[rows[active]].repeat_interleave(len(ks))
            flips = self._flips(clf, xs, ys).view(len(active), len(ks))
            flips &= ks.view(1, -1) <= k_max[active].view(-1, 1)
            forwards += xs.shape[0]
            hit = flips.any(1)
            k_found[active[hit]] = ks[flips.to(torch.int8).argmax(1)[hit]]
            advance(int(hit.sum()))
            active = active[~hit]
        advance(active.numel())
        return k_found, forwards

    def _coarse_search(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor,
                       rows: torch.Tensor, step: float, clean_margin: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Coarse grid + bisection for ``rows`` (``clean_margin``: their margins at the clean input);
        returns ``(k_found, rescanned, forwards)``."""
        dev = x.device
        coarse = list(range(self.stride, self.steps + 1, self.stride))
        if not coarse or coarse[-1] != self.steps:
            coarse.append(self.steps)
        points = torch.tensor([0, *coarse], device=dev)  # grid index of each coarse point, 0 = clean
        r, c = rows.numel(), len(coarse)
        margins = torch.full((r, c + 1), math.nan, dtype=torch.float64, device=dev)
        margins[:, 0] = clean_margin
        forwards = 0
        first = torch.full((r,), c + 1, dtype=torch.long, device=dev)  # coarse position of the first flip
        active = torch.arange(r, device=dev)
        for p in range(1, c + 1):  # one coarse point per round: an image leaves at its first flip
            if active.numel() == 0:
                break
            pos = torch.tensor([p], device=dev)
            xs = self._points(x, direction, rows[active], points[pos], step)
            m, flips = self._margins(clf, xs, y[rows[active]])
            forwards += xs.shape[0]
            margins[active, p] = torch.where(flips, -m.abs().clamp_min(1e-300), m)
            first[active[flips]] = p
            active = active[~flips]
        # intervals before the first coarse flip where the margin comes close to zero compared with
        # how fast it changes: a flip island could hide there, so those intervals are searched again
        left, right = margins[:, :-1], margins[:, 1:]
        # a smooth margin deviates from the straight line between two coarse points by at most
        # h^2 max|m''| / 8, and the second difference of the coarse margins estimates h^2 |m''|
        d2 = (margins[:, 2:] - 2 * margins[:, 1:-1] + margins[:, :-2]).abs()
        bend = (torch.nan_to_num(d2, nan=0.0).amax(1) / 8 if d2.shape[1] else
                torch.zeros(r, dtype=torch.float64, device=dev))
        before = torch.arange(1, c + 1, device=dev).view(1, -1) < first.view(-1, 1)
        near = torch.minimum(left, right) < self.island_factor * bend.view(-1, 1)
        risky = before & (left > 0) & (right > 0) & near
        rescanned = risky.any(1)
        found = first <= c
        k_found = torch.zeros(r, dtype=torch.long, device=dev)
        sub = max(1, self.stride // 4)
        for i in rescanned.nonzero()[:, 0].tolist():
            floor = float(bend[i]) * (sub / self.stride) ** 2  # the coarse bend at the finer spacing
            for j in risky[i].nonzero()[:, 0].tolist():
                k, f = self._island_search(clf, x, y, direction, int(rows[i]), int(points[j]),
                                           int(points[j + 1]), float(margins[i, j]), float(margins[i, j + 1]),
                                           floor, sub, step)
                forwards += f
                if k:
                    k_found[i] = k
                    break
        # inside the first flipping coarse interval (lo, hi]: secant guesses on the grid from the
        # margins at the bracket's ends (exact when the margin is linear there), each checked with
        # its neighbour towards the other end, then a bisection for the brackets still open
        idx = (found & (k_found == 0)).nonzero()[:, 0]
        hi = points[first[idx]].clone()
        low = points[first[idx] - 1].clone()
        m_hi = margins[idx, first[idx]].clone()
        m_lo = margins[idx, first[idx] - 1].clone()
        it = 0
        while idx.numel():
            open_ = (hi - low) > 1
            if not open_.any():
                break
            it += 1
            secant = it <= self.SECANT_ROUNDS
            sel = open_.nonzero()[:, 0]
            lo_s, hi_s = low[sel], hi[sel]
            if secant:
                den = m_lo[sel] - m_hi[sel]
                frac = torch.where(den > 0, m_lo[sel] / torch.where(den > 0, den, 1.0), 0.5).clamp(0.0, 1.0)
                guess = lo_s + torch.ceil((hi_s - lo_s).double() * frac).long()
                guess = torch.minimum(torch.maximum(guess, lo_s + 1), hi_s - 1)
            else:
                guess = (lo_s + hi_s) // 2
            forwards += self._narrow(clf, x, y, direction, rows[idx], step, sel, guess, low, hi, m_lo, m_hi)
            if secant:  # the neighbour of the guess, towards the bracket's other end
                flipped = hi[sel] == guess
                nb = torch.where(flipped, guess - 1, guess + 1)
                keep = torch.where(flipped, nb > low[sel], nb < hi[sel])
                forwards += self._narrow(clf, x, y, direction, rows[idx], step, sel[keep], nb[keep],
                                         low, hi, m_lo, m_hi)
        k_found[idx] = hi
        return k_found, rescanned, forwards

    def _narrow(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor,
                rows: torch.Tensor, step: float, sel: torch.Tensor, ks: torch.Tensor, low: torch.Tensor,
                hi: torch.Tensor, m_lo: torch.Tensor, m_hi: torch.Tensor) -> int:
        """Evaluate grid point ``ks[t]`` of bracket ``sel[t]`` and move that bracket's end (and its
        margin) to it, in place; returns the forwards spent."""
        if sel.numel() == 0:
            return 0
        m, flip = self._margins(clf, self._points_rows(x, direction, rows[sel], ks, step), y[rows[sel]])
        hi[sel] = torch.where(flip, ks, hi[sel])
        m_hi[sel] = torch.where(flip, -m.abs(), m_hi[sel])
        low[sel] = torch.where(flip, low[sel], ks)
        m_lo[sel] = torch.where(flip, m_lo[sel], m)
        return sel.numel()

    def _first_flip(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor,
                    row: int, lo: int, hi: int, step: float) -> tuple[int, int]:
        """Exact scan of the grid points strictly between ``lo`` and ``hi`` for one input:
        ``(first flipping point or 0, forwards)``."""
        if hi - lo < 2:
            return 0, 0
        ks = torch.arange(lo + 1, hi, device=x.device)
        flips = self._flips(clf, self._points(x, direction, torch.tensor([row], device=x.device), ks, step),
                            y[row].repeat(len(ks)))
        return (int(ks[flips.to(torch.int8).argmax()]) if flips.any() else 0), len(ks)

    def _island_search(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor,
                       row: int, lo: int, hi: int, m_lo: float, m_hi: float, floor: float, sub: int,
                       step: float) -> tuple[int, int]:
        """Search the risky coarse interval ``(lo, hi)`` of one input for a flip island:
        ``(first flipping grid point or 0, forwards)``.

        The margins at every ``sub``-th grid point inside it are measured; the first sub-interval
        that ends in a flip, and every sub-interval before it whose end margins are small against
        the bend at that spacing (the same test as between coarse points, with ``floor``, the
        coarse bend scaled to the finer spacing, as its least value), are scanned on the grid.
        """
        if sub <= 1 or hi - lo <= sub:
            return self._first_flip(clf, x, y, direction, row, lo, hi, step)
        pts = list(range(lo, hi + 1, sub))
        if pts[-1] != hi:
            pts.append(hi)
        inner = torch.tensor(pts[1:-1], device=x.device)
        one = torch.tensor([row], device=x.device)
        m, f = self._margins(clf, self._points(x, direction, one, inner, step), y[row].repeat(len(inner)))
        forwards = len(inner)
        vals = [m_lo, *torch.where(f, -m.abs(), m).tolist(), m_hi]
        flips = [False, *f.tolist(), False]
        d2 = [abs(vals[t + 1] - 2 * vals[t] + vals[t - 1]) for t in range(1, len(vals) - 1)]
        bend = max(max(d2) / 8, floor)
        for t in range(len(pts) - 1):
            ends_in_flip = flips[t + 1]
            if ends_in_flip or (vals[t] > 0 and vals[t + 1] > 0 and
                                min(vals[t], vals[t + 1]) < self.island_factor * bend):
                k, spent = self._first_flip(clf, x, y, direction, row, pts[t], pts[t + 1], step)
                forwards += spent
                if k or ends_in_flip:
                    return (k or pts[t + 1]), forwards
        return 0, forwards

    def _points_rows(self, x: torch.Tensor, direction: torch.Tensor, rows: torch.Tensor, ks: torch.Tensor,
                     step: float) -> torch.Tensor:
        """``x[rows[i]] + s_{ks[i]} v[rows[i]]``: one grid point per row."""
        scales = (ks.to(x.dtype) * step).view(-1, *([1] * (x.ndim - 1)))
        return x[rows] + scales * direction[rows]

    def _run(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor) -> RunOutput:
        n, nd = x.shape[0], x.ndim
        clean_margin = torch.zeros(n, dtype=torch.float64, device=x.device)
        direction, ok, fallback = loss_gradient_direction(clf, x, y, self.batch_size, self.saturated,
                                                          margins=clean_margin)
        forwards, gradients = n + int(fallback.sum()), n + int((~ok | fallback).sum())
        step = self.s_max / self.steps
        extras: dict = {"gradient_fallback": fallback, "zero_gradient": ~ok}
        with torch.inference_mode():
            rows = ok.nonzero()[:, 0]
            k_found = torch.zeros(n, dtype=torch.long, device=x.device)  # 0 = not found
            if self.search == "grid":
                with self.progress_bar(n) as advance:
                    advance(n - rows.numel())
                    k, f = self._grid_scan(clf, x, y, direction, rows,
                                           torch.full_like(rows, self.steps), step, advance)
            else:
                with self.progress_bar(n) as advance:
                    k, rescanned, f = self._coarse_search(clf, x, y, direction, rows, step,
                                                          clean_margin[rows])
                    advance(n)
                extras["rescanned"] = torch.zeros(n, dtype=torch.bool, device=x.device)
                extras["rescanned"][rows] = rescanned
            k_found[rows] = k
            forwards += f
            success = k_found > 0
            s_hi = k_found.to(torch.float64) * step
            if self.refine_tol is not None and success.any():
                idx = success.nonzero()[:, 0]
                lo, hi = s_hi[idx] - step, s_hi[idx].clone()
                for _ in range(max(0, math.ceil(math.log2(step / self.refine_tol)))):
                    mid = (lo + hi) / 2
                    xs = x[idx] + mid.to(x.dtype).view(-1, *([1] * (nd - 1))) * direction[idx]
                    flip = self._flips(clf, xs, y[idx])
                    forwards += len(idx)
                    hi = torch.where(flip, mid, hi)
                    lo = torch.where(flip, lo, mid)
                s_hi[idx] = hi
        delta = s_hi.to(x.dtype).view(-1, *([1] * (nd - 1))) * direction
        return RunOutput(delta, success, forwards, gradients, extras=extras)
