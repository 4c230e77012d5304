"""Numerical checks of the derivations of Chapter 5 (why naive score-based sampling fails, and
multi-scale noise) not covered by tests/test_annealed.py or tests/test_losses.py."""

import math

import pytest
import torch

from companion import schedules
from companion.distributions import Gaussian, GaussianMixture
from companion.losses import dsm_loss, ism_loss
from companion.nets import ScoreMLP
from companion.train import fit

F64 = torch.float64
MEANS = [[5.0, 5.0], [-5.0, -5.0]]
DELTA = 10 * math.sqrt(2)  # distance between the means


def mixture(w1, dtype=F64):
    return GaussianMixture.isotropic([w1, 1 - w1], MEANS, 1.0).to(dtype=dtype)


def phi(t):
    return 0.5 * (1 + math.erf(t / math.sqrt(2)))


def test_ism_on_a_line_is_unbounded_below_and_the_perturbed_minimiser_is_the_perturbed_score():
    """Data on {x2 = 0}: J_ISM(-diag(a1, a2) x) = a1^2 E[u^2]/2 - a1 - a2 (slope -1 in a2, no minimum).
    For the perturbed law N(0, diag(1 + s^2, s^2)) the minimiser is a = (1/(1 + s^2), 1/s^2).
    Checks Proposition prop-ms-line-ism."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(20_000, generator=g, dtype=F64)
    line = torch.stack([u, torch.zeros_like(u)], -1)
    values = [ism_loss(lambda x, a2=a2: -x * torch.tensor([1.0, a2], dtype=F64), line).item() for a2 in (1.0, 1e2, 1e4)]
    for v, a2 in zip(values, (1.0, 1e2, 1e4)):
        assert abs(v - (0.5 * u.square().mean().item() - 1 - a2)) < 1e-6 * max(1.0, a2)
    sigma = 0.3
    p_sigma = Gaussian(torch.zeros(2, dtype=F64), torch.diag(torch.tensor([1 + sigma**2, sigma**2], dtype=F64)))
    noisy = line + sigma * torch.randn(line.shape, generator=g, dtype=F64)
    # the perturbed law of the line data is that Gaussian: compare covariances
    torch.testing.assert_close(torch.cov(noisy.T), p_sigma.covs[0], atol=0.03, rtol=0.03)

    def j(a1, a2):
        return ism_loss(lambda x: -x * torch.tensor([a1, a2], dtype=F64), noisy).item()

    best = 1 / sigma**2
    assert j(1 / (1 + sigma**2), best) < min(j(1 / (1 + sigma**2), 0.8 * best), j(1 / (1 + sigma**2), 1.25 * best))
    # Exactly, on the samples: J = ½a1² m1 + ½a2² m2 − a1 − a2 with m = mean(x²), minimised at a = 1/m; and
    # m → (1 + σ², σ²), the proposition's closed form and minimiser, within 4 standard errors.
    second = noisy.square()
    m = second.mean(0)
    for a1, a2 in [(0.3, 1.0), (1.0, 10.0), (2.5, 100.0)]:
        assert j(a1, a2) == pytest.approx(0.5 * a1**2 * m[0].item() + 0.5 * a2**2 * m[1].item() - a1 - a2, rel=1e-12)
    se = second.std(0) / math.sqrt(len(second))
    assert ((m - torch.tensor([1 + sigma**2, sigma**2], dtype=F64)).abs() < 4 * se).all()
    x = torch.tensor([[0.7, 0.2]], dtype=F64)
    torch.testing.assert_close(p_sigma.score(x), torch.tensor([[-0.7 / (1 + sigma**2), -0.2 / sigma**2]], dtype=F64))


def test_perturbed_score_off_a_curve_points_back_with_length_distance_over_sigma_squared():
    """Empirical data on a circle of radius 2: p_sigma is a mixture of N(x_j, sigma^2 I); at distance
    delta off the curve, sigma^2 |score| -> delta and the score points along the inward normal.
    Checks Proposition prop-ms-manifold-score."""
    n = 1000
    t = torch.arange(n, dtype=F64) * 2 * math.pi / n
    circle = 2.0 * torch.stack([t.cos(), t.sin()], -1)
    angles = torch.linspace(0, 2 * math.pi, 13, dtype=F64)[:-1] + 0.05
    inward = -torch.stack([angles.cos(), angles.sin()], -1)
    for delta in (0.2, 0.4):
        probes = -(2 + delta) * inward
        ratios = []
        for sigma in (0.2, 0.1, 0.05):
            p_sigma = GaussianMixture.isotropic(torch.full((n,), 1 / n, dtype=F64), circle, sigma**2)
            s = p_sigma.score(probes)
            assert torch.isfinite(s).all()
            cos = (s * inward).sum(-1) / s.norm(dim=-1)
            assert (cos > 0.9999).all()
            ratios.append((sigma**2 * s.norm(dim=-1) / delta).mean().item())
        assert abs(ratios[-1] - 1) < 0.03  # the limit sigma^2 |s| -> delta
        assert abs(ratios[-1] - 1) < abs(ratios[0] - 1)  # and it is approached as sigma decreases


def test_naively_trained_score_is_wrong_far_from_the_data():
    """DSM at a tiny sigma on the 0.8/0.2 mixture: the error grows with the distance from the data."""
    mix = mixture(0.8, dtype=torch.float32)
    data = mix.sample(4000, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    net = ScoreMLP(2, hidden=32, depth=2)
    g = torch.Generator().manual_seed(2)
    fit(lambda m, b: dsm_loss(m, b, 0.1, generator=g), net, data, n_steps=600, lr=3e-3, generator=g)
    xs = torch.linspace(-10, 10, 61)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        err = (net(grid) - mix.perturb(0.1).score(grid)).norm(dim=-1)
    dist = torch.cdist(grid, mix.means).min(1).values
    near, far = err[dist < 2.5].median(), err[dist > 6].median()
    assert near < 1.0
    assert far > 3 * near


def test_tail_of_a_two_dimensional_gaussian():
    """P(|x - mu| > r) = exp(-r^2 / 2) in d = 2, and exp(-r^2 / (2 (1 + sigma^2))) after perturbation."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(400_000, 2, generator=g, dtype=F64)
    for r in (1.0, 2.0, 3.0):
        assert abs((z.norm(dim=-1) > r).double().mean().item() - math.exp(-r**2 / 2)) < 0.003
    sigma = 1.5
    x = Gaussian(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)).perturb(sigma).sample(400_000, generator=g)
    assert abs((x.norm(dim=-1) > 4).double().mean().item() - math.exp(-16 / (2 * (1 + sigma**2)))) < 0.003


def test_mixture_score_ignores_the_weights_away_from_the_midplane():
    """|s_w - s_w'| <= Delta rho exp(-Delta |u|) (and it does depend on w near the midplane).
    Checks Proposition prop-ms-weights."""
    heavy, even = mixture(0.8), mixture(0.5)
    xs = torch.linspace(-10, 10, 201, dtype=F64)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    u = grid.sum(-1) / math.sqrt(2)
    gap = (heavy.score(grid) - even.score(grid)).norm(dim=-1)
    bound = DELTA * 4 * torch.exp(-DELTA * u.abs())
    assert (gap <= bound * (1 + 1e-9) + 1e-12).all()
    assert gap[u.abs() < 0.2].max() > 3  # near the midplane the weights matter


def test_mixture_score_is_minus_x_plus_responsibility_weighted_means_off_centre():
    """Item 1 of Proposition prop-ms-weights for means whose midpoint is not the origin, in 3-D:
    s = −x + r1 μ1 + r2 μ2 and log(r1/r2) = log(w1/w2) + Δ u(x)."""
    g = torch.Generator().manual_seed(11)
    means = torch.randn(2, 3, generator=g, dtype=F64) * 2 + torch.tensor([3.0, -1.0, 2.0], dtype=F64)
    w = torch.tensor([0.7, 0.3], dtype=F64)
    mix = GaussianMixture.isotropic(w, means, 1.0)
    x = 4 * torch.randn(500, 3, generator=g, dtype=F64)
    r = mix.responsibilities(x)
    torch.testing.assert_close(mix.score(x), -x + r @ means, rtol=1e-10, atol=1e-10)
    delta = (means[0] - means[1]).norm()
    u = (x - means.mean(0)) @ ((means[0] - means[1]) / delta)
    torch.testing.assert_close(r[:, 0].log() - r[:, 1].log(), (w[0] / w[1]).log() + delta * u, rtol=1e-10, atol=1e-10)


def test_saddle_of_the_mixture_moves_by_log_weight_ratio_over_delta():
    """The zero of the score between the modes: u* = (l* - log(w1/w2))/Delta, l* = 2 artanh(2u*/Delta)."""
    e = torch.tensor([1.0, 1.0], dtype=F64) / math.sqrt(2)
    for w1 in (0.8, 0.95):
        mix = mixture(w1)
        lo, hi = -3.0, 3.0
        for _ in range(80):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (mix.score(mid * e[None]) @ e).item() < 0 else (lo, mid)
        u_star = (lo + hi) / 2
        ell = 2 * math.atanh(2 * u_star / DELTA)
        log_ratio = math.log(w1 / (1 - w1))
        assert abs(u_star - (ell - log_ratio) / DELTA) < 1e-7
        assert abs(u_star + log_ratio / DELTA) < 0.03 * log_ratio / DELTA


def test_perturbed_mixture_approaches_one_gaussian_and_heavy_side_mass_formula():
    """KL(p_sigma || N(m, C + sigma^2 I)) decreases to 0, and the mass of p_sigma on the heavy side of
    the midplane is w1 Phi(a/sqrt(1+s^2)) + w2 Phi(-a/sqrt(1+s^2)), a = Delta/2."""
    mix = mixture(0.8)
    m, c = mix.mean(), mix.covariance()
    g = torch.Generator().manual_seed(4)
    kls = []
    a = DELTA / 2
    for sigma in (0.5, 2.0, 5.0, 20.0):
        p_s = mix.perturb(sigma)
        x = p_s.sample(100_000, generator=g)
        gauss = Gaussian(m, c + sigma**2 * torch.eye(2, dtype=F64))
        kls.append((p_s.log_prob(x) - gauss.log_prob(x)).mean().item())
        torch.testing.assert_close(p_s.covariance(), c + sigma**2 * torch.eye(2, dtype=F64))
        s = math.sqrt(1 + sigma**2)
        heavy = 0.8 * phi(a / s) + 0.2 * phi(-a / s)
        assert abs((x.sum(-1) > 0).double().mean().item() - heavy) < 0.006
    assert all(k1 > k2 for k1, k2 in zip(kls, kls[1:]))
    assert kls[0] > 0.5 and kls[-1] < 0.01


def test_sigma2_weighted_optimal_losses_lie_in_zero_to_half_d_per_level():
    """With the exact score, sigma^2 DSM(sigma) = d/2 - sigma^2 tr J(p_sigma)/2 in [0, d/2] at every
    level; unweighted, the levels span orders of magnitude. Gaussian check: d/2 s0^2/(s0^2 + sigma^2)."""
    mix = mixture(0.8)
    g = torch.Generator().manual_seed(5)
    x = mix.sample(100_000, generator=g)
    sigmas = schedules.geometric(20.0, 0.05, 8).tolist()
    opt = torch.tensor([dsm_loss(mix.perturb(s).score, x, s, generator=g).item() for s in sigmas], dtype=F64)
    weighted = torch.tensor(sigmas, dtype=F64) ** 2 * opt
    assert (weighted >= 0).all() and (weighted <= 1.0 + 0.01).all()
    assert opt.max() / opt.min() > 1e4
    s0 = 1.0
    gauss = Gaussian(torch.zeros(2, dtype=F64), s0**2 * torch.eye(2, dtype=F64))
    xg = gauss.sample(200_000, generator=g)
    for s in (0.1, 1.0, 5.0):
        val = s**2 * dsm_loss(gauss.perturb(s).score, xg, s, generator=g).item()
        assert abs(val - s0**2 / (s0**2 + s**2)) < 0.01  # d/2 = 1
