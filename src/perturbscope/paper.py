"""The paper's protocol constants (Sutton et al., Section 7.1), torch-free, imported by every layer."""

from __future__ import annotations

__all__ = ["PAPER_ALPHAS", "PAPER_DRAWS", "PAPER_STEPS", "PAPER_PROTOCOL", "PROTOCOL_LABELS"]

#: probe radii as multiples of eps_adv
PAPER_ALPHAS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
#: random draws per image and alpha, uniform in the unit L2 ball, the same for every image
PAPER_DRAWS = 2000
#: equally spaced scales of the line search
PAPER_STEPS = 256

#: The paper's Fashion-MNIST protocol (Section 7.1 / spec 4.3-4.5), beside a run's settings in
#: ``perturbscope reproduce`` notes and the report's scale table. ``None``: not stated by the paper.
PAPER_PROTOCOL: dict[str, object] = {
    "train_images": "all (12000 per pair)", "audit_images": "all", "width": 1.0, "epochs": 100,
    "batch_size": 128, "lr": 0.1, "dropout": 0.4, "restarts": 0, "draws": PAPER_DRAWS,
    "steps": PAPER_STEPS, "s_max": None, "alphas": list(PAPER_ALPHAS),
    "attack_box": "unclipped (paper)", "probe_box": "unclipped (paper)",
}
PROTOCOL_LABELS: dict[str, str] = {
    "train_images": "training images per pair", "audit_images": "images audited per split",
    "width": "network width", "epochs": "epochs", "batch_size": "batch size", "lr": "learning rate",
    "dropout": "dropout", "restarts": "restarts of a collapsed training",
    "draws": "random draws per image and alpha", "steps": "line-search steps",
    "s_max": "line-search largest L2 scale", "alphas": "alphas",
    "attack_box": "attack and the [0, 1] box", "probe_box": "random probe and the [0, 1] box",
}
