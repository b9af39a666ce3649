"""Settings of one audit (torch-free, so the command line can read its defaults cheaply)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AuditConfig", "DEFAULT_ALPHAS", "AUDIT_ATTACKS", "RARE_EVENT_METHODS"]

from perturbscope.paper import PAPER_ALPHAS as DEFAULT_ALPHAS
from perturbscope.paper import PAPER_DRAWS, PAPER_STEPS

#: what the probe is scaled by: the paper's line search, the min-norm attack, or the best of several
AUDIT_ATTACKS: tuple[str, ...] = ("line-search", "min-norm", "best")
RARE_EVENT_METHODS: tuple[str, ...] = ("splitting", "lines", "is", "plain")


@dataclass(frozen=True)
class AuditConfig:
    """Settings of one audit (all sizes in pixel units of inputs in ``bounds``).

    Attributes:
        alphas: probe radii as multiples of each image's eps_adv (paper: 1, 2, 5, 10).
        draws: random vectors per image and alpha, uniform in the unit L2 ball (paper: 2000).
        seed: seed of those vectors (the same draws for every image, as in the paper).
        s_max, steps, refine_tol: the line search (largest L2 scale; grid size; optional bisection).
        batch_size: inputs per forward pass.
        bounds: the declared input range; a bare model is wrapped with it.
        attack: eps_adv the probe is scaled by, one of :data:`AUDIT_ATTACKS`.
        lower_bound: also certify a lower bound ``eps_lower`` per image.
        rare_event, rare_event_budget, rare_event_method: also estimate the flip probability per
            image and alpha (:mod:`perturbscope.probes.rare_event`).
        search: the line search's ``"grid"`` (exact early-exit scan) or ``"coarse"`` (coarse grid +
            bisection; :class:`~perturbscope.attacks.line_search.LineSearch`).
        saturated: the line search's rule for a zero MSE gradient: ``"fail"`` (the paper's literal
            protocol: not susceptible) or ``"logit"`` (the direction from the logit margin).
        precision: the probe's ``"fp32"``, ``"bf16"`` or ``"fp16"`` (decisions re-checked in fp32).
        draw_chunk: random draws generated at once by the probe (default: about 64 MB).
    """

    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    draws: int = PAPER_DRAWS
    seed: int = 0
    s_max: float = 10.0
    steps: int = PAPER_STEPS
    refine_tol: float | None = None
    batch_size: int = 256
    bounds: tuple[float, float] = (0.0, 1.0)
    attack: str = "line-search"
    lower_bound: bool = False
    rare_event: bool = False
    rare_event_budget: int = 2000
    rare_event_method: str = "splitting"
    search: str = "grid"
    saturated: str = "fail"
    precision: str = "fp32"
    draw_chunk: int | None = None

    def validate(self) -> None:
        """Check every setting before any work; one clear error naming the first bad one."""
        from perturbscope.validation import check_float, check_floats, check_int

        alphas = check_floats("alphas", self.alphas, low=0.0, low_open=True)
        if len(set(alphas)) != len(alphas):
            raise ValueError(f"alphas must not repeat, got {list(alphas)}")
        check_int("draws", self.draws, minimum=1, maximum=10**8)
        check_int("seed", self.seed, minimum=0)
        check_float("s_max", self.s_max, low=0.0, low_open=True)
        check_int("steps", self.steps, minimum=1)
        if self.refine_tol is not None:
            check_float("refine_tol", self.refine_tol, low=0.0, low_open=True)
        check_int("batch_size", self.batch_size, minimum=1)
        lo, hi = check_floats("bounds", self.bounds)
        if len(self.bounds) != 2 or not lo < hi:
            raise ValueError(f"bounds must be a pair (low, high) with low < high, got {self.bounds!r}")
        if self.attack not in AUDIT_ATTACKS:
            raise ValueError(f"attack must be one of {AUDIT_ATTACKS}, got {self.attack!r}")
        check_int("rare_event_budget", self.rare_event_budget, minimum=2)
        if self.search not in ("grid", "coarse"):
            raise ValueError(f"search must be 'grid' or 'coarse', got {self.search!r}")
        if self.saturated not in ("fail", "logit"):
            raise ValueError(f"saturated must be 'fail' or 'logit', got {self.saturated!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {self.precision!r}")
        if self.draw_chunk is not None:
            check_int("draw_chunk", self.draw_chunk, minimum=1)
        if self.rare_event_method not in RARE_EVENT_METHODS:
            raise ValueError(f"rare_event_method must be one of {RARE_EVENT_METHODS}, "
                             f"got {self.rare_event_method!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["alphas"], d["bounds"] = list(self.alphas), list(self.bounds)
        return d
