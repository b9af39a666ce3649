"""Theory of the stability paradox: cap volumes, bounds, two-balls and half-balls models."""

from perturbscope.theory.caps import cap_fraction, log_cap_fraction

__all__ = ["cap_fraction", "log_cap_fraction"]
