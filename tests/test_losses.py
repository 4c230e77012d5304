"""Score-matching objectives against closed forms (Chapters 3 and 4).

For Gaussian data N(mu, Sigma), P = Sigma^{-1}, and a linear model s(x) = A x + b:
    ISM      = ½ [tr(A Sigma Aᵀ) + |A mu + b|²] + tr A
    ESM      = ISM + ½ tr P                       (ISM − ESM = −½ E|∇log p|² = −½ tr P)
    DSM(σ)   = ½ [tr(A Sigma Aᵀ) + |A mu + b|² + |σA + I/σ|²_F]
    ESM_σ    = ESM with Sigma replaced by Sigma + σ²I
    DSM − ESM_σ = C(σ) = D/(2σ²) − ½ tr((Sigma + σ²I)^{-1})
Each check would fail for a sign error, a missing ½ or a wrong weighting.
"""

import math

import pytest
import torch

from companion.distributions import Gaussian, GaussianMixture
from companion.losses import dsm_loss, esm_loss, hutchinson_trace, ism_loss, jacobian_trace, ssm_loss
from companion.nets import NoiseConditionalMLP, ScoreMLP

D = 3


pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(D, D, generator=g)
    cov = a @ a.T / D + 0.5 * torch.eye(D)
    mu = torch.randn(D, generator=g)
    A = torch.randn(D, D, generator=g) * 0.5  # not symmetric on purpose
    b = torch.randn(D, generator=g)
    return Gaussian(mu, cov), A, b


def linear(A, b):
    return lambda x: x @ A.T + b


def closed_ism(p, A, b):
    mu, cov = p.mean(), p.covariance()
    return 0.5 * (torch.trace(A @ cov @ A.T) + (A @ mu + b).square().sum()) + torch.trace(A)


def closed_esm(p, A, b):
    """½ E|(A + P) x + b − P mu|², with the true score −P(x − mu): derived apart from closed_ism."""
    mu, cov = p.mean(), p.covariance()
    M = A + torch.linalg.inv(cov)
    return 0.5 * (torch.trace(M @ cov @ M.T) + (A @ mu + b).square().sum())


def closed_dsm(p, A, b, sigma):
    mu, cov = p.mean(), p.covariance()
    return 0.5 * (torch.trace(A @ cov @ A.T) + (A @ mu + b).square().sum() + (sigma * A + torch.eye(D) / sigma).square().sum())


def constant_c(p, sigma):
    return D / (2 * sigma**2) - 0.5 * torch.trace(torch.linalg.inv(p.covariance() + sigma**2 * torch.eye(D)))


def assert_mc_close(per_sample, expected, n_se=4.0):
    se = per_sample.std() / math.sqrt(per_sample.numel())
    assert abs(per_sample.mean() - expected) < n_se * se, (per_sample.mean().item(), float(expected), se.item())


def test_esm_with_the_true_score_is_zero(problem):
    p, _, _ = problem
    x = p.sample(100, generator=torch.Generator().manual_seed(1))
    assert esm_loss(p.score, x, p.score, reduction="none").abs().max() == 0


def test_ism_and_esm_match_their_closed_forms_and_differ_by_a_constant(problem):
    p, A, b = problem
    x = p.sample(200_000, generator=torch.Generator().manual_seed(2))
    s = linear(A, b)
    esm = esm_loss(s, x, p.score, reduction="none")
    ism = ism_loss(s, x, reduction="none")
    assert_mc_close(esm, closed_esm(p, A, b))
    assert_mc_close(ism, closed_ism(p, A, b))
    # ISM − ESM = −½ E|∇log p|², whatever the model: the same for a second, different model.
    assert_mc_close(ism - esm, -0.5 * p.score(x).square().sum(-1).mean())
    torch.testing.assert_close(closed_ism(p, A, b) - closed_esm(p, A, b), -0.5 * torch.trace(torch.linalg.inv(p.covariance())))
    A2, b2 = -A.T, 2 * b
    diff2 = ism_loss(linear(A2, b2), x, reduction="none") - esm_loss(linear(A2, b2), x, p.score, reduction="none")
    assert_mc_close(diff2 - (ism - esm), torch.tensor(0.0))


def test_sample_ism_of_a_linear_model_is_minimised_by_the_fitted_gaussian_score(problem):
    """On n samples, ½ mean|A x + b|² + tr A is stationary exactly at A = −Σ̂⁻¹, b = Σ̂⁻¹ μ̂ (the
    score of the Gaussian with the samples' mean and 1/n covariance): ∂/∂b gives A μ̂ + b = 0 and
    ∂/∂A gives A Σ̂ + I = 0. A wrong sign or factor of the trace term moves the minimiser."""
    p, _, _ = problem
    x = p.sample(500, generator=torch.Generator().manual_seed(10))
    mu_hat = x.mean(0)
    precision = torch.linalg.inv((x - mu_hat).T @ (x - mu_hat) / len(x))
    A = (-precision).clone().requires_grad_(True)
    b = (precision @ mu_hat).clone().requires_grad_(True)
    grad_A, grad_b = torch.autograd.grad(ism_loss(lambda y: y @ A.T + b, x), (A, b))
    assert grad_A.abs().max() < 1e-10 and grad_b.abs().max() < 1e-10
    grad_A, _ = torch.autograd.grad(ism_loss(lambda y: y @ A.T + b, x) - torch.trace(A), (A, b))
    assert grad_A.abs().max() > 0.5  # without the trace term the same point is not stationary


def test_exact_trace_loop_and_vectorized_agree_for_an_mlp():
    torch.manual_seed(3)
    net = ScoreMLP(5, hidden=32, depth=2)
    x = torch.randn(16, 5)
    loop = jacobian_trace(net, x, method="loop")
    vec = jacobian_trace(net, x, method="vectorized")
    torch.testing.assert_close(loop, vec, rtol=1e-5, atol=1e-5)
    full = torch.stack([torch.autograd.functional.jacobian(lambda xi: net(xi[None])[0], xi).trace() for xi in x])
    torch.testing.assert_close(vec, full)
    # Both are differentiable in the parameters, with the same gradient.
    g_loop = torch.autograd.grad(ism_loss(net, x, trace="loop"), list(net.parameters()))
    g_vec = torch.autograd.grad(ism_loss(net, x, trace="exact"), list(net.parameters()))
    for a, b in zip(g_loop, g_vec):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_exact_trace_on_image_shaped_input():
    W = torch.randn(4, 4, generator=torch.Generator().manual_seed(4))

    def score(x):  # [B, 1, 2, 2] -> [B, 1, 2, 2], tanh of a linear map of the flattened image
        return torch.tanh(x.reshape(len(x), 4) @ W.T).reshape(x.shape)

    x = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(5))
    flat = x.reshape(6, 4)
    expected = ((1 - torch.tanh(flat @ W.T).square()) * W.diagonal()).sum(-1)
    for method in ("loop", "vectorized"):
        torch.testing.assert_close(jacobian_trace(score, x, method=method), expected)


def test_hutchinson_is_unbiased_and_rademacher_has_lower_variance(problem):
    _, A, b = problem
    s = linear(A, b)
    x = torch.zeros(1, D)
    g = torch.Generator().manual_seed(6)
    sym = 0.5 * (A + A.T)
    n = 100_000
    theory = {"gaussian": 2 * sym.square().sum(), "rademacher": 2 * (sym.square().sum() - A.diagonal().square().sum())}
    variances = {}
    for probe in ("gaussian", "rademacher", "sphere"):
        est = torch.stack([hutchinson_trace(s, x.expand(n, D), probe=probe, generator=g)])[0]
        assert_mc_close(est, torch.trace(A))
        variances[probe] = est.var()
    for probe, var in theory.items():
        assert abs(variances[probe] - var) < 0.05 * var
    assert variances["rademacher"] < variances["gaussian"]


def test_ssm_is_unbiased_for_ism_and_vr_reduces_variance(problem):
    """Checks Theorem thm-sm-ssm."""
    p, A, b = problem
    s = linear(A, b)
    x = p.sample(4, generator=torch.Generator().manual_seed(8)).repeat_interleave(50_000, 0)
    ism = ism_loss(s, x[::50_000], reduction="none").repeat_interleave(50_000)
    g = torch.Generator().manual_seed(9)
    for probe in ("gaussian", "rademacher", "sphere"):
        plain = ssm_loss(s, x, probe=probe, generator=g, reduction="none")
        vr = ssm_loss(s, x, probe=probe, variance_reduction=True, generator=g, reduction="none")
        assert_mc_close(plain - ism, torch.tensor(0.0))
        assert_mc_close(vr - ism, torch.tensor(0.0))
        assert vr.reshape(4, -1).var(1).sum() < 0.7 * plain.reshape(4, -1).var(1).sum()


def test_sliced_fisher_divergence_is_ssm_plus_half_the_score_norm(problem):
    """The second display of Theorem thm-sm-ssm: ½ E_v E_x (vᵀs_θ − vᵀs_p)² = J_SSM + ½ E‖s_p‖², here
    closed_ism + ½ tr P (J_SSM = J_ISM, E‖s_p‖² = tr P), for Gaussian and Rademacher slices; J_SSM
    alone (the constant forgotten) is rejected."""
    p, A, b = problem
    g = torch.Generator().manual_seed(14)
    x = p.sample(400_000, generator=g)
    expected = closed_ism(p, A, b) + 0.5 * torch.trace(torch.linalg.inv(p.covariance()))
    for v in (torch.randn(x.shape, generator=g), torch.randint(0, 2, x.shape, generator=g) * 2.0 - 1):
        sliced = 0.5 * ((v * (linear(A, b)(x) - p.score(x))).sum(-1)).square()
        assert_mc_close(sliced, expected)
        se = sliced.std() / math.sqrt(len(sliced))
        assert abs(sliced.mean() - closed_ism(p, A, b)) > 10 * se


def test_ssm_with_many_projections_matches_ism_for_an_mlp():
    torch.manual_seed(10)
    net = ScoreMLP(4, hidden=32, depth=2)
    x = torch.randn(8, 4)
    exact = ism_loss(net, x, reduction="none")
    est = ssm_loss(net, x, n_projections=20_000, variance_reduction=True, probe="rademacher",
                   generator=torch.Generator().manual_seed(11), reduction="none")
    assert (est - exact).abs().max() < 0.02 * exact.abs().max() + 0.02


def test_ism_hutchinson_equals_ssm_vr_with_the_same_probes(problem):
    _, A, b = problem
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(12))
    a = ism_loss(linear(A, b), x, trace="hutchinson", n_probes=3, generator=torch.Generator().manual_seed(13))
    c = ssm_loss(linear(A, b), x, n_projections=3, probe="rademacher", variance_reduction=True,
                 generator=torch.Generator().manual_seed(13))
    torch.testing.assert_close(a, c)


@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_dsm_minus_esm_of_the_perturbed_law_is_the_constant(problem, sigma):
    p, A, b = problem
    g = torch.Generator().manual_seed(14)
    n = 400_000
    x = p.sample(n, generator=g)
    p_sigma = p.perturb(sigma)
    dsm = dsm_loss(linear(A, b), x, sigma, generator=g, reduction="none")
    assert_mc_close(dsm, closed_dsm(p, A, b, sigma))
    esm_sigma = esm_loss(linear(A, b), p_sigma.sample(n, generator=g), p_sigma.score, reduction="none")
    assert_mc_close(esm_sigma, closed_esm(p_sigma, A, b))
    torch.testing.assert_close(closed_dsm(p, A, b, sigma) - closed_esm(p_sigma, A, b), constant_c(p, sigma))
    # The same constant for a non-linear model: C does not depend on the model.
    torch.manual_seed(15)
    net = ScoreMLP(D, hidden=16, depth=1)
    with torch.no_grad():
        gap = dsm_loss(net, x, sigma, generator=g).item() - esm_loss(net, p_sigma.sample(n, generator=g), p_sigma.score).item()
    assert abs(gap - constant_c(p, sigma).item()) < 0.03 * constant_c(p, sigma).item() + 0.02


def test_dsm_minimiser_over_linear_models_is_the_perturbed_score(problem):
    p, _, _ = problem
    sigma = 0.5
    x = p.sample(100_000, generator=torch.Generator().manual_seed(16))
    A = torch.zeros(D, D, requires_grad=True)
    b = torch.zeros(D, requires_grad=True)
    opt = torch.optim.LBFGS([A, b], max_iter=200, line_search_fn="strong_wolfe", tolerance_grad=1e-12)

    def closure():  # the same noise every call: the sample loss is an exact quadratic
        opt.zero_grad()
        loss = dsm_loss(linear(A, b), x, sigma, generator=torch.Generator().manual_seed(17))
        loss.backward()
        return loss

    opt.step(closure)
    P_sigma = torch.linalg.inv(p.covariance() + sigma**2 * torch.eye(D))
    torch.testing.assert_close(A.detach(), -P_sigma, rtol=0, atol=0.03)
    torch.testing.assert_close(b.detach(), P_sigma @ p.mean(), rtol=0, atol=0.03)


def test_tweedie_formula_on_a_mixture():
    """Checks Theorem thm-dsm-tweedie."""
    p = GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [1.0, 1.5]], [[[0.5, 0.2], [0.2, 0.4]], [[0.3, 0.0], [0.0, 0.8]]])
    sigma = 0.8
    y = 3 * torch.randn(500, 2, generator=torch.Generator().manual_seed(18))
    tweedie = y + sigma**2 * p.perturb(sigma).score(y)
    torch.testing.assert_close(tweedie, p.posterior_mean(y, sigma))
    # And by simulation: average clean x over pairs whose noisy version lands near a point y0.
    g = torch.Generator().manual_seed(19)
    x = p.sample(2_000_000, generator=g)
    noisy = x + sigma * torch.randn(x.shape, generator=g)
    y0 = torch.tensor([0.0, 0.5])
    near = (noisy - y0).norm(dim=-1) < 0.1
    assert near.sum() > 1500
    torch.testing.assert_close(x[near].mean(0), p.posterior_mean(y0[None], sigma)[0], rtol=0, atol=0.05)


def test_dsm_variance_grows_like_one_over_sigma_squared(problem):
    """At the optimum (the exact score of p_σ) the per-sample DSM loss has mean C(σ), so the
    stochastic gradient in b, s(x̃) + z/σ, has E|g|² = 2C(σ) = D/σ² − tr P_σ: σ² E|g|² → D."""
    p, _, _ = problem
    g = torch.Generator().manual_seed(20)
    x = p.sample(200_000, generator=g)
    scaled = []
    for sigma in (1.0, 0.1, 0.01):
        per_sample = dsm_loss(p.perturb(sigma).score, x, sigma, generator=g, reduction="none")
        assert_mc_close(per_sample, constant_c(p, sigma))
        scaled.append((2 * sigma**2 * per_sample.mean()).item())
    assert abs(scaled[-1] - D) < 0.01 * D
    assert scaled[0] < scaled[1] < scaled[2]


def test_dsm_accepts_per_sample_sigmas_and_noise_conditional_models():
    torch.manual_seed(21)
    net = NoiseConditionalMLP(2, hidden=16, depth=1)
    x = torch.randn(8, 2)
    sigmas = torch.linspace(0.1, 1.0, 8)
    loss = dsm_loss(lambda xt: net(xt, sigmas), x, sigmas, generator=torch.Generator().manual_seed(22))
    assert loss.shape == () and torch.isfinite(loss)
    assert net(x, 0.5).shape == (8, 2)
    torch.testing.assert_close(net(x, torch.full((8,), 0.5)), net(x, 0.5))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda s, x: esm_loss(s, x, s, reduction="avg"), "reduction"),
        (lambda s, x: ism_loss(s, x, trace="approx"), "trace"),
        (lambda s, x: ism_loss(s, x, trace="hutchinson", n_probes=0), "n_probes"),
        (lambda s, x: ssm_loss(s, x, probe="uniform"), "probe"),
        (lambda s, x: ssm_loss(s, x, n_projections=0), "n_projections"),
        (lambda s, x: dsm_loss(s, x, 0.0), "sigma"),
        (lambda s, x: dsm_loss(s, x, torch.tensor([0.1, 0.2])), "sigma"),
        (lambda s, x: jacobian_trace(s, x, method="fast"), "method"),
    ],
)
def test_invalid_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(lambda x: -x, torch.randn(4, 2))
