"""Attacks: the paper's gradient line search (others are added by their own modules)."""
