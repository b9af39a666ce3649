"""Coverage of the rare-event 95% intervals against exact flip probabilities (issue: honest intervals).

Cases with an exact answer (the cap fraction of :mod:`perturbscope.theory.caps`):

* ``linear100``: linear model, d = 100, input at distance 0.5 from the boundary (float64);
* ``linear2352``: the same in d = 2352 (3x28x28 as in the tests, float32 inputs);
* ``twoballs``: the paper's two-balls model, n = 1000, eps = 0.1 (points of class 1, the
  smooth classifier ``H_50(x_1)``), one radius per point and target p.

For each method setting (``--settings``, e.g. ``splitting:200:2000`` = subset simulation with
``n_per_level=200`` and ``budget=2000``, the audit's default; ``lines:3000``; ``is:300``) and
target p, ``--runs`` independent estimates (one call, one task per run) are scored: coverage
of the interval, share of estimates within 1.5x of p, mean ratio, sd of ``log(p_hat / p)``,
the median estimated sd of ``log p_hat`` (half-width / z) and the 95% quantile of
``|log(p_hat / p)| / sd_est`` divided by 1.96: the factor the interval must be widened by
to cover 95% (``need``; with calibrated intervals, ``need <= 1`` means they cover), and
``raw``: the coverage of the methods' own intervals (the calibrated half-width divided by the
factor, ``factor``: its median). Runs whose estimator stopped before the flips (an upper bound only)
count as covering when the bound is above p and are left out of ``need``.

``cnn`` (with ``--checkpoint``): a Fashion-MNIST pair CNN, test image ``--image`` (among the
first 20 that the line search flips, ``benchmarks/pair_images.py``) at radius
``--alpha * eps_adv``; the reference is ``--plain-ref`` plain uniform draws (so only moderate p,
~1e-3, is affordable); ``need`` and the coverage are then against that reference (its own 95%
interval is printed; runs whose interval overlaps it count as covering in ``covers_ref``).

``--raw`` measures the methods' own intervals (``interval_factor=1``); without it the
package's calibrated defaults are scored. Every line is also written as JSON to ``--out``.

Run (single thread; the commands and their measured times are in docs/rare_event.md, "Interval
calibration"; ~10 CPU-minutes without the line-sampling rows of the large cases):
``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate_intervals.py --cases linear100 --out cal.jsonl``
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from scipy.optimize import brentq

from perturbscope.models.classifier import Classifier
from perturbscope.models.pair_cnn import LinearBinary
from perturbscope.probes.rare_event import estimate_flip_probability
from perturbscope.sampling import uniform_ball
from perturbscope.theory.caps import log_cap_fraction

LN10 = math.log(10.0)
Z95 = 1.959963984540054


def t_for(log10_p: float, d: int) -> float:
    """Cap coordinate t with F_d(t) = 10**log10_p."""
    return brentq(lambda t: log_cap_fraction(t, d) / LN10 - log10_p, 1e-12, 1 - 1e-15, xtol=1e-15)


def linear_case(d: int, runs: int, log10_p: float, dtype) -> tuple:
    dist = 0.5
    gen = torch.Generator().manual_seed(9)
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    x0 = 0.25 + 0.5 * torch.rand(d, generator=gen, dtype=torch.float64)
    model = LinearBinary(w, bias=-(float(x0 @ w) + dist * float(w.norm())))
    r = dist / t_for(log10_p, d)
    x = x0.to(dtype).repeat(runs, 1)
    return Classifier(model, bounds=None), x, None, torch.full((runs,), r), np.full(runs, log10_p * LN10)


def two_balls_case(runs: int, log10_p: float) -> tuple:
    n, eps = 1000, 0.1
    pts = uniform_ball(4 * runs, n, 1.0, seed=4, dtype=torch.float64)
    pts[:, 0] += eps
    pts = pts[pts[:, 0] > 0.02][:runs]
    e1 = torch.zeros(n, dtype=torch.float64)
    e1[0] = 1.0
    model = LinearBinary(e1, bias=0.0, scale=50.0)
    t = t_for(log10_p, n)
    r = pts[:, 0] / t
    truth = np.array([log_cap_fraction(float(a) / float(b), n) for a, b in zip(pts[:, 0], r, strict=True)])
    return (Classifier(model, bounds=None), pts, torch.ones(len(pts), dtype=torch.long), r, truth)


def cnn_case(checkpoint: str, image: int, alpha: float, runs: int, plain: int) -> tuple:
    """The pair CNN at radius alpha * eps_adv with a plain-sampling reference (log p, 95% interval)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from pair_images import attacked_test_image
    from perturbscope.models.classifier import as_classifier
    from perturbscope.probes.random_probe import random_probe
    from perturbscope.stats import binomial_ci

    model, x, eps, _ = attacked_test_image(checkpoint, image)
    r = alpha * eps
    clf = as_classifier(model, "sigmoid")
    pr = random_probe(clf, x, torch.tensor([r]), alphas=(1.0,), draws=plain, seed=12345, batch_size=512)
    k = int(pr.counts[0, 0])
    lo, hi = binomial_ci(k, plain, level=0.95)
    ref = (math.log(k / plain), math.log(lo), math.log(hi))
    print(f"cnn reference: r {r:.4f} (eps_adv {eps:.4f}), {k} flips in {plain} plain draws: "
          f"p {k / plain:.3g} [{lo:.3g}, {hi:.3g}]")
    return clf, x.repeat(runs, 1, 1, 1), None, torch.full((runs,), r), np.full(runs, ref[0]), ref


def parse_setting(s: str) -> tuple[str, dict]:
    parts = s.split(":")
    method = parts[0]
    if method == "splitting":
        return method, {"n_per_level": int(parts[1]), "budget": int(parts[2])}
    return method, {"budget": int(parts[1])}


def unwiden(res) -> tuple[np.ndarray, np.ndarray]:
    """The method's own interval (natural log) from a calibrated result: half-width / factor."""
    lp, lo, hi = res.log10_p_hat * LN10, res.log10_ci_low * LN10, res.log10_ci_high * LN10
    f = res.interval_factor if res.interval_factor is not None else np.ones_like(lp)
    ok = np.isfinite(lp) & np.isfinite(lo)
    with np.errstate(invalid="ignore"):
        raw_lo = np.where(ok, lp - (lp - lo) / f, lo)
        raw_hi = np.where(ok, np.minimum(lp + (lp - lo) / f, 0.0), hi)
    return raw_lo, raw_hi


def score(res, truth: np.ndarray) -> dict:
    lp, lo, hi = res.log10_p_hat * LN10, res.log10_ci_low * LN10, res.log10_ci_high * LN10
    raw_lo, raw_hi = unwiden(res)
    cover = (lo <= truth) & (truth <= hi)
    est = np.isfinite(lp) & np.isfinite(lo)
    err = lp[est] - truth[est]
    sd = (lp[est] - lo[est]) / Z95  # the lower half is never clipped
    z = np.abs(err) / np.maximum(sd, 1e-300)
    return {"runs": int(len(truth)), "bound_only": int((~est).sum()), "coverage": float(cover.mean()),
            "raw_coverage": float(np.mean((raw_lo <= truth) & (truth <= raw_hi))),
            "factor_median": float(np.median(1.0 if res.interval_factor is None else res.interval_factor)),
            "within_1.5x": float(np.mean(np.abs(err) < math.log(1.5))) if est.any() else math.nan,
            "mean_ratio": float(np.mean(np.exp(err))) if est.any() else math.nan,
            "sd_log": float(np.std(err)) if est.any() else math.nan,
            "est_sd_log": float(np.median(sd)) if est.any() else math.nan,
            "need": float(np.quantile(z, 0.95) / Z95) if est.any() else math.nan,
            "forwards": float(np.median(res.forwards)),
            # per run (finite estimates): log(p_hat / p) and the method's own sd of log p_hat, so that
            # the coverage of any other widening can be recomputed from the file
            "runs_log_ratio": [round(float(v), 5) for v in err],
            "runs_raw_sd": [round(float(v), 5) for v in (lp[est] - raw_lo[est]) / Z95]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["linear100", "linear2352", "twoballs"])
    ap.add_argument("--settings", nargs="+",
                    default=["splitting:200:2000", "splitting:500:10000", "lines:2000", "lines:3000",
                             "is:300", "is:2000"])
    ap.add_argument("--log10-ps", nargs="+", type=float, default=[-2.0, -4.0, -6.0, -9.0, -12.0])
    ap.add_argument("--runs", type=int, default=300, help="runs per (case, setting, p) at d = 100")
    ap.add_argument("--runs-large", type=int, default=100, help="runs at d = 2352 and for two-balls")
    ap.add_argument("--raw", action="store_true", help="score the uncalibrated intervals (factor 1)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON lines file")
    ap.add_argument("--checkpoint", default=None, help="pair CNN for the cnn case")
    ap.add_argument("--image", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=5.0)
    ap.add_argument("--plain-ref", type=int, default=400_000, help="plain draws of the cnn reference")
    ap.add_argument("--runs-cnn", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_all = time.time()
    out = open(args.out, "a") if args.out else None  # noqa: SIM115
    print(f"{'case':<11} {'setting':<20} {'p':>7} {'runs':>5} {'bound':>5} {'covers':>7} {'raw':>6} "
          f"{'factor':>6} {'<1.5x':>6} {'mean/p':>7} {'sd log':>7} {'est sd':>7} {'need':>6} {'fw':>7} "
          f"{'s':>6}")
    cnn = None
    for case in args.cases:
        for setting in args.settings:
            method, kw = parse_setting(setting)
            for lp in (args.log10_ps if case != "cnn" else [math.nan]):
                ref = None
                if case == "cnn":
                    if cnn is None:
                        cnn = cnn_case(args.checkpoint, args.image, args.alpha, args.runs_cnn, args.plain_ref)
                    clf, x, y, r, truth, ref = cnn
                    lp = ref[0] / LN10
                elif case == "linear100":
                    clf, x, y, r, truth = linear_case(100, args.runs, lp, torch.float64)
                elif case == "linear2352":
                    clf, x, y, r, truth = linear_case(2352, args.runs_large, lp, torch.float32)
                elif case == "twoballs":
                    clf, x, y, r, truth = two_balls_case(args.runs_large, lp)
                else:
                    raise SystemExit(f"unknown case {case}")
                extra = {"interval_factor": 1.0} if args.raw else {}
                t0 = time.time()
                res = estimate_flip_probability(clf, x, y, r, method=method, seed=args.seed, **kw, **extra)
                row = {"case": case, "setting": setting, "log10_p": lp, "raw": args.raw,
                       **score(res, truth), "seconds": round(time.time() - t0, 2)}
                if ref is not None:  # the reference is itself uncertain: intervals that overlap its own
                    lo, hi = res.log10_ci_low * LN10, res.log10_ci_high * LN10
                    row["covers_ref"] = float(np.mean((lo <= ref[2]) & (ref[1] <= hi)))
                    print(f"   cnn: overlapping the reference's 95% interval: {row['covers_ref']:.3f}")
                print(f"{case:<11} {setting:<20} {lp:>7g} {row['runs']:>5} {row['bound_only']:>5} "
                      f"{row['coverage']:>7.3f} {row['raw_coverage']:>6.3f} {row['factor_median']:>6.2f} "
                      f"{row['within_1.5x']:>6.2f} {row['mean_ratio']:>7.3f} "
                      f"{row['sd_log']:>7.3f} {row['est_sd_log']:>7.3f} {row['need']:>6.2f} "
                      f"{row['forwards']:>7.0f} {row['seconds']:>6.1f}", flush=True)
                if out:
                    out.write(json.dumps(row) + "\n")
                    out.flush()
    print(f"total {time.time() - t_all:.0f} s")


if __name__ == "__main__":
    main()
