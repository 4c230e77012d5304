"""Noise schedules and NCSNv2's rules (Song & Ermon 2020)."""

import math

import pytest
import torch

from companion import schedules


@pytest.mark.parametrize("name", ["geometric", "linear", "cosine"])
def test_schedules_decrease_from_max_to_min(name):
    s = getattr(schedules, name)(50.0, 0.01, 12)
    assert s.shape == (12,) and (s.diff() < 0).all()
    torch.testing.assert_close(s[[0, -1]], torch.tensor([50.0, 0.01], dtype=s.dtype))
    schedules.check_decreasing(s)


def test_geometric_has_a_constant_ratio():
    s = schedules.geometric(1.0, 0.01, 10)
    ratios = s[:-1] / s[1:]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 100 ** (1 / 9)))


def test_ascending_or_repeated_sigmas_are_rejected():
    with pytest.raises(ValueError, match="strictly decreasing"):
        schedules.check_decreasing(torch.tensor([0.01, 0.1, 1.0]))
    with pytest.raises(ValueError, match="strictly decreasing"):
        schedules.check_decreasing([1.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="sigma_max must exceed sigma_min"):
        schedules.geometric(0.01, 1.0, 10)


def test_max_pairwise_distance_is_exact_on_small_sets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1100, 1, 4, 4, generator=g)
    flat = x.reshape(1100, -1).double()
    assert schedules.max_pairwise_distance(x) == pytest.approx(torch.cdist(flat, flat).max().item(), rel=1e-9)
    sub = schedules.max_pairwise_distance(x, max_points=50, generator=torch.Generator().manual_seed(1))
    rows = flat[torch.randperm(1100, generator=torch.Generator().manual_seed(1))[:50]]
    assert sub == pytest.approx(torch.cdist(rows, rows).max().item(), rel=1e-9)  # exact on the subset drawn
    assert sub < schedules.max_pairwise_distance(x)  # which misses the farthest pair here


def phi(t):
    return 0.5 * (1 + math.erf(t / math.sqrt(2)))


@pytest.mark.parametrize("dim", [10, 784, 3072])
def test_gamma_solves_the_overlap_equation(dim):
    g = schedules.ncsnv2_gamma(dim)
    c = math.sqrt(2 * dim)
    assert abs(phi(c * (g - 1) + 3 * g) - phi(c * (g - 1) - 3 * g) - 0.5) < 1e-9
    assert g > 1


def test_gamma_for_cifar10_gives_about_two_hundred_scales():
    # CIFAR-10: D = 3072, sigma_1 = 50, sigma_L = 0.01; NCSNv2 used L = 232 (a slightly finer grid).
    assert schedules.ncsnv2_gamma(3072) == pytest.approx(1.04, abs=0.005)
    assert 200 <= schedules.ncsnv2_num_scales(50.0, 0.01, 3072) <= 240


def test_gamma_has_no_solution_in_very_low_dimension():
    # In two dimensions the shells are thick: the overlap stays above 0.99 for every gamma > 1
    # (its arguments are 5γ − 2 > 3 and −γ − 2 < −3), so it never comes down to 0.5 (Chapter 6).
    cdf = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))
    for g in (1.0001, 1.5, 3.0, 11.0):
        assert cdf(2 * (g - 1) + 3 * g) - cdf(2 * (g - 1) - 3 * g) > 0.99
    with pytest.raises(ValueError, match="no gamma in .* stays above 0.997"):
        schedules.ncsnv2_gamma(2)


def test_variance_ratio_matches_a_simulated_gaussian_chain():
    sigma, gamma, T, eps = 0.1, 1.2, 5, 2e-3
    g = torch.Generator().manual_seed(1)
    x = gamma * sigma * torch.randn(400_000, generator=g, dtype=torch.float64)
    for _ in range(T):
        x = x + eps * (-x / sigma**2) + math.sqrt(2 * eps) * torch.randn(x.shape, generator=g, dtype=torch.float64)
    expected = schedules.ncsnv2_variance_ratio(eps, sigma, gamma, T)
    assert abs(x.var().item() / sigma**2 - expected) < 5 * expected * math.sqrt(2 / x.numel())


def test_step_size_minimises_the_gap_to_one():
    # NCSNv2's CIFAR-10 setting: sigma_1 = 50, sigma_L = 0.01, L = 232 levels, T = 5 steps each.
    sigma, T = 0.01, 5
    gamma = (50 / 0.01) ** (1 / 231)
    eps = schedules.ncsnv2_step_size(sigma, gamma, T)
    best = schedules.ncsnv2_variance_ratio(eps, sigma, gamma, T)
    for factor in (0.5, 0.9, 1.1, 2.0):
        assert schedules.ncsnv2_variance_ratio(eps * factor, sigma, gamma, T) > best
    assert eps == pytest.approx(6.2e-6, rel=0.05)  # the step NCSNv2 reports for this setting
    assert 1 < best < 1.1  # the ratio cannot reach 1: see ncsnv2_variance_ratio


def test_edm_schedule_interpolates_between_linear_and_geometric():
    """ρ = 1 is the linear schedule; equal steps in σ^{1/ρ}; a large ρ approaches the geometric one."""
    edm, linear, geometric = schedules.edm, schedules.linear, schedules.geometric
    assert torch.allclose(edm(10.0, 0.1, 6, rho=1.0), linear(10.0, 0.1, 6))
    s = edm(80.0, 0.002, 18, rho=7.0)
    assert s[0] == pytest.approx(80.0) and s[-1] == pytest.approx(0.002) and (s.diff() < 0).all()
    steps = (s ** (1 / 7)).diff()
    assert torch.allclose(steps, steps[0].expand(17))
    assert torch.allclose(edm(10.0, 0.1, 6, rho=1e4), geometric(10.0, 0.1, 6), rtol=1e-3)
    with pytest.raises(ValueError, match="rho"):
        edm(10.0, 0.1, 6, rho=0.0)
