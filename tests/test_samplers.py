"""Langevin, MALA and inverse-CDF sampling against exact answers.

The tolerances come from Monte Carlo standard errors and are tight enough that a sign error in
the drift, a missing factor 2 in the noise or a wrong proposal density fails them.
"""

import math

import pytest
import torch

from companion.distributions import Gaussian, GaussianMixture
from companion.samplers import inverse_cdf, langevin, mala
from companion.scores import autograd_score

N_CHAINS = 20_000


def gaussian_1d(s):
    return Gaussian(torch.zeros(1), torch.full((1, 1), s**2))


def ula_stationary_variance(s, eps):
    """Stationary variance of x <- (1 - eps/s^2) x + sqrt(2 eps) z (Chapter 1)."""
    return s**2 / (1 - eps / (2 * s**2))


def variance_tolerance(var, n):
    """Five standard errors of a sample variance of n Gaussian draws."""
    return 5 * var * math.sqrt(2 / n)


def run_ula(score_fn, s, eps, n_steps=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.zeros(N_CHAINS, 1)
    return langevin(score_fn, x0, eps, n_steps, generator=g)


@pytest.mark.parametrize("s,eps", [(1.0, 0.5), (2.0, 2.0), (1.0, 0.1)])
def test_ula_stationary_variance_has_the_closed_form_bias(s, eps):
    target = gaussian_1d(s)
    x = run_ula(target.score, s, eps)
    expected = ula_stationary_variance(s, eps)
    assert abs(x.var().item() - expected) < variance_tolerance(expected, N_CHAINS)
    assert abs(x.mean().item()) < 5 * math.sqrt(expected / N_CHAINS)
    # The bias is real: at these step sizes the exact variance s^2 is many standard errors away.
    if eps / s**2 >= 0.25:
        assert abs(x.var().item() - s**2) > 3 * variance_tolerance(expected, N_CHAINS)


def test_ula_fails_with_flipped_drift_or_halved_noise():
    """Negative controls: the test above must catch these classic slips."""
    s, eps = 1.0, 0.5
    target = gaussian_1d(s)
    expected = ula_stationary_variance(s, eps)
    g = torch.Generator().manual_seed(1)
    # Moving against the score: the chain runs away from the mode (the variance explodes).
    with pytest.raises(ValueError, match="step size"):
        langevin(lambda x: -target.score(x), torch.zeros(100, 1), eps, 2000, generator=g)
    # Noise sqrt(eps) instead of sqrt(2 eps) is the ULA of a score twice as large: variance halves.
    x = run_ula(lambda x: 2 * target.score(x), s, eps / 2)
    assert abs(x.var().item() - expected) > 5 * variance_tolerance(expected, N_CHAINS)


def test_ula_with_rescaled_score_targets_p_to_the_power_c():
    # drift c * grad log p has stationary law proportional to p^c; for N(0, 1) and c = 2, N(0, 1/2)
    # up to the discretisation bias at the effective step 2 eps.
    target = gaussian_1d(1.0)
    eps = 0.01
    x = run_ula(lambda x: 2 * target.score(x), 1.0, eps, n_steps=600)
    expected = 0.5 / (1 - eps)  # x <- (1 - 2 eps) x + sqrt(2 eps) z
    assert abs(x.var().item() - expected) < variance_tolerance(expected, N_CHAINS)


def test_ula_on_a_2d_correlated_gaussian():
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    target = Gaussian(torch.tensor([1.0, -1.0]), cov)
    eps = 0.01
    g = torch.Generator().manual_seed(2)
    x = langevin(target.score, torch.zeros(N_CHAINS, 2), eps, 1500, generator=g)
    # For a Gaussian the ULA stationary covariance is (I - eps P / 2)^{-1} Sigma with P = Sigma^{-1}.
    expected = torch.linalg.solve(torch.eye(2) - eps / 2 * torch.linalg.inv(cov), cov)
    torch.testing.assert_close(torch.cov(x.T), expected, rtol=0, atol=0.04)
    torch.testing.assert_close(x.mean(0), target.mean(), rtol=0, atol=0.04)


def test_step_size_as_float_or_tensor_gives_identical_chains():
    target = gaussian_1d(1.0)
    x0 = torch.zeros(8, 1)
    a = langevin(target.score, x0, 0.01, 10, generator=torch.Generator().manual_seed(3))
    b = langevin(target.score, x0, torch.tensor(0.01), 10, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_langevin_does_not_build_an_autograd_graph_and_calls_back():
    energy_score = autograd_score(lambda x: -0.5 * x.square().sum(-1))
    steps = []
    x = langevin(energy_score, torch.zeros(4, 2), 0.1, 5, callback=lambda d: steps.append(d["i"]))
    assert x.grad_fn is None and not x.requires_grad
    assert steps == [0, 1, 2, 3, 4]


def test_mala_removes_the_bias():
    s, eps = 1.0, 0.8
    target = gaussian_1d(s)
    g = torch.Generator().manual_seed(4)
    x, rate = mala(target.log_prob, target.score, torch.zeros(N_CHAINS, 1), eps, 400, generator=g)
    assert abs(x.var().item() - s**2) < variance_tolerance(s**2, N_CHAINS)
    assert abs(x.mean().item()) < 5 * math.sqrt(s**2 / N_CHAINS)
    # ULA at this step is far off (1/(1 - 0.4) = 1.67); MALA accepts most proposals.
    assert 0.7 < rate.item() < 0.95


def test_mala_with_a_wrong_proposal_density_is_biased():
    """Negative control: a proposal density with variance eps instead of 2 eps breaks detailed balance."""
    s, eps = 1.0, 0.8
    target = gaussian_1d(s)

    def log_q(a, b):  # should divide by 4 eps: the proposal variance is 2 eps
        return -((a - b - eps * target.score(b)) ** 2).sum(-1) / (2 * eps)

    def wrong_mala(x, n_steps, g):
        for _ in range(n_steps):
            y = x + eps * target.score(x) + math.sqrt(2 * eps) * torch.randn(x.shape, generator=g)
            log_alpha = target.log_prob(y) - target.log_prob(x) + log_q(x, y) - log_q(y, x)
            accept = torch.rand(x.shape[0], generator=g).log() < log_alpha
            x = torch.where(accept[:, None], y, x)
        return x

    x = wrong_mala(torch.zeros(N_CHAINS, 1), 400, torch.Generator().manual_seed(5))
    assert abs(x.var().item() - s**2) > 3 * variance_tolerance(s**2, N_CHAINS)


def test_mala_accepts_per_chain():
    target = gaussian_1d(1.0)
    accepted = []
    mala(target.log_prob, target.score, torch.zeros(1000, 1), 1.5, 3,
         generator=torch.Generator().manual_seed(6), callback=lambda d: accepted.append(d["accepted"]))
    share = accepted[-1].double().mean().item()
    assert accepted[-1].shape == (1000,) and 0.05 < share < 0.95


def test_mala_on_images_shaped_batches():
    target = Gaussian(torch.zeros(4), torch.eye(4))
    x0 = torch.zeros(500, 1, 2, 2)

    def log_prob(x):
        return target.log_prob(x.reshape(len(x), 4))

    def score(x):
        return target.score(x.reshape(len(x), 4)).reshape(x.shape)

    x, _ = mala(log_prob, score, x0, 0.5, 200, generator=torch.Generator().manual_seed(7))
    assert x.shape == x0.shape
    assert abs(x.var().item() - 1) < 0.1


def test_ula_keeps_the_wrong_weights_between_separated_modes():
    """0.8 N((5,5), I) + 0.2 N((-5,-5), I), started uniformly in a box symmetric about the origin:
    chains stay in the basin they start in, so the weights stay near 1/2 instead of 0.8/0.2
    (Song & Ermon 2019, Section 3.2.2; Chapter 1)."""
    target = GaussianMixture.isotropic([0.8, 0.2], [[5.0, 5.0], [-5.0, -5.0]], 1.0)
    g = torch.Generator().manual_seed(8)
    x0 = 16 * torch.rand(4000, 2, generator=g) - 8
    x = langevin(target.score, x0, 0.1, 500, generator=g)
    upper = (x.sum(-1) > 0).double().mean().item()
    assert abs(upper - 0.5) < 0.05  # measured about 0.50: the starting split, not the target 0.8
    assert abs(upper - 0.8) > 0.2
    # MALA does no better: both are local samplers; the weights are lost in the mixing, not the bias.
    x_mala, _ = mala(target.log_prob, target.score, x0, 0.1, 500, generator=g)
    assert abs((x_mala.sum(-1) > 0).double().mean().item() - 0.5) < 0.05


def test_inverse_cdf_samples_a_bimodal_density():
    """Checks Theorem thm-langevin-inverse-cdf."""
    p = GaussianMixture([0.3, 0.7], [[-2.0], [2.0]], [[[0.25]], [[0.5]]])
    x = inverse_cdf(lambda t: p.log_prob(t[:, None]), 100_000, low=-8, high=8, generator=torch.Generator().manual_seed(9))
    # Kolmogorov-Smirnov distance to the exact CDF.
    xs = x.sort().values
    exact_cdf = 0.3 * torch.special.ndtr((xs + 2) / 0.5) + 0.7 * torch.special.ndtr((xs - 2) / math.sqrt(0.5))
    ks = (exact_cdf - torch.arange(1, xs.numel() + 1, dtype=torch.float64) / xs.numel()).abs().max().item()
    assert ks < 1.63 / math.sqrt(xs.numel())  # the 1% critical value


def bimodal_ks(x):
    """Kolmogorov–Smirnov distance between samples x [n, 1] and the exact CDF of BIMODAL."""
    xs = x.flatten().sort().values
    exact_cdf = 0.3 * torch.special.ndtr((xs + 2) / 0.5) + 0.7 * torch.special.ndtr((xs - 2) / math.sqrt(0.5))
    return (exact_cdf - torch.arange(1, xs.numel() + 1, dtype=xs.dtype) / xs.numel()).abs().max().item()


BIMODAL = GaussianMixture([0.3, 0.7], [[-2.0], [2.0]], [[[0.25]], [[0.5]]]).to(dtype=torch.float64)


def test_mala_leaves_an_asymmetric_mixture_invariant_at_a_large_step():
    """Started from exact samples, MALA's chains stay exact samples at a step where ULA is far off:
    the Metropolis–Hastings factor (with q's variance 2ε) removes the discretisation bias."""
    g = torch.Generator().manual_seed(10)
    x0 = BIMODAL.sample(100_000, generator=g)
    x, rate = mala(BIMODAL.log_prob, BIMODAL.score, x0, 0.3, 20, generator=g)
    assert bimodal_ks(x) < 1.95 / math.sqrt(x.shape[0])  # the 0.1% critical value
    assert 0.3 < float(rate) < 0.95  # proposals are both accepted and rejected: the test has teeth
    ula = langevin(BIMODAL.score, x0, 0.3, 20, generator=g)
    assert bimodal_ks(ula) > 10 / math.sqrt(x.shape[0])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: langevin(lambda x: x, torch.zeros(2, 1), 0.0, 5), "step_size"),
        (lambda: langevin(lambda x: x, torch.zeros(2, 1), -1e-3, 5), "step_size"),
        (lambda: langevin(lambda x: x, torch.zeros(2, 1), 0.1, -1), "n_steps"),
        (lambda: langevin(lambda x: x, torch.zeros(2, 1, dtype=torch.int64), 0.1, 1), "floating-point"),
        (lambda: mala(lambda x: x.sum(), lambda x: x, torch.zeros(2, 1), 0.1, 1), "one value per chain"),
        (lambda: inverse_cdf(lambda t: t, 10, low=1.0, high=0.0), "high must be greater"),
    ],
)
def test_invalid_inputs_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
