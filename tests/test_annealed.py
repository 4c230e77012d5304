"""The multi-scale NCSN loss and annealed Langevin dynamics (Chapters 5 and 6)."""

import pytest
import torch

from companion import schedules
from companion.distributions import GaussianMixture
from companion.losses import ncsn_loss, ncsn_loss_per_level
from companion.samplers import annealed_langevin, langevin

MIXTURE = GaussianMixture.isotropic([0.8, 0.2], [[5.0, 5.0], [-5.0, -5.0]], 1.0).to(dtype=torch.float64)


def exact_perturbed_score(x, sigma):
    """The exact score of the mixture perturbed at level sigma (all entries of sigma equal)."""
    return MIXTURE.perturb(float(sigma[0])).score(x)


def test_ncsn_loss_equals_the_reference_formula():
    """Fixed inputs and noise: labels drawn first, then z, as the reference implementation does."""
    torch.manual_seed(0)
    sigmas = schedules.geometric(1.0, 0.01, 10).float()
    x = torch.rand(16, 1, 4, 4)
    weights = torch.randn(16)

    def score(x_noisy, sigma):  # any model: a per-level scaled tanh of the input
        return torch.tanh(x_noisy) * (1 + sigma.view(-1, 1, 1, 1)) * weights.view(-1, 1, 1, 1)

    ours = ncsn_loss(score, x, sigmas, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, len(sigmas), (16,), generator=g)
    used = sigmas[labels].view(16, 1, 1, 1)
    noisy = x + torch.randn(x.shape, generator=g) * used
    target = -(noisy - x) / used**2
    ref = (0.5 * (score(noisy, used.flatten()) - target).square().reshape(16, -1).sum(-1) * used.flatten() ** 2).mean()
    torch.testing.assert_close(ours, ref)
    unweighted = ncsn_loss(score, x, sigmas, weighting="none", generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(unweighted, ours)


def test_ncsn_loss_of_the_exact_score_at_each_level():
    """For Gaussian data N(m, s0² I) in D dimensions and the exact perturbed score, the expected loss
    at level σ is ½ D s0²/(s0² + σ²): ½(D − σ² J(p_σ)) with the Fisher information J = D/(s0² + σ²).
    Every level's mean is checked, so a missing ½, λ = 1 or a level's wrong noise is caught."""
    s0, dim = 1.5, 2
    gaussian = GaussianMixture.isotropic([1.0], [[1.0, -2.0]], s0**2).to(dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x = gaussian.sample(80_000, generator=g)
    sigmas = schedules.geometric(20.0, 0.05, 8)
    seen = []

    def score(x_noisy, sigma):
        seen.append(sigma)
        return -(x_noisy - gaussian.means[0]) / (s0**2 + sigma[:, None] ** 2)

    per = ncsn_loss(score, x, sigmas, generator=g, reduction="none")
    (sigma,) = seen
    for level in sigmas:
        values = per[sigma == level]
        exact = 0.5 * dim * s0**2 / (s0**2 + level**2)
        assert abs(values.mean() - exact) < 4 * values.std() / len(values) ** 0.5 + 1e-12
    assert per.mean() < dim / 2  # every level's term lies in [0, D/2]: the weighting balances them


def test_ncsn_loss_per_level_of_the_exact_score():
    """Each level's term is ½ D s0²/(s0² + σ²) for Gaussian data and the exact score; chunks give the
    same numbers; and a model that is exact at one level only is flagged at a level far from it."""
    s0, dim = 1.5, 2
    gaussian = GaussianMixture.isotropic([1.0], [[1.0, -2.0]], s0**2).to(dtype=torch.float64)
    x = gaussian.sample(40_000, generator=torch.Generator().manual_seed(3))
    sigmas = torch.tensor([0.05, 0.5, 4.0], dtype=torch.float64)

    def score(x_noisy, sigma):
        return -(x_noisy - gaussian.means[0]) / (s0**2 + sigma[:, None] ** 2)

    per = ncsn_loss_per_level(score, x, sigmas, generator=torch.Generator().manual_seed(4))
    exact = 0.5 * dim * s0**2 / (s0**2 + sigmas**2)
    assert ((per - exact).abs() < 0.02 * exact).all()  # standard errors are about 0.7 % of each term
    chunked = ncsn_loss_per_level(score, x, sigmas, generator=torch.Generator().manual_seed(4), batch_size=7000)
    torch.testing.assert_close(chunked, per)

    def stuck(x_noisy, sigma):  # the exact score of level 0.5, whatever σ is asked for
        return score(x_noisy, torch.full_like(sigma, 0.5))

    wrong = ncsn_loss_per_level(stuck, x, sigmas, generator=torch.Generator().manual_seed(4))
    assert abs(wrong[1] - per[1]) < 1e-12 and wrong[2] > 2 * per[2]
    with pytest.raises(ValueError, match="batch_size"):
        ncsn_loss_per_level(score, x, sigmas, batch_size=0)
    with pytest.raises(ValueError, match="positive"):
        ncsn_loss_per_level(score, x, [0.5, 0.0])


def test_annealed_langevin_recovers_the_mixture_weights_where_langevin_does_not():
    g = torch.Generator().manual_seed(3)
    x0 = 16 * torch.rand(4000, 2, generator=g, dtype=torch.float64) - 8
    sigmas = schedules.geometric(20.0, 0.5, 10)
    x = annealed_langevin(exact_perturbed_score, x0, sigmas, step_lr=0.02, n_steps_each=100, generator=g)
    upper = (x.sum(-1) > 0).double().mean().item()
    assert abs(upper - 0.8) < 0.03
    plain = langevin(MIXTURE.score, x0, 0.1, 1000, generator=g)
    assert abs((plain.sum(-1) > 0).double().mean().item() - 0.8) > 0.2


def test_sigmas_in_the_wrong_order_are_rejected():
    with pytest.raises(ValueError, match="strictly decreasing"):
        annealed_langevin(exact_perturbed_score, torch.zeros(4, 2), [0.1, 1.0, 10.0])
    with pytest.raises(ValueError, match="strictly decreasing"):
        ncsn_loss(exact_perturbed_score, torch.zeros(4, 2), [0.1, 1.0])


def test_final_denoising_step_is_tweedie():
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sigmas = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    a = annealed_langevin(exact_perturbed_score, x0, sigmas, step_lr=0.01, n_steps_each=3, generator=torch.Generator().manual_seed(5))
    b = annealed_langevin(exact_perturbed_score, x0, sigmas, step_lr=0.01, n_steps_each=3, denoise=True,
                          generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(b, MIXTURE.posterior_mean(a, 0.5))


def test_inpainting_keeps_the_known_coordinates_at_the_current_level():
    sigmas = torch.tensor([1.0, 0.1], dtype=torch.float64)
    mask = torch.tensor([1.0, 0.0], dtype=torch.float64)
    known = torch.tensor([5.0, 0.0], dtype=torch.float64)
    seen = []
    x = annealed_langevin(exact_perturbed_score, torch.zeros(2000, 2, dtype=torch.float64), sigmas, step_lr=0.01,
                          n_steps_each=50, mask=mask, x_known=known, generator=torch.Generator().manual_seed(6),
                          callback=lambda d: seen.append((d["sigma"], d["x"][:, 0].clone())))
    for sigma, first in seen:
        assert abs(first.mean().item() - 5) < 4 * sigma / 2000**0.5 + 1e-12
        assert abs(first.std().item() - sigma) < 0.1 * sigma
    # Given x_0 near 5 the free coordinate follows the upper component: mean 5.
    assert abs(x[:, 1].mean().item() - 5) < 0.2
    with pytest.raises(ValueError, match="both mask and x_known"):
        annealed_langevin(exact_perturbed_score, torch.zeros(2, 2), sigmas, mask=mask)
