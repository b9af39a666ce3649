"""Settings of one audit (torch-free, so the command line can read its defaults cheaply)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AuditConfig", "DEFAULT_ALPHAS", "AUDIT_ATTACKS", "RARE_EVENT_METHODS", "box_mode",
           "SATURATED_RULES", "PAPER_SATURATED", "MAX_DRAWS", "MAX_STEPS", "MAX_BATCH", "MAX_ALPHA",
           "MAX_S_MAX"]

from perturbscope.paper import PAPER_ALPHAS as DEFAULT_ALPHAS
from perturbscope.paper import PAPER_DRAWS, PAPER_STEPS

#: what the probe is scaled by: the paper's line search, the min-norm attack, or the best of several
AUDIT_ATTACKS: tuple[str, ...] = ("line-search", "min-norm", "best")
RARE_EVENT_METHODS: tuple[str, ...] = ("splitting", "lines", "is", "plain")
#: the line search's rules for a zero MSE gradient (``LineSearch.saturated``)
SATURATED_RULES: tuple[str, ...] = ("logit", "fail")
#: the paper's literal rule (a zero MSE gradient = not susceptible): what ``perturbscope reproduce``
#: and the noise experiments use, so their numbers (and stored runs) stay the paper protocol's
PAPER_SATURATED = "fail"

# Largest values accepted (checked before any work, on the command line while parsing): beyond
# them a run cannot finish or its numbers overflow float32 (the probe's radius is alpha * eps_adv).
#: random draws per image and alpha (the paper: 2000)
MAX_DRAWS = 10**8
#: line-search grid points (the paper: 256)
MAX_STEPS = 10**6
#: inputs per forward pass
MAX_BATCH = 2**20
#: probe radius as a multiple of eps_adv (the paper: at most 10)
MAX_ALPHA = 1e4
#: largest line-search scale, pixel L2 (the diagonal of [0, 1]^d is sqrt(d): 388 for 3x224x224)
MAX_S_MAX = 1e6


@dataclass(frozen=True)
class AuditConfig:
    """Settings of one audit (all sizes in pixel units of inputs in ``bounds``).

    Attributes:
        alphas: probe radii as multiples of each image's eps_adv (paper: 1, 2, 5, 10).
        draws: random vectors per image and alpha, uniform in the unit L2 ball (paper: 2000).
        seed: seed of those vectors (the same draws for every image, as in the paper).
        s_max, steps, refine_tol: the line search (largest L2 scale; grid size; optional bisection).
        batch_size: inputs per forward pass; ``None``: chosen by :func:`perturbscope.audit.run.audit`
            from the device's free memory and the model's activation size (the records may then
            differ in the last bits between machines; give a number for bit-reproducible records).
        bounds: the declared input range; a bare model is wrapped with it.
        attack: eps_adv the probe is scaled by, one of :data:`AUDIT_ATTACKS`.
        lower_bound: also certify a lower bound ``eps_lower`` per image.
        rare_event, rare_event_budget, rare_event_method: also estimate the flip probability per
            image and alpha (:mod:`perturbscope.probes.rare_event`).
        search: the line search's ``"grid"`` (exact early-exit scan) or ``"coarse"`` (coarse grid +
            bisection; :class:`~perturbscope.attacks.line_search.LineSearch`).
        saturated: the line search's rule for a zero MSE gradient (a saturated sigmoid): ``"logit"``
            (default: the direction from the logit margin, the same direction wherever the MSE gradient
            is not zero) or ``"fail"`` (:data:`PAPER_SATURATED`, the paper's literal protocol: such an
            image is not susceptible). Records say which images needed it (``gradient_fallback``,
            ``zero_gradient``) and the summary warns.
        precision: the probe's ``"fp32"``, ``"bf16"`` or ``"fp16"`` (decisions re-checked in fp32).
        draw_chunk: random draws generated at once by the probe (default: about 64 MB).
        clip_probe: evaluate the random probe at ``clamp(x + delta)`` to ``bounds`` (a box-aware
            variant; the paper's probe, the default, is unclipped).
        clip_attack: keep the attack's ``x + delta`` inside ``bounds`` (``LineSearch(clip=True)``
            and likewise DeepFool / min-norm; eps_adv is then the clipped perturbation's norm, as
            foolbox and ART report it; the paper's line search, the default, is unclipped).
    """

    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    draws: int = PAPER_DRAWS
    seed: int = 0
    s_max: float = 10.0
    steps: int = PAPER_STEPS
    refine_tol: float | None = None
    batch_size: int | None = 256
    bounds: tuple[float, float] = (0.0, 1.0)
    attack: str = "line-search"
    lower_bound: bool = False
    rare_event: bool = False
    rare_event_budget: int = 2000
    rare_event_method: str = "splitting"
    search: str = "coarse"
    saturated: str = "logit"
    precision: str = "fp32"
    draw_chunk: int | None = None
    clip_probe: bool = False
    clip_attack: bool = False

    def validate(self) -> None:
        """Check every setting before any work; one clear error naming the first bad one."""
        from perturbscope.validation import check_float, check_floats, check_int

        alphas = check_floats("alphas", self.alphas, low=0.0, high=MAX_ALPHA, low_open=True)
        if len(set(alphas)) != len(alphas):
            raise ValueError(f"alphas must not repeat, got {list(alphas)}")
        check_int("draws", self.draws, minimum=1, maximum=MAX_DRAWS)
        check_int("seed", self.seed, minimum=0)
        check_float("s_max", self.s_max, low=0.0, high=MAX_S_MAX, low_open=True)
        check_int("steps", self.steps, minimum=1, maximum=MAX_STEPS)
        if self.refine_tol is not None:
            check_float("refine_tol", self.refine_tol, low=0.0, low_open=True)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1, maximum=MAX_BATCH)
        lo, hi = check_floats("bounds", self.bounds)
        if len(self.bounds) != 2 or not lo < hi:
            raise ValueError(f"bounds must be a pair (low, high) with low < high, got {self.bounds!r}")
        if self.attack not in AUDIT_ATTACKS:
            raise ValueError(f"attack must be one of {AUDIT_ATTACKS}, got {self.attack!r}")
        check_int("rare_event_budget", self.rare_event_budget, minimum=2)
        if self.search not in ("grid", "coarse"):
            raise ValueError(f"search must be 'grid' or 'coarse', got {self.search!r}")
        if self.saturated not in SATURATED_RULES:
            raise ValueError(f"saturated must be 'logit' (the direction from the logit margin where the "
                             f"MSE gradient is zero) or 'fail' (the paper's literal rule), got "
                             f"{self.saturated!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {self.precision!r}")
        if self.draw_chunk is not None:
            check_int("draw_chunk", self.draw_chunk, minimum=1)
        for name in ("clip_probe", "clip_attack"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.rare_event_method not in RARE_EVENT_METHODS:
            raise ValueError(f"rare_event_method must be one of {RARE_EVENT_METHODS}, "
                             f"got {self.rare_event_method!r}")

    @property
    def probe_mode(self) -> str:
        """``"unclipped (paper)"`` or ``"clipped to [lo, hi]"``: how the random probe treats ``bounds``."""
        return box_mode(self.clip_probe, self.bounds)

    @property
    def attack_mode(self) -> str:
        """``"unclipped (paper)"`` or ``"clipped to [lo, hi]"``: how the attack treats ``bounds``."""
        return box_mode(self.clip_attack, self.bounds)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``AuditConfig(**d)`` rebuilds it). ``clip_probe`` / ``clip_attack`` appear only
        when set, so the configuration (and a results-store run's hash) of a paper-literal audit is
        the same as before those options existed."""
        d = asdict(self)
        d["alphas"], d["bounds"] = list(self.alphas), list(self.bounds)
        for name in ("clip_probe", "clip_attack"):
            if not d[name]:
                del d[name]
        return d


def box_mode(clipped: bool, bounds: Any = (0.0, 1.0)) -> str:
    """The label tables and reports print for a probe or an attack: ``"unclipped (paper)"`` or
    ``"clipped to [0, 1]"``."""
    if not clipped:
        return "unclipped (paper)"
    lo, hi = (float(b) for b in bounds)
    return f"clipped to [{lo:g}, {hi:g}]"
