"""Harmless perturbations: input directions a network ignores at any size (null spaces of its first layer).

See ``docs/harmless.md``. Typical use::

    from perturbscope.harmless import harmless_space, first_layer_map, verify_harmless
    space = harmless_space(model, (3, 28, 28))      # first layer found, normalisation/BN folded
    print(space.report())                           # dimension, rank, tolerance, "INJECTIVE" if so
    d = space.sample(8, norm=1e4)                   # (8, 3, 28, 28) float64, ||d|| = 1e4 each
    res = verify_harmless(model, x, d, first_layer_map(model, (3, 28, 28)))
"""

from perturbscope.harmless.applications import (
    Fingerprint,
    PrivacyResult,
    fingerprint,
    hide_content,
    identify,
    privacy_panel,
    psnr,
    split_adversarial,
    ssim,
)
from perturbscope.harmless.cg import cg_rowspace_solve, project_rowspace_matfree
from perturbscope.harmless.linear_map import (
    LinearMap,
    conv2d_as_matrix,
    first_layer_map,
    fold_batchnorm,
    fold_input_normalization,
    layer_map,
    linear_as_matrix,
)
from perturbscope.harmless.relu import ReluExpansion, max_safe_scale, relu_expanded_space, safe_interval
from perturbscope.harmless.space import (
    METHODS,
    DenseSpace,
    GroupedSpace,
    HarmlessSpace,
    MatrixFreeSpace,
    PatchSpace,
    bounded_effect_space,
    harmless_dim,
    harmless_dim_lower_bound,
    harmless_space,
    layer_report,
    nullspace_basis,
    stacked_harmless_space,
)
from perturbscope.harmless.verify import (
    VerifyResult,
    as_float64,
    clip_effect,
    decompose_perturbation,
    harmless_tolerance,
    interior_harmless_space,
    max_box_scale,
    model_scores,
    output_distance,
    project_harmless,
    project_orthogonal,
    verify_harmless,
)

__all__ = [
    "LinearMap",
    "layer_map",
    "first_layer_map",
    "fold_batchnorm",
    "fold_input_normalization",
    "conv2d_as_matrix",
    "linear_as_matrix",
    "HarmlessSpace",
    "DenseSpace",
    "PatchSpace",
    "GroupedSpace",
    "MatrixFreeSpace",
    "METHODS",
    "harmless_space",
    "stacked_harmless_space",
    "bounded_effect_space",
    "layer_report",
    "nullspace_basis",
    "harmless_dim",
    "harmless_dim_lower_bound",
    "cg_rowspace_solve",
    "project_rowspace_matfree",
    "decompose_perturbation",
    "project_harmless",
    "project_orthogonal",
    "harmless_tolerance",
    "model_scores",
    "output_distance",
    "as_float64",
    "VerifyResult",
    "verify_harmless",
    "max_box_scale",
    "clip_effect",
    "interior_harmless_space",
    "ReluExpansion",
    "relu_expanded_space",
    "max_safe_scale",
    "safe_interval",
    "split_adversarial",
    "hide_content",
    "PrivacyResult",
    "privacy_panel",
    "psnr",
    "ssim",
    "Fingerprint",
    "fingerprint",
    "identify",
]
