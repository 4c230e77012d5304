"""Closed-form targets: scores against autograd, normalisation on a grid, perturbation against
Monte Carlo, stability far from the modes, input validation."""

import math

import pytest
import torch

from companion.distributions import Gaussian, GaussianMixture


pytestmark = pytest.mark.usefixtures("float64")


def random_spd(d, generator, jitter=0.3):
    a = torch.randn(d, d, generator=generator)
    return a @ a.T / d + jitter * torch.eye(d)


def random_mixture(k, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=g) + 0.2
    means = 3 * torch.randn(k, d, generator=g)
    covs = torch.stack([random_spd(d, g) for _ in range(k)])
    return GaussianMixture(w / w.sum(), means, covs)


def autograd_score(log_prob, x):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(log_prob(x).sum(), x)
    return g


@pytest.mark.parametrize("k,d", [(1, 1), (3, 2), (4, 5)])
def test_mixture_score_equals_autograd_of_log_prob(k, d):
    p = random_mixture(k, d, seed=k + d)
    x = 4 * torch.randn(200, d, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(p.score(x), autograd_score(p.log_prob, x), rtol=1e-9, atol=1e-10)


def test_gaussian_score_and_log_prob_match_torch_reference():
    g = torch.Generator().manual_seed(2)
    mean, cov = torch.randn(3, generator=g), random_spd(3, g)
    p = Gaussian(mean, cov)
    x = torch.randn(50, 3, generator=g)
    ref = torch.distributions.MultivariateNormal(mean, cov)
    torch.testing.assert_close(p.log_prob(x), ref.log_prob(x))
    torch.testing.assert_close(p.score(x), -(x - mean) @ torch.linalg.inv(cov))
    torch.testing.assert_close(p.score(x), autograd_score(p.log_prob, x))


def test_batched_leading_dimensions():
    p = random_mixture(3, 2)
    x = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(3))
    assert p.log_prob(x).shape == (4, 5)
    assert p.score(x).shape == (4, 5, 2)
    torch.testing.assert_close(p.score(x).reshape(20, 2), p.score(x.reshape(20, 2)))


def test_density_integrates_to_one_in_1d():
    p = GaussianMixture([0.3, 0.7], [[-2.0], [1.5]], [[[0.25]], [[1.0]]])
    grid = torch.linspace(-12, 12, 20001)[:, None]
    mass = torch.trapezoid(p.log_prob(grid).exp(), grid[:, 0])
    assert abs(mass.item() - 1) < 1e-8


def test_density_integrates_to_one_in_2d():
    p = random_mixture(3, 2, seed=7)
    n = 801
    lo, hi = p.means.min().item() - 8, p.means.max().item() + 8
    xs = torch.linspace(lo, hi, n)
    xx, yy = torch.meshgrid(xs, xs, indexing="ij")
    dens = p.log_prob(torch.stack([xx, yy], -1)).exp()
    mass = torch.trapezoid(torch.trapezoid(dens, xs, dim=1), xs)
    assert abs(mass.item() - 1) < 1e-5


def test_sample_moments_match_closed_form():
    p = random_mixture(3, 2, seed=4)
    x = p.sample(200_000, generator=torch.Generator().manual_seed(5))
    cov = p.covariance()
    se_mean = (cov.diagonal() / x.shape[0]).sqrt()
    assert ((x.mean(0) - p.mean()).abs() < 5 * se_mean).all()
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0.03, atol=0.03)


def test_sample_recovers_weights():
    p = GaussianMixture.isotropic([0.8, 0.2], [[5.0, 5.0], [-5.0, -5.0]], 1.0)
    x = p.sample(100_000, generator=torch.Generator().manual_seed(6))
    share = (x[:, 0] > 0).double().mean().item()
    assert abs(share - 0.8) < 4 * math.sqrt(0.8 * 0.2 / 1e5)


def test_perturb_is_the_law_of_x_plus_sigma_z():
    """Checks Proposition prop-dsm-perturbed."""
    p = random_mixture(2, 3, seed=8)
    sigma = 0.7
    g = torch.Generator().manual_seed(9)
    x = p.sample(200_000, generator=g)
    noisy = x + sigma * torch.randn(x.shape, generator=g)
    q = p.perturb(sigma)
    torch.testing.assert_close(q.mean(), p.mean())
    se = noisy.std(0) / noisy.shape[0] ** 0.5
    assert ((noisy.mean(0) - p.mean()).abs() < 4 * se).all()
    torch.testing.assert_close(q.covariance(), p.covariance() + sigma**2 * torch.eye(3))
    torch.testing.assert_close(torch.cov(noisy.T), q.covariance(), rtol=0.03, atol=0.03)
    # Beyond moments, Stein's identity E_q[grad log q(y) y^T] = -I holds only when y ~ q exactly;
    # the law of x + sqrt(sigma) z (a classic slip) violates it by far more than the sampling error.
    eye = torch.eye(3)

    def stein(dist):
        return dist.score(noisy).T @ noisy / noisy.shape[0]

    torch.testing.assert_close(stein(q), -eye, rtol=0, atol=0.03)
    assert (stein(p.perturb(sigma**0.5)) + eye).abs().max() > 0.1


def test_perturbing_a_finite_training_set_gives_a_smooth_law_that_tends_to_it():
    """Items 1 and 3 of Proposition prop-dsm-perturbed for p = the empirical law of five points:
    p_σ (a mixture of N(x_j, σ² I)) has a finite log-density and score far from the data, even at
    σ = 0.05; and P(x̃ ≤ c) → F(c) as σ → 0 at a continuity point c of the empirical CDF."""
    points = torch.tensor([[-1.0], [0.0], [0.3], [2.0], [2.5]], dtype=torch.float64)
    far = torch.tensor([[-1e3], [1.0], [1e3]], dtype=torch.float64)
    for sigma in (1.0, 0.05):
        p_sigma = GaussianMixture.isotropic(torch.full((5,), 0.2, dtype=torch.float64), points, sigma**2)
        assert torch.isfinite(p_sigma.log_prob(far)).all() and torch.isfinite(p_sigma.score(far)).all()
    c = 1.0  # the empirical CDF is 0.6 on [0.3, 2)
    gaps = [abs(float(torch.special.ndtr((c - points) / sigma).mean()) - 0.6) for sigma in (1.0, 0.4, 0.1)]
    assert gaps[0] > 0.03 and gaps[1] < 0.5 * gaps[0] and gaps[2] < 1e-9  # p_σ ≠ p, then p_σ → p


def test_gaussian_perturb_stays_gaussian():
    p = Gaussian(torch.zeros(2), torch.eye(2))
    q = p.perturb(2.0)
    assert isinstance(q, Gaussian)
    torch.testing.assert_close(q.covs[0], 5 * torch.eye(2))


def test_score_is_exact_far_from_the_modes():
    # Two unit-variance components at (+-2, 0). Far away the component closest to x dominates
    # and the score approaches -(x - mu_nearest). A naive sum of densities underflows to 0 there.
    p = GaussianMixture.isotropic([0.5, 0.5], [[2.0, 0.0], [-2.0, 0.0]], 1.0)
    x = torch.tensor([[8.0, 0.0], [12.0, 0.0], [60.0, 3.0], [-60.0, 0.0]])
    expected = -(x - torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0], [-2.0, 0.0]]))
    torch.testing.assert_close(p.score(x), expected, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(p.log_prob(x)).all()
    torch.testing.assert_close(p.log_prob(x[2:3]), Gaussian(torch.tensor([2.0, 0.0]), torch.eye(2)).log_prob(x[2:3]) + math.log(0.5))


def test_responsibilities_are_the_posterior():
    p = random_mixture(3, 2, seed=10)
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(11))
    joint = torch.stack([p.weights[k] * Gaussian(p.means[k], p.covs[k]).log_prob(x).exp() for k in range(3)], -1)
    torch.testing.assert_close(p.responsibilities(x), joint / joint.sum(-1, keepdim=True))


def test_float32_and_to():
    p = random_mixture(2, 2).to(dtype=torch.float32)
    x = torch.randn(5, 2, dtype=torch.float32)
    assert p.score(x).dtype == torch.float32
    assert p.sample(3).dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(weights=[0.5, 0.6], means=[[0.0], [1.0]], covs=[[[1.0]], [[1.0]]]), "sum to 1"),
        (dict(weights=[1.2, -0.2], means=[[0.0], [1.0]], covs=[[[1.0]], [[1.0]]]), "non-negative"),
        (dict(weights=[1.0], means=[0.0, 1.0], covs=[[[1.0]]]), r"means must have shape \[K, D\]"),
        (dict(weights=[0.5, 0.5], means=[[0.0], [1.0]], covs=[[[1.0]]]), r"covs must have shape"),
        (dict(weights=[1.0], means=[[0.0, 0.0]], covs=[[[1.0, 2.0], [2.0, 1.0]]]), "positive definite"),
        (dict(weights=[1.0], means=[[0.0, 0.0]], covs=[[[1.0, 0.5], [0.0, 1.0]]]), "symmetric"),
        (dict(weights=[1.0], means=[[float("nan")]], covs=[[[1.0]]]), "NaN"),
    ],
)
def test_invalid_mixtures_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_wrong_point_shape_and_sigma_raise():
    p = Gaussian(torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
        p.score(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="sigma"):
        p.perturb(0.0)
    with pytest.raises(ValueError, match="cov must have shape"):
        Gaussian(torch.zeros(2), torch.eye(3))
