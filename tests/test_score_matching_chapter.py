"""Numerical checks of the derivations of Chapter 3, "Score matching" (book/score-matching.md), that
tests/test_losses.py does not already cover. Each check is arranged to fail if the formula in the
chapter were wrong: a dropped ½, a missing boundary term, the non-symmetric instead of the
symmetric part of a Jacobian, a variance divided by m that should not be, a mis-implemented SSM.
"""

import itertools
import math

import matplotlib
import pytest
import torch

from companion import widgets
from companion.distributions import Gaussian, GaussianMixture
from companion.losses import esm_loss, hutchinson_trace, ism_loss, ssm_loss

matplotlib.use("Agg")


pytestmark = pytest.mark.usefixtures("float64")


def trapezoid(values, t):
    return torch.trapezoid(values, t).item()


# ---------------------------------------------------------------------------------------------
# Hyvärinen's theorem: the integration by parts, its constant, and its boundary term.


def test_integration_by_parts_in_one_dimension_on_a_grid():
    """E_p[s s_p] = ∫ s p' = -∫ s' p = -E_p[s'] for a smooth nonlinear s and a mixture p on R.
    Checks Theorem thm-sm-hyvarinen."""
    p = GaussianMixture([0.3, 0.7], [[-2.0], [1.0]], [[[0.5]], [[1.2]]])
    t = torch.linspace(-20, 20, 40_001)
    dens = p.log_prob(t[:, None]).exp()
    s_p = p.score(t[:, None])[:, 0]
    s = torch.tanh(1.3 * t - 0.4) + 0.2 * t  # grows linearly, so p s -> 0 at both ends
    ds = 1.3 / torch.cosh(1.3 * t - 0.4) ** 2 + 0.2
    cross = trapezoid(s * s_p * dens, t)
    by_parts = -trapezoid(ds * dens, t)
    assert abs(cross) > 0.3  # a sign error would not pass unnoticed
    assert abs(cross - by_parts) < 1e-8
    # Hyvärinen's identity, ½ on both sides, constant ½ E s_p².
    esm = 0.5 * trapezoid((s - s_p) ** 2 * dens, t)
    ism = trapezoid((0.5 * s**2 + ds) * dens, t)
    assert abs(esm - (ism + 0.5 * trapezoid(s_p**2 * dens, t))) < 1e-8


def test_divergence_theorem_in_two_dimensions_on_a_grid():
    """E_p[s · s_p] = -E_p[div s] for a non-conservative nonlinear field and a 2-D mixture."""
    p = GaussianMixture([0.45, 0.55], [[-1.5, 0.5], [1.0, -1.0]], [[[0.6, 0.3], [0.3, 0.5]], [[0.5, -0.2], [-0.2, 0.8]]])
    W = torch.tensor([[0.8, -1.1], [0.7, 0.4]])  # not symmetric: s is not a gradient field
    c = torch.tensor([0.2, -0.3])
    g = torch.linspace(-9, 9, 901)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    x = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    h = torch.tanh(x @ W.T + c)
    s = h + 0.3 * x
    div = ((1 - h**2) * W.diagonal()).sum(-1) + 0.6
    dens = p.log_prob(x).exp()
    cell = (g[1] - g[0]) ** 2
    cross = ((s * p.score(x)).sum(-1) * dens).sum() * cell
    minus_div = -(div * dens).sum() * cell
    assert abs(cross) > 0.5
    assert abs(cross - minus_div) < 1e-6


@pytest.mark.parametrize("a", [-2.0, -1.0, 0.0, 1.0])
def test_the_half_is_needed_on_both_sides(a):
    """p = N(0, 1), s = a x: ESM - ISM = ½ for every a; E(s - s_p)² - ISM = ½a² + a + 1 is not constant."""
    t = torch.linspace(-14, 14, 28_001)
    dens = torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    ism = trapezoid((0.5 * (a * t) ** 2 + a) * dens, t)
    sq = trapezoid((a * t + t) ** 2 * dens, t)
    assert abs(0.5 * sq - ism - 0.5) < 1e-9
    assert abs(sq - ism - (0.5 * a * a + a + 1)) < 1e-9  # 1, 0.5, 1, 2.5 for a = -2, -1, 0, 1


def test_the_boundary_term_on_a_half_line():
    """p = e^{-x} on [0, inf): ESM = ISM + ½ + p(0) s(0), so ISM prefers s = 1 - x to the true score -1."""
    t = torch.linspace(0, 60, 120_001)
    dens = torch.exp(-t)
    fields = {
        "linear 0.3 - 0.7 x": (0.3 - 0.7 * t, torch.full_like(t, -0.7)),
        "sin(x) + 0.5": (torch.sin(t) + 0.5, torch.cos(t)),
        "true score": (-torch.ones_like(t), torch.zeros_like(t)),
    }
    for s, ds in fields.values():
        esm = 0.5 * trapezoid((s + 1) ** 2 * dens, t)
        ism = trapezoid((0.5 * s**2 + ds) * dens, t)
        assert abs(esm - (ism + 0.5 + s[0].item())) < 1e-6
    # Without the boundary term the gap would be ½ for every model; here it is ½ + s(0), not constant.
    gaps = [0.5 * trapezoid((s + 1) ** 2 * dens, t) - trapezoid((0.5 * s**2 + ds) * dens, t) for s, ds in fields.values()]
    assert max(gaps) - min(gaps) > 1.0
    # Minimiser of ISM over s = a + b x: E x = 1, E x² = 2 give the normal equations a + b = 0, a + 2b = -1.
    a, b = torch.linalg.solve(torch.tensor([[1.0, 1.0], [1.0, 2.0]]), torch.tensor([0.0, -1.0])).tolist()
    assert abs(a - 1) < 1e-12 and abs(b + 1) < 1e-12
    # The package's losses, on samples, rank the two models the same way.
    u = torch.rand(100_000, generator=torch.Generator().manual_seed(0))
    x = -torch.log1p(-u)[:, None]
    true = lambda y: -torch.ones_like(y)
    wrong = lambda y: 1 - y
    assert ism_loss(wrong, x).item() < ism_loss(true, x).item() - 0.9
    assert esm_loss(wrong, x, true).item() > esm_loss(true, x, true).item() + 0.9


def test_ism_of_the_true_score_is_minus_the_constant():
    """min over fields of J_ISM is -C = -½ E|s_p|², attained at s_p; the zero field has J_ESM = C."""
    p = Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([[1.0, 0.4], [0.4, 0.5]]))
    C = 0.5 * torch.trace(torch.linalg.inv(p.covariance())).item()
    x = p.sample(100_000, generator=torch.Generator().manual_seed(1))
    ism = ism_loss(p.score, x, reduction="none")
    assert abs(ism.mean().item() + C) < 4 * ism.std().item() / math.sqrt(len(ism))
    zero = esm_loss(lambda y: torch.zeros_like(y), x, p.score, reduction="none")
    assert abs(zero.mean().item() - C) < 4 * zero.std().item() / math.sqrt(len(zero))


def test_gaussian_model_score_matching_is_maximum_likelihood():
    """Exercise 3: the sample ISM of s = A x + b is minimised at A = -S^-1, b = S^-1 xbar."""
    mix = GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 1.0]], [[[0.5, 0.1], [0.1, 0.4]], [[0.3, 0.0], [0.0, 0.9]]])
    x = mix.sample(5000, generator=torch.Generator().manual_seed(2))
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / len(x)
    A = (-torch.linalg.inv(cov)).requires_grad_(True)
    b = (torch.linalg.inv(cov) @ mean).requires_grad_(True)
    loss = ism_loss(lambda y: y @ A.T + b, x)
    grads = torch.autograd.grad(loss, (A, b))
    assert max(g.abs().max().item() for g in grads) < 1e-10
    with torch.no_grad():  # and it is a minimum: any perturbation increases the loss
        for dA in (0.05 * torch.eye(2), torch.tensor([[0.0, 0.05], [-0.05, 0.0]])):
            assert ism_loss(lambda y: y @ (A + dA).T + b, x) > loss


# ---------------------------------------------------------------------------------------------
# Hutchinson's estimator: variances for non-symmetric matrices and every kind of probe.


def _nonsymmetric(d, seed):
    A = torch.randn(d, d, generator=torch.Generator().manual_seed(seed)) + 1.5 * torch.eye(d)
    assert (A - A.T).abs().max() > 0.5
    return A


def test_rademacher_variance_by_exact_enumeration():
    """All 2^d sign vectors: mean tr A and variance 2(|A_s|_F² - sum A_ii²) exactly, with A_s and not A.
    Checks Lemma lem-sm-hutchinson."""
    d = 6
    A = _nonsymmetric(d, 3)
    S = 0.5 * (A + A.T)
    v = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)))
    q = ((v @ A) * v).sum(-1)
    assert abs(q.mean() - A.trace()) < 1e-12
    exact = 2 * (S.square().sum() - A.diagonal().square().sum())
    assert abs(q.var(unbiased=False) - exact) < 1e-10
    wrong = 2 * (A.square().sum() - A.diagonal().square().sum())  # the same formula with A in place of A_s
    assert abs(wrong - exact) > 0.1 * exact
    # The package's Rademacher probes produce exactly these values.
    est = hutchinson_trace(lambda y: y @ A.T, torch.zeros(2000, d), probe="rademacher",
                           generator=torch.Generator().manual_seed(4))
    assert (est[:, None] - q[None]).abs().min(1).values.max() < 1e-12


def test_variance_for_independent_entries_depends_on_the_fourth_moment():
    """Var(vᵀAv) = 2|A_s|_F² + (mu4 - 3) sum A_ii² for iid entries; uniform entries have mu4 = 9/5.
    Checks Proposition prop-sm-hutchinson-variance."""
    d, n = 5, 400_000
    A = _nonsymmetric(d, 5)
    S = 0.5 * (A + A.T)
    g = torch.Generator().manual_seed(6)
    v = (torch.rand(n, d, generator=g) * 2 - 1) * math.sqrt(3)  # mean 0, variance 1, fourth moment 9/5
    q = ((v @ A) * v).sum(-1)
    theory = 2 * S.square().sum() + (9 / 5 - 3) * A.diagonal().square().sum()
    se = q.std() / math.sqrt(n)
    assert abs(q.mean() - A.trace()) < 4 * se
    assert abs(q.var() / theory - 1) < 0.03
    gaussian = hutchinson_trace(lambda y: y @ A.T, torch.zeros(n, d), probe="gaussian", generator=g)
    assert abs(gaussian.var() / (2 * S.square().sum()) - 1) < 0.03


def test_sphere_probes_and_the_widget_variances():
    """Sphere of radius sqrt(d): unbiased, variance 2d/(d+2)(|A_s|² - tr²/d); unit sphere: tr/d."""
    A = widgets.hutchinson_demo_matrix(dim=8, seed=0)
    d = A.shape[0]
    S = 0.5 * (A + A.T)
    sphere = 2 * d / (d + 2) * (S.square().sum() - A.trace() ** 2 / d)
    assert abs(widgets._hutchinson_variance(A, "sphere") - sphere) < 1e-12
    n = 200_000
    for probe in widgets.HUTCHINSON_PROBES:
        est = widgets.hutchinson_estimates(A, probe, n_probes=1, n_repeats=n, seed=7)
        target = A.trace() / d if probe == "unit sphere" else A.trace()
        assert abs(est.mean() - target) < 4 * est.std() / math.sqrt(n), probe
        assert abs(est.var() / widgets._hutchinson_variance(A, probe) - 1) < 0.03, probe
    four = widgets.hutchinson_estimates(A, "gaussian", n_probes=4, n_repeats=n, seed=8)
    assert abs(four.var() / (widgets._hutchinson_variance(A, "gaussian") / 4) - 1) < 0.03


# ---------------------------------------------------------------------------------------------
# Sliced score matching: projection variance, the minibatch decomposition, and a wrong SSM.


def test_ssm_projection_variance_with_gaussian_probes():
    """At a fixed x: Var_v of SSM = 2|S + ½ s sᵀ|_F², of SSM-VR = 2|S|_F²; VR is not always smaller."""
    d = 3
    A = _nonsymmetric(d, 9) * 0.5
    b = torch.tensor([0.5, -1.0, 0.3])
    x0 = torch.tensor([0.4, 0.2, -0.7])
    s0 = A @ x0 + b
    S = 0.5 * (A + A.T)
    n = 300_000
    x = x0.expand(n, d)
    g = torch.Generator().manual_seed(10)
    plain = ssm_loss(lambda y: y @ A.T + b, x, generator=g, reduction="none")
    vr = ssm_loss(lambda y: y @ A.T + b, x, variance_reduction=True, generator=g, reduction="none")
    M = S + 0.5 * torch.outer(s0, s0)
    assert abs(plain.var() / (2 * M.square().sum()) - 1) < 0.03
    assert abs(vr.var() / (2 * S.square().sum()) - 1) < 0.03
    expanded = 2 * S.square().sum() + 2 * s0 @ S @ s0 + 0.5 * s0.square().sum() ** 2
    assert abs(expanded - 2 * M.square().sum()) < 1e-12
    # True score of N(0, 1) at x = 1: SSM variance 2(-1 + ½)² = 0.5 < SSM-VR variance 2.
    one = torch.ones(n, 1)
    plain1 = ssm_loss(lambda y: -y, one, generator=g, reduction="none").var()
    vr1 = ssm_loss(lambda y: -y, one, variance_reduction=True, generator=g, reduction="none").var()
    assert abs(plain1 - 0.5) < 0.02 and abs(vr1 - 2.0) < 0.06


@pytest.mark.parametrize("d,expected", [(1, -0.5), (2, 0.0), (4, 4.0)])
def test_variance_reduction_gain_at_the_true_gaussian_score(d, expected):
    """E_x[Var_v SSM - Var_v SSM-VR] = ½d² - d at s = -x, x ~ N(0, I_d), Gaussian probes."""
    n_x, k = 4000, 400
    g = torch.Generator().manual_seed(11 + d)
    x = torch.randn(n_x, d, generator=g).repeat_interleave(k, 0)
    plain = ssm_loss(lambda y: -y, x, generator=g, reduction="none").reshape(n_x, k)
    vr = ssm_loss(lambda y: -y, x, variance_reduction=True, generator=g, reduction="none").reshape(n_x, k)
    gain = plain.var(1) - vr.var(1)
    se = gain.std() / math.sqrt(n_x)
    assert abs(gain.mean() - expected) < 4 * se + 0.02 * (0.5 * d * d + d), (gain.mean().item(), se.item())
    # The closed form per point: ½|x|⁴ - 2|x|².
    r2 = x[::k].square().sum(-1)
    assert abs((gain - (0.5 * r2**2 - 2 * r2)).mean()) < 4 * se + 0.05


@pytest.mark.parametrize("variance_reduction,scale,shift", [(False, 0.4, (0.2, 0.1, -0.4)), (True, 0.3, (3.0, 1.5, -2.0))])
def test_minibatch_variance_decomposition(variance_reduction, scale, shift):
    """Var of the batch loss = Var_x[ISM integrand]/n + E_x Var_v/(n m) (linear model, Gaussian data),
    not the variance at m = 1 divided by m (Proposition prop-sm-ssm-variance)."""
    d, n, repeats = 3, 16, 6000
    p = Gaussian(torch.tensor([0.5, -1.0, 0.0]), torch.tensor([[1.0, 0.3, 0.0], [0.3, 0.8, 0.2], [0.0, 0.2, 0.6]]))
    A = _nonsymmetric(d, 12) * scale
    b = torch.tensor(shift)
    s = lambda y: y @ A.T + b
    S = 0.5 * (A + A.T)
    g = torch.Generator().manual_seed(13)
    sx = s(p.sample(400_000, generator=g))
    var_x = (0.5 * sx.square().sum(-1) + A.trace()).var()
    if variance_reduction:
        var_v = 2 * S.square().sum()
    else:
        var_v = (2 * S.square().sum() + 2 * ((sx @ S) * sx).sum(-1) + 0.5 * sx.square().sum(-1) ** 2).mean()
    measured = {}
    for m in (1, 8):
        xb = p.sample(repeats * n, generator=g)
        batch = ssm_loss(s, xb, n_projections=m, variance_reduction=variance_reduction, generator=g,
                         reduction="none").detach().reshape(repeats, n).mean(1)
        measured[m] = batch.var()
        assert abs(measured[m] / (var_x / n + var_v / (n * m)) - 1) < 0.08, m
    assert measured[8] > 0.9 * var_x / n  # the data term stays, however many projections
    if variance_reduction:  # here the data term dominates: dividing by m is off by a factor > 4
        assert measured[8] > 4 * measured[1] / 8


def _sliced_wrong(score_fn, x, generator):
    """SSM as mis-implemented: gradient of (s · x), elementwise products, unit-norm probes."""
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    (g,) = torch.autograd.grad((s * x).sum(), x, create_graph=True)
    v = torch.randn(x.shape, generator=generator)
    v = v / v.norm(dim=-1, keepdim=True)
    return (0.5 * ((v * s) ** 2).sum(-1) + (v * g * v).sum(-1)).mean()


def test_a_mis_implemented_ssm_learns_the_zero_field():
    """N(0, 1), s = a x: the wrong objective is ½a² (minimised at a = 0); SSM is a + ½a² (at a = -1)."""
    g = torch.Generator().manual_seed(14)
    x = torch.randn(200_000, 1, generator=g)
    grid = [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0]
    wrong = [_sliced_wrong(lambda y: a * y, x, g).item() for a in grid]
    right = [ssm_loss(lambda y: a * y, x, generator=g).item() for a in grid]
    for a, w, r in zip(grid, wrong, right):
        assert abs(w - 0.5 * a * a) < 0.03 and abs(r - (a + 0.5 * a * a)) < 0.05
    assert grid[wrong.index(min(wrong))] == 0.0
    assert grid[right.index(min(right))] == -1.0
    # In three dimensions the wrong objective prefers the zero field to the true score -x.
    x3 = torch.randn(100_000, 3, generator=g)
    assert _sliced_wrong(lambda y: -y, x3, g).item() > 0.45
    assert _sliced_wrong(lambda y: 0 * y, x3, g).item() == 0.0
    assert ssm_loss(lambda y: -y, x3, generator=g).item() < ssm_loss(lambda y: 0 * y, x3, generator=g).item() - 1


def test_unit_norm_probes_divide_the_loss_by_d():
    """At the true score of N(0, I_3): ISM = -1.5; SSM with unit probes averages ISM / 3 = -0.5."""
    d = 3
    g = torch.Generator().manual_seed(15)
    x = torch.randn(200_000, d, generator=g)
    v = torch.randn(x.shape, generator=g)
    u = v / v.norm(dim=-1, keepdim=True)
    s = -x
    unit = (-(u * u).sum(-1) + 0.5 * (u * s).sum(-1) ** 2)  # uᵀ∇s u + ½(uᵀs)² with ∇s = -I
    assert abs(ism_loss(lambda y: -y, x).item() + 1.5) < 0.02
    assert abs(unit.mean().item() + 0.5) < 4 * unit.std().item() / math.sqrt(len(unit))
    assert abs(ssm_loss(lambda y: -y, x, probe="gaussian", generator=g).item() + 1.5) < 0.03


# ---------------------------------------------------------------------------------------------
# The chapter's figure helpers.


def test_figure_helpers_draw():
    import matplotlib.pyplot as plt

    from companion.nets import ScoreMLP
    from companion.plotting import score_error_panel

    fig, (ax0, ax1) = plt.subplots(1, 2)
    ax = widgets.draw_hutchinson_estimates(probe="rademacher", n_probes=2, n_repeats=500, ax=ax0)
    assert ax is ax0 and "rademacher" in ax.get_title()
    mix = GaussianMixture.isotropic([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], 0.5)
    torch.manual_seed(16)
    net = ScoreMLP(2, hidden=8, depth=1).double()
    ax = score_error_panel(net, mix.score, mix.log_prob, ax=ax1, n=30, n_arrows=5, vmax=2.0)
    err = ax.images[0].get_array()
    assert err.shape == (30, 30) and float(err.min()) >= 0
    plt.close(fig)
    with pytest.raises(ValueError, match="probe"):
        widgets.hutchinson_estimates(torch.eye(2), probe="unit")
