"""Measurements: random-perturbation probes, metrics, rare events, robustness categories."""
