"""Theory of the stability paradox: cap volumes, bounds, exact values and Monte Carlo.

Modules (spec: /work/shared/spec/stability-paradox.md; paper Sections 4-5):

- :mod:`~perturbscope.theory.caps`: exact cap fraction ``F_n(t)`` (linear and log space), Lemma 23.
- :mod:`~perturbscope.theory.coordinate`: exact law of one coordinate of ``U(B_n)``; O(1) samplers.
- :mod:`~perturbscope.theory.integrals`: log-space 1-D integrals against that law.
- :mod:`~perturbscope.theory.single_point`: Theorem 1.
- :mod:`~perturbscope.theory.two_balls`: Theorems 4, 5, 6, 8 (samplers, classifier, bounds, exact).
- :mod:`~perturbscope.theory.half_balls`: Theorems 18, 19, 20.
- :mod:`~perturbscope.theory.engines`, :mod:`~perturbscope.theory.montecarlo`: the two MC engines.
- :mod:`~perturbscope.theory.sweeps`, :mod:`~perturbscope.theory.plots`: tables and Figures 4 and 6.
"""

from perturbscope.theory.caps import cap_fraction, cap_fraction_array, log_cap_fraction

__all__ = ["cap_fraction", "cap_fraction_array", "log_cap_fraction"]
