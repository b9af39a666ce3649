"""Harmless perturbation spaces: dimensions against the spec's reference values, invariance, projections."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from perturbscope.harmless import (
    cg_rowspace_solve,
    decompose_perturbation,
    first_layer_map,
    fold_batchnorm,
    harmless_dim,
    harmless_dim_lower_bound,
    harmless_space,
    hide_content,
    interior_harmless_space,
    layer_map,
    max_box_scale,
    max_safe_scale,
    project_rowspace_matfree,
    relu_expanded_space,
    safe_interval,
    split_adversarial,
    stacked_harmless_space,
    verify_harmless,
)
from perturbscope.harmless.models import PatchCNN
from perturbscope.models import MLP, Classifier, PairCNN


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def _conv(c, d, k, s=1, p=0, dil=1, groups=1, seed=0) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(c, d, k, stride=s, padding=p, dilation=dil, groups=groups)
    nn.init.normal_(conv.weight)  # random Gaussian kernels, as in the spec's reference table
    return conv


def _dense_by_probing(conv: nn.Conv2d, shape) -> np.ndarray:
    """The layer's matrix built independently: columns are conv(e_i) - conv(0), in float64."""
    n = math.prod(shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    w = conv.weight.detach().double()
    out = F.conv2d(
        eye, w, stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups
    )
    return out.reshape(n, -1).T.numpy()


# Spec section 4, "values computed exactly by SVD": (C, H=W, K, S, P, D) -> nullity
SPEC_CONV_TABLE = [
    ((1, 4, 2, 2, 0, 1), 12),
    ((1, 5, 2, 3, 0, 1), 21),
    ((1, 5, 2, 3, 0, 8), 9),
    ((3, 8, 4, 4, 0, 16), 128),
    ((3, 8, 4, 4, 0, 64), 0),
    ((3, 10, 2, 3, 0, 20), 192),
    ((4, 8, 3, 2, 1, 8), 128),
    ((4, 8, 3, 1, 1, 4), 0),
    ((4, 8, 3, 1, 1, 2), 128),
    ((2, 7, 3, 2, 0, 3), 71),
    ((2, 6, 1, 1, 0, 1), 36),
    ((1, 12, 5, 1, 0, 6), 0),
]


@pytest.mark.parametrize(("cfg", "ref"), SPEC_CONV_TABLE)
def test_conv_dimensions_match_spec_table_and_independent_rank(cfg, ref):
    c, h, k, s, p, d = cfg
    conv = _conv(c, d, k, s, p)
    shape = (c, h, h)
    space = harmless_space(conv, shape)
    assert space.exact and space.dim == ref
    # d - rank from a matrix built without our sparse builder, with numpy's own rank rule
    a = _dense_by_probing(conv, shape)
    assert space.n - np.linalg.matrix_rank(a) == ref
    dense = harmless_space(conv, shape, method="dense")
    assert dense.dim == ref
    if space.dim:
        basis = space.basis()
        assert basis.shape == (space.n, ref)
        np.testing.assert_allclose(basis.T @ basis, np.eye(ref), atol=1e-12)
        assert np.abs(a @ basis).max() < 1e-12 * max(1.0, np.abs(a).max())


def test_non_naive_bounds_from_the_spec():
    # C1 5x5, K2, S3, D8: 32 outputs for 25 inputs, yet nullity 9 (naive bound 0)
    conv = _conv(1, 8, 2, 3)
    assert harmless_dim_lower_bound(conv, (1, 5, 5)) == 0
    assert harmless_dim(conv, (1, 5, 5)) == 9
    conv = _conv(3, 20, 2, 3)
    assert harmless_dim_lower_bound(conv, (3, 10, 10)) == 120
    assert harmless_dim(conv, (3, 10, 10)) == 192


def test_fully_connected_and_large_reference_layers():
    torch.manual_seed(0)
    assert harmless_dim(nn.Linear(512, 10), (512,)) == 502  # ResNet-18 fc
    assert harmless_dim(nn.Linear(784, 100), (1, 28, 28)) == 684  # MNIST MLP layer 1 after Flatten
    vit_s = harmless_space(_conv(3, 384, 16, 16), (3, 224, 224))  # ViT-S/16 patch embedding, patch path
    assert (vit_s.method, vit_s.dim, vit_s.exact) == ("patch", 196 * 384, True)
    vit_b = harmless_space(_conv(3, 768, 16, 16), (3, 224, 224))
    assert vit_b.dim == 0 and vit_b.injective
    stem = harmless_space(_conv(3, 64, 3, 1, 1), (3, 32, 32))  # ResNet-18-CIFAR stem: injective
    assert stem.injective and stem.rank == 3072 and stem.sigma_min > stem.tol
    lenet = harmless_space(_conv(1, 6, 5), (1, 28, 28))
    assert lenet.injective


def test_stacked_branches_intersect():
    conv1, short = _conv(4, 8, 3, 2, 1), _conv(4, 8, 1, 2, seed=1)  # spec 1.1 example
    assert harmless_dim(conv1, (4, 8, 8)) == 128
    assert harmless_dim(short, (4, 8, 8)) == 192
    both = stacked_harmless_space([conv1, short], (4, 8, 8))
    assert both.dim == 64
    b = both.basis()
    for layer in (conv1, short):
        assert layer_map(layer, (4, 8, 8)).apply(torch.from_numpy(b.T.copy())).abs().max() < 1e-12


def test_sparse_matrix_and_adjoint_match_torch():
    conv = _conv(6, 4, 3, s=2, p=2, dil=2, groups=2)
    lm = layer_map(conv, (6, 9, 11))
    x = torch.randn(3, 6, 9, 11, dtype=torch.float64)
    ref = F.conv2d(x, conv.weight.detach().double(), stride=2, padding=2, dilation=2, groups=2).reshape(3, -1)
    a = lm.to_sparse()
    np.testing.assert_allclose((a @ x.reshape(3, -1).numpy().T).T, ref.numpy(), atol=1e-12)
    y = torch.randn(3, lm.m, dtype=torch.float64)
    lhs = (lm.apply(x) * y).sum()
    rhs = (x * lm.adjoint(y)).sum()
    assert abs(float(lhs - rhs)) < 1e-10 * float(lhs.abs() + 1)


def test_structured_and_dense_constructions_agree():
    x = torch.randn(5, 4, 10, 10, dtype=torch.float64)
    patch_conv = _conv(3, 10, 2, 3)  # non-overlapping with uncovered pixels
    grouped = _conv(4, 8, 3, 2, 1, groups=2)
    for layer, shape, structured in (
        (patch_conv, (3, 10, 10), "patch"),
        (grouped, (4, 8, 8), "grouped[dense]"),
        (nn.AvgPool2d(2), (3, 10, 10), "grouped[patch]"),
    ):
        fast = harmless_space(layer, shape)
        dense = harmless_space(layer, shape, method="dense")
        assert fast.method == structured
        assert fast.dim == dense.dim
        xs = x[:, : shape[0], : shape[1], : shape[2]]
        torch.testing.assert_close(fast.project(xs), dense.project(xs), atol=1e-11, rtol=0)
        b = fast.basis()
        np.testing.assert_allclose(b.T @ b, np.eye(fast.dim), atol=1e-12)
    assert harmless_dim(nn.AvgPool2d(2), (3, 10, 10)) == 3 * 25 * 3  # k^2 - 1 per window and channel


def test_matrix_free_cg_agrees_with_dense_projection():
    conv = _conv(4, 8, 3, 2, 1)
    dense = harmless_space(conv, (4, 8, 8), method="dense")
    mf = harmless_space(conv, (4, 8, 8), method="matfree")
    assert mf.method == "matfree" and not mf.exact and mf.dim == 128
    assert mf.notes["rank_estimate"].startswith("full row rank")
    d = torch.randn(4, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(mf.project(d), dense.project(d), atol=1e-9, rtol=0)
    harmless, row, info = project_rowspace_matfree(d, layer_map(conv, (4, 8, 8)))
    assert info["converged"] and info["relative_residual"] < 1e-11
    torch.testing.assert_close(harmless + row, d)
    # the CG residual is the harmlessness defect of the projected vector
    lm = layer_map(conv, (4, 8, 8))
    assert float(lm.apply(harmless).norm(dim=1).max()) < 1e-9 * float(lm.apply(d).norm(dim=1).max())
    with pytest.raises(ValueError, match="tol"):
        cg_rowspace_solve(lm, d, tol=0)


def _tiny_cnn() -> nn.Module:
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 4, stride=4)
            self.bn = nn.BatchNorm2d(8)
            self.head = nn.Sequential(
                nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 3)
            )

        def forward(self, x):
            return self.head(self.bn(self.stem(x)))

    torch.manual_seed(3)
    net = Net()
    net.bn.running_mean.uniform_(-1, 1)
    net.bn.running_var.uniform_(0.5, 2)
    return net.eval()


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_model_output_unchanged_at_any_size_random_changes_it(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        model = Classifier(MLP(3 * 8 * 8, hidden=(24,)), "sigmoid", mean=[0.5, 0.4, 0.3],
                           std=[0.2, 0.3, 0.25]).eval()
    else:
        model = Classifier(_tiny_cnn(), "logits", mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 0.2])
    shape = (3, 16, 16) if kind == "cnn" else (3, 8, 8)
    lmap = first_layer_map(model, shape)
    space = harmless_space(lmap)
    assert space.dim > 0 and space.exact
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1))
    m64 = model.double() if kind == "cnn" else model
    for size in (1.0, 1e2, 1e4, 1e6):
        d = space.sample(4, size, seed=2)
        torch.testing.assert_close(d.reshape(4, -1).norm(dim=1), torch.full((4,), size, dtype=torch.float64))
        res = verify_harmless(m64, x, d, lmap, dtype=torch.float64)
        assert bool(res.harmless.all()), res.summary()
        assert bool(res.labels_unchanged.all())
        # the random control of the same size moves the scores far beyond the tolerance
        assert float(res.random_score_change.min()) > 1e3 * float(res.score_tolerance.max())
        # direct float64 check without any tolerance machinery: scores equal to ~1e-15 relative per unit size
        with torch.no_grad():
            base = model.double().raw(x.double()) if kind == "cnn" else model.double().raw(x.double())
            pert = model.double().raw(x.double() + d)
        assert float((pert - base).abs().max()) < 1e-13 * size + 1e-13
    # float32 mode: within its (much larger) tolerance at size 1e4
    model32 = model.float()
    r32 = verify_harmless(model32, x, space.sample(4, 1e4), lmap, dtype=None)
    assert r32.dtype == "float32" and bool(r32.harmless.all())


def test_normalisation_and_batch_norm_are_folded():
    cnn = _tiny_cnn()
    plain = first_layer_map(cnn, (3, 16, 16))
    assert "BatchNorm2d" in plain.description
    cnn.bn.weight.data[2] = 0.0  # a dead channel: all its inputs become harmless
    dead = harmless_space(cnn, (3, 16, 16))
    assert dead.dim == harmless_dim(cnn.stem, (3, 16, 16)) + 16  # 16 patches gain one direction each
    cnn.bn.train()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(layer_map(cnn.stem, (3, 16, 16)), cnn.bn)
    # unequal std: the model's space is null(A diag(1/std)), not null(A)
    torch.manual_seed(0)
    mlp = MLP(3 * 4 * 4, hidden=(8,))
    wrapped = Classifier(mlp, mean=[0.0, 0.0, 0.0], std=[0.1, 1.0, 10.0])
    d = harmless_space(mlp, (3, 4, 4)).sample(1, 1.0)
    moved = first_layer_map(wrapped, (3, 4, 4)).apply(d).norm()
    assert float(moved) > 1e-3
    d2 = harmless_space(wrapped, (3, 4, 4)).sample(1, 1.0)
    assert float(first_layer_map(wrapped, (3, 4, 4)).apply(d2).norm()) < 1e-12


def test_injective_first_layer_reported_plainly():
    model = PairCNN(width=0.125)
    space = harmless_space(model, (3, 28, 28))
    assert space.injective and space.dim == 0 and space.rank == 3 * 28 * 28
    text = space.report()
    assert "INJECTIVE" in text and "n = 2352" in text and f"m = {8 * 28 * 28}" in text
    with pytest.raises(ValueError, match="injective"):
        space.sample(1)
    assert float(space.project(torch.randn(2, 3, 28, 28)).abs().max()) == 0.0


def test_decomposition_angle_and_box():
    conv = _conv(1, 2, 2, 2)
    space = harmless_space(conv, (1, 4, 4))
    d = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    par, orth, angle = decompose_perturbation(d, space)
    torch.testing.assert_close(par + orth, d)
    assert float((par * orth).sum(dim=(1, 2, 3)).abs().max()) < 1e-12
    cos = par.reshape(3, -1).norm(dim=1) / d.reshape(3, -1).norm(dim=1)
    torch.testing.assert_close(angle, torch.rad2deg(torch.arccos(cos)))
    inside = space.sample(1)
    assert float(decompose_perturbation(inside, space)[2][0]) < 1e-5
    # box: hand-computed scale
    x = torch.tensor([[0.5, 0.2, 0.9]])
    delta = torch.tensor([[1.0, -0.1, 0.0]])
    assert float(max_box_scale(x, delta)[0]) == pytest.approx(0.5)
    assert float(max_box_scale(torch.tensor([[0.0, 0.5]]), torch.tensor([[-1.0, 0.0]]))[0]) == 0.0
    assert math.isinf(float(max_box_scale(x, torch.zeros(1, 3))[0]))


def test_interior_space_stays_in_box_and_harmless():
    conv = _conv(1, 3, 2, 2)
    lm = layer_map(conv, (1, 6, 6))
    x = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    x[0, 0, 0, :3] = 0.0  # pixels on the edge of the box
    inner = interior_harmless_space(lm, x[0])
    # per 2x2 patch the 3x4 kernel matrix restricted to f free pixels has nullity f - min(3, f):
    # patches touching the 3 edge pixels (f = 2 and f = 3) keep nothing, the other 7 keep one each
    assert harmless_dim(conv, (1, 6, 6)) == 9 and inner.dim == 7
    d = inner.sample(4, 1.0)
    assert float(d[:, 0, 0, :3].abs().max()) == 0.0
    t = max_box_scale(x.expand(4, 1, 6, 6), d)
    assert bool((t > 0).all())
    xp = x.double() + t.view(-1, 1, 1, 1) * d * (1 - 1e-12)
    assert float(xp.min()) >= 0.0 and float(xp.max()) <= 1.0
    assert float(lm.apply(xp - x.double()).abs().max()) < 1e-12


def test_relu_active_set_expansion():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.randn(20, dtype=torch.float64)
    ex = relu_expanded_space(layer_map(net[0], (20,)), None, x)
    k = int(ex.active.sum())
    assert ex.dim_null_w == 12  # FC 20 -> 8: nullity 12
    assert ex.dim == 20 - k and ex.dim > 12
    checked = 0
    with torch.no_grad():
        for d in ex.sample(6, seed=1):
            t_min, t_max = safe_interval(d, ex)
            assert t_min < 0 < t_max
            assert max_safe_scale(d, ex) == t_max
            # every scale inside the safe interval (an infinite end: a large finite scale) is harmless
            hi, lo = min(0.999 * t_max, 100.0), max(0.999 * t_min, -100.0)
            assert float((net(x + hi * d) - net(x)).abs().max()) < 1e-12
            assert float((net(x + lo * d) - net(x)).abs().max()) < 1e-12
            if math.isfinite(t_max):
                assert float((net(x + 1.5 * t_max * d) - net(x)).abs().max()) > 1e-6
                checked += 1
    assert checked > 0
    with pytest.raises(ValueError, match="null"):
        safe_interval(torch.ones(20, dtype=torch.float64), ex)


def test_adversarial_split_harmless_part_changes_nothing():
    torch.manual_seed(0)
    model = MLP(2 * 6 * 6, hidden=(10,)).double().eval()
    space = harmless_space(model, (2, 6, 6))
    x = torch.rand(6, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = (model(x) >= 0.5).long()
    out = split_adversarial(model, x, y, space, attack="pgd_linf", eps=0.5)
    s = out["summary"]
    assert s["max_harmless_part_score_change"] < 1e-12
    assert s["max_rest_vs_adversarial_score_gap"] < 1e-12
    assert 0 < s["mean_angle_deg"] < 90
    assert s["flip_rate_harmless_part"] == 0.0
    assert s["flip_rate_rest"] == s["flip_rate_adversarial"] > 0
    # a gradient-direction attack lives in the row space: harmless part zero, angle 90 degrees
    ls = split_adversarial(model, x, y, space, attack="line_search", s_max=20.0, steps=64)["summary"]
    assert ls["attacked"] > 0 and ls["mean_angle_deg"] == pytest.approx(90.0, abs=1e-4)


def test_hide_content_keeps_predictions_gaussian_does_not():
    pytest.importorskip("skimage")
    torch.manual_seed(0)
    model = PatchCNN(in_channels=1, patch=4, stem=4, width=4).double().eval()
    x = torch.rand(12, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    space = harmless_space(model, (1, 16, 16))
    res = hide_content(model, x, None, space, norm=200.0)
    m = res.metrics
    assert m["agreement_harmless"] == 1.0
    assert m["max_score_change_harmless"] < 1e-9
    assert m["median_score_change_gaussian"] > 1e6 * m["max_score_change_harmless"]
    assert m["psnr_raw_harmless"] == pytest.approx(m["psnr_raw_gaussian"])  # equal norms, equal MSE
    assert -1.0 <= m["ssim_viewed_harmless"] < 0.5


def test_bad_inputs_raise_clear_errors():
    conv = _conv(3, 4, 3)
    with pytest.raises(TypeError, match="no linear map"):
        layer_map(nn.ReLU(), (3, 8, 8))
    with pytest.raises(ValueError, match="input channels"):
        layer_map(conv, (2, 8, 8))
    with pytest.raises(ValueError, match="in_shape"):
        harmless_space(conv, (3, -1, 8))
    with pytest.raises(ValueError, match="method"):
        harmless_space(conv, (3, 8, 8), method="magic")
    with pytest.raises(ValueError, match="patch"):
        harmless_space(conv, (3, 8, 8), method="patch")
    with pytest.raises(ValueError, match="reads 10 features"):
        layer_map(nn.Linear(10, 2), (3, 4, 4))
    space = harmless_space(nn.Linear(10, 2), (10,))
    with pytest.raises(ValueError, match="count"):
        space.sample(0)
    with pytest.raises(ValueError, match="norm"):
        space.sample(2, -1.0)
    with pytest.raises(ValueError, match="shape"):
        space.project(torch.zeros(2, 11))
    with pytest.raises(ValueError, match="not a linear layer"):
        first_layer_map(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), (4,))
    with pytest.raises(ValueError, match="padding_mode|zero padding"):
        layer_map(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), (1, 5, 5))
    with pytest.raises(ValueError, match="box"):
        max_box_scale(torch.tensor([[1.5]]), torch.tensor([[1.0]]))


# Spec section 2 measurements (conv analogue, ||A x|| ~ 72, unit harmless d): residual ||A(x + a d) - A x||
SPEC_PRECISION = {
    1.0: (1.6e-14, 7.6e-6),
    1e2: (3.2e-13, 2.7e-5),
    1e3: (3.2e-12, 2.5e-4),
    1e4: (3.2e-11, 2.2e-3),
}


def test_rounding_residuals_match_spec_measurements_and_stay_below_tolerance():
    from perturbscope.harmless import harmless_tolerance

    conv = _conv(4, 8, 3, 2, 1)
    lm = layer_map(conv, (4, 8, 8))
    space = harmless_space(lm)
    x = torch.rand(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = x * 72 / float(lm.apply(x).norm())
    d = space.sample(1, 1.0)
    op = lm.op_norm()
    for alpha, (spec64, spec32) in SPEC_PRECISION.items():
        r64 = float((lm.apply(x + alpha * d) - lm.apply(x)).norm())
        r32 = float((lm.apply(x.float() + alpha * d.float()).double() - lm.apply(x)).norm())
        # same order of magnitude as the spec's measurements, growing in proportion to alpha
        assert spec64 / 20 <= r64 <= spec64 * 10, (alpha, r64)
        assert spec32 / 20 <= r32 <= spec32 * 10, (alpha, r32)
        assert r64 <= float(harmless_tolerance(alpha, op, lm.n, torch.float64, x_norm=float(x.norm())))
        assert r32 <= float(harmless_tolerance(alpha, op, lm.n, torch.float32, x_norm=float(x.norm())))
        # a random direction of the same size moves the output by ~alpha: far above float32 rounding
        rnd = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        assert float(lm.apply(alpha * rnd / rnd.norm()).norm()) > 1e4 * r32


def test_fingerprint_tells_copy_from_fine_tuned_and_unrelated():
    import copy

    from perturbscope.harmless import fingerprint, identify

    torch.manual_seed(0)
    owner = MLP(3 * 6 * 6, hidden=(12,)).double().eval()
    x = torch.rand(4, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    probes = fingerprint(owner, harmless_space(owner, (3, 6, 6)), x, alpha=1e3)
    assert float(probes.reference.max()) < 1e-10
    same, s_copy = identify(copy.deepcopy(owner), probes)
    tuned = copy.deepcopy(owner)
    with torch.no_grad():  # a small weight change, as fine-tuning leaves
        tuned.net[1].weight.add_(1e-4 * torch.randn_like(tuned.net[1].weight))
    match_tuned, s_tuned = identify(tuned, probes)
    torch.manual_seed(1)
    other = MLP(3 * 6 * 6, hidden=(12,)).double().eval()
    match_other, s_other = identify(other, probes)
    assert same and float(s_copy.max()) < 1e-10
    assert not match_tuned and not match_other
    assert float(s_copy.max()) < float(s_tuned.min()) and float(s_tuned.max()) < float(s_other.min())


def test_bounded_effect_space_from_known_singular_values():
    from perturbscope.harmless import bounded_effect_space

    gen = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))
    sig = torch.tensor([3.0, 2.0, 0.5, 0.1], dtype=torch.float64)
    lin = nn.Linear(10, 4).double()
    with torch.no_grad():
        lin.weight.copy_(u @ torch.diag(sig) @ v[:, :4].T)
    space = bounded_effect_space(lin, (10,), tau=0.6)
    assert space.dim == 6 + 2 and space.sigma_dropped == pytest.approx(0.5)
    d = space.sample(20, 1.0)
    assert float(layer_map(lin, (10,)).apply(d).norm(dim=1).max()) <= 0.5 + 1e-12
    assert bounded_effect_space(lin, (10,), tau=0.0).dim == 6 == harmless_dim(lin, (10,))
    assert "NOT harmless" in space.report()
    with pytest.raises(ValueError, match="tau"):
        bounded_effect_space(lin, (10,), tau=-1.0)


def test_first_layer_map_folds_per_channel_std_into_grouped_conv_and_unwraps_adapters():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    body = nn.Sequential(
        nn.Dropout(0.5), conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 1)
    )
    std = [0.5, 2.0, 0.25, 4.0]
    model = Classifier(body, "logit", mean=[0.1, 0.2, 0.3, 0.4], std=std).eval()
    lm = first_layer_map(model, (4, 5, 5))
    assert lm.groups == 2 and "normalize" in lm.description
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    ref = F.conv2d(
        x / torch.tensor(std, dtype=torch.float64).view(1, 4, 1, 1),
        conv.weight.detach().double(),
        padding=1,
        groups=2,
    )
    torch.testing.assert_close(lm.apply(x), ref.reshape(3, -1))
    space = harmless_space(model, (4, 5, 5))
    assert space.method == "grouped[gram]" and space.injective  # 3 outputs per input per group
    pool = harmless_space(nn.AdaptiveAvgPool2d(2), (2, 6, 6))
    assert pool.dim == 2 * 4 * (9 - 1)
    with pytest.raises(ValueError, match="uneven"):
        layer_map(nn.AdaptiveAvgPool2d(4), (2, 6, 6))


def test_resnet_layer4_conv1_reference_dimension_matrix_free():
    # spec table: layer4.block0.conv1 256->512 K3 S2 P1 on 256x8x8 -> 8192 (too costly for a dense SVD)
    torch.manual_seed(0)
    space = harmless_space(nn.Conv2d(256, 512, 3, 2, 1), (256, 8, 8))
    assert space.method == "matfree" and not space.exact
    assert space.dim == 8192 == harmless_dim_lower_bound(nn.Conv2d(256, 512, 3, 2, 1), (256, 8, 8))
    assert space.notes["rank_estimate"].startswith("full row rank")
    assert space.notes["cg_relative_residual"] < 1e-11
