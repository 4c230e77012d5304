"""Numerical checks of Chapter 6 (annealed Langevin dynamics in practice)."""

import math

import pytest
import torch

from companion import schedules
from companion.distributions import Gaussian, GaussianMixture
from companion.samplers import annealed_langevin, reverse_diffusion_coefficients
from companion.sde import VESDE

F64 = torch.float64


def gaussian_score(variance):
    """s(x, sigma) for 1-D data N(0, variance): the exact score of p_sigma = N(0, variance + sigma^2)."""
    return lambda x, sigma: -x / (variance + sigma.view(-1, *([1] * (x.ndim - 1))) ** 2)


def test_variance_after_T_steps_follows_the_ncsnv2_ratio_at_every_level():
    """Point-mass data (variance 0): with alpha_i = eps sigma_i^2/sigma_L^2 and a start of variance
    gamma^2 sigma_i^2, the variance after T steps is sigma_i^2 times ncsnv2_variance_ratio, the same
    ratio at every level (Proposition prop-ald-variance)."""
    gamma, T, eps, sigma_L = 1.5, 3, 0.3e-4, 0.01
    g = torch.Generator().manual_seed(0)
    predicted = schedules.ncsnv2_variance_ratio(eps, sigma_L, gamma, T)
    for sigma in [1.0, 0.1, 0.01]:
        x0 = gamma * sigma * torch.randn(200_000, 1, generator=g, dtype=F64)
        # a one-level call at sigma with step_lr = eps sigma^2/sigma_L^2 is the level i of the chain
        x = annealed_langevin(gaussian_score(0.0), x0, [sigma], step_lr=eps * sigma**2 / sigma_L**2,
                              n_steps_each=T, generator=g)
        measured = x.var().item() / sigma**2
        assert abs(measured - predicted) < 0.02 * predicted, (sigma, measured, predicted)
    # the ratio exceeds 1 and differs from the start (gamma^2) and from the stationary value
    assert 1.05 < predicted < gamma**2 - 0.2
    assert abs(predicted - 1 / (1 - eps / (2 * sigma_L**2))) > 0.05


def test_capped_step_rule_is_constant_and_sigma2_rule_keeps_alpha_over_sigma2():
    """Checks Proposition prop-ald-snr."""
    sigmas = schedules.geometric(10.0, 0.01, 6)
    eps = 2e-5
    capped = eps * torch.clamp(sigmas**2 / sigmas[-1] ** 2, max=1.0)
    assert torch.allclose(capped, torch.full_like(capped, eps))  # the mistake: the same step everywhere
    rule = eps * sigmas**2 / sigmas[-1] ** 2
    torch.testing.assert_close(rule / sigmas**2, torch.full_like(rule, eps / 0.01**2))
    assert math.isclose((rule[0] / rule[-1]).item(), (10.0 / 0.01) ** 2, rel_tol=1e-9)
    # annealed_langevin uses the sigma^2 rule: one step from x = 0 with the zero score moves by
    # sqrt(2 alpha_i) z, so the spread after level i's single step measures alpha_i
    seen = []
    annealed_langevin(lambda x, s: torch.zeros_like(x), torch.zeros(100_000, 1, dtype=F64), sigmas[:3], step_lr=eps,
                      n_steps_each=1, generator=torch.Generator().manual_seed(1),
                      callback=lambda d: seen.append(d["x"].clone()))
    increments = [seen[0].var().item()] + [(b - a).var().item() for a, b in zip(seen, seen[1:])]
    for inc, sigma in zip(increments, sigmas[:3].tolist()):
        alpha = eps * sigma**2 / sigmas[2].item() ** 2  # sigma_L of the three-level call
        assert abs(inc / (2 * alpha) - 1) < 0.02


def test_snr_of_a_step_and_the_stability_of_every_level():
    """Proposition prop-ald-snr on data N(0, s0² I_D): SNR_i² = α_i κ_i/(2σ_i²) with κ_i = σ_i²/(s0² + σ_i²),
    Monte Carlo against the formula; the rule makes it ε κ_i/(2σ_L²), level-free once κ ≈ 1, while
    a constant step makes SNR ∝ 1/σ. And with point-mass data, where α_i/σ_i² = ε/σ_L² at every
    level, the ladder ends with a bounded variance for ε < 2σ_L² and diverges beyond it."""
    s0, dim, eps = 0.5, 4, 1e-3
    sigmas = schedules.geometric(20.0, 5.0, 4)
    g = torch.Generator().manual_seed(6)
    snr2_rule, snr2_constant = [], []
    for sigma in sigmas.tolist():
        x = math.sqrt(s0**2 + sigma**2) * torch.randn(200_000, dim, generator=g, dtype=F64)
        norm2 = (x / (s0**2 + sigma**2)).square().sum(-1)  # ‖s(x, σ)‖²
        kappa = sigma**2 / (s0**2 + sigma**2)
        alpha = eps * sigma**2 / sigmas[-1].item() ** 2
        mc = alpha * norm2 / (2 * dim)  # per-sample terms of E‖α s‖² / E‖√(2α) z‖²
        assert abs(mc.mean() - alpha * kappa / (2 * sigma**2)) < 4 * mc.std() / math.sqrt(len(mc))
        snr2_rule.append(alpha * kappa / (2 * sigma**2))
        snr2_constant.append(eps * kappa / (2 * sigma**2))
    assert max(snr2_rule) / min(snr2_rule) < 1.01  # κ ∈ [0.990, 0.9994] on this ladder
    assert snr2_constant[-1] / snr2_constant[0] > 0.99 * (20.0 / 5.0) ** 2
    ladder = schedules.geometric(1.0, 0.1, 5)
    for ratio, stable in [(1.9, True), (2.1, False)]:
        x = annealed_langevin(gaussian_score(0.0), torch.zeros(2000, 1, dtype=F64), ladder, step_lr=ratio * 0.1**2,
                              n_steps_each=50, generator=torch.Generator().manual_seed(7))
        assert (x.var().item() < 1.0) == stable  # stationary 2α/(1 − (1 − α/σ²)²) = 20 σ_L² when stable


def test_reverse_diffusion_predictor_needs_the_variance_difference():
    """x_{i+1} = x_i + (s_i^2 - s_{i+1}^2) score(x_i, s_i) + sqrt(s_i^2 - s_{i+1}^2) z keeps the exact
    marginal N(0, v + s_{i+1}^2) on Gaussian data (up to the O(1/N) discretisation); adding sqrt(s_{i+1}^2)
    noise instead does not."""
    v = 0.25
    sigmas = schedules.geometric(10.0, 0.01, 500)
    g = torch.Generator().manual_seed(2)
    score = gaussian_score(v)

    def predictor(noise):
        x = math.sqrt(v + sigmas[0].item() ** 2) * torch.randn(100_000, 1, generator=g, dtype=F64)
        for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
            drift = (s**2 - s_next**2) * score(x, torch.full((x.shape[0],), s, dtype=F64))
            x = x + drift + noise(s, s_next) * torch.randn(x.shape, generator=g, dtype=F64)
        return x.var().item()

    target = v + 0.01**2
    right = predictor(lambda s, s_next: math.sqrt(s**2 - s_next**2))
    wrong = predictor(lambda s, s_next: s_next)
    assert abs(right / target - 1) < 0.03
    assert wrong / target > 2
    # The package's reverse-diffusion predictor for VE is the right version: (1, s² − s'², √(s² − s'²)).
    ve = VESDE(0.01, 10.0)
    for t, t_next in [(0.9, 0.8), (0.3, 0.29)]:
        s, s_next = (float(ve.marginal(torch.tensor(u, dtype=F64))[1]) for u in (t, t_next))
        assert reverse_diffusion_coefficients(ve, t, t_next) == pytest.approx(
            (1.0, s**2 - s_next**2, math.sqrt(s**2 - s_next**2)), rel=1e-9)


def test_tweedie_step_removes_the_noise_variance_exactly_where_the_data_has_none():
    """Checks Proposition prop-ald-denoise."""
    v = torch.tensor([1.0, 1e-6], dtype=F64)
    data = Gaussian(torch.zeros(2, dtype=F64), torch.diag(v))
    sigma = 0.2
    g = torch.Generator().manual_seed(3)
    noisy = data.sample(200_000, generator=g) + sigma * torch.randn(200_000, 2, generator=g, dtype=F64)
    denoised = noisy + sigma**2 * data.perturb(sigma).score(noisy)
    var_before, var_after = noisy.var(0), denoised.var(0)
    assert ((var_before / (v + sigma**2) - 1).abs() < 0.01).all()
    # direction without spread: exactly the sigma^2 of noise is removed
    assert abs((var_before[1] - var_after[1]) / sigma**2 - 1) < 0.01
    # direction with spread: v^2/(v + sigma^2), between sigma^2 and 2 sigma^2 removed; not v
    expected = v[0] ** 2 / (v[0] + sigma**2)
    assert abs(var_after[0] / expected - 1) < 0.01
    assert abs(var_after[0] - v[0]) > 0.03
    # and annealed_langevin(denoise=True) applies the same step
    x0 = torch.randn(1000, 2, generator=g, dtype=F64)
    score = lambda x, s: data.perturb(float(s[0])).score(x)
    a = annealed_langevin(score, x0, [0.5, sigma], step_lr=1e-3, n_steps_each=2, generator=torch.Generator().manual_seed(4))
    b = annealed_langevin(score, x0, [0.5, sigma], step_lr=1e-3, n_steps_each=2, denoise=True,
                          generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(b, a + sigma**2 * data.perturb(sigma).score(a))


def _sliced_w1(a, b, n_directions=64):
    v = torch.randn(n_directions, a.shape[1], generator=torch.Generator().manual_seed(0), dtype=a.dtype)
    v = v / v.norm(dim=1, keepdim=True)
    return ((a @ v.T).sort(0).values - (b @ v.T).sort(0).values).abs().mean().item()


def test_geometric_schedule_beats_cosine_and_linear_with_exact_scores():
    mix = GaussianMixture.isotropic([0.8, 0.2], [[5.0, 5.0], [-5.0, -5.0]], 1.0).to(dtype=F64)
    score = lambda x, s: mix.perturb(float(s[0])).score(x)
    reference = mix.sample(1500, generator=torch.Generator().manual_seed(5))
    quality = {}
    for name in ["geometric", "linear", "cosine"]:
        g = torch.Generator().manual_seed(6)
        start = 16 * torch.rand(1500, 2, generator=g, dtype=F64) - 8
        x = annealed_langevin(score, start, getattr(schedules, name)(20.0, 0.01, 10), step_lr=1e-5, n_steps_each=100,
                              generator=g)
        upper = x[x.sum(-1) > 0]
        # the variance within the upper mode (true 1) and the distance to exact samples
        quality[name] = (upper.var(0).mean().item(), _sliced_w1(x, reference))
    assert abs(quality["geometric"][0] - 1) < 0.3
    assert quality["cosine"][0] > 1.25 and quality["linear"][0] > 3 * quality["cosine"][0]
    assert quality["geometric"][1] < 0.5 * quality["linear"][1]
    assert quality["cosine"][1] < 0.5 * quality["linear"][1]


def test_technique_two_and_one_on_known_sets():
    # gamma solves the overlap equation for D = 64; L follows from the geometric ratio
    gamma = schedules.ncsnv2_gamma(64)
    phi = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))
    c = math.sqrt(2 * 64)
    assert abs(phi(c * (gamma - 1) + 3 * gamma) - phi(c * (gamma - 1) - 3 * gamma) - 0.5) < 1e-6
    L = schedules.ncsnv2_num_scales(4.5, 0.01, 64)
    assert 4.5 / 0.01 <= gamma ** (L - 1) < gamma * 4.5 / 0.01
    # for non-negative images, the largest distance is at most sqrt(2) x the largest norm, with equality
    # for two images with disjoint supports of that norm
    a = torch.zeros(3, 1, 4, 4, dtype=F64)
    a[0, 0, :2] = 1.0
    a[1, 0, 2:] = 1.0
    a[2, 0, 0, 0] = 0.5
    assert math.isclose(schedules.max_pairwise_distance(a), math.sqrt(2) * a[0].norm().item(), rel_tol=1e-12)
