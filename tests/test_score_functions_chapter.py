"""Numerical checks of the derivations of Chapter 2 (book/score-functions.md) that the package
tests do not cover. Every check is built so that it fails for a plausible wrong formula (a sign,
a factor 2, a missing symmetrisation, a wrong classification rule); Monte Carlo checks use a
tolerance of a few standard errors and a seeded generator."""

import math

import matplotlib
import pytest
import torch
from torch.func import jacrev, vmap

from companion.distributions import Gaussian, GaussianMixture
from companion.samplers import langevin
from companion.scores import autograd_score

matplotlib.use("Agg")


pytestmark = pytest.mark.usefixtures("float64")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def asymmetric_mixture():
    """The mixture used in the chapter for E[s] = 0, Stein's identity and the Fisher information."""
    return GaussianMixture(
        [0.3, 0.7], [[-2.0, 0.5], [1.5, -0.5]], [[[1.0, 0.3], [0.3, 0.5]], [[0.6, -0.2], [-0.2, 1.2]]]
    )


def symmetric_mixture(a=2.0, cov=None):
    cov = torch.eye(2) if cov is None else cov
    return GaussianMixture([0.5, 0.5], [[-a, 0.0], [a, 0.0]], cov.expand(2, 2, 2))


def z_scores(values):
    """Mean of each column in units of its standard error."""
    return values.mean(0) / (values.std(0) / math.sqrt(len(values)))


# --- the normalising constant drops out ------------------------------------------------------


def ring_energy(x):
    return (x.square().sum(-1) - 4).square() / 8 - 0.5 * x[..., 0]


def test_ebm_score_is_minus_grad_energy_and_ignores_constants():
    """Checks Proposition prop-scores-ebm."""
    x = 3 * torch.randn(500, 2, generator=gen(0))
    by_hand = -0.5 * (x.square().sum(-1, keepdim=True) - 4) * x + torch.tensor([0.5, 0.0])
    for const in (0.0, 123.4, -7.0):
        torch.testing.assert_close(autograd_score(lambda y: -ring_energy(y) + const)(x), by_hand)
    # Negative control: the sign of the energy matters (score = -grad E, not +grad E).
    assert not torch.allclose(autograd_score(ring_energy)(x), by_hand)


def test_unnormalised_mixture_density_has_the_closed_form_score():
    p = asymmetric_mixture()
    x = 4 * torch.randn(300, 2, generator=gen(1))
    # exp(log p + c) = e^c p: an unnormalised density, known only up to the factor e^c.
    torch.testing.assert_close(autograd_score(lambda y: p.log_prob(y) + 42.0)(x), p.score(x), rtol=1e-9, atol=1e-10)
    # The unnormalised sum of weighted kernels w_k exp(-maha/2) (no 2 pi, no det) has the same score.
    def unnormalised(y):
        diff = y[:, None, :] - p.means
        maha = torch.einsum("nki,kij,nkj->nk", diff, torch.linalg.inv(p.covs), diff)
        return torch.logsumexp(p.weights.log() - 0.5 * torch.logdet(p.covs) - 0.5 * maha, -1)

    torch.testing.assert_close(autograd_score(unnormalised)(x), p.score(x), rtol=1e-9, atol=1e-10)


def ring_log_z(n, half_width=5.0):
    """log Z of the ring by the Riemann sum of exp(−E) on an n × n grid over [−w, w]²."""
    xs = torch.linspace(-half_width, half_width, n)
    xx, yy = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    return float(torch.logsumexp(-ring_energy(pts), 0)) + 2 * math.log(2 * half_width / (n - 1))


def test_normalising_constant_by_quadrature_is_converged_and_does_not_change_the_score():
    log_Z = ring_log_z(401)
    # The chapter's grid is fine enough and its box wide enough: refining either changes nothing.
    assert abs(ring_log_z(801) - log_Z) < 1e-6 and abs(ring_log_z(561, 7.0) - log_Z) < 1e-6
    x = torch.randn(100, 2, generator=gen(2))
    torch.testing.assert_close(autograd_score(lambda y: -ring_energy(y) - log_Z)(x),
                               autograd_score(lambda y: -ring_energy(y))(x))


def test_quadratic_energy_with_nonsymmetric_matrix():
    A = torch.tensor([[2.0, 1.5], [-0.5, 1.0]])
    b = torch.tensor([0.3, -1.0])
    energy = lambda x: 0.5 * ((x @ A.T) * x).sum(-1) + x @ b + 4.0
    x = torch.randn(200, 2, generator=gen(3))
    score = autograd_score(lambda y: -energy(y))(x)
    A_sym = (A + A.T) / 2
    torch.testing.assert_close(score, -(x @ A_sym.T + b), rtol=1e-9, atol=1e-10)
    assert not torch.allclose(score, -(x @ A.T + b), atol=1e-3)  # the naive -(Ax + b)
    # With A_sym positive definite the density is N(-A_sym^{-1} b, A_sym^{-1}).
    assert (torch.linalg.eigvalsh(A_sym) > 0).all()
    g = Gaussian(-torch.linalg.solve(A_sym, b), torch.linalg.inv(A_sym))
    torch.testing.assert_close(score, g.score(x), rtol=1e-9, atol=1e-10)


def test_nonintegrable_energy_makes_langevin_run_away():
    # E(x) = -|x|^2 / 2 has score +x and no normalising constant: chains leave every bounded set.
    x0 = torch.randn(200, 2, generator=gen(4))
    out = langevin(lambda x: x, x0, step_size=0.01, n_steps=500, generator=gen(5))
    assert out.norm(dim=-1).median() > 50


# --- Gaussian scores --------------------------------------------------------------------------


def angle_deg(u, v):
    return math.degrees(math.acos(float((u @ v) / (u.norm() * v.norm()))))


def test_anisotropic_gaussian_score_is_not_parallel_to_mean_direction():
    mu = torch.zeros(2)
    g = Gaussian(mu, torch.diag(torch.tensor([1.0, 0.1])))
    x = torch.tensor([1.0, 1.0])
    s = g.score(x)
    torch.testing.assert_close(s, torch.tensor([-1.0, -10.0]))
    ang = angle_deg(s, mu - x)
    assert abs(ang - 39.3) < 0.05 and ang > 30
    assert float(s @ (mu - x)) > 0  # still a direction of increasing density
    # Along an eigenvector the score is parallel to mu - x.
    e2 = torch.tensor([0.0, 1.0])
    assert angle_deg(g.score(e2), mu - e2) < 1e-6


def test_gaussian_score_angle_respects_kantorovich_bound():
    gg = gen(6)
    a = torch.randn(3, 3, generator=gg)
    cov = a @ a.T + 0.2 * torch.eye(3)
    mu = torch.randn(3, generator=gg)
    g = Gaussian(mu, cov)
    x = mu + 2 * torch.randn(5000, 3, generator=gg)
    s, d = g.score(x), mu - x
    cos = (s * d).sum(-1) / (s.norm(dim=-1) * d.norm(dim=-1))
    ev = torch.linalg.eigvalsh(cov)
    kappa = float(ev[-1] / ev[0])
    bound = 2 * math.sqrt(kappa) / (1 + kappa)
    assert (cos > 0).all() and (cos >= bound - 1e-12).all()
    assert cos.min() < bound + 0.05  # the bound is nearly attained by some directions


def test_gaussian_jacobian_is_minus_precision():
    """Checks Proposition prop-scores-gaussian."""
    cov = torch.tensor([[2.0, 0.6], [0.6, 0.5]])
    g = Gaussian(torch.tensor([1.0, -1.0]), cov)
    J = jacrev(g.score)(torch.tensor([0.3, 0.4]))
    torch.testing.assert_close(J, -torch.linalg.inv(cov))


# --- mixture scores and their numerics ---------------------------------------------------------


def naive_mixture_score(p, x, eps=1e-8):
    dens = p.weights * torch.exp(-0.5 * (x[:, None, :] - p.means).square().sum(-1))
    return (dens[..., None] * -(x[:, None, :] - p.means)).sum(1) / (dens.sum(1, keepdim=True) + eps)


def test_mixture_score_is_responsibility_weighted_component_scores():
    """Checks Proposition prop-scores-mixture."""
    p = asymmetric_mixture()
    x = 3 * torch.randn(400, 2, generator=gen(7))
    r = p.responsibilities(x)
    comp = torch.stack([Gaussian(p.means[k], p.covs[k]).score(x) for k in range(2)], 1)
    torch.testing.assert_close(p.score(x), (r[..., None] * comp).sum(1), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(r.sum(-1), torch.ones(400))


def test_naive_epsilon_in_the_denominator_kills_the_score_far_away():
    p = symmetric_mixture()
    x = torch.tensor([[8.0, 0.0], [12.0, 0.0], [50.0, 0.0]])
    exact = -(x - torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(p.score(x), exact, rtol=0, atol=1e-6)
    naive = naive_mixture_score(p, x)
    assert abs(float(naive[0, 0]) - (-6.0 * 0.5 * math.exp(-18) / (0.5 * math.exp(-18) + 1e-8))) < 1e-9
    assert abs(float(naive[0, 0]) + 2.594) < 1e-3
    assert abs(float(naive[1, 0])) < 1e-10  # true value -10
    assert math.isnan(float(naive_mixture_score(p, x, eps=0)[2, 0]))  # 0/0 once both densities underflow


# --- geometry ---------------------------------------------------------------------------------


def level_set_points(p, level, n_angles=2000, centre=(0.0, 0.0), r_max=8.0):
    """Points of {p = level} on rays from `centre` (the set must be star-shaped around it), by bisection."""
    th = torch.linspace(0, 2 * math.pi, n_angles + 1)[:-1]
    u = torch.stack([th.cos(), th.sin()], -1)
    c = torch.tensor(centre)
    lo, hi = torch.zeros(n_angles), torch.full((n_angles,), r_max)
    target = math.log(level)
    for _ in range(80):
        mid = (lo + hi) / 2
        inside = p.log_prob(c + mid[:, None] * u) > target
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    return c + ((lo + hi) / 2)[:, None] * u


def test_score_is_orthogonal_to_level_sets_and_points_uphill():
    """Checks Proposition prop-scores-levelsets."""
    p = asymmetric_mixture()
    # {p = 0.08} is one curve around the heavier component (the lighter one peaks at 0.075);
    # {p = 0.005} is one curve around both. Both are star-shaped around the chosen centres.
    for level, centre in [(0.08, (1.5, -0.5)), (0.005, (0.0, 0.0))]:
        pts = level_set_points(p, level, centre=centre)
        assert torch.allclose(p.log_prob(pts), torch.full((len(pts),), math.log(level)), atol=1e-10)
        tangents = torch.roll(pts, -1, 0) - torch.roll(pts, 1, 0)  # central differences along the curve
        s = p.score(pts)
        cos = (tangents * s).sum(-1) / (tangents.norm(dim=-1) * s.norm(dim=-1))
        assert cos.abs().max() < 2e-3
        # Outward normal (away from the centre) against the score: the score points inwards, uphill.
        outward = pts - torch.tensor(centre)
        assert ((s * outward).sum(-1) < 0).all()
    # Negative control: a field rotated by 10 degrees is not orthogonal to the level sets.
    R = torch.tensor([[math.cos(0.1745), -math.sin(0.1745)], [math.sin(0.1745), math.cos(0.1745)]])
    pts = level_set_points(p, 0.08, centre=(1.5, -0.5))
    tangents = torch.roll(pts, -1, 0) - torch.roll(pts, 1, 0)
    s = p.score(pts) @ R.T
    cos = (tangents * s).sum(-1) / (tangents.norm(dim=-1) * s.norm(dim=-1))
    assert cos.abs().max() > 0.15


def test_score_is_the_steepest_ascent_direction():
    p = asymmetric_mixture()
    x = torch.tensor([0.4, 1.1])
    s = p.score(x)
    th = torch.linspace(0, 2 * math.pi, 3601)[:-1]
    u = torch.stack([th.cos(), th.sin()], -1)
    h = 1e-6
    directional = (p.log_prob(x + h * u) - p.log_prob(x - h * u)) / (2 * h)
    best = u[directional.argmax()]
    assert angle_deg(best, s) < 0.2
    assert abs(float(directional.max()) - float(s.norm())) < 1e-6


def test_saddle_of_symmetric_mixture_has_positive_divergence():
    """Checks Proposition prop-scores-classify."""
    p = symmetric_mixture()
    x0 = torch.zeros(2)
    torch.testing.assert_close(p.score(x0), torch.zeros(2), rtol=0, atol=1e-14)
    H = jacrev(p.score)(x0)
    torch.testing.assert_close(H, torch.diag(torch.tensor([3.0, -1.0])), rtol=0, atol=1e-12)
    eig = torch.linalg.eigvalsh(H)
    assert eig[0] < 0 < eig[1]  # a saddle ...
    assert abs(float(H.trace()) - 2.0) < 1e-12  # ... with the divergence of a minimum
    # Hessian by finite differences of log p (independent of the closed-form score).
    h = 1e-4
    e1, e2 = torch.eye(2)
    d11 = (p.log_prob(h * e1) - 2 * p.log_prob(x0) + p.log_prob(-h * e1)) / h**2
    d22 = (p.log_prob(h * e2) - 2 * p.log_prob(x0) + p.log_prob(-h * e2)) / h**2
    assert abs(float(d11) - 3) < 1e-5 and abs(float(d22) + 1) < 1e-5


def test_a_local_minimum_of_the_tilted_ring_repels_and_a_singular_hessian_decides_nothing():
    """The H ≻ 0 case of Proposition prop-scores-classify: inside the tilted ring the score vanishes
    at x* = (x1, 0) with (4 − x1²) x1 = −1 (x1 ≈ −0.254), H ≻ 0, p is larger on every side and the
    flow ẋ = s leaves. Then two densities with the same singular H = diag(0, −1) at the origin: a
    strict maximum (−x1⁴ − x2²/2) and not an extremum (x1³ − x1⁶ − x2²/2)."""
    lo, hi = -1.0, 0.0  # (4 − x1²) x1 + 1 is increasing on [−1, 0] and changes sign
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (4 - mid**2) * mid + 1 < 0 else (lo, mid)
    x_star = torch.tensor([[(lo + hi) / 2, 0.0]])
    score = autograd_score(lambda y: -ring_energy(y))
    assert score(x_star).abs().max() < 1e-12
    H = jacrev(jacrev(lambda y: -ring_energy(y)))(x_star[0])  # the Jacobian of the score
    assert torch.linalg.eigvalsh(H).min() > 1.5
    angles = torch.arange(360) * 2 * math.pi / 360
    u = torch.stack([angles.cos(), angles.sin()], -1)
    assert (-ring_energy(x_star + 0.05 * u) > -ring_energy(x_star)).all()
    x = x_star + 1e-3 * u
    for _ in range(300):  # Euler steps of the flow up to t = 3: a displacement grows like e^{λt}, λ ≥ 1.9
        x = x + 0.01 * score(x)
    assert ((x - x_star).norm(dim=-1) > 0.1).all()
    h = 0.1 * u
    strict_max = -(h[:, 0] ** 4) - 0.5 * h[:, 1] ** 2
    not_extremum = h[:, 0] ** 3 - h[:, 0] ** 6 - 0.5 * h[:, 1] ** 2
    for log_p in (lambda y: -(y[0] ** 4) - 0.5 * y[1] ** 2, lambda y: y[0] ** 3 - y[0] ** 6 - 0.5 * y[1] ** 2):
        hess = jacrev(jacrev(log_p))(torch.zeros(2))
        torch.testing.assert_close(hess, torch.diag(torch.tensor([0.0, -1.0])))
    assert (strict_max < 0).all() and (not_extremum > 0).any() and (not_extremum < 0).any()


def test_saddle_with_negative_divergence():
    p = symmetric_mixture(cov=torch.diag(torch.tensor([1.0, 0.2])))
    H = jacrev(p.score)(torch.zeros(2))
    torch.testing.assert_close(torch.linalg.eigvalsh(H), torch.tensor([-5.0, 3.0]), rtol=0, atol=1e-12)
    assert abs(float(H.trace()) + 2.0) < 1e-12


def test_modes_of_symmetric_mixture_and_gradient_ascent():
    p = symmetric_mixture()
    x = torch.tensor([1.0, 0.5])
    with torch.no_grad():
        for _ in range(500):
            x = x + 0.5 * p.score(x)
    assert x.grad_fn is None
    assert float(p.score(x).norm()) < 1e-12
    # The mode solves x1 = 2 tanh(2 x1): it is not the component mean.
    assert abs(float(x[0]) - 2 * math.tanh(2 * float(x[0]))) < 1e-12
    assert abs(float(x[0]) - 1.99866) < 1e-5 and abs(float(x[1])) < 1e-12
    eig = torch.linalg.eigvalsh(jacrev(p.score)(x))
    assert (eig < 0).all()
    assert abs(float(eig.sum()) + 1.9946) < 1e-3


def test_divergence_does_not_locate_stationary_points():
    # On the segment between the modes the divergence changes sign where the score is not zero.
    p = symmetric_mixture()
    t = torch.linspace(0.05, 1.95, 400)
    pts = torch.stack([t, torch.zeros_like(t)], -1)
    div = vmap(jacrev(p.score))(pts).diagonal(dim1=-2, dim2=-1).sum(-1)
    j = int(torch.nonzero(div[:-1] * div[1:] < 0)[0, 0])
    assert float(p.score(pts[j]).norm()) > 0.3


@pytest.mark.parametrize("a,kind", [(0.8, "mode"), (0.99, "mode"), (1.01, "saddle"), (1.2, "saddle")])
def test_unimodality_threshold(a, kind):
    p = symmetric_mixture(a=a)
    H = jacrev(p.score)(torch.zeros(2))
    torch.testing.assert_close(H, torch.diag(torch.tensor([a * a - 1, -1.0])), rtol=0, atol=1e-12)
    eig = torch.linalg.eigvalsh(H)
    assert ((eig < 0).all() if kind == "mode" else (eig[0] < 0 < eig[1]))


def test_stationary_points_of_unequal_weights():
    p = GaussianMixture.isotropic([0.9, 0.1], [[-2.0, 0.0], [2.0, 0.0]], 1.0)
    t = torch.linspace(-5, 5, 20001)
    s1 = p.score(torch.stack([t, torch.zeros_like(t)], -1))[:, 0]
    roots = t[:-1][s1[:-1] * s1[1:] <= 0]
    assert len(roots) == 3
    assert abs(float(roots[1]) - 0.745) < 1e-3  # the saddle moves towards the light component


def test_score_jacobian_is_symmetric_but_a_learned_field_need_not_be():
    p = asymmetric_mixture()
    pts = 2 * torch.randn(50, 2, generator=gen(8))
    J = vmap(jacrev(p.score))(pts)
    assert (J - J.mT).norm(dim=(-2, -1)).max() < 1e-10

    def rotating(x, omega=1.0):
        return -x + omega * torch.stack([-x[..., 1], x[..., 0]], -1)

    Jr = vmap(jacrev(rotating))(pts)
    torch.testing.assert_close((Jr - Jr.mT).norm(dim=(-2, -1)), torch.full((50,), 2 * math.sqrt(2)))


def test_divergence_free_rotation_keeps_gaussian_stationary():
    # Drift -x + omega J x with p = N(0, I): the ULA stationary covariance is c I with
    # c = 1 / (1 - eps (1 + omega^2) / 2); the rotation changes only the O(eps) bias.
    eps, omega = 0.05, 1.0
    field = lambda x: -x + omega * torch.stack([-x[..., 1], x[..., 0]], -1)
    x = langevin(field, torch.zeros(20000, 2), step_size=eps, n_steps=400, generator=gen(9))
    c = 1 / (1 - eps * (1 + omega**2) / 2)
    var = x.var(0)
    se = c * math.sqrt(2 / len(x))
    assert (var - c).abs().max() < 4 * se
    assert abs(float((x[:, 0] * x[:, 1]).mean())) < 4 * c / math.sqrt(len(x))


# --- E[s] = 0, Stein's identity ----------------------------------------------------------------


def test_score_has_mean_zero_and_biased_samples_do_not():
    """Checks Theorem thm-scores-mean-zero."""
    p = asymmetric_mixture()
    x = p.sample(200_000, generator=gen(10))
    assert z_scores(p.score(x)).abs().max() < 3.5
    # Negative controls: samples of a slightly different law (shifted, or wrong weights).
    assert z_scores(p.score(x + torch.tensor([0.1, 0.0]))).abs().max() > 20
    wrong = GaussianMixture([0.5, 0.5], p.means, p.covs).sample(200_000, generator=gen(11))
    assert z_scores(p.score(wrong)).abs().max() > 20


def test_mean_of_score_fails_when_density_does_not_vanish_at_the_boundary():
    u = torch.rand(200_000, generator=gen(12))
    x = -torch.log1p(-u)  # Exp(1) on [0, inf): p(0) = 1
    s = autograd_score(lambda y: -y)(x)
    assert float(s.mean()) == -1.0  # = -p(0), the boundary term
    # Stein's identity with f(x) = x holds: the boundary term x p(x) vanishes at 0 and at infinity.
    v = x * s + 1
    assert abs(float(v.mean())) < 3.5 * float(v.std()) / math.sqrt(len(v))


def test_stein_identity_for_several_test_functions():
    """Checks Proposition prop-scores-stein."""
    p = asymmetric_mixture()
    x = p.sample(200_000, generator=gen(13))
    s = p.score(x)
    # f(x) = x_j: E[s x^T] = -I
    v = (s[:, :, None] * x[:, None, :]).reshape(len(x), 4) + torch.eye(2).reshape(1, 4)
    assert z_scores(v).abs().max() < 3.5
    # f(x) = sin(x_1) + x_2^2 / 2: E[f s + grad f] = 0
    f = torch.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2
    grad_f = torch.stack([torch.cos(x[:, 0]), x[:, 1]], -1)
    assert z_scores(f[:, None] * s + grad_f).abs().max() < 3.5
    # Negative control: the sign convention E[f s - grad f] is far from zero.
    assert z_scores(f[:, None] * s - grad_f).abs().max() > 20


# --- Fisher information -----------------------------------------------------------------------


def test_gaussian_fisher_information_is_the_precision():
    """Checks Theorem thm-scores-fisher."""
    cov = torch.tensor([[2.0, 0.6], [0.6, 0.5]])
    g = Gaussian(torch.tensor([1.0, -1.0]), cov)
    x = g.sample(400_000, generator=gen(14))
    s = g.score(x)
    outer = (s[:, :, None] * s[:, None, :]).reshape(len(x), 4)
    P = torch.linalg.inv(cov).reshape(4)
    z = (outer.mean(0) - P) / (outer.std(0) / math.sqrt(len(x)))
    assert z.abs().max() < 4
    # Negative controls: Sigma, or twice the precision, are many standard errors away.
    for wrong in (cov.reshape(4), 2 * P):
        assert ((outer.mean(0) - wrong) / (outer.std(0) / math.sqrt(len(x)))).abs().max() > 20
    # The Hessian form: -grad^2 log p = Sigma^{-1} everywhere.
    torch.testing.assert_close(-jacrev(g.score)(x[0]), torch.linalg.inv(cov))


def test_mixture_fisher_information_two_expressions_agree():
    p = asymmetric_mixture()
    x = p.sample(50_000, generator=gen(15))
    s = p.score(x)
    outer = s[:, :, None] * s[:, None, :]
    minus_hess = -vmap(jacrev(p.score))(x)
    # The Jacobians from jacrev agree with central differences of the score at a few points.
    h, e = 1e-5, torch.eye(2)
    for i in range(3):
        fd = torch.stack([(p.score(x[i] + h * e[j]) - p.score(x[i] - h * e[j])) / (2 * h) for j in range(2)], -1)
        torch.testing.assert_close(-fd, minus_hess[i], rtol=1e-6, atol=1e-6)
    diff = (outer - minus_hess).reshape(len(x), 4)
    assert z_scores(diff).abs().max() < 4
    # Negative control: E[s s^T] is not +E[Hessian].
    assert z_scores((outer + minus_hess).reshape(len(x), 4)).abs().max() > 20
    # J(p) >= Cov^{-1} (Stein + Cauchy-Schwarz), strictly for a non-Gaussian mixture.
    J = outer.mean(0)
    gap = torch.linalg.eigvalsh(J - torch.linalg.inv(p.covariance()))
    assert (gap > 0.1).all()


def test_parameter_fisher_differs_from_location_fisher_for_a_scale_family():
    theta = 1.5
    x = theta * torch.randn(400_000, generator=gen(16))
    par = -1 / theta + x**2 / theta**3
    # The parameter score matches autograd of log N(x; 0, theta^2) in theta.
    th = torch.tensor(theta, requires_grad=True)
    logp = torch.distributions.Normal(0.0, th).log_prob(x[:10]).sum()
    (g,) = torch.autograd.grad(logp, th)
    assert abs(float(g) - float(par[:10].sum())) < 1e-9
    I_mc, se_I = float(par.square().mean()), float(par.square().std()) / math.sqrt(len(x))
    assert abs(I_mc - 2 / theta**2) < 4 * se_I
    assert abs(I_mc - 1 / theta**2) > 20 * se_I
    data = Gaussian(torch.zeros(1), torch.tensor([[theta**2]])).score(x[:, None])[:, 0]
    J_mc, se_J = float(data.square().mean()), float(data.square().std()) / math.sqrt(len(x))
    assert abs(J_mc - 1 / theta**2) < 4 * se_J
    assert abs(J_mc - 2 / theta**2) > 20 * se_J


def test_parameter_fisher_equals_location_fisher_for_a_location_family():
    """Checks Proposition prop-scores-location."""
    p = asymmetric_mixture()
    theta = torch.tensor([0.7, -0.3])
    x = p.sample(100_000, generator=gen(17)) + theta  # samples of p(x - theta)
    # Per-sample parameter scores grad_theta log p(x - theta), by vmap over the batch.
    per_sample = vmap(jacrev(lambda t, xi: p.log_prob(xi - t)), in_dims=(None, 0))(theta, x)
    torch.testing.assert_close(per_sample, -p.score(x - theta))
    I = per_sample.T @ per_sample / len(x)
    J = (lambda s: s.T @ s / len(s))(p.score(x - theta))
    torch.testing.assert_close(I, J)


def test_de_bruijn_identity_for_a_gaussian():
    # h(N(0, (s0^2 + t) I_d)) = d/2 log(2 pi e (s0^2 + t)); its t-derivative is tr J(p_t) / 2.
    d, s0, t = 3, 0.7, 0.4
    h = lambda tt: 0.5 * d * math.log(2 * math.pi * math.e * (s0**2 + tt))
    dh = (h(t + 1e-6) - h(t - 1e-6)) / 2e-6
    J = torch.linalg.inv((s0**2 + t) * torch.eye(d))
    assert abs(dh - 0.5 * float(J.trace())) < 1e-6


# --- scores move densities --------------------------------------------------------------------


@pytest.mark.parametrize("sign,expected", [(-1.0, 3.0), (+1.0, None)])
def test_transport_along_minus_own_score_is_the_heat_flow(sign, expected):
    x = torch.randn(100_000, 1, generator=gen(18))
    n, dt = 200, 1.0 / 200
    for k in range(n):
        p_t = Gaussian(torch.zeros(1), torch.tensor([[1 + 2 * k * dt]]))
        x = x + sign * dt * p_t.score(x)
    if expected is not None:
        assert abs(float(x.var()) - expected) < 0.03
    else:  # moving along +score contracts instead of spreading like Brownian motion
        assert float(x.var()) < 1.0


def test_langevin_with_rescaled_score_samples_p_to_the_c():
    # Drift c * s for N(0, 1): ULA stationary variance 1 / (c (1 - c eps / 2)), i.e. p^c, not p.
    eps = 0.01
    for c in (1.0, 2.0):
        x = langevin(lambda y: c * -y, torch.zeros(20000, 1), step_size=eps, n_steps=1000, generator=gen(19))
        target = 1 / (c * (1 - c * eps / 2))
        assert abs(float(x.var()) - target) < 4 * target * math.sqrt(2 / len(x))


def test_langevin_on_the_ring_ebm_matches_quadrature():
    score = autograd_score(lambda y: -ring_energy(y))
    x = langevin(score, torch.randn(6000, 2, generator=gen(20)), step_size=0.01, n_steps=1500, generator=gen(21))
    n = 401
    xs = torch.linspace(-5, 5, n)
    xx, yy = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)
    w = torch.softmax(-ring_energy(pts), 0)
    mean_q = float((w * pts[:, 0]).sum())
    se = float(x[:, 0].std()) / math.sqrt(len(x))
    assert abs(float(x[:, 0].mean()) - mean_q) < 4 * se + 0.01


# --- the chapter's plotting and widget additions ----------------------------------------------


def test_mixture_panel_and_streamlines_draw_float32_and_float64():
    import matplotlib.pyplot as plt

    from companion import plotting

    for dtype in (torch.float32, torch.float64):
        p = GaussianMixture.isotropic([0.3, 0.7], [[-1.0, 0.0], [1.5, 1.0]], 1.0).to(dtype=dtype)
        fig, axes = plt.subplots(1, 2)
        plotting.mixture_panel(p, ax=axes[0], n_arrows=9)
        plotting.score_streamlines(p.score, ax=axes[1], n=30, dtype=dtype)
        assert axes[0].get_xlabel() == "$x_1$"
        assert len(axes[0].collections) >= 2  # contours, arrows and means
        plt.close(fig)


def test_mixture_score_explorer_redraws_on_change():
    pytest.importorskip("ipywidgets")
    import matplotlib.pyplot as plt

    from companion.widgets import mixture_score_explorer

    open_before = set(plt.get_fignums())
    box = mixture_score_explorer()
    sliders = [w for row in box.children[:3] for w in row.children]
    assert [s.description for s in sliders] == ["mu_1 x", "mu_1 y", "mu_2 x", "mu_2 y", "w", "unit arrows"]
    for control, value in zip(sliders, (-1.0, 0.5, 1.0, -0.5, 0.8, False)):
        control.value = value  # every change redraws without error
    assert set(plt.get_fignums()) == open_before  # each redraw closes its figure


def test_gradient_ascent_on_the_tilted_ring_ends_at_its_single_mode():
    # The tilt makes the ridge a slope: ascent does not stop on the ring but slides to the one
    # mode, the root of x³ − 4x − 1 near 2.115 on the x₁-axis (the other two roots are a saddle
    # and the minimum of p inside the ring).
    score = autograd_score(lambda y: -ring_energy(y))
    x = 3 * torch.randn(2000, 2, generator=gen(22))
    x = x[(x[:, 1].abs() > 0.05)]  # off the x₁-axis, where the saddle at (−1.86, 0) could hold a point
    for _ in range(20000):
        x = x + 0.02 * score(x)
    mode = torch.tensor([2.1149, 0.0])
    assert ((x - mode).norm(dim=-1) < 1e-2).float().mean() > 0.99
    assert abs(2.1149**3 - 4 * 2.1149 - 1) < 1e-3
