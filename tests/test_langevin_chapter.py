"""Numerical checks of the derivations of Chapter 1 (book/langevin.md, "Langevin dynamics").

The unit tests of companion already check ULA's stationary variance s^2 / (1 - eps/(2 s^2)) on
N(0, s^2), MALA's removal of that bias, ULA keeping the wrong weights of a separated mixture, the
inverse-CDF sampler and input validation. This file checks everything else the chapter derives:
the Fokker-Planck equation and its sign, the KL dissipation and the log-Sobolev rate, the stationary
law p^(c/T) of a rescaled drift, the Rosenblatt-Knothe construction, the finite-k moments, the
contraction factor, the autocorrelation and the stability limit of ULA, the Taylor balance that
fixes the factor 2 of the noise, MALA's proposal constant and per-chain acceptance, preconditioning,
and the numbers printed in the chapter. Every Monte Carlo tolerance is a few standard errors, so a
wrong sign or factor of 2 fails. Everything is seeded; the file runs in a few seconds on a CPU.
"""

import math

import pytest
import torch

from companion.distributions import Gaussian, GaussianMixture
from companion.samplers import inverse_cdf, langevin, mala

DT = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def std_normal():
    return Gaussian(torch.zeros(1, dtype=DT), torch.eye(1, dtype=DT))


def mixture_1d():
    """The 1-D mixture of the chapter: 0.3 N(-2, 0.6^2) + 0.7 N(1.5, 1)."""
    return GaussianMixture(torch.tensor([0.3, 0.7], dtype=DT), torch.tensor([[-2.0], [1.5]], dtype=DT),
                           torch.tensor([[[0.36]], [[1.0]]], dtype=DT))


def d_dx(f, h):
    return torch.gradient(f, spacing=h)[0]


def var_se(v, n):
    """Standard error of a sample variance of a Gaussian with variance v from n draws."""
    return v * math.sqrt(2 / n)


# --------------------------------------------------------------------------------------------
# Fokker-Planck equation (Theorem thm-langevin-fokker-planck)


def test_fokker_planck_is_zero_at_the_target_and_not_for_the_flipped_sign():
    mix = mixture_1d()
    t = torch.linspace(-8, 8, 4001, dtype=DT)
    h = (t[1] - t[0]).item()
    p, s = mix.log_prob(t[:, None]).exp(), mix.score(t[:, None])[:, 0]
    correct = d_dx(d_dx(p, h) - p * s, h)
    flipped = d_dx(d_dx(p, h) + p * s, h)
    assert correct.abs().max() < 1e-4  # finite-difference error only
    assert flipped.abs().max() > 0.5  # = 2 p'' for the flipped form: far from stationary
    # The flipped form is stationary for q ∝ 1/p instead (zero flux q' + q s = 0).
    q = 1 / p
    inner = t.abs() < 5
    assert ((d_dx(q, h) + q * s)[inner].abs() / (q * (1 + s.abs()))[inner]).max() < 1e-3


def test_fokker_planck_matches_the_ornstein_uhlenbeck_solution():
    """For p = N(0, 1) and p_0 = N(m0, v0) the law is N(m0 e^-t, 1 + (v0 - 1) e^-2t); its time
    derivative must equal d/dx (p_t d/dx log(p_t / p)) and the expanded form -(p_t s)' + p_t''."""
    m0, v0, t0, dt = 1.5, 0.3, 0.4, 1e-5
    x = torch.linspace(-10, 10, 8001, dtype=DT)
    h = (x[1] - x[0]).item()

    def law(t):
        m, v = m0 * math.exp(-t), 1 + (v0 - 1) * math.exp(-2 * t)
        return torch.exp(-(x - m) ** 2 / (2 * v)) / math.sqrt(2 * math.pi * v)

    pt = law(t0)
    dpdt = (law(t0 + dt) - law(t0 - dt)) / (2 * dt)
    s = -x  # score of N(0, 1)
    rhs = d_dx(pt * d_dx(torch.log(pt) - (-x**2 / 2), h), h)
    expanded = -d_dx(pt * s, h) + d_dx(d_dx(pt, h), h)
    scale = dpdt.abs().max()
    assert (rhs - dpdt).abs().max() < 1e-3 * scale
    assert (expanded - dpdt).abs().max() < 1e-3 * scale
    for wrong in (d_dx(d_dx(pt, h) + pt * s, h), -d_dx(pt * s, h) + 0.5 * d_dx(d_dx(pt, h), h)):
        assert (wrong - dpdt).abs().max() > 0.1 * scale  # sign flip or a missing factor fails


def gaussian_kl(m, v):
    """KL(N(m, v) || N(0, 1))."""
    return 0.5 * (v + m**2 - 1 - math.log(v))


def test_kl_dissipation_equals_relative_fisher_information_and_lsi_rate():
    m0, v0 = 2.0, 0.25
    m = lambda t: m0 * math.exp(-t)
    v = lambda t: 1 + (v0 - 1) * math.exp(-2 * t)
    for t in [0.1, 0.5, 1.0, 2.0]:
        dkl = (gaussian_kl(m(t + 1e-6), v(t + 1e-6)) - gaussian_kl(m(t - 1e-6), v(t - 1e-6))) / 2e-6
        fisher = (v(t) - 1) ** 2 / v(t) + m(t) ** 2  # E_{p_t} |d/dx log(p_t / p)|^2
        assert dkl == pytest.approx(-fisher, rel=1e-6)
        # Corollary cor-langevin-lsi with alpha = 1 for N(0, 1).
        assert gaussian_kl(m(t), v(t)) <= math.exp(-2 * t) * gaussian_kl(m0, v0) + 1e-12


def test_ula_satisfies_the_vempala_wibisono_kl_bound_on_a_gaussian():
    """Exact law of ULA on N(0, 1) from N(m0, v0): alpha = L = d = 1, eps <= 1/4."""
    m0, v0 = 3.0, 0.2
    for eps in [0.05, 0.1, 0.25]:
        a, m, v = 1 - eps, m0, v0
        kl0 = gaussian_kl(m0, v0)
        for k in range(1, 400):
            m, v = a * m, a * a * v + 2 * eps
            assert gaussian_kl(m, v) <= math.exp(-eps * k) * kl0 + 8 * eps


# --------------------------------------------------------------------------------------------
# The magnitude of the score (Proposition prop-langevin-tempered)


def test_drift_c_times_score_samples_p_to_the_c():
    n, eps = 100_000, 0.05
    x = langevin(lambda x: 2 * std_normal().score(x), torch.zeros(n, 1, dtype=DT), eps, 150, generator=gen(1))
    exact = 1 / (2 * (1 - eps))  # ULA with drift -2x: N(0, 1/2) up to the O(eps) bias
    assert abs(x.var().item() - exact) < 4 * var_se(exact, n)
    assert abs(x.var().item() - 1.0) > 0.4


def test_temperature_and_rescaled_drift_zero_flux_for_p_to_the_c_over_T():
    mix = mixture_1d()
    t = torch.linspace(-8, 8, 4001, dtype=DT)
    h = (t[1] - t[0]).item()
    p, s = mix.log_prob(t[:, None]).exp(), mix.score(t[:, None])[:, 0]
    for c, T in [(2.0, 1.0), (1.0, 0.25), (0.5, 2.0)]:
        q = p ** (c / T)
        flux = T * d_dx(q, h) - c * q * s
        assert flux.abs().max() < 1e-4 * q.max()
        wrong = p ** (T / c) if c != T else p**2
        assert (T * d_dx(wrong, h) - c * wrong * s).abs().max() > 1e-2 * wrong.max()


def test_noise_scale_lambda_gives_variance_lambda2_over_1_minus_eps_half():
    """Exercise ex-langevin-2: x + eps s + lam sqrt(2 eps) z is ULA with step lam^2 eps on s / lam^2."""
    lam, eps, n = 0.5, 0.1, 100_000
    x = langevin(lambda x: std_normal().score(x) / lam**2, torch.zeros(n, 1, dtype=DT), lam**2 * eps, 150,
                 generator=gen(2))
    expected = lam**2 / (1 - eps / 2)
    assert abs(x.var().item() - expected) < 4 * var_se(expected, n)
    assert abs(x.var().item() - 1 / (1 - eps / 2)) > 0.5  # not the untempered law


def test_alpha_convention_variance():
    """Exercise ex-langevin-1: x + (alpha/2) s + sqrt(alpha) z is ULA with eps = alpha / 2."""
    alpha, n = 0.8, 200_000
    x = langevin(std_normal().score, torch.zeros(n, 1, dtype=DT), alpha / 2, 100, generator=gen(3))
    expected = 1 / (1 - alpha / 4)
    assert abs(x.var().item() - expected) < 4 * var_se(expected, n)
    assert abs(x.var().item() - 1 / (1 - alpha / 2)) > 0.3  # the eps-formula with eps = alpha is wrong


# --------------------------------------------------------------------------------------------
# Inverse CDF in d dimensions: the Rosenblatt-Knothe construction


def rosenblatt_2d(log_prob, n, lim=5.0, n_grid=401, generator=None):
    """The chapter's tabulated construction: x1 = F_1^{-1}(u1), x2 = F_{2|1}^{-1}(u2 | x1)."""
    t = torch.linspace(-lim, lim, n_grid, dtype=DT)
    p = log_prob(torch.stack(torch.meshgrid(t, t, indexing="ij"), -1)).exp()
    log_p1 = torch.trapezoid(p, t, dim=1).log()
    x1 = inverse_cdf(lambda _: log_p1, n, low=-lim, high=lim, n_grid=n_grid, generator=generator)
    rows = p[((x1 + lim) / (t[1] - t[0])).round().long()]
    cdf = torch.cat([torch.zeros(n, 1, dtype=DT), torch.cumulative_trapezoid(rows, t, dim=1)], 1)
    cdf, u2 = cdf / cdf[:, -1:], torch.rand(n, 1, generator=generator, dtype=DT)
    j = torch.searchsorted(cdf, u2).clamp(1, n_grid - 1)
    c0, c1 = cdf.gather(1, j - 1), cdf.gather(1, j)
    return torch.stack([x1, (t[j - 1] + (u2 - c0) / (c1 - c0) * (t[1] - t[0]))[:, 0]], -1)


def test_generalised_inverse_cdf_samples_laws_with_jumps_and_flat_stretches():
    """Theorem thm-langevin-inverse-cdf with F⁻¹(u) = inf{x : F(x) ≥ u}, for a Binomial(6, 0.3) (F
    jumps) and ½U[0, 1] + ½U[2, 3] (F flat on [1, 2]); the rule "the last x with F(x) ≤ u" is
    off by a whole atom."""
    n = 200_000
    u = torch.rand(n, generator=gen(36), dtype=DT)
    pmf = torch.tensor([math.comb(6, k) * 0.3**k * 0.7 ** (6 - k) for k in range(7)], dtype=DT)
    cdf = pmf.cumsum(0)
    k = torch.searchsorted(cdf, u)  # the first k with F(k) ≥ u
    freq = torch.bincount(k, minlength=7).double() / n
    assert ((freq - pmf).abs() < 4 * (pmf * (1 - pmf) / n).sqrt()).all()
    wrong = (k - 1).clamp(min=0)
    assert abs(wrong.double().mean().item() - 6 * 0.3) > 0.5
    # F(x) = x/2 on [0, 1], 1/2 on [1, 2], 1/2 + (x − 2)/2 on [2, 3]: F⁻¹(u) = 2u for u ≤ ½, else 2u + 1.
    x = torch.where(u <= 0.5, 2 * u, 2 * u + 1)
    assert not ((x > 1) & (x < 2)).any()
    xs = x.sort().values
    exact = torch.where(xs <= 1, xs / 2, torch.where(xs < 2, torch.full_like(xs, 0.5), 0.5 + (xs - 2) / 2))
    assert (exact - torch.arange(1, n + 1, dtype=DT) / n).abs().max() < 1.63 / math.sqrt(n)


def test_rosenblatt_construction_reproduces_a_correlated_gaussian():
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=DT)
    target = Gaussian(torch.zeros(2, dtype=DT), cov)
    n = 20_000
    tol = 4 * 1.5 / math.sqrt(n)  # a few standard errors of entries of order 1
    x = rosenblatt_2d(target.log_prob, n, generator=gen(4))
    assert (torch.cov(x.T) - cov).abs().max() < tol
    # The closed-form version: x1 = Phi^-1(u1), x2 | x1 ~ N(0.8 x1, 1 - 0.8^2).
    u = torch.rand(n, 2, generator=gen(5), dtype=DT)
    x1 = torch.special.ndtri(u[:, 0])
    x2 = 0.8 * x1 + math.sqrt(1 - 0.64) * torch.special.ndtri(u[:, 1])
    assert (torch.cov(torch.stack([x1, x2])) - cov).abs().max() < tol
    # Negative control: inverting each marginal separately loses the correlation.
    naive = torch.special.ndtri(torch.rand(n, 2, generator=gen(6), dtype=DT))
    assert abs(torch.cov(naive.T)[0, 1].item() - 0.8) > 0.7


def test_rosenblatt_construction_on_a_non_gaussian_mixture():
    """The tabulated chain of conditionals also gets a skewed, non-Gaussian law right.
    Checks Theorem thm-langevin-rosenblatt."""
    mix = GaussianMixture(torch.tensor([0.3, 0.7], dtype=DT), torch.tensor([[-1.5, 1.0], [1.0, -0.5]], dtype=DT),
                          torch.tensor([[[0.5, 0.3], [0.3, 0.5]], [[1.0, -0.4], [-0.4, 0.6]]], dtype=DT))
    n = 20_000
    x = rosenblatt_2d(mix.log_prob, n, lim=6.0, generator=gen(7))
    assert (x.mean(0) - mix.mean()).abs().max() < 4 * 1.5 / math.sqrt(n)
    assert (torch.cov(x.T) - mix.covariance()).abs().max() < 4 * 3.0 / math.sqrt(n)
    # Beyond two moments: the joint CDF on a 5 × 5 grid, against quadrature of the density (midpoint
    # rule, cells of 0.01); a Gaussian with the same mean and covariance passes the moment checks
    # above but fails this one.
    h = 0.01
    mid = torch.arange(-8 + h / 2, 8, h, dtype=DT)
    dens = mix.log_prob(torch.stack(torch.meshgrid(mid, mid, indexing="ij"), -1).reshape(-1, 2)).exp()
    cdf_table = dens.reshape(len(mid), len(mid)).cumsum(0).cumsum(1) * h * h
    moments = Gaussian(mix.mean(), mix.covariance()).sample(n, generator=gen(35))
    worst = {"rosenblatt": 0.0, "moments": 0.0}
    for a in (-2.0, -1.0, 0.0, 1.0, 2.0):
        for b in (-1.5, -0.5, 0.5, 1.0, 2.0):
            exact = float(cdf_table[round((a + 8) / h) - 1, round((b + 8) / h) - 1])
            se = math.sqrt(exact * (1 - exact) / n)
            for name, sample in (("rosenblatt", x), ("moments", moments)):
                share = ((sample[:, 0] <= a) & (sample[:, 1] <= b)).double().mean().item()
                worst[name] = max(worst[name], abs(share - exact) / (se + 1e-3))
    assert worst["rosenblatt"] < 4 and worst["moments"] > 8


def test_ball_share_formula_of_the_chapter():
    r2 = 2 * math.log(100)
    for d in [2, 5]:
        share = math.exp(d / 2 * math.log(math.pi * r2) - math.lgamma(d / 2 + 1) - d * math.log(8))
        u = 8 * torch.rand(400_000, d, generator=gen(8), dtype=DT) - 4
        mc = (u.square().sum(-1) < r2).double().mean().item()
        assert abs(mc - share) < 4 * math.sqrt(share * (1 - share) / 400_000)


# --------------------------------------------------------------------------------------------
# Gradient ascent and the Taylor balance


@torch.no_grad()
def gradient_ascent(score_fn, x, step_size, max_steps=10_000, tol=1e-6):
    for _ in range(max_steps):
        s = score_fn(x)
        if s.norm(dim=-1).max() < tol:
            break
        x = x + step_size * s
    return x


def test_gradient_ascent_finds_modes_without_an_autograd_graph():
    mix = GaussianMixture.isotropic(torch.tensor([0.6, 0.4], dtype=DT),
                                    torch.tensor([[-1.5, -1.5], [1.5, 1.5]], dtype=DT), 1.0)
    x0 = (8 * torch.rand(500, 2, generator=gen(9), dtype=DT) - 4).requires_grad_(False)
    x = gradient_ascent(mix.score, x0, 0.2)
    assert x.grad_fn is None
    assert mix.score(x).norm(dim=-1).max() < 1e-6
    modes = torch.unique(x.round(decimals=3), dim=0)
    assert len(modes) == 2
    for m in modes:  # maxima: the Hessian of log p is negative definite there
        hess = torch.autograd.functional.hessian(lambda y: mix.log_prob(y), m.clone())
        assert torch.linalg.eigvalsh(hess).max() < 0


def test_one_step_expected_change_of_log_p_needs_the_factor_2():
    """E[log p(x_1) - log p(x_0) | x_0 = x] = eps (|s|^2 + Laplacian log p) + o(eps); on N(0, 1)
    exactly eps (x^2 - 1) - eps^2 x^2 / 2. Noise sqrt(eps) instead of sqrt(2 eps) would give
    eps (x^2 - 1/2) - ..."""
    eps, n = 0.01, 2_000_000
    for x0 in [0.0, 1.0, 2.0]:
        z = torch.randn(n, generator=gen(10), dtype=DT)
        x1 = x0 + eps * (-x0) + math.sqrt(2 * eps) * z
        change = (-(x1**2) / 2 + x0**2 / 2).mean().item()
        exact = eps * (x0**2 - 1) - eps**2 * x0**2 / 2
        se = (x1**2 / 2).std().item() / math.sqrt(n)
        assert abs(change - exact) < 4 * se
        assert abs(change - (eps * (x0**2 - 0.5) - eps**2 * x0**2 / 2)) > 10 * se


def test_stationary_balance_e_score2_plus_laplacian_is_zero():
    mix = GaussianMixture.isotropic(torch.tensor([0.6, 0.4], dtype=DT),
                                    torch.tensor([[-1.5, -1.5], [1.5, 1.5]], dtype=DT), 1.0)
    x = mix.sample(100_000, generator=gen(11)).requires_grad_(True)
    s = torch.autograd.grad(mix.log_prob(x).sum(), x, create_graph=True)[0]
    lap = sum(torch.autograd.grad(s[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))
    f = (s.square().sum(-1) + lap).detach()
    assert abs(f.mean().item()) < 4 * f.std().item() / math.sqrt(len(f))
    assert s.square().sum(-1).mean().item() > 1.0  # each term alone is far from zero


# --------------------------------------------------------------------------------------------
# ULA on a Gaussian (Proposition prop-langevin-ula-gaussian)


def test_ula_mean_contracts_by_one_minus_eps_over_s2_per_step():
    s2, eps, n, x0 = 2.0, 0.1, 50_000, 4.0
    target = Gaussian(torch.zeros(1, dtype=DT), s2 * torch.eye(1, dtype=DT))
    a = 1 - eps / s2
    means, variances = [], []
    langevin(target.score, torch.full((n, 1), x0, dtype=DT), eps, 50, generator=gen(12),
             callback=lambda d: (means.append(d["x"].mean().item()), variances.append(d["x"].var().item())))
    for k in [1, 10, 50]:
        v_k = 2 * eps * (1 - a ** (2 * k)) / (1 - a**2)
        assert abs(means[k - 1] - x0 * a**k) < 4 * math.sqrt(v_k / n)
        assert abs(variances[k - 1] - v_k) < 4 * var_se(v_k, n)
        assert abs(means[k - 1] - x0 * (1 - eps / (2 * s2)) ** k) > 10 * math.sqrt(v_k / n)  # factor-2 error


def test_ula_stationary_covariance_of_an_anisotropic_gaussian():
    rot = torch.tensor([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]], dtype=DT)
    lam = torch.tensor([0.5, 2.0], dtype=DT)
    cov = rot @ torch.diag(lam) @ rot.T
    target = Gaussian(torch.zeros(2, dtype=DT), cov)
    eps, n = 0.4, 50_000
    x = langevin(target.score, torch.zeros(n, 2, dtype=DT), eps, 100, generator=gen(13))
    expected = rot @ torch.diag(lam / (1 - eps / (2 * lam))) @ rot.T
    assert (torch.cov(x.T) - expected).abs().max() < 4 * 2.7 * math.sqrt(2 / n)
    assert (torch.cov(x.T) - cov).abs().max() > 0.1  # the bias is visible


def test_ula_lag_autocorrelation_is_a_to_the_m():
    eps, n = 0.1, 50_000
    v_inf = 1 / (1 - eps / 2)
    x0 = math.sqrt(v_inf) * torch.randn(n, 1, generator=gen(14), dtype=DT)
    states = [x0[:, 0]]
    langevin(std_normal().score, x0, eps, 10, generator=gen(15), callback=lambda d: states.append(d["x"][:, 0]))
    for m in [1, 2, 10]:
        rho = torch.corrcoef(torch.stack([states[0], states[m]]))[0, 1].item()
        expected = (1 - eps) ** m
        assert abs(rho - expected) < 4 * (1 - expected**2) / math.sqrt(n)
    assert abs(torch.corrcoef(torch.stack([states[0], states[2]]))[0, 1].item()) > 0.7  # not independent


def test_ula_stability_limit_at_2_s2():
    for s2 in [1.0, 0.5]:
        target = Gaussian(torch.zeros(1, dtype=DT), s2 * torch.eye(1, dtype=DT))
        n, k = 20_000, 50
        x0 = math.sqrt(s2) * torch.randn(n, 1, generator=gen(16), dtype=DT)
        # eps = 2 s^2: a = -1, the variance grows linearly, s^2 + 2 eps k.
        x = langevin(target.score, x0, 2 * s2, k, generator=gen(17))
        expected = s2 + 4 * s2 * k
        assert abs(x.var().item() - expected) < 4 * var_se(expected, n)
        # slightly below: converges to s^2 / (1 - eps / (2 s^2)); slightly above: diverges.
        eps = 1.9 * s2
        x = langevin(target.score, x0, eps, 400, generator=gen(18))
        expected = s2 / (1 - eps / (2 * s2))
        assert abs(x.var().item() - expected) < 4 * var_se(expected, n)
        with pytest.raises(ValueError, match="step size"):
            langevin(target.score, x0[:100], 2.5 * s2, 2_000, generator=gen(19))


def test_chapter_stability_numbers():
    x0 = std_normal().sample(10_000, generator=gen(20))
    x = langevin(std_normal().score, x0, 2.1, 60, generator=gen(21))
    a = -1.1
    expected = a**120 + 4.2 * (1 - a**120) / (1 - a**2)
    assert x.var().item() == pytest.approx(expected, rel=0.1)


def test_quartic_target_diverges_only_beyond_eps_x2_equal_2():
    score = lambda x: -(x**3)
    x = langevin(score, torch.full((1000, 1), 4.0, dtype=DT), 0.1, 200, generator=gen(22))
    # E x^2 = 2 Gamma(3/4) / Gamma(1/4) = 0.676 under exp(-x^4/4); ULA at eps = 0.1 is close to it.
    exact = 2 * math.gamma(0.75) / math.gamma(0.25)
    assert torch.isfinite(x).all() and abs(x.square().mean().item() - exact) < 0.1
    with pytest.raises(ValueError):
        langevin(score, torch.full((1000, 1), 5.0, dtype=DT), 0.1, 200, generator=gen(23))
    # Without noise one step maps x to x (1 - eps x^2): farther out exactly when eps x^2 > 2.
    for x0 in [4.4, 4.5]:
        x1 = x0 * (1 - 0.1 * x0**2)
        assert (abs(x1) > abs(x0)) == (0.1 * x0**2 > 2)


def test_subtracting_the_score_follows_the_closed_form():
    n, eps, k = 20_000, 0.01, 200
    x0 = std_normal().sample(n, generator=gen(24))
    x = langevin(lambda x: -std_normal().score(x), x0, eps, k, generator=gen(25))
    g = (1 + eps) ** (2 * k)
    expected = g + 2 * eps * (g - 1) / ((1 + eps) ** 2 - 1)
    assert expected == pytest.approx(105.8, abs=0.1)
    assert abs(x.var().item() - expected) < 4 * var_se(expected, n)


# --------------------------------------------------------------------------------------------
# MALA (Theorem thm-langevin-mala)


def mala_with_proposal_denominator(x, eps, n_steps, denom, generator):
    """MALA on N(0, 1) whose proposal log-density uses |y - x - eps s(x)|^2 / denom."""
    log_p, s = (lambda x: -0.5 * x**2), (lambda x: -x)
    for _ in range(n_steps):
        y = x + eps * s(x) + math.sqrt(2 * eps) * torch.randn(x.shape, generator=generator, dtype=DT)
        log_r = log_p(y) - log_p(x) - (x - y - eps * s(y)) ** 2 / denom + (y - x - eps * s(x)) ** 2 / denom
        x = torch.where(torch.rand(x.shape, generator=generator, dtype=DT).log() < log_r, y, x)
    return x


def test_mala_proposal_constant_4_eps_is_exact_and_2_eps_is_biased():
    eps, n = 0.8, 50_000
    right = mala_with_proposal_denominator(torch.zeros(n, dtype=DT), eps, 100, 4 * eps, gen(26))
    wrong = mala_with_proposal_denominator(torch.zeros(n, dtype=DT), eps, 100, 2 * eps, gen(27))
    assert abs(right.var().item() - 1.0) < 4 * var_se(1.0, n)
    assert wrong.var().item() == pytest.approx(2.5, abs=0.05)  # the chapter's "near 2.5"
    x, rate = mala(std_normal().log_prob, std_normal().score, torch.zeros(n, 1, dtype=DT), eps, 60, generator=gen(28))
    assert abs(x.var().item() - 1.0) < 4 * var_se(1.0, n) and 0.82 < float(rate) < 0.86


def stationary_mala_acceptance(eps):
    """E[min(1, r)] for x ~ N(0, 1) and the proposal y = (1 − eps) x + √(2 eps) z, by quadrature on a grid."""
    t = torch.linspace(-9, 9, 1801, dtype=DT)
    x, z = t[:, None], t[None, :]
    y = (1 - eps) * x + math.sqrt(2 * eps) * z
    log_r = (-0.5 * y**2 + 0.5 * x**2 - (x - (1 - eps) * y) ** 2 / (4 * eps) + (y - (1 - eps) * x) ** 2 / (4 * eps))
    weight = torch.exp(-0.5 * (x**2 + z**2)) / (2 * math.pi) * (t[1] - t[0]) ** 2
    return float((weight * log_r.clamp(max=0).exp()).sum())


def test_mala_acceptance_rate_at_stationarity_matches_quadrature():
    eps, n, steps = 0.8, 20_000, 10
    _, rate = mala(std_normal().log_prob, std_normal().score, torch.randn(n, 1, generator=gen(33), dtype=DT), eps,
                   steps, generator=gen(34))
    exact = stationary_mala_acceptance(eps)
    se = math.sqrt(exact * (1 - exact) / n)  # per step; averaging over steps only shrinks it
    assert abs(float(rate) - exact) < 4 * se


def test_mala_detailed_balance_on_a_grid():
    """The theorem's algebra: p(x) q(y|x) A(x, y) is symmetric in (x, y) for the mixture, with
    q = N(x + eps s(x), 2 eps). The package's mala is checked against the exact law in test_samplers."""
    mix, eps = mixture_1d(), 0.3
    t = torch.linspace(-5, 5, 201, dtype=DT)
    log_p, s = mix.log_prob(t[:, None]), mix.score(t[:, None])[:, 0]
    X, Y = t[:, None], t[None, :]
    log_q_yx = -((Y - X - eps * s[:, None]) ** 2) / (4 * eps) - 0.5 * math.log(4 * math.pi * eps)
    log_q_xy = log_q_yx.T
    log_a = (log_p[None, :] + log_q_xy - log_p[:, None] - log_q_yx).clamp(max=0)
    flow = log_p[:, None] + log_q_yx + log_a
    assert (flow - flow.T).abs().max() < 1e-10
    # Without the Metropolis-Hastings factor (ULA) the flow is not symmetric.
    ula = log_p[:, None] + log_q_yx
    assert (ula - ula.T).abs().max() > 0.1


def test_joint_accept_of_a_batch_collapses_and_per_chain_scaling():
    log_p, score = (lambda x: -0.5 * x.square().sum(-1)), (lambda x: -x)
    rates = {}
    for B in [1, 1000]:
        _, r = mala(log_p, score, torch.randn(200, B, generator=gen(29), dtype=DT), 0.8, 50, generator=gen(30))
        _, r_scaled = mala(log_p, score, torch.randn(200, B, generator=gen(31), dtype=DT), 0.8 * B ** (-1 / 3), 50,
                           generator=gen(32))
        rates[B] = (float(r), float(r_scaled))
    assert rates[1][0] > 0.8 and rates[1000][0] < 0.01
    assert rates[1000][1] > 0.7  # eps ∝ d^(-1/3) keeps the acceptance rate


# --------------------------------------------------------------------------------------------
# Mixing between modes


def test_mixture_barrier_and_mala_keeps_the_wrong_weights():
    mix = GaussianMixture.isotropic(torch.tensor([0.8, 0.2], dtype=DT),
                                    torch.tensor([[5.0, 5.0], [-5.0, -5.0]], dtype=DT), 1.0)
    u = torch.linspace(-5, 5, 10_001, dtype=DT)
    diag = mix.log_prob(torch.stack([u, u], -1))
    barrier = (diag.max() - diag[(u.abs() < 1)].min()).item()
    assert 24.5 < barrier < 25.5  # "a barrier of about 25 in log p"
    x0 = 16 * torch.rand(2000, 2, generator=gen(33), dtype=DT) - 8
    x, _ = mala(mix.log_prob, mix.score, x0, 0.1, 300, generator=gen(34))
    share = (x.sum(-1) > 0).double().mean().item()
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / 2000)
    # In the basin of (5, 5) the score does not depend on the weights.
    other = GaussianMixture.isotropic(torch.tensor([0.2, 0.8], dtype=DT), mix.means, 1.0)
    pts = torch.tensor([[4.0, 6.0], [5.5, 3.0]], dtype=DT)
    assert torch.allclose(mix.score(pts), other.score(pts), atol=1e-9)


# --------------------------------------------------------------------------------------------
# Preconditioning


def preconditioned_langevin(score_fn, x, M, step_size, n_steps, callback=None, **kwargs):
    """The chapter's implementation: plain ULA on y = R^{-1} x with R R^T = M."""
    R = torch.linalg.cholesky(M)
    y = torch.linalg.solve_triangular(R, x.T, upper=False).T
    cb = None if callback is None else (lambda d: callback({**d, "x": d["x"] @ R.T}))
    return langevin(lambda y: score_fn(y @ R.T) @ R, y, step_size, n_steps, callback=cb, **kwargs) @ R.T


def test_change_of_variables_is_the_preconditioned_update():
    M = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=DT)
    R = torch.linalg.cholesky(M)
    target = Gaussian(torch.tensor([1.0, -1.0], dtype=DT), torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=DT))
    x0, eps = torch.randn(5, 2, generator=gen(35), dtype=DT), 0.1
    x1 = preconditioned_langevin(target.score, x0, M, eps, 1, generator=gen(36))
    z = torch.randn(5, 2, generator=gen(36), dtype=DT)  # the same draw as inside langevin
    direct = x0 + eps * target.score(x0) @ M.T + math.sqrt(2 * eps) * z @ R.T
    assert torch.allclose(x1, direct, atol=1e-12)


def test_preconditioning_with_the_covariance_not_its_inverse():
    Sigma = torch.diag(torch.tensor([1.0, 100.0], dtype=DT))
    target = Gaussian(torch.zeros(2, dtype=DT), Sigma)
    eps, n = 0.1, 4000
    v = {}
    for name, M in [("I", torch.eye(2, dtype=DT)), ("Sigma", Sigma), ("inv", torch.linalg.inv(Sigma))]:
        v[name] = preconditioned_langevin(target.score, torch.zeros(n, 2, dtype=DT), M, eps, 200,
                                          generator=gen(37)).var(0)
    expected = torch.tensor([1.0, 100.0], dtype=DT) / (1 - eps / 2)  # relative bias eps/2 in both directions
    assert ((v["Sigma"] - expected).abs() / expected).max() < 4 * math.sqrt(2 / n)
    a_I = 1 - eps / 100  # contraction of the wide direction with M = I
    v_I = 2 * eps * (1 - a_I**400) / (1 - a_I**2)
    assert abs(v["I"][1].item() - v_I) < 4 * var_se(v_I, n)
    assert v["inv"][1].item() < 1.0  # the inverse covariance squares the conditioning


def test_position_dependent_preconditioner_needs_the_divergence_term():
    """dx = (M s + M') dt + sqrt(2 M) dW keeps N(0, 1); without M' the law is ∝ p / M."""
    M = lambda x: 1 + x**2 / 2
    dM = lambda x: x
    t = torch.linspace(-8, 8, 4001, dtype=DT)
    h = (t[1] - t[0]).item()
    p, s = torch.exp(-(t**2) / 2), -t
    flux_with = d_dx(M(t) * p, h) - p * (M(t) * s + dM(t))
    flux_without = d_dx(M(t) * p, h) - p * M(t) * s
    assert flux_with.abs().max() < 1e-4 and flux_without.abs().max() > 0.1
    # Euler-Maruyama simulation of both diffusions.
    eps, n = 0.01, 20_000
    xs = {True: torch.zeros(n, dtype=DT), False: torch.zeros(n, dtype=DT)}
    g = gen(38)
    for _ in range(800):
        z = torch.randn(n, generator=g, dtype=DT)
        for corrected, x in xs.items():
            drift = M(x) * (-x) + (dM(x) if corrected else 0)
            xs[corrected] = x + eps * drift + torch.sqrt(2 * eps * M(x)) * z
    q = torch.exp(-(t**2) / 2) / M(t)
    var_q = ((t**2 * q).sum() / q.sum()).item()  # the wrong law's variance, about 0.6
    assert abs(xs[True].var().item() - 1.0) < 0.05
    assert abs(xs[False].var().item() - var_q) < 0.05 and var_q < 0.8
