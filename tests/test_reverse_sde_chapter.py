"""Numerical checks of Chapter 9 (reversing time: the reverse SDE, the probability-flow ODE and their
samplers).

The samplers' marginals, their step formulas, the solvers' orders and the likelihood against the exact
density are tested in test_sde_samplers.py; this file tests what the chapter adds: the Bayes/Taylor
reverse step (and the sign error E14), the exact posterior means behind reverse diffusion and ancestral
sampling, the Fokker–Planck residuals of the λ-family (and of the noise-dropped drift, E72), the closed
forms of the noise-dropped ODE, DDPM's ancestral step against Euler–Maruyama, the instantaneous change of
variables along a trajectory, the dequantisation bound, inpainting by replacement, seed 004's samplers
(E70, E71, E73) through the helpers in companion.widgets, and the exercises.
"""

import math

import pytest
import torch

from companion import widgets
from companion.distributions import Gaussian, GaussianMixture
from companion.ode import bits_per_dim, ode_sampler
from companion.samplers import pc_sampler, predictor_step
from companion.sde import SubVPSDE, VESDE, VPSDE, time_grid

pytestmark = pytest.mark.usefixtures("float64")


def mix1():
    return GaussianMixture.isotropic([0.7, 0.3], [[-1.5], [2.0]], [0.09, 0.16])


def ve_posterior(sde, mix, t, dt, y):
    """Mean and variance of p(x_t | x_{t+dt} = y) under VE, by Bayes' rule on a fine grid."""
    xs = torch.linspace(-12, 12, 200_001)
    kernel_var = sde.marginal(t + dt)[1] ** 2 - sde.marginal(t)[1] ** 2
    w = torch.softmax(mix.at(sde, t).log_prob(xs[:, None]) - (y - xs) ** 2 / (2 * kernel_var), 0)
    mean = (w * xs).sum()
    return mean.item(), (w * (xs - mean) ** 2).sum().item()


def test_bayes_taylor_reverse_step_is_accurate_to_second_order_and_e14_sign_is_not():
    """The mean x' − [f − g² s]Δt of the heuristic reverse step errs by O(Δt²) (error ÷4 per halving);
    with E14's sign, x' − [f + g² s]Δt, by O(Δt) (÷2). The variance ratio to g²Δt tends to 1 like Δt.
    Checks Theorem thm-rev-anderson."""
    sde, mix, t, y = VESDE(0.01, 5.0), mix1(), 0.3, 0.5
    score = mix.marginal_score(sde)
    good, bad, var_gap = [], [], []
    for dt in (0.02, 0.01, 0.005):
        mean, var = ve_posterior(sde, mix, t, dt, y)
        g2 = sde.diffusion(t + dt).item() ** 2
        s = score(torch.tensor([[y]]), t + dt).item()
        good.append(abs(mean - (y + g2 * s * dt)))
        bad.append(abs(mean - (y - g2 * s * dt)))
        var_gap.append(abs(1 - var / (g2 * dt)))
    for a, b in zip(good, good[1:]):
        assert 3.3 < a / b < 5.0
    for a, b in zip(bad, bad[1:]):
        assert 1.7 < a / b < 2.4
    for a, b in zip(var_gap, var_gap[1:]):
        assert 1.7 < a / b < 2.4
    assert bad[-1] > 30 * good[-1]


def test_ve_reverse_diffusion_mean_is_the_exact_posterior_mean():
    """For VE, E[x_t | x_{t+Δt} = y] = y + (σ(t+Δt)² − σ(t)²) ∇log p_{t+Δt}(y) exactly (Tweedie)."""
    sde, mix = VESDE(0.01, 5.0), mix1()
    for t, dt, y in [(0.3, 0.04, 0.5), (0.6, 0.1, -2.0), (0.1, 0.2, 1.2)]:
        mean, _ = ve_posterior(sde, mix, t, dt, y)
        _, rd = predictor_step("reverse_diffusion", sde, mix.marginal_score(sde), torch.tensor([[y]]), t + dt, t)
        assert rd.item() == pytest.approx(mean, abs=1e-9)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(0.01, 5.0)], ids=["vp", "subvp", "ve"])
def test_ancestral_mean_is_the_exact_posterior_mean(sde):
    """Exercise 2: (x + b² s)/a = E[x_{t'} | x_t = x] for x_t = a x_{t'} + b z, on every linear SDE; the
    reverse-diffusion mean (2 − a) x + b² s is not exact when a ≠ 1 (negative control)."""
    mix, t_hi, t_lo, x = mix1(), 0.3, 0.2, 0.4
    a, b = (v.item() for v in sde.transition(t_lo, t_hi))
    xs = torch.linspace(-8, 8, 100_001)
    w = torch.softmax(mix.at(sde, t_lo).log_prob(xs[:, None]) - (x - a * xs) ** 2 / (2 * b**2), 0)
    post = (w * xs).sum().item()
    score = mix.marginal_score(sde)
    _, anc = predictor_step("ancestral", sde, score, torch.tensor([[x]]), t_hi, t_lo)
    _, rd = predictor_step("reverse_diffusion", sde, score, torch.tensor([[x]]), t_hi, t_lo)
    assert anc.item() == pytest.approx(post, abs=1e-7)
    if abs(a - 1) > 1e-3:
        assert abs(rd.item() - post) > 1e-4


def fp_residual(sde, mix, t, lam, noise_dropped=False, factor=None):
    """max |∂_t p + ∂_x(v p) + ½λ²g² ∂²p| / max |∂_t p| for the exact 1-D p_t, with
    v = f − factor·g² s (factor = ½(1 + λ²), or 1 with the noise dropped)."""
    xs = torch.linspace(-6, 6, 2401)
    dx, dt = (xs[1] - xs[0]).item(), 1e-5
    p = lambda tt: mix.marginal_log_prob(sde, xs[:, None], tt).exp()
    dp_dt = (p(t + dt) - p(t - dt)) / (2 * dt)
    g2 = sde.diffusion(t).item() ** 2
    if factor is None:
        factor = 1.0 if noise_dropped else 0.5 * (1 + lam**2)
    vel = sde.drift(xs[:, None], t)[:, 0] - factor * g2 * mix.marginal_score(sde)(xs[:, None], t)[:, 0]
    flux, pt = vel * p(t), p(t)
    d_flux = (flux[2:] - flux[:-2]) / (2 * dx)
    lap = (pt[2:] - 2 * pt[1:-1] + pt[:-2]) / dx**2
    diffusion = 0.0 if noise_dropped else 0.5 * lam**2 * g2 * lap
    return ((dp_dt[1:-1] + d_flux + diffusion).abs().max() / dp_dt.abs().max()).item()


def test_reverse_sde_reproduces_the_two_time_law_and_the_ode_only_the_marginals():
    """Theorem thm-rev-anderson is about paths, not only marginals. For VP and data N(0, s0²), the
    forward process has Cov(x_s, x_t) = a(s, t) v(s) (x_t = a x_s + b z); the reverse SDE run down
    from exact samples of p_1 reproduces it, while the probability-flow ODE (same marginals, a
    deterministic map) gives √(v(s) v(t)) instead."""
    sde, s0, n = VPSDE(), 2.0, 20_000
    data = Gaussian(torch.zeros(1), torch.full((1, 1), s0**2))

    def v(t):
        alpha, sigma = (float(c) for c in sde.marginal(torch.tensor(t)))
        return alpha**2 * s0**2 + sigma**2

    s, t = 0.3, 0.6
    a = float(sde.transition(s, t)[0])
    ts = torch.linspace(1.0, s, 351).tolist()  # Δt = 2e-3; t = 0.6 is on the grid
    covariances = {}
    for lam in (1.0, 0.0):
        rev, g = sde.reverse(data.marginal_score(sde), lam=lam), torch.Generator().manual_seed(3)
        x = math.sqrt(v(1.0)) * torch.randn(n, 1, generator=g)
        for u, u_next in zip(ts[:-1], ts[1:]):
            if abs(u - t) < 1e-9:
                x_t = x.clone()
            h = u - u_next
            x = x - rev.drift(x, torch.full((n,), u)) * h + float(rev.diffusion(u)) * math.sqrt(h) * torch.randn(
                x.shape, generator=g)
        assert float(x.var()) == pytest.approx(v(s), rel=0.05)  # both have the right marginal at s
        covariances[lam] = float(torch.cov(torch.cat([x, x_t], 1).T)[0, 1])
    for lam, exact in ((1.0, a * v(s)), (0.0, math.sqrt(v(s) * v(t)))):
        se = math.sqrt((v(s) * v(t) + exact**2) / n)  # of a sample covariance of a Gaussian pair
        assert abs(covariances[lam] - exact) < 4 * se + 0.01
    assert math.sqrt(v(s) * v(t)) - a * v(s) > 0.5  # and the two differ by far more than that


@pytest.mark.parametrize("sde", [VESDE(0.01, 5.0), VPSDE(), SubVPSDE()], ids=["ve", "vp", "subvp"])
def test_fokker_planck_residual_of_the_lambda_family_vanishes(sde):
    """The λ-family (λ = 0: the probability-flow ODE; 1: the reverse SDE; 0.5, 2) transports the exact
    p_t: the backward Fokker–Planck residual is at the finite-difference level. The noise-dropped drift
    f − g² s (E72), and the ODE with g² s instead of ½ g² s, leave residuals of the size of ∂_t p.
    Checks Theorem thm-rev-family."""
    mix = mix1()
    for t in (0.05, 0.2, 0.6):
        for lam in (0.0, 0.5, 1.0, 2.0):
            assert fp_residual(sde, mix, t, lam) < 2e-3
        assert fp_residual(sde, mix, t, 1.0, noise_dropped=True) > 0.1
        assert fp_residual(sde, mix, t, 0.0, factor=0.25) > 0.05  # a ¼ instead of ½: also wrong


def test_noise_dropped_ode_has_the_closed_form_of_the_chapter():
    """Gaussian data N(0, s0²), VE: the PF-ODE maps x(T) to x(T)√(v(ε)/v(T)); the noise-dropped equation
    (the PF-ODE of 2s) to x(T) v(ε)/v(T), v(t) = s0² + σ(t)²."""
    sde, s0 = VESDE(0.01, 10.0), 0.5
    score = Gaussian(torch.zeros(1), torch.full((1, 1), s0**2)).marginal_score(sde)
    v = lambda tt: s0**2 + sde.marginal(tt)[1].item() ** 2
    xT = torch.tensor([[1.0], [-3.0], [8.0]])
    eps = sde.default_eps
    pf, _ = ode_sampler(sde, score, xT, method="heun", n_steps=400, grid="geometric")
    nd, _ = ode_sampler(sde, lambda x, t: 2 * score(x, t), xT, method="heun", n_steps=400, grid="geometric")
    torch.testing.assert_close(pf, xT * math.sqrt(v(eps) / v(1.0)), rtol=2e-4, atol=0)
    torch.testing.assert_close(nd, xT * v(eps) / v(1.0), rtol=2e-3, atol=0)
    # the two factors of 2 that matter: the drift f − g² s written with 2s is exactly the noise-dropped drift
    x, t = torch.randn(5, 1, generator=torch.Generator().manual_seed(0)), torch.full((5,), 0.4)
    dropped = sde.reverse(score).drift(x, t)
    torch.testing.assert_close(sde.reverse(lambda y, tt: 2 * score(y, tt), probability_flow=True).drift(x, t), dropped)


def test_exercise_noise_dropped_vp_variance():
    """Exercise 1: under VP the noise-dropped trajectories scale like v/α; from x(1) ~ N(0, v(1)) the end
    variance is v(1) ((v(ε)/α(ε)) / (v(1)/α(1)))², five orders of magnitude below v(ε)."""
    sde, s0 = VPSDE(), 0.5
    alpha = lambda tt: sde.marginal(tt)[0].item()
    v = lambda tt: alpha(tt) ** 2 * s0**2 + sde.marginal(tt)[1].item() ** 2
    eps = sde.default_eps
    predicted = v(1.0) * ((v(eps) / alpha(eps)) / (v(1.0) / alpha(1.0))) ** 2
    score = Gaussian(torch.zeros(1), torch.full((1, 1), s0**2)).marginal_score(sde)
    x = math.sqrt(v(1.0)) * torch.randn(20_000, 1, generator=torch.Generator().manual_seed(16))
    end, _ = ode_sampler(sde, lambda y, t: 2 * score(y, t), x, method="heun", n_steps=400, grid="geometric")
    assert end.var().item() / x.var().item() * v(1.0) == pytest.approx(predicted, rel=0.01)
    assert predicted < 1e-4 * v(eps)
    pf, _ = ode_sampler(sde, score, x, method="heun", n_steps=200, grid="geometric")
    assert pf.var().item() == pytest.approx(v(eps), rel=0.05)


def test_ddpm_ancestral_step_is_euler_maruyama_of_the_vp_reverse_sde_to_second_order():
    """(x + β s)/√(1 − β) − [x − (−½β x − β s)Δt] = O(Δt²): the difference falls fourfold per halving."""
    sde = VPSDE()
    mix = widgets.dsm_example_mixture()
    score = mix.marginal_score(sde)
    x = mix.at(sde, 0.5).sample(500, generator=torch.Generator().manual_seed(2))
    diffs = []
    for n in (50, 100, 200, 400):
        _, anc = predictor_step("ancestral", sde, score, x, 0.5, 0.5 - 1 / n)
        _, em = predictor_step("euler_maruyama", sde, score, x, 0.5, 0.5 - 1 / n)
        diffs.append((anc - em).abs().max().item())
    for a, b in zip(diffs, diffs[1:]):
        assert 3.5 < a / b < 4.5


def test_instantaneous_change_of_variables_along_a_trajectory():
    """Along a PF-ODE trajectory of VP on the 1-D mixture, log p_t(x(t)) changes by −∫∂_x v dt:
    RK4 on (x, ∫∂_x v) from t = 0.6 to 0.1 against the exact log-densities; flipping the sign of the
    divergence (negative control) fails (Theorem thm-rev-cov)."""
    sde, mix = VPSDE(), mix1()
    score = mix.marginal_score(sde)
    vel = sde.reverse(score, probability_flow=True).drift

    def rhs(x, t):
        tb = torch.full(x.shape[:1], t)
        h = 1e-5
        div = (vel(x + h, tb) - vel(x - h, tb)) / (2 * h)
        return vel(x, tb), div

    x = torch.tensor([[-2.0], [0.1], [1.7]])
    t0, t1, n = 0.6, 0.1, 500
    ell = torch.zeros_like(x)
    h = (t1 - t0) / n
    t = t0
    x_start = x.clone()
    for _ in range(n):
        k1 = rhs(x, t)
        k2 = rhs(x + 0.5 * h * k1[0], t + 0.5 * h)
        k3 = rhs(x + 0.5 * h * k2[0], t + 0.5 * h)
        k4 = rhs(x + h * k3[0], t + h)
        x = x + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        ell = ell + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        t += h
    # d/dt log p = −div v  =>  log p_{t1}(x(t1)) = log p_{t0}(x(t0)) − ∫_{t0}^{t1} div v dt
    lhs = mix.marginal_log_prob(sde, x, t1)
    start = mix.marginal_log_prob(sde, x_start, t0)
    torch.testing.assert_close(lhs, start - ell[:, 0], rtol=0, atol=1e-6)
    assert (lhs - (start + ell[:, 0])).abs().max() > 0.1


def test_dequantised_bits_per_dim_bound():
    """E_u[−log₂ p((k + u)/256)] + 8 bounds the exact discrete bits per dimension from above (Jensen), and
    is close to it for a smooth density; a missing offset of 8 bits would be far off."""
    normal = torch.distributions.Normal(0.5, 0.1)
    k = torch.arange(256.0)
    p_bin = normal.cdf((k + 1) / 256) - normal.cdf(k / 256)
    p_bin = p_bin / p_bin.sum()
    exact = -(p_bin * p_bin.log2()).sum().item()
    u = torch.rand(256, 256, generator=torch.Generator().manual_seed(4))
    bound = (p_bin * bits_per_dim(normal.log_prob((k[:, None] + u) / 256), 1).mean(1)).sum().item()
    assert exact <= bound < exact + 0.01
    # the data range enters through the bin width: [−1, 1] data has an offset of 7 bits, not 8
    assert bits_per_dim(torch.tensor(0.0), 1, data_range=2.0).item() == pytest.approx(7.0)


def test_inpainting_by_replacement_gets_the_weights_but_not_the_modes():
    """Fix x₀ = 1 on the 2-D mixture (exact VP score) and sample x₁ by reverse diffusion with the known
    coordinate re-imposed at the current noise level: the share of the upper mode matches the exact
    conditional (0.251), but the lower mode's mean is biased away from the exact conditional mean −0.5
    (towards the unconditional −1), which shifts the overall mean by far more than its standard error: the
    replacement method is an approximation, as the chapter says. The conditional itself is checked
    against Monte Carlo conditioning in a thin slab."""
    sde = VPSDE()
    mix = widgets.dsm_example_mixture()
    score = mix.marginal_score(sde)
    c11, c21, c22 = mix.covs[:, 0, 0], mix.covs[:, 1, 0], mix.covs[:, 1, 1]
    cond_w = torch.softmax(mix.weights.log() - 0.5 * (1.0 - mix.means[:, 0]) ** 2 / c11 - 0.5 * c11.log(), 0)
    cond_mean = mix.means[:, 1] + c21 / c11 * (1.0 - mix.means[:, 0])
    cond_var = c22 - c21**2 / c11
    assert cond_w[2].item() == pytest.approx(0.251, abs=1e-3)
    torch.testing.assert_close(cond_mean[1:], torch.tensor([-0.5, 2.0]))
    torch.testing.assert_close(cond_var[1:], torch.tensor([0.25, 0.15]))
    big = mix.sample(400_000, generator=torch.Generator().manual_seed(9))
    slab = big[(big[:, 0] - 1.0).abs() < 0.02, 1]
    low = slab[slab < 0.75]
    assert (slab > 0.75).double().mean().item() == pytest.approx(0.251, abs=0.03)
    assert low.mean().item() == pytest.approx(-0.5, abs=0.05)
    g = torch.Generator().manual_seed(5)
    n = 3000
    x = sde.prior_sample((n, 2), generator=g)
    ts = time_grid(sde, 200).tolist()
    for t, t_next in zip(ts[:-1], ts[1:]):
        x, x_mean = predictor_step("reverse_diffusion", sde, score, x, t, t_next, g)
        a, s = (v.item() for v in sde.marginal(t_next))
        x[:, 0] = a * 1.0 + s * torch.randn(n, generator=g)
    x1 = x_mean[:, 1]
    up = x1 > 0.75
    assert up.double().mean().item() == pytest.approx(cond_w[2].item(), abs=0.03)
    assert -0.9 < x1[~up].mean().item() < -0.6  # exact −0.5
    exact_mean = (cond_w * cond_mean).sum().item()  # 0.128
    assert x1.mean().item() < exact_mean - 0.12  # a bias of about 7 standard errors


def test_flawed_ode_helpers_reproduce_the_errata_numbers():
    """E70/E71 with s(x) = −x: Euler multiplies by 1.01¹⁰⁰ = 2.70 (away from the data), Heun by
    (1 + dt + dt²/2)¹⁰⁰ ≈ e, the adaptive sampler by e⁻¹ (the opposite direction); the correct PF-ODE of VP
    with N(0, 1) data keeps N(0, 1) points where they are."""
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    minus_x = lambda y: -y
    torch.testing.assert_close(widgets.flawed_euler_ode(minus_x, x), x * 1.01**100)
    torch.testing.assert_close(widgets.flawed_heun_ode(minus_x, x), x * (1 + 0.01 + 0.5e-4) ** 100)
    torch.testing.assert_close(widgets.flawed_adaptive_ode(minus_x, x), x * math.exp(-1), rtol=1e-4, atol=1e-5)
    sde = VPSDE()
    unit = Gaussian(torch.zeros(2), torch.eye(2)).marginal_score(sde)
    correct, _ = ode_sampler(sde, unit, x, method="rk45", rtol=1e-8, atol=1e-8)  # velocity −½βx + ½βx = 0
    torch.testing.assert_close(correct, x, rtol=1e-5, atol=1e-5)


def test_flawed_sde_sampler_returns_the_prior_whatever_the_data():
    """E73: with Gaussian data N(0, 0.25 I) and its exact score, source 004's SDE sampler (forward drift,
    score unused) ends with variance ≈ 1; reverse Euler–Maruyama ends with ≈ 0.25."""
    sde = VPSDE()
    score = Gaussian(torch.zeros(2), 0.25 * torch.eye(2)).marginal_score(sde)
    x = sde.prior_sample((4000, 2), generator=torch.Generator().manual_seed(0))
    calls = []
    wrong = widgets.flawed_sde_sampler(sde, lambda y, t: calls.append(1) or score(y, t), x, n_steps=200,
                                        generator=torch.Generator().manual_seed(1))
    assert len(calls) == 200
    assert wrong.var().item() == pytest.approx(1.0, abs=0.06)
    right, _ = pc_sampler(sde, score, x, n_steps=200, predictor="euler_maruyama", corrector=None, denoise=False,
                          generator=torch.Generator().manual_seed(1))
    target = 0.25 * sde.marginal(sde.default_eps)[0].item() ** 2 + sde.marginal(sde.default_eps)[1].item() ** 2
    assert right.var().item() == pytest.approx(target, rel=0.05)


def test_exercise_hutchinson_variances():
    """Exercise 3: for the symmetric Jacobian J of the PF-ODE velocity, Var[εᵀJε] = 2‖J‖_F² (Gaussian ε)
    and 2 Σ_{i≠j} J_ij² (Rademacher ε)."""
    sde = VPSDE()
    mix = widgets.dsm_example_mixture()
    vel = sde.reverse(mix.marginal_score(sde), probability_flow=True).drift
    t = torch.tensor([0.1])
    J = torch.autograd.functional.jacobian(lambda y: vel(y[None], t)[0], torch.tensor([0.3, 0.2]))
    torch.testing.assert_close(J, J.T)
    g = torch.Generator().manual_seed(17)
    gauss = torch.randn(40_000, 2, generator=g)
    rad = torch.randint(0, 2, (40_000, 2), generator=g).double() * 2 - 1
    for e, theory in [(gauss, 2 * J.square().sum()), (rad, 2 * (J.square().sum() - J.diagonal().square().sum()))]:
        est = ((e @ J) * e).sum(1)
        assert est.mean().item() == pytest.approx(J.trace().item(), abs=4 * est.std().item() / 200)
        assert est.var().item() == pytest.approx(theory.item(), rel=0.05)


def test_completed_square_of_the_heuristic_derivation():
    """−‖Δx − fΔt‖²/(2g²Δt) − Δx·s = −‖Δx − [f − g² s]Δt‖²/(2g²Δt) − f·s Δt + ½ g² ‖s‖² Δt for any vectors;
    with E14's sign (+Δx·s) the square is centred at [f + g² s]Δt instead."""
    g = torch.Generator().manual_seed(0)
    dx, f, s = (torch.randn(3, generator=g) for _ in range(3))
    g2, dt = 1.7, 0.03
    lhs = -(dx - f * dt).square().sum() / (2 * g2 * dt) - dx @ s
    rhs = -(dx - (f - g2 * s) * dt).square().sum() / (2 * g2 * dt) - f @ s * dt + 0.5 * g2 * s @ s * dt
    torch.testing.assert_close(lhs, rhs)
    wrong = -(dx - f * dt).square().sum() / (2 * g2 * dt) + dx @ s
    centred_plus = -(dx - (f + g2 * s) * dt).square().sum() / (2 * g2 * dt) + f @ s * dt + 0.5 * g2 * s @ s * dt
    torch.testing.assert_close(wrong, centred_plus)
    assert (lhs - rhs).abs() < 1e-12 < (wrong - rhs).abs()
