"""Numerical checks of the derivations of Chapter 4 (book/denoising-score-matching.md) that
tests/test_losses.py does not already cover (that file checks DSM − ESM(p_σ) = C(σ) for Gaussian
data, the linear DSM minimiser, Tweedie on a mixture against simulation and σ²E|g|² → D).

Notation: x ~ p clean, x̃ = x + σz noisy, q_σ(x̃ | x) = N(x̃; x, σ²I), p_σ = p * N(0, σ²I),
J(p_σ) = E_{p_σ}|∇log p_σ|², C(σ) = d/(2σ²) − ½ J(p_σ). Every check is paired with a negative
control or a tolerance that the usual mistakes (a missing ½, σ for σ², the covariance for the
precision, the conditional score for the marginal one) would violate.
"""

import math

import pytest
import torch
from scipy import integrate

from companion.distributions import Gaussian, GaussianMixture
from companion.losses import dsm_loss, esm_loss
from companion.nets import ScoreMLP
from companion.scores import autograd_score


pytestmark = pytest.mark.usefixtures("float64")


def two_component_mixture():
    return GaussianMixture([0.4, 0.6], [[-1.5, 0.0], [1.0, 1.0]],
                           [[[0.3, 0.1], [0.1, 0.2]], [[0.5, 0.0], [0.0, 0.25]]])


def assert_mc_close(per_sample, expected, n_se=4.0):
    se = per_sample.std() / math.sqrt(per_sample.numel())
    assert abs(per_sample.mean() - expected) < n_se * se, (per_sample.mean().item(), float(expected), se.item())


# --- the conditional score (eq. eq-dsm-conditional-score and the anisotropic pitfall) -----------------------------


def test_conditional_score_isotropic_and_anisotropic():
    g = torch.Generator().manual_seed(0)
    d, sigma = 4, 0.7
    x, z = torch.randn(d, generator=g), torch.randn(d, generator=g)
    xt = x + sigma * z

    def log_kernel(y):  # log N(y; x, σ²I) written out, normaliser (2πσ²)^(−d/2) included
        return -0.5 * d * math.log(2 * math.pi * sigma**2) - (y - x).square().sum(-1) / (2 * sigma**2)

    by_autograd = autograd_score(log_kernel)(xt[None])[0]
    torch.testing.assert_close(by_autograd, -(xt - x) / sigma**2, rtol=0, atol=1e-12)
    torch.testing.assert_close(by_autograd, -z / sigma, rtol=0, atol=1e-12)
    # Anisotropic kernels: the precision multiplies the displacement, diagonal and full covariance.
    stds = torch.tensor([0.2, 0.5, 1.0, 3.0])
    a = torch.randn(d, d, generator=g)
    for cov in (torch.diag(stds**2), a @ a.T + 0.3 * torch.eye(d)):
        by_autograd = autograd_score(Gaussian(x, cov).log_prob)(xt[None])[0]
        torch.testing.assert_close(by_autograd, -torch.linalg.solve(cov, xt - x), rtol=0, atol=1e-10)
        assert (by_autograd - (-cov @ (xt - x))).abs().max() > 0.1  # the covariance in place of the precision
    torch.testing.assert_close(autograd_score(Gaussian(x, torch.diag(stds**2)).log_prob)(xt[None])[0],
                               -(xt - x) / stds**2, rtol=0, atol=1e-10)


# --- lemma: marginal score = posterior average of conditional scores ------------------------------------------


def test_marginal_score_is_the_posterior_average_of_conditional_scores():
    """Checks Lemma lem-dsm-marginal."""
    p, sigma = two_component_mixture(), 0.6
    h = 16 / 800
    axis = torch.linspace(-8, 8, 801)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)  # quadrature nodes for the clean x
    log_prior = p.log_prob(grid)
    points = torch.tensor([[0.0, 0.5], [-1.5, 0.0], [2.5, -1.0], [-4.0, 3.0]])
    for xt in points:
        log_w = log_prior - (xt - grid).square().sum(-1) / (2 * sigma**2)  # log p(x) q_σ(x̃ | x) + const
        w = torch.softmax(log_w, 0)[:, None]  # posterior p(x | x̃) on the grid
        posterior_average = (w * (-(xt - grid) / sigma**2)).sum(0)
        marginal = p.perturb(sigma).score(xt[None])[0]
        torch.testing.assert_close(posterior_average, marginal, rtol=0, atol=1e-8)
        # the quadrature is accurate: it reproduces p_σ(x̃) = ∫ p(x) q_σ(x̃ | x) dx
        mass = (log_w - math.log(2 * math.pi * sigma**2)).exp().sum() * h * h
        torch.testing.assert_close(mass, p.perturb(sigma).log_prob(xt[None])[0].exp(), rtol=1e-8, atol=0)
    # the conditional score at a fixed clean point is a different vector field
    xt = points[0]
    conditional = -(xt - p.means[0]) / sigma**2
    assert (conditional - p.perturb(sigma).score(xt[None])[0]).norm() > 1.0


# --- Vincent's constant on a non-Gaussian target --------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_dsm_minus_esm_is_the_general_constant_on_a_mixture(sigma):
    """Checks Theorem thm-dsm-vincent."""
    p, d, n = two_component_mixture(), 2, 400_000
    g = torch.Generator().manual_seed(1)
    p_sigma = p.perturb(sigma)
    x = p.sample(n, generator=g)
    x_sigma = p_sigma.sample(n, generator=g)
    fisher = p_sigma.score(x_sigma).square().sum(-1)
    constant = d / (2 * sigma**2) - 0.5 * fisher.mean()
    se_constant = 0.5 * fisher.std() / math.sqrt(n)
    # C = ½ E|a − E[a | x̃]|² with a = −z/σ, from the same noise (the variance form of the theorem)
    z = torch.randn(x.shape, generator=g)
    residual = 0.5 * (-z / sigma - p_sigma.score(x + sigma * z)).square().sum(-1)
    assert abs(residual.mean() - constant) < 4 * (residual.std() / math.sqrt(n) + se_constant)
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = ScoreMLP(2, hidden=16, depth=2)
        with torch.no_grad():
            dsm = dsm_loss(net, x, sigma, generator=g, reduction="none")
            esm = esm_loss(net, x_sigma, p_sigma.score, reduction="none")
        gap = dsm.mean() - esm.mean()
        se = math.sqrt(dsm.var() / n + esm.var() / n) + se_constant
        assert abs(gap - constant) < 4 * se, (gap.item(), constant.item(), se)
        # the tempting wrong answers are far outside the error bars
        assert abs(gap) > 50 * se  # "DSM equals ESM"
        assert abs(gap - d / (2 * sigma**2)) > 50 * se  # the constant without the Fisher term
        assert abs(gap - (d / sigma**2 - fisher.mean())) > 20 * se  # the constant without the ½


def test_point_mass_and_two_point_constants():
    """Exercise 1: C = 0 for a point mass; C = m²/(2σ⁴) E[1 − tanh²(m x̃/σ²)] for two points ±m."""
    g = torch.Generator().manual_seed(2)
    sigma = 0.5
    data = torch.full((10_000, 1), 1.5)
    assert dsm_loss(Gaussian(torch.tensor([1.5]), torch.tensor([[sigma**2]])).score, data, sigma, generator=g) < 1e-20
    m = 1.0
    two = torch.where(torch.rand(1_000_000, 1, generator=g) < 0.5, -m, m)
    p_two = GaussianMixture.isotropic([0.5, 0.5], [[-m], [m]], sigma**2)
    measured = dsm_loss(p_two.score, two, sigma, generator=g, reduction="none")
    formula = integrate.quad(lambda t: math.exp(p_two.log_prob(torch.tensor([[t]])).item())
                             * (1 - math.tanh(m * t / sigma**2) ** 2), -12, 12, points=[0.0], limit=200)[0]
    assert_mc_close(measured, m**2 / (2 * sigma**4) * formula)
    assert measured.mean() < 0.5 / (2 * sigma**2)  # far below d/(2σ²): the clean point is rarely ambiguous


# --- Tweedie: the denoiser form of the loss, the second-order formula -------------------------------------------


def test_dsm_is_a_scaled_denoising_loss_and_evaluates_the_model_at_the_noisy_point():
    g = torch.Generator().manual_seed(3)
    sigma = 0.4
    x = two_component_mixture().sample(500, generator=g)
    torch.manual_seed(4)
    net = ScoreMLP(2, hidden=16, depth=2)
    seen = []

    def spy(y):
        seen.append(y.detach().clone())
        return net(y)

    with torch.no_grad():
        per_sample = dsm_loss(spy, x, sigma, generator=g, reduction="none")
    xt = seen[0]
    assert (xt - x).abs().min() > 0  # the model sees x̃ = x + σz, never the clean x
    z = (xt - x) / sigma
    assert abs(z.var() - 1) < 0.15
    with torch.no_grad():
        denoised = xt + sigma**2 * net(xt)  # D_θ = x̃ + σ² s_θ
    torch.testing.assert_close(per_sample, (denoised - x).square().sum(-1) / (2 * sigma**4), rtol=1e-12, atol=1e-12)


def test_second_order_tweedie_on_a_mixture():
    """Cov[x | x̃] = σ²I + σ⁴ ∇²log p_σ(x̃) (Exercise 2), against the component posteriors."""
    p, sigma = two_component_mixture(), 0.8
    p_sigma, eye = p.perturb(sigma), torch.eye(2)
    gain = p.covs @ torch.linalg.inv(p.covs + sigma**2 * eye)
    for y in torch.tensor([[0.0, 0.5], [-1.5, 0.0], [3.0, -2.0]]):
        hessian = torch.autograd.functional.jacobian(lambda v: p_sigma.score(v[None])[0], y)
        r = p_sigma.responsibilities(y[None])[0]
        means = p.means + (gain @ (y - p.means)[..., None])[..., 0]
        covs = p.covs - gain @ p.covs
        mean = (r[:, None] * means).sum(0)
        cov = (r[:, None, None] * (covs + means[:, :, None] * means[:, None, :])).sum(0) - torch.outer(mean, mean)
        torch.testing.assert_close(mean, p.posterior_mean(y[None], sigma)[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(cov, sigma**2 * eye + sigma**4 * hessian, rtol=0, atol=1e-10)
        assert (cov - (sigma**2 * eye + sigma**2 * hessian)).abs().max() > 1e-2  # σ² in place of σ⁴
        assert torch.linalg.eigvalsh(eye + sigma**2 * hessian).min() > 0


# --- noise prediction -------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha_bar", [0.1, 0.5, 0.9])
def test_eps_prediction_is_dsm_weighted_by_one_minus_alpha_bar(alpha_bar):
    g = torch.Generator().manual_seed(5)
    p = two_component_mixture()
    x0 = p.sample(1000, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a, b = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    xt = a * x0 + b * eps
    torch.manual_seed(6)
    eps_net = ScoreMLP(2, hidden=16, depth=2)

    def log_kernel(y):  # Σ_i log N(y_i; √ᾱ x0_i, (1 − ᾱ) I): per-sample gradients by one autograd call
        return -(y - a * x0).square().sum(-1) / (2 * (1 - alpha_bar))

    conditional = autograd_score(log_kernel)(xt)
    torch.testing.assert_close(conditional, -eps / b, rtol=0, atol=1e-10)
    with torch.no_grad():
        noise_loss = (eps - eps_net(xt)).square().sum(-1)
        score_net = lambda y: -eps_net(y) / b  # noqa: E731  s_θ = −ε_θ / √(1 − ᾱ)
        unweighted = 2 * esm_loss(score_net, xt, lambda y: conditional, reduction="none")
    torch.testing.assert_close(noise_loss, (1 - alpha_bar) * unweighted, rtol=1e-12, atol=1e-12)
    assert (noise_loss - unweighted).abs().max() > 1e-3  # the weight cannot be dropped
    # x0-prediction: E[x0 | x_t] = (x_t − √(1−ᾱ) ε̂)/√ᾱ with ε̂ = −√(1−ᾱ) ∇log q_t(x_t); q_t is a mixture again
    q_t = GaussianMixture(p.weights, a * p.means, alpha_bar * p.covs + (1 - alpha_bar) * torch.eye(2))
    eps_hat = -b * q_t.score(xt)
    x0_hat = (xt - b * eps_hat) / a
    sigma_t = math.sqrt((1 - alpha_bar) / alpha_bar)  # x_t / √ᾱ = x0 + σ_t ε
    torch.testing.assert_close(x0_hat, p.posterior_mean(xt / a, sigma_t), rtol=0, atol=1e-10)


def test_eps_prediction_in_the_ve_notation_gives_lambda_sigma_squared():
    g = torch.Generator().manual_seed(7)
    sigma = 0.3
    x = two_component_mixture().sample(500, generator=g)
    torch.manual_seed(8)
    eps_net = ScoreMLP(2, hidden=16, depth=2)
    seen = []

    def score_net(y):  # s_θ = −ε_θ/σ; record the noisy input to recover ε
        seen.append(y.detach().clone())
        return -eps_net(y) / sigma

    with torch.no_grad():
        dsm = dsm_loss(score_net, x, sigma, generator=g, reduction="none")
        eps = (seen[0] - x) / sigma
        noise_loss = (eps - eps_net(seen[0])).square().sum(-1)
    torch.testing.assert_close(noise_loss, sigma**2 * 2 * dsm, rtol=1e-12, atol=1e-12)


# --- the weighting λ(σ) = σ² ----------------------------------------------------------------------


def test_sigma_squared_weighting_makes_every_level_scale_free():
    g = torch.Generator().manual_seed(9)
    p, d = two_component_mixture(), 2
    x = p.sample(100_000, generator=g)
    levels = torch.logspace(1, -2, 10)  # decreasing, as everywhere in the book
    optimum = torch.stack([dsm_loss(p.perturb(s).score, x, s, generator=g) for s in levels.tolist()])  # C(σ)
    weighted = levels**2 * optimum
    assert (weighted > 0).all() and (weighted < d / 2 + 0.01).all()
    assert optimum.max() / optimum.min() > 1e6  # λ = 1: many orders of magnitude
    by_sigma = levels * optimum
    assert by_sigma[-1] / by_sigma[0] > 1e3  # λ = σ: the smallest level still dominates
    # exact for isotropic Gaussian data: σ² C(σ) = ½ d s0²/(s0² + σ²)
    s0 = 0.7
    gauss = Gaussian(torch.zeros(d), s0**2 * torch.eye(d))
    xg = gauss.sample(200_000, generator=g)
    for s in (0.05, 0.7, 5.0):
        per_sample = s**2 * dsm_loss(gauss.perturb(s).score, xg, s, generator=g, reduction="none")
        assert_mc_close(per_sample, 0.5 * d * s0**2 / (s0**2 + s**2))


def test_sigma_to_zero_on_a_mixture():
    """σ² · 2C(σ) → d, and J(p_σ) ≤ J(p) at every level (Proposition prop-dsm-small-sigma)."""
    g = torch.Generator().manual_seed(10)
    p, d = two_component_mixture(), 2
    x = p.sample(200_000, generator=g)
    fisher_p = p.score(x).square().sum(-1).mean()
    for s in (1e-3, 1e-2, 0.1, 1.0):
        p_s = p.perturb(s)
        fisher = p_s.score(p_s.sample(200_000, generator=g)).square().sum(-1).mean()
        assert fisher < 1.02 * fisher_p
        two_c = 2 * dsm_loss(p_s.score, x, s, generator=g)
        assert two_c * s**2 < d * 1.01
        if s == 1e-3:
            assert abs(two_c * s**2 - d) < 0.01 * d


# --- Fisher divergence is not KL; KL is integrated Fisher divergence -----------------------------------------


def gaussian_kl(m_p, cov_p, m_q, cov_q):
    d = m_p.numel()
    prec_q = torch.linalg.inv(cov_q)
    diff = m_q - m_p
    return 0.5 * (torch.trace(prec_q @ cov_p) + diff @ prec_q @ diff - d + torch.logdet(cov_q) - torch.logdet(cov_p))


def gaussian_fisher(m_p, cov_p, m_q, cov_q):
    """½ E_p |∇log p − ∇log q|² in closed form."""
    prec_p, prec_q = torch.linalg.inv(cov_p), torch.linalg.inv(cov_q)
    a = prec_q - prec_p
    return 0.5 * (torch.trace(a @ cov_p @ a.T) + (prec_q @ (m_p - m_q)).square().sum())


def test_equal_fisher_divergences_different_kl():
    x = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(11))
    p = Gaussian(torch.zeros(1), torch.eye(1))
    q1 = Gaussian(torch.tensor([0.5]), torch.eye(1))
    q2 = Gaussian(torch.zeros(1), 2 * torch.eye(1))
    torch.testing.assert_close(esm_loss(q1.score, x, p.score), torch.tensor(0.125))  # constant difference: exact
    assert_mc_close(esm_loss(q2.score, x, p.score, reduction="none"), 0.125)
    kl1 = gaussian_kl(p.means[0], p.covs[0], q1.means[0], q1.covs[0])
    kl2 = gaussian_kl(p.means[0], p.covs[0], q2.means[0], q2.covs[0])
    torch.testing.assert_close(kl1, torch.tensor(0.125))
    torch.testing.assert_close(kl2, torch.tensor(0.5 * (math.log(2) - 0.5)))
    assert kl1 - kl2 > 0.02


def test_kl_derivative_along_gaussian_smoothing_is_minus_the_fisher_divergence():
    """Checks Proposition prop-dsm-kl-fisher."""
    g = torch.Generator().manual_seed(12)
    a, b = torch.randn(3, 3, generator=g), torch.randn(3, 3, generator=g)
    m_p, m_q = torch.randn(3, generator=g), torch.randn(3, generator=g)
    cov_p, cov_q = a @ a.T + 0.2 * torch.eye(3), b @ b.T + 0.5 * torch.eye(3)
    kl = lambda t: gaussian_kl(m_p, cov_p + t * torch.eye(3), m_q, cov_q + t * torch.eye(3)).item()  # noqa: E731
    fisher = lambda t: gaussian_fisher(m_p, cov_p + t * torch.eye(3), m_q, cov_q + t * torch.eye(3)).item()  # noqa: E731
    for t in (0.05, 0.3, 2.0):
        h = 1e-4
        derivative = (kl(t + h) - kl(t - h)) / (2 * h)
        assert abs(derivative + fisher(t)) < 1e-6 * max(1.0, fisher(t))
        assert abs(derivative + 2 * fisher(t)) > 0.1 * fisher(t)  # the factor ½ matters
    integral, _ = integrate.quad(fisher, 0, math.inf, limit=200)
    assert abs(integral - kl(0.0)) < 1e-6 * kl(0.0)


# --- slicing the DSM residual (Exercise 3) -------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 5])
def test_sliced_dsm_is_dsm_divided_by_d(d):
    g = torch.Generator().manual_seed(13)
    n = 200_000
    r = torch.randn(n, d, generator=g) * torch.linspace(0.5, 2.0, d)  # any residuals
    v = torch.randn(n, d, generator=g)
    v = v / v.norm(dim=-1, keepdim=True)  # uniform on the unit sphere
    sliced = 0.5 * (v * r).sum(-1).square()
    assert_mc_close(d * sliced, 0.5 * r.square().sum(-1).mean())
    assert sliced.var() * d**2 > (0.5 * r.square().sum(-1)).var()  # rescaled to DSM, it only adds variance


# --- the figure helper and the widget of the chapter -------------------------------------------------------------


def test_tweedie_panel_and_widget_build():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from companion import plotting, widgets

    mixture = widgets.dsm_example_mixture()
    fig, ax = plt.subplots()
    assert plotting.tweedie_panel(mixture, 0.7, ax=ax, n_noisy=5) is ax
    assert len(ax.lines) == 5  # one segment per noisy point, from x̃ to E[x | x̃]
    seg = ax.lines[0].get_xydata()
    noisy = torch.tensor(seg[0])[None]
    torch.testing.assert_close(torch.tensor(seg[1])[None], noisy + 0.49 * mixture.perturb(0.7).score(noisy))
    plt.close(fig)
    with pytest.raises(ValueError, match="n_noisy"):
        plotting.tweedie_panel(mixture, 0.7, n_noisy=-1)
    pytest.importorskip("ipywidgets")
    assert widgets.tweedie_explorer(mixture).children
    plt.close("all")
