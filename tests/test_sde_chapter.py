"""Numerical checks of Chapter 8 (from Markov chains to stochastic differential equations).

The kernels against simulation, the moment ODEs, the chains' step formulas and the VP unit-variance
identity are tested in test_sde.py; this file tests what the chapter adds: the rates at which the
chains and Euler–Maruyama approach the SDEs, the covariance identities, the exact discretisation of
VP, the rescaling to a VE process, the noise levels the chapter prints, and its exercises.
"""

import math

import matplotlib
import pytest
import torch
from scipy.integrate import quad

from companion import plotting
from companion.distributions import GaussianMixture
from companion.sde import SubVPSDE, VESDE, VPSDE

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("float64")

ALL = [VESDE(), VPSDE(), SubVPSDE()]
IDS = ["ve", "vp", "subvp"]


def chain_coefficients(sde, N):
    """Mean coefficient and variance (from a point) of the chain of sde.discretize after each of its
    N steps, by propagating m <- (1 + f/x) m and v <- (1 + f/x)^2 v + G^2 exactly (no sampling)."""
    m, v, out = 1.0, 0.0, []
    one = torch.ones(1, 1)
    for t in torch.linspace(0, 1, N):
        f, G = sde.discretize(one, t, N)
        a = 1 + float(f.reshape(-1)[0])
        m, v = a * m, a**2 * v + float(G.reshape(-1)[0]) ** 2
        out.append((m, v))
    return out


def test_ncsn_chain_is_exact_at_every_grid_time_while_euler_maruyama_is_first_order():
    """Proposition prop-sde-ve: after step i the chain from a clean point has variance σ(t_i)²
    (= marginal std², data at σ_min at t = 0) for every i and N, even N = 10. Euler–Maruyama's
    variance is the left Riemann sum Σ g(t_k)² Δt, ratio q/(e^q − 1) to the kernel with q = 2 L Δt:
    0.379 at N = 10, and N (ratio − 1) → −L = −log(σ_max/σ_min) (first order)."""
    sde, L = VESDE(0.01, 50.0), math.log(5000.0)
    N = 10
    for i, (m, v) in enumerate(chain_coefficients(sde, N)):
        assert m == 1.0
        assert v == pytest.approx(float(sde.marginal(i / (N - 1))[1]) ** 2, rel=1e-12)
    kernel = float(sde.transition(0.0, 1.0)[1]) ** 2
    for n in (10, 1000, 100_000):
        dt = 1 / n
        em = float((sde.diffusion(torch.arange(n) * dt) ** 2).sum()) * dt
        q = 2 * L * dt
        assert em / kernel == pytest.approx(q / math.expm1(q), rel=1e-9)
    dt = 0.1
    assert float((sde.diffusion(torch.arange(10) * dt) ** 2).sum()) * dt / kernel == pytest.approx(0.379, abs=1e-3)
    n = 100_000
    em = float((sde.diffusion(torch.arange(n) / n) ** 2).sum()) / n
    assert n * (em / kernel - 1) == pytest.approx(-L, rel=1e-3)


def test_ddpm_chain_converges_to_vp_at_rate_one_over_N_with_the_stated_constant():
    """The chain keeps variance = 1 − (mean coefficient)² exactly, and N · log(√ᾱ_N / α(1)) tends to
    −¼∫β² = −(β_max³ − β_min³)/(12(β_max − β_min)) = −33.50 (Σβ_i = B(1) exactly for the linear
    betas). The chapter's printed relative errors: −0.313 (N = 100), −0.0333 (N = 1000) (Proposition prop-sde-vp)."""
    sde = VPSDE(0.1, 20.0)
    log_alpha1 = float(sde.marginal(1.0)[0].log())
    const = -(20.0**3 - 0.1**3) / (12 * 19.9)
    assert const == pytest.approx(-33.50, abs=0.005)
    assert float(sde.discrete_betas(1000).sum()) == pytest.approx(-2 * log_alpha1, rel=1e-12)
    scaled = {n: n * (0.5 * float(torch.log1p(-sde.discrete_betas(n)).sum()) - log_alpha1)
              for n in (1000, 10_000, 100_000)}
    assert scaled[100_000] == pytest.approx(const, rel=2e-3)
    assert abs(scaled[10_000] - const) < abs(scaled[1000] - const)  # the constant is approached
    rel = {n: math.exp(0.5 * float(torch.log1p(-sde.discrete_betas(n)).sum()) - log_alpha1) - 1 for n in (100, 1000)}
    assert rel[100] == pytest.approx(-0.313, abs=2e-3) and rel[1000] == pytest.approx(-0.0333, abs=5e-4)
    # the same coefficients by running discretize itself, and the exact variance relation
    for m, v in chain_coefficients(sde, 200)[::37]:
        assert v == pytest.approx(1 - m**2, rel=1e-12)
    m_end, _ = chain_coefficients(sde, 200)[-1]
    assert math.log(m_end) == pytest.approx(0.5 * float(torch.log1p(-sde.discrete_betas(200)).sum()), rel=1e-12)
    # β_i < 1 needs N > β_max: with N = 20 the last step has β = 1 and the chain is undefined
    assert float(sde.discrete_betas(20).max()) == pytest.approx(1.0) and float(sde.discrete_betas(21).max()) < 1


def test_ddpm_chain_with_a_nonlinear_beta_converges_to_the_vp_kernel():
    """Proposition prop-sde-vp for a β that is not linear, β(t) = 0.1 + 19.9 t², and between two
    inner times: over (s, t] the chain's mean factor Π √(1 − β(t_i)Δt) and variance from a point
    1 − Π(1 − β(t_i)Δt) tend to the kernel's e^{−B/2} and 1 − e^{−B}, B = ∫_s^t β, at rate 1/N."""

    def beta(t):
        return 0.1 + 19.9 * t**2

    for s, t in [(0.0, 1.0), (0.3, 0.7)]:
        B = 0.1 * (t - s) + 19.9 * (t**3 - s**3) / 3
        errors = []
        for N in (1000, 2000, 4000):
            times = torch.arange(1, N + 1, dtype=torch.float64) / N
            inside = times[(times > s + 1e-12) & (times <= t + 1e-12)]
            log_keep = torch.log1p(-beta(inside) / N).sum().item()
            mean_factor, variance = math.exp(0.5 * log_keep), 1 - math.exp(log_keep)
            errors.append((mean_factor - math.exp(-B / 2), variance - (1 - math.exp(-B))))
        for coarse, fine in zip(errors, errors[1:]):
            for e_coarse, e_fine in zip(coarse, fine):
                assert abs(e_fine / e_coarse - 0.5) < 0.05  # first order: the error halves with Δt
        assert abs(errors[-1][0]) < 0.01 * math.exp(-B / 2)


def test_ddpm_chain_with_sqrt_keeps_unit_variance_and_without_sqrt_does_not():
    """Unit-variance data stays at variance 1 along the DDPM chain (v <- (1 − β) v + β); the slip
    x ← (1 − β) x + √β z (no square root on the mean factor) loses it: negative control."""
    vp = VPSDE()
    # The package's chain: from a point, v_i = 1 − m_i², so variance-1 data stays at 1 (m² + v = 1).
    assert all(m**2 + v == pytest.approx(1.0, abs=1e-12) for m, v in chain_coefficients(vp, 1000))
    v_bad = 1.0
    for b in vp.discrete_betas(1000).tolist():
        v_bad = (1 - b) ** 2 * v_bad + b
    assert v_bad < 0.6


def test_ddpm_chain_through_discretize_matches_the_exact_mixture_marginal():
    """The chapter's Monte Carlo check: the DDPM chain (N = 1001, t_i = i/1000) stopped at t = 0.3
    on the 1-D mixture has the mean and variance of mix.at(vp, 0.3), within 4 standard errors plus
    the O(1/N) discretisation."""
    vp = VPSDE()
    mix = GaussianMixture([0.3, 0.7], [[-2.0], [1.5]], [[[0.25]], [[1.0]]])
    g = torch.Generator().manual_seed(11)
    n = 40_000
    x = mix.sample(n, generator=g)
    for t in torch.linspace(0, 1, 1001)[:301]:
        f, G = vp.discretize(x, t, 1001)
        x = x + f + G * torch.randn(x.shape, generator=g)
    exact = mix.at(vp, 0.3)
    mean, var = float(exact.mean()), float(exact.covariance())
    assert abs(float(x.mean()) - mean) < 4 * math.sqrt(var / n) + 0.005
    assert abs(float(x.var()) / var - 1) < 4 * math.sqrt(2 / n) + 0.005
    # and it is not the marginal of a different time
    assert abs(float(mix.at(vp, 0.4).covariance()) / var - 1) > 0.05


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_euler_maruyama_moment_recursion_converges_at_first_order(sde):
    """The proof of prop-sde-moments: m <- (1 + fΔt) m, v <- (1 + fΔt)² v + g²Δt approach the kernel
    (transition(0, 1)) with an error that halves when N doubles."""

    def errors(N):
        m, v, dt = 1.0, 0.0, 1 / N
        ts = torch.arange(N) * dt
        fs, g2s = sde._f(ts).tolist(), sde._g2(ts).tolist()
        for f, g2 in zip(fs, g2s):
            m, v = (1 + f * dt) * m, (1 + f * dt) ** 2 * v + g2 * dt
        a, b = (float(c) for c in sde.transition(0.0, 1.0))
        return abs(m / a - 1), abs(v / b**2 - 1)

    e1, e2 = errors(4000), errors(8000)
    for x, y in zip(e1, e2):
        if x > 1e-12:
            assert x / y == pytest.approx(2.0, rel=0.02)
    assert max(e2) < 0.02


def test_covariance_identity_preserving_exploding_and_below():
    """Proposition prop-sde-variance on a 2-D mixture whose covariance C has eigenvalues above and below 1:
    Cov[x_t] = α²C + σ²I for all three; VP's eigenvalues move monotonically from C's towards 1;
    sub-VP's covariance is VP's minus α²(1 − α²) I, at most ¼ (at α² = ½); VE's grows by σ²−σ(0)²."""
    mix = GaussianMixture([0.5, 0.3, 0.2], [[-2.0, -0.3], [2.0, -0.3], [0.0, 0.6]],
                          [[[0.3, 0.02], [0.02, 0.05]], [[0.2, -0.02], [-0.02, 0.05]], 0.05 * torch.eye(2)])
    C = mix.covariance()
    lam0 = torch.linalg.eigvalsh(C)
    assert lam0.max() > 1.5 and lam0.min() < 0.5  # eigenvalues on both sides of 1
    ve, vp, sub = VESDE(0.01, 10.0), VPSDE(), SubVPSDE()
    eye = torch.eye(2)
    prev = lam0
    for t in torch.linspace(0.05, 1, 12).tolist():
        for sde in (ve, vp, sub):
            a, s = (float(v) for v in sde.marginal(t))
            assert torch.allclose(mix.at(sde, t).covariance(), a**2 * C + s**2 * eye, atol=1e-12)
        a2 = float(vp.marginal(t)[0]) ** 2
        cov_vp, cov_sub = mix.at(vp, t).covariance(), mix.at(sub, t).covariance()
        assert torch.allclose(cov_vp - eye, a2 * (C - eye), atol=1e-12)
        lam = torch.linalg.eigvalsh(cov_vp)
        assert ((lam - 1).abs() <= (prev - 1).abs() + 1e-12).all()  # monotone towards 1
        assert ((lam - lam0.clamp(max=1)) >= -1e-12).all() and ((lam - lam0.clamp(min=1)) <= 1e-12).all()
        prev = lam
        assert torch.allclose(cov_vp - cov_sub, a2 * (1 - a2) * eye, atol=1e-12)
        assert 0 < a2 * (1 - a2) <= 0.25
        assert torch.allclose(mix.at(ve, t).covariance() - mix.at(ve, 0.0).covariance(),
                              (float(ve.marginal(t)[1]) ** 2 - 0.01**2) * eye, atol=1e-10)
    # the largest gap ¼ is reached where B(t) = log 2
    t_half = float(vp._t_from_int_beta(torch.tensor(math.log(2.0))))
    a2 = float(vp.marginal(t_half)[0]) ** 2
    assert a2 == pytest.approx(0.5, rel=1e-12) and a2 * (1 - a2) == pytest.approx(0.25)


def test_noise_to_signal_ratios_and_the_values_printed_in_the_chapter():
    """σ/α = √(e^B − 1) (VP), 2 sinh(B/2) (sub-VP), σ(t) (VE); at the stopping times 0.0100 (VE, 1e-5),
    0.0105 (VP, 1e-3), 1.10e-4 (sub-VP, 1e-3); at t = 1: 50, 152.2, 152.2; sub-VP reaches 0.0105
    only at t ≈ 0.028, VP reaches 0.1 at t ≈ 0.027; VE spends 1/log10(5000) = 0.270 of the time per factor 10."""
    ve, vp, sub = VESDE(), VPSDE(), SubVPSDE()
    t = torch.linspace(1e-4, 1, 50)
    B = 0.1 * t + 0.5 * 19.9 * t**2
    assert torch.allclose(vp.noise_level(t), torch.sqrt(torch.expm1(B)), rtol=1e-12)
    assert torch.allclose(sub.noise_level(t), 2 * torch.sinh(B / 2), rtol=1e-12)
    assert torch.allclose(ve.noise_level(t), 0.01 * 5000**t, rtol=1e-12)
    assert float(ve.noise_level(1e-5)) == pytest.approx(0.0100, abs=5e-5)
    assert float(vp.noise_level(1e-3)) == pytest.approx(0.0105, abs=5e-5)
    assert float(sub.noise_level(1e-3)) == pytest.approx(1.10e-4, rel=5e-3)
    assert float(vp.noise_level(1.0)) == pytest.approx(152.2, abs=0.05)
    assert float(sub.noise_level(1.0)) == pytest.approx(152.2, abs=0.05)
    assert float(sub.time_of_noise_level(0.0105)) == pytest.approx(0.028, abs=1e-3)
    assert float(vp.time_of_noise_level(0.1)) == pytest.approx(0.027, abs=1e-3)
    assert float(ve.time_of_noise_level(0.1)) == pytest.approx(1 / math.log10(5000), rel=1e-9)
    # small-t behaviour: VP ~ √(β_min t), sub-VP ~ β_min t
    assert float(vp.noise_level(1e-6)) == pytest.approx(math.sqrt(0.1e-6), rel=1e-3)
    assert float(sub.noise_level(1e-6)) == pytest.approx(0.1e-6, rel=1e-3)
    assert float(vp.marginal(1.0)[0]) == pytest.approx(0.0066, abs=5e-5)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_every_linear_sde_is_a_rescaled_ve(sde):
    """Proposition prop-sde-rescaled: d(σ/α)²/dt = g²/α² (central differences), and the Euler–Maruyama
    increments of y = x/α have variance (g/α)² Δt: simulate x, divide by α, compare the variance
    with (σ(t)/α(t))² − (σ(0)/α(0))² (the VE kernel of y)."""
    t = torch.tensor([0.05, 0.2, 0.5, 0.9])
    h = 1e-6
    lhs = (sde.noise_level(t + h) ** 2 - sde.noise_level(t - h) ** 2) / (2 * h)
    rhs = sde.diffusion(t) ** 2 / sde.marginal(t)[0] ** 2
    assert torch.allclose(lhs / rhs, torch.ones(4), rtol=1e-6)
    # not the same as d σ²/dt = g² unless α = 1 (VE): the rescaling matters for VP and sub-VP
    naive = (sde.marginal(t + h)[1] ** 2 - sde.marginal(t - h)[1] ** 2) / (2 * h) / sde.diffusion(t) ** 2
    if isinstance(sde, VESDE):
        assert torch.allclose(naive, torch.ones(4), rtol=1e-6)
    else:
        assert not torch.allclose(naive, torch.ones(4), rtol=0.05)
    g = torch.Generator().manual_seed(5)
    n, steps, t_end = 20_000, 400, 0.5
    x, dt = torch.zeros(n, 1), t_end / steps
    for k in range(steps):
        noise = torch.randn(n, 1, generator=g)
        x = x + sde.drift(x, k * dt) * dt + float(sde.diffusion(k * dt)) * math.sqrt(dt) * noise
    y = x / float(sde.marginal(t_end)[0])
    target = float(sde.noise_level(t_end)) ** 2 - float(sde.noise_level(0.0)) ** 2
    assert float(y.var()) / target == pytest.approx(1.0, abs=5 * math.sqrt(2 / n) + 0.02)


def test_exact_discretisation_of_vp_is_a_ddpm_chain_with_exact_betas():
    """transition(t_{i−1}, t_i) = (√(1 − β̂_i), √β̂_i) with β̂_i = 1 − exp(−∫β);
    β̂_i − β(t_i)Δt = O(Δt²) (the gap quarters when Δt halves); Π(1 − β̂_i) = α(1)² exactly. Printed value at N = 1000: 2.1e-4."""
    vp = VPSDE()

    def gap(N):
        grid = torch.linspace(0, 1, N + 1)
        a, b = vp.transition(grid[:-1], grid[1:])
        ints = vp._int_beta(grid[1:]) - vp._int_beta(grid[:-1])
        beta_hat = -torch.expm1(-ints)
        assert torch.allclose(a, torch.sqrt(1 - beta_hat), rtol=1e-12)
        assert torch.allclose(b, torch.sqrt(beta_hat), rtol=1e-10)
        assert float(torch.log1p(-beta_hat).sum()) == pytest.approx(2 * float(vp.marginal(1.0)[0].log()), rel=1e-12)
        return float((beta_hat - vp.beta(grid[1:]) / N).abs().max())

    g1, g2 = gap(1000), gap(2000)
    assert g1 == pytest.approx(2.1e-4, abs=0.05e-4)
    assert g1 / g2 == pytest.approx(4.0, rel=0.02)


def test_exercise_misprinted_ve_variance():
    """Exercise ex-sde-1: with g = dσ²/dt the variance at t = 1 is L(σ_max⁴ − σ_min⁴) ≈ 5.32e7, not
    σ_max² − σ_min² = 2.5e3; the two coincide only at σ_max ≈ 0.505 (σ_min = 0.01)."""
    ve = VESDE(0.01, 50.0)
    L = math.log(5000)
    wrong = quad(lambda s: float(ve.diffusion(s)) ** 4, 0, 1, epsabs=0, epsrel=1e-10)[0]
    assert wrong == pytest.approx(L * (50**4 - 0.01**4), rel=1e-8)
    assert wrong == pytest.approx(5.32e7, rel=1e-3)
    s = 0.505
    assert math.log(s / 0.01) * (s**2 + 1e-4) == pytest.approx(1.0, abs=0.01)


def test_exercise_ornstein_uhlenbeck_stationary_variances():
    """Exercise ex-sde-2: constant β; the DDPM chain's stationary variance is 1 for every step, Euler–
    Maruyama's 1/(1 − βΔt/4) (1.111 at β = 2, Δt = 0.2); the DDPM chain is the exact chain of an OU
    process with rate −log(1 − βΔt)/Δt."""
    for b, dt in [(2.0, 0.2), (1.0, 0.01), (5.0, 0.1)]:
        v_ddpm, v_em = 0.0, 0.0
        for _ in range(20_000):
            v_ddpm = (1 - b * dt) * v_ddpm + b * dt
            v_em = (1 - 0.5 * b * dt) ** 2 * v_em + b * dt
        assert v_ddpm == pytest.approx(1.0, rel=1e-12)
        assert v_em == pytest.approx(1 / (1 - b * dt / 4), rel=1e-12)
        rate = -math.log(1 - b * dt) / dt
        assert math.exp(-0.5 * rate * dt) == pytest.approx(math.sqrt(1 - b * dt), rel=1e-12)
    assert 1 / (1 - 2.0 * 0.2 / 4) == pytest.approx(1.111, abs=1e-3)


def test_exercise_prior_mismatch():
    """Exercise ex-sde-3: KL(p_1 || prior) for Gaussian data N(1.5, 1) in closed form agrees with
    quadrature of the exact densities; ≈ 4.5e-4 (VE, σ_max 50), ≈ 4.9e-5 (VP, sub-VP), large (> 0.3)
    for VE with σ_max = 1."""
    gauss = GaussianMixture([1.0], [[1.5]], [[[1.0]]])

    def closed(sde, m=1.5, s=1.0):
        alpha, std = (float(v) for v in sde.marginal(1.0))
        mu, v, w = alpha * m, alpha**2 * s**2 + std**2, sde.prior_std**2
        return 0.5 * (v / w + mu**2 / w - 1 - math.log(v / w))

    for sde, lim in [(VESDE(), 400.0), (VPSDE(), 12.0), (SubVPSDE(), 12.0), (VESDE(0.01, 1.0), 12.0)]:
        xs = torch.linspace(-lim, lim, 400_001)[:, None]
        lp = gauss.at(sde, 1.0).log_prob(xs)
        numeric = float(torch.trapezoid(lp.exp() * (lp - sde.prior_log_prob(xs)), xs[:, 0]))
        assert numeric == pytest.approx(closed(sde), rel=1e-5)
    assert closed(VESDE()) == pytest.approx(4.5e-4, rel=0.02)
    assert closed(VPSDE()) == pytest.approx(4.9e-5, rel=0.05)
    assert closed(SubVPSDE()) == pytest.approx(4.9e-5, rel=0.05)
    assert closed(VESDE(0.01, 1.0)) > 0.3


def test_marginal_density_1d_draws_normalised_densities():
    """The Chapter 8 plotting helper: without column normalisation every time column of the image is
    p_t on the x grid and integrates to 1; with it, every column peaks at 1."""
    import matplotlib.pyplot as plt

    mix = GaussianMixture([0.3, 0.7], [[-2.0], [1.5]], [[[0.25]], [[1.0]]])
    fig, ax = plt.subplots()
    plotting.marginal_density_1d(mix, VPSDE(), xlim=(-8, 8), n_t=7, n_x=2001, ax=ax, normalize_columns=False)
    dens = torch.as_tensor(ax.collections[0].get_array()).reshape(2001, 7)
    xs = torch.linspace(-8, 8, 2001)
    assert torch.allclose(torch.trapezoid(dens, xs, dim=0), torch.ones(7), atol=1e-6)
    ax.clear()
    plotting.marginal_density_1d(mix, VESDE(0.01, 10.0), xlim=(-8, 8), n_t=5, n_x=501, ax=ax)
    dens = torch.as_tensor(ax.collections[0].get_array()).reshape(501, 5)
    assert torch.allclose(dens.amax(0), torch.ones(5))
    plt.close(fig)
